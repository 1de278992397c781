"""Provenance: versions, device and commit, with or without a git checkout."""

import subprocess

from moelab import provenance


def test_outside_a_git_checkout_the_commit_is_none(monkeypatch):
    def no_git(*args, **kwargs):
        raise OSError("git: not found")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance.git_commit() is None
    env = provenance.environment("cpu")
    assert env["git_commit"] is None and env["versions"]["torch"] and env["device"].startswith("cpu (")


def test_a_remote_device_is_named_as_given():
    assert provenance.device_name("remote server") == "remote server"
    assert provenance.cpu_model() and provenance.cpu_model() in provenance.device_name("cpu")
