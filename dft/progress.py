"""Progress of long work (rows, images, steps), reported without knowing who shows it.

Library code opens a task and advances it; the command line installs a reporter that draws it as a
live bar with an ETA (dft/cli/console.py). With no reporter installed (tests, jobs run as libraries)
a task costs nothing and shows nothing.

    with progress.task("generate", total=plan.rows, unit="images") as bar:
        for batch in ...:
            bar.advance(len(batch))
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(self, completed: float) -> None: ...


class Reporter(Protocol):
    def open(self, description: str, total: float | None, unit: str) -> Task: ...

    def close(self, task: Task) -> None: ...


class Nothing:
    """A task nobody shows."""

    def advance(self, n: float = 1) -> None:
        pass

    def update(self, completed: float) -> None:
        pass


_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> Reporter | None:
    """Install ``reporter`` (None: none); returns the one it replaces."""
    global _reporter
    previous, _reporter = _reporter, reporter
    return previous


def active() -> bool:
    """Whether someone shows progress (skip work that only feeds a bar when not)."""
    return _reporter is not None


@contextmanager
def task(description: str, total: float | None = None, unit: str = "") -> Iterator[Task]:
    """A unit of long work: ``advance(n)`` as it goes, ``update(done)`` when the total done is known."""
    reporter = _reporter
    if reporter is None:
        yield Nothing()
        return
    t = reporter.open(description, total, unit)
    try:
        yield t
    finally:
        reporter.close(t)
