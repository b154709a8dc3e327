"""Perceived attributes by CLIP zero-shot classification (transformers ``CLIPModel``).

Each attribute has a text prompt per class ("a photo of a man", "a photo of a woman"); an image is
assigned the class whose prompt embedding is closest to its image embedding (softmax over the
model's scaled cosine similarities). The model comes from a model source string: a hub id, a local
or s3:// folder with a CLIP checkpoint and its processor, or the built-in ``tiny-clip``.
"""

from __future__ import annotations

import logging

import numpy as np

from dft.evaluate.batch import decode_batch, object_column
from dft.evaluate.class_texts import DEFAULT_CLIP_CLASSES, classes_for
from dft.evaluate.config import ReaderConfig
from dft.evaluate.hf_models import load_hf_model, resolve_device
from dft.evaluate.registry import ReaderPlugin

log = logging.getLogger(__name__)


def load_clip(source: str, device: str = "cpu", cache_dir: str | None = None):
    """(model, processor) of a CLIP model source, in eval mode on ``device``."""
    from transformers import CLIPModel, CLIPProcessor

    return load_hf_model(source, CLIPModel, CLIPProcessor, device, cache_dir)


def embedding(out):
    """The projected embedding of ``get_image_features``/``get_text_features``: transformers 5 returns a
    model output whose ``pooler_output`` it is, older versions the tensor itself."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class ClipReader:
    def __init__(
        self,
        model: str,
        classes: dict[str, dict[str, str]],
        device: str = "auto",
        min_confidence: float = 0.0,
        cache_dir: str | None = None,
    ):
        import torch

        self.device = resolve_device(device)
        self.model, self.processor = load_clip(model, self.device, cache_dir)
        self.classes = {a: dict(c) for a, c in classes.items()}
        self.attributes = {a: list(c) for a, c in self.classes.items()}
        self.min_confidence = min_confidence
        with torch.inference_mode():
            self.text = {a: self.encode_text(list(c.values())) for a, c in self.classes.items()}
        self.scale = float(self.model.logit_scale.detach().exp())

    @classmethod
    def from_config(cls, cfg: ReaderConfig) -> "ClipReader":
        return cls(
            cfg.model or "tiny-clip",
            classes_for(cfg, DEFAULT_CLIP_CLASSES),
            device=cfg.device,
            min_confidence=cfg.min_confidence,
            cache_dir=cfg.options.get("cache_dir"),
        )

    def encode_text(self, texts: list[str]):
        import torch

        tok = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        emb = embedding(self.model.get_text_features(**tok)).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def encode_images(self, images: list):
        import torch

        px = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        px = px.to(self.device, dtype=self.model.dtype)
        emb = embedding(self.model.get_image_features(pixel_values=px)).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        images, reasons = decode_batch(batch["image"])
        ok = [i for i, im in enumerate(images) if im is not None]
        n = len(images)
        out = dict(batch)
        with torch.inference_mode():
            emb = self.encode_images([images[i] for i in ok]) if ok else None
            for attr, names in self.attributes.items():
                label, score, why = [None] * n, np.full(n, np.nan), list(reasons)
                if emb is not None:
                    probs = (self.scale * emb @ self.text[attr].T).softmax(dim=-1).cpu().numpy()
                    best = probs.argmax(axis=-1)
                    for j, i in enumerate(ok):
                        score[i] = probs[j, best[j]]
                        if score[i] < self.min_confidence:
                            why[i] = "low_confidence"
                        else:
                            label[i] = names[best[j]]
                out[attr] = object_column(label)
                out[f"{attr}_score"] = score
                out[f"{attr}_reason"] = object_column(why)
        return out


def clip_attributes(cfg: ReaderConfig) -> dict[str, list[str]]:
    return {a: list(c) for a, c in classes_for(cfg, DEFAULT_CLIP_CLASSES).items()}


# Declared in pyproject.toml's ``dft.readers`` entry point group.
CLIP = ReaderPlugin(ClipReader.from_config, clip_attributes)
