"""G_T building blocks: shapes at the paper config, ranges, heatmaps, warping, gradients, losses."""
from __future__ import annotations

import math

import pytest
import torch

from emotalk.data.datasets.augment import ColorAugmentConfig, augment_consistent
from emotalk.errors import ConfigError, MissingWeightsError
from emotalk.models.heatmap import heatmap_difference, landmark_heatmaps, landmark_prior_flow
from emotalk.models.texture_generator import (FrameDiscriminator, IdentityFeatures, TextureGenerator,
                                              TextureModelConfig, build_discriminator, count_parameters, warp)
from emotalk.data.loading import build_perceptual_loss, resolve_vgg16_weights
from emotalk.models.losses.adversarial_loss import d_loss, g_loss
from emotalk.models.losses.perceptual_loss import VGG16_FILE, random_vgg16_features
from emotalk.models.losses.reconstruction_loss import reconstruction_loss
from emotalk.train.texture_task import TextureTask, TextureTrainConfig
from emotalk.train.trainer import StepContext

#: G_T at the paper config (256², c = 64, 8 emotions + 3 levels): reported in the docs / issue
PAPER_PARAMS = 30_799_751


def face_landmarks(batch: int, size: int, jitter: float = 0.0) -> torch.Tensor:
    from emotalk.data.face.alignment import crop_template

    lm = torch.as_tensor(crop_template(size), dtype=torch.float32)[None].repeat(batch, 1, 1)
    return lm + jitter * torch.randn_like(lm)


def small_cfg(**kw) -> TextureModelConfig:
    base = dict(image_size=32, base_channels=8, emotion_feature_dim=8, bottleneck_blocks=1, disc_channels=8)
    base.update(kw)
    return TextureModelConfig(**base)


def test_paper_config_shapes_ranges_and_parameter_count():
    cfg = TextureModelConfig()  # 256², base 64: the appendix widths
    G = TextureGenerator(cfg).eval()
    n = count_parameters(G)
    print(f"G_T parameters at the paper config: {n:,} (D: {count_parameters(build_discriminator(cfg)):,})")
    assert n == PAPER_PARAMS
    with torch.no_grad():  # saturate the (zero-initialised) flow head to exercise the output ranges
        G.motion.flow_head.weight.normal_(0, 1.0)
    img = torch.rand(1, 3, 256, 256) * 2 - 1
    neutral = face_landmarks(1, 256)
    driven = neutral + torch.randn_like(neutral) * 3
    emo = torch.zeros(1, cfg.emotion_dim)
    emo[0, 5] = emo[0, 9] = 1
    with torch.no_grad():
        out = G(img, neutral, driven, emo)
    expected = {
        "identity_e1": (1, 64, 256, 256), "identity_e2": (1, 128, 128, 128), "identity_f_t": (1, 256, 64, 64),
        "heatmap_diff": (1, 69, 64, 64), "motion_input": (1, 325, 64, 64), "motion_enc1": (1, 512, 32, 32),
        "motion_bottleneck": (1, 1024, 16, 16), "emotion_feature": (1, 128), "motion_fused": (1, 1024, 16, 16),
        "motion_dec1": (1, 512, 32, 32), "motion_features": (1, 256, 64, 64), "flow": (1, 2, 64, 64),
        "occlusion": (1, 1, 64, 64), "occlusion_maps": (1, 2, 64, 64), "decoder_input": (1, 256, 64, 64),
        "decoder_bottleneck": (1, 256, 64, 64), "decoder_up1": (1, 128, 128, 128),
        "decoder_up2": (1, 64, 256, 256), "image": (1, 3, 256, 256)}
    for k, shape in expected.items():
        assert tuple(out[k].shape) == shape, k
    flow, occ = out["flow"], out["occlusion"]
    assert flow.abs().max() <= 1 and flow.abs().max() > 0.5  # tanh range, really used
    assert occ.min() >= 0 and occ.max() <= 1
    assert torch.allclose(out["occlusion_maps"].sum(1), torch.ones(1, 64, 64), atol=1e-5)  # softmax
    assert out["image"].abs().max() <= 1
    assert tuple(FrameDiscriminator()(out["image"]).shape) == (1, 1, 30, 30)  # 70×70 PatchGAN


def test_config_scales_and_validates():
    cfg = small_cfg(image_size=64, base_channels=64, width_mult=0.25)
    assert cfg.channels == 16 and cfg.heatmap_size == 16
    G = TextureGenerator(cfg)
    out = G(torch.zeros(2, 3, 64, 64), face_landmarks(2, 64), face_landmarks(2, 64, 1.0), torch.zeros(2, 11))
    assert tuple(out["motion_input"].shape) == (2, 4 * 16 + 69, 16, 16)
    assert tuple(out["motion_bottleneck"].shape) == (2, 256, 4, 4)
    with pytest.raises(ConfigError):
        TextureModelConfig(image_size=100).validate()
    with pytest.raises(ConfigError):
        TextureModelConfig(flow_mode="sideways").validate()
    with pytest.raises(ConfigError):
        TextureModelConfig(prior_flow=True, prior_flow_sigma=0).validate()


def test_heatmaps_peaks_background_and_difference_sign():
    lm = torch.tensor([[[10.0, 20.0]] * 68])  # (1, 68, 2) in a 64² crop -> 16² heatmaps
    lm[0, 1] = torch.tensor([40.0, 8.0])
    h = landmark_heatmaps(lm, 64, 16, sigma=1.0)
    assert tuple(h.shape) == (1, 69, 16, 16)
    # pixel-index convention: x = 10 -> (10.5) / 4 - 0.5 = 2.125 -> peak at column 2; y = 20 -> 4.625 -> row 5
    peak = torch.nonzero(h[0, 0] == h[0, 0].max())[0].tolist()
    assert peak == [5, 2]
    assert torch.allclose(h[0, 68], 1 - h[0, :68].amax(0))  # background = 1 - max
    assert h[0, 68].max() > 0.99 and h[0, 68].min() < 0.2
    same = heatmap_difference(lm, lm, 64, 16)
    assert same.abs().max() == 0
    moved = lm.clone()
    moved[0, 1, 0] += 8.0  # landmark 1 moves two heatmap pixels right
    diff = heatmap_difference(lm, moved, 64, 16)  # driven minus neutral
    new_peak = landmark_heatmaps(moved, 64, 16)[0, 1].argmax()
    old_peak = h[0, 1].argmax()
    assert diff[0, 1].flatten()[new_peak] > 0.5 and diff[0, 1].flatten()[old_peak] < -0.5


def test_warp_identity_and_shift():
    f = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert torch.allclose(warp(f, torch.zeros(2, 2, 4, 4)), f, atol=1e-4)
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0] = 2.0 / 8  # sample one pixel to the right
    shifted = warp(f, flow)
    assert torch.allclose(shifted[..., :-1], f[..., 1:], atol=1e-4)


def smooth_texture(size: int) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: low-frequency stripes, so bilinear resampling is nearly exact."""
    x = torch.arange(size, dtype=torch.float32)
    gx = torch.sin(2 * math.pi * x / 13)[None, :].expand(size, size)
    gy = torch.cos(2 * math.pi * x / 17)[:, None].expand(size, size)
    return torch.stack([0.6 * gx, 0.6 * gy, 0.4 * gx * gy])[None]


def best_shift(a: torch.Tensor, b: torch.Tensor, rows: slice, cols: slice, dim: int) -> int:
    """Integer shift s (|s| <= 5 px) along ``dim`` (-1 = x, -2 = y) with a[rows, cols] ~ b shifted by s."""
    errs = {s: float((a[..., rows, cols] - torch.roll(b, s, dims=dim)[..., rows, cols]).abs().mean())
            for s in range(-5, 6)}
    return min(errs, key=errs.get)


def test_prior_flow_moves_pixels_the_way_the_landmarks_move():
    S, k = 64, 3
    neutral = face_landmarks(1, S)
    img = smooth_texture(S)
    nose = neutral[0, 30].round().long().tolist()  # face centre, crop pixels (x, y)
    rows, cols = slice(nose[1] - 6, nose[1] + 7), slice(nose[0] - 6, nose[0] + 7)
    px = S / 2  # normalised flow units -> crop pixels
    # every driven landmark k px to the right: the face centre moves k px right, the background stays put
    driven = neutral.clone()
    driven[..., 0] += k
    prior = landmark_prior_flow(neutral, driven, S, S // 4)
    assert tuple(prior.shape) == (1, 2, 16, 16)
    cx, cy = (nose[0] + 0.5) / 4 - 0.5, (nose[1] + 0.5) / 4 - 0.5  # the nose on the 16² flow grid
    centre = prior[0, :, round(cy), round(cx)] * px
    assert -1.05 * k < centre[0] < -0.85 * k and abs(centre[1]) < 0.1  # backward flow: sample k px left
    assert prior[0, :, :2, :2].abs().max() * px < 1e-3 and prior[0, :, -2:, -2:].abs().max() * px < 1e-3
    moved = warp(img, prior)
    assert best_shift(moved, img, rows, cols, -1) == k and best_shift(moved, img, rows, cols, -2) == 0
    assert torch.allclose(moved[..., :4, :4], img[..., :4, :4], atol=1e-4)  # far-away background
    # the mouth opens: lower lip and chin come down, eyes stay where they are
    opened = neutral.clone()
    opened[0, list(range(5, 12)) + [55, 56, 57, 58, 59, 65, 66, 67], 1] += 4
    f = landmark_prior_flow(neutral, opened, S, S)[0] * px  # at full resolution: read it at the landmarks
    at = lambda i: f[:, int(opened[0, i, 1].round()), int(opened[0, i, 0].round())]  # noqa: E731
    assert at(57)[1] < -0.6 * 4 and at(8)[1] < -0.6 * 4 and abs(at(57)[0]) < 0.5
    assert max(float(at(i).abs().max()) for i in (36, 39, 42, 45)) < 0.1
    # no motion: exactly the identity warp
    assert landmark_prior_flow(neutral, neutral, S, S // 4).abs().max() == 0
    # through G_T: the flow is the prior plus the (zero-initialised) residual head, clamped to [-1, 1]
    G = TextureGenerator(small_cfg(image_size=S, prior_flow=True, image_skip=True)).eval()
    emo = torch.zeros(1, 11)
    with torch.no_grad():
        out = G(img, neutral, driven, emo)
        assert torch.equal(out["flow"], out["prior_flow"]) and out["flow_residual"].abs().max() == 0
        assert torch.allclose(out["prior_flow"], prior)
        assert G(img, neutral, neutral, emo)["flow"].abs().max() == 0
        G.motion.flow_head.bias.fill_(-10.0)  # saturate the residual: the sum stays a valid flow
        sat = G(img, neutral, driven, emo)
    total = sat["prior_flow"] + sat["flow_residual"]
    assert total.min() < -1 and torch.equal(sat["flow"], total.clamp(-1, 1)) and sat["flow"].min() == -1


def test_prior_flow_off_is_the_plain_model_and_adds_no_parameters():
    from emotalk.train.tasks import load_train_config as load_config

    assert TextureModelConfig().prior_flow is False
    assert load_config("texture/mead").model.prior_flow is False  # the paper's model
    assert load_config("texture/tiny").model.prior_flow is True  # the CPU demo
    torch.manual_seed(0)
    plain = TextureGenerator(small_cfg())
    torch.manual_seed(0)
    prior = TextureGenerator(small_cfg(prior_flow=True))
    a, b = plain.state_dict(), prior.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same weights, same checkpoints
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    neutral, driven, emo = face_landmarks(2, 32), face_landmarks(2, 32, 1.0), torch.eye(11)[:2]
    with torch.no_grad():
        assert plain.eval()(img, neutral, driven, emo)["flow"].abs().max() == 0  # zero head: identity warp
        plain.motion.flow_head.weight.normal_(0, 0.1)
        prior.load_state_dict(plain.state_dict())
        p0 = plain(img, neutral, driven, emo)
        p1 = prior.eval()(img, neutral, driven, emo)
    assert "prior_flow" not in p0 and "flow_residual" not in p0
    assert torch.equal(p0["flow"], torch.tanh(plain.motion.flow_head(p0["motion_features"])))
    assert torch.equal(p1["flow_residual"], p0["flow"]) and torch.equal(p1["occlusion"], p0["occlusion"])
    assert torch.allclose(p1["flow"], (p1["prior_flow"] + p0["flow"]).clamp(-1, 1))
    assert not torch.allclose(p1["image"], p0["image"])


@pytest.mark.parametrize("flow_mode,occlusion,image_skip,prior_flow", [
    ("warp", "softmax", False, False), ("concat", "softmax", False, False), ("warp", "sigmoid", False, False),
    ("warp", "softmax", True, False), ("warp", "softmax", True, True)])
def test_every_parameter_gets_gradient_in_a_training_step(flow_mode, occlusion, image_skip, prior_flow):
    mcfg = small_cfg(flow_mode=flow_mode, occlusion=occlusion, image_skip=image_skip, prior_flow=prior_flow)
    cfg = TextureTrainConfig(model=mcfg)
    cfg.loss.perceptual = "none"
    cfg.loss.lambda_decoded = 1.0 if image_skip else 0.0  # D_T's own image is also compared with the target
    cfg.data.augment.enabled = True
    task = TextureTask(cfg)
    with pytest.warns(UserWarning, match="perceptual loss: none"):
        modules = task.build_modules()
    opts = task.build_optimizers(modules)
    ctx = StepContext(modules, modules, opts, torch.device("cpu"), None, None, 0.0)
    B = 2
    batch = {"identity": torch.rand(B, 3, 32, 32) * 2 - 1, "target": torch.rand(B, 3, 32, 32) * 2 - 1,
             "identity_landmarks": face_landmarks(B, 32), "target_landmarks": face_landmarks(B, 32, 1.0),
             "emotion": torch.eye(11)[:B]}
    logs = task.train_step(batch, ctx)
    assert {"rec", "adv_g", "adv_d", "total"} <= set(logs) and all(math.isfinite(v) for v in logs.values())
    assert ("rec_decoded" in logs) == image_skip and ("flow_residual_abs" in logs) == prior_flow
    G = modules["generator"]
    dead = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead, f"no gradient reached {dead}"
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in modules["discriminator"].parameters())


@pytest.mark.parametrize("image_skip", [False, True])
def test_cached_identity_features_and_broadcast(image_skip):
    G = TextureGenerator(small_cfg(image_skip=image_skip)).eval()
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    neutral = face_landmarks(1, 32)
    driven = face_landmarks(3, 32, 1.0)
    emo = torch.zeros(1, 11)
    with torch.no_grad():
        feats = G.encode_identity(img)
        assert isinstance(feats, IdentityFeatures)
        a = G(feats, neutral, driven, emo)["image"]
        b = G(img.expand(3, -1, -1, -1), neutral.expand(3, -1, -1), driven, emo.expand(3, -1))["image"]
    assert tuple(a.shape) == (3, 3, 32, 32)
    assert torch.allclose(a, b, atol=1e-5)


def test_identity_parameters_are_exactly_E_T_and_D_T():
    G = TextureGenerator(small_cfg())
    names = set(G.identity_parameter_names())
    assert names == {n for n, _ in G.named_parameters() if n.split(".")[0] in ("identity_encoder", "decoder")}
    assert any(n.startswith("decoder.blocks.0.norm1.affine") for n in names)  # AdaIN maps belong to D_T
    ids = {id(p) for p in G.identity_parameters()}
    others = [n for n, p in G.named_parameters() if id(p) not in ids]
    assert others and all(n.split(".")[0] in ("motion", "emotion_encoder") for n in others)


def test_reconstruction_and_adversarial_losses():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert reconstruction_loss(a, b).item() == pytest.approx(0.5)
    z = torch.zeros(1, 1, 3, 3)
    assert d_loss(z, z).item() == pytest.approx(2 * math.log(2), rel=1e-5)
    assert g_loss(z).item() == pytest.approx(math.log(2), rel=1e-5)
    assert d_loss(torch.full_like(z, 10), torch.full_like(z, -10)).item() < 1e-3  # a perfect D
    fake = torch.zeros(1, 1, 3, 3, requires_grad=True)
    g_loss(fake).backward()
    assert (fake.grad < 0).all()  # G pushes its logits up (non-saturating)


def test_augmentation_is_consistent_deterministic_and_bounded():
    torch.manual_seed(3)
    ident = torch.rand(4, 3, 16, 16) * 2 - 1
    target = ident.clone()
    target[:, :, 4:8, 4:8] = -ident[:, :, 4:8, 4:8]  # differs only inside a square
    cfg = ColorAugmentConfig(p=1.0)
    g1 = torch.Generator().manual_seed(7)
    a1, t1 = augment_consistent(ident, target, cfg=cfg, generator=g1)
    mask = torch.ones(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = False
    assert torch.equal(a1[..., mask], t1[..., mask])  # the same transform on both images
    assert not torch.allclose(a1, ident, atol=1e-3)  # and it does something
    assert a1.min() >= -1 and a1.max() <= 1
    a2, _ = augment_consistent(ident, target, cfg=cfg, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2)
    # per-sample transforms differ; p = 0 and enabled = false are identities
    assert not torch.allclose(a1[0] - ident[0], a1[1] - ident[1])
    n1, _ = augment_consistent(ident, target, cfg=ColorAugmentConfig(p=0.0))
    assert torch.allclose(n1, ident, atol=1e-5)
    assert augment_consistent(ident, cfg=ColorAugmentConfig(enabled=False))[0] is ident
    # the global RNG drives it by default (what the trainer checkpoints)
    torch.manual_seed(11)
    x1 = augment_consistent(ident, cfg=cfg)[0]
    torch.manual_seed(11)
    assert torch.equal(x1, augment_consistent(ident, cfg=cfg)[0])


# ----------------------------------------------------------------------------------- perceptual loss
@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torchvision's cache dir pointed at an empty folder (whatever this machine has cached)."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_missing_vgg16_weights_stop_the_run(empty_hub, tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        resolve_vgg16_weights(None)
    msg = str(e.value)
    assert VGG16_FILE in msg and "loss.vgg16_weights" in msg and str(empty_hub / "checkpoints") in msg
    assert "vgg16-random" in msg  # names the explicit alternatives
    with pytest.raises(MissingWeightsError, match="does-not-exist.pth"):
        resolve_vgg16_weights(tmp_path / "does-not-exist.pth")
    cfg = TextureTrainConfig(model=small_cfg())  # the default: the paper's VGG16, no weights given
    with pytest.raises(MissingWeightsError, match="loss.vgg16_weights"):
        TextureTask(cfg).build_modules()


@pytest.mark.slow
def test_vgg16_stand_in_weights_load_from_file_and_cache(empty_hub, tmp_path):
    import torchvision

    ref = torchvision.models.vgg16()  # random init (no download): a stand-in for the ImageNet file
    path = tmp_path / "stand_in_vgg16.pth"
    torch.save(ref.state_dict(), path)
    loss, desc = build_perceptual_loss("vgg16", str(path))
    assert str(path) in desc
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = loss.vgg(x)[-1]
        theirs = ref.features[:23](((x + 1) / 2 - mean) / std)  # relu4_3
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert loss(x, x).item() == 0 and loss(x, -x).item() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    # torchvision's cache dir is used when loss.vgg16_weights is not set
    (empty_hub / "checkpoints").mkdir(parents=True)
    path.rename(empty_hub / "checkpoints" / VGG16_FILE)
    assert resolve_vgg16_weights(None) == empty_hub / "checkpoints" / VGG16_FILE
    # a file that is not VGG16
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="not torchvision's VGG16"):
        build_perceptual_loss("vgg16", str(bad))


def test_explicit_alternatives_are_named_and_random_vgg_is_fixed():
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="vgg16-random"):
        loss, desc = build_perceptual_loss("vgg16-random")
    assert torch.equal(state, torch.get_rng_state())  # building it does not consume the run's RNG
    assert "weaker" in desc
    other = random_vgg16_features()
    assert all(torch.equal(a, b) for a, b in zip(loss.vgg.state_dict().values(), other.state_dict().values()))
    with pytest.warns(UserWarning, match="none"):
        none, desc = build_perceptual_loss("none")
    assert none is None and "none" in desc


# ------------------------------------------------------------------ mesh prior flow, flow grid, region losses
def eye_image(S: int, neutral: torch.Tensor) -> torch.Tensor:
    """A bright face with dark eyes: the inside of both eye polygons of ``neutral`` is -1, the rest +1."""
    from emotalk.models.losses.region_loss import LEFT_EYE, RIGHT_EYE, polygon_mask

    eyes = torch.maximum(polygon_mask(neutral[:, list(RIGHT_EYE)], S, S),
                         polygon_mask(neutral[:, list(LEFT_EYE)], S, S))
    return (1 - 2 * eyes)[:, None].expand(-1, 3, -1, -1).contiguous(), eyes


def test_mesh_prior_flow_closes_the_eyes_of_a_blink_where_the_gaussian_prior_cannot():
    import numpy as np

    from emotalk.data.face.blinks import apply_blink
    from emotalk.models.mesh_flow import mesh_prior_flow

    S = 128
    neutral = face_landmarks(1, S)
    img, eyes = eye_image(S, neutral)
    assert eyes.sum() > 40  # the eyes are drawn: ~30 px each at 128²
    closed = torch.as_tensor(apply_blink(neutral.numpy(), np.ones(1)), dtype=torch.float32)
    dark = lambda im: float(((im[0, 0] < 0) & (eyes[0] > 0)).sum() / eyes.sum())  # noqa: E731
    assert dark(img) == 1.0
    mesh = warp(img, mesh_prior_flow(neutral, closed, S, S))
    gauss = warp(img, landmark_prior_flow(neutral, closed, S, S))
    assert dark(mesh) < 0.3  # the lid skin covers the eye (dark pixels left: the eye's outline, the lid line)
    assert dark(gauss) > 0.6  # the averaged lid motion leaves the eye open (why the mesh prior exists)
    # on the motion network's S/4 grid the ~4 px lid travel is ~1 px: much of the eye stays open
    assert dark(warp(img, mesh_prior_flow(neutral, closed, S, S // 4))) > 2 * dark(mesh)
    # half-closed: the eye keeps part of its opening
    half = torch.as_tensor(apply_blink(neutral.numpy(), np.full(1, 0.5)), dtype=torch.float32)
    assert dark(mesh) + 0.3 < dark(warp(img, mesh_prior_flow(neutral, half, S, S))) < 0.9


def test_mesh_prior_flow_is_exact_for_affine_motion_and_still_far_away():
    from emotalk.models.mesh_flow import mesh_anchors, mesh_prior_flow, mesh_triangles

    S = 64
    tri = mesh_triangles()
    assert tri.min() == 0 and tri.max() == 68 + mesh_anchors(face_landmarks(1, S)).shape[1] - 1
    neutral = face_landmarks(2, S)
    assert mesh_prior_flow(neutral, neutral, S, S).abs().max() < 1e-6  # no motion: identity warp
    driven = neutral.clone()
    driven[0, :, 0] += 3  # sample 0: the whole face 3 px right; sample 1: 2 px down
    driven[1, :, 1] += 2
    f = mesh_prior_flow(neutral[:1], driven, S, S) * (S / 2)  # crop pixels; neutral broadcast
    assert tuple(f.shape) == (2, 2, S, S)
    nose = neutral[0, 30].round().long().tolist()
    assert torch.allclose(f[0, :, nose[1], nose[0]], torch.tensor([-3.0, 0.0]), atol=1e-4)  # inside: exact
    assert torch.allclose(f[1, :, nose[1], nose[0]], torch.tensor([0.0, -2.0]), atol=1e-4)
    assert f[:, :, :2, :2].abs().max() < 1e-6 and f[:, :, -2:, -2:].abs().max() < 1e-6  # crop corners: still
    # between the face outline and the ring of anchors the motion fades out: jaw moves fully, beyond it less
    jaw = neutral[0, 8].round().long().tolist()
    below = f[0, 0, min(jaw[1] + 4, S - 1), jaw[0]]
    assert -3.0 < float(below) < -0.2


def test_flow_grid_follows_flow_stride_and_validates():
    for kind, mode in (("gaussian", "warp"), ("mesh", "warp"), ("mesh", "concat")):
        for stride in (1, 2, 4):
            cfg = small_cfg(prior_flow=True, prior_flow_kind=kind, flow_stride=stride, image_skip=True,
                            flow_mode=mode)
            G = TextureGenerator(cfg).eval()
            assert cfg.flow_size == 32 // stride
            with torch.no_grad():
                out = G(torch.zeros(2, 3, 32, 32), face_landmarks(1, 32), face_landmarks(2, 32, 1.0),
                        torch.eye(11)[:2])
            F_ = 32 // stride
            assert tuple(out["flow"].shape) == tuple(out["prior_flow"].shape) == (2, 2, F_, F_)
            assert tuple(out["flow_residual"].shape) == (2, 2, 8, 8)  # the motion network's S/4 output
            assert torch.equal(out["flow"], out["prior_flow"])  # zero-initialised residual
    assert small_cfg().flow_size == 8  # no prior: the motion network's S/4 flow
    with pytest.raises(ConfigError, match="flow_stride"):
        small_cfg(prior_flow=True, flow_stride=3).validate()
    with pytest.raises(ConfigError, match="needs model.prior_flow"):
        small_cfg(flow_stride=1).validate()
    with pytest.raises(ConfigError, match="prior_flow_kind"):
        small_cfg(prior_flow=True, prior_flow_kind="spline").validate()


def test_warp_accepts_a_finer_flow_than_the_features():
    feats = torch.rand(1, 4, 8, 8)
    fine = torch.zeros(1, 2, 32, 32)
    fine[:, 0] = 2 / 8  # one feature pixel to the right everywhere
    assert torch.allclose(warp(feats, fine), warp(feats, fine[..., ::4, ::4]), atol=1e-6)


def test_region_masks_sit_where_the_landmarks_say():
    from emotalk.models.losses.region_loss import masked_l1, polygon_mask, region_losses, region_masks

    square = torch.tensor([[[4.0, 4.0], [10.0, 4.0], [10.0, 10.0], [4.0, 10.0]]])
    m = polygon_mask(square, 16, 16)
    assert m[0, 4:11, 4:11].all() and m.sum() == 49  # pixels 4..10: inside and on the outline
    grown = polygon_mask(square, 16, 16, 1.0)  # + a band 1 px wide on each side of the outline
    assert grown[0, 3, 4:11].all() and grown[0, 11, 4:11].all() and grown[0, 4:11, 3].all()
    assert grown[0, 4:11, 11].all() and grown[0, 1, 1] == 0 and grown[0, 13, 13] == 0 and grown[0, 7, 13] == 0
    assert 77 <= grown.sum() <= 81
    half = polygon_mask(torch.cat([square, square + 2]), 32, 16)  # a batch, on a 2x finer grid
    assert half.shape == (2, 32, 32) and half[0].sum() == 13 * 13 and half[1, 23, 23] == 1 and half[0, 23, 23] == 0
    S = 64
    ident = face_landmarks(1, S)
    tgt = ident.clone()
    tgt[0, [65, 66, 67, 56, 57, 58], 1] += 6  # the mouth opens by 6 px
    masks = region_masks(ident, tgt, S, S, margin=0.0)
    at = lambda k, x, y: float(masks[k][0, 0, int(round(float(y))), int(round(float(x)))])  # noqa: E731
    eye_c = ident[0, 36:42].mean(0)
    mouth_c = tgt[0, 60:68].mean(0)
    nose = ident[0, 30]
    assert at("eyes", *eye_c) == 1 and at("eyes", *mouth_c) == 0 and at("eyes", *nose) == 0
    assert at("mouth", *mouth_c) == 1 and at("mouth", *eye_c) == 0 and at("mouth", *nose) == 0
    # a closed eye keeps the neutral eye in the region (the lid travels there)
    blink = ident.clone()
    blink[0, [37, 38], 1] = blink[0, [41, 40], 1]
    blink[0, [43, 44], 1] = blink[0, [47, 46], 1]
    assert at("eyes", *eye_c) == float(region_masks(ident, blink, S, S, 0.0)["eyes"][
        0, 0, int(round(float(eye_c[1]))), int(round(float(eye_c[0])))]) == 1
    # the losses average the error inside each region only
    target = torch.zeros(1, 3, S, S)
    pred = target + 0.5 * masks["mouth"]
    losses = region_losses(pred, target, ident, tgt, margin=0.0)
    assert float(losses["mouth"]) == pytest.approx(0.5) and float(losses["eyes"]) == 0.0
    assert float(masked_l1(pred, target, torch.zeros(1, 1, S, S))) == 0.0  # empty region: no loss
    with pytest.raises(ValueError, match="spatial size"):
        masked_l1(pred, target, torch.ones(1, 1, 8, 8))


def test_region_losses_enter_the_training_step():
    mcfg = small_cfg(image_skip=True, prior_flow=True, prior_flow_kind="mesh", flow_stride=1)
    cfg = TextureTrainConfig(model=mcfg)
    cfg.loss.perceptual, cfg.loss.lambda_adv = "none", 0.0
    cfg.loss.lambda_eyes, cfg.loss.lambda_mouth = 1.0, 2.0
    task = TextureTask(cfg)
    with pytest.warns(UserWarning, match="perceptual loss: none"):
        modules = task.build_modules()
    ctx = StepContext(modules, modules, task.build_optimizers(modules), torch.device("cpu"), None, None, 0.0)
    B = 2
    batch = {"identity": torch.rand(B, 3, 32, 32) * 2 - 1, "target": torch.rand(B, 3, 32, 32) * 2 - 1,
             "identity_landmarks": face_landmarks(B, 32), "target_landmarks": face_landmarks(B, 32, 1.0),
             "emotion": torch.eye(11)[:B]}
    logs = task.train_step(batch, ctx)
    assert logs["rec_eyes"] > 0 and logs["rec_mouth"] > 0
    assert logs["total"] == pytest.approx(logs["rec"] + logs["rec_eyes"] + 2 * logs["rec_mouth"], rel=1e-4)
    cfg.loss.lambda_eyes = -1.0
    with pytest.raises(ConfigError, match="lambda_eyes"):
        cfg.validate()


def test_lid_slide_moves_the_lid_as_a_plate_and_changes_nothing_else():
    """lid_slide_flow: at a blink the rows of the lid band above the driven lid sample the neutral rows one
    lid travel up (a translation: the lash line keeps its height; the mesh stretches it), the driven lid
    samples the neutral lid, the brow stays the brow; no motion or an opening eye: the mesh flow as it was."""
    import numpy as np

    from emotalk.data.face.blinks import apply_blink
    from emotalk.models.heatmap import LID_BAND, lid_slide_flow
    from emotalk.models.mesh_flow import mesh_prior_flow

    S = 128
    neutral = face_landmarks(1, S)
    closed = torch.as_tensor(apply_blink(neutral.numpy(), np.ones(1)), dtype=torch.float32)
    mesh = mesh_prior_flow(neutral, closed, S, S)
    slid = lid_slide_flow(mesh, neutral, closed, S)
    assert torch.equal(slid[:, 0], mesh[:, 0])  # x untouched
    x = int(round(float(neutral[0, [37, 38], 0].mean())))  # a column through the lid's middle
    yu, yu2 = float(neutral[0, [37, 38], 1].mean()), float(closed[0, [37, 38], 1].mean())
    travel, band = yu2 - yu, LID_BAND * (yu - float(neutral[0, [19, 20], 1].mean()))
    assert travel > 2 and band > 2
    src = lambda f, y: y + float(f[0, 1, y, x]) * S / 2  # noqa: E731 - source row of output row y (crop px)
    rows = [y for y in range(int(np.ceil(yu2 - band)) + 1, int(np.floor(yu2)) + 1)]
    assert len(rows) >= 2
    for y in rows:
        assert src(slid, y) == pytest.approx(y - travel, abs=0.35)  # rigid: the lid slides by its travel
    # the mesh stretched the same rows: their sources lie closer than 1 px per output row (a thicker lash line)
    assert src(mesh, rows[-1]) - src(mesh, rows[0]) < 0.85 * (rows[-1] - rows[0])
    brow = int(round(float(closed[0, [19, 20], 1].mean())))
    assert src(slid, brow) == pytest.approx(src(mesh, brow), abs=0.6)  # continuous at the brow
    assert lid_slide_flow(mesh_prior_flow(neutral, neutral, S, S), neutral, neutral, S).abs().max() < 1e-6
    wide = neutral.clone()
    wide[0, [37, 38, 43, 44], 1] -= 2  # eyes opening wider: the lid moves up, the mesh's stretch is kept
    m2 = mesh_prior_flow(neutral, wide, S, S)
    assert torch.equal(lid_slide_flow(m2, neutral, wide, S), m2)
    G = TextureGenerator(small_cfg(image_size=32, prior_flow=True, prior_flow_kind="mesh", flow_stride=1,
                                   lid_slide=True))
    n32, c32 = face_landmarks(1, 32), torch.as_tensor(apply_blink(face_landmarks(1, 32).numpy(), np.ones(1)),
                                                      dtype=torch.float32)
    assert torch.allclose(G.prior_flow(n32, c32), lid_slide_flow(mesh_prior_flow(n32, c32, 32, 32), n32, c32, 32))
