"""Attribute readers: the protocol every reader follows, and the registry that builds one from config.

A reader is built from a ``ReaderConfig`` by a factory, loads what it needs in ``__init__`` and
reads a batch in ``__call__``. No Ray here: ``dft.evaluate.pipeline`` adapts readers to a Ray Data
actor pool, and tests call them in-process.

The batch contract (a dict of equal-length numpy arrays, as Ray Data's ``batch_format="numpy"``):

- in: ``image`` (encoded bytes: PNG, JPEG, WebP), other columns (``key``, ``prompt``...) pass through;
- out: for each attribute ``A`` the reader declares, ``A`` (object array of the group name as a
  string, or None when unreadable) and ``A_reason`` (None, or why it is unreadable: ``no_face``,
  ``no_skin``, ``overexposed``, ``decode_error``, ``low_confidence``...), plus optional numeric
  extras (``skin_tone_ita``, ``A_score``).

``reader.attributes`` maps each attribute it writes to its full list of groups: the label table
records them, so a group nobody was assigned to still counts in the metrics.

Reader kinds are plugins, and this module imports none of them. A package declares its kinds as
entry points in the ``dft.readers`` group (pyproject.toml), each naming a ``ReaderPlugin`` or a
``(factory, attributes)`` pair; the registry loads one when its kind is first looked up, in the
driver and in every Ray worker (workers are fresh processes that import nothing in advance). The
demo world's reader is one::

    [project.entry-points."dft.readers"]
    world = "dft.world.reader:READER"      # READER = (WorldReader, world_attributes)

Code that is not an installed package registers a kind with ``register_reader`` at import time and
names its module in the reader config: ``evaluate.readers: [{kind: mine, module: my_pkg.reader}]``;
``module`` is imported before the kind is looked up, in every process.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable, NamedTuple, Protocol

import numpy as np

from dft import plugins
from dft.errors import DftError
from dft.evaluate.config import ReaderConfig

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dft.readers"


class Reader(Protocol):
    attributes: dict[str, list[str]]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


ReaderFactory = Callable[[ReaderConfig], Reader]
AttributesOf = Callable[[ReaderConfig], dict[str, list[str]]]


class ReaderPlugin(NamedTuple):
    """``factory(cfg)`` returns a reader; ``attributes(cfg)`` (optional) returns the attributes and groups
    it will write without loading anything (the driver uses it to describe the label table before
    workers start)."""

    factory: ReaderFactory
    attributes: AttributesOf | None = None


class ReaderConfigError(DftError, ValueError):
    """A reader config names a kind no plugin provides, or a module that cannot be imported."""


_REGISTRY: dict[str, ReaderPlugin] = {}


def register_reader(kind: str, factory: ReaderFactory, attributes: AttributesOf | None = None, replace: bool = True) -> None:
    """Make ``kind`` buildable from code (it takes precedence over an entry point of the same kind)."""
    if not replace and kind in _REGISTRY:
        raise ValueError(f"reader kind {kind!r} is already registered")
    _REGISTRY[kind] = ReaderPlugin(factory, attributes)


def reader_kinds() -> list[str]:
    """Every reader kind, registered or declared (declared ones are not loaded to list them)."""
    return sorted(set(_REGISTRY) | set(plugins.declared(ENTRY_POINT_GROUP)))


def _load_entry_point(kind: str) -> None:
    if kind in _REGISTRY:
        return
    declared = plugins.load_declared(ENTRY_POINT_GROUP, kind, ReaderConfigError, "reader kind")
    if declared is not None:
        factory, attributes = declared
        _REGISTRY[kind] = ReaderPlugin(factory, attributes)


def reader_plugin(cfg: ReaderConfig) -> ReaderPlugin:
    """The plugin that builds readers of ``cfg.kind``: importing ``cfg.module`` first if the config names
    one, else loading the kind's entry point."""
    if cfg.module:
        try:
            importlib.import_module(cfg.module)
        except ModuleNotFoundError as exc:
            raise ReaderConfigError(
                f"reader config field 'module': cannot import {cfg.module!r} for kind {cfg.kind!r} ({exc})"
            ) from exc
    _load_entry_point(cfg.kind)
    if cfg.kind not in _REGISTRY:
        known = reader_kinds()
        hint = "" if known else " (none at all: is dft installed? `pip install -e .` registers its entry points)"
        raise ReaderConfigError(
            f"reader config field 'kind': unknown reader kind {cfg.kind!r} (known: {', '.join(known)}){hint}; "
            f"a package declares a kind as an entry point in the {ENTRY_POINT_GROUP!r} group, or registers it "
            "with dft.evaluate.registry.register_reader and names its module in the reader config's 'module' field"
        )
    return _REGISTRY[cfg.kind]


def build_reader(cfg: ReaderConfig) -> Reader:
    return reader_plugin(cfg).factory(cfg)


def declared_attributes(cfg: ReaderConfig) -> dict[str, list[str]] | None:
    """What a reader of this config writes, without building it; None if its plugin cannot say."""
    attributes = reader_plugin(cfg).attributes
    return attributes(cfg) if attributes else None


class ReaderChain:
    """Several readers run one after the other on the same batch (one actor holds them all)."""

    def __init__(self, cfgs: list[ReaderConfig]):
        self.readers = [build_reader(c) for c in cfgs]
        self.attributes: dict[str, list[str]] = {}
        for r in self.readers:
            clash = set(self.attributes) & set(r.attributes)
            if clash:
                raise ValueError(f"two readers write the same attribute(s) {sorted(clash)}")
            self.attributes.update(r.attributes)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for r in self.readers:
            batch = r(batch)
        return batch
