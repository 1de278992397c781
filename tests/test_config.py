"""Config loading and validation: every error names its field and the fix."""

import dataclasses

import pytest

from moelab.config import (IF_SET, RunConfig, from_dict, load_config, load_preset, preset_names, require, resolve,
                           run_key, save_config)
from moelab.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, field", [
    ("[model]\nwidth = 3\n", "model.width: unknown field"),
    ("[model.moe]\nn_experts = 2\ntop_k = 4\n", "model.moe.top_k"),
    ("[model]\nd_model = 30\nn_heads = 4\n", "model.d_model = 30 is not divisible by model.n_heads"),
    ("[model]\nd_ff = -5\n", "model.d_ff = -5"),
    ("[data]\nn_people = -1\n", "data.n_people = -1"),
    ("[data]\njunk_fraction = 1.0\n", "data.junk_fraction = 1.0: must be in"),
    ("[data]\nkind = \"bios\"\ndomain_token = true\n", "implemented for bioD only"),
    ("[train]\nlr = \"fast\"\n", "train.lr: expected a number"),
    ("[train]\nexposures = 1.5\n", "train.exposures: expected an integer"),
    ("[model]\ntie_embeddings = 1\n", "model.tie_embeddings: expected bool"),
    ("[data]\nkind = \"wiki\"\n", "data.kind"),
    ("[model.moe]\nn_experts = 4\nfirst_dense_layers = 2\n", "model.moe.first_dense_layers"),
    ("seed = 0\nmodel = 3\n", "model: expected a table"),
])
def test_invalid_configs_name_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as err:
        load_config(write(tmp_path, text))
    assert str(err.value).startswith(str(tmp_path / "run.toml"))


def test_broken_toml_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[model\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")


def test_round_trip_through_toml(tmp_path):
    cfg = load_preset("tiny-moe")
    save_config(cfg, tmp_path / "c.toml")
    assert load_config(tmp_path / "c.toml") == cfg


def test_expert_width_zero_resolves_to_d_ff():
    cfg = resolve(from_dict(RunConfig, {"model": {"d_ff": 64, "moe": {"n_experts": 4}}}))
    assert cfg.model.moe.expert_width == 64


def test_presets_load_and_unknown_preset_lists_the_known_ones():
    assert {"tiny-dense", "tiny-moe"} <= set(preset_names())
    dense, moe = load_preset("tiny-dense"), load_preset("tiny-moe")
    assert dense.data == moe.data and dense.train == moe.train  # the same experiment but the FFN
    with pytest.raises(ConfigError, match="tiny-dense"):
        load_preset("nope")


def test_run_key_membership_is_the_fields_own_metadata():
    """A field says itself how it enters a run key; a new field needs no list elsewhere."""
    from moelab.config import IF_SET, NEVER, KEY_FIELDS_IF_SET, NOT_IN_RUN_KEY, RUN_KEY_FIELDS, field_types, key_membership

    assert set(key_membership()) == set(field_types())  # every field is classified, once
    assert "train.checkpoint_minutes" in NOT_IN_RUN_KEY and "model.moe.gate" in KEY_FIELDS_IF_SET
    assert "model.moe.router" in RUN_KEY_FIELDS

    @dataclasses.dataclass
    class Extended:
        kept: int = 1
        optional: float = dataclasses.field(default=0.0, metadata=IF_SET)
        where: str = dataclasses.field(default="here", metadata=NEVER)

    assert key_membership(Extended) == {"kept": "always", "optional": "if_set", "where": "never"}


def test_docs_config_md_is_generated_from_the_dataclasses():
    from pathlib import Path

    from moelab.config.reference import markdown

    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert docs.read_text() == markdown(), "regenerate it: python -m moelab.config.reference > docs/config.md"


@dataclasses.dataclass
class WithTemperature(RunConfig):
    """A config with one field added in one place: its dataclass, its key membership, its check."""

    temperature: float = dataclasses.field(default=1.0, metadata=IF_SET)  # a sampling temperature, for this test

    def validate(self) -> None:
        super().validate()
        require(self.temperature > 0, f"temperature = {self.temperature}: must be positive")


def test_a_field_added_in_one_place_reaches_validation_the_run_key_and_the_reference():
    from moelab.config.reference import markdown

    assert from_dict(WithTemperature, {"temperature": 0.5}).temperature == 0.5
    with pytest.raises(ConfigError, match="temperature: expected a number"):
        from_dict(WithTemperature, {"temperature": "hot"})
    with pytest.raises(ConfigError, match="temperature = -1.0: must be positive"):
        resolve(WithTemperature(temperature=-1.0))
    assert run_key(WithTemperature()) == run_key(RunConfig())  # at its default, earlier runs keep their keys
    assert run_key(WithTemperature(temperature=0.5)) != run_key(WithTemperature())
    assert "| `temperature` | float | `1.0` | when not the default | a sampling temperature, for this test |" \
        in markdown(WithTemperature)
