"""Mid-run checkpoints: a run stopped anywhere and rerun ends bit-identical to one that never stopped."""

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import moelab.stopping
from moelab.checkpoint import RESUME_FILE, Checkpointer
from moelab.stopping import clear_stop, parse_duration, request_stop
from moelab.config import ContinualConfig, MemoryConfig, save_config
from moelab.errors import MoelabError, RunStopped
from moelab.run import execute
from tests.conftest import small_config


class Killed(Exception):
    """Stands in for SIGKILL: the process ends between two steps, mid-run."""


@pytest.fixture(autouse=True)
def no_stop_request():
    clear_stop()
    yield
    clear_stop()


def short(cfg, exposures=30, **train):
    """A quick version of `cfg` that writes a mid-run checkpoint every `every` steps (see checkpoint_every)."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, exposures=exposures, **train))


@pytest.fixture
def checkpoint_every(monkeypatch):
    """Make mid-run checkpoints due every `n` steps instead of every few minutes."""
    def every(n: int) -> None:
        counter = {"calls": 0}

        def due(self) -> bool:
            counter["calls"] += 1
            return moelab.stopping.stop_reason() is not None or counter["calls"] % n == 0
        monkeypatch.setattr(Checkpointer, "due", due)
    return every


def weights_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def killed_at(cfg, folder: Path, step: int) -> None:
    """Train `cfg` in `folder` and die at `step` (after that step's checkpoint, if one was due)."""
    def on_step(s, steps, loss):
        if s == step:
            raise Killed
    with pytest.raises(Killed):
        execute(cfg, folder, on_step=on_step)


def same_run(a: dict, b: dict) -> None:
    for key in ("bits", "accuracy", "final_loss", "history", "losses_nats", "bit_terms", "routing", "steps",
                "tokens_trained"):
        assert a[key] == b[key], key


CASES = {
    "dense": small_config(),
    "learned router with the bias rule": small_config(n_experts=4, top_k=1, expert_width=32, bias_update_rate=1e-3,
                                                      aux_loss_weight=0.01),
    "hash router": small_config(n_experts=4, top_k=1, expert_width=32, router="hash"),
    "pkm with SparseAdam": dataclasses.replace(small_config(), model=dataclasses.replace(
        small_config().model, memory=MemoryConfig(kind="pkm", n_keys=6, heads=2, top_k=4, key_dim=8))),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_run_killed_midway_resumes_bit_identical(name, tmp_path, checkpoint_every):
    cfg = short(CASES[name])
    whole = execute(cfg, tmp_path / "whole")
    checkpoint_every(7)
    killed_at(cfg, tmp_path / "cut", 40)  # last checkpoint at step 35: steps 36-40 are redone
    assert (tmp_path / "cut" / RESUME_FILE).exists()
    resumed = execute(cfg, tmp_path / "cut")
    same_run(whole, resumed)
    assert weights_hash(tmp_path / "whole") == weights_hash(tmp_path / "cut")
    assert resumed["resumed_at_steps"] == [35] and whole["resumed_at_steps"] == []
    assert [s["from_step"] for s in resumed["training_segments"]] == [0, 35]
    assert [s["from_step"] for s in whole["training_segments"]] == [0]
    assert not (tmp_path / "cut" / RESUME_FILE).exists()  # finished: the final checkpoint supersedes it


@pytest.mark.slow
def test_a_continued_run_killed_in_phase_b_resumes_bit_identical(tmp_path, checkpoint_every):
    cfg = short(small_config(n_experts=4, top_k=1, expert_width=32, bias_update_rate=1e-3))
    cfg = dataclasses.replace(cfg, continual=ContinualConfig(new_people=40, exposures=30, replay_fraction=0.1,
                                                             add_experts=2))
    whole = execute(cfg, tmp_path / "a" / "whole")
    checkpoint_every(5)
    killed_at(cfg, tmp_path / "b" / "cut", 12)  # the parent trains first (its own checkpoints), then phase B
    resumed = execute(cfg, tmp_path / "b" / "cut")
    same_run(whole, resumed)
    assert resumed["continual"]["bits_a_after"] == whole["continual"]["bits_a_after"]
    assert weights_hash(tmp_path / "a" / "whole") == weights_hash(tmp_path / "b" / "cut")


def test_every_segment_of_a_run_records_where_it_ran(tmp_path, checkpoint_every):
    from moelab.provenance import code_commit, device_name
    cfg = short(small_config(), exposures=10)
    checkpoint_every(5)
    killed_at(cfg, tmp_path / "run", 7)  # checkpoint at step 5
    killed_at(cfg, tmp_path / "run", 12)  # resumed at 5, a second checkpoint before step 12
    metrics = execute(cfg, tmp_path / "run")
    segments = metrics["training_segments"]
    here = {"device": device_name("cpu"), "git_commit": code_commit()}
    assert len(segments) == 3 and 5 < segments[2]["from_step"] <= 12
    assert [s["from_step"] for s in segments[1:]] == metrics["resumed_at_steps"] == [5, segments[2]["from_step"]]
    assert all({k: s[k] for k in here} == here for s in segments)


def test_a_checkpoint_from_before_segments_were_recorded_resumes_with_the_first_unknown(tmp_path, checkpoint_every):
    import safetensors
    import safetensors.torch
    cfg = short(small_config(), exposures=10)
    checkpoint_every(5)
    killed_at(cfg, tmp_path / "run", 7)
    path = tmp_path / "run" / RESUME_FILE
    with safetensors.safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["moelab"])
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    del meta["segments"]
    safetensors.torch.save_file(tensors, path, metadata={"moelab": json.dumps(meta)})
    resumed = execute(cfg, tmp_path / "run")
    assert resumed["resumed_at_steps"] == [5]
    assert [(s["from_step"], s["device"]) for s in resumed["training_segments"]][0] == (0, None)
    assert resumed["training_segments"][1]["from_step"] == 5 and resumed["training_segments"][1]["device"]


@pytest.mark.slow
def test_a_stop_request_checkpoints_and_raises(tmp_path):
    cfg = short(small_config(), checkpoint_minutes=0.0)  # no periodic checkpoints: only the stop writes one

    def on_step(step, steps, loss):
        if step == 10:
            request_stop("test")
    with pytest.raises(RunStopped, match=r"stopped \(test\) at step 10/"):
        execute(cfg, tmp_path / "run", on_step=on_step)
    assert (tmp_path / "run" / RESUME_FILE).exists() and not (tmp_path / "run" / "metrics.json").exists()
    clear_stop()
    resumed = execute(cfg, tmp_path / "run")
    assert resumed["resumed_at_steps"] == [10]
    same_run(execute(cfg, tmp_path / "whole"), resumed)


@pytest.mark.slow
def test_a_damaged_checkpoint_is_named_and_training_starts_from_zero(tmp_path, checkpoint_every, capsys):
    cfg = short(small_config())
    whole = execute(cfg, tmp_path / "whole")
    checkpoint_every(7)
    killed_at(cfg, tmp_path / "cut", 20)
    path = tmp_path / "cut" / RESUME_FILE
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF  # one flipped bit in a tensor
    path.write_bytes(bytes(data))
    resumed = execute(cfg, tmp_path / "cut")
    assert "resume.safetensors: damaged" in capsys.readouterr().err
    assert (tmp_path / "cut" / (RESUME_FILE + ".damaged")).exists()
    assert resumed["resumed_at_steps"] == []
    same_run(whole, resumed)
    # a truncated file too
    killed_at(cfg, tmp_path / "cut2", 20)
    path = tmp_path / "cut2" / RESUME_FILE
    path.write_bytes(path.read_bytes()[:1000])
    assert execute(cfg, tmp_path / "cut2")["resumed_at_steps"] == []


@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path, checkpoint_every):
    cfg = short(small_config())
    checkpoint_every(7)
    killed_at(cfg, tmp_path / "run", 20)
    other = dataclasses.replace(cfg, seed=1)
    (tmp_path / "run" / "config.toml").unlink()
    assert execute(other, tmp_path / "run")["resumed_at_steps"] == []


def test_checkpoint_minutes_is_not_in_the_run_key():
    from moelab.config import run_key
    cfg = small_config()
    assert run_key(cfg) == run_key(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, checkpoint_minutes=1)))


@pytest.mark.parametrize("text,seconds", [("2h30m", 9000), ("90m", 5400), ("45s", 45), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "5x", "0m", "m5"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(MoelabError, match="--stop-after"):
        parse_duration(text)


@pytest.mark.slow
def test_sigkill_of_moelab_train_then_rerun_is_bit_identical(tmp_path):
    """A real SIGKILL at an arbitrary moment of `moelab train`, then the same command again."""
    cfg = short(small_config(n_experts=4, top_k=1, expert_width=32), exposures=60, checkpoint_minutes=0.002)
    save_config(cfg, tmp_path / "run.toml")
    whole = execute(cfg, tmp_path / "whole")
    command = [sys.executable, "-m", "moelab", "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "cut")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "cut" / RESUME_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "cut" / RESUME_FILE).exists()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["resumed_at_steps"] and 0 < resumed["resumed_at_steps"][0] < resumed["steps"]
    same_run(whole, resumed)
    assert weights_hash(tmp_path / "whole") == weights_hash(tmp_path / "cut")


@pytest.mark.slow
def test_sigterm_to_moelab_train_checkpoints_and_names_the_resume_command(tmp_path):
    cfg = short(small_config(), exposures=200, checkpoint_minutes=0.0)
    save_config(cfg, tmp_path / "run.toml")
    command = [sys.executable, "-m", "moelab", "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=os.environ | {"COLUMNS": "200"})
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "config.toml").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert (tmp_path / "run" / RESUME_FILE).exists()
    assert "moelab train" in err and "--out" in err and str(tmp_path / "run") in err.replace("\n", "")
