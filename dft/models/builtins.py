"""The built-in tiny diffusion pipelines (``tiny-sd``, ``small-sd``, ``tiny-sdxl``, ``small-sdxl``,
``tiny-sd3``, ``tiny-flux``): built from config with a fixed seed, offline, for tests and the demo.

Each is a ``BuiltinModel`` that ``pyproject.toml`` declares in the ``dft.model_sources`` entry point
group; ``dft.models.sources`` loads one when its name is first looked up. Nothing here imports torch
or diffusers until a model is built.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from dft.models.sources import BuiltinBuilder, BuiltinModel


def describe_tiny(kind: str, variant: str) -> Callable[[], dict]:
    """What identifies the built-in ``kind`` (sd, sdxl) pipeline of size ``variant`` (tiny, small)."""

    def describe() -> dict:
        from dft.models.tiny import SPECS, vocabulary_texts

        # The installed version, read without importing diffusers (seconds of torch imports): a driver that
        # only checks a source resolves must not pay for loading it.
        words = hashlib.sha256("\n".join(vocabulary_texts()).encode()).hexdigest()[:12]
        return {"kind": kind, "spec": SPECS[variant].as_dict(), "words": words, "tokenizer": 2, "diffusers": version("diffusers")}

    return describe


def build_tiny(kind: str, variant: str) -> BuiltinBuilder:
    def build(folder: Path) -> None:
        from dft.models.tiny import build_tiny_pipeline, vocabulary_texts
        from dft.models.tokenizer import write_tokenizer

        tok = write_tokenizer(folder / "_tokenizer_src", vocabulary_texts())
        pipe = build_tiny_pipeline(kind, variant, tok)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        shutil.rmtree(tok)

    return build


def describe_tiny_flow(kind: str, variant: str) -> Callable[[], dict]:
    """What identifies the built-in ``kind`` (sd3, flux) flow-matching pipeline of size ``variant``."""

    def describe() -> dict:
        from dft.models.tiny import vocabulary_texts
        from dft.models.tiny_flow import FLOW_SPECS

        words = hashlib.sha256("\n".join(vocabulary_texts()).encode()).hexdigest()[:12]
        return {"kind": kind, "spec": FLOW_SPECS[variant].as_dict(), "words": words, "tokenizer": 2, "t5_tokenizer": 1,
                "diffusers": version("diffusers"), "transformers": version("transformers")}

    return describe


def build_tiny_flow(kind: str, variant: str) -> BuiltinBuilder:
    def build(folder: Path) -> None:
        from dft.models.tiny import vocabulary_texts
        from dft.models.tiny_flow import FLOW_SPECS, build_tiny_flow_pipeline
        from dft.models.tokenizer import write_t5_tokenizer, write_tokenizer

        clip = write_tokenizer(folder / "_tokenizer_src", vocabulary_texts())
        t5 = write_t5_tokenizer(folder / "_t5_tokenizer_src", vocabulary_texts(), FLOW_SPECS[variant].t5_max_length)
        pipe = build_tiny_flow_pipeline(kind, variant, clip, t5)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        shutil.rmtree(clip)
        shutil.rmtree(t5)

    return build


TINY_SD = BuiltinModel(describe_tiny("sd", "tiny"), build_tiny("sd", "tiny"))
SMALL_SD = BuiltinModel(describe_tiny("sd", "small"), build_tiny("sd", "small"))
TINY_SDXL = BuiltinModel(describe_tiny("sdxl", "tiny"), build_tiny("sdxl", "tiny"))
SMALL_SDXL = BuiltinModel(describe_tiny("sdxl", "small"), build_tiny("sdxl", "small"))
TINY_SD3 = BuiltinModel(describe_tiny_flow("sd3", "tiny"), build_tiny_flow("sd3", "tiny"))
TINY_FLUX = BuiltinModel(describe_tiny_flow("flux", "tiny"), build_tiny_flow("flux", "tiny"))
