"""Entry-point plugins: listed without importing, loaded on first use, a broken declaration named."""

from importlib.metadata import EntryPoint

import pytest

from dft import plugins
from dft.evaluate.registry import ReaderConfigError
from dft.models.sources import ModelSourceError


def test_the_projects_groups_are_declared_and_listing_imports_nothing():
    assert {"tiny-sd", "world-base"} <= set(plugins.declared("dft.model_sources"))
    assert {"skin_tone", "world"} <= set(plugins.declared("dft.readers"))
    assert plugins.load_declared("dft.readers", "no-such-kind", ReaderConfigError, "reader kind") is None


@pytest.mark.parametrize("error, what", [(ModelSourceError, "model source"), (ReaderConfigError, "reader kind")])
def test_a_declaration_that_does_not_load_names_itself_and_its_cause(monkeypatch, error, what):
    broken = EntryPoint("broken", "dft_no_such_module.sub:thing", "g")
    monkeypatch.setattr(plugins, "declared", lambda group: {"broken": broken})
    with pytest.raises(error, match=r"'broken': its entry point 'dft_no_such_module.sub:thing' \(g\) does not load "
                                    r"\(ModuleNotFoundError.*pip install -e"):
        plugins.load_declared("g", "broken", error, what)
