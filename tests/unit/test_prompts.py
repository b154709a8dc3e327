import pyarrow.parquet as pq
import pytest

from dft.config.load import load_config
from dft.prompts.config import PromptsConfig
from dft.prompts.table import PromptTable, neutral_table, prompt_id, render, write_table
from dft.prompts.vocab import load_vocabulary
from dft.schema import PROMPT_SCHEMA


def test_shipped_vocabulary_sizes():
    v = load_vocabulary("default")
    assert len(v.values["profession"]) >= 150
    assert len(v.values["ethnicity"]) >= 40
    assert len(v.values["age"]) >= 3
    assert {"man", "woman"} <= set(v.values["gender"])
    assert len(v.templates) >= 3


def test_counts_are_the_product():
    cfg = PromptsConfig(
        include={"profession": ["doctor", "nurse"], "ethnicity": ["Black", "White", "Korean"]}, images_per_prompt=3
    )
    t = PromptTable(cfg)
    n_gender, n_age = len(t.values["gender"]), len(t.values["age"])
    assert len(t.combos) == 2 * 3 * n_gender * n_age
    rows = sum(b.num_rows for b in t.batches())
    assert rows == t.num_rows == len(t.combos) * 3
    counts = t.counts()
    assert counts["profession"] == {"doctor": rows // 2, "nurse": rows // 2}


def test_template_policy_all_multiplies():
    base = dict(include={"profession": ["doctor"], "ethnicity": ["Black"]}, images_per_prompt=1)
    one = PromptTable(PromptsConfig(**base))
    everything = PromptTable(PromptsConfig(**base, template_policy="all"))
    assert len(everything.combos) == len(one.combos) * len(one.vocab.templates)


def test_ids_stable_across_runs_and_row_order():
    cfg = PromptsConfig(include={"profession": ["doctor", "judge"]}, images_per_prompt=2)
    a = {(r["prompt_id"], r["image_index"]): r["seed"] for b in PromptTable(cfg).batches() for r in b.to_pylist()}
    b = {(r["prompt_id"], r["image_index"]): r["seed"] for b in PromptTable(cfg).batches() for r in b.to_pylist()}
    assert a == b
    # The id is a hash of the fields, not a position: the same fields in any order give the same id.
    fields = {"ethnicity": "Black", "gender": "woman", "age": "young", "profession": "doctor", "template": "t"}
    assert prompt_id(fields) == prompt_id(dict(reversed(list(fields.items()))))
    # Filtering other rows out does not change the ids of the rows that stay.
    narrow = PromptsConfig(include={"profession": ["judge"]}, images_per_prompt=2)
    c = {(r["prompt_id"], r["image_index"]): r["seed"] for b in PromptTable(narrow).batches() for r in b.to_pylist()}
    assert c.items() <= a.items() and len(c) == len(a) // 2


def test_seeds_unique_and_salted():
    cfg = PromptsConfig(include={"profession": ["doctor", "nurse", "pilot"]}, images_per_prompt=20)
    seeds = [s for b in PromptTable(cfg).batches() for s in b.column("seed").to_pylist()]
    assert len(seeds) == len(set(seeds))
    assert all(0 <= s < 2**63 for s in seeds)
    other = PromptsConfig(include={"profession": ["doctor", "nurse", "pilot"]}, images_per_prompt=20, seed=1)
    seeds2 = [s for b in PromptTable(other).batches() for s in b.column("seed").to_pylist()]
    assert not set(seeds) & set(seeds2)


def test_subsampling_is_deterministic_and_nested():
    full = PromptTable(PromptsConfig(images_per_prompt=1, include={"profession": ["doctor", "nurse", "pilot", "chef"]}))
    four = {"profession": ["doctor", "nurse", "pilot", "chef"]}
    half = PromptTable(PromptsConfig(images_per_prompt=1, sample_fraction=0.5, include=four))
    again = PromptTable(PromptsConfig(images_per_prompt=1, sample_fraction=0.5, include=four))
    assert [c[0] for c in half.combos] == [c[0] for c in again.combos]
    assert {c[0] for c in half.combos} < {c[0] for c in full.combos}
    assert 0.35 < len(half.combos) / len(full.combos) < 0.65
    capped = PromptTable(PromptsConfig(images_per_prompt=1, max_combinations=10))
    assert len(capped.combos) == 10


def test_unknown_include_value_is_named():
    with pytest.raises(ValueError, match=r"prompts.include.profession: 'astronut'"):
        PromptTable(PromptsConfig(include={"profession": ["astronut"]}))


def test_render_fixes_articles():
    assert render("a photo of a {age} {profession}", {"age": "elderly", "profession": "x"}) == "a photo of an elderly x"
    assert render("a {x}", {"x": "young"}) == "a young"


def test_written_table_has_declared_schema(tmp_path):
    cfg = PromptsConfig(include={"profession": ["doctor"]}, images_per_prompt=2, chunk_rows=50)
    t = PromptTable(cfg)
    files = write_table(t.batches(), str(tmp_path / "diverse"), rows_per_file=100)
    assert len(files) >= 2
    table = pq.read_table(str(tmp_path / "diverse"))
    assert table.schema.equals(PROMPT_SCHEMA, check_metadata=False)
    assert table.num_rows == t.num_rows
    assert not list(tmp_path.glob("**/*.tmp-*"))


def test_neutral_table():
    cfg = PromptsConfig(include={"profession": ["doctor", "nurse"]}, neutral_images_per_prompt=5)
    t = neutral_table(cfg)
    prompts = set(t.column("prompt").to_pylist())
    assert {"a photo of a doctor", "a photo of a nurse", "a photo of a person", "a photo of the face of a person"} == prompts
    assert t.num_rows == 4 * 5
    assert len(set(t.column("seed").to_pylist())) == t.num_rows
    shifted = neutral_table(cfg, seed_offset=1)
    assert not set(t.column("seed").to_pylist()) & set(shifted.column("seed").to_pylist())


def test_run_prompts_stage_markers(tmp_path):
    from dft.prompts.stage import run_prompts
    from dft.runs import Run, StageConfigChanged

    run_uri = str(tmp_path / "run")
    cfg = load_config(None, [f"run.uri={run_uri}", "prompts.include={profession: [doctor]}", "prompts.images_per_prompt=1"])
    counts = run_prompts(cfg)
    marker = Run(run_uri).marker("prompts")
    assert marker["counts"]["rows"] == counts["rows"] > 0
    part = tmp_path / "run" / "prompts" / "diverse" / "part-00000.parquet"
    mtime = part.stat().st_mtime_ns
    assert run_prompts(cfg) == counts  # second run: no-op
    assert part.stat().st_mtime_ns == mtime
    changed = load_config(None, [f"run.uri={run_uri}", "prompts.include={profession: [doctor]}", "prompts.images_per_prompt=2"])
    with pytest.raises(StageConfigChanged, match=r"images_per_prompt: 1 -> 2"):
        run_prompts(changed)
    again = run_prompts(changed, force=True)
    assert again["rows"] == 2 * counts["rows"]


def test_targets_weight_the_rows_so_each_attributes_shares_follow_them():
    targets = {"gender": {"man": 0.5, "woman": 0.5}, "age": {"young": 0.75, "elderly": 0.25},
               "ethnicity": {"Black": 0.5, "White": 0.3, "Korean": 0.2}}
    cfg = PromptsConfig(include={"profession": ["doctor", "nurse", "judge"], "ethnicity": ["Black", "White", "Korean"]},
                        images_per_prompt=8, targets=targets)
    t = PromptTable(cfg)
    plain = PromptTable(cfg.model_copy(update={"targets": {}}))
    assert t.num_rows == plain.num_rows  # the same number of images, shared out differently
    rows = [r for b in t.batches() for r in b.to_pylist()]
    assert len(rows) == t.num_rows
    from collections import Counter

    for attr, shares in targets.items():
        seen = Counter(r[attr] for r in rows)
        for value in t.values[attr]:
            assert seen[value] / len(rows) == pytest.approx(shares.get(value, 0.0), abs=0.01), (attr, value)
    assert Counter(r["profession"] for r in rows) == plain.counts()["profession"]  # untargeted: unchanged
    assert t.counts()["age"] == Counter(r["age"] for r in rows)
    # image indexes stay 0..n-1 per combination, and ids and seeds are those of the plain table
    by_id = {}
    for r in rows:
        by_id.setdefault(r["prompt_id"], []).append(r["image_index"])
    assert all(sorted(v) == list(range(len(v))) for v in by_id.values())
    assert [r["seed"] for r in rows if r["image_index"] == 0][:5] == [
        r["seed"]
        for r in (x for b in plain.batches() for x in b.to_pylist())
        if r["image_index"] == 0 and r["prompt_id"] in by_id
    ][:5]


def test_targets_are_checked():
    with pytest.raises(ValueError, match="prompts.targets.age: shares must sum to 1"):
        PromptsConfig(targets={"age": {"young": 0.5}})
    with pytest.raises(ValueError, match="prompts.targets.age.young: a share must be >= 0"):
        PromptsConfig(targets={"age": {"young": -0.5, "elderly": 1.5}})
    with pytest.raises(ValueError, match="teenage"):
        PromptTable(PromptsConfig(include={"profession": ["doctor"]}, targets={"age": {"teenage": 1.0}}))
