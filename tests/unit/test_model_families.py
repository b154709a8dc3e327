"""Built-in tiny SD3 and FLUX pipelines (offline tokenizers, fixed seeds), family detection, and generation
through the generation core with each family's scheduler and guidance settings. No Ray."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from dft.config.load import ConfigError, load_config
from dft.generate.config import GenerateConfig
from dft.generate.core import ImageGenerator, settings_dict, settings_hash
from dft.models.families import FAMILIES, FamilyMismatch, family_hint, family_of_folder
from dft.models.sources import builtin_names, resolve_model_source
from dft.prompts.config import PromptsConfig
from dft.prompts.table import neutral_table


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module on one torch thread (tests/conftest.py)."""


def _batch(n=3):
    t = neutral_table(PromptsConfig(neutral_max_professions=2), images_per_prompt=2).slice(0, n)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


@pytest.mark.parametrize("name,pipeline,parts", [
    ("tiny-sd3", "StableDiffusion3Pipeline",
     {"transformer": "SD3Transformer2DModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModelWithProjection",
      "text_encoder_2": "CLIPTextModelWithProjection", "text_encoder_3": "T5EncoderModel",
      "tokenizer_3": "T5Tokenizer", "scheduler": "FlowMatchEulerDiscreteScheduler"}),
    ("tiny-flux", "FluxPipeline",
     {"transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
      "text_encoder_2": "T5EncoderModel", "tokenizer_2": "T5Tokenizer", "scheduler": "FlowMatchEulerDiscreteScheduler"}),
])
def test_tiny_flow_models_are_saved_folders_with_every_component(name, pipeline, parts):
    assert name in builtin_names()
    folder = resolve_model_source(name)
    index = json.load(open(os.path.join(folder, "model_index.json")))
    assert index["_class_name"] == pipeline
    for part, cls in parts.items():
        assert index[part][1] == cls, part
    assert family_of_folder(folder).name == name.removeprefix("tiny-") == family_hint(name).name
    assert resolve_model_source(name) == folder  # built once, then loaded from the cache


def test_t5_tokenizer_is_offline_and_one_token_per_word():
    from transformers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(resolve_model_source("tiny-flux"), subfolder="tokenizer_2")
    ids = tok(["a photo of a Black woman working as a doctor"]).input_ids[0]
    assert ids[-1] == tok.eos_token_id and len(ids) == 11  # 10 words, each one piece, then </s>
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a photo of a Black woman working as a doctor"


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_same_seed_same_image_and_the_family_settings(name):
    gen = ImageGenerator(name, GenerateConfig(steps=3, guidance_scale=3.5))
    assert gen.family.name == name.removeprefix("tiny-") and (gen.width, gen.height) == (32, 32)
    assert gen.call_kwargs == {"max_sequence_length": 32}  # min(pipeline default, tiny T5 tokenizer's 32)
    batch = _batch(3)
    a, b = gen(batch), gen(batch)
    assert all(e is None for e in a["error"])
    assert list(a["image"]) == list(b["image"])  # same rows and seeds: byte-identical
    assert a["image"][0] != a["image"][1]  # other seeds, other images
    assert _pixels(a["image"][0]).std() > 0
    again = ImageGenerator(name, GenerateConfig(steps=3, guidance_scale=3.5))
    assert again(batch)["image"][0] == a["image"][0]  # a fresh load of the built-in: same weights


def test_flow_shift_and_sequence_length_change_the_image_and_the_key():
    base = ImageGenerator("tiny-sd3", GenerateConfig(steps=3))
    assert base.pipe.scheduler.config.shift == 3.0
    shifted = ImageGenerator("tiny-sd3", GenerateConfig(steps=3, flow_shift=1.0, max_sequence_length=16))
    assert shifted.pipe.scheduler.config.shift == 1.0 and shifted.call_kwargs == {"max_sequence_length": 16}
    a, b = base(_batch(1)), shifted(_batch(1))
    assert a["image"][0] != b["image"][0] and a["key"][0] != b["key"][0]
    # unset flow settings leave the hash of every existing (UNet) run as it was
    assert not {"flow_shift", "max_sequence_length"} & set(settings_dict(GenerateConfig()))
    assert settings_hash(GenerateConfig(flow_shift=2.0)) != settings_hash(GenerateConfig())
    flux = ImageGenerator("tiny-flux", GenerateConfig(steps=2, flow_shift=2.0))
    assert not flux.pipe.scheduler.config.use_dynamic_shifting and flux.pipe.scheduler.config.shift == 2.0


def test_family_option_mismatches_fail_at_config_validation_naming_field_and_value():
    with pytest.raises(ConfigError, match=r"generate.scheduler: 'ddim' .*flow-matching") as err:
        load_config(None, ["model.source=tiny-flux", "generate.scheduler=ddim"])
    assert "tiny-flux" in str(err.value)
    with pytest.raises(ConfigError, match=r"generate.flow_shift: .*not sd; got 2.0"):
        load_config(None, ["model.source=tiny-sd", "generate.flow_shift=2.0"])
    with pytest.raises(ConfigError, match=r"train.snr_gamma: .*sd3.*got 5.0"):
        load_config(None, ["model.source=tiny-sd3", "train.snr_gamma=5"])
    with pytest.raises(ConfigError, match=r"train.train_text_encoder .*sdxl"):
        load_config(None, ["model.source=tiny-sdxl", "train.train_text_encoder=true"])
    load_config(None, ["model.source=tiny-sdxl", "train.snr_gamma=5"])  # fine for a UNet family
    # a source resolved later (s3://, hub) is checked by the stage itself
    with pytest.raises(FamilyMismatch, match="generate.scheduler"):
        ImageGenerator(resolve_model_source("tiny-sd3"), GenerateConfig(scheduler="euler"))


def test_every_family_is_described():
    assert set(FAMILIES) == {"sd", "sdxl", "sd3", "flux"}
    assert FAMILIES["flux"].t5_index == 1 and FAMILIES["sd3"].t5_index == 2 and FAMILIES["sdxl"].t5_index is None
