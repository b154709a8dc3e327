"""Perceived attributes by visual question answering (BLIP-2 style, as the method's authors used).

Each attribute has a question ("Question: does the person look like a man or a woman? Answer:")
and an answer text per class ("a man", "a woman"). Two modes:

- ``score`` (default): the class whose answer the model finds most likely after the question,
  by the mean log-probability of the answer's tokens (length-normalised, so "a man" and "a woman"
  compete fairly). Always gives a class; ``min_confidence`` turns a weak winner into unreadable.
- ``generate``: the model answers freely; the answer is matched to a class by its words (the
  longest class answer found in it). No match: unreadable, reason ``answer_not_a_class``.

Works with ``Blip2ForConditionalGeneration`` checkpoints with a decoder-only language model (OPT)
or an encoder-decoder one (Flan-T5), from any model source, or the built-in ``tiny-vqa``.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from dft.evaluate.batch import decode_batch, object_column
from dft.evaluate.class_texts import DEFAULT_VQA_CLASSES, DEFAULT_VQA_QUESTIONS, classes_for
from dft.evaluate.config import ReaderConfig
from dft.evaluate.hf_models import load_hf_model, resolve_device
from dft.evaluate.registry import ReaderPlugin

log = logging.getLogger(__name__)


def load_vqa(source: str, device: str = "cpu", cache_dir: str | None = None):
    """(model, processor) of a BLIP-2 model source, in eval mode on ``device``."""
    from transformers import AutoProcessor, Blip2ForConditionalGeneration

    return load_hf_model(source, Blip2ForConditionalGeneration, AutoProcessor, device, cache_dir)


def match_answer(text: str, answers: dict[str, str]) -> str | None:
    """The class whose answer text appears in ``text`` as whole words (longest answer first)."""
    words = " " + " ".join(re.findall(r"[a-z0-9-]+", text.lower())) + " "
    for cls, ans in sorted(answers.items(), key=lambda kv: -len(kv[1])):
        core = " ".join(re.findall(r"[a-z0-9-]+", ans.lower()))
        bare = re.sub(r"^(a|an|the) ", "", core)
        if f" {core} " in words or f" {bare} " in words:
            return cls
    return None


class VqaReader:
    def __init__(
        self,
        model: str,
        questions: dict[str, str],
        answers: dict[str, dict[str, str]],
        mode: str = "score",
        device: str = "auto",
        min_confidence: float = 0.0,
        max_new_tokens: int = 8,
        cache_dir: str | None = None,
    ):
        self.device = resolve_device(device)
        self.model, self.processor = load_vqa(model, self.device, cache_dir)
        self.tokenizer = self.processor.tokenizer
        self.answers = answers
        self.questions = questions
        self.attributes = {a: list(c) for a, c in answers.items()}
        self.mode = mode
        self.min_confidence = min_confidence
        self.max_new_tokens = max_new_tokens
        cfg = self.model.config
        self.decoder_only = bool(cfg.use_decoder_only_language_model)
        self.num_query = int(cfg.num_query_tokens)
        self.image_token = cfg.image_token_index
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @classmethod
    def from_config(cls, cfg: ReaderConfig) -> "VqaReader":
        answers = classes_for(cfg, DEFAULT_VQA_CLASSES)
        questions = {}
        for a in answers:
            q = cfg.questions.get(a) or DEFAULT_VQA_QUESTIONS.get(a)
            if not q:
                raise ValueError(f"reader vqa: attribute {a!r} needs a question in 'questions.{a}'")
            questions[a] = q
        return cls(
            cfg.model or "tiny-vqa", questions, answers, mode=cfg.vqa_mode, device=cfg.device,
            min_confidence=cfg.min_confidence, cache_dir=cfg.options.get("cache_dir"),
            max_new_tokens=int(cfg.options.get("max_new_tokens", 8)),
        )

    # -- scoring ---------------------------------------------------------------------------
    def _ids(self, text: str, special: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _answer_span(self, question: str, answer: str) -> tuple[list[int], int, int]:
        """Token ids of question + answer and the [start, end) of the answer's tokens in them."""
        q = self._ids(question)
        full = self._ids(question.rstrip() + " " + answer)
        start = 0
        while start < min(len(q), len(full)) and q[start] == full[start]:
            start += 1
        end = len(full)
        special = set(self.tokenizer.all_special_ids)
        while end > start + 1 and full[end - 1] in special:
            end -= 1
        return full, start, end

    def _score(self, pixel_values, question: str, answers: list[str]):
        """``[n_images, n_answers]`` mean log-probability of each answer after the question."""
        import torch

        n, c = pixel_values.shape[0], len(answers)
        if self.decoder_only:
            spans = [self._answer_span(question, a) for a in answers]
            prefix = [self.image_token] * self.num_query if self.image_token is not None else []
            seqs = [prefix + ids for ids, _, _ in spans]
            T = max(len(s) for s in seqs)
            ids = torch.full((c, T), self.pad, dtype=torch.long)
            mask = torch.zeros((c, T), dtype=torch.long)
            target = torch.zeros((c, T), dtype=torch.bool)
            for j, (s, (_, a0, a1)) in enumerate(zip(seqs, spans)):
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
                target[j, len(prefix) + a0 : len(prefix) + a1] = True
            ids, mask, target = (t.repeat(n, 1).to(self.device) for t in (ids, mask, target))
            px = pixel_values.repeat_interleave(c, dim=0)
            logits = self.model(pixel_values=px, input_ids=ids, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
            tmask = target[:, 1:].float()
        else:
            q = self._ids(question)
            prefix = [self.image_token] * self.num_query if self.image_token is not None else []
            enc = torch.tensor([prefix + q] * c)
            outs = [self._ids(a) for a in answers]
            T = max(len(o) for o in outs)
            labels = torch.full((c, T), -100, dtype=torch.long)
            for j, o in enumerate(outs):
                labels[j, : len(o)] = torch.tensor(o)
            enc, labels = enc.repeat(n, 1).to(self.device), labels.repeat(n, 1).to(self.device)
            px = pixel_values.repeat_interleave(c, dim=0)
            logits = self.model(pixel_values=px, input_ids=enc, labels=labels).logits.float()
            tmask = (labels >= 0).float()
            logp = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        mean = (logp * tmask).sum(-1) / tmask.sum(-1).clamp(min=1)
        return mean.view(n, c)

    def _generate(self, images, question: str) -> list[str]:
        inputs = self.processor(images=images, text=[question] * len(images), return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(ids, skip_special_tokens=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        images, reasons = decode_batch(batch["image"])
        ok = [i for i, im in enumerate(images) if im is not None]
        n = len(images)
        out = dict(batch)
        with torch.inference_mode():
            px = None
            if ok:
                px = self.processor.image_processor([images[i] for i in ok], return_tensors="pt")["pixel_values"]
                px = px.to(self.device, dtype=self.model.dtype)
            for attr, names in self.attributes.items():
                label, score, why, said = [None] * n, np.full(n, np.nan), list(reasons), [None] * n
                if ok and self.mode == "score":
                    texts = [self.answers[attr][c] for c in names]
                    probs = self._score(px, self.questions[attr], texts).softmax(-1).cpu().numpy()
                    for j, i in enumerate(ok):
                        b = int(probs[j].argmax())
                        score[i] = probs[j, b]
                        if score[i] < self.min_confidence:
                            why[i] = "low_confidence"
                        else:
                            label[i] = names[b]
                elif ok:
                    answers = self._generate([images[i] for i in ok], self.questions[attr])
                    for j, i in enumerate(ok):
                        said[i] = answers[j].strip()
                        label[i] = match_answer(said[i], self.answers[attr])
                        if label[i] is None:
                            why[i] = "answer_not_a_class"
                out[attr] = object_column(label)
                out[f"{attr}_score"] = score
                out[f"{attr}_reason"] = object_column(why)
                if self.mode == "generate":
                    out[f"{attr}_answer"] = object_column(said)
        return out


def vqa_attributes(cfg: ReaderConfig) -> dict[str, list[str]]:
    return {a: list(c) for a, c in classes_for(cfg, DEFAULT_VQA_CLASSES).items()}


# Declared in pyproject.toml's ``dft.readers`` entry point group.
VQA = ReaderPlugin(VqaReader.from_config, vqa_attributes)
