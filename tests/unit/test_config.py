import pytest

from dft.config.load import ConfigError, load_config, parse_overrides


def test_defaults_validate():
    cfg = load_config()
    assert cfg.model.source == "tiny-sd"
    assert cfg.generate.steps >= 1


def test_yaml_then_overrides_in_order(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text("generate:\n  steps: 3\n  batch_size: 4\nmodel:\n  source: tiny-sdxl\n")
    b = tmp_path / "b.yaml"
    b.write_text("generate:\n  steps: 5\n")
    cfg = load_config([a, b], ["generate.batch_size=16", "prompts.include={gender: [woman]}"])
    assert cfg.generate.steps == 5  # later file wins
    assert cfg.generate.batch_size == 16  # override wins over files
    assert cfg.model.source == "tiny-sdxl"  # untouched keys survive merging
    assert cfg.prompts.include == {"gender": ["woman"]}


def test_unknown_key_names_field_and_value(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("generate:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "generate.stepz" in msg and "unknown key" in msg and "3" in msg and str(f) in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"genrate: unknown key"):
        load_config(None, ["genrate.steps=3"])


def test_bad_value_names_rule_and_value():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["generate.steps=-2"])
    msg = str(e.value)
    assert "generate.steps" in msg and "greater than or equal to 1" in msg and "-2" in msg


def test_bad_type():
    with pytest.raises(ConfigError, match=r"generate.image_format: .*'png'.*got 'gif'"):
        load_config(None, ["generate.image_format=gif"])


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("generate.steps", "expected section.key=value"),
        ("steps=3", "must be section.key"),
        ("generate..x=1", "must be section.key"),
    ],
)
def test_bad_override_syntax(item, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_overrides([item])


def test_override_values_are_yaml_scalars():
    assert parse_overrides(["a.b=3", "a.c=true", "a.d=x y", "a.e=[1, 2]"]) == {"a": {"b": 3, "c": True, "d": "x y", "e": [1, 2]}}


def test_cross_field_rule():
    with pytest.raises(ConfigError, match="max_actors"):
        load_config(None, ["generate.num_actors=3", "generate.max_actors=2"])


def test_include_exclude_overlap():
    with pytest.raises(ConfigError, match="both name"):
        load_config(None, ["prompts.include={gender: [man]}", "prompts.exclude={gender: [man]}"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_section_hash_changes_with_section_only():
    a = load_config()
    b = load_config(None, ["generate.steps=7"])
    assert a.section_hash("prompts") == b.section_hash("prompts")
    assert a.section_hash("generate") != b.section_hash("generate")


def test_shipped_configs_validate(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("DFT_BUCKET", "my-runs")
    root = Path(__file__).resolve().parents[2]
    files = list((root / "jobs" / "configs").glob("*.yaml")) + list((root / "dft" / "configs").glob("*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_env_reference_takes_the_bucket_from_one_place(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  uri: s3://${DFT_BUCKET}/runs/r\nmodel:\n  source: s3://${DFT_BUCKET}/models/m\n")
    monkeypatch.setenv("DFT_BUCKET", "b1")
    cfg = load_config(f)
    assert (cfg.run.uri, cfg.model.source) == ("s3://b1/runs/r", "s3://b1/models/m")
    # --set still wins over the file.
    assert load_config(f, ["model.source=tiny-sd"]).model.source == "tiny-sd"


def test_env_reference_unset_names_every_field(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  uri: s3://${DFT_BUCKET}/runs/r\nevaluate:\n  readers:\n    - {kind: clip, model: 's3://${DFT_BUCKET}/m'}\n")
    monkeypatch.delenv("DFT_BUCKET", raising=False)
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "run.uri: needs the environment variable DFT_BUCKET" in msg
    assert "evaluate.readers.0.model" in msg and "s3://${DFT_BUCKET}/m" in msg
    monkeypatch.setenv("DFT_BUCKET", "")
    with pytest.raises(ConfigError, match="unset or empty"):
        load_config(f)
