"""Throughput of the evaluation: images/s of a reader through the evaluation stage's Ray Data actor pool
against a bare loop of the same reader on the same images, label rows/s of the fairness metrics
against a plain numpy baseline over the same labels, and where the skin-tone reader's time goes.

    .venv/bin/python benchmarks/evaluate.py [--reader-images 1200] [--pairs 3] [--rows 10000000] [--smoke]

Reader pairs (goal: ratio >= 0.9): painted 256x256 PNG faces in SAMPLE_SCHEMA Parquet shards, read by
the skin-tone reader (decode, Haar face, skin rule, CIELAB).
- bare: one process builds the reader (``build_reader``) and calls it on the shards' image column in
  batches of the reader's ``batch_size``;
- stage: ``dft.evaluate.pipeline.read_with_ray`` (what ``dft evaluate`` and ``dft curate`` run: Ray Data
  ``read_parquet`` into an actor pool of ``ReadAttributes``, 1 actor), on an embedded Ray started by
  ``dft.cluster.connect`` and warmed by a trivial Ray Data job before the clock starts, timed from
  the call to the label table on the driver.
Each side runs in a fresh process; pairs alternate their order; the median ratio is reported.

Baseline: what one would write by hand with numpy: per model and prompt, a boolean mask, np.unique
counts, the six metrics, and a bootstrap that resamples image indices (np.random.choice) per prompt.
Ours: one bincount over (model, prompt, group) codes and a multinomial bootstrap over counts.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets the environment and sys.path first)
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

GOAL_READER = 0.9


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


def bench_metrics(rows: int, prompts: int, bootstrap: int) -> float:
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
    return t_base / t_ours


def bench_skin_tone(images: int) -> None:
    from PIL import Image

    from dft.evaluate.config import ReaderConfig
    from dft.evaluate.registry import build_reader
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


def write_faces(folder: str, images: int, per_shard: int = 200) -> list[str]:
    """Painted faces of the ten Monk tones as SAMPLE_SCHEMA Parquet shards, as the generation stage writes them."""
    import pyarrow.parquet as pq
    from PIL import Image

    from dft.evaluate.skin_tone import MST_RGB
    from dft.evaluate.synthetic_faces import paint_face
    from dft.schema import SAMPLE_SCHEMA

    os.makedirs(folder, exist_ok=True)
    files = []
    for index, start in enumerate(range(0, images, per_shard)):
        rows = []
        for i in range(start, min(images, start + per_shard)):
            buf = io.BytesIO()
            Image.fromarray(paint_face(MST_RGB[i % 10], size=256, noise=4, seed=i, jitter=0.05)).save(buf, format="PNG")
            rows.append({"key": f"{i:024x}", "prompt_id": f"p{i % 20}", "image_index": i // 20, "seed": i,
                         "prompt": "a photo of a person", "neutral_prompt": "a photo of a person",
                         "template": "a photo of a {profession}", "prompt_set": "neutral", "ethnicity": None,
                         "gender": None, "age": None, "profession": "person", "model": "bench",
                         "settings_hash": "bench", "image_format": "png", "width": 256, "height": 256,
                         "image": buf.getvalue()})
        path = os.path.join(folder, f"shard-{index:05d}.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
        files.append(path)
    return files


def _reader_cfg():
    from dft.evaluate.config import ReaderConfig

    return ReaderConfig(kind="skin_tone")


def reader_bare(files: list[str]) -> dict:
    import pyarrow.parquet as pq

    from dft.evaluate.registry import build_reader

    t0 = time.perf_counter()
    cfg = _reader_cfg()
    reader = build_reader(cfg)
    n = read = 0
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=cfg.batch_size, columns=["image"]):
            out = reader({"image": rb.column("image").to_numpy(zero_copy_only=False)})
            n += rb.num_rows
            read += sum(x is not None for x in out["skin_tone"])
    seconds = time.perf_counter() - t0
    return {"images": n, "readable": read, "seconds": seconds, "images_per_s": n / seconds, "load": os.getloadavg()[0]}


def reader_stage(files: list[str]) -> dict:
    import logging

    import ray

    from dft.cluster import connect
    from dft.config.schema import RaySection
    from dft.evaluate.pipeline import read_with_ray

    logging.basicConfig(level=logging.WARNING)
    connect(RaySection(num_cpus=os.cpu_count() or 2))
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.range(8, override_num_blocks=2).map_batches(lambda b: b).materialize()  # a running Ray Data
    t0 = time.perf_counter()
    labels = read_with_ray(files, [_reader_cfg()], num_actors=1)
    seconds = time.perf_counter() - t0
    read = labels.num_rows - labels.column("skin_tone").null_count
    ray.shutdown()
    return {"images": labels.num_rows, "readable": read, "seconds": seconds, "images_per_s": labels.num_rows / seconds,
            "load": os.getloadavg()[0]}


def bench_readers(images: int, pairs: int) -> dict:
    work = tempfile.mkdtemp(prefix="dft-bench-eval-")
    try:
        folder = os.path.join(work, "faces")
        write_faces(folder, images)
        print(f"reader: skin_tone on {images} painted 256x256 PNG faces, stage = read_with_ray with 1 actor; "
              f"{os.cpu_count()} CPUs (shared machine: compare ratios, not absolute figures)", flush=True)

        def side(mode):
            def go(i):
                r = common.run_child(__file__, ["--child", mode, "--faces", folder])
                print(f"  [{i + 1}] {mode:5s}: {r['images']} images ({r['readable']} readable) in {r['seconds']:6.1f} s "
                      f"= {r['images_per_s']:6.1f} images/s, load {r['load']:.1f}", flush=True)
                return r
            return go

        results = common.alternate(pairs, side("bare"), side("stage"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for b, o in results:
        assert b["images"] == o["images"] == images and b["readable"] == o["readable"], (b, o)
    med = statistics.median
    return {
        "ratio": common.ratio("evaluate.reader_images_per_s", [o["images_per_s"] / b["images_per_s"] for b, o in results],
                              GOAL_READER, what="read_with_ray (1 actor) images/s / bare loop images/s, skin_tone"),
        "bare_images_per_s": med([b["images_per_s"] for b, _ in results]),
        "stage_images_per_s": med([o["images_per_s"] for _, o in results]),
        "pairs": [{"bare": b, "stage": o} for b, o in results],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reader-images", type=int, default=1200)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--compare-rows", type=int, default=1_000_000,
                    help="Rows for the comparison with the baseline (its masks per prompt scan every row).")
    ap.add_argument("--bootstrap-rows", type=int, default=100_000,
                    help="Rows for the bootstrap comparison (the baseline resamples image indices).")
    ap.add_argument("--images", type=int, default=200, help="images of the skin-tone breakdown")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: checks the benchmark runs")
    ap.add_argument("--child", choices=["bare", "stage"], help=argparse.SUPPRESS)
    ap.add_argument("--faces", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        files = sorted(os.path.join(a.faces, f) for f in os.listdir(a.faces))
        common.emit(reader_bare(files) if a.child == "bare" else reader_stage(files))
        return
    if a.smoke:
        a.reader_images, a.pairs, a.rows, a.compare_rows, a.bootstrap_rows, a.bootstrap, a.images = (
            60, 1, 100_000, 20_000, 5_000, 20, 20)
    readers = bench_readers(a.reader_images, a.pairs)
    common.table("reader through the stage's actor pool vs bare loop (median over pairs)",
                 ["measure", "bare loop", "stage"],
                 [["images/s", f"{readers['bare_images_per_s']:.1f}", f"{readers['stage_images_per_s']:.1f}"]])
    t0 = time.perf_counter()
    bench_ours(a.rows, a.prompts, a.bootstrap)
    metrics_s = time.perf_counter() - t0
    speedups = [bench_metrics(a.compare_rows, a.prompts, 0), bench_metrics(a.bootstrap_rows, a.prompts, a.bootstrap)]
    bench_skin_tone(a.images)
    ratios = [readers["ratio"],
              common.ratio("evaluate.metrics_speedup", [speedups[0]], None,
                           what=f"numpy baseline time / dft.evaluate time, {a.compare_rows:,} label rows, no bootstrap"),
              common.ratio("evaluate.metrics_bootstrap_speedup", [speedups[1]], None,
                           what=f"numpy baseline time / dft.evaluate time, {a.bootstrap_rows:,} rows, "
                                f"bootstrap {a.bootstrap}")]
    common.print_ratios(ratios)
    common.emit({"benchmark": "evaluate", "ratios": ratios, "reader": readers,
                 "metrics": {"rows": a.rows, "seconds": metrics_s, "rows_per_s": a.rows / metrics_s}})


if __name__ == "__main__":
    main()
