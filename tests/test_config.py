"""Configuration: validation names the field and its range; flags override files only when given."""

import argparse
import json

import pytest

from nanollm.config import (
    ConfigError,
    GenerationConfig,
    ModelConfig,
    TrainingConfig,
)
from nanollm.config_io import add_config_flags, build_config, flag_overrides
from nanollm.server_config import ServerConfig


def test_presets() -> None:
    cfg = ModelConfig.from_preset("gpt2-medium")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size) == (24, 16, 1024, 50257)
    with pytest.raises(ConfigError, match="unknown model preset 'gpt5'"):
        ModelConfig.from_preset("gpt5")


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ModelConfig, {"n_layer": 0}, r"ModelConfig.n_layer = 0 is out of range \[1, 256\]"),
        (ModelConfig, {"n_head": 5}, r"n_embd \(768\) must be divisible by ModelConfig.n_head"),
        (ModelConfig, {"dropout": 1.0}, r"ModelConfig.dropout = 1.0 is out of range \[0.0, 1.0\)"),
        (GenerationConfig, {"temperature": -1.0}, r"GenerationConfig.temperature = -1.0"),
        (GenerationConfig, {"top_p": 0.0}, r"top_p = 0.0 is out of range \(0.0, 1.0\]"),
        (GenerationConfig, {"stop_sequences": [""]}, r"stop_sequences must be a list"),
        (TrainingConfig, {"dtype": "fp8"}, r"TrainingConfig.dtype = 'fp8' is not allowed"),
        (TrainingConfig, {"learning_rate": 1e-4, "min_lr": 1e-3}, r"min_lr .* must not exceed"),
        (ServerConfig, {"port": 70000}, r"ServerConfig.port = 70000 is out of range"),
        (ModelConfig, {"n_layer": "twelve"}, r"ModelConfig.n_layer must be an integer"),
    ],
)
def test_invalid_values_name_field_and_range(cls, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_unknown_key_suggests_the_closest_field() -> None:
    with pytest.raises(ConfigError, match=r"unknown TrainingConfig field 'learning_rat'.*"
                                          r"did you mean 'learning_rate'"):
        TrainingConfig.from_dict({"learning_rat": 1.0})


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainingConfig)
    add_config_flags(parser, ModelConfig, prefix="model.")
    return parser


def test_file_values_survive_flag_defaults(tmp_path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("max_iters: 77\nlearning_rate: 3.0e-4\nmodel:\n  n_layer: 3\n  n_embd: 96\n"
                    "  n_head: 3\n")
    args = _train_parser().parse_args(["--batch-size", "4"])
    cfg = build_config(TrainingConfig, path, flag_overrides(args, TrainingConfig))
    assert cfg.max_iters == 77  # from the file: no flag given
    assert cfg.learning_rate == 3e-4
    assert cfg.batch_size == 4  # from the flag
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (3, 96, 1024)


def test_given_flags_override_the_file(tmp_path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"max_iters": 77, "compile": True, "model": {"n_layer": 3}}))
    args = _train_parser().parse_args(["--max-iters", "5", "--no-compile", "--n-layer", "2"])
    cfg = build_config(TrainingConfig, path, flag_overrides(args, TrainingConfig))
    assert (cfg.max_iters, cfg.compile, cfg.model.n_layer) == (5, False, 2)


def test_bad_file_values_name_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("max_iters: -3\n")
    with pytest.raises(ConfigError, match=r"TrainingConfig.max_iters = -3 .*bad.yaml"):
        build_config(TrainingConfig, path)
    path.write_text("max_iters: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid yaml"):
        build_config(TrainingConfig, path)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(TrainingConfig, tmp_path / "missing.yaml")


def test_help_shows_range_and_default() -> None:
    text = _train_parser().format_help()
    assert "--learning-rate" in text and "--n-layer" in text
    assert "range [1, 256]" in text


def test_example_config_files_load() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "config"
    loaded = 0
    for path, cls in [("generation_config.yaml", GenerationConfig),
                      ("server_config.yaml", ServerConfig),
                      ("train_config.yaml", TrainingConfig)]:
        if (root / path).exists():
            build_config(cls, root / path)
            loaded += 1
    assert loaded >= 2


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (ModelConfig, {"bias": "false"}, r"ModelConfig.bias must be true or false, got 'false'"),
        (ModelConfig, {"n_layer": 2.0}, r"ModelConfig.n_layer must be an integer, got 2.0"),
        (ModelConfig, {"tokenizer": "foo"}, r"ModelConfig.tokenizer = 'foo' is not allowed"),
        (GenerationConfig, {"max_new_tokens": 2.5}, r"max_new_tokens must be an integer"),
        (GenerationConfig, {"stop_sequences": "END"}, r"stop_sequences must be a list"),
        (ServerConfig, {"host": 127}, r"ServerConfig.host must be a string"),
        (TrainingConfig, {"model": {"n_layer": 2}}, r"TrainingConfig.model must be a ModelConfig"),
    ],
)
def test_values_of_the_wrong_type_are_rejected(cls, kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs)


def test_integers_are_accepted_for_float_fields() -> None:
    cfg = GenerationConfig(temperature=1, top_p=1)
    assert isinstance(cfg.temperature, float) and cfg.temperature == 1.0


def test_non_utf8_config_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary.yaml is not UTF-8 text"):
        build_config(TrainingConfig, path)


def test_min_lr_defaults_to_a_tenth_of_the_learning_rate() -> None:
    # nanoGPT's pair (6e-4 -> 6e-5) scaled to the README's fine-tuning rate, which used to fail
    # against a fixed min_lr of 6e-5
    assert TrainingConfig(learning_rate=3e-5).final_lr == pytest.approx(3e-6)
    assert TrainingConfig().final_lr == pytest.approx(6e-5)
    assert TrainingConfig(learning_rate=3e-5, min_lr=0.0).final_lr == 0.0  # given: kept
    with pytest.raises(ConfigError, match=r"leave min_lr out to decay to learning_rate / 10"):
        TrainingConfig(learning_rate=3e-5, min_lr=6e-5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: 4\n", "TrainingConfig.model must be a mapping of ModelConfig fields (`model:` "
                       "followed by indented `name: value` lines), got 4"),
        ("model:\n", "TrainingConfig.model must be a mapping of ModelConfig fields (`model:` "
                     "followed by indented `name: value` lines), got None"),
    ],
)
def test_a_model_section_that_is_not_a_mapping_is_refused_even_under_flags(
        tmp_path, text: str, message: str) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(text)
    args = _train_parser().parse_args(["--n-layer", "2"])  # flags that add model fields
    with pytest.raises(ConfigError) as info:
        build_config(TrainingConfig, path, flag_overrides(args, TrainingConfig))
    assert str(info.value) == f"{message} (from {path})"


def test_a_folder_given_as_config_file_says_so(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(TrainingConfig, tmp_path)
    assert str(info.value) == (f"config file {tmp_path} is a folder; give a .yaml, .yml or "
                               ".json file")
