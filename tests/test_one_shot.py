"""One-shot fine-tuning of G_T: only E_T/D_T change, the photo's reconstruction improves, the base is untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emotalk.config import to_dict
from emotalk.errors import InputError
from emotalk.inference.one_shot import one_shot_finetune
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig
from emotalk.data.io.checkpoint import save_checkpoint
from emotalk.data.loading import load_model
from emotalk.train.texture_task import TextureTrainConfig
from texture_fixtures import face_crop, random_motion, warp_frame

S = 64


def tiny_model_cfg() -> TextureModelConfig:
    return TextureModelConfig(image_size=S, width_mult=0.25, emotion_feature_dim=32, bottleneck_blocks=1)


@pytest.fixture(scope="module")
def base_model():
    """A tiny G_T briefly trained on one person (Grace Hopper), so BatchNorm statistics are real."""
    torch.manual_seed(0)
    G = TextureGenerator(tiny_model_cfg())
    crop, lm, _ = face_crop("grace_hopper", S)
    rng = np.random.default_rng(0)
    frames = [warp_frame(crop, lm, *random_motion(rng, S, "neutral")) for _ in range(4)]
    ident = torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 127.5 - 1
    target = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 127.5 - 1 for f, _ in frames])
    driven = torch.from_numpy(np.stack([m for _, m in frames]))
    opt = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    emo = torch.zeros(4, G.cfg.emotion_dim)
    emo[:, 0] = emo[:, 8] = 1
    for _ in range(25):
        out = G(ident.expand(4, -1, -1, -1), torch.from_numpy(lm)[None].expand(4, -1, -1), driven, emo)["image"]
        loss = (out - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return G.eval()


@pytest.fixture(scope="module")
def new_person():
    crop, lm, _ = face_crop("astronaut", S)
    return crop, lm


def l1_of(G, crop, lm) -> float:
    img = torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 127.5 - 1
    lmt = torch.from_numpy(lm)[None]
    emo = torch.zeros(1, G.cfg.emotion_dim)
    emo[0, 0] = emo[0, 8] = 1
    with torch.no_grad():
        return float((G.eval()(img, lmt, lmt, emo)["image"] - img).abs().mean())


@pytest.mark.slow
def test_one_shot_updates_only_E_T_and_D_T_and_lowers_the_error(base_model, new_person):
    crop, lm = new_person
    before_state = {k: v.clone() for k, v in base_model.state_dict().items()}
    l1_base = l1_of(base_model, crop, lm)
    adapted, info = one_shot_finetune(base_model, crop, lm, steps=5, return_info=True)
    print(f"one-shot: {info.steps} steps in {info.seconds:.3f} s, L1 {info.l1_before:.4f} -> {info.l1_after:.4f}")
    assert adapted is not base_model
    # the base model is untouched (parameters and BatchNorm buffers)
    assert all(torch.equal(v, before_state[k]) for k, v in base_model.state_dict().items())
    assert l1_of(base_model, crop, lm) == l1_base
    # only E_T / D_T parameters moved; everything else (incl. all buffers) is bit-identical
    ident = set(adapted.identity_parameter_names())
    new_state = adapted.state_dict()
    changed = {k for k in new_state if not torch.equal(new_state[k], before_state[k])}
    params = dict(adapted.named_parameters())
    assert changed <= ident
    assert changed == {k for k in ident if params[k].numel() > 0}  # and every one of them moved
    assert all(p.requires_grad for p in adapted.parameters())  # the flags are restored
    # the photo's reconstruction improves
    assert info.l1_before == pytest.approx(l1_base, abs=1e-6)
    assert info.l1_after < info.l1_before
    assert l1_of(adapted, crop, lm) == pytest.approx(info.l1_after, abs=1e-6)
    assert info.seconds > 0 and len(info.losses) == 5


@pytest.mark.slow
def test_one_shot_accepts_tensors_a_perceptual_term_and_zero_steps(base_model, new_person):
    from emotalk.data.loading import build_perceptual_loss

    crop, lm = new_person
    img = torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1
    with pytest.warns(UserWarning):
        per, _ = build_perceptual_loss("vgg16-random")
    adapted = one_shot_finetune(base_model, img, torch.from_numpy(lm), steps=2, lr=1e-4, perceptual=per)
    assert isinstance(adapted, TextureGenerator)
    same = one_shot_finetune(base_model, crop, lm, steps=0)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), base_model.state_dict().values()))
    with pytest.raises(InputError, match="64x64"):
        one_shot_finetune(base_model, np.zeros((32, 32, 3), np.uint8), lm)
    with pytest.raises(InputError, match="landmarks"):
        one_shot_finetune(base_model, crop, lm[:10])


@pytest.fixture
def texture_checkpoint(base_model, tmp_path):
    cfg = TextureTrainConfig(model=tiny_model_cfg())
    tensors = {f"model/generator/{k}": v for k, v in base_model.state_dict().items()}
    return save_checkpoint(tmp_path / "texture" / "step_00000025", tensors,
                           {"kind": "texture", "step": 25, "config": to_dict(cfg)})


@pytest.mark.slow
def test_finetune_cli_writes_an_adapted_texture_checkpoint(texture_checkpoint, tmp_path, capsys):
    import cv2

    from emotalk.cli.main import main
    from emotalk.data.io.photos import public_domain_photos

    photo = tmp_path / "person.png"
    cv2.imwrite(str(photo), public_domain_photos()["astronaut"][..., ::-1])
    base_bytes = texture_checkpoint.with_suffix(".safetensors").read_bytes()
    out = tmp_path / "adapted"
    code = main(["finetune", "--checkpoint", str(texture_checkpoint), "--image", str(photo), "--out", str(out),
                 "--steps", "3", "--device", "cpu"])
    assert code == 0
    assert "adapted G_T written to" in capsys.readouterr().out
    assert texture_checkpoint.with_suffix(".safetensors").read_bytes() == base_bytes  # base untouched
    G0 = load_model(texture_checkpoint, "texture").module
    adapted = load_model(out.with_suffix(".json"), "texture")
    G1 = adapted.module
    assert adapted.model_config.image_size == S
    rec = adapted.meta.extra["one_shot"]
    assert rec["steps"] == 3 and rec["seconds"] > 0 and rec["l1_after"] < rec["l1_before"]
    ident = set(G1.identity_parameter_names())
    s0, s1 = G0.state_dict(), G1.state_dict()
    changed = {k for k in s0 if not torch.equal(s0[k], s1[k])}
    assert changed and changed <= ident
    json.loads(out.with_suffix(".json").read_text())  # plain JSON metadata
    # a missing photo is a one-line user error, not a traceback
    code = main(["finetune", "--checkpoint", str(texture_checkpoint), "--image", str(tmp_path / "nope.jpg"),
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "not found" in capsys.readouterr().err
