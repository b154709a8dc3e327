"""The plain-text summary ``dft fairness LABELS`` prints: per model and attribute the averaged
metrics with their intervals, floors and corrected estimates, then the comparison."""

from __future__ import annotations

import numpy as np

from dft.evaluate import metrics as M


def value_text(v: dict) -> str:
    if v.get("infinite"):
        return "inf"
    return "n/a" if v["value"] is None else f"{v['value']:.4f}"


def format_summary(result: dict) -> str:
    """A plain-text summary: per model and attribute the averaged metrics with intervals, the
    floor and the corrected estimate."""
    lines = []
    for model, mres in result["models"].items():
        lines.append(f"model {model}: {mres['images']} images")
        for attr, block in mres["attributes"].items():
            target = "" if is_uniform(block) else "  target " + ", ".join(f"{g} {s:.3g}" for g, s in block["target"].items())
            lines.append(
                f"  perceived {attr} (K={block['K']}): {len(block['prompts'])} prompts, "
                f"unreadable {block['unreadable_rate']:.1%}{target}"
            )
            lines.append(f"    {'metric':<17}{'value':>8}  {'95% interval':<18}  {'floor':>7}  {'corrected':>9}")
            for m in M.METRICS:
                v = block["mean"][m]
                ci = v["ci"]
                ci_txt = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci and ci[0] is not None and ci[1] is not None else ""
                floor = "" if v.get("floor") is None else f"{v['floor']:.4f}"
                corr = "" if v.get("corrected") is None else f"{v['corrected']:.4f}"
                note = "  at floor" if v.get("at_floor") else ""
                lines.append(f"    {m:<17}{value_text(v):>8}  {ci_txt:<18}  {floor:>7}  {corr:>9}{note}")
            rc = block.get("reader_corrected")
            if rc:
                v = rc["mean"]["imbalance"]
                ci = v["ci"] or [None, None]
                ci_txt = f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci[0] is not None and ci[1] is not None else ""
                shares = ", ".join(f"{g} {s:.3f}" for g, s in rc["shares"].items() if s is not None)
                lines.append(f"    corrected for the reader's confusion ({rc['audited_images']} audited images): "
                             f"imbalance {value_text(v)}{ci_txt}; shares {shares}")
    comp = result.get("comparison")
    if comp:
        lines.append(f"{comp['other']} vs {comp['base']} ({comp.get('resampling', 'independent')} bootstrap):")
        for attr, rows in comp["attributes"].items():
            for m, row in rows.items():
                rel = row["relative_change"]
                rel_txt = "n/a" if rel is None else f"{rel:+.1%}"
                ci = row.get("change_ci")
                ci_txt = f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci and ci[0] is not None and ci[1] is not None else ""
                sig = "  significant" if row.get("significant") else ""
                lines.append(f"  {attr:<16} {m:<17} {rel_txt:>8}  {ci_txt:<20} {row['verdict']}{sig}")
    return "\n".join(lines) + "\n"


def is_uniform(block: dict) -> bool:
    shares = list(block["target"].values())
    return bool(np.allclose(shares, 1.0 / len(shares)))
