"""One-shot fine-tuning of G_T: only E_T/D_T change, the photo's reconstruction improves, the base is untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emotalk.config import to_dict
from emotalk.errors import InputError
from emotalk.inference import one_shot as os_mod
from emotalk.inference.one_shot import one_shot_finetune
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig
from emotalk.data.io.checkpoint import save_checkpoint
from emotalk.data.loading import load_model
from emotalk.train.texture_task import TextureTrainConfig
from texture_fixtures import face_crop, random_motion, warp_frame

S = 64


def tiny_model_cfg() -> TextureModelConfig:
    return TextureModelConfig(image_size=S, width_mult=0.25, emotion_feature_dim=32, bottleneck_blocks=1)


def torch_adam(params, lr, betas=(0.5, 0.999)):
    """torch's own Adam update (``torch.optim.adam.adam``, single-tensor) as ``step()``: constructing
    ``torch.optim.Adam`` imports torch._dynamo (5-7 s in a fresh process); the functional form does not."""
    from torch.optim.adam import adam

    params = list(params)
    state = [[torch.zeros_like(p) for p in params] for _ in range(2)] + [[torch.tensor(0.0) for _ in params]]

    @torch.no_grad()
    def step():
        adam(params, [p.grad for p in params], state[0], state[1], [], state[2], foreach=False, capturable=False,
             differentiable=False, fused=None, grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
             beta1=betas[0], beta2=betas[1], lr=lr, weight_decay=0.0, eps=1e-8, maximize=False)
        for p in params:
            p.grad = None

    return step


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
    step = torch_adam(G.parameters(), lr=2e-4)
    emo = torch.zeros(4, G.cfg.emotion_dim)
    emo[:, 0] = emo[:, 8] = 1
    for _ in range(25):
        out = G(ident.expand(4, -1, -1, -1), torch.from_numpy(lm)[None].expand(4, -1, -1), driven, emo)["image"]
        loss = (out - target).abs().mean()
        loss.backward()
        step()
    return G.eval()


def _close(a, b, atol=1e-6, rtol=1e-5):
    """torch.allclose with the worst difference in the message (torch.testing.assert_close imports
    torch.distributed on first use: seconds)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"max |a - b| = {float((a - b).abs().max()):.3g}"


def _inputs(G):
    """A smooth random 32x32 'photo' with the canonical crop's landmarks (no face detector needed)."""
    from torch.nn import functional as F

    from emotalk.data.face.alignment import crop_template

    img = F.interpolate(torch.rand(1, 3, 8, 8) * 2 - 1, size=(32, 32), mode="bilinear", align_corners=False)
    lm = torch.as_tensor(crop_template(32), dtype=torch.float32)[None]
    return img, lm, os_mod.neutral_emotion(G)


@pytest.mark.parametrize("extra", [{}, {"flow_mode": "concat"},
                                   {"image_skip": True, "prior_flow": True, "prior_flow_kind": "gaussian",
                                    "flow_stride": 2}])
def test_frozen_motion_render_equals_the_model_forward(extra, one_torch_thread):
    """E_T -> fixed warp/gate -> D_T with the frozen motion reproduces TextureGenerator.forward on the photo,
    in every flow mode."""
    torch.manual_seed(1)
    cfg = TextureModelConfig(image_size=32, width_mult=0.125, emotion_feature_dim=8, bottleneck_blocks=1, **extra)
    G = TextureGenerator(cfg).eval()
    with torch.no_grad():  # a non-zero flow head, so the warp is not the identity
        G.motion.flow_head.weight.normal_(0, 0.05)
    img, lmt, emo = _inputs(G)
    with torch.no_grad():
        feats = G.encode_identity(img)
        motion, image = os_mod.frozen_motion(G, feats, lmt, emo)
        ref = G(img, lmt, lmt, emo)["image"]
        assert float(motion.flow.abs().max()) > 1e-3
        work_e = os_mod.working_copy(G.identity_encoder, torch.float32)
        work_d = os_mod.working_copy(G.decoder, torch.float32)
        out = os_mod.render(G, work_d, os_mod.encode(work_e, img.contiguous(memory_format=torch.channels_last)),
                            motion)
    _close(image, ref)
    _close(out, ref, atol=2e-5, rtol=1e-4)


def test_frozen_motion_gradients_equal_the_forward_with_the_motion_input_detached(one_torch_thread):
    """The frozen-motion step's gradients (motion computed once, fixed warp) are the model's own gradients
    when the motion network's input is detached, and differ from back-propagating through it (full)."""
    torch.manual_seed(2)
    G = TextureGenerator(TextureModelConfig(image_size=32, width_mult=0.125, emotion_feature_dim=8,
                                            bottleneck_blocks=1)).eval()
    with torch.no_grad():
        G.motion.flow_head.weight.normal_(0, 0.05)
    img, lmt, emo = _inputs(G)
    for p in G.parameters():
        p.requires_grad_(False)
    params = G.identity_parameters()
    for p in params:
        p.requires_grad_(True)

    def grads(loss):
        return [g.clone() for g in torch.autograd.grad(loss, params)]

    full = grads((G(img, lmt, lmt, emo)["image"] - img).abs().mean())
    hook = G.motion.register_forward_pre_hook(lambda m, args: tuple(a.detach() for a in args))
    detached = grads((G(img, lmt, lmt, emo)["image"] - img).abs().mean())
    hook.remove()
    with torch.no_grad():
        motion, _ = os_mod.frozen_motion(G, G.encode_identity(img), lmt, emo)
    e, d = os_mod.working_copy(G.identity_encoder, torch.float32), os_mod.working_copy(G.decoder, torch.float32)
    work = [p for m in (e, d) for p in m.parameters()]
    out = os_mod.render(G, d, os_mod.encode(e, img.contiguous(memory_format=torch.channels_last)), motion)
    frozen = [g.contiguous() for g in torch.autograd.grad((out - img).abs().mean(), work)]
    for a, b in zip(frozen, detached):
        _close(a, b, atol=1e-6, rtol=1e-4)
    # E_T's gradient through the motion network exists and is what the frozen-motion method leaves out
    assert any(not torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(full, detached))


def _tiny_moving_model(seed: int) -> TextureGenerator:
    torch.manual_seed(seed)
    G = TextureGenerator(TextureModelConfig(image_size=32, width_mult=0.125, emotion_feature_dim=8,
                                            bottleneck_blocks=1)).eval()
    with torch.no_grad():
        G.motion.flow_head.weight.normal_(0, 0.05)
    return G


def test_full_method_takes_the_plain_adam_steps(one_torch_thread):
    """method=full in fp32 (ExactStep working copies, multi-tensor Adam, losses read once) takes exactly the
    steps of the plain loop: whole-model forward, L1, backward, torch's Adam on E_T/D_T."""
    import copy

    G = _tiny_moving_model(5)
    img, lm, emo = _inputs(G)
    ref = copy.deepcopy(G)
    for p in ref.parameters():
        p.requires_grad_(False)
    params = ref.identity_parameters()
    for p in params:
        p.requires_grad_(True)
    step = torch_adam(params, lr=1e-3)
    losses = []
    for _ in range(3):
        loss = (ref(img, lm, lm, emo)["image"] - img).abs().mean()
        loss.backward()
        step()
        losses.append(float(loss.detach()))
    adapted, info = one_shot_finetune(G, img, lm[0], steps=3, lr=1e-3, precision="fp32", return_info=True)
    assert info.method == "full" and info.precision == "fp32"
    assert info.losses == pytest.approx(losses, rel=1e-5)
    base = G.state_dict()
    for (k, a), b in zip(adapted.state_dict().items(), ref.state_dict().values()):
        # Adam turns a gradient that is zero up to rounding (a conv bias before an instance norm, a weight
        # element with |g| ~ 1e-6 max|g|) into a full lr-sized step: allow those, never more than 3 steps
        assert float((a - b).abs().max()) <= 3e-3 + 1e-6, k
        if float((b - base[k]).abs().max()) > 3e-4:  # a real update (3 steps of lr 1e-3)
            agree = ((a - b).abs() <= 5e-6 + 1e-4 * b.abs()).float().mean()
            assert agree >= 0.995, (k, float(agree))


def _grads_ref(G, img, lm, emo):
    """The model's own forward (the previous definition of a step) and its E_T/D_T gradients of the L1."""
    for p in G.parameters():
        p.requires_grad_(False)
    params = G.identity_parameters()
    for p in params:
        p.requires_grad_(True)
    out = G(img, lm, lm, emo)["image"]
    return out.detach(), torch.autograd.grad((out - img).abs().mean(), params)


@pytest.mark.parametrize("extra", [{}, {"flow_mode": "concat"},
                                   {"image_skip": True, "prior_flow": True, "prior_flow_kind": "gaussian",
                                    "flow_stride": 2}])
def test_exact_step_equals_the_model_forward_and_its_gradients(extra, one_torch_thread):
    """ExactStep (folded BatchNorm, gather warp, channels-last upsampling/AdaIN, cached constants) computes
    TextureGenerator.forward's image and the same E_T/D_T gradients (fp32), leaves the model untouched,
    and in bf16 stays within bf16 rounding of it."""
    from emotalk.inference.one_shot_step import ExactStep

    torch.manual_seed(1)
    cfg = TextureModelConfig(image_size=32, width_mult=0.125, emotion_feature_dim=8, bottleneck_blocks=1, **extra)
    G = TextureGenerator(cfg).eval()
    with torch.no_grad():  # a moving flow and BatchNorm statistics that are not the identity
        G.motion.flow_head.weight.normal_(0, 0.05)
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2), m.weight.normal_(1, 0.1)
                m.bias.normal_(0, 0.1)
    img, lm, emo = _inputs(G)
    state = {k: v.clone() for k, v in G.state_dict().items()}
    ref, gref = _grads_ref(G, img, lm, emo)
    step = ExactStep(G, lm, emo, torch.float32)
    master, work = step.pairs(G)
    assert all(a is b for a, b in zip(master, G.identity_parameters()))
    out = step(img.contiguous(memory_format=torch.channels_last))
    _close(out, ref, atol=2e-6, rtol=1e-5)
    grads = torch.autograd.grad((out - img).abs().mean(), work)
    names = G.identity_parameter_names()
    for n, g, r in zip(names, grads, gref):
        if float(r.norm()) > 1e-6:  # (a bias before an instance norm has a zero gradient up to rounding)
            assert float((g - r).norm() / r.norm()) < 1e-4, n
    assert all(torch.equal(v, state[k]) and v.dtype == state[k].dtype for k, v in G.state_dict().items())
    with torch.no_grad():
        low = ExactStep(G, lm, emo, torch.bfloat16)(img.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert low.dtype == torch.bfloat16 and float((low.float() - ref).abs().max()) < 0.03


def test_upsample2x_backward_is_bilinear_upsampling_adjoint():
    from torch.nn import functional as F

    from emotalk.inference.one_shot_step import upsample_to

    torch.manual_seed(4)
    for shape, size in (((1, 3, 5, 7), (10, 14)), ((1, 4, 6, 6), (9, 9))):  # x2 (own backward) and not
        x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        g = torch.randn(1, shape[1], *size, dtype=torch.float64)
        ref = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        out = upsample_to(x, size)
        _close(out, ref, atol=1e-12)
        # (a scalar, not grad_outputs: torch.autograd.grad with a grad tensor imports sympy, ~2 s)
        _close(torch.autograd.grad((out * g).sum(), x)[0], torch.autograd.grad((ref * g).sum(), x)[0], atol=1e-12)


def test_warp_gate_equals_grid_sample_warp_times_the_gate_with_its_gradients():
    from torch.nn import functional as F

    from emotalk.inference.one_shot_step import warp_gate
    from emotalk.models.texture_blocks import warp

    torch.manual_seed(3)
    flow = (torch.randn(1, 2, 8, 8, dtype=torch.float64) * 0.6).clamp(-0.95, 0.95).requires_grad_(True)
    occ = torch.rand(1, 1, 8, 8, dtype=torch.float64).requires_grad_(True)
    for size in (8, 16, 4):
        f = torch.randn(1, 5, size, size, dtype=torch.float64).requires_grad_(True)
        o = occ if size == 8 else F.interpolate(occ, size=(size, size), mode="bilinear", align_corners=False)
        ref = warp(f.float(), flow).double() * o  # warp() runs grid_sample in fp32
        g = torch.randn_like(ref)
        gref = torch.autograd.grad((ref * g).sum(), (f, flow, occ))
        out = warp_gate(f.contiguous(memory_format=torch.channels_last), flow, occ)
        assert out.is_contiguous(memory_format=torch.channels_last)
        _close(out, ref, atol=1e-5, rtol=1e-5)
        for a, b in zip(torch.autograd.grad((out * g).sum(), (f, flow, occ)), gref):
            _close(a, b, atol=1e-4, rtol=1e-4)


def test_perceptual_to_target_equals_from_features(one_torch_thread):
    """The one-shot perceptual term (per-layer L1 with a hand-written sign gradient, VGG copied once in the
    working dtype with in-place ReLUs) equals PerceptualLoss.from_features in value and gradient."""
    from emotalk.inference.one_shot_step import converted_copy, perceptual_to_target
    from emotalk.models.losses.perceptual_loss import PerceptualLoss, random_vgg16_features

    per = PerceptualLoss(random_vgg16_features(), layer_weights=(1.0, 0.5, 2.0, 1.0))
    torch.manual_seed(0)
    cl = torch.channels_last
    t = (torch.rand(1, 3, 32, 32) * 2 - 1).contiguous(memory_format=cl)
    x = (t + 0.1 * torch.randn_like(t)).contiguous(memory_format=cl).requires_grad_(True)
    ref = per.from_features(x, per.target_features(t))
    gref = torch.autograd.grad(ref, x)[0]
    work = converted_copy(per, torch.float32)
    val = perceptual_to_target(work, t)(x)
    _close(val.detach(), ref.detach(), atol=1e-7)
    _close(torch.autograd.grad(val, x)[0], gref, atol=1e-8, rtol=1e-4)
    assert all(not p.requires_grad for p in work.parameters()) and all(p.requires_grad is False
                                                                       for p in per.parameters())


def test_fixed_warp_is_grid_sample_with_border_padding_times_the_gate():
    from torch.nn import functional as F

    from emotalk.models.texture_blocks import warp

    torch.manual_seed(3)
    flow = (torch.randn(1, 2, 8, 8) * 0.6).clamp(-1, 1)  # large: samples beyond the border too
    occ = torch.rand(1, 1, 8, 8)
    for size in (8, 16, 4):
        f = torch.randn(1, 5, size, size)
        ref = warp(f, flow) * (occ if size == 8 else F.interpolate(occ, size=(size, size), mode="bilinear",
                                                                     align_corners=False))
        out = os_mod.FixedWarp(flow, occ, (size, size), torch.float32)(f.contiguous(memory_format=torch.channels_last))
        _close(out, ref, atol=1e-5, rtol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last)


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


def test_tap_gather_is_the_sparse_bilinear_matrix_with_its_gradients():
    """TapGather(rows, idx, w) = A @ rows for the (N_out, N_in) matrix with w[i, k] at (i, idx[i, k]); its
    backward is A^T g for the rows (rows read by no tap, and by many, included) and <g_i, rows[idx_ik]> for
    the weights."""
    from emotalk.inference.one_shot_step import TapGather

    torch.manual_seed(6)
    n_in, n_out, c = 7, 9, 3
    idx = torch.randint(0, n_in - 2, (n_out, 4))  # the last two rows are never read
    idx[:3] = 0  # one row read by many taps
    rows = torch.randn(n_in, c, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n_out, 4, dtype=torch.float64, requires_grad=True)
    A = torch.zeros(n_out, n_in, dtype=torch.float64).index_put((torch.arange(n_out)[:, None].expand(-1, 4), idx),
                                                                  w, accumulate=True)
    g = torch.randn(n_out, c, dtype=torch.float64)
    out = TapGather.apply(rows, idx, w)
    _close(out, A @ rows, atol=1e-12)
    grows, gw = torch.autograd.grad((out * g).sum(), (rows, w))
    _close(grows, A.detach().T @ g, atol=1e-12)
    _close(gw, (rows.detach()[idx] * g[:, None]).sum(-1), atol=1e-12)
    assert float(grows[-2:].abs().max()) == 0.0


def test_l1s_are_measured_when_read_from_the_weights_at_the_end_of_the_call(one_torch_thread):
    """The fp32 L1s are not computed inside the call; read later they are the base model's and the adapted
    copy's as the call left them, even if the returned copy was changed meanwhile; then the probe is let go."""
    G = _tiny_moving_model(7)
    img, lm, emo = _inputs(G)
    with torch.no_grad():
        base = float((G(img, lm, lm, emo)["image"] - img).abs().mean())
    adapted, info = one_shot_finetune(G, img, lm[0], steps=2, lr=1e-3, precision="fp32", return_info=True)
    assert info._l1 == {} and info._measure is not None  # nothing measured yet
    assert len(info.step_seconds) == 2 and all(t > 0 for t in info.step_seconds)
    with torch.no_grad():
        after = float((adapted(img, lm, lm, emo)["image"] - img).abs().mean())
        for p in adapted.identity_parameters():
            p.add_(0.1)  # the caller changes its copy: the record keeps the call's result
    assert info.l1_after == pytest.approx(after, abs=1e-7)
    assert info.l1_before == pytest.approx(base, abs=1e-7)
    assert info.l1_after < info.l1_before and info._measure is None and info.l1_seconds > 0
    assert "_measure" not in repr(info)


def test_thread_fit_caps_at_the_free_cores_and_restores(monkeypatch):
    from emotalk.inference import thread_fit

    start, real = torch.get_num_threads(), thread_fit.free_cores
    n = real()  # this machine's reading: a count of cores (Linux) or unknown
    assert n is None or 0 <= n <= thread_fit._cores()
    try:
        torch.set_num_threads(2)
        free = iter([0, 1, 2, 5])
        monkeypatch.setattr(thread_fit, "free_cores", lambda: next(free))
        with thread_fit.ThreadFit("auto", "cpu") as fit:  # entry: 0 free -> at least one thread
            assert torch.get_num_threads() == 1
            assert [fit.refit(), fit.refit(), fit.refit()] == [1, 2, 2]  # never above the count at entry
        assert fit.used == [1, 1, 2, 2] and torch.get_num_threads() == 2
        with thread_fit.ThreadFit(1, "cpu") as fit:  # a number: fixed
            assert torch.get_num_threads() == 1 and fit.refit() == 1
        assert torch.get_num_threads() == 2
        with thread_fit.ThreadFit("auto", "cuda"):  # not the CPU: untouched (free_cores not even read)
            assert torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            thread_fit.ThreadFit(0)
    finally:
        torch.set_num_threads(start)
