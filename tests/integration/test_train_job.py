"""The fine-tuning job on a local Ray: 2 CPU workers, ZeRO stage 2, a tiny learnable set."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch
from train_shards import rows, write_shards

from dft import storage
from dft.config.schema import RunConfig
from dft.runs import Run

pytestmark = pytest.mark.integration


def _cfg(run_uri: str, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.run.uri = run_uri
    cfg.run.name = "ft"
    t = cfg.train
    t.num_workers, t.zero_stage, t.batch_size, t.max_steps = 2, 2, 8, 6
    t.checkpoint_every, t.log_every, t.learning_rate, t.keep_checkpoints = 2, 1, 1e-3, 2
    t.caption_policy = "prompt"
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def _fixed_batch(n=16):
    from dft.train.preprocess import decode_image, tokenize, tokenizer_for

    rs = rows(n)
    tok = tokenizer_for("tiny-sd", None)
    return {"pixels": torch.from_numpy(np.stack([decode_image(r["image"], 32) for r in rs])),
            "input_ids": torch.from_numpy(tokenize(tok, [r["prompt"] for r in rs]))}


def _eval_loss(folder_or_source: str, batch) -> float:
    """Mean diffusion loss of a pipeline on a fixed batch, same noise and timesteps for every model."""
    from dft.models.sources import resolve_model_source
    from dft.train.components import build_module

    cfg = RunConfig().train
    module, _ = build_module(resolve_model_source(folder_or_source), cfg)
    module.eval()
    losses = []
    with torch.no_grad():
        for seed in range(4):
            torch.manual_seed(seed)
            losses.append(float(module(batch)))
    return float(np.mean(losses))


def test_two_workers_zero2_fault_resume_export_and_noop(ray_session, tmp_run):
    from dft.models.sources import load_pipeline
    from dft.train.stage import run_train

    run = Run(tmp_run)
    write_shards(run.synthetic, n=32, shard_size=16)
    cfg = _cfg(tmp_run, fault_inject_step=3)

    counts = run_train(cfg)

    # The injected error fired once (marker) and Ray Train restarted the group from the step-2 checkpoint.
    assert os.path.exists(run.path("checkpoints", "_faults", "step-3"))
    assert counts["steps"] == 6
    states = [json.load(open(p)) for p in glob.glob(run.path("checkpoints", "ft", "checkpoint_*", "state.json"))]
    assert sorted(s["step"] for s in states) == [4, 6]  # keep_checkpoints=2: the latest two
    final = max(states, key=lambda s: s["step"])
    # Counting samples across the restart: 6 steps x 8 x 2 workers, not (6 - 3) steps after a restart from 0.
    assert final["samples_seen"] == 6 * 8 * 2 and final["world_size"] == 2 and final["zero_stage"] == 2
    per_rank = glob.glob(run.path("checkpoints", "ft", "checkpoint_*", "deepspeed", "step-00000006", "*optim_states.pt"))
    assert len(per_rank) == 2  # DeepSpeed's per-rank ZeRO partitions, merged by Ray
    assert glob.glob(run.path("logs", "train", "events.out.tfevents.*"))

    # The export is a diffusers folder in safetensors that both loaders accept, and it generates.
    out = run.finetuned_model
    assert glob.glob(os.path.join(out, "unet", "*.safetensors"))
    from diffusers import DiffusionPipeline

    DiffusionPipeline.from_pretrained(out)
    pipe = load_pipeline(out)
    img = pipe("a photo of a Black woman doctor", num_inference_steps=2, height=32, width=32,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (32, 32) and np.asarray(img).std() > 0

    # The loss went down on the learnable set: same batch, noise and timesteps, base vs fine-tuned.
    batch = _fixed_batch()
    assert _eval_loss(out, batch) < _eval_loss("tiny-sd", batch) * 0.95

    # A second `dft train` on the finished run is a no-op.
    mtime = os.path.getmtime(os.path.join(out, "model_index.json"))
    again = run_train(cfg)
    assert again == counts
    assert os.path.getmtime(os.path.join(out, "model_index.json")) == mtime


@pytest.mark.s3
def test_checkpoints_and_export_on_s3(ray_session, s3_uri, tmp_path):
    from dft.models.sources import load_pipeline
    from dft.train.stage import run_train

    data = str(tmp_path / "synthetic")
    write_shards(data, n=16, shard_size=16, formats=("webdataset",))
    cfg = _cfg(s3_uri, num_workers=1, max_steps=2, checkpoint_every=1, data_uri=data, data_format="webdataset",
               precompute_latents=True, trainable="lora")
    # Dummy credentials of the local S3 server for the workers (a real cluster uses instance roles).
    creds = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    counts = run_train(cfg, worker_env=creds)
    run = Run(s3_uri)
    assert counts["checkpoint"].startswith(run.path("checkpoints", "ft") + "/checkpoint_")
    states = storage.glob(run.path("checkpoints", "ft"), "checkpoint_*/state.json")
    assert sorted(storage.read_json(u)["step"] for u in states) == [1, 2]
    assert storage.glob(counts["checkpoint"], "deepspeed/*/*optim_states.pt")
    assert storage.exists(storage.join(run.finetuned_model, "unet", "diffusion_pytorch_model.safetensors"))
    pipe = load_pipeline(run.finetuned_model)  # an s3:// model source, as generation would use it
    assert not any("lora_" in n for n, _ in pipe.unet.named_parameters())  # merged on export

    # What `dft status` reads back from the real checkpoints on S3.
    from dft.status import run_status

    status = run_status(s3_uri)
    train = status.train
    assert status.stage("train").state == "done" and status.stage("train").counts["steps"] == 2
    assert (train.name, train.step, train.max_steps, train.checkpoints, train.exported) == ("ft", 2, 2, 2, True)
    assert train.last_checkpoint.uri == counts["checkpoint"] and train.last_checkpoint.step == 2
    assert train.last_checkpoint.time is not None and train.stopped is None and status.errors == []


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error_keeping_the_last_good_checkpoint(ray_session, tmp_run):
    from dft.train.job import latest_state
    from dft.train.stage import run_train
    from dft.train.step import NonFiniteLoss

    write_shards(Run(tmp_run).synthetic, n=16, shard_size=16)
    # An absurd learning rate without clipping blows the weights up after the first update.
    cfg = _cfg(tmp_run, num_workers=1, max_steps=6, checkpoint_every=1, learning_rate=1e30, max_grad_norm=None,
               keep_checkpoints=6)
    with pytest.raises(NonFiniteLoss, match=r"loss is (nan|inf|-inf) at step \d.*Latest good checkpoint"):
        run_train(cfg)
    state = latest_state(cfg)
    assert state is not None and 1 <= state["step"] < 6
    assert Run(tmp_run).marker("train") is None  # not finished: no marker, no export
    assert not os.path.exists(Run(tmp_run).finetuned_model)

    # `dft status`: the stage failed, the loop's stop record and the last good checkpoint.
    from dft.status import run_status

    status = run_status(tmp_run)
    assert status.stage("train").state == "failed"
    assert status.stage("train").error.type == "dft.train.step.NonFiniteLoss"
    assert status.train.stopped["reason"] == "nonfinite_loss" and status.train.step == state["step"]
    assert status.train.max_steps == 6 and not status.train.exported
    assert {e.where.split(":")[0] for e in status.errors} == {"stage train", "train"}

def _unet_weights(folder: str) -> dict:
    from safetensors.torch import load_file

    return load_file(glob.glob(os.path.join(folder, "unet", "*.safetensors"))[0])


def test_a_restarted_run_ends_with_the_weights_of_one_that_never_stopped(ray_session, tmp_path):
    """A restart resumes at the exact data position and random streams: the same weights, bit for bit
    (with the prior-preservation term on, whose frozen teacher is rebuilt from the base model, not restored)."""
    from dft.train.stage import run_train

    finals = {}
    for name, fault in (("straight", None), ("restarted", 3)):
        run = Run(str(tmp_path / name))
        write_shards(run.synthetic, n=32, shard_size=16)
        cfg = _cfg(run.uri, num_workers=1, max_steps=5, deterministic_data=True, shuffle_buffer=8,
                   caption_policy="attribute_dropout", attribute_dropout=0.5, empty_caption_prob=0.2,
                   lr_schedule="cosine", warmup_steps=1, ema_decay=0.9, prior_preservation=0.5,
                   fault_inject_step=fault)
        counts = run_train(cfg)
        assert counts["steps"] == 5
        finals[name] = _unet_weights(run.finetuned_model)
    assert os.path.exists(str(tmp_path / "restarted" / "checkpoints" / "_faults" / "step-3"))  # it did restart
    base = _unet_weights(__import__("dft.models.sources", fromlist=["x"]).resolve_model_source("tiny-sd"))
    assert any(not torch.equal(base[k], v) for k, v in finals["straight"].items())  # training moved the weights
    for k, v in finals["straight"].items():
        assert torch.equal(v, finals["restarted"][k]), k
