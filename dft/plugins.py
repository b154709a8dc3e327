"""Entry-point plugins: what installed packages declare in a group (``pyproject.toml``
``[project.entry-points."GROUP"]``), listed without importing them and loaded on first use, in whichever
process asks (a Ray worker imports nothing in advance). The model sources (``dft.model_sources``) and
the evaluation readers (``dft.readers``) are the two groups."""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points


@functools.cache
def declared(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name (read once per process; nothing is imported)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_declared(group: str, name: str, error: type[Exception], what: str):
    """Import and return what ``name``'s entry point in ``group`` names; None if nothing declares it.
    A declaration that does not load raises ``error`` naming ``what``, the entry point and the cause."""
    ep = declared(group).get(name)
    if ep is None:
        return None
    try:
        return ep.load()
    except Exception as exc:
        raise error(
            f"{what} {name!r}: its entry point {ep.value!r} ({group}) does not load "
            f"({type(exc).__name__}: {exc}); reinstall the package that declares it (pip install -e .)"
        ) from exc
