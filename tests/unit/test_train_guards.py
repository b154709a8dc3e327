"""Guards that need no Ray: missing/empty shards, non-finite loss, resume compatibility, DeepSpeed config,
the worker spec."""

import os

import pytest
import torch
from train_shards import write_shards

from dft.config.schema import RunConfig
from dft.runs import Run
from dft.train.deepspeed_config import build_deepspeed_config
from dft.train.job import check_resume, structure
from dft.train.source import DataError, data_source, find_shards
from dft.train.spec import WorkerSpec
from dft.train.step import NonFiniteLoss, TorchBackend, run_steps


def _cfg(tmp_run, **train):
    cfg = RunConfig()
    cfg.run.uri = tmp_run
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_missing_shards_fail_naming_the_path(tmp_run):
    cfg = _cfg(tmp_run)
    with pytest.raises(DataError, match=f"no parquet shards under {Run(tmp_run).synthetic}"):
        data_source(cfg.train, Run(tmp_run))


def test_empty_and_vanished_shards_fail_naming_the_file(tmp_run):
    syn = Run(tmp_run).synthetic
    write_shards(syn, n=8, shard_size=4)
    assert len(find_shards(syn, "webdataset")) == 2
    bad = os.path.join(syn, "parquet", "shard-00001.parquet")
    open(bad, "wb").close()
    with pytest.raises(DataError, match="shard-00001.parquet is empty"):
        find_shards(syn, "parquet")
    os.remove(bad)
    with pytest.raises(DataError, match="shard-00001.parquet .*does not exist"):
        find_shards(syn, "parquet")


def test_curated_mode_needs_a_curated_set(tmp_run):
    write_shards(Run(tmp_run).synthetic, n=4, shard_size=4)
    with pytest.raises(DataError, match="use_curated"):
        data_source(_cfg(tmp_run, use_curated=True).train, Run(tmp_run))


class _Nan(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return self.w * batch["x"]


def test_non_finite_loss_stops_before_the_update():
    m = _Nan()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    batches = iter([{"x": torch.tensor([1.0])}, {"x": torch.tensor([float("nan")])}])
    seen = []
    with pytest.raises(NonFiniteLoss, match="step 2"):
        run_steps(TorchBackend(m, opt), batches, start_step=0, max_steps=5, grad_accum=1,
                  samples_per_micro_step=1, on_step=lambda s: seen.append(s.step))
    assert seen == [1]
    assert torch.isfinite(m.w).all() and float(m.w.detach()) == pytest.approx(0.9)


def test_resume_checks_worker_count_and_layout(tmp_run):
    cfg = _cfg(tmp_run, num_workers=1, zero_stage=2)
    state = {"step": 4, "world_size": 2, "zero_stage": 2, "structure": structure(cfg)}
    with pytest.raises(ValueError, match="written by 2 workers with ZeRO stage 2.*num_workers=2"):
        check_resume(cfg, state)
    cfg.train.resize_policy = "reset_optimizer"
    check_resume(cfg, state)  # allowed: weights and step kept, optimizer restarted
    cfg.train.zero_stage, cfg.train.resize_policy = 0, "fail"
    with pytest.raises(ValueError, match="ZeRO stage 2"):
        check_resume(cfg, state)
    cfg.train.zero_stage = 2
    cfg.train.trainable = "lora"
    with pytest.raises(ValueError, match="another model layout"):
        check_resume(cfg, {**state, "world_size": 1})


def test_deepspeed_config_cpu_and_gpu():
    t = RunConfig().train
    t.batch_size, t.grad_accum, t.zero_stage, t.warmup_steps = 4, 2, 3, 10
    cpu = build_deepspeed_config(t, world_size=2, use_gpu=False)
    assert cpu["train_batch_size"] == 16 and cpu["gradient_accumulation_steps"] == 2
    assert cpu["optimizer"]["params"]["torch_adam"] is True
    assert not cpu["bf16"]["enabled"] and not cpu["fp16"]["enabled"]
    assert cpu["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    assert cpu["scheduler"]["params"]["warmup_num_steps"] == 10
    assert cpu["gradient_clipping"] == 1.0
    gpu = build_deepspeed_config(t, world_size=8, use_gpu=True)
    assert gpu["bf16"]["enabled"]
    t.precision = "fp16"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        build_deepspeed_config(t, world_size=1, use_gpu=False)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR

    t = RunConfig().train
    t.learning_rate, t.warmup_steps, t.max_steps, t.lr_schedule, t.min_lr_ratio = 1e-3, 10, 100, "cosine", 0.1
    sched_cfg = build_deepspeed_config(t, world_size=1, use_gpu=False)["scheduler"]
    assert sched_cfg["type"] == "WarmupCosineLR"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.learning_rate)
    sched = WarmupCosineLR(opt, **sched_cfg["params"])  # DeepSpeed builds it from exactly these params
    lrs = []
    for step in range(t.max_steps + 1):  # DeepSpeed steps the scheduler once per optimizer step
        sched.step(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5e-3)  # linear warm-up
    assert lrs[10] == pytest.approx(1e-3, rel=1e-3)  # peak after warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only down
    assert lrs[t.max_steps] == pytest.approx(1e-4)  # to min_lr_ratio x lr


def test_deterministic_data_keeps_ray_datas_block_order_in_the_ingest():
    from dft.train.job import ingest_config

    t = RunConfig().train
    assert t.deterministic_data is False
    assert ingest_config(t)._resolve_execution_options("train").preserve_order is False
    t.deterministic_data = True
    assert ingest_config(t)._resolve_execution_options("train").preserve_order is True


def test_the_worker_spec_travels_as_json_and_comes_back_typed(tmp_run):
    import json
    import pickle

    cfg = _cfg(tmp_run, max_steps=7, zero_stage=2)
    spec = WorkerSpec(train=cfg.train, model_source=cfg.model.source, use_gpu=False, structure=structure(cfg),
                      run_name="ft", stop_uri=os.path.join(tmp_run, "stop.json"))
    back = WorkerSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and back.train.max_steps == 7 and back.train.zero_stage == 2
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(ValueError, match="unknown worker spec keys"):
        WorkerSpec.from_dict({**spec.to_dict(), "tb": "x"})
    with pytest.raises(ValueError, match="max_steps"):  # the training config is validated again on the worker
        WorkerSpec.from_dict({**spec.to_dict(), "train": {**spec.to_dict()["train"], "max_steps": "many"}})


def test_the_non_finite_loss_error_names_the_checkpoint_and_pickles():
    import pickle

    exc = pickle.loads(pickle.dumps(NonFiniteLoss(3, float("nan"), checkpoint="/ckpt/checkpoint_1")))
    assert (exc.step, exc.checkpoint) == (3, "/ckpt/checkpoint_1")
    assert str(exc).startswith("loss is nan at step 3") and str(exc).endswith("Latest good checkpoint: /ckpt/checkpoint_1")
