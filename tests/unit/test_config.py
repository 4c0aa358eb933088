import pytest

from deploylm.config import EvalConfig, FinetuneConfig, build_config, load_config
from deploylm.errors import ConfigError


def test_misspelt_key_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'learning_rat'.*did you mean 'learning_rate'"):
        build_config(FinetuneConfig, {"data": "x", "learning_rat": 1e-5})


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match="epochs"):
        build_config(FinetuneConfig, {"data": "x", "epochs": -1})


def test_file_values_then_flags_win(tmp_path):
    f = tmp_path / "ft.yaml"
    f.write_text("data: sst2\nepochs: 5\nlearning_rate: 1.0e-4\n")
    cfg = load_config(FinetuneConfig, f, epochs=2, batch_size=None)
    assert (cfg.epochs, cfg.learning_rate, cfg.batch_size) == (2, 1e-4, 32)


def test_config_file_problems_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(EvalConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(EvalConfig, bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(EvalConfig, broken)


def test_config_round_trips_through_json():
    cfg = build_config(FinetuneConfig, {"data": "sst2", "epochs": 1.5})
    assert build_config(FinetuneConfig, cfg.model_dump(mode="json")) == cfg
