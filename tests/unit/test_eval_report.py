"""The report folder, from a run of painted faces; its HTML checked by headless Chromium."""

import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from dft.evaluate.config import ReportConfig
from dft.evaluate.report import write_report
from dft.evaluate.synthetic_faces import painted_eval_run
from dft.runs import Run

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = Run(str(tmp_path_factory.mktemp("r") / "run"))
    result = painted_eval_run(run.uri, n_per_prompt=16, prompts=["a photo of a doctor", "a photo of a person"], bootstrap=100)
    counts = write_report(run, ReportConfig(contact_sheet_images=8))
    return Path(run.report), result, counts


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.rows = [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src"))
        elif tag == "table":
            self.tables.append(a.get("id"))
        elif tag == "tr":
            self.rows += 1


def test_report_files(report):
    folder, result, counts = report
    assert {p.name for p in folder.iterdir()} >= {"index.html", "report.md", "metrics.json", "charts", "sheets"}
    assert counts["models"] == 2 and counts["prompts"] == 2
    sheets = sorted((folder / "sheets").glob("*.png"))
    assert len(sheets) == 4  # 2 prompts x 2 models
    assert Image.open(sheets[0]).size[0] > 100
    md = (folder / "report.md").read_text()
    assert "| skin_tone | imbalance |" in md and "perceived" in md
    # the stand-in fine-tuned model paints even tones: the report must say the imbalance got better
    row = result["comparison"]["attributes"]["skin_tone_group"]["imbalance"]
    assert row["verdict"] == "better"
    assert re.search(r"\| skin_tone_group \| imbalance \| lower \|[^\n]*\| better", md)


def test_html_is_self_contained(report):
    folder, _, _ = report
    html = (folder / "index.html").read_text()
    p = _Collect()
    p.feed(html)
    assert p.imgs and all(not re.match(r"^[a-z]+://", s) and not s.startswith("/") for s in p.imgs)
    for src in p.imgs:
        assert (folder / src).is_file(), src
    assert "<script" not in html and "http" not in html


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="headless Chromium is not installed (/usr/bin/chromium; apt-get install chromium)"
)
def test_html_in_headless_chromium(report, tmp_path):
    folder, result, _ = report
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    url = (folder / "index.html").as_uri()
    dom = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    p = _Collect()
    p.feed(dom)
    assert "summary" in p.tables
    metrics_rows = sum(len(a["mean"]) + 1 for a in result["models"]["base"]["attributes"].values())
    assert p.rows >= metrics_rows + 1  # header + one row per attribute and metric (+ unreadable rate)
    assert len(p.imgs) >= 4 + 3 * 2  # sheets + per-attribute metric charts and distributions
    assert "a photo of a doctor" in dom
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")

    def ink(page: str) -> tuple[float, int]:
        """Share of pixels that are not white, and the number of distinct colours, in a screenshot of `page`."""
        shot = tmp_path / "shot.png"
        shot.unlink(missing_ok=True)
        subprocess.run(args + ["--window-size=1200,1600", f"--screenshot={shot}", page], capture_output=True, timeout=120)
        img = Image.open(shot).convert("RGB")
        colours = img.getcolors(maxcolors=1 << 22)
        white = sum(n for n, c in colours if min(c) >= 250)
        return 1 - white / (img.width * img.height), len(colours)

    # the same browser, the same window, a page with nothing on it: what "blank" looks like on this machine
    blank_ink, blank_colours = ink(blank.as_uri())
    report_ink, report_colours = ink(url)
    # rendered text, tables and chart bars: several per cent of the window inked, in many colours (the CI machine's
    # fonts gave 13% and ~470 colours), where the blank page has neither
    assert report_ink > max(0.03, 10 * blank_ink), (report_ink, blank_ink)
    assert report_colours > max(100, 10 * blank_colours), (report_colours, blank_colours)


def test_report_shows_floor_and_a_heatmap_per_model_for_an_intersection(tmp_path):
    import numpy as np
    import pyarrow as pa

    from dft import storage
    from dft.evaluate.fairness import score_table

    rng = np.random.default_rng(0)
    rows = []
    for model, p_woman, tones in (("base", 0.2, [0.7, 0.2, 0.1]), ("finetuned", 0.5, [0.34, 0.33, 0.33])):
        for j in range(3):
            for _ in range(40):
                rows.append({"model": model, "prompt": f"a photo of a {['doctor', 'nurse', 'person'][j]}",
                             "gender": "woman" if rng.random() < p_woman else "man",
                             "skin_tone_group": rng.choice(["lighter", "medium", "darker"], p=tones)})
    result = score_table(pa.Table.from_pylist(rows), bootstrap=100, intersections=[["gender", "skin_tone_group"]])
    run = Run(str(tmp_path / "run"))
    storage.write_json(storage.join(run.eval, "metrics.json"), result)
    counts = write_report(run, ReportConfig(max_prompts=1))
    folder = Path(run.report)
    heat = folder / "charts" / "gender-skin_tone_group-heatmap.png"
    assert heat.is_file() and Image.open(heat).size[0] > 300
    md = (folder / "report.md").read_text()
    assert "(charts/gender-skin_tone_group-heatmap.png)" in md
    assert "| gender+skin_tone_group | imbalance |" in md
    floor = result["models"]["finetuned"]["attributes"]["gender"]["mean"]["imbalance"]["floor"]
    assert f"floor {floor:.3f}" in md
    html = (folder / "index.html").read_text()
    assert "charts/gender-skin_tone_group-heatmap.png" in html and "at floor" in md + html
    assert counts["attributes"] == 3


def test_report_tables_the_unreadable_reasons_per_model(tmp_path):
    from dft.evaluate.document import to_markdown
    from dft.evaluate.report import report_document, summary_rows, unreadable_rows

    def block(images, reasons):
        return {"images": images, "unreadable_reasons": reasons}

    result = {"bootstrap": 10, "models": {
        "base": {"images": 100, "attributes": {"gender": block(100, {"no_face": 1})}},
        "finetuned": {"images": 100, "attributes": {"gender": block(100, {"degraded_face": 7, "no_face": 2})}},
    }}
    rows = unreadable_rows(result)
    assert rows == [("gender", "degraded_face", {"base": "0 (0.0%)", "finetuned": "7 (7.0%)"}),
                    ("gender", "no_face", {"base": "1 (1.0%)", "finetuned": "2 (2.0%)"})]
    md = to_markdown(report_document(result, [], {}, {}, "t"))
    assert "Unreadable images" in md and "| gender | degraded_face | 0 (0.0%) | 7 (7.0%) |" in md
    assert summary_rows({"models": {}}) == []
