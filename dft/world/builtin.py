"""The ``world-base`` model source, registered without importing torch: drivers that only resolve
other sources (or check that one exists) must not pay seconds of imports for it."""

from __future__ import annotations

from pathlib import Path

BUILTIN_NAME = "world-base"


def _describe() -> dict:
    from dft.world.base_model import describe_builtin

    return describe_builtin()


def _build(folder: Path) -> None:
    from dft.world.base_model import build_builtin

    build_builtin(folder)


def register_builtin_model() -> None:
    """Make ``world-base`` a model source string (built on first use, then cached)."""
    from dft.models.sources import register_builtin

    register_builtin(BUILTIN_NAME, _describe, _build)
