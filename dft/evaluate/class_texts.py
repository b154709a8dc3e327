"""The default texts of the model readers: CLIP prompts and VQA questions and answers per attribute
and class, and how a reader config's own ``classes`` override them. Group names are what the label
table records."""

from __future__ import annotations

from dft.evaluate.config import ReaderConfig

# Zero-shot CLIP prompts per attribute and class.
DEFAULT_CLIP_CLASSES: dict[str, dict[str, str]] = {
    "gender": {"man": "a photo of a man", "woman": "a photo of a woman"},
    "age": {"young": "a photo of a young person", "middle-aged": "a photo of a middle-aged person",
            "elderly": "a photo of an elderly person"},
}
# VQA: a question per attribute, and the answer text that stands for each class.
DEFAULT_VQA_QUESTIONS: dict[str, str] = {
    "gender": "Question: does the person look like a man or a woman? Answer:",
    "age": "Question: does the person look young, middle-aged or elderly? Answer:",
}
DEFAULT_VQA_CLASSES: dict[str, dict[str, str]] = {
    "gender": {"man": "a man", "woman": "a woman"},
    "age": {"young": "young", "middle-aged": "middle-aged", "elderly": "elderly"},
}


def classes_for(cfg: ReaderConfig, defaults: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per attribute, class -> text: the config's, else the defaults, for ``cfg.attributes``
    (default: every attribute the config or the defaults name)."""
    attrs = cfg.attributes or list(cfg.classes) or ["gender"]
    out = {}
    for a in attrs:
        classes = cfg.classes.get(a) or defaults.get(a)
        if not classes or len(classes) < 2:
            raise ValueError(f"reader {cfg.kind}: attribute {a!r} needs at least 2 classes in 'classes.{a}'")
        out[a] = dict(classes)
    return out
