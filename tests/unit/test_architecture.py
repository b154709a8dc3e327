"""The layers of docs/architecture.md, enforced: read every module's imports under dft/ with ``ast``.

Every import counts, at module level or inside a function (a function-level import is still a
dependency: it runs in some process, and a cycle through it is a cycle of concepts). What is not
counted: the implicit import of a parent package (``import dft.a.b`` runs ``dft/a/__init__.py``; the
edge recorded is to ``dft.a.b``), and names reached only through attributes or strings (entry
points in pyproject.toml are strings on purpose: that is how registries find plugins).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dft"

# The only modules that may import Ray: the adapters between the plain stage code and the cluster.
RAY_ADAPTERS = {
    "dft.cluster",  # connect to or start Ray; node resources; wait for placement
    "dft.generate.job",  # the generate stage's Ray Data actor pool and shard commits
    "dft.evaluate.pipeline",  # the readers' Ray Data actor pool
    "dft.train.job",  # the Ray Train TorchTrainer and its checkpoints
    "dft.train.loop",  # the per-worker loop: ray.train.report, the worker's dataset shard
    "dft.train.data",  # Ray Data streaming of the shards (pure preprocessing lives here too, for now)
    "dft.train.controller_watch",  # watches Ray Train's controller for lost placement groups
}
# The only modules that may import DeepSpeed.
DEEPSPEED_ADAPTERS = {
    "dft.train.deepspeed_config",  # the one place a DeepSpeed config is built (and its CPU comm op turned off)
    "dft.train.loop",  # deepspeed.initialize on each worker
    "dft.train.export",  # reading a ZeRO checkpoint back into fp32 weights
}
# The bottom layer: these import only each other (and outside libraries).
FOUNDATIONS = ("dft.models", "dft.plugins", "dft.storage", "dft.runs", "dft.schema", "dft.errors", "dft.cluster",
               "dft.config.base")
# Known violations waiting for another branch; each entry is (importer, imported module) and says when it goes.
KNOWN: set[tuple[str, str]] = set()


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_package)
    return out


MODULES = _modules()


def _imports(name: str, path: Path, is_package: bool):
    """(line, imported module, imported name or None) for every import statement in the module."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base, alias.name


def _target(base: str, name: str | None) -> str:
    """The dft module an import depends on: ``from dft.a import b`` is ``dft.a.b`` when that is a module."""
    if name and f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    return base


IMPORTS = {m: list(_imports(m, *where)) for m, where in MODULES.items()}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(rule) -> list[str]:
    found = []
    for m, imports in IMPORTS.items():
        for line, base, name in imports:
            if rule(m, base, name) and (m, _target(base, name)) not in KNOWN:
                found.append(f"{MODULES[m][0].relative_to(ROOT)}:{line}: {m} imports {base}{'.' + name if name else ''}")
    return found


def test_the_scan_sees_the_tree():
    assert {"dft.cli.main", "dft.models.sources", "dft.evaluate.registry", "dft.world.demo"} <= set(MODULES)
    assert any(base == "dft.models.sources" for _, base, _ in IMPORTS["dft.world.base_model"])


@pytest.mark.parametrize("library, adapters", [("ray", RAY_ADAPTERS), ("deepspeed", DEEPSPEED_ADAPTERS)])
def test_ray_and_deepspeed_only_in_the_adapters(library, adapters):
    assert adapters <= set(MODULES), "an adapter listed here no longer exists: update the list and docs"
    bad = _violations(lambda m, base, name: _within(base, library) and m not in adapters)
    assert not bad, f"{library} imported outside its adapter modules (docs/architecture.md):\n" + "\n".join(bad)
    unused = {a for a in adapters if not any(_within(b, library) for _, b, _ in IMPORTS[a])}
    assert not unused, f"listed as {library} adapters but import no {library}: remove them from the list: {unused}"


def test_only_the_cli_imports_the_cli():
    bad = _violations(lambda m, base, name: _within(_target(base, name), "dft.cli") and not _within(m, "dft.cli"))
    assert not bad, "dft.cli is the top layer; nothing below imports it:\n" + "\n".join(bad)


def test_library_code_does_not_import_the_world():
    def rule(m, base, name):
        return _within(_target(base, name), "dft.world") and not (_within(m, "dft.world") or _within(m, "dft.cli"))

    bad = _violations(rule)
    assert not bad, "only dft.cli uses the demo world; the library finds its plugins by entry points:\n" + "\n".join(bad)


def test_foundations_import_nothing_above_them():
    def rule(m, base, name):
        t = _target(base, name)
        below = any(_within(m, f) for f in FOUNDATIONS)
        return below and _within(t, "dft") and t != "dft" and not any(_within(t, f) for f in FOUNDATIONS)

    bad = _violations(rule)
    assert not bad, "a foundation module imports a stage, the world or the CLI:\n" + "\n".join(bad)


def test_no_module_imports_another_modules_private_names():
    def rule(m, base, name):
        private = [p for p in base.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
        if name and name.startswith("_") and not name.startswith("__"):
            private.append(name)
        return _within(base, "dft") and bool(private)

    bad = _violations(rule)
    assert not bad, "a private (underscore) name used from another module: make it public or move it:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, imports in IMPORTS.items():
        for _, base, name in imports:
            t = _target(base, name)
            if t in MODULES and t != m and (m, t) not in KNOWN:
                graph[m].add(t)
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    detail = []
    for c in cycles:
        detail.append(" <-> ".join(c) + "\n    " + "\n    ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c))
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(detail)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the module graph is deep enough to matter for recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def test_known_violations_are_still_there():
    gone = {k for k in KNOWN if not any(_target(b, n) == k[1] for _, b, n in IMPORTS.get(k[0], ()))}
    assert not gone, f"these KNOWN entries no longer happen: delete them from KNOWN: {sorted(gone)}"


def test_cycle_finder_finds_a_cycle():
    assert sorted(map(sorted, _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == [
        ["a", "b", "c"],
        ["d"],
    ]
