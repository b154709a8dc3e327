"""The demo world, end to end, on pinned seeds: the unchanged pipeline must remove a bias we put in.

In the issue's order:
1. preconditions: the base model's VAE reconstructions read back right >= 95% per attribute;
   explicit prompts give the asked gender >= 90% and skin-tone group >= 80% of the time;
2. the base model is biased: gender and skin-tone imbalance on neutral prompts >= 0.2 each;
3. after diversity fine-tuning (dft/configs/world.yaml: attribute dropout) the mean imbalance is
   >= 40% lower with bootstrap intervals apart, no attribute worse, explicit fidelity <= 5 points lower;
4. two controls fail step 3: the base model re-sampled with other seeds, and the base model
   fine-tuned the same way on its own neutral-prompt images.

Every stage is the library's own (prompts, generate, train, evaluate); only the model source and
the vocabulary are the world's. The base model is built once per machine (cached, see
dft/world/base_model.py); the rest runs in a temporary run folder.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

# In `make test` (the issue asks for it there): about 8 minutes with world-base cached, 13 without.
pytestmark = [pytest.mark.e2e, pytest.mark.integration]

log = logging.getLogger(__name__)


def _labels(run_uri: str):
    return pq.read_table(f"{run_uri}/eval/labels.parquet")


def _config(run_uri: str, *overrides: str):
    from dft.config.load import load_config
    from dft.world.demo import world_config_path

    return load_config([world_config_path()], [f"run.uri={run_uri}", *overrides])


@pytest.fixture(scope="module")
def world(tmp_path_factory, ray_session):
    from dft.world.demo import prepare

    root = tmp_path_factory.mktemp("world")
    cfg = _config(str(root / "run"))
    base = prepare(cfg)
    return {"root": root, "cfg": cfg, "base": base, "results": {}}


def _record(world, name, value):
    world["results"][name] = value
    log.info("%s: %s", name, json.dumps(value, default=float))
    print(f"\n[world e2e] {name}: {json.dumps(value, default=float)}")


def test_1_preconditions(world):
    from diffusers import AutoencoderKL

    from dft.world import attributes as A
    from dft.world.base_model import vae_fidelity
    from dft.world.checks import explicit_fidelity
    from dft.world.render import Person, render_batch

    # VAE: portraits it never saw (seeds outside the corpus), every combination.
    vae = AutoencoderKL.from_pretrained(world["base"], subfolder="vae")
    people = [Person(e, g, p) for e in A.ETHNICITIES for g in A.GENDERS for p in A.PROFESSIONS] * 20
    images, _ = render_batch(people, np.arange(10**9, 10**9 + len(people)))
    truth = {a: [getattr(p, a) for p in people] for a in ("ethnicity", "gender", "profession")}
    rec = vae_fidelity(vae, images, truth, every=1)
    _record(world, "vae_reconstruction_fidelity", rec)
    assert min(rec.values()) >= 0.95, rec

    fid = explicit_fidelity(world["cfg"], world["base"], str(world["root"] / "explicit-base"), images_per_prompt=8)
    world["fid_base"] = fid
    _record(world, "base_explicit_fidelity", fid)
    assert fid["gender"] >= 0.90, fid
    assert fid["skin_tone_group"] >= 0.80, fid


def test_2_base_is_biased(world):
    from dft.cli.main import run_stages
    from dft.world.checks import bias_summary

    cfg = world["cfg"]
    run_stages(cfg, ["prompts", "generate", "curate", "train", "evaluate", "report"])
    s = bias_summary(_labels(cfg.run.uri), bootstrap=cfg.evaluate.bootstrap, seed=0)
    world["summary"] = s
    _record(world, "bias", {m: {"mean": r["mean_imbalance"], "ci": r.get("mean_imbalance_ci"),
                                **{a: v["imbalance"] for a, v in r["attributes"].items()}} for m, r in s.items()})
    base = s["base"]["attributes"]
    assert base["gender"]["imbalance"] >= 0.2, base
    assert base["skin_tone_group"]["imbalance"] >= 0.2, base


def test_3_finetuning_reduces_bias(world):
    from dft.runs import Run
    from dft.world.checks import explicit_fidelity, verdict

    cfg = world["cfg"]
    ft = Run(cfg.run.uri).finetuned_model
    fid_ft = explicit_fidelity(cfg, ft, str(world["root"] / "explicit-finetuned"), images_per_prompt=8)
    _record(world, "finetuned_explicit_fidelity", fid_ft)
    s = world["summary"]
    v = verdict(s["base"], s["finetuned"], world["fid_base"], fid_ft)
    _record(world, "verdict", v)
    # verdict's "pass" is every check's; make sure the explicit-fidelity checks are among them
    assert {"gender_fidelity_kept", "skin_tone_group_fidelity_kept"} <= set(v["checks"]), v
    assert v["pass"], v


def test_4a_control_resampled_base_fails(world):
    """The base model against itself with other seeds: chance alone must not pass step 3."""
    from dft.cli.main import run_stages
    from dft.world.checks import bias_summary, verdict

    cfg = _config(str(world["root"] / "control-resample"), "evaluate.models=[base]", "evaluate.seed_offset=1")
    cfg.model.source = world["base"]
    run_stages(cfg, ["evaluate"])
    again = bias_summary(_labels(cfg.run.uri), bootstrap=cfg.evaluate.bootstrap, seed=1)["base"]
    v = verdict(world["summary"]["base"], again)
    _record(world, "control_resampled", v)
    assert not v["pass"], v


def test_4b_control_finetuned_on_own_neutral_images_fails(world):
    """Fine-tuning the same way on the base model's own neutral-prompt images (same number of images,
    same training settings) must not pass step 3: the gain comes from the diverse set, not from
    fine-tuning as such."""
    from dft.cli.main import run_stages
    from dft.generate.job import generate_dataset
    from dft.prompts.table import neutral_table
    from dft.world.checks import bias_summary, verdict

    cfg = world["cfg"]
    root = world["root"] / "control-own-neutral"
    n_synthetic = cfg.prompts.images_per_prompt * 48
    per_prompt = n_synthetic // 4
    own = str(root / "own-neutral")
    table = neutral_table(cfg.prompts, images_per_prompt=per_prompt, seed_offset=12345)
    generate_dataset(table, own, world["base"], cfg.generate, cache_dir=cfg.model.cache_dir, progress=False)
    ctl = _config(str(root / "run"), f"train.data_uri={own}")
    ctl.model.source = world["base"]
    run_stages(ctl, ["train", "evaluate"])
    s = bias_summary(_labels(ctl.run.uri), bootstrap=ctl.evaluate.bootstrap, seed=0)
    v = verdict(s["base"], s["finetuned"])
    _record(world, "control_own_neutral", {"verdict": v, "finetuned_mean": s["finetuned"]["mean_imbalance"]})
    assert not v["pass"], v
