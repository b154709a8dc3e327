"""The command line, in-process (no Ray)."""

import pyarrow.parquet as pq

from dft.cli.main import build_parser, main


def test_help_lists_every_stage(capsys):
    parser = build_parser()
    text = parser.format_help()
    for cmd in ("prompts", "generate", "curate", "train", "evaluate", "label", "fairness", "report", "run", "demo", "config"):
        assert cmd in text


def test_config_show_prints_effective_values(capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("generate:\n  steps: 3\n")
    assert main(["config", "show", "--config", str(f), "--set", "generate.batch_size=5"]) == 0
    out = capsys.readouterr().out
    assert "steps: 3" in out and "batch_size: 5" in out


def test_bad_config_exits_2_with_message(capsys):
    assert main(["config", "show", "--set", "generate.steps=0"]) == 2
    assert "generate.steps" in capsys.readouterr().err


def test_prompts_writes_table_to_out(tmp_path, capsys):
    out = tmp_path / "table"
    rc = main(["prompts", "--set", "prompts.include={profession: [doctor, nurse]}", "--set", "prompts.images_per_prompt=2",
               "--out", str(out)])
    assert rc == 0
    t = pq.read_table(str(out / "diverse"))
    assert set(t.column("profession").to_pylist()) == {"doctor", "nurse"}
    err = capsys.readouterr().err
    assert "prompt table" in err and "profession" in err


def test_prompts_changed_config_exits_nonzero(tmp_path, capsys):
    run = f"run.uri={tmp_path / 'r'}"
    assert main(["prompts", "--set", run, "--set", "prompts.max_combinations=5"]) == 0
    assert main(["prompts", "--set", run, "--set", "prompts.max_combinations=6"]) == 3  # as every stage
    assert "--force" in capsys.readouterr().err
    assert main(["prompts", "--set", run, "--set", "prompts.max_combinations=6", "--force"]) == 0


def test_a_failed_stage_is_one_line_and_exit_1_traceback_with_v(tmp_path, capsys):
    run = f"run.uri={tmp_path / 'r'}"
    assert main(["report", "--set", run]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("stage 'report' failed:") and "metrics.json does not exist" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert main(["report", "--set", run, "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
