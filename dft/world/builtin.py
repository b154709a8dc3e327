"""The ``world-base`` model source, declared without importing torch: drivers that only resolve
other sources (or check that one exists) must not pay seconds of imports for it.

``pyproject.toml`` declares ``WORLD_BASE`` in the ``dft.model_sources`` entry point group, so
``dft.models.sources`` finds it by name (built on first use, then cached) without importing the world."""

from __future__ import annotations

from pathlib import Path

from dft.models.sources import BuiltinModel


def _describe() -> dict:
    from dft.world.base_model import describe_builtin

    return describe_builtin()


def _build(folder: Path) -> None:
    from dft.world.base_model import build_builtin

    build_builtin(folder)


WORLD_BASE = BuiltinModel(_describe, _build)
