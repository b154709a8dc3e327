"""``dft status RUN [--json]``: the run's progress (dft/status.py) as rich tables, or as JSON."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dft.status import GenerationProgress, RunNotFound, RunStatus, run_status

STATE_STYLE = {"done": "green", "failed": "red", "started": "yellow", "not started": "dim"}


def _of(done: int, planned: int | None) -> str:
    return f"{done:,} / {planned:,}" if planned is not None else f"{done:,} / ?"


def _counts(counts: dict) -> str:
    """The marker's scalar counts; URIs are left to their own tables."""
    shown = []
    for k, v in counts.items():
        if isinstance(v, bool) or v is None or (isinstance(v, str) and "/" in v):
            continue
        if isinstance(v, int):
            shown.append(f"{k} {v:,}")
        elif isinstance(v, float):
            shown.append(f"{k} {v:.4g}")
        elif isinstance(v, str):
            shown.append(f"{k} {v}")
    return ", ".join(shown[:6])


def _short(time: str | None) -> str:
    return time.replace("T", " ")[:19] + " UTC" if time else ""


def _generation_rows(table: Table, g: GenerationProgress) -> None:
    table.add_row("shards committed", _of(g.committed_shards, g.planned_shards)
                  + (f" ({g.shards_in_flight} in flight)" if g.shards_in_flight else ""))
    table.add_row("rows done", _of(g.rows_done, g.planned_rows))
    table.add_row("images", f"{g.images:,}")
    table.add_row("failures", f"{g.failures:,}")
    table.add_row("manifest", "written (finished)" if g.finished else "not yet")


def render(status: RunStatus, console: Console) -> None:
    stages = Table(title=f"run {status.uri}", title_justify="left")
    for col in ("stage", "state", "when", "counts", "config"):
        stages.add_column(col)
    for s in status.stages:
        style = STATE_STYLE.get(s.state, "")
        when = _short(s.finished_at) or (_short(s.error.time) if s.error else "")
        stages.add_row(s.name, f"[{style}]{s.state}[/{style}]", when, _counts(s.counts), s.config_hash or "")
    console.print(stages)
    if all(s.state == "not started" for s in status.stages) and not (status.generation or status.train or status.evaluation):
        console.print("[dim]nothing written yet: no stage has started in this run folder[/dim]")

    if status.generation:
        t = Table(title="generate", title_justify="left", show_header=False)
        t.add_row("folder", status.generation.uri)
        _generation_rows(t, status.generation)
        console.print(t)

    tr = status.train
    if tr:
        t = Table(title=f"train: {tr.name}", title_justify="left", show_header=False)
        t.add_row("folder", tr.uri)
        t.add_row("step", _of(tr.step, tr.max_steps) if tr.step is not None else "none checkpointed yet")
        if tr.last_checkpoint:
            c = tr.last_checkpoint
            t.add_row("last checkpoint", f"step {c.step:,}, {_short(c.time)}")
            t.add_row("", c.uri)
        t.add_row("checkpoints kept", f"{tr.checkpoints}")
        t.add_row("exported pipeline", "yes" if tr.exported else "not yet")
        if tr.stopped:
            t.add_row("[red]stopped[/red]", escape(f"at step {tr.stopped.get('step')}: {tr.stopped.get('reason')}"))
        if tr.other_names:
            t.add_row("other run names", ", ".join(tr.other_names))
        console.print(t)

    ev = status.evaluation
    if ev:
        planned = f" of {len(ev.planned_models)} planned ({', '.join(ev.planned_models)})" if ev.planned_models else ""
        done = sum(m.labels is not None for m in ev.models)
        t = Table(title=f"evaluate: {done} model(s) read{planned}", title_justify="left",
                  caption=f"metrics {'written' if ev.metrics else 'not yet'}", caption_justify="left")
        for col in ("model", "images generated", "failures", "labels read"):
            t.add_column(col)
        for m in ev.models:
            g = m.images
            t.add_row(m.label, _of(g.images, g.planned_rows) if g else "-", f"{g.failures:,}" if g else "-",
                      _of(m.labels, g.planned_rows if g else None) if m.labels is not None else "not yet")
        console.print(t)

    if status.errors:
        t = Table(title="errors (latest first)", title_justify="left")
        for col in ("where", "when", "what"):
            t.add_column(col)
        for e in status.errors:
            what = f"{e.type}: {e.message}" if e.type else e.message
            t.add_row(escape(e.where), _short(e.time), f"[red]{escape(what)}[/red]")
        console.print(t)
    else:
        console.print("[green]no errors recorded[/green]")


def status_cli(uri: str, *, as_json: bool = False, train_name: str | None = None, max_steps: int | None = None,
               planned_models: list[str] | None = None, console: Console | None = None) -> int:
    """Print the status of the run at ``uri``; 0, or 2 with one line naming the URI when there is no run."""
    try:
        status = run_status(uri, train_name=train_name, max_steps=max_steps, planned_models=planned_models)
    except RunNotFound as exc:
        print(f"dft status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        sys.stdout.write(json.dumps(status.as_dict(), indent=2, default=str) + "\n")
    else:
        render(status, console or Console(soft_wrap=False))
    return 0
