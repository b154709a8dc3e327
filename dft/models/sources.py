"""Resolve a model source string to a local folder, and load a diffusers pipeline from it.

A source is one of:
- a built-in name (``tiny-sd``, ``tiny-sdxl``, ``tiny-sd3``, ``tiny-flux``, and those registered by other modules, e.g. ``tiny-clip``):
  built from config with a fixed seed, saved with ``save_pretrained`` into the cache once, then
  loaded with ``from_pretrained`` like any other folder;
- a local folder or ``file://`` URI;
- an ``s3://`` folder: copied once per node into the local cache (a file lock makes concurrent
  workers wait for one copy; a marker written last makes a half-copied folder invisible);
- anything else is a hub id (``org/name``), downloaded through huggingface_hub's cache.
"""

from __future__ import annotations

from dft.errors import DftError
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from dft import storage

log = logging.getLogger(__name__)

COMPLETE = ".dft-complete"


class ModelSourceError(DftError, RuntimeError):
    """A model source that cannot be resolved; the message says what to do instead."""


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("DFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dft")
    return Path(root)


BuiltinBuilder = Callable[[Path], None]
_BUILTINS: dict[str, tuple[Callable[[], dict], BuiltinBuilder]] = {}


def register_builtin(name: str, describe: Callable[[], dict], build: BuiltinBuilder) -> None:
    """Register a built-in model: ``describe()`` returns what identifies it (hashed into the cache key),
    ``build(folder)`` writes it with ``save_pretrained``."""
    _BUILTINS[name] = (describe, build)


def builtin_names() -> list[str]:
    _register_defaults()
    return sorted(_BUILTINS)


def _register_defaults() -> None:
    if "tiny-sd" in _BUILTINS:
        return
    for kind in ("sd", "sdxl"):
        for variant in ("tiny", "small"):
            name = f"tiny-{kind}" if variant == "tiny" else f"small-{kind}"
            _BUILTINS[name] = (_describe_tiny(kind, variant), _build_tiny(kind, variant))
    for kind in ("sd3", "flux"):
        _BUILTINS[f"tiny-{kind}"] = (_describe_tiny_flow(kind, "tiny"), _build_tiny_flow(kind, "tiny"))
    # Other packages register their built-ins: tiny-clip and tiny-vqa (readers), world-base (the demo world).
    import dft.evaluate.tiny_models  # noqa: F401
    import dft.world  # noqa: F401


def _describe_tiny(kind: str, variant: str):
    def describe() -> dict:
        from importlib.metadata import version

        from dft.models.tiny import SPECS, vocabulary_texts

        # The installed version, read without importing diffusers (seconds of torch imports): a driver that
        # only checks a source resolves must not pay for loading it.
        words = hashlib.sha256("\n".join(vocabulary_texts()).encode()).hexdigest()[:12]
        return {"kind": kind, "spec": SPECS[variant].as_dict(), "words": words, "tokenizer": 2, "diffusers": version("diffusers")}

    return describe


def _build_tiny(kind: str, variant: str) -> BuiltinBuilder:
    def build(folder: Path) -> None:
        from dft.models.tiny import build_tiny_pipeline, vocabulary_texts
        from dft.models.tokenizer import write_tokenizer

        tok = write_tokenizer(folder / "_tokenizer_src", vocabulary_texts())
        pipe = build_tiny_pipeline(kind, variant, tok)
        pipe.save_pretrained(str(folder), safe_serialization=True)
        shutil.rmtree(tok)

    return build


def _describe_tiny_flow(kind: str, variant: str):
    def describe() -> dict:
        from importlib.metadata import version

        from dft.models.tiny import vocabulary_texts
        from dft.models.tiny_flow import FLOW_SPECS

        words = hashlib.sha256("\n".join(vocabulary_texts()).encode()).hexdigest()[:12]
        return {"kind": kind, "spec": FLOW_SPECS[variant].as_dict(), "words": words, "tokenizer": 2, "t5_tokenizer": 1,
                "diffusers": version("diffusers"), "transformers": version("transformers")}

    return describe


def _build_tiny_flow(kind: str, variant: str) -> BuiltinBuilder:
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


def _locked_materialize(target: Path, fill: Callable[[Path], None]) -> Path:
    """Fill ``target`` exactly once per machine, even with several processes racing to do it."""
    from filelock import FileLock

    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=3600):
        if (target / COMPLETE).exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            fill(tmp)
            (tmp / COMPLETE).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _s3_fingerprint(uri: str) -> str:
    fs, path = storage.filesystem(uri)
    listing = fs.find(path, detail=True)
    if not listing:
        raise ModelSourceError(f"model source {uri!r}: no files under that s3:// prefix")
    items = sorted(
        (k, v.get("size"), str(v.get("ETag") or v.get("LastModified") or "")) for k, v in listing.items()
    )
    return hashlib.sha256(json.dumps([uri, items]).encode()).hexdigest()[:16]


def resolve_model_source(source: str, cache_dir: str | None = None, revision: str | None = None) -> str:
    """A local folder holding the model named by ``source``."""
    _register_defaults()
    source = source.strip()
    root = cache_root(cache_dir)
    if source in _BUILTINS:
        describe, build = _BUILTINS[source]
        key = hashlib.sha256(json.dumps(describe(), sort_keys=True).encode()).hexdigest()[:12]
        folder = _locked_materialize(root / "builtin" / f"{source}-{key}", build)
        return str(folder)
    if storage.is_s3(source):
        key = _s3_fingerprint(source)
        folder = _locked_materialize(root / "s3" / key, lambda d: storage.download_folder(source, str(d)))
        log.info("model %s cached at %s", source, folder)
        return str(folder)
    if source.startswith("file://") or source.startswith((".", "/", "~")) or os.path.isdir(source):
        path = storage.normalize(source)
        if not os.path.isdir(path):
            raise ModelSourceError(f"model source {source!r}: local folder {path} does not exist")
        return path
    if "://" in source:
        raise ModelSourceError(f"model source {source!r}: unsupported scheme (use a folder, s3:// or a hub id)")
    return _hub_download(source, revision)


def _hub_download(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision)
    except Exception as exc:  # offline, unknown repo, no network: all end the same way for the user
        builtins = ", ".join(builtin_names())
        raise ModelSourceError(
            f"model source {repo_id!r} was read as a Hugging Face hub id and could not be fetched "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Point model.source at a local copy (a folder saved with save_pretrained, or "
            "`huggingface-cli download` output), an s3:// folder holding the same files, "
            f"or a built-in model ({builtins})."
        ) from exc


def load_pipeline(source: str, *, dtype=None, device: str = "cpu", cache_dir: str | None = None, revision=None):
    """Load a diffusers text-to-image pipeline from a source string."""
    import torch
    from diffusers import DiffusionPipeline

    folder = resolve_model_source(source, cache_dir=cache_dir, revision=revision)
    if not os.path.exists(os.path.join(folder, "model_index.json")):
        raise ModelSourceError(
            f"model source {source!r} resolved to {folder}, which holds no model_index.json: "
            "not a diffusers pipeline folder"
        )
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype or torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
