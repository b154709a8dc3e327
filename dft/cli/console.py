"""What a person sees: one line when a stage starts and one when it ends, one live progress bar with
an ETA, warnings, and one line for an error. Everything else goes to the run's log folder.

    RUN/logs/dft.log       dft's own log (INFO; DEBUG with -v), Python warnings
    RUN/logs/ray.log       the driver's "ray" loggers (Ray Data's plans, Ray Train's controller)
    RUN/logs/ray-session/  a link to the Ray session's logs: every worker's stdout/stderr, raylet, ray-data.log

With ``-v`` the console also shows dft's INFO and DEBUG logs, Ray Data's progress bars and every
Ray worker's output, as Ray prints them; so does a job submitted with ``ray job submit`` (at INFO),
whose console is ``ray job logs``.
"""

from __future__ import annotations

import logging
import os
import traceback

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from dft import progress
from dft.errors import DftError, StageFailed
from dft.runs import StageResult

console = Console(stderr=True)

# Loggers whose INFO lines are part of the console's story (the demo world narrates building its
# base model: the only long step outside a stage). Others show WARNING and above unless -v.
CONSOLE_INFO = ("dft.world", "dft.cli")
NOISY = ("urllib3", "botocore", "s3fs", "fsspec", "filelock", "PIL", "matplotlib", "aiobotocore", "asyncio")


def loud(verbose: bool) -> bool:
    """Whether the console shows everything: with -v, and in a job submitted with ``ray job submit``, whose
    console is already a log (``ray job logs``; the cluster drills read the workers' lines there)."""
    from dft.cluster import in_submitted_job

    return verbose or in_submitted_job()


class _ConsoleFilter(logging.Filter):
    def __init__(self, everything: bool):
        super().__init__()
        self.everything = everything

    def filter(self, record: logging.LogRecord) -> bool:
        if self.everything:
            return True
        if record.levelno >= logging.WARNING:
            return record.name != "py.warnings"
        return record.name.startswith(CONSOLE_INFO)


def setup_logging(verbose: bool) -> None:
    """The console handler (dft's warnings, the demo's narration; everything with -v or in a submitted
    job). ``log_to`` adds the run's log file once its folder is known."""
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, log_time_format="[%X]")
    handler.addFilter(_ConsoleFilter(loud(verbose)))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[handler], force=True)
    logging.captureWarnings(True)  # library deprecation warnings: to the log file (console with -v)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # a broken import shows up later with its own message
        pass


def log_to(run, verbose: bool) -> str:
    """Send dft's log and Ray's output to the run's log folder (``Run.local_logs``); returns it."""
    from dft.cluster import route_ray_output

    folder = run.local_logs
    os.makedirs(folder, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "dft-log-file":
            root.removeHandler(h)
            h.close()
    handler = logging.FileHandler(os.path.join(folder, "dft.log"), encoding="utf-8")
    handler.set_name("dft-log-file")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    route_ray_output(console=loud(verbose), log_dir=folder)
    return folder


def _n(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def counts_text(stage: str, c: dict) -> str:
    """One line of what a stage's counts say."""
    try:
        if stage == "prompts":
            return f"{_n(c['combinations'])} combinations, {_n(c['rows'])} rows, {_n(c['neutral_prompts'])} neutral prompts"
        if stage == "generate":
            return (f"{_n(c['images'])} images, {_n(c['failures'])} failed, {_n(c['shards_generated'])} of "
                    f"{_n(c['shards'])} shards generated now, {c['bytes'] / 1e6:,.1f} MB")
        if stage == "curate":
            return f"kept {_n(c['kept'])} of {_n(c['images'])} images, dropped by reason {c.get('dropped_by', {})}"
        if stage == "train":
            loss = f", final loss {c['final_loss']:.4f}" if isinstance(c.get("final_loss"), (int, float)) else ""
            return f"{_n(c['steps'])} steps{loss}, {_n(c.get('samples_seen'))} samples; model {c.get('model')}"
        if stage == "evaluate":
            models = ", ".join(f"{k} {_n(v.get('images'))} images" for k, v in c.get("models", {}).items())
            return f"{_n(c['labels'])} labels over {_n(c['prompts'])} prompts ({models})"
        if stage == "report":
            return f"{_n(c['images'])} images, {_n(c['attributes'])} attributes, {_n(c['models'])} models"
    except (KeyError, TypeError, ValueError):
        pass
    shown = [f"{k} {_n(v)}" for k, v in c.items() if isinstance(v, (int, float, str)) and not (isinstance(v, str) and "/" in v)]
    return ", ".join(shown[:6])


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {s % 60:02.0f} s"


class StageConsole:
    """The pipeline's observer and the progress reporter: stage lines and one live bar."""

    def __init__(self, out: Console | None = None):
        self.console = out or console
        self._bars: Progress | None = None
        self._open = 0

    # dft.pipeline.Observer
    def stage_started(self, name: str, index: int, total: int) -> None:
        from dft.pipeline import BY_NAME

        self.console.print(f"[bold]{name}[/bold] [dim]({index}/{total}): {BY_NAME[name].summary}[/dim]", soft_wrap=True)

    def stage_finished(self, result: StageResult, index: int, total: int) -> None:
        name = result.stage
        if result.status == "skipped":
            self.console.print(f"[dim]{name}: skipped ({result.note})[/dim]", soft_wrap=True)
        elif result.status == "reused":
            self.console.print(f"  [cyan]= {name}: done earlier, reused[/cyan] [dim]({counts_text(name, result.counts)})[/dim]",
                               soft_wrap=True)
        else:
            self.console.print(f"  [green]✓ {name}[/green] in {_seconds(result.seconds)}: {counts_text(name, result.counts)}",
                               soft_wrap=True)

    # dft.progress.Reporter
    def open(self, description: str, total: float | None, unit: str):
        if not self.console.is_terminal:  # a log file or a pipe: a bar would only add blank lines
            return progress.Nothing()
        if self._bars is None:
            self._bars = Progress(
                TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console, transient=True,
            )
            self._bars.start()
        self._open += 1
        task_id = self._bars.add_task(description, total=total, unit=unit)
        return _Bar(self._bars, task_id)

    def close(self, task) -> None:
        if self._bars is None or not isinstance(task, _Bar):
            return
        self._bars.remove_task(task.task_id)
        self._open -= 1
        if self._open <= 0:
            self._bars.stop()
            self._bars, self._open = None, 0

    def __enter__(self):
        self._previous = progress.set_reporter(self)
        return self

    def __exit__(self, *exc):
        progress.set_reporter(self._previous)
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


class _Bar:
    def __init__(self, bars: Progress, task_id):
        self.bars, self.task_id = bars, task_id

    def advance(self, n: float = 1) -> None:
        self.bars.advance(self.task_id, n)

    def update(self, completed: float) -> None:
        self.bars.update(self.task_id, completed=completed)


# Exit codes: 2 the config or an input is wrong (nothing ran), 3 a finished stage's config changed
# (re-run with --force), 1 a stage failed.
EXIT_BAD_INPUT, EXIT_CONFIG_CHANGED, EXIT_STAGE_FAILED = 2, 3, 1


def exit_code(exc: DftError) -> int:
    """3 for a changed config, 2 for a bad value a person gave (also when a stage found it), else 1."""
    from dft.errors import InputError
    from dft.runs import StageConfigChanged

    if isinstance(exc, StageConfigChanged):
        return EXIT_CONFIG_CHANGED
    if isinstance(exc, StageFailed):
        return EXIT_BAD_INPUT if isinstance(exc.__cause__, InputError) else EXIT_STAGE_FAILED
    return EXIT_BAD_INPUT


def report_error(exc: BaseException, verbose: bool, prefix: str = "") -> None:
    """One red line (the traceback too with -v)."""
    if verbose:
        console.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    lines = [" ".join(line.split()) for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
    text = lines[0] + (" " + "; ".join(lines[1:]) if len(lines) > 1 else "")
    console.print(f"{prefix}{text}", style="red", markup=False, highlight=False, soft_wrap=True)
