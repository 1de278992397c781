"""The command line: a run from a config file, and one-line errors with exit status 2."""

import json

import pytest
from typer.testing import CliRunner

from moelab.cli import app
from moelab.config import save_config
from moelab.probe.metrics import level_order
from tests.conftest import small_config

runner = CliRunner()


def test_train_from_a_config_file(tmp_path):
    cfg = small_config()
    cfg.train.exposures = 2
    save_config(cfg, tmp_path / "run.toml")
    result = runner.invoke(app, ["train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out"),
                                 "--seed", "7"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["seed"] == 7 and "bits / param" in result.output

    again = runner.invoke(app, ["train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "out")])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_config_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "bad.toml").write_text("[model.moe]\nn_experts = 2\ntop_k = 3\n")
    result = runner.invoke(app, ["train", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.moe.top_k" in lines[0] and "Traceback" not in result.output


def test_unknown_preset_and_preset_list():
    assert runner.invoke(app, ["train", "--preset", "nope"]).exit_code == 2
    listed = runner.invoke(app, ["train", "--list-presets"])
    assert "tiny-dense" in listed.output and "tiny-moe" in listed.output


def test_probe_a_lab_run_on_its_knowledge_base(trained_run, tmp_path):
    _, run_dir, metrics = trained_run
    out, survey_csv = tmp_path / "probe", tmp_path / "survey.csv"
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", f"kb:{run_dir}", "--out", str(out),
                                 "--context-lengths", "0,30", "--depths", "0,1", "--survey-row", str(survey_csv),
                                 "--developer", "moelab", "--save-task", str(tmp_path / "task.jsonl")])
    assert result.exit_code == 0, result.output
    probed = json.loads((out / "metrics.json").read_text())
    for key in ("n", "correct", "incorrect", "partial", "not_attempted", "accuracy", "omniscience_index",
                "hallucination_rate", "f_score", "output_tokens_per_question"):
        assert key in probed
    assert abs(probed["answerable"]["accuracy"] - metrics["accuracy"]) < 1e-6
    assert (out / "report.html").exists() and (out / "context_rot.png").exists()
    assert "Omniscience Index" in result.output and "moelab-probe" in survey_csv.read_text()

    # The saved task, probed from the file, gives the same closed-book grades.
    again = runner.invoke(app, ["probe", f"lab:{run_dir}", str(tmp_path / "task.jsonl"), "--out", str(tmp_path / "p2")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "p2" / "metrics.json").read_text())["correct"] == probed["correct"]


def test_probe_composed_questions_and_selective_context(trained_run, tmp_path):
    _, run_dir, _ = trained_run
    out = tmp_path / "probe"
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", f"kb:{run_dir}", "--out", str(out), "--people", "20",
                                 "--compose", "5", "--context-lengths", "0,40", "--depths", "0.5", "--retrieve", "1",
                                 "--save-task", str(tmp_path / "task.jsonl")])
    assert result.exit_code == 0, result.output
    assert "effort and accuracy by difficulty" in result.output and "selective context" in result.output
    probed = json.loads((out / "metrics.json").read_text())
    assert sorted(probed["by_difficulty"], key=level_order) == ["easy", "medium", "hard"]  # JSON sorts keys as text
    assert probed["settings"]["composed"] == "parts"
    assert probed["selective_context"][0]["context_words"] == 40
    assert sum('"rule": "smallest"' in line for line in (tmp_path / "task.jsonl").read_text().splitlines()) == 10
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", f"kb:{run_dir}", "--answer-composed", "both"])
    assert result.exit_code == 2 and "--answer-composed" in result.output
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", str(tmp_path / "task.jsonl"), "--compose", "2"])
    assert result.exit_code == 2 and "kb:RUN_DIR" in result.output


def test_probe_reports_bad_task_lines_and_bad_models(trained_run, tmp_path):
    _, run_dir, _ = trained_run
    (tmp_path / "t.jsonl").write_text('{"id": "a", "question": "q", "answer": "x"}\n{"id": "b"}\n')
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 2 and "line 2:" in result.output and "Traceback" not in result.output
    (tmp_path / "good.jsonl").write_text('{"id": "a", "question": "q", "answer": "x"}\n')
    result = runner.invoke(app, ["probe", "gpt:foo", str(tmp_path / "good.jsonl")])
    assert result.exit_code == 2 and "lab:RUN_DIR" in result.output
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", f"kb:{run_dir}", "--depths", "2"])
    assert result.exit_code == 2 and "--depths" in result.output


def test_user_text_is_printed_literally_not_as_rich_markup(tmp_path):
    (tmp_path / "[x].toml").write_text('[set]\n"train.exposure" = 3\n')
    result = runner.invoke(app, ["sweep", str(tmp_path / "[x].toml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "[x].toml" in result.output and "[set]" in result.output and "'train.exposure'" in result.output
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[" / "]b.toml").write_text("[model\n")  # the path reads a[/]b.toml
    result = runner.invoke(app, ["train", str(tmp_path / "a[/]b.toml")])
    assert result.exit_code == 2 and "a[/]b.toml" in result.output and "MarkupError" not in result.output


def test_python_dash_m_moelab_lists_every_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "moelab", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "sweep", "report", "survey", "design", "export", "probe", "quantize", "identities"):
        assert command in out, command


def _damaged_copy(run_dir, tmp_path, damage):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 3], "random": bytes(range(256)) * 8, "empty": b""}[damage])
    return copy



@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
@pytest.mark.parametrize("command", ["probe", "export", "quantize"])
def test_a_damaged_checkpoint_exits_2_naming_the_file(trained_run, tmp_path, damage, command):
    _, run_dir, _ = trained_run
    copy = _damaged_copy(run_dir, tmp_path, damage)
    args = {"probe": ["probe", f"lab:{copy}", f"kb:{copy}", "--out", str(tmp_path / "p")],
            "export": ["export", str(copy), "--hf", str(tmp_path / "hf")],
            "quantize": ["quantize", str(copy)]}[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output and str(copy / "model.safetensors") in " ".join(lines)
    assert "not a readable safetensors file" in result.output


def test_a_checkpoint_from_another_run_exits_2(tmp_path):
    from moelab.run import execute

    two, four = small_config(n_experts=2, top_k=1), small_config(n_experts=4, top_k=1)
    two.train.exposures = four.train.exposures = 1
    execute(two, tmp_path / "two")
    execute(four, tmp_path / "four")
    (tmp_path / "four" / "model.safetensors").write_bytes((tmp_path / "two" / "model.safetensors").read_bytes())
    result = runner.invoke(app, ["quantize", str(tmp_path / "four")])
    assert result.exit_code == 2 and "belongs to another run" in result.output and "size mismatch" not in result.output


def test_export_prints_no_transformers_progress_and_writes_usual_file_modes(tmp_path):
    pytest.importorskip("transformers")
    from moelab.run import execute

    cfg = small_config()
    cfg.model.qk_norm, cfg.train.exposures = True, 1
    execute(cfg, tmp_path / "run")
    result = runner.invoke(app, ["export", str(tmp_path / "run"), "--hf", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert "Writing" not in result.output and "shards" not in result.output
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] & 0o044, modes
