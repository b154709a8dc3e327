"""The demo: the unchanged pipeline on the demo world, with a biased base model whose answer is known.

``prepare(cfg)`` builds (or reuses, from the cache) the biased base model and points
``cfg.model.source`` at its folder; then the ordinary stages run (prompts, generate, curate, train,
evaluate, report) with ``dft/configs/world.yaml``; ``summary(cfg)`` returns the before/after table
of the neutral-prompt bias and the path of the report as text.

    dft demo                             # the whole demo, on the console (dft/cli/main.py)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dft import storage
from dft.runs import Run
from dft.world.base_model import BaseModelConfig, base_model_info, build_base_model

log = logging.getLogger(__name__)

BASE_SOURCE = "world-base"


def world_config_path() -> str:
    return str(Path(__file__).resolve().parent.parent / "configs" / "world.yaml")


def prepare(cfg, base: BaseModelConfig | None = None) -> str:
    """Build or reuse the biased base model and make it the run's model source; returns its folder.

    The first call on a machine trains it (a few minutes on 2 cores); later calls find it in the
    cache (DFT_CACHE or ~/.cache/dft), keyed by the corpus and training settings."""
    if cfg.model.source not in (BASE_SOURCE,) and base is None:
        log.info("model.source is %r, not %r: the demo world's base model is not built", cfg.model.source, BASE_SOURCE)
        return cfg.model.source
    from dft.cluster import connect

    t0 = time.time()
    connect(cfg.ray)  # a first build trains with the fine-tuning stage, on this run's Ray
    folder = build_base_model(base, cache_dir=cfg.model.cache_dir)
    info = base_model_info(folder)
    log.info("world base model: %s (%.0f s; VAE reconstructions read back %s)", folder, time.time() - t0,
             info.get("vae_reconstruction_fidelity"))
    cfg.model.source = folder
    return folder


def summary(cfg) -> str:
    """The before/after table of the run's evaluation, as text, and where the report is.

    Numbers are the evaluation stage's (``score_table`` through ``dft.world.checks.bias_summary``):
    per phrasing group (the trained neutral phrasing, the held-out ones) and model, the imbalance of
    each attribute with its interval, their mean and the unreadable-or-degraded rate; then the drop
    and the paired comparison's verdict."""
    import pyarrow.parquet as pq

    from dft.world.checks import BIAS_ATTRIBUTES, bias_summary, verdict

    run = Run(cfg.run.uri)
    labels_uri = storage.join(run.eval, "labels.parquet")
    fs, path = storage.pyarrow_filesystem(labels_uri)
    labels = pq.read_table(path, filesystem=fs)
    s = bias_summary(labels, bootstrap=cfg.evaluate.bootstrap, seed=cfg.prompts.seed)
    lines = ["neutral prompts: imbalance (0 = balanced; 95% interval), clean faces only", ""]
    head = (f"{'phrasing':<9} {'model':<10} {'gender':>21} {'skin tone group':>21} {'mean':>6} "
            f"{'no face/degraded':>16}")
    lines += [head, "-" * len(head)]

    def cell(a):
        ci = a.get("ci")
        return f"{a['imbalance']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{a['imbalance']:.3f}"

    models = [m for m in ("base", "finetuned") if m in s["models"]] + [m for m in s["models"] if m not in ("base", "finetuned")]
    for phrasing in ("trained", "held_out"):
        for model in models:
            r = s["models"][model].get(phrasing)
            if r is None:
                continue
            a = r["attributes"]
            mean = "-" if r["mean_imbalance"] is None else f"{r['mean_imbalance']:.3f}"
            lines.append(f"{phrasing.replace('_', '-'):<9} {model:<10} {cell(a['gender']):>21} "
                         f"{cell(a['skin_tone_group']):>21} {mean:>6} {100 * r['unreadable_rate']:>15.1f}%")
    if s["comparison"]:
        lines.append("")
        for phrasing in ("all", "trained", "held_out"):
            if phrasing not in s["comparison"]:
                continue
            v = verdict(s, phrasing)
            drop = v["checks"]["mean_imbalance_drop"]["value"]
            lower = [a for a in BIAS_ATTRIBUTES if v["checks"][f"{a}_lower"]["pass"]]
            word = "lower" if drop >= 0 else "higher"
            lines.append(f"{phrasing.replace('_', '-') + ' prompts:':<18} mean imbalance {100 * abs(drop):.0f}% {word} "
                         f"after fine-tuning; paired 95% interval of the change below 0 for "
                         f"{', '.join(lower) if lower else 'no attribute'}")
    lines += ["", f"report: {storage.join(run.report, 'index.html')}"]
    storage.write_json(storage.join(run.eval, "world_bias.json"), s)
    return "\n".join(lines)


def demo_config(config_files: list[str] | None = None, overrides: list[str] | None = None):
    """The demo's config: dft/configs/world.yaml (or ``config_files`` instead), then ``overrides``."""
    from dft.config.load import load_config

    return load_config(config_files or [world_config_path()], overrides or [])


def run_demo(cfg, force: bool = False, observer=None) -> list:
    """prepare + every stage of ``dft.pipeline``; returns the stages' results (``summary(cfg)`` is the
    before/after table). ``observer``: told when each stage starts and ends (see dft.pipeline)."""
    from dft.pipeline import STAGES, run_pipeline

    prepare(cfg)
    return run_pipeline(cfg, STAGES, force=force, observer=observer)
