"""Loading the Hugging Face (transformers) models that readers use, from any model source string."""

from __future__ import annotations


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
