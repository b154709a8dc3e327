"""``dft audit-reader IMAGES --truth TRUTH.csv``: the reader audit's tables (dft.evaluate.audit)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

HELP = """\
Audit the configured readers (evaluate.readers, or --reader KIND) against images whose true
attributes are known. TRUTH.csv has a 'key' column (the image's path under IMAGES without its
extension) or a 'file' column, and one column per attribute with the true value (skin_tone 1-10,
skin_tone_group, gender, ...); 'none' or empty means the image has no face and should be
unreadable. Per attribute: accuracy (exact, and within one step on ordered scales), the confusion
matrix, the unreadable rate per true class and per coarse group (MST 1-3, 4-7, 8-10), each with a
95% Wilson interval, and a verdict: FAIL when the unreadable rate or the accuracy of two coarse
groups (or true classes) differ by more than --tolerance. Exit status 0 either way; 2 on bad input.

A painted test set: python tests/painted_faces.py OUT --seed 1 (writes OUT/*.png and OUT/TRUTH.csv).
"""


def add_parser(sub) -> None:
    import argparse

    p = sub.add_parser("audit-reader", help="Audit readers against images with known attributes.",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="Images: a folder of image files, WebDataset shards, or Parquet with image bytes.")
    p.add_argument("--truth", required=True, metavar="TRUTH.csv", help="True attributes per image (key or file column).")
    p.add_argument("--json", metavar="OUT", help="Also write the full audit as JSON to this file ('-': stdout).")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="Largest allowed difference of unreadable rate or accuracy between groups (default 0.10).")
    p.add_argument("--reader", action="append", default=[], metavar="KIND",
                   help="Audit this reader kind with default settings instead of evaluate.readers (repeatable: "
                   "skin_tone, clip, vqa; clip/vqa use the built-in tiny models unless configured).")
    p.add_argument("--config", "-c", action="append", default=[], metavar="FILE", help="YAML config (repeatable).")
    p.add_argument("--set", "-s", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="Override one field, e.g. --set 'evaluate.readers=[{kind: skin_tone}]' (repeatable).")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")


def _pct(block) -> str:
    if not block or block.get("value") is None:
        return "-"
    lo, hi = block["ci"]
    return f"{100 * block['value']:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def print_audit(result: dict, console: Console) -> None:
    for attr, a in result["attributes"].items():
        v = a["verdict"]
        colour = {"pass": "green", "fail": "red"}.get(v["status"], "yellow")
        t = Table(title=f"{attr}: {a['faces']} faces, {a['no_face']} without a face — "
                        f"[{colour}]{v['status'].upper()}[/{colour}]", title_justify="left")
        for c in ("true class", "n", "exact", "within one", "unreadable"):
            t.add_column(c, justify="right" if c != "true class" else "left")
        rows = list(a["by_class"].items()) + [("", None)] + list((a["by_group"] or {}).items())
        for name, b in rows:
            if b is None:
                t.add_section()
                continue
            t.add_row(name, str(b["n"]), _pct(b["accuracy"]), _pct(b["within_one"]), _pct(b["unreadable"]))
        t.add_section()
        t.add_row("[bold]all faces", str(a["faces"]), _pct(a["accuracy"]), _pct(a["within_one"]), _pct(a["unreadable"]))
        if a["false_reading_rate"] is not None:
            t.add_row("no face (read anyway)", str(a["no_face"]), "", "", _pct(a["false_reading_rate"]))
        console.print(t)
        conf = a["confusion"]
        m = Table(title=f"{attr}: confusion (rows true, columns read)", title_justify="left")
        m.add_column("true")
        for p in conf["predicted"]:
            m.add_column(p[:5] if p != "unreadable" else "?", justify="right")
        for name, row in zip(conf["true"], conf["counts"]):
            m.add_row(name, *[str(x) if x else "." for x in row])
        console.print(m)
        if a["unreadable_reasons"]:
            console.print("unreadable because: " + ", ".join(f"{k} {n}" for k, n in a["unreadable_reasons"].items()))
        console.print(f"[{colour}]verdict: {v['text']}[/{colour}]\n")


def audit_cli(args, console: Console) -> int:
    from dft.config.load import ConfigError, load_config
    from dft.errors import DftError
    from dft.evaluate.audit import audit_reader
    from dft.evaluate.config import ReaderConfig

    try:
        cfg = load_config(list(args.config), list(args.overrides))
        readers = [ReaderConfig(kind=k) for k in args.reader] if args.reader else list(cfg.evaluate.readers)
        result = audit_reader(args.images, args.truth, readers, tolerance=args.tolerance)
    except (ConfigError, DftError, ValueError, OSError) as exc:
        console.print(f"[red]dft audit-reader: {exc}[/red]")
        return 2
    if args.json == "-":
        print(json.dumps(result, indent=1))
        return 0
    print_audit(result, Console())
    if args.json:
        from dft import storage

        storage.write_json(args.json, result)
        console.print(f"wrote {args.json}")
    return 0
