"""Resolve a model source string to a local folder, and load a diffusers pipeline from it.

A source is one of:
- a built-in name (``tiny-sd``, ``tiny-sdxl``, ``tiny-sd3``, ``tiny-flux``, ``tiny-clip``, ``world-base``...):
  built from config with a fixed seed, saved with ``save_pretrained`` into the cache once, then
  loaded with ``from_pretrained`` like any other folder. Built-ins are plugins: declared as entry
  points (group ``dft.model_sources``, see pyproject.toml) or registered with ``register_builtin``;
  this module imports none of them;
- a local folder or ``file://`` URI;
- an ``s3://`` folder: copied once per node into the local cache (a file lock makes concurrent
  workers wait for one copy; a marker written last makes a half-copied folder invisible);
- anything else is a hub id (``org/name``), downloaded through huggingface_hub's cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

from dft import plugins, storage
from dft.errors import DftError

log = logging.getLogger(__name__)

COMPLETE = ".dft-complete"


class ModelSourceError(DftError, RuntimeError):
    """A model source that cannot be resolved; the message says what to do instead."""


def cache_root(cache_dir: str | None = None) -> Path:
    root = cache_dir or os.environ.get("DFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dft")
    return Path(root)


BuiltinBuilder = Callable[[Path], None]
ENTRY_POINT_GROUP = "dft.model_sources"


class BuiltinModel(NamedTuple):
    """A model built from code: ``describe()`` returns what identifies it (hashed into the cache key),
    ``build(folder)`` writes it with ``save_pretrained``."""

    describe: Callable[[], dict]
    build: BuiltinBuilder


_BUILTINS: dict[str, BuiltinModel] = {}


def register_builtin(name: str, describe: Callable[[], dict], build: BuiltinBuilder) -> None:
    """Register a built-in model from code (it takes precedence over an entry point of the same name).

    Packages declare theirs instead as entry points in the ``dft.model_sources`` group, each naming a
    ``BuiltinModel`` (or a ``(describe, build)`` pair); those are loaded when the name is first looked up,
    in whichever process looks it up (a Ray worker imports nothing in advance)."""
    _BUILTINS[name] = BuiltinModel(describe, build)


def builtin_names() -> list[str]:
    """Every built-in model name, registered or declared (declared ones are not loaded to list them)."""
    return sorted(set(_BUILTINS) | set(plugins.declared(ENTRY_POINT_GROUP)))


def builtin_model(name: str) -> BuiltinModel | None:
    """The built-in model called ``name``, loading its entry point on first use; None if there is none."""
    if name not in _BUILTINS:
        declared = plugins.load_declared(ENTRY_POINT_GROUP, name, ModelSourceError, "model source")
        if declared is None:
            return None
        describe, build = declared
        _BUILTINS[name] = BuiltinModel(describe, build)
    return _BUILTINS[name]


def locked_materialize(target: Path, fill: Callable[[Path], None]) -> Path:
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
    source = source.strip()
    root = cache_root(cache_dir)
    builtin = builtin_model(source)
    if builtin is not None:
        describe, build = builtin
        key = hashlib.sha256(json.dumps(describe(), sort_keys=True).encode()).hexdigest()[:12]
        folder = locked_materialize(root / "builtin" / f"{source}-{key}", build)
        return str(folder)
    if storage.is_s3(source):
        key = _s3_fingerprint(source)
        folder = locked_materialize(root / "s3" / key, lambda d: storage.download_folder(source, str(d)))
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
