"""The config system: YAML -> dataclasses, overrides, inheritance, unknown keys rejected by name."""
import ast
import re
from pathlib import Path

import pytest
import yaml

from emotalk import config as config_module
from emotalk.cli.main import main
from emotalk.config import CONFIG_DIR, config_from_dict, dump_config, load_config, parse_overrides, to_dict
from emotalk.errors import ConfigError
from emotalk.eval.evaluate import EvalConfig
from emotalk.train.landmark_task import LandmarkTrainConfig
from emotalk.train.tasks import TRAIN_CONFIGS, TRAIN_TASKS, build_task, load_train_config


def test_paper_settings_in_mead_config():
    cfg = load_train_config("landmark/mead")
    assert cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.train.batch_size == 256
    assert (cfg.loss.lambda_ver, cfg.loss.lambda_gan) == (1.0, 0.5)
    assert cfg.model.d == 128 and cfg.model.lstm_layers == 3 and cfg.model.lstm_hidden == 256
    assert cfg.model.window == 6


def test_tiny_inherits_from_mead_and_overrides_apply():
    cfg = load_train_config("landmark/tiny", ["optim.lr=0.01", "train.steps=7", "model.use_skip=false",
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
        load_train_config(p)
    with pytest.raises(ConfigError, match=r"train\.stepz"):
        load_train_config("landmark/tiny", ["train.stepz=3"])


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        load_train_config("landmark/tiny", ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"model\.use_skip: expected true/false"):
        load_train_config("landmark/tiny", ["model.use_skip=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_dump_roundtrip(tmp_path):
    cfg = load_train_config("landmark/tiny", ["train.steps=9"])
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    again = load_train_config(p)
    assert again == cfg
    assert yaml.safe_load(p.read_text())["train"]["steps"] == 9


def test_cli_reports_unknown_key_in_one_line(capsys):
    code = main(["train", "--config", "landmark/tiny", "optim.lrr=1"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error:") and "optim.lrr" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


# --- the registry: config.py knows no task; callers pass the dataclass -----------------------------------

def test_every_shipped_config_loads_with_its_callers_schema():
    # configs/splits/ holds subject splits (data files read by load_split, tests/test_protocol.py), not configs
    files = sorted(f for f in CONFIG_DIR.rglob("*.yaml") if f.parent.name != "splits")
    assert len(files) >= 9
    seen = set()
    schema = {**TRAIN_CONFIGS, "eval": EvalConfig}
    for f in files:
        cfg = load_config(f, schema=schema)
        assert type(cfg) is schema[cfg.task], f  # the file's task: picked its dataclass
        seen.add(type(cfg).__name__)
        if cfg.task in TRAIN_TASKS:
            assert type(build_task(cfg)) is TRAIN_TASKS[cfg.task][1]
    assert {"LandmarkTrainConfig", "TextureTrainConfig", "EmotionTrainConfig", "EvalConfig"} <= seen


def test_schema_is_required_and_checked():
    with pytest.raises(TypeError, match="schema="):
        load_config("landmark/tiny")
    # a single dataclass insists on its own task
    assert isinstance(load_config("landmark/tiny", schema=LandmarkTrainConfig), LandmarkTrainConfig)
    with pytest.raises(ConfigError, match=r"is a 'texture' config, but a 'landmark' config is needed"):
        load_config("texture/tiny", schema=LandmarkTrainConfig)
    # a mapping: the file's task must be one of its keys
    with pytest.raises(ConfigError, match=r"task 'eval' cannot be used here; choose one of emotion, landmark.*texture"):
        load_train_config("eval/mead-mini")
    with pytest.raises(ConfigError, match=r"'landmark' config, but a 'emotion' config is needed"):
        load_train_config("landmark/tiny", task="emotion")
    cfg = load_train_config("texture/tiny")
    assert config_from_dict(to_dict(cfg), TRAIN_CONFIGS) == cfg


def test_config_module_references_no_upper_layer():
    """No import of, and no string naming, a module above the config layer (the old importlib registry)."""
    tree = ast.parse(Path(config_module.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "importlib" not in imported
    assert [m for m in imported if m.startswith("emotalk.")] == ["emotalk.errors", "emotalk.utils.io"]
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr)}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and id(n) not in docstrings]
    assert not [v for v in strings if re.search(r"emotalk\.(train|eval|inference)", v)]
