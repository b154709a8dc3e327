"""The demo world's biased base model: the built-in ``small-sd`` pipeline trained on the biased corpus.

Two phases, fixed seeds:
1. the VAE learns to reconstruct the world's portraits (a small pure-torch loop: the fine-tuning
   stage trains UNets and text encoders, not VAEs); its latent scaling factor is then set so the
   latents the UNet sees have unit variance, and the pipeline (new VAE, untrained UNet and text
   encoder) is saved as the starting point;
2. the fine-tuning stage itself (``dft.train``: Ray Train, DeepSpeed, the same loop and export a
   real run uses) trains the UNet and the text encoder on the corpus's own captions, with 10% empty
   captions so classifier-free guidance has an unconditional model.

The result is a diffusers pipeline folder (a model source string), cached under the model cache and
keyed by the corpus and training settings, so the demo and the tests build it once per machine. The
build works in ``<cache>/world/build-<hash>``: a build that stops (a crash, Ctrl-C) resumes from the
saved starting point and the training's latest checkpoint when it is started again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from dft import storage
from dft.world.corpus import CorpusConfig

log = logging.getLogger(__name__)

BUILTIN_NAME = "world-base"  # the default config's model source name (pyproject.toml, dft.model_sources)


@dataclass(frozen=True)
class BaseModelConfig:
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    init_source: str = "small-sd"
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_steps: int = 300
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    unet_steps: int = 1600
    unet_batch: int = 40
    unet_lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decay to this share of unet_lr
    weight_decay: float = 1e-2
    train_text_encoder: bool = True
    uncond_prob: float = 0.1  # empty captions, so classifier-free guidance has an unconditional model
    seed: int = 0
    version: int = 4  # bump when the build changes its output for the same settings (3: UNet by dft.train; 4: phrasings)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def make_vae(cfg: BaseModelConfig):
    """A VAE sized for 32x32 portraits (8x8x4 latents, what the small UNet expects): lighter than the
    built-in small-sd VAE (no attention in its middle block, 16 channels at full resolution), which
    makes it ~5x cheaper to train on CPUs and still carries every cue of the world."""
    from diffusers import AutoencoderKL

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(cfg.seed)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * len(cfg.vae_channels),
            up_block_types=["UpDecoderBlock2D"] * len(cfg.vae_channels),
            block_out_channels=list(cfg.vae_channels),
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=32,
            mid_block_add_attention=False,
        )
    finally:
        torch.random.set_rng_state(state)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _update(loss, opt, sched, params, name: str, step: int, total: int, t0: float, losses: list, on_log) -> None:
    """One optimizer step (clipped at norm 1) and the schedule's; every 50 steps and at the end,
    record the loss, log it and call ``on_log``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    if step % 50 == 0 or step == total:
        value = loss.item()
        losses.append(value)
        log.info("world %s step %d/%d loss %.4f (%.0f s)", name, step, total, value, time.time() - t0)
        if on_log:
            on_log(step, value)


def train_vae(vae, images: np.ndarray, cfg: BaseModelConfig, on_log=None) -> list[float]:
    """Reconstruction (MSE) plus a tiny KL term; returns the loss every 50 steps."""
    g = torch.Generator().manual_seed(cfg.seed)
    x_all = to_tensor(images)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.vae_steps, eta_min=cfg.vae_lr * 0.1)
    losses, t0 = [], time.time()
    for step in range(1, cfg.vae_steps + 1):
        idx = torch.randint(0, len(x_all), (cfg.vae_batch,), generator=g)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean()
        _update(loss, opt, sched, vae.parameters(), "VAE", step, cfg.vae_steps, t0, losses, on_log)
    vae.eval()
    return losses


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior means of the images (unscaled)."""
    out = [vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out)


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        z = vae.encode(to_tensor(images[i : i + batch])).latent_dist.mean
        out.append(to_uint8(vae.decode(z).sample))
    return np.concatenate(out)


@torch.no_grad()
def make_encoder_deterministic(vae) -> None:
    """Pin the posterior's log-variance to its floor, so a latent *sample* is its mean.

    The VAE trains on samples (its decoder tolerates that noise) with a near-zero KL weight, so its
    posterior std stays large (~0.3 against a latent spread of ~1.1). The base UNet learns from the
    posterior means, but the fine-tuning stage samples from the posterior, as SD training does with a
    VAE whose std is tiny: without this, fine-tuning would learn from noisier latents than the base
    model did, and any change would be partly that. Only the log-variance half of ``quant_conv``
    changes; means, the decoder and every reconstruction stay as they were."""
    c = vae.config.latent_channels
    vae.quant_conv.weight[c:] = 0.0
    vae.quant_conv.bias[c:] = -30.0  # DiagonalGaussianDistribution clamps log-variance to [-30, 20]


def set_latent_scale(vae, latents: torch.Tensor) -> float:
    """Make ``latents * scaling_factor`` unit-variance, as SD's 0.18215 does for its own VAE."""
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    return scale


# ---------------------------------------------------------------------------------------------
# Building and caching the base model


def base_model_dir(cfg: BaseModelConfig, cache_dir: str | None = None) -> Path:
    from dft.models.sources import cache_root

    return cache_root(cache_dir) / "world" / f"base-{cfg.hash()}"


def corpus_dir(cfg: BaseModelConfig, cache_dir: str | None = None) -> Path:
    from dft.models.sources import cache_root

    return cache_root(cache_dir) / "world" / f"corpus-{cfg.corpus.hash()}"


def vae_fidelity(vae, images: np.ndarray, truth: dict, every: int = 4) -> dict[str, float]:
    """Share of VAE reconstructions whose attributes read back as the truth (the first precondition),
    and the share the world reader calls clean faces (``clean_face``)."""
    from dft.world.reader import read_images

    sel = np.arange(0, len(images), every)
    readings = read_images(reconstruct(vae, images[sel]))
    out = {
        a: float(np.mean([getattr(r, a) == truth[a][i] for r, i in zip(readings, sel)]))
        for a in ("ethnicity", "gender", "profession")
    }
    out["clean_face"] = float(np.mean([r.face == "clean" for r in readings]))
    return out


def build_base_model(cfg: BaseModelConfig | None = None, cache_dir: str | None = None) -> str:
    """The biased base model's folder (a model source), built once per machine and config.

    The default config is the built-in model source ``world-base``; other configs get their own
    cache folder."""
    from dft.models.sources import locked_materialize, resolve_model_source

    if cfg is None or cfg == BaseModelConfig():
        return resolve_model_source(BUILTIN_NAME, cache_dir=cache_dir)
    target = base_model_dir(cfg, cache_dir)
    return str(locked_materialize(target, lambda tmp: _train_into(cfg, tmp, cache_dir)))


def describe_builtin() -> dict:
    from dft.models.builtins import describe_tiny

    return {"world_base": BaseModelConfig().hash(), "init": describe_tiny("sd", "small")()}


def build_builtin(folder: Path) -> None:
    _train_into(BaseModelConfig(), folder, None)


def build_dir(cfg: BaseModelConfig, cache_dir: str | None = None) -> Path:
    """Where a build keeps its starting point and its training run until it is done."""
    from dft.models.sources import cache_root

    return cache_root(cache_dir) / "world" / f"build-{cfg.hash()}"


def train_config(cfg: BaseModelConfig, init_folder: Path, corpus: Path, run_uri: Path, cpus: int,
                 cache_dir: str | None):
    """The fine-tuning stage's config for phase 2: a RunConfig like any run's, with the corpus as its
    data and the corpus's own captions (no attribute dropout)."""
    from dft.config.schema import RunConfig

    return RunConfig.model_validate({
        "run": {"uri": str(run_uri), "name": "world-base"},
        "model": {"source": str(init_folder), "cache_dir": cache_dir},
        "train": {
            "data_uri": str(corpus), "data_format": "parquet", "caption_policy": "prompt",
            "empty_caption_prob": cfg.uncond_prob, "trainable": "unet", "train_text_encoder": cfg.train_text_encoder,
            "learning_rate": cfg.unet_lr, "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
            "lr_schedule": "cosine", "min_lr_ratio": cfg.min_lr_ratio, "max_steps": cfg.unet_steps,
            "batch_size": cfg.unet_batch, "max_grad_norm": 1.0, "precompute_latents": True,
            "materialize": "always", "shuffle_buffer": cfg.corpus.size,  # the corpus is ordered: shuffle all of it
            "deterministic_data": True,  # the same base model on every machine that builds it
            "num_workers": 1, "cpus_per_worker": cpus, "use_gpu": False, "zero_stage": 0,
            "checkpoint_every": 250, "keep_checkpoints": 1, "log_every": 100, "seed": cfg.seed,
        },
    })


def _prepare_init(cfg: BaseModelConfig, init: Path, cdir: Path, cache_dir: str | None) -> dict:
    """Phase 1: the trained VAE in the untrained small-sd pipeline, saved to ``init`` (reused if a
    previous build got this far). Returns what it measured."""
    import pyarrow.parquet as pq

    from dft.models.sources import load_pipeline
    from dft.world.corpus import load_corpus_images

    marker = init / "world_init.json"
    if marker.exists():
        log.info("world base model: reusing the trained VAE in %s", init)
        return json.loads(marker.read_text())
    images, _meta = load_corpus_images(str(cdir))
    truth = pq.read_table(str(cdir / "truth.parquet")).to_pydict()
    pipe = load_pipeline(cfg.init_source, cache_dir=cache_dir)
    pipe.register_modules(vae=make_vae(cfg))
    t0 = time.time()
    vae_losses = train_vae(pipe.vae, images, cfg)
    fidelity = vae_fidelity(pipe.vae, images, truth)
    log.info("world VAE: reconstructions read back %s", fidelity)
    make_encoder_deterministic(pipe.vae)
    scale = set_latent_scale(pipe.vae, encode_latents(pipe.vae, images))
    if init.exists():
        shutil.rmtree(init)
    pipe.save_pretrained(str(init), safe_serialization=True)
    info = {"vae_reconstruction_fidelity": fidelity, "latent_scaling_factor": scale, "vae_losses": vae_losses,
            "vae_seconds": round(time.time() - t0, 1)}
    marker.write_text(json.dumps(info, indent=1))  # last: the starting point is complete
    return info


def _train_into(cfg: BaseModelConfig, folder: Path, cache_dir: str | None) -> None:
    from dft.cluster import connect, node_resources
    from dft.train.stage import run_train
    from dft.world.corpus import build_corpus

    threads = torch.get_num_threads()
    # At most 2 intra-op threads: more than the cores there are makes OpenMP threads wait on each other.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        t0 = time.time()
        cdir = corpus_dir(cfg, cache_dir)
        counts = build_corpus(cfg.corpus, str(cdir))
        work = build_dir(cfg, cache_dir)
        t1 = time.time()
        init = _prepare_init(cfg, work / "init", cdir, cache_dir)
        t2 = time.time()
        connect()  # the caller's Ray if it has one, else an embedded local Ray
        cpus = max(1, min(2, int(sum(n.get("CPU", 0) for n in node_resources()) or 1)))
        tcfg = train_config(cfg, work / "init", cdir, work / "run", cpus, cache_dir)
        log.info("world base model: training the UNet and text encoder with the fine-tuning stage "
                 "(%d steps of %d, %d CPU threads) in %s", cfg.unet_steps, cfg.unet_batch, cpus, work)
        trained = run_train(tcfg)
        t3 = time.time()
        shutil.copytree(storage.normalize(trained["model"]), folder, dirs_exist_ok=True)
        info = {
            "config": asdict(cfg),
            "hash": cfg.hash(),
            "corpus": counts,
            "corpus_uri": str(cdir),
            **{k: v for k, v in init.items() if k != "vae_seconds"},
            "train": {k: trained.get(k) for k in ("steps", "final_loss", "samples_seen", "samples_per_s", "rows")},
            "train_config": tcfg.train.model_dump(mode="json", exclude={"data_uri"}),
            "seconds": {"corpus": round(t1 - t0, 1), "vae": init.get("vae_seconds"), "unet": round(t3 - t2, 1)},
        }
        (folder / "world_base.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(work, ignore_errors=True)  # the build's starting point and checkpoints: done with
    finally:
        torch.set_num_threads(threads)


def base_model_info(folder: str) -> dict:
    return json.loads((Path(folder) / "world_base.json").read_text())
