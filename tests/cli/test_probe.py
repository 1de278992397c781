"""`moelab probe` refuses bad options and paths before it asks a single question."""

import pytest
from typer.testing import CliRunner

from moelab.cli import app

runner = CliRunner()


@pytest.mark.parametrize("extra, message", [
    (["--invented", "-1"], "--invented -1: must be at least 0"),
    (["--people", "0"], "--people 0: must be at least 1"),
    (["--concurrency", "0"], "--concurrency 0: must be at least 1"),
    (["--timeout", "0"], "--timeout 0.0"),
    (["--device", "cuda:7"], "--device = 'cuda:7'"),
])
def test_out_of_range_options_exit_2_naming_the_option(trained_run, tmp_path, extra, message):
    _, run_dir, _ = trained_run
    if extra[0] == "--device":
        pytest.importorskip("torch")
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["probe", f"lab:{run_dir}", f"kb:{run_dir}", "--out", str(tmp_path / "p"), *extra])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "p").exists()


def test_paths_of_the_wrong_kind_and_binary_files_are_named(trained_run, tmp_path):
    _, run_dir, _ = trained_run
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "binary.jsonl").write_bytes(bytes(range(128, 256)))
    (tmp_path / "binary.csv").write_bytes(bytes(range(128, 256)))
    base = ["probe", f"lab:{run_dir}", f"kb:{run_dir}"]
    for args, message in (
            (base + ["--out", str(tmp_path / "file")], "a file, not a folder"),
            (base + ["--save-task", str(tmp_path / "folder")], "--save-task"),
            (base + ["--survey-row", str(tmp_path / "binary.csv")], "not a text file"),
            (["probe", f"lab:{run_dir}", str(tmp_path / "binary.jsonl")], "not a text file"),
            (["survey", str(tmp_path / "binary.csv")], "not a text file"),
            (["survey", "--html", str(tmp_path / "file")], "--html"),
            (["export", str(run_dir), "--hf", str(tmp_path / "file")], "--hf")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output
