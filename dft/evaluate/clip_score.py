"""Quality guard: the CLIP score of each image against its own prompt.

CLIP score = 100 * max(cos(image embedding, prompt embedding), 0), the form used by torchmetrics
and most text-to-image papers. A fairness gain that comes with a drop in CLIP score means the
fine-tuned model follows its prompts less well; the report shows both side by side.
It is a reader without attributes: it writes a ``clip_score`` column, so it runs in the same actor
pool as the attribute readers (``kind: clip_score``).
"""

from __future__ import annotations

import numpy as np

from dft.evaluate.batch import decode_batch
from dft.evaluate.clip_reader import embedding, load_clip
from dft.evaluate.config import ReaderConfig
from dft.evaluate.hf_models import resolve_device
from dft.evaluate.registry import ReaderPlugin


class ClipScorer:
    attributes: dict[str, list[str]] = {}

    def __init__(self, model: str, device: str = "auto", cache_dir: str | None = None):
        self.device = resolve_device(device)
        self.model, self.processor = load_clip(model, self.device, cache_dir)
        self.attributes = {}

    @classmethod
    def from_config(cls, cfg: ReaderConfig) -> "ClipScorer":
        return cls(cfg.model or "tiny-clip", device=cfg.device, cache_dir=cfg.options.get("cache_dir"))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        images, _ = decode_batch(batch["image"])
        prompts = batch.get("prompt")
        n = len(images)
        score = np.full(n, np.nan)
        ok = [i for i, im in enumerate(images) if im is not None and prompts is not None and prompts[i]]
        if ok:
            with torch.inference_mode():
                px = self.processor.image_processor([images[i] for i in ok], return_tensors="pt")["pixel_values"]
                img = embedding(self.model.get_image_features(pixel_values=px.to(self.device, self.model.dtype))).float()
                tok = self.processor.tokenizer(
                    [str(prompts[i]) for i in ok], padding=True, truncation=True, return_tensors="pt"
                ).to(self.device)
                txt = embedding(self.model.get_text_features(**tok)).float()
                cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1).clamp(min=0) * 100.0
            score[ok] = cos.cpu().numpy()
        out = dict(batch)
        out["clip_score"] = score
        return out


def no_attributes(cfg: ReaderConfig) -> dict[str, list[str]]:
    return {}


# Declared in pyproject.toml's ``dft.readers`` entry point group.
CLIP_SCORE = ReaderPlugin(ClipScorer.from_config, no_attributes)


def summarize(table, confidence: float = 0.95, bootstrap: int = 1000, seed: int = 0) -> dict:
    """Per model: mean CLIP score over images with a bootstrap interval, and per prompt means."""
    import pyarrow.compute as pc

    if "clip_score" not in table.column_names:
        return {}
    out = {}
    models = table.column("model").unique().to_pylist() if "model" in table.column_names else [None]
    rng = np.random.default_rng(seed)
    for m in models:
        t = table if m is None else table.filter(pc.equal(table.column("model"), m))
        s = t.column("clip_score").to_numpy(zero_copy_only=False).astype(float)
        s = s[~np.isnan(s)]
        if not len(s):
            continue
        block = {"mean": float(s.mean()), "images": int(len(s)), "ci": None}
        if bootstrap and len(s) > 50_000:  # the normal approximation is exact enough, and O(n)
            half = 1.959964 * s.std(ddof=1) / np.sqrt(len(s))
            block["ci"] = [float(s.mean() - half), float(s.mean() + half)]
        elif bootstrap:
            means = s[rng.integers(0, len(s), (bootstrap, len(s)))].mean(axis=1)
            a = (1 - confidence) / 2
            block["ci"] = [float(np.quantile(means, a)), float(np.quantile(means, 1 - a))]
        out[str(m)] = block
    return out

