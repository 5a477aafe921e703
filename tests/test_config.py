"""The typed config: unknown keys suggest the closest, overrides parse as YAML, checks name the key."""

from __future__ import annotations

import dataclasses
import math

import pytest

from prefalign.config import Config, ConfigError, LossSection, config_from_dict, load_config


def _write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_load_without_a_file():
    assert load_config(None) == Config()


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().optim.lr = 1.0  # type: ignore[misc]


# unknown keys -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "expected"), [
    ("optm.lr=1e-5", "optm: unknown key; did you mean 'optim'?"),
    ("optim.lrr=1e-5", "optim.lrr: unknown key; did you mean 'lr'?"),
    ("train.batchsize=2", "train.batchsize: unknown key; did you mean 'batch_size'?"),
    ("loss.name=dpoo", "loss.name: unknown loss 'dpoo'; did you mean 'dpo'?"),
])
def test_unknown_key_suggests_the_closest(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert expected in str(error.value)


def test_unknown_key_in_a_file_names_the_file_and_lists_valid_keys(tmp_path):
    path = _write(tmp_path, "lora:\n  rank: 8\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: lora.rank: unknown key")
    assert "valid keys: enabled, r, alpha" in message


def test_unknown_loss_hyper_parameter_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"loss\.params: dpo: unknown hyper-parameter\(s\) bta; "
                                          r"this loss takes beta"):
        load_config(None, ["loss.params.bta=0.2"])


# overrides and YAML values ------------------------------------------------------------------------

def test_overrides_parse_yaml_values():
    config = load_config(None, [
        "optim.lr=1e-5",                         # PyYAML alone reads this as the string "1e-5"
        "optim.betas=[0.8, 0.95]",
        "lora.target_modules=[q_proj,k_proj,v_proj]",
        "model.adapter=null",
        "data.max_prompt_length=128",
        "train.max_steps=",                      # empty value = null
        "lora.enabled=true",
    ])
    assert config.optim.lr == 1e-5 and isinstance(config.optim.lr, float)
    assert config.optim.betas == (0.8, 0.95)
    assert config.lora.target_modules == ("q_proj", "k_proj", "v_proj")
    assert config.model.adapter is None and config.train.max_steps is None
    assert config.data.max_prompt_length == 128 and config.lora.enabled is True


def test_override_replaces_a_file_value_and_later_overrides_win(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: 1e-4\ntrain:\n  batch_size: 2\n")
    config = load_config(path, ["optim.lr=3e-5", "optim.lr=2e-5"])
    assert config.optim.lr == 2e-5 and config.train.batch_size == 2


def test_override_into_loss_params():
    config = load_config(None, ["loss.params.beta=0.25", "loss.params.label_smoothing=1e-1"])
    assert config.loss.params["beta"] == 0.25 and config.loss.params["label_smoothing"] == 0.1


def test_exponent_floats_in_a_file_are_floats(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: 1e-5\n  eps: 1E-8\nloss:\n  params:\n    beta: 5e-2\n")
    config = load_config(path)
    assert (config.optim.lr, config.optim.eps, config.loss.params["beta"]) == (1e-5, 1e-8, 0.05)


def test_single_string_becomes_a_one_element_list():
    assert load_config(None, ["data.train=my.jsonl"]).data.train == ("my.jsonl",)


def test_empty_section_keeps_its_defaults(tmp_path):
    assert load_config(_write(tmp_path, "lora:\noptim:\n")) == Config()


@pytest.mark.parametrize("override", ["optim.lr", "lr=1e-5", "optim..lr=1", ".lr=1"])
def test_malformed_override_says_how_to_write_it(override):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, [override])


def test_override_into_a_scalar_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr: expected float, got {'x': 1}"):
        load_config(None, ["optim.lr.x=1"])
    with pytest.raises(ConfigError, match="optim.lr is not a mapping"):
        load_config(_write(tmp_path, "optim:\n  lr: 1.0e-5\n"), ["optim.lr.x=1"])


def test_invalid_yaml_in_an_override_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, ["optim.betas=[0.9,"])


# files ------------------------------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_file_names_the_path(tmp_path):
    path = _write(tmp_path, "optim:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- optim\n- lr\n"))


# types ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "expected"), [
    ("train.batch_size=four", "train.batch_size: expected int, got 'four'"),
    ("train.batch_size=true", "train.batch_size: expected int, got True"),  # bool is not an int
    ("train.batch_size=2.5", "train.batch_size: expected int, got 2.5"),
    ("optim.lr=fast", "optim.lr: expected float, got 'fast'"),
    ("model.dtype=float16", "model.dtype: must be one of 'float32', 'bfloat16', got 'float16'"),
    ("optim.betas=[0.9]", "optim.betas: expected 2 values, got 1"),
    ("lora.target_modules=[q_proj, 3]", "lora.target_modules[1]: expected str, got 3"),
    ("loss.params=0.1", "loss.params: expected a mapping"),
    ("train.max_steps=ten", "train.max_steps: expected int, got 'ten'"),
    ("model.gradient_checkpointing=some", "model.gradient_checkpointing: expected bool, got "
     "'some'; or must be one of 'pointwise', got 'some'"),
])
def test_type_errors_name_the_key(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert expected in str(error.value)


def test_a_section_that_is_not_a_mapping_is_named():
    with pytest.raises(ConfigError, match="lora: expected a mapping, got int"):
        config_from_dict({"lora": 8})


@pytest.mark.parametrize(("override", "expected"), [
    ("train.batch_size=0", "train.batch_size: must be > 0, got 0"),
    ("train.eval_every=-1", "train.eval_every: must be >= 0, got -1"),
    ("train.logps_keep_mib=-1", "train.logps_keep_mib: must be >= 0, got -1"),
    ("optim.lr=.nan", "optim.lr: must be > 0, got nan"),
    ("optim.max_grad_norm=0", "optim.max_grad_norm: must be > 0"),
    ("data.limit_train=0", "data.limit_train: must be > 0"),
])
def test_out_of_range_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert expected in str(error.value)


# cross checks -----------------------------------------------------------------------------------

def test_adapter_off_needs_lora():
    with pytest.raises(ConfigError, match="adapter_off needs lora.enabled: true"):
        load_config(None, ["reference.strategy=adapter_off"])
    assert load_config(None, ["reference.strategy=adapter_off", "lora.enabled=true"])


def test_a_reference_source_is_a_frozen_copy():
    with pytest.raises(ConfigError, match=r"reference\.source: .*frozen_copy \(got precomputed\)"):
        load_config(None, ["reference.source=some/model", "reference.strategy=precomputed"])
    assert load_config(None, ["reference.source=some/model"]).reference.source == "some/model"


@pytest.mark.parametrize("loss", ["dpo", "ipo", "hinge", "rpo"])
def test_reference_none_with_a_loss_that_needs_one(loss):
    with pytest.raises(ConfigError, match=f"reference.strategy: '{loss}' needs a reference"):
        load_config(None, [f"loss.name={loss}", "reference.strategy=none"])


@pytest.mark.parametrize("loss", ["simpo", "orpo"])
def test_reference_free_losses_accept_none(loss):
    config = load_config(None, [f"loss.name={loss}", "reference.strategy=none"])
    assert config.reference.strategy == "none"


@pytest.mark.parametrize(("override", "expected"), [
    ("loss.params.beta=-0.1", "loss.params: dpo: beta must be a finite number in (0.0, inf), got -0.1"),
    ("loss.params.beta=0", "dpo: beta must be"),
    ("loss.params.label_smoothing=0.7", "dpo: label_smoothing must be"),
    ("loss.params.beta=high", "dpo: beta must be a finite number"),
])
def test_bad_loss_hyper_parameter_names_it(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(None, [override])
    assert expected in str(error.value)


def test_kto_is_the_unpaired_loss_with_a_trainer():
    assert load_config(None, ["loss.name=kto"]).loss.params["beta"] == 0.1


def test_loss_params_left_out_take_that_loss_defaults():
    """SimPO's own beta is 2.0: a DPO beta of 0.1 must not leak in when params are left out."""
    simpo = load_config(None, ["loss.name=simpo", "reference.strategy=none"])
    assert dict(simpo.loss.params) == {"beta": 2.0, "gamma": 1.0}
    partial = load_config(None, ["loss.name=simpo", "reference.strategy=none", "loss.params.gamma=0.5"])
    assert dict(partial.loss.params) == {"beta": 2.0, "gamma": 0.5}
    assert dict(LossSection().params) == {"beta": 0.1, "label_smoothing": 0.0, "length_normalized": False}


# round trip -------------------------------------------------------------------------------------

def test_to_dict_is_plain_and_round_trips():
    config = load_config(None, [
        "run.name=rt", "lora.enabled=true", "lora.target_modules=[q_proj, o_proj]",
        "reference.strategy=adapter_off", "optim.betas=[0.8, 0.9]", "loss.name=ipo",
        "loss.params.beta=0.3", "data.train=[a.jsonl, b.jsonl]", "train.max_steps=7",
    ])
    plain = config.to_dict()
    assert plain["lora"]["target_modules"] == ["q_proj", "o_proj"]  # lists, not tuples (JSON)
    assert plain["optim"]["betas"] == [0.8, 0.9] and plain["loss"]["params"] == {"beta": 0.3}
    assert config_from_dict(plain) == config
    assert config_from_dict(Config().to_dict()) == Config()


def test_to_dict_survives_json():
    import json

    config = load_config(None, ["optim.max_grad_norm=null", "optim.lr=1e-5"])
    again = config_from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.optim.max_grad_norm is None
    assert math.isclose(again.optim.lr, 1e-5)


def test_max_length_has_one_default():
    """The config, the tokeniser's options and the CLI's --max-length share one default."""
    from prefalign.cli.main import build_parser
    from prefalign.config import DataSection
    from prefalign.data.tokenize import DEFAULT_MAX_LENGTH, TruncationOptions

    preview = build_parser().parse_args(["data", "preview", "x.jsonl"])
    assert DataSection().max_length == TruncationOptions().max_length == DEFAULT_MAX_LENGTH
    assert preview.max_length == DEFAULT_MAX_LENGTH
