"""The reader registry, and the CLIP and VQA readers end to end with the built-in tiny models."""

import io
import sys
import types

import numpy as np
import pytest
from PIL import Image

from dft.evaluate.config import ReaderConfig
from dft.evaluate.registry import ReaderChain, build_reader, declared_attributes, reader_kinds, register_reader
from dft.evaluate.skin_tone import MST_RGB
from dft.evaluate.synthetic_faces import paint_face, paint_no_face


def _png(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return b.getvalue()


@pytest.fixture(scope="module")
def batch():
    imgs = [_png(paint_face(MST_RGB[t], seed=t)) for t in (0, 4, 9)] + [_png(paint_no_face(seed=1)), b"broken"]
    return {
        "image": np.array(imgs, dtype=object),
        "key": np.array(["a", "b", "c", "d", "e"], dtype=object),
        "prompt": np.array(["a photo of a person"] * 5, dtype=object),
    }


def test_builtin_kinds_are_registered():
    assert {"skin_tone", "clip", "vqa", "clip_score"} <= set(reader_kinds())


def test_plugin_reader_registered_from_its_module(batch):
    """A plugin that is not an installed package: its module registers a kind at import; the config names it."""
    mod = types.ModuleType("dft_test_plugin_reader")

    class Fixed:
        attributes = {"hat": ["yes", "no"]}

        def __init__(self, cfg):
            self.answer = cfg.options.get("answer", "yes")

        def __call__(self, b):
            out = dict(b)
            out["hat"] = np.array([self.answer] * len(b["image"]), dtype=object)
            return out

    mod.Fixed = Fixed
    code = (
        "from dft.evaluate.registry import register_reader\n"
        "register_reader('hats', Fixed, attributes=lambda cfg: Fixed.attributes)\n"
    )
    exec(code, mod.__dict__)
    sys.modules.pop(mod.__name__, None)
    cfg = ReaderConfig(kind="hats", module=mod.__name__, options={"answer": "no"})
    sys.modules[mod.__name__] = mod
    try:
        assert declared_attributes(cfg) == {"hat": ["yes", "no"]}
        out = ReaderChain([ReaderConfig(kind="skin_tone"), cfg])(dict(batch))
        assert list(out["hat"]) == ["no"] * 5
        assert "skin_tone" in out
    finally:
        sys.modules.pop(mod.__name__, None)


def test_unknown_kind_names_the_field_the_value_and_the_known_kinds():
    from dft.errors import DftError

    with pytest.raises(DftError, match="register_reader") as e:
        build_reader(ReaderConfig(kind="nope"))
    msg = str(e.value)
    assert "'kind'" in msg and "'nope'" in msg and "skin_tone, vqa" in msg and "dft.readers" in msg
    assert isinstance(e.value, ValueError)  # what callers caught before it was a DftError


def test_registry_finds_kinds_through_entry_points_without_importing_them():
    """As in a fresh Ray worker: nothing imported in advance, the kind's module loaded on lookup only."""
    import subprocess

    code = (
        "import sys\n"
        "from dft.evaluate.config import ReaderConfig\n"
        "from dft.evaluate.registry import declared_attributes, reader_kinds\n"
        "assert {'skin_tone', 'clip', 'vqa', 'clip_score', 'world'} <= set(reader_kinds())\n"
        "assert not [m for m in sys.modules if m.startswith(('dft.world', 'dft.evaluate.clip', 'dft.evaluate.vqa'))]\n"
        "assert 'gender' in declared_attributes(ReaderConfig(kind='world'))\n"
        "assert 'dft.world.reader' in sys.modules and 'dft.evaluate.clip_reader' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_readers_writing_one_attribute_is_an_error():
    register_reader("skin_again", lambda cfg: build_reader(ReaderConfig(kind="skin_tone")))
    with pytest.raises(ValueError, match="same attribute"):
        ReaderChain([ReaderConfig(kind="skin_tone"), ReaderConfig(kind="skin_again")])


def test_clip_reader_end_to_end(batch):
    cfg = ReaderConfig(kind="clip", model="tiny-clip", attributes=["gender", "age"])
    r = build_reader(cfg)
    assert r.attributes == {"gender": ["man", "woman"], "age": ["young", "middle-aged", "elderly"]}
    out = r(dict(batch))
    assert list(out["gender"][:4]) and all(g in ("man", "woman") for g in out["gender"][:4])
    assert all(a in ("young", "middle-aged", "elderly") for a in out["age"][:4])
    assert out["gender"][4] is None and out["gender_reason"][4] == "decode_error"
    assert np.all((out["gender_score"][:4] >= 0.5) & (out["gender_score"][:4] <= 1.0))  # top of 2 classes
    again = r(dict(batch))
    np.testing.assert_allclose(again["gender_score"][:4], out["gender_score"][:4])  # deterministic
    strict = build_reader(cfg.model_copy(update={"min_confidence": 0.999}))(dict(batch))
    assert all(x is None for x in strict["gender"]) and strict["gender_reason"][0] == "low_confidence"


def test_clip_reader_custom_prompts():
    cfg = ReaderConfig(kind="clip", model="tiny-clip", classes={"gender": {"f": "a photo of a woman", "m": "a photo of a man"}})
    assert declared_attributes(cfg) == {"gender": ["f", "m"]}
    with pytest.raises(ValueError, match="at least 2 classes"):
        build_reader(ReaderConfig(kind="clip", model="tiny-clip", attributes=["mood"]))


def test_vqa_reader_score_mode_end_to_end(batch):
    r = build_reader(ReaderConfig(kind="vqa", model="tiny-vqa"))
    out = r(dict(batch))
    assert r.attributes == {"gender": ["man", "woman"]}
    assert all(g in ("man", "woman") for g in out["gender"][:4])
    assert out["gender_reason"][4] == "decode_error"
    assert np.all((out["gender_score"][:4] >= 0.5) & (out["gender_score"][:4] <= 1.0))


def test_vqa_score_equals_the_models_own_answer_loss(batch):
    """The answer log-probability the reader computes is what the model's loss says it is."""
    import torch

    from dft.evaluate.batch import decode_batch

    r = build_reader(ReaderConfig(kind="vqa", model="tiny-vqa"))
    images, _ = decode_batch(batch["image"][:1])
    px = r.processor.image_processor(images, return_tensors="pt")["pixel_values"]
    q, ans = r.questions["gender"], "a woman"
    with torch.inference_mode():
        mine = float(r._score(px, q, [ans])[0, 0])
        ids, a0, a1 = r._answer_span(q, ans)
        seq = torch.tensor([[r.image_token] * r.num_query + ids])
        labels = torch.full_like(seq, -100)
        labels[0, r.num_query + a0 : r.num_query + a1] = seq[0, r.num_query + a0 : r.num_query + a1]
        loss = float(r.model(pixel_values=px, input_ids=seq, labels=labels).loss)
    assert mine == pytest.approx(-loss, rel=1e-4, abs=1e-5)


def test_vqa_generate_mode_matches_answers_or_says_unreadable(batch):
    from dft.evaluate.vqa_reader import match_answer

    assert match_answer("It is a woman.", {"man": "a man", "woman": "a woman"}) == "woman"
    assert match_answer("man", {"man": "a man", "woman": "a woman"}) == "man"
    assert match_answer("a cat", {"man": "a man", "woman": "a woman"}) is None
    r = build_reader(ReaderConfig(kind="vqa", model="tiny-vqa", vqa_mode="generate", options={"max_new_tokens": 3}))
    out = r(dict(batch))
    for label, said, why in zip(out["gender"][:4], out["gender_answer"][:4], out["gender_reason"][:4]):
        assert isinstance(said, str)
        assert label == match_answer(said, r.answers["gender"])
        assert (label is None) == (why == "answer_not_a_class")


def test_clip_score_reader(batch):
    out = build_reader(ReaderConfig(kind="clip_score", model="tiny-clip"))(dict(batch))
    s = out["clip_score"]
    assert np.all((s[:4] >= 0) & (s[:4] <= 100)) and np.isnan(s[4])
