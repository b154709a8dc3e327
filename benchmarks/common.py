"""What the benchmarks share: fresh child processes, alternating pairs, and how a ratio is reported.

Every figure is a ratio against a bare baseline measured in the same run, pair by pair, in alternating
order (bare then ours, ours then bare, ...), so a shared machine's drifting load falls on both sides;
the median over pairs is the figure, the range is printed beside it.

Each benchmark ends with one line ``RESULT {json}``: its ratios (name, median, min, max, pairs, goal,
direction, met) and its other figures. ``make bench`` and the smoke test read that line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Callable

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DS_ACCELERATOR": "cpu",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
for _k, _v in ENV_DEFAULTS.items():
    os.environ.setdefault(_k, _v)

# The benchmarks import the library from the tree they sit in, whether or not it is installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)


def run_child(script: str, argv: list[str], timeout: float = 900) -> dict:
    """Run ``script argv`` in a fresh Python (its own imports, its own peak RSS); return its RESULT."""
    res = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode or not lines:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-6000:])
        raise SystemExit(f"{os.path.basename(script)} {' '.join(argv[:2])} failed (exit {res.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result, default=float), flush=True)


def alternate(pairs: int, bare: Callable[[int], dict], ours: Callable[[int], dict]) -> list[tuple[dict, dict]]:
    """``pairs`` (bare, ours) results, the order flipped every pair."""
    out = []
    for i in range(pairs):
        if i % 2 == 0:
            b = bare(i)
            o = ours(i)
        else:
            o = ours(i)
            b = bare(i)
        out.append((b, o))
    return out


def ratio(name: str, values: list[float], goal: float | None, higher_is_better: bool = True, what: str = "") -> dict:
    """The summary of one ratio over pairs: median, range, and whether the median meets its goal."""
    met = None
    med = statistics.median(values)
    if goal is not None:
        met = med >= goal if higher_is_better else med <= goal
    return {"name": name, "median": med, "min": min(values), "max": max(values), "pairs": len(values),
            "values": values, "goal": goal, "direction": ">=" if higher_is_better else "<=", "met": met,
            "what": what}


def ratio_line(r: dict) -> str:
    goal = "no goal" if r["goal"] is None else f"goal {r['direction']} {r['goal']:g}"
    verdict = "" if r["met"] is None else ("  met" if r["met"] else "  MISSED")
    spread = (f"range {r['min']:.3f}-{r['max']:.3f} over {r['pairs']} pairs" if r["pairs"] > 1 else "1 pair")
    return f"RATIO {r['name']}: median {r['median']:.3f} ({spread}; {goal}){verdict}"


def print_ratios(ratios: list[dict]) -> None:
    for r in ratios:
        print(ratio_line(r), flush=True)


class TreeCPU:
    """CPU seconds used by this process and every process below it (an embedded Ray's daemons and workers)
    between ``start()`` and ``stop()``. Sampled from /proc every ``every`` seconds in a thread, so a worker
    that exits in between still counts up to its last sample. Wall time on a shared machine depends on
    what else runs; CPU seconds do not (much), so they say what a row costs."""

    def __init__(self, every: float = 0.25):
        import threading

        self.every = every
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _tree(self) -> dict[int, float]:
        children: dict[int, list[int]] = {}
        cpu: dict[int, float] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(name))
            cpu[int(name)] = (int(fields[11]) + int(fields[12])) / self._tick
        out, todo = {}, [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid in cpu:
                out[pid] = cpu[pid]
            todo += children.get(pid, [])
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.last.update(self._tree())

    def start(self) -> "TreeCPU":
        self.first = self._tree()
        self.last = dict(self.first)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.last.update(self._tree())
        return sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items())


def table(title: str, columns: list[str], rows: list[list]) -> None:
    """A rich table on stdout (plain text when rich is missing)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency of the project
        print(title)
        for row in [columns, *rows]:
            print("  ".join(str(c) for c in row))
        return
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[str(c) for c in row])
    Console(width=140).print(t)
