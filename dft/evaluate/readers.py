"""Attribute readers: plain classes that read perceived attributes of images, and their registry.

A reader is built from a ``ReaderConfig`` by a factory, loads what it needs in ``__init__`` and
reads a batch in ``__call__``. No Ray here: ``dft.evaluate.pipeline`` adapts readers to a Ray Data
actor pool, and tests call them in-process.

The batch contract (a dict of equal-length numpy arrays, as Ray Data's ``batch_format="numpy"``):

- in: ``image`` (encoded bytes: PNG, JPEG, WebP), other columns (``key``, ``prompt``...) pass through;
- out: for each attribute ``A`` the reader declares, ``A`` (object array of the group name as a
  string, or None when unreadable) and ``A_reason`` (None, or why it is unreadable: ``no_face``,
  ``no_skin``, ``overexposed``, ``decode_error``, ``low_confidence``...), plus optional numeric
  extras (``skin_tone_ita``, ``A_score``).

``reader.attributes`` maps each attribute it writes to its full list of groups: the label table
records them, so a group nobody was assigned to still counts in the metrics.

Plugging in a reader (what the demo world does)::

    from dft.evaluate.readers import register_reader

    class WorldReader:
        attributes = {"gender": ["man", "woman"], "skin_tone": [str(i) for i in range(1, 11)]}
        def __init__(self, cfg): ...            # cfg: the ReaderConfig (cfg.options holds free-form settings)
        def __call__(self, batch): ...          # batch -> batch with the columns above

    register_reader("world", WorldReader, attributes=lambda cfg: WorldReader.attributes)

and in the config ``evaluate.readers: [{kind: world, module: dft.world.reader}]``. ``module`` is
imported before the kind is looked up, in the driver and in every Ray worker, so a registration
done at import time is seen everywhere (workers are fresh processes).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Protocol

import numpy as np

from dft.evaluate.config import ReaderConfig

log = logging.getLogger(__name__)

# Zero-shot CLIP prompts per attribute and class. Group names are what the label table records.
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


class Reader(Protocol):
    attributes: dict[str, list[str]]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


ReaderFactory = Callable[[ReaderConfig], Reader]
AttributesOf = Callable[[ReaderConfig], dict[str, list[str]]]

_REGISTRY: dict[str, tuple[ReaderFactory, AttributesOf | None]] = {}
# Modules that register a kind when imported; tried when a kind is not registered yet.
_PLUGIN_MODULES = {"world": ("dft.world.reader", "dft.world")}


def register_reader(kind: str, factory: ReaderFactory, attributes: AttributesOf | None = None, replace: bool = True) -> None:
    """Make ``kind`` buildable. ``factory(cfg)`` returns a reader; ``attributes(cfg)`` (optional)
    returns the attributes and groups it will write without loading anything (the driver uses it
    to describe the label table before workers start)."""
    if not replace and kind in _REGISTRY:
        raise ValueError(f"reader kind {kind!r} is already registered")
    _REGISTRY[kind] = (factory, attributes)


def reader_kinds() -> list[str]:
    return sorted(_REGISTRY)


def _lookup(cfg: ReaderConfig) -> tuple[ReaderFactory, AttributesOf | None]:
    modules = [cfg.module] if cfg.module else list(_PLUGIN_MODULES.get(cfg.kind, ()))
    if cfg.kind not in _REGISTRY or cfg.module:
        for name in modules:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if cfg.module:
                    raise ValueError(f"reader kind {cfg.kind!r}: cannot import module {name!r} ({exc})") from exc
            if cfg.kind in _REGISTRY:
                break
    if cfg.kind not in _REGISTRY:
        raise ValueError(
            f"reader kind {cfg.kind!r} is not registered (known: {', '.join(reader_kinds())}); "
            "a plugin registers it with dft.evaluate.readers.register_reader and names its module in "
            "the reader config's 'module' field"
        )
    return _REGISTRY[cfg.kind]


def build_reader(cfg: ReaderConfig) -> Reader:
    factory, _ = _lookup(cfg)
    return factory(cfg)


def declared_attributes(cfg: ReaderConfig) -> dict[str, list[str]] | None:
    """What a reader of this config writes, without building it; None if its plugin cannot say."""
    _, attributes = _lookup(cfg)
    return attributes(cfg) if attributes else None


class ReaderChain:
    """Several readers run one after the other on the same batch (one actor holds them all)."""

    def __init__(self, cfgs: list[ReaderConfig]):
        self.readers = [build_reader(c) for c in cfgs]
        self.attributes: dict[str, list[str]] = {}
        for r in self.readers:
            clash = set(self.attributes) & set(r.attributes)
            if clash:
                raise ValueError(f"two readers write the same attribute(s) {sorted(clash)}")
            self.attributes.update(r.attributes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for r in self.readers:
            batch = r(batch)
        return batch


# ---------------------------------------------------------------------------------------------
# Helpers shared by readers


def decode_batch(images: np.ndarray) -> tuple[list[Any], list[str | None]]:
    """PIL RGB images (None where decoding failed) and the failure reason per image."""
    import io

    from PIL import Image

    out, reasons = [], []
    for data in images:
        try:
            with Image.open(io.BytesIO(bytes(data))) as im:
                out.append(im.convert("RGB"))
            reasons.append(None)
        except Exception:  # one broken file must not fail the batch: it is unreadable
            out.append(None)
            reasons.append("decode_error")
    return out, reasons


def object_column(values) -> np.ndarray:
    col = np.empty(len(values), dtype=object)
    col[:] = list(values)
    return col


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_hf_model(source: str, model_cls, processor_cls, device: str = "cpu", cache_dir: str | None = None):
    """(model, processor) of a transformers model source, in eval mode on ``device`` (fp16 on CUDA)."""
    import torch

    from dft.models.sources import resolve_model_source

    folder = resolve_model_source(source, cache_dir=cache_dir)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = model_cls.from_pretrained(folder, dtype=dtype).to(device).eval()
    return model, processor_cls.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# Skin tone: no model


class SkinToneReader:
    """Perceived skin tone by face detection, a skin colour rule and the Monk scale.

    Writes ``skin_tone`` (Monk tone "1".."10"), ``skin_tone_group`` (lighter / medium / darker),
    ``skin_tone_ita_class`` (Chardon's class), the numbers ``skin_tone_ita``, ``skin_tone_l``,
    ``skin_tone_a``, ``skin_tone_b``, and the reasons when unreadable. Options (``cfg.options``)
    go to ``FaceSkinTone`` (``cascade``, ``min_face``, ``min_side``, ``min_skin_fraction``...)."""

    def __init__(self, cfg: ReaderConfig | None = None):
        from dft.evaluate.skin_tone import FaceSkinTone

        self.face = FaceSkinTone(**(cfg.options if cfg else {}))
        self.attributes = skin_tone_attributes(cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        mst, group, klass, reason = [None] * n, [None] * n, [None] * n, [None] * n
        nums = np.full((4, n), np.nan)
        for i, data in enumerate(batch["image"]):
            fr = self.face.read_bytes(bytes(data))
            if fr.reading is None:
                reason[i] = fr.reason
                continue
            r = fr.reading
            mst[i], group[i], klass[i] = str(r.mst), r.group, r.ita_class
            nums[:, i] = (r.ita, *r.lab)
        out = dict(batch)
        out["skin_tone"] = object_column(mst)
        out["skin_tone_group"] = object_column(group)
        out["skin_tone_ita_class"] = object_column(klass)
        for a in ("skin_tone", "skin_tone_group", "skin_tone_ita_class"):
            out[f"{a}_reason"] = object_column(reason)
        out["skin_tone_ita"], out["skin_tone_l"], out["skin_tone_a"], out["skin_tone_b"] = nums
        return out


def skin_tone_attributes(cfg: ReaderConfig | None = None) -> dict[str, list[str]]:
    from dft.evaluate.skin_tone import GROUPS, ITA_CLASSES

    return {
        "skin_tone": [str(i) for i in range(1, 11)],
        "skin_tone_group": list(GROUPS),
        "skin_tone_ita_class": list(ITA_CLASSES),
    }


def _clip_factory(cfg: ReaderConfig) -> Reader:
    from dft.evaluate.clip_reader import ClipReader

    return ClipReader.from_config(cfg)


def _vqa_factory(cfg: ReaderConfig) -> Reader:
    from dft.evaluate.vqa_reader import VqaReader

    return VqaReader.from_config(cfg)


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


def _clip_score_factory(cfg: ReaderConfig) -> Reader:
    from dft.evaluate.clip_score import ClipScorer

    return ClipScorer.from_config(cfg)


register_reader("skin_tone", SkinToneReader, skin_tone_attributes)
register_reader("clip_score", _clip_score_factory, lambda cfg: {})
register_reader(
    "clip", _clip_factory, lambda cfg: {a: list(c) for a, c in classes_for(cfg, DEFAULT_CLIP_CLASSES).items()}
)
register_reader(
    "vqa", _vqa_factory, lambda cfg: {a: list(c) for a, c in classes_for(cfg, DEFAULT_VQA_CLASSES).items()}
)
