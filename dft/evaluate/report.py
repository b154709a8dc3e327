"""The report folder a person opens: RUN/report/.

    index.html    summary table, charts and contact sheets; opens from disk (relative paths only,
                  no script, no network)
    report.md     the same document as Markdown (one document model, dft.evaluate.document)
    metrics.json  the evaluation's metrics (the ``dft fairness`` JSON layout plus the quality guard)
    charts/       PNG: per attribute, the average metrics of each model with intervals, and the
                  perceived distribution per prompt for each model; per joint attribute
                  (evaluate.intersections) a heatmap of its shares, one panel per model
    sheets/       PNG contact sheets: sample images per prompt and model, captioned with what the
                  readers perceived
"""

from __future__ import annotations

import hashlib
import io
import logging
import re

import numpy as np
import pyarrow as pa

from dft import storage
from dft.evaluate import metrics as M
from dft.evaluate.document import Bullets, Cell, Document, Figure, Heading, Note, Table, to_html, to_markdown

log = logging.getLogger(__name__)

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def _file_name(attr: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", attr)


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
    return f"{s}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(block) -> str:
    ci = block.get("ci") if block else None
    return "" if not ci or ci[0] is None or ci[1] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _value(block) -> str:
    return "inf" if block.get("infinite") else _fmt(block.get("value"))


def _floor_note(block) -> str:
    """'floor 0.088, corrected 0.000, at floor': what a model drawing the target shares shows at
    this many images, the estimate with that bias taken out, and whether the two can be told apart."""
    parts = []
    if block.get("floor") is not None:
        parts.append(f"floor {block['floor']:.3f}")
    if block.get("corrected") is not None:
        parts.append(f"corrected {block['corrected']:.3f}")
    if block.get("at_floor"):
        parts.append("at floor")
    return ", ".join(parts)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:+.1%}"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def summary_rows(result: dict) -> list[dict]:
    """One row per attribute and metric: each model's value and interval, change and verdict."""
    models = list(result["models"])
    comp = result.get("comparison") or {}
    rows = []
    attrs = []
    for m in models:
        for a in result["models"][m]["attributes"]:
            if a not in attrs:
                attrs.append(a)
    for a in attrs:
        for metric in (*M.METRICS, "unreadable_rate"):
            row = {"attribute": a, "metric": metric, "values": {}}
            for m in models:
                blk = result["models"][m]["attributes"].get(a)
                if blk is None:
                    continue
                if metric == "unreadable_rate":
                    row["values"][m] = {"value": blk["unreadable_rate"], "ci": blk.get("unreadable_rate_ci")}
                else:
                    row["values"][m] = blk["mean"][metric]
            c = comp.get("attributes", {}).get(a, {}).get(metric)
            if c:
                row.update(change=c["relative_change"], verdict=c["verdict"], significant=c.get("significant"),
                           direction=c["direction"])
            elif metric == "unreadable_rate":
                row.update(direction="lower")
            else:
                row.update(direction=M.DIRECTION[metric])
            rows.append(row)
    return rows


def unreadable_rows(result: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(attribute, reason, {model: "count (share of its images)"}) for every reason a reader gave."""
    rows = []
    models = list(result["models"])
    attrs = list(dict.fromkeys(a for m in models for a in result["models"][m]["attributes"]))
    for a in attrs:
        blocks = {m: result["models"][m]["attributes"].get(a) for m in models}
        why = sorted({r for b in blocks.values() if b for r in (b.get("unreadable_reasons") or {})})
        for r in why:
            per = {}
            for m, b in blocks.items():
                if b:
                    n = (b.get("unreadable_reasons") or {}).get(r, 0)
                    per[m] = f"{n} ({n / max(b['images'], 1):.1%})"
            rows.append((a, r, per))
    return rows


def metric_chart(result: dict, attr: str) -> bytes:
    """Averaged metrics of each model with their intervals, for one attribute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result["models"] if attr in result["models"][m]["attributes"]]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    x = np.arange(len(M.METRICS))
    w = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        blk = result["models"][m]["attributes"][attr]["mean"]
        vals = np.array([np.nan if blk[k]["value"] is None else blk[k]["value"] for k in M.METRICS])
        lo = np.array([np.nan if not blk[k]["ci"] or blk[k]["ci"][0] is None else blk[k]["ci"][0] for k in M.METRICS])
        hi = np.array([np.nan if not blk[k]["ci"] or blk[k]["ci"][1] is None else blk[k]["ci"][1] for k in M.METRICS])
        err = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
        err = np.nan_to_num(err)
        ax.bar(x + (i - (len(models) - 1) / 2) * w, np.nan_to_num(vals), w, yerr=err, capsize=3, label=m,
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(x, [f"{k}\n({M.DIRECTION[k]} is better)" for k in M.METRICS], fontsize=7)
    ax.set_title(f"perceived {attr}: metrics averaged over prompts (95% bootstrap intervals)", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def distribution_chart(result: dict, attr: str, prompt: str) -> bytes:
    """Shares of each perceived group for one prompt, one bar colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result["models"] if attr in result["models"][m]["attributes"]]
    groups = result["models"][models[0]]["attributes"][attr]["groups"]
    fig, ax = plt.subplots(figsize=(max(3.6, 0.45 * len(groups) * max(1, len(models)) + 1.5), 2.6))
    x = np.arange(len(groups))
    w = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        p = next((q for q in result["models"][m]["attributes"][attr]["prompts"] if q["prompt"] == prompt), None)
        if p is None:
            continue
        shares = [p["shares"].get(g) or 0.0 for g in groups]
        label = f"{m} (n={p['readable']}, unreadable {p['unreadable_rate']:.0%})"
        ax.bar(x + (i - (len(models) - 1) / 2) * w, shares, w, label=label,
               color=COLORS[i % len(COLORS)])
    ax.axhline(1.0 / len(groups), color="k", lw=0.8, ls="--", label="even share")
    ax.set_xticks(x, groups, fontsize=7, rotation=30 if len(groups) > 4 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of readable images", fontsize=7)
    ax.set_title(f"perceived {attr}: \u201c{prompt}\u201d", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def joint_heatmap(result: dict, attr: str) -> bytes:
    """Shares of a joint attribute over all its images, one panel per model: rows are the first
    part's groups, columns the rest's; each cell gives the share and, below it, the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in result["models"] if attr in result["models"][m]["attributes"]]
    first = result["models"][models[0]]["attributes"][attr]
    rows = list(dict.fromkeys(g.split("+", 1)[0] for g in first["groups"]))
    cols = list(dict.fromkeys(g.split("+", 1)[1] for g in first["groups"]))
    parts = first.get("parts") or attr.split("+")
    grids, targets = {}, {}
    for m in models:
        blk = result["models"][m]["attributes"][attr]
        grids[m] = np.array([[blk["shares"].get(f"{r}+{c}") or 0.0 for c in cols] for r in rows])
        targets[m] = np.array([[blk["target"].get(f"{r}+{c}", 0.0) for c in cols] for r in rows])
    top = max(1e-9, *(float(g.max()) for g in grids.values()), *(float(t.max()) for t in targets.values()))
    fig, axes = plt.subplots(1, len(models), figsize=(len(models) * (1.05 * len(cols) + 1.6), 1.3 + 0.8 * len(rows)),
                             squeeze=False)
    for ax, m in zip(axes[0], models):
        blk = result["models"][m]["attributes"][attr]
        grid, target = grids[m], targets[m]
        im = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=top, aspect="auto")  # one scale for every model
        for i in range(len(rows)):
            for j in range(len(cols)):
                colour = "white" if grid[i, j] < 0.6 * top else "black"
                ax.text(j, i - 0.12, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
                ax.text(j, i + 0.22, f"target {target[i, j]:.2f}", ha="center", va="center", fontsize=5.5, color=colour)
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=30 if len(cols) > 3 else 0)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xlabel("+".join(parts[1:]), fontsize=7)
        ax.set_ylabel(parts[0], fontsize=7)
        imb = blk["mean"]["imbalance"]
        ax.set_title(f"{m}: n={blk['readable']} readable, imbalance {_value(imb)}", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(f"perceived {attr}: share of readable images", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def contact_sheet(samples: list[dict], labels: dict[str, dict], attrs: list[str], n: int, thumb: int) -> bytes | None:
    """A grid of up to ``n`` images, each captioned with what the readers perceived."""
    from PIL import Image, ImageDraw

    if not samples:
        return None
    samples = samples[:n]
    cols = min(8, len(samples))
    rows = (len(samples) + cols - 1) // cols
    cap = 12 * max(1, min(2, len(attrs)))
    sheet = Image.new("RGB", (cols * (thumb + 4) + 4, rows * (thumb + cap + 4) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(samples):
        try:
            im = Image.open(io.BytesIO(s["image"])).convert("RGB").resize((thumb, thumb), Image.NEAREST)
        except Exception:
            im = Image.new("RGB", (thumb, thumb), "grey")
        x, y = 4 + (i % cols) * (thumb + 4), 4 + (i // cols) * (thumb + cap + 4)
        sheet.paste(im, (x, y))
        lab = labels.get(s["key"], {})
        text = _caption(lab, attrs)
        for j, t in enumerate(text):
            draw.text((x, y + thumb + 1 + 11 * j), t[: thumb // 6], fill=(40, 40, 40))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _caption(lab: dict, attrs: list[str]) -> list[str]:
    """Up to two short lines: perceived gender, and the Monk tone with its coarse group."""
    lines = []
    for a in attrs:
        if a == "skin_tone_group" and "skin_tone" in attrs:
            continue
        if a == "skin_tone":
            group = f" ({lab.get('skin_tone_group')})" if lab.get("skin_tone_group") else ""
            lines.append(f"MST {lab.get(a) or '?'}{group}")
        else:
            lines.append(f"{a}: {lab.get(a) or '?'}")
    return lines[:2]


def _load_labels(run) -> dict[str, dict]:
    import pyarrow.parquet as pq

    uri = storage.join(run.eval, "labels.parquet")
    if not storage.exists(uri):
        return {}
    fs, p = storage.pyarrow_filesystem(uri)
    t: pa.Table = pq.read_table(p, filesystem=fs)
    return {r["key"]: r for r in t.to_pylist()}


def _samples_by_prompt(images_uri: str, per_prompt: int) -> dict[str, list[dict]]:
    from dft.generate.shards import iter_samples

    out: dict[str, list[dict]] = {}
    try:
        samples = iter_samples(images_uri, "parquet")
        first = next(samples, None)
    except FileNotFoundError:
        first = None
    if first is None:  # no manifest nor commit markers: any SAMPLE_SCHEMA Parquet files under parquet/
        samples = _glob_samples(images_uri)
    for s in ([first] if first else []) + list(samples):
        lst = out.setdefault(s["prompt"], [])
        if len(lst) < per_prompt:
            lst.append({"key": s["key"], "image": s["image"]})
    return out


def _glob_samples(images_uri: str):
    import pyarrow.parquet as pq

    for uri in storage.glob(images_uri, "parquet/*.parquet"):
        fs, p = storage.pyarrow_filesystem(uri)
        yield from pq.read_table(p, filesystem=fs, columns=["key", "prompt", "image"]).to_pylist()


def write_report(run, cfg) -> dict:
    """Write RUN/report/ from RUN/eval; returns counts of what was written."""
    result = storage.read_json(storage.join(run.eval, "metrics.json"))
    out = run.report
    labels = _load_labels(run)
    models = list(result["models"])
    attrs = []
    for m in models:
        attrs += [a for a in result["models"][m]["attributes"] if a not in attrs]
    charts: dict[str, dict] = {}
    written = 0
    for a in attrs:
        rel = f"charts/{_file_name(a)}-metrics.png"
        storage.write_bytes(storage.join(out, rel), metric_chart(result, a))
        charts[a] = {"metrics": rel, "prompts": {}}
        written += 1
        first = next(m for m in models if a in result["models"][m]["attributes"])
        if any("+" in g for g in result["models"][first]["attributes"][a]["groups"]):
            rel = f"charts/{_file_name(a)}-heatmap.png"
            storage.write_bytes(storage.join(out, rel), joint_heatmap(result, a))
            charts[a]["heatmap"] = rel
            written += 1
    prompts = []
    for m in models:
        for a in result["models"][m]["attributes"].values():
            prompts += [p["prompt"] for p in a["prompts"] if p["prompt"] not in prompts]
    prompts = prompts[: cfg.max_prompts]
    for a in attrs:
        for p in prompts:
            rel = f"charts/{_file_name(a)}-{_slug(p)}.png"
            storage.write_bytes(storage.join(out, rel), distribution_chart(result, a, p))
            charts[a]["prompts"][p] = rel
            written += 1
    sheet_attrs = [a for a in ("gender", "skin_tone", "skin_tone_group") if a in attrs] or attrs
    sheets: dict[str, dict[str, str]] = {}
    for m in models:
        by_prompt = _samples_by_prompt(storage.join(run.eval, "images", m), cfg.contact_sheet_images)
        for p in prompts:
            png = contact_sheet(by_prompt.get(p, []), labels, sheet_attrs, cfg.contact_sheet_images, cfg.thumb_size)
            if png is None:
                continue
            rel = f"sheets/{m}-{_slug(p)}.png"
            storage.write_bytes(storage.join(out, rel), png)
            sheets.setdefault(p, {})[m] = rel
            written += 1
    rows = summary_rows(result)
    storage.write_json(storage.join(out, "metrics.json"), result)
    doc = report_document(result, rows, charts, sheets, cfg.title)
    storage.write_text(storage.join(out, "report.md"), to_markdown(doc))
    storage.write_text(storage.join(out, "index.html"), to_html(doc))
    log.info("report written to %s", storage.join(out, "index.html"))
    return {"images": written, "attributes": len(attrs), "prompts": len(prompts), "models": len(models)}


# ---------------------------------------------------------------------------------------------
# The document (rendered by dft.evaluate.document)


def _intro(result: dict) -> list[str]:
    comp = result.get("comparison")
    lines = [
        "Every attribute here is perceived: what an automatic reader sees in the image, not anyone's identity.",
        "Metrics are averaged over prompts; unreadable images are left out of the shares and counted apart.",
        "Intervals are 95% intervals for the true value, by test inversion over simulated models (they cover a "
        "balanced model too, so an interval need not contain the observed value). 'floor' is what a model that "
        "draws every group at exactly its target share would show on average at the same number of images per "
        "prompt; 'corrected' is the estimate with that small-sample bias taken out; 'at floor' means the value "
        "cannot be told apart from a balanced model's.",
    ]
    if comp:
        lines.append(
            f"Change is relative: ({comp['other']} - {comp['base']}) / {comp['base']}; 'better' or 'worse' follows "
            "each metric's direction; 'significant' means the 95% interval of the change excludes zero "
            f"({comp.get('resampling', 'independent')} bootstrap of the two models, {result['bootstrap']} resamples)."
        )
    return lines


def report_document(result: dict, rows: list[dict], charts: dict, sheets: dict, title: str) -> Document:
    """The report's one document: summary table, quality guard, charts, contact sheets."""
    models = list(result["models"])
    comp = result.get("comparison")
    doc = Document(title)
    doc.add(*(Note(line) for line in _intro(result)))
    items = []
    for m in models:
        src = result.get("models_sources", {}).get(m)
        item = [("b", m), ("", f": {result['models'][m]['images']} images")]
        if src:
            item += [("", " (model source "), ("code", src), ("", ")")]
        items.append(item)
    doc.add(Bullets(items), Heading(2, "Summary"))
    head = [Cell("perceived attribute", left=True), Cell("metric", left=True), Cell("better")]
    head += [Cell(m) for m in models] + ([Cell("change"), Cell("verdict")] if comp else [])
    body = []
    for r in rows:
        cells = [Cell(r["attribute"], left=True), Cell(r["metric"], left=True), Cell(r["direction"])]
        for m in models:
            v = r["values"].get(m)
            cells.append(Cell() if v is None else Cell(_value(v), small=_ci(v), note=_floor_note(v)))
        if comp:
            verdict = r.get("verdict") or ""
            sig = " (significant)" if r.get("significant") else ""
            cells += [Cell(_pct(r.get("change"))), Cell(verdict + sig, cls=verdict)]
        body.append(cells)
    doc.add(Table("summary", head, body))
    reasons = unreadable_rows(result)
    if reasons:
        doc.add(Heading(2, "Unreadable images"),
                Note("Why a reader gave no value, per model and attribute (e.g. no_face, degraded_face, overexposed). "
                     "A model that damages faces shows it here, not as a new group in the shares."))
        rhead = [Cell("perceived attribute", left=True), Cell("reason", left=True)] + [Cell(m) for m in models]
        doc.add(Table("unreadable", rhead, [[Cell(a, left=True), Cell(why, left=True)]
                                            + [Cell(per.get(m, "")) for m in models] for a, why, per in reasons]))
    q = result.get("quality", {}).get("clip_score")
    if q:
        doc.add(Heading(2, "Quality guard"),
                Note("CLIP score of images against their own prompts (higher: the image follows its prompt better)."),
                Bullets([[("", f"{m}: {blk['mean']:.2f} {_ci(blk)} over {blk['images']} images")] for m, blk in q.items()]))
    doc.add(Heading(2, "Perceived attribute distributions"))
    for a, c in charts.items():
        doc.add(Heading(3, f"perceived {a}"))
        if all(result["models"][m]["attributes"].get(a, {}).get("readable", 0) == 0 for m in models):
            doc.add(Note("No image had a readable value: the charts below are empty."))
        doc.add(Figure(c["metrics"], f"{a} metrics", own_line=True))
        if c.get("heatmap"):
            doc.add(Figure(c["heatmap"], f"{a} shares per model",
                           caption=f"shares of {a} per model, with the target in brackets", own_line=True))
        doc.add(*(Figure(rel, f"{a}: {p}", caption=p) for p, rel in c["prompts"].items()))
    if sheets:
        doc.add(Heading(2, "Contact sheets"),
                Note("Sample images per prompt and model, captioned with what the readers perceived (? = unreadable)."))
        for p, per_model in sheets.items():
            doc.add(Heading(3, p))
            doc.add(*(Figure(rel, f"{m}: {p}", caption=m, cls="sheet") for m, rel in per_model.items()))
    return doc
