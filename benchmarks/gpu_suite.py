"""Per model family: generation images/s through the Ray Data stage against a bare diffusers loop,
training samples/s through Ray Train + DeepSpeed against a bare torch loop, reader images/s, and peak
memory. Each line prints the ratio to its bare baseline, measured in the same run.

    # CPU, built-in tiny models, seconds per family (what the test suite runs):
    HF_HUB_OFFLINE=1 DS_ACCELERATOR=cpu .venv/bin/python benchmarks/gpu_suite.py --smoke [--families sd3 flux]
    # a GPU machine, real weights, one family per preset (model.source must be reachable):
    .venv/bin/python benchmarks/gpu_suite.py --family flux --config jobs/configs/sd15_cluster.yaml \\
        --config jobs/configs/flux_dev_lora_cluster.yaml --set model.source=/models/FLUX.1-dev \\
        --images 64 --train-steps 30 --out benchmarks/results-flux.json

Peak memory: on CUDA, torch.cuda.max_memory_allocated of the bare loops (they run in this process;
the Ray workers' peaks are in their own processes); on CPU, this process's peak RSS. Record a GPU run
in benchmarks/RESULTS.md with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SMOKE_SOURCES = {"sd": "tiny-sd", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3", "flux": "tiny-flux"}


def smoke_config(family: str, run_uri: str):
    """Tiny settings: a handful of images and steps, so a family takes seconds to a minute on CPU."""
    from dft.config.load import load_config

    sets = [f"run.uri={run_uri}", f"run.name=bench-{family}", f"model.source={SMOKE_SOURCES[family]}",
            "generate.steps=2", "generate.batch_size=4", "generate.shard_size=8",
            "train.batch_size=4", "train.num_workers=1", "train.zero_stage=2", "train.checkpoint_every=1000",
            "train.log_every=1", "train.materialize=always"]
    if family in ("sd3", "flux"):
        sets += ["generate.max_sequence_length=16", "train.max_sequence_length=16"]
    return load_config(None, sets)


def peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def prompt_rows(n: int):
    from dft.prompts.config import PromptsConfig
    from dft.prompts.table import neutral_table

    table = neutral_table(PromptsConfig(neutral_max_professions=4), images_per_prompt=max(1, n // 4 + 1))
    return table.slice(0, n)


def bare_generation(cfg, table) -> float:
    """The obvious loop: one pipeline, batches of prompts, a generator per row."""
    import torch

    from dft.generate.core import ImageGenerator

    gen = ImageGenerator(cfg.model.source, cfg.generate, cache_dir=cfg.model.cache_dir)  # loads the pipeline
    pipe, prompts = gen.pipe, table.column("prompt").to_pylist()
    seeds = table.column("seed").to_pylist()
    b = cfg.generate.batch_size
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), b):
            pipe(prompt=prompts[i:i + b], num_inference_steps=cfg.generate.steps, guidance_scale=cfg.generate.guidance_scale,
                 height=gen.height, width=gen.width, output_type="np",
                 generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + b]], **gen.call_kwargs)
    return len(prompts) / (time.perf_counter() - t0)


def ray_generation(cfg, table, out_uri: str) -> float:
    from dft.generate.job import generate_dataset

    t0 = time.perf_counter()
    counts = generate_dataset(table, out_uri, cfg.model.source, cfg.generate, cache_dir=cfg.model.cache_dir,
                              progress=False)
    return counts["images"] / (time.perf_counter() - t0)


def bare_training(cfg, data_uri: str, steps: int) -> float:
    """build_module + torch AdamW over batches of the generated set; samples/s over the second half."""
    import pyarrow.parquet as pq
    import torch

    from dft.generate.shards import shard_files
    from dft.models.sources import resolve_model_source
    from dft.train.components import build_module, model_info
    from dft.train.preprocess import preprocess_batch
    from dft.train.step import TorchBackend, prepare_batch, run_steps

    folder = resolve_model_source(cfg.model.source, cache_dir=cfg.model.cache_dir)
    res = cfg.train.resolution or model_info(folder).resolution
    rows = pq.read_table(shard_files(data_uri, "parquet")[0], columns=["image", "prompt", "neutral_prompt"]).to_pydict()
    raw = preprocess_batch(rows, res, cfg.model.source, cfg.model.cache_dir, cfg.train.max_sequence_length)
    raw = {k: torch.from_numpy(v) for k, v in raw.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module, _ = build_module(folder, cfg.train)
    module.to(device).train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.train.learning_rate)
    n, b = len(rows["image"]), cfg.train.batch_size

    def batches():
        i = 0
        while True:
            idx = torch.arange(i, i + b) % n
            i += b
            sub = {k: v[idx] for k, v in raw.items()}
            yield prepare_batch(sub, cfg.train.caption_policy, cfg.train.attribute_dropout, 0.0, None, None, device)

    times: list[float] = []
    run_steps(TorchBackend(module, opt, max_grad_norm=1.0), batches(), start_step=0, max_steps=steps, grad_accum=1,
              samples_per_micro_step=b, on_step=lambda s: times.append(s.seconds))
    half = times[len(times) // 2:]
    return b * len(half) / sum(half)


def ray_training(cfg, data_uri: str, steps: int) -> float:
    from dft.train.stage import run_train

    cfg.train.data_uri, cfg.train.max_steps = data_uri, steps
    counts = run_train(cfg, force=True)
    return float(counts["samples_per_s"] or 0.0)


def reader_rate(images: list[bytes]) -> float:
    import numpy as np

    from dft.evaluate.config import ReaderConfig
    from dft.evaluate.registry import ReaderChain

    chain = ReaderChain([ReaderConfig(kind="skin_tone")])
    t0 = time.perf_counter()
    chain({"image": np.array(images, dtype=object)})
    return len(images) / (time.perf_counter() - t0)


def bench_family(family: str, cfg, images: int, train_steps: int, work: str) -> dict:
    import pyarrow.parquet as pq

    from dft.generate.shards import shard_files

    table = prompt_rows(images)
    out = os.path.join(work, f"synthetic-{family}")
    row = {"family": family, "model": cfg.model.source, "images": images, "train_steps": train_steps}
    row["gen_bare_images_per_s"] = bare_generation(cfg, table)
    row["gen_ray_images_per_s"] = ray_generation(cfg, table, out)
    row["train_bare_samples_per_s"] = bare_training(cfg, out, train_steps)
    row["train_ray_samples_per_s"] = ray_training(cfg, out, train_steps)
    data = pq.read_table(shard_files(out, "parquet")[0], columns=["image"]).column("image").to_pylist()
    row["reader_images_per_s"] = reader_rate(data)
    row["peak_memory_gb"] = peak_memory_gb()
    row["gen_ratio"] = row["gen_ray_images_per_s"] / row["gen_bare_images_per_s"]
    row["train_ratio"] = row["train_ray_samples_per_s"] / row["train_bare_samples_per_s"]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| family | gen bare img/s | gen Ray img/s | ratio | train bare samples/s | train Ray+DS samples/s | ratio "
             "| reader img/s | peak GB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['gen_bare_images_per_s']:.2f} | {r['gen_ray_images_per_s']:.2f} | "
                     f"{r['gen_ratio']:.2f} | {r['train_bare_samples_per_s']:.2f} | {r['train_ray_samples_per_s']:.2f} | "
                     f"{r['train_ratio']:.2f} | {r['reader_images_per_s']:.1f} | {r['peak_memory_gb']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, built-in tiny models, a few images and steps")
    p.add_argument("--families", nargs="+", default=["sdxl", "sd3", "flux"], choices=sorted(SMOKE_SOURCES))
    p.add_argument("--family", help="real mode: the family of --config's model")
    p.add_argument("--config", action="append", default=[], help="real mode: run config files")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="real mode: overrides")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args(argv)

    from dft.cluster import connect
    from dft.config.load import load_config

    rows = []
    with tempfile.TemporaryDirectory(prefix="dft-gpu-suite-") as work:
        if args.smoke:
            configs = [(f, smoke_config(f, os.path.join(work, f"run-{f}"))) for f in args.families]
        else:
            if not args.family or not args.config:
                p.error("real mode needs --family and --config (or use --smoke)")
            cfg = load_config(args.config, [f"run.uri={os.path.join(work, 'run')}", *args.overrides])
            configs = [(args.family, cfg)]
        connect(configs[0][1].ray)
        for family, cfg in configs:
            rows.append(bench_family(family, cfg, args.images, args.train_steps, work))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
