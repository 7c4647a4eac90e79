"""The model-loading layer (emotalk.data.loading): one constructor, strict loading, typed metadata."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from emotalk.data.loading import CheckpointMeta, build_model, load_model, save_model
from emotalk.errors import CheckpointError
from emotalk.models.emotion_classifier import EmotionModelConfig
from emotalk.models.landmark_generator import LandmarkModelConfig
from emotalk.models.texture_generator import TextureModelConfig

EMOTIONS = ["neutral", "happy", "sad"]


def _meta(kind: str, **kw) -> CheckpointMeta:
    return CheckpointMeta(kind=kind, step=7, config={"task": kind, "data": {"root": "nowhere"}}, **kw)


def _small_landmark() -> LandmarkModelConfig:
    return LandmarkModelConfig(feature_dim=5, window=3, d=16, lstm_hidden=8, lstm_layers=1,
                               gcn_channels=(8, 16), emotions=list(EMOTIONS), intensity_levels=2)


def _small_texture(**kw) -> TextureModelConfig:
    return TextureModelConfig(image_size=32, base_channels=4, emotions=list(EMOTIONS), intensity_levels=2,
                              emotion_feature_dim=8, disc_channels=4, **kw)


def _randomise(m: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero weights everywhere (G_L's last layer starts at zero, which would hide a loading bug)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


def test_landmark_round_trip_gives_equal_outputs(tmp_path):
    cfg = _small_landmark()
    G = _randomise(build_model("landmark", cfg), 0)
    path = save_model(tmp_path / "lm", G, "landmark", cfg, _meta("landmark", feature_kind="toy", feature_dim=5,
                                                                  window=3, fps=25.0))
    loaded = load_model(path, "landmark")
    assert loaded.model_config == cfg
    assert (loaded.meta.kind, loaded.meta.step, loaded.meta.feature_kind, loaded.meta.window) == \
        ("landmark", 7, "toy", 3)
    assert loaded.meta.fps == 25.0 and loaded.meta.path == path
    assert not loaded.module.training
    g = torch.Generator().manual_seed(1)
    audio, emo, neutral = torch.randn(2, 3, 5, generator=g), torch.rand(2, 5, generator=g), \
        torch.randn(2, 68, 2, generator=g)
    with torch.no_grad():
        a = G(audio, emo, neutral)["landmarks"]
        b = loaded.module(audio, emo, neutral)["landmarks"]
    assert not torch.allclose(a, neutral)  # the weights do something
    assert torch.equal(a, b)


def test_texture_prior_flow_survives_save_and_load(tmp_path):
    cfg = _small_texture(prior_flow=True, image_skip=True)
    G = build_model("texture", cfg).eval()
    meta = _meta("texture", background_rgb=(10, 200, 30), extra={"one_shot": {"steps": 3}, "optimizers": {"x": 1}})
    extra = {"identity/image": torch.zeros(32, 32, 3, dtype=torch.uint8)}
    path = save_model(tmp_path / "adapted", G, "texture", cfg, meta, tensors=extra)
    saved = json.loads(path.read_text())
    assert saved["config"]["model"]["prior_flow"] is True
    assert "optimizers" not in saved  # training-resume state is not part of a saved model
    loaded = load_model(tmp_path / "adapted.safetensors", "texture")
    assert loaded.model_config.prior_flow is True and loaded.model_config.image_skip is True
    assert loaded.meta.background_rgb == (10, 200, 30)
    assert loaded.meta.extra["one_shot"] == {"steps": 3}
    ref = {k: v for k, v in G.state_dict().items()}
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_emotion_classifier_round_trip(tmp_path):
    cfg = EmotionModelConfig(image_size=16, width=4, blocks=2)
    net = _randomise(build_model("emotion", cfg, num_classes=3), 3)
    path = save_model(tmp_path / "clf", net, "emotion", cfg, _meta("emotion", emotions=tuple(EMOTIONS)))
    loaded = load_model(path, "emotion")
    assert loaded.meta.emotions == tuple(EMOTIONS)
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), loaded.module(x))


def test_wrong_kind_names_both_kinds(tmp_path):
    cfg = _small_texture()
    path = save_model(tmp_path / "tex", build_model("texture", cfg), "texture", cfg, _meta("texture"))
    with pytest.raises(CheckpointError, match=r"'texture' checkpoint.*'landmark' checkpoint is needed"):
        load_model(path, "landmark")
    with pytest.raises(CheckpointError, match=r"unknown model kind 'photo'"):
        load_model(path, "photo")


def test_unusable_config_and_corrupt_files(tmp_path):
    cfg = _small_texture()
    path = save_model(tmp_path / "tex", build_model("texture", cfg), "texture", cfg, _meta("texture"))
    d = json.loads(path.read_text())
    d["config"]["model"]["no_such_setting"] = 1
    path.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"saved model config is unusable.*no_such_setting"):
        load_model(path, "texture")
    # a config that builds a differently sized network: strict loading refuses it
    d["config"]["model"].pop("no_such_setting")
    d["config"]["model"]["base_channels"] = 8
    path.write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match=r"do not fit the texture model"):
        load_model(path, "texture")
    path.with_suffix(".safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"corrupt weights file"):
        load_model(path, "texture")
    path.write_text("{broken")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint metadata"):
        load_model(path, "texture")


def test_meta_json_round_trip_keeps_unknown_keys():
    d = {"kind": "landmark", "step": 3, "config": {"task": "landmark"}, "feature_kind": "phonemes",
         "feature_dim": 40, "window": 6, "fps": 30.0, "background_rgb": [1, 2, 3],
         "subjects": {"train": ["S1"], "val": ["S2"]}, "flow_mode": "warp", "format_version": 1,
         "weights": "x.safetensors"}
    m = CheckpointMeta.from_json(d, "x.json")
    assert m.train_subjects == ("S1",) and m.val_subjects == ("S2",) and m.background_rgb == (1, 2, 3)
    assert m.extra == {"flow_mode": "warp"}
    back = m.to_json()
    assert back == {k: v for k, v in d.items() if k not in ("format_version", "weights")}
    assert CheckpointMeta.from_json({**d, "background_rgb": "green"}).background_rgb is None
    with pytest.raises(CheckpointError, match="no 'kind'"):
        CheckpointMeta.from_json({"step": 1})


def test_build_model_checks_its_config_type():
    with pytest.raises(TypeError, match="LandmarkModelConfig"):
        build_model("landmark", _small_texture())
    with pytest.raises(ValueError, match="num_classes"):
        build_model("emotion", EmotionModelConfig())
    assert dataclasses.is_dataclass(_small_landmark())
