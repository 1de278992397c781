import pytest
from typer.testing import CliRunner

from moelab.cli import app
from moelab.errors import ConfigError
from moelab.sweeps import load_sweep

GOOD = """
name = "g"
base = "tiny-dense"
[set]
"train.exposures" = 2
[[grid]]
"model.moe.n_experts" = [2, 4]
"seed" = [0, 1]
[[grid.zip]]
"model.moe.top_k" = [1, 2]
"model.moe.renormalize" = [false, true]
[[grid]]
[grid.model]
d_ff = [104, 208]
"""


def write(tmp_path, text):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_grid_expands_products_zips_and_blocks(tmp_path):
    sweep = load_sweep(write(tmp_path, GOOD))
    assert len(sweep.runs) == 2 * 2 * 2 + 2
    moe = [r.config for r in sweep.runs if r.config.model.moe.n_experts]
    assert {(c.model.moe.top_k, c.model.moe.renormalize) for c in moe} == {(1, False), (2, True)}
    assert all(r.config.train.exposures == 2 for r in sweep.runs)
    assert len({r.key for r in sweep.runs}) == len(sweep.runs)
    assert sweep.runs[0].label == "E=2 k=1 w=104 seed=0 renormalize=False"
    assert sweep.runs[-1].label == "dense d_ff=208"


def test_blocks_that_differ_only_in_fixed_fields_get_distinct_labels(tmp_path):
    text = """base = "tiny-moe"
[[grid]]
"model.moe.aux_loss_weight" = [0.0]
"seed" = [0, 1]
[[grid]]
"model.moe.aux_loss_weight" = [0.0]
"model.moe.bias_update_rate" = [0.001]
"seed" = [0, 1]
"""
    labels = [r.label for r in load_sweep(write(tmp_path, text)).runs]
    assert labels == ["E=8 k=1 w=104 aux_loss_weight=0.0 seed=0", "E=8 k=1 w=104 aux_loss_weight=0.0 seed=1",
                      "E=8 k=1 w=104 aux_loss_weight=0.0 bias_update_rate=0.001 seed=0",
                      "E=8 k=1 w=104 aux_loss_weight=0.0 bias_update_rate=0.001 seed=1"]


def test_identical_runs_are_deduplicated_by_config_hash(tmp_path):
    text = 'base = "tiny-dense"\n[[grid]]\n"seed" = [0, 0, 1]\n'
    assert len(load_sweep(write(tmp_path, text)).runs) == 2


@pytest.mark.parametrize("text, message", [
    ('[[grid]]\n"model.width" = [1, 2]\n', "'model.width': unknown field"),
    ('[[grid]]\n"model.d_ff" = []\n', "'model.d_ff': empty list"),
    ('[[grid]]\n"model.d_ff" = [64, "wide"]\n', "model.d_ff: expected an integer"),
    ('[[grid]]\n"model.d_ff" = 64\n', "grid values must be a list"),
    ('[[grid]]\n[[grid.zip]]\n"model.d_model" = [32, 48]\n"model.d_ff" = [64]\n', "unequal lengths"),
    ('[set]\n"train.speed" = 3\n', "'train.speed': unknown field"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('base = "nothing"\n', "neither a run preset"),
    ('[[grid]]\n"model.moe.n_experts" = [2]\n"model.moe.top_k" = [3]\n', "model.moe.top_k"),
])
def test_malformed_sweep_files_name_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_sweep(path)
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["../outside", "a/b", "", ".hidden"])
def test_a_sweep_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    from moelab.errors import ConfigError
    from moelab.sweeps.grid import load_sweep

    spec = tmp_path / "s.toml"
    spec.write_text(f'name = "{name}"\nbase = "tiny-dense"\n')
    with pytest.raises(ConfigError, match="the sweep's name is also its default folder"):
        load_sweep(spec)
