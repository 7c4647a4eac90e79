"""The config system: YAML -> dataclasses, overrides, inheritance, unknown keys rejected by name."""
import pytest
import yaml

from emotalk.cli.main import main
from emotalk.config import dump_config, load_config, parse_overrides
from emotalk.errors import ConfigError


def test_paper_settings_in_mead_config():
    cfg = load_config("landmark/mead")
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.train.batch_size == 256
    assert (cfg.loss.lambda_ver, cfg.loss.lambda_gan) == (1.0, 0.5)
    assert cfg.model.d == 128 and cfg.model.lstm_layers == 3 and cfg.model.lstm_hidden == 256
    assert cfg.model.window == 6


def test_tiny_inherits_from_mead_and_overrides_apply():
    cfg = load_config("landmark/tiny", ["optim.lr=0.01", "train.steps=7", "model.use_skip=false",
                                        "data.train_subjects=[A, B]"])
    assert cfg.loss.lambda_gan == 0.5  # inherited through _base_
    assert cfg.optim.lr == 0.01 and cfg.train.steps == 7
    assert cfg.model.use_skip is False
    assert cfg.data.train_subjects == ["A", "B"]
    assert isinstance(cfg.model.gcn_channels, tuple)


def test_unknown_key_is_rejected_with_its_name(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("task: landmark\noptim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_config("landmark/tiny", ["train.stepz=3"])


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        load_config("landmark/tiny", ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model\.use_skip: expected true/false"):
        load_config("landmark/tiny", ["model.use_skip=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_dump_roundtrip(tmp_path):
    cfg = load_config("landmark/tiny", ["train.steps=9"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    again = load_config(p)
    assert again == cfg
    assert yaml.safe_load(p.read_text())["train"]["steps"] == 9


def test_cli_reports_unknown_key_in_one_line(capsys):
    code = main(["train", "--config", "landmark/tiny", "optim.lrr=1"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error:") and "optim.lrr" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
