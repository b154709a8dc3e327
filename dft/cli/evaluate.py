"""``dft label`` and ``dft fairness``: the evaluation's readers and scores on any images or label table."""

from __future__ import annotations

import json
import sys

import pyarrow as pa

from dft.cli.console import console, report_error
from dft.errors import DftError


def label_cli(path: str, out: str, cfg) -> int:
    """``dft label PATH --out LABELS``: the readers of ``evaluate.readers`` over any images.

    Runs in this process; the evaluate stage runs the same readers as a Ray Data actor pool."""
    from dft.evaluate.fairness import METADATA_KEY
    from dft.evaluate.labels import label_local, write_labels

    if not (str(out).endswith(".parquet") or str(out).endswith(".csv")):
        console.print(f"dft label: --out must end in .parquet or .csv, got {out!r}", style="red", markup=False)
        return 2
    try:
        table = label_local(path, cfg.evaluate.readers, batch_size=max(r.batch_size for r in cfg.evaluate.readers))
    except (OSError, ValueError) as exc:
        report_error(exc, False, prefix="dft label: ")
        return 2
    write_labels(table, out)
    attrs = json.loads(table.schema.metadata[METADATA_KEY])
    summary = ", ".join(
        f"{a}: {table.num_rows - table.column(a).null_count}/{table.num_rows} read" for a in attrs if a in table.column_names
    )
    sys.stdout.write(f"wrote {table.num_rows} labels to {out} ({summary})\n")
    return 0


def fairness_cli(
    labels_path: str,
    as_json: bool = False,
    bootstrap: int = 1000,
    targets: dict[str, dict[str, float]] | None = None,
    intersections: list[list[str]] | None = None,
    groups: dict[str, list[str]] | None = None,
    reader_audit: str | None = None,
) -> int:
    """``dft fairness LABELS [--json] [--bootstrap N] [--target ...] [--intersect ...] [--groups ...]
    [--reader-audit AUDIT.json]``: print the result; exit code 0, or 2 on bad input."""
    import logging

    from dft import storage
    from dft.evaluate.fairness import read_labels, score_table
    from dft.evaluate.summary import format_summary

    try:
        table = read_labels(labels_path)
        audit = None
        if reader_audit:
            from dft.evaluate.confusion import read_audit

            audit = read_audit(storage.read_text(reader_audit))
            unknown = sorted(set(audit) - set(table.column_names))
            if unknown:
                logging.getLogger(__name__).warning("reader audit %s: attributes %s are not in the label table",
                                                    reader_audit, unknown)
        result = score_table(table, bootstrap=bootstrap, targets=targets, intersections=intersections, groups=groups,
                             reader_audit=audit)
    except (OSError, ValueError, KeyError, pa.ArrowException, DftError) as exc:
        report_error(exc, False, prefix=f"dft fairness: {labels_path}: ")
        return 2
    if not any(m["attributes"] for m in result["models"].values()):
        console.print(f"dft fairness: {labels_path}: no attribute column with at least 2 groups", style="red", markup=False)
        return 2
    sys.stdout.write(json.dumps(result, indent=2) + "\n" if as_json else format_summary(result))
    return 0
