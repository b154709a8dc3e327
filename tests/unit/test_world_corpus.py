"""The biased corpus: explicit captions match their images, neutral captions carry the configured skew."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from world_stub import skin_tone_fn

from dft.prompts.table import render
from dft.schema import SAMPLE_SCHEMA
from dft.world import attributes as A
from dft.world.corpus import CorpusConfig, build_corpus, load_corpus_images
from dft.world.reader import read_images


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus"))
    cfg = CorpusConfig(size=800, shard_size=300, seed=3)
    counts = build_corpus(cfg, out)
    return cfg, out, counts


def test_schema_shards_and_idempotence(corpus):
    cfg, out, counts = corpus
    files = sorted(Path(out, "parquet").glob("shard-*.parquet"))
    assert len(files) == 3 and len(list(Path(out, "webdataset").glob("shard-*.tar"))) == 3
    assert pq.read_schema(files[0]).equals(SAMPLE_SCHEMA, check_metadata=False)
    imgs, meta = load_corpus_images(out)
    assert imgs.shape == (800, 32, 32, 3)
    assert len(set(meta.column("key").to_pylist())) == 800
    mtime = files[0].stat().st_mtime_ns
    assert build_corpus(cfg, out) == counts  # second build: a no-op
    assert files[0].stat().st_mtime_ns == mtime


def test_explicit_captions_name_what_is_drawn(corpus):
    cfg, out, _ = corpus
    imgs, meta = load_corpus_images(out)
    truth = pq.read_table(f"{out}/truth.parquet").to_pydict()
    rows = meta.to_pylist()
    readings = read_images(imgs, skin_tone_fn())
    for row, r, eth, gender, prof, explicit in zip(
        rows, readings, truth["ethnicity"], truth["gender"], truth["profession"], truth["explicit"]
    ):
        assert (r.ethnicity, r.gender, r.profession) == (eth, gender, prof)
        if explicit:
            assert row["prompt_set"] == "diverse"
            assert (row["ethnicity"], row["gender"], row["profession"]) == (eth, gender, prof)
            assert eth in row["prompt"] and f" {gender} " in f" {row['prompt'].replace(',', ' ')} " and prof in row["prompt"]
        else:
            assert row["prompt_set"] == "neutral" and row["ethnicity"] is None and row["gender"] is None
            # one of the neutral phrasings; neutral_prompt is the fine-tuning's neutral caption, the first one
            phrased = {render(t, {"profession": prof}): t for t in cfg.neutral_templates}
            assert row["prompt"] in phrased and row["template"] == phrased[row["prompt"]], row["prompt"]
            assert row["neutral_prompt"] == render(cfg.neutral_templates[0], {"profession": prof})


def test_neutral_rows_follow_the_configured_skew(corpus):
    cfg, out, counts = corpus
    truth = pq.read_table(f"{out}/truth.parquet").to_pydict()
    explicit = np.array(truth["explicit"])
    eth, gender, prof = (np.array(truth[k]) for k in ("ethnicity", "gender", "profession"))
    neutral = ~explicit
    assert abs(neutral.mean() - (1 - cfg.explicit_share)) < 0.01
    light = np.mean(eth[neutral] == "light-skinned")
    assert abs(light - cfg.light_share) < 0.06
    stereo = np.mean([g == cfg.stereotype[p] for g, p in zip(gender[neutral], prof[neutral])])
    assert abs(stereo - cfg.gender_share) < 0.06
    # explicit rows are balanced
    assert abs(np.mean(eth[explicit] == "light-skinned") - 1 / 3) < 0.07
    assert abs(np.mean(gender[explicit] == "man") - 0.5) < 0.07
    assert set(counts["neutral"]) == set(A.PROFESSIONS)


def test_every_neutral_phrasing_carries_the_same_skew(corpus):
    """The held-out phrasings are biased like the trained one, so a change on them is generalization."""
    cfg, out, counts = corpus
    imgs, meta = load_corpus_images(out)
    truth = pq.read_table(f"{out}/truth.parquet").to_pydict()
    template = np.array(meta.column("template").to_pylist())
    eth, gender, prof = (np.array(truth[k]) for k in ("ethnicity", "gender", "profession"))
    assert set(counts["neutral_phrasings"]) == set(cfg.neutral_templates) and len(cfg.neutral_templates) >= 3
    for t in cfg.neutral_templates:
        sel = template == t
        assert sel.sum() >= 0.8 * counts["neutral_phrasings"][t] > 0
        assert abs(np.mean(eth[sel] == "light-skinned") - cfg.light_share) < 0.1, t
        assert abs(np.mean([g == cfg.stereotype[p] for g, p in zip(gender[sel], prof[sel])]) - cfg.gender_share) < 0.1, t


def test_the_phrasings_do_not_move_the_pixels():
    """Phrasings come from a stream of their own: one phrasing or three, the same people are drawn."""
    from dft.world.corpus import plan_corpus

    one = plan_corpus(CorpusConfig(size=200, neutral_templates=("a photo of a {profession}",)))
    three = plan_corpus(CorpusConfig(size=200))
    assert one.people == three.people and list(one.seeds) == list(three.seeds)
    assert len({t for t, e in zip(three.templates, three.explicit) if not e}) == 3
    with pytest.raises(ValueError, match="neutral_templates"):
        CorpusConfig(neutral_templates=("a photo of a nurse",))


def test_the_training_stage_finds_the_shards(corpus):
    pytest.importorskip("dft.train.source")
    from dft.train.source import find_shards

    _, out, _ = corpus
    assert len(find_shards(out, "parquet")) == 3 and len(find_shards(out, "webdataset")) == 3


def test_webdataset_matches_parquet(corpus):
    from dft.generate.shards import iter_webdataset

    _, out, _ = corpus
    keys = [s["__key__"] for s in iter_webdataset(str(Path(out, "webdataset", "shard-00000.tar")))]
    first = pq.read_table(Path(out, "parquet", "shard-00000.parquet")).column("key").to_pylist()
    assert len(keys) == len(first) and set(keys) == set(first)


def test_bad_config_refused():
    with pytest.raises(ValueError, match="shares"):
        CorpusConfig(light_share=1.5)
    with pytest.raises(ValueError, match="stereotype"):
        CorpusConfig(stereotype={"doctor": "man"})
