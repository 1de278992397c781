"""Durable writes: the file and its folder are fsynced around the rename; JSON is strict."""

import json
import os
import sys

import pytest

from moelab import io


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names file descriptors through /proc")
def test_a_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    io.atomic_write_json(tmp_path / "m.json", {"bits": 1.0})
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / ".m.json.")) and events[2][1] == str(tmp_path)
    assert json.loads((tmp_path / "m.json").read_text()) == {"bits": 1.0}
    events.clear()
    io.atomic_write_json(tmp_path / "progress.json", {"step": 1}, durable=False)
    assert [kind for kind, _ in events] == ["replace"]


def test_json_is_strict_nan_becomes_null():
    assert io.dumps({"a": float("nan"), "b": [float("inf"), 1.0]}, indent=None) == '{"a": null, "b": [null, 1.0]}'


def test_toml_dumps_round_trips_every_preset_and_awkward_strings():
    import tomllib

    from moelab.config import ContinualConfig, load_preset, preset_names, to_dict
    from moelab.io import toml_dumps

    for name in preset_names():
        data = to_dict(load_preset(name))
        assert tomllib.loads(toml_dumps(data)) == data, name
    cfg = load_preset("tiny-moe")
    cfg.name = 'quote " backslash \\ newline \n tab \t unicode é ✓'
    cfg.continual = ContinualConfig(new_people=10, trainable=["experts", "routers"])
    data = to_dict(cfg)
    assert tomllib.loads(toml_dumps(data)) == data


def test_toml_dumps_refuses_what_toml_cannot_hold():
    import pytest

    from moelab.io import toml_dumps

    with pytest.raises(ValueError, match="train.lr = nan"):
        toml_dumps({"train": {"lr": float("nan")}})


def test_toml_dumps_leaves_out_none():
    import tomllib

    from moelab.io import toml_dumps

    assert tomllib.loads(toml_dumps({"a": 1, "b": None, "t": {"c": None, "d": "x"}})) == {"a": 1, "t": {"d": "x"}}
