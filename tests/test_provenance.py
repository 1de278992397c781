"""Provenance: versions, device and commit, with or without a git checkout."""

import json
import subprocess

import pytest

from moelab import provenance


@pytest.fixture
def fresh_code_commit():
    """code_commit() asked anew, and the process's own answer restored afterwards."""
    provenance.code_commit.cache_clear()
    yield
    provenance.code_commit.cache_clear()


def test_outside_a_git_checkout_the_commit_is_none(monkeypatch, fresh_code_commit):
    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance.git_commit() is None
    env = provenance.environment("cpu")
    assert env["git_commit"] is None and env["versions"]["torch"] and env["device"].startswith("cpu (")


def test_a_process_records_the_commit_of_the_code_it_imported(monkeypatch, fresh_code_commit):
    monkeypatch.setattr(provenance, "git_commit", lambda: "a1")
    assert provenance.environment("cpu")["git_commit"] == "a1"
    monkeypatch.setattr(provenance, "git_commit", lambda: "b2")  # a commit lands while the process runs
    assert provenance.environment("cpu")["git_commit"] == "a1"


def test_a_remote_device_is_named_as_given():
    assert provenance.device_name("remote server") == "remote server"
    assert provenance.cpu_model() and provenance.cpu_model() in provenance.device_name("cpu")


def test_the_cpu_is_named_with_its_widest_instruction_set():
    assert provenance.cpu_isa({"sse2", "avx", "avx2", "avx512f", "amx_tile"}) == "AMX"
    assert provenance.cpu_isa({"avx", "avx2", "fma"}) == "AVX2"
    assert provenance.cpu_isa({"sse2"}) is None


def test_an_installed_copy_reports_the_commit_it_was_built_from(tmp_path, monkeypatch):
    import json

    import moelab
    from moelab.provenance import git_commit

    installed = tmp_path / "site-packages" / "moelab"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    monkeypatch.setattr(moelab, "__file__", str(installed / "__init__.py"))
    assert git_commit() is None  # no git around it, nothing recorded
    (installed / "_build.json").write_text(json.dumps({"git_commit": "abc123"}))
    assert git_commit() == "abc123"


@pytest.mark.slow
def test_a_built_wheel_records_the_commit(tmp_path):
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git clone")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True, cwd=root)
    wheel = zipfile.ZipFile(next(tmp_path.glob("moelab-*.whl")))
    assert json.loads(wheel.read("moelab/_build.json"))["git_commit"].startswith(head.stdout.strip())
