"""Throughput of the evaluation: label rows/s of the fairness metrics against a plain numpy
baseline over the same labels, and images/s of the skin-tone reader.

    .venv/bin/python benchmarks/evaluate.py [--rows 10000000] [--prompts 200] [--images 200]

Baseline: what one would write by hand with numpy: per model and prompt, a boolean mask, np.unique
counts, the six metrics, and a bootstrap that resamples image indices (np.random.choice) per prompt.
Ours: one bincount over (model, prompt, group) codes and a multinomial bootstrap over counts.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pyarrow as pa


def make_labels(rows: int, prompts: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"a photo of a profession{i}" for i in range(prompts)], dtype=object)
    tone = rng.choice(11, rows, p=np.r_[np.full(10, 0.095), 0.05])  # 10 -> unreadable
    gender = rng.choice(3, rows, p=[0.6, 0.35, 0.05])
    return pa.table({
        "model": pa.array(np.where(rng.random(rows) < 0.5, "base", "finetuned")).dictionary_encode(),
        "prompt": pa.array(names[rng.integers(0, prompts, rows)]).dictionary_encode(),
        "skin_tone": pa.array([str(i) for i in range(1, 11)] + [None]).take(pa.array(tone)),
        "gender": pa.array(["man", "woman", None]).take(pa.array(gender)),
    })


def baseline(table: pa.Table, bootstrap: int, seed: int = 0) -> dict:
    """Plain numpy, the obvious way: masks per (model, prompt), resampling image indices."""
    rng = np.random.default_rng(seed)
    model = table.column("model").to_numpy()
    prompt = table.column("prompt").to_numpy()
    out = {}
    for attr, groups in (("skin_tone", [str(i) for i in range(1, 11)]), ("gender", ["man", "woman"])):
        vals = np.array(table.column(attr).fill_null("").to_numpy(zero_copy_only=False))
        K = len(groups)
        code = np.full(len(vals), K)
        for i, g in enumerate(groups):
            code[vals == g] = i
        for m in np.unique(model):
            per_prompt, boots = [], []
            mm = model == m
            for p in np.unique(prompt[mm]):
                c = code[mm & (prompt == p)]
                counts = np.array([(c == k).sum() for k in range(K)], dtype=float)
                sh = counts / counts.sum()
                per_prompt.append(np.abs(sh - 1 / K).mean())
                b = []
                for _ in range(bootstrap):
                    r = rng.choice(c, size=len(c), replace=True)
                    r = r[r < K]
                    s2 = np.bincount(r, minlength=K) / max(len(r), 1)
                    b.append(np.abs(s2 - 1 / K).mean())
                boots.append(b)
            out[(attr, m)] = (np.mean(per_prompt), np.percentile(np.mean(boots, axis=0), [2.5, 97.5]) if bootstrap else None)
    return out


def bench_ours(rows: int, prompts: int, bootstrap: int) -> None:
    from dft.evaluate.fairness import score_table

    table = make_labels(rows, prompts)
    t0 = time.perf_counter()
    score_table(table, bootstrap=bootstrap)
    dt = time.perf_counter() - t0
    print(f"metrics alone, {rows:,} label rows, {prompts} prompts x 2 models x 2 attributes, bootstrap {bootstrap}:")
    print(f"  dft.evaluate      {dt:8.2f} s   {rows / dt:14,.0f} rows/s")


def bench_metrics(rows: int, prompts: int, bootstrap: int) -> None:
    from dft.evaluate.fairness import score_table

    table = make_labels(rows, prompts)
    t0 = time.perf_counter()
    ours = score_table(table, bootstrap=bootstrap)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = baseline(table, bootstrap)
    t_base = time.perf_counter() - t0
    v_ours = ours["models"]["base"]["attributes"]["gender"]["mean"]["imbalance"]["value"]
    v_base = base[("gender", "base")][0]
    assert abs(v_ours - v_base) < 1e-9, (v_ours, v_base)  # same labels, same number
    print(f"metrics, {rows:,} label rows, {prompts} prompts x 2 models x 2 attributes, bootstrap {bootstrap}:")
    print(f"  dft.evaluate      {t_ours:8.2f} s   {rows / t_ours:14,.0f} rows/s")
    print(f"  numpy baseline    {t_base:8.2f} s   {rows / t_base:14,.0f} rows/s")
    print(f"  speed-up          {t_base / t_ours:8.1f}x   (imbalance of base/gender agrees: {v_ours:.6f})")


def bench_skin_tone(images: int) -> None:
    from PIL import Image

    from dft.evaluate.config import ReaderConfig
    from dft.evaluate.readers import build_reader
    from dft.evaluate.skin_tone import MST_RGB, FaceSkinTone, skin_tone_from_pixels
    from dft.evaluate.synthetic_faces import paint_face

    rng = np.random.default_rng(0)
    pngs = []
    for i in range(images):
        buf = io.BytesIO()
        Image.fromarray(paint_face(MST_RGB[i % 10], size=256, noise=4, seed=i, jitter=0.05)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    reader = build_reader(ReaderConfig(kind="skin_tone"))
    batch = {"image": np.array(pngs, dtype=object)}
    t0 = time.perf_counter()
    out = reader(batch)
    dt = time.perf_counter() - t0
    read = sum(x is not None for x in out["skin_tone"])
    print(f"skin-tone reader, {images} painted 256x256 PNG faces, one process:")
    print(f"  full reader (decode + Haar + skin rule + Lab)  {images / dt:8.1f} images/s  ({read}/{images} readable)")
    face = FaceSkinTone()
    arrays = [paint_face(MST_RGB[i % 10], size=256, seed=i) for i in range(min(images, 100))]
    t0 = time.perf_counter()
    for a in arrays:
        face.detect(a)
    dt_det = time.perf_counter() - t0
    px = rng.integers(0, 256, (len(arrays), 4000, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for p in px:
        skin_tone_from_pixels(p)
    dt_px = time.perf_counter() - t0
    print(f"  Haar face detection alone                      {len(arrays) / dt_det:8.1f} images/s")
    print(f"  skin_tone_from_pixels (4,000 pixels)           {len(px) / dt_px:8.1f} readings/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--compare-rows", type=int, default=1_000_000,
                    help="Rows for the comparison with the baseline (its masks per prompt scan every row).")
    ap.add_argument("--bootstrap-rows", type=int, default=100_000,
                    help="Rows for the bootstrap comparison (the baseline resamples image indices).")
    ap.add_argument("--images", type=int, default=200)
    a = ap.parse_args()
    bench_ours(a.rows, a.prompts, a.bootstrap)
    bench_metrics(a.compare_rows, a.prompts, 0)
    bench_metrics(a.bootstrap_rows, a.prompts, a.bootstrap)
    bench_skin_tone(a.images)
