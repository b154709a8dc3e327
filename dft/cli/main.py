"""``dft``: one sub-command per stage, ``run`` for all of them in order, and ``demo``."""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from dft.cli.console import StageConsole, console, exit_code, log_to, quiet_libraries, report_error, setup_logging
from dft.errors import DftError

DESCRIPTION = """\
dft: diversity fine-tuning of text-to-image models, on Ray.

A run goes through stages, each reading what the one before wrote under the run folder
(run.uri, local or s3://):
  prompts   build the combinatorial prompt table (ethnicity x gender x age x profession)
  generate  generate the synthetic image set with a Ray Data actor pool (WebDataset + Parquet)
  curate    drop images whose perceived attributes contradict their prompt (optional)
  train     fine-tune the UNet with Ray Train + DeepSpeed, export a diffusers pipeline
  evaluate  generate on neutral prompts with base and fine-tuned models, read perceived
            attributes, score fairness
  report    write the report folder (index.html, report.md, charts, contact sheets)
Utilities:
  label     read perceived attributes of any images into a label table
  fairness  score a label table
  audit-reader  audit readers against images whose true attributes are known
  config    show the effective configuration
  status    what a run has done so far: stages, shards, training step, evaluation, last errors
  run       every stage in order;   demo  the whole pipeline on the demo world (docs/world.md)

Configuration: defaults, then --config YAML files (in order), then --set section.key=value.
A finished stage is a no-op when run again with the same config; --force redoes it.

Console: one line per stage start and end, one progress bar, warnings, one line per error. dft's log
and Ray's own output go to RUN/logs/ (dft.log, ray.log, ray-session/); -v shows them here too.
Exit codes: 0 done, 2 a bad config or input, 3 a finished stage's config changed (use --force),
1 a stage failed.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="Override one field, e.g. --set generate.steps=4 (repeatable).")
    p.add_argument("--force", action="store_true", help="Redo the stage even if it already finished.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="Debug logging, tracebacks, and Ray's own logs and progress bars on the console.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dft", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("config", help="Show the effective configuration.")
    p.add_argument("action", choices=["show"], help="'show': print the effective config as YAML.")
    _common(p)

    p = sub.add_parser("prompts", help="Build the prompt table (Parquet) and print counts per attribute.")
    _common(p)
    p.add_argument("--out", help="Write the table here instead of RUN/prompts (a folder URI).")

    for name, text in [
        ("generate", "Generate the synthetic set with a Ray Data actor pool."),
        ("curate", "Filter synthetic images whose perceived attributes contradict their prompt."),
        ("train", "Fine-tune with Ray Train + DeepSpeed and export a diffusers pipeline."),
        ("evaluate", "Generate on neutral prompts, read attributes, score fairness, write the report."),
        ("run", "Run every stage in order (prompts, generate, curate, train, evaluate, report)."),
    ]:
        _common(sub.add_parser(name, help=text))

    p = sub.add_parser("report", help="Write the report folder of a run.")
    p.add_argument("run", nargs="?", help="Run folder (default: run.uri of the config).")
    _common(p)

    p = sub.add_parser("label", help="Read perceived attributes of images into a label table.")
    p.add_argument("path", help="Images: a folder of image files, WebDataset shards, or Parquet with image bytes.")
    p.add_argument("--out", required=True, help="Label table to write (.parquet or .csv).")
    _common(p)

    p = sub.add_parser(
        "fairness",
        help="Score a label table (Parquet or CSV: prompt column + attribute columns).",
        description="Score a label table: every metric per attribute, per prompt and averaged over prompts, "
        "with 95 percent intervals that cover the true value (test inversion), the finite-sample floor (what a "
        "model drawing exactly the target shares shows at this many images) and a corrected estimate; "
        "two models (base/finetuned, else the first two) are compared with a paired bootstrap when their "
        "images share (prompt, seed), else with independent resamples. Targets, intersections and groups "
        "also come from evaluate.targets / evaluate.intersections / evaluate.groups of --config/--set; "
        "the options below add to them.",
    )
    p.add_argument("labels", help="Label table (.parquet or .csv; a CSV's LABELS.csv.groups.json sidecar declares its groups).")
    p.add_argument("--json", action="store_true", help="Print the full result as JSON.")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="Resamples for the bootstrap of the comparison and the unreadable rate; the metric "
                   "intervals simulate min(N, 400) samples per model tried (0: no intervals).")
    p.add_argument("--target", action="append", default=[], metavar="ATTR=GROUP:SHARE,GROUP:SHARE",
                   help="Target shares of an attribute (repeatable), e.g. gender=man:0.5,woman:0.5 or "
                   "age=young:0.75,elderly:0.25; adds nothing new for uniform, which is the default. "
                   "imbalance_target and kl_target are measured against it.")
    p.add_argument("--intersect", action="append", default=[], metavar="ATTR,ATTR[,...]",
                   help="Score attributes jointly (repeatable), e.g. gender,skin_tone_group adds the attribute "
                   "gender+skin_tone_group with groups man+lighter, ...")
    p.add_argument("--groups", action="append", default=[], metavar="ATTR=GROUP,GROUP[,...]",
                   help="Declare an attribute's full list of groups (repeatable), for tables that do not "
                   "(a CSV without sidecar): a group no image was read as still counts in K.")
    p.add_argument("--reader-audit", metavar="AUDIT.json",
                   help="A reader's confusion matrices (dft audit-reader --json): adds shares and metrics corrected "
                   "for what the reader confuses or cannot read, with intervals that also resample the audit.")
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="Override one field, e.g. --set evaluate.bootstrap=200 (repeatable).")
    p.add_argument("-v", "--verbose", action="store_true")

    from dft.cli.audit import add_parser as add_audit_parser

    add_audit_parser(sub)

    p = sub.add_parser(
        "status",
        help="Show a run's progress: stages done, shards committed, training step and checkpoint, "
        "evaluation, last errors.",
        description="Read a run folder (local or s3://; default: run.uri of the config) and show: each stage's "
        "marker (finished when, counts, config hash) or its recorded failure; generation shards committed of "
        "planned, rows done, failures so far; the newest training checkpoint (step of max_steps, path, time) "
        "and a recorded stop; evaluation images and labels per model; the errors recorded, latest first. "
        "Read-only: starts no Ray. A stage shown 'started' has outputs but no marker: it is running, or it was "
        "killed before it could record a failure.",
    )
    p.add_argument("run", nargs="?", help="Run folder (default: run.uri of the config).")
    p.add_argument("--json", action="store_true", help="Print the status as JSON instead of tables.")
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE",
                   help="YAML config (repeatable): its run.uri, and its run.name, train.max_steps and "
                   "evaluate.models where it sets them (else the run's own records say).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="Override one field, e.g. --set run.uri=s3://bucket/runs/x (repeatable).")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")

    p = sub.add_parser(
        "demo",
        help="The whole pipeline on the demo world: a known-biased built-in model, local Ray, local disk "
        "(dft/configs/world.yaml; see docs/world.md).",
    )
    _common(p)
    return parser


def _prompt_table(counts: dict) -> None:
    """The prompt table's counts per attribute (``dft prompts``)."""
    per = counts.get("per_attribute", {})
    summary = Table(title=f"prompt table: {counts.get('combinations', 0):,} combinations, {counts.get('rows', 0):,} images")
    columns = (("attribute", "left"), ("values", "right"), ("images per value (min / max)", "right"), ("examples", "left"))
    for col, justify in columns:
        summary.add_column(col, justify=justify)
    for attr, c in per.items():
        if c:
            summary.add_row(attr, str(len(c)), f"{min(c.values()):,} / {max(c.values()):,}", ", ".join(list(c)[:4]))
    console.print(summary)


def _generate_table(counts: dict, out_uri: str) -> None:
    """The generation's counts (``dft generate``)."""
    table = Table(title=f"generate: {out_uri}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in [
        ("rows", f"{counts.get('rows', 0):,}"),
        ("images", f"{counts.get('images', 0):,}"),
        ("failures", f"{counts.get('failures', 0):,}"),
        ("shards (generated now)", f"{counts.get('shards', 0):,} ({counts.get('shards_generated', 0):,})"),
        ("bytes", f"{counts.get('bytes', 0) / 1e6:,.1f} MB"),
        ("seconds", f"{counts.get('seconds', 0):,.1f}"),
        ("images/s", f"{counts.get('images_per_s', 0):,.2f}"),
    ]:
        table.add_row(name, value)
    console.print(table)


def run_stages(cfg, stages, force: bool = False, verbose: bool = False) -> list:
    """The pipeline with the console's stage lines and progress bar; Ray's output to RUN/logs/."""
    from dft.pipeline import run_pipeline
    from dft.runs import Run

    log_to(Run(cfg.run.uri), verbose)
    with StageConsole() as lines:
        return run_pipeline(cfg, stages, force=force, observer=lines)


def _demo(files: list[str], overrides: list[str], force: bool, verbose: bool) -> int:
    """The demo world (docs/world.md): build or reuse the biased base model, run every stage, print
    the before/after table. ``--config`` files replace the world config."""
    import time

    from dft.runs import Run
    from dft.world.demo import demo_config, run_demo, summary

    t0 = time.time()
    cfg = demo_config(files or None, overrides)
    logs = log_to(Run(cfg.run.uri), verbose)
    with StageConsole() as lines:
        run_demo(cfg, force=force, observer=lines)
    console.rule("[bold]demo: before and after")
    console.print(summary(cfg), markup=False, highlight=False)
    console.print(f"demo finished in {time.time() - t0:.0f} s; logs in {logs}", markup=False, highlight=False)
    return 0


def _status(args) -> int:
    from dft.cli.status import status_cli
    from dft.config.load import ConfigError, load_config

    try:
        cfg = load_config(list(args.config), args.overrides)
    except (ConfigError, ValueError) as exc:
        report_error(exc, getattr(args, "verbose", False))
        return 2

    # Fields a config sets win; the others come from the run's own records (markers, checkpoints).
    def given(section: str, key: str):
        part = getattr(cfg, section)
        return getattr(part, key) if key in part.model_fields_set else None

    return status_cli(args.run or cfg.run.uri, as_json=args.json, train_name=given("run", "name"),
                      max_steps=given("train", "max_steps"), planned_models=given("evaluate", "models"))


def fairness_command(args) -> int:
    """``dft fairness``: evaluate.targets/intersections/groups of the config, then the options."""
    from dft.cli.evaluate import fairness_cli
    from dft.config.load import load_config
    from dft.evaluate import attributes as A

    try:
        ev = load_config(list(args.config), list(args.overrides)).evaluate if (args.config or args.overrides) else None
        targets = dict(ev.targets if ev else {}) | A.parse_targets(args.target)
        intersections = list(ev.intersections if ev else []) + A.parse_intersections(args.intersect)
        groups = dict(ev.groups if ev else {}) | A.parse_groups(args.groups)
    except (DftError, ValueError) as exc:
        report_error(exc, getattr(args, "verbose", False), prefix="dft fairness: ")
        return 2
    return fairness_cli(args.labels, as_json=args.json, bootstrap=args.bootstrap, targets=targets,
                        intersections=intersections, groups=groups, reader_audit=args.reader_audit)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    setup_logging(verbose)
    if args.command == "status":  # reads files only: before the model libraries are imported to be quieted
        return _status(args)
    quiet_libraries()
    if args.command == "fairness":
        return fairness_command(args)
    if args.command == "audit-reader":
        from dft.cli.audit import audit_cli

        return audit_cli(args, console)
    try:
        return _command(args, verbose)
    except DftError as exc:
        report_error(exc, verbose)
        return exit_code(exc)


def _command(args, verbose: bool) -> int:
    from dft.cluster import check_run_uri
    from dft.config.load import dump_config, load_config
    from dft.pipeline import STAGES, stage_function

    files = list(args.config)
    if args.command == "demo":
        return _demo(files, args.overrides, args.force, verbose)
    cfg = load_config(files, args.overrides)
    check_run_uri(cfg.run.uri)
    if args.command in ("prompts", "run", "generate"):
        from dft.prompts.vocab import load_vocabulary

        load_vocabulary(cfg.prompts.vocab)

    if args.command == "config":
        sys.stdout.write(dump_config(cfg))
        return 0
    if args.command == "prompts" and args.out:
        from dft.prompts.stage import build_prompts

        _prompt_table(build_prompts(cfg, args.out))
        return 0
    if args.command == "label":
        from dft.cli.evaluate import label_cli

        return label_cli(args.path, args.out, cfg)
    if args.command == "report":
        if args.run:
            cfg.run.uri = args.run
        run_stages(cfg, ["report"], force=True, verbose=verbose)
        return 0
    if args.command == "run":
        run_stages(cfg, STAGES, force=args.force, verbose=verbose)
        return 0
    if stage_function(args.command) is None:
        console.print(f"[yellow]'dft {args.command}' is not built yet in this version of dft.[/yellow]")
        return 1
    stage_list = {"evaluate": ["evaluate", "report"]}.get(args.command, [args.command])
    results = run_stages(cfg, stage_list, force=args.force, verbose=verbose)
    if args.command == "prompts":
        _prompt_table(results[0].counts)
    elif args.command == "generate":
        from dft.runs import Run

        _generate_table(results[0].counts, Run(cfg.run.uri).synthetic)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
