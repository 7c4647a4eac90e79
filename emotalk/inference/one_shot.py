"""One-shot fine-tuning of G_T on a single neutral photo of a new person (§4.1 "One-shot learning").

"We only update the image encoder (E_T) and decoder layers (D_T) weights using the single image in neutral
emotion, while keeping the network weights for the rest of G_T unchanged. This fine-tuning is done for up
to 5 iterations, and it takes around 3-4 seconds."

:func:`one_shot_finetune` works on a deep copy: the given generator is never modified. The copy is put in
eval mode (BatchNorm uses its running statistics, which stay untouched, and a batch of one image is fine),
every parameter outside E_T/D_T is frozen, and Adam updates E_T/D_T for ``steps`` iterations on the
reconstruction of the photo itself: identity = target = the photo, driven landmarks = neutral landmarks
(heatmap difference zero), emotion = neutral at intensity 1. The loss is ``λ_rec L1 (+ λ_per L_per)`` when
a perceptual module (eq. 7) is passed.

Speed (issue 16 §2)
-------------------
``method="full"`` (default) computes exactly the paper's gradient: every step is G_T's whole forward and
backward (E_T's ``f_t`` also feeds the frozen motion network, so E_T's gradient flows back through it;
frozen parameters get no weight gradients). What makes it fast is the arithmetic: ``precision="auto"``
(default) runs the steps on a **bf16 working copy** in channels-last where the device has native bf16 (AMX /
AVX512-BF16 CPUs, Ampere+ GPUs), else fp32: forward and backward in bf16 with no per-op casts or layout
reorders, the gradients copied to the fp32 master weights of E_T/D_T, Adam in fp32, the working copy
refreshed. (Autocast, tried before, was no faster than fp32 on the 2-core AMX CPU: it flips activations
between fp32 and bf16 ops.) The step itself runs on :class:`~emotalk.inference.one_shot_step.ExactStep`
(same function and gradients as the model's forward; BatchNorm folded, warping as a channels-last gather,
upsampling/AdaIN kept channels-last, the per-photo constants computed once, only the tensors needed
converted, once): 0.4-0.6x the time of the whole-model bf16 step it replaced (measured interleaved in one
process on the shared 2-core machine; see that module for the profile). Adam is written out with
multi-tensor ops (:class:`Adam`; ``torch.optim`` costs seconds of import). The perceptual target's VGG
features are computed once and each layer's L1 has a hand-written sign gradient in bf16
(:func:`~emotalk.inference.one_shot_step.perceptual_to_target`); the losses stay on the device until the end
(no host sync per step). The L1 before/after are fp32 forwards of the base / adapted model (a bf16 output is
quantised to ~0.004, as large as a good reconstruction's L1), measured when :class:`OneShotInfo` is read, not
in the call: at 256² on the 2-core CPU they cost about as much as three steps and ``generate`` never reads them.
On the CPU the steps run on as many threads as other processes leave cores free
(:class:`~emotalk.inference.thread_fit.ThreadFit`): with 2 threads and one other busy process the 5 steps took
25-57 s instead of ~2-3 s, with 1 thread 4-6 s.

``method="frozen_motion"`` (opt-in, faster): the motion network's flow and occlusion
for the photo are computed once with the base weights and held fixed, so a step is only E_T -> warp/gate
-> D_T and back (no motion network forward or backward: about a third of a step's FLOPs). With
the flow fixed the warp is a fixed linear map: :class:`FixedWarp` precomputes its bilinear x occlusion
weights and applies it as a channels-last gather in the working dtype. It drops E_T's gradient through the
motion network, and on the demo's tiny G_T that costs quality (neutral photo L1 after 5 steps 0.0159 vs
0.0118 with ``full``; held-out expressive frames 0.0632 vs 0.0628, base 0.0642), so it is not the default.
(Over 400 lines: both methods share the input checks, working copies, Adam and the deferred-L1 record;
split, one loop would spread over two files.)
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from emotalk.data.datasets.texture import to_tensor_image
from emotalk.data.emotions import emotion_vector
from emotalk.errors import InputError
from emotalk.inference.fast_ops import bilinear_taps
from emotalk.inference.fast_texture import resolve_precision
from emotalk.inference.one_shot_step import ExactStep, TapGather, converted_copy, perceptual_to_target
from emotalk.inference.thread_fit import ThreadFit
from emotalk.models.losses.perceptual_loss import PerceptualLoss
from emotalk.models.losses.reconstruction_loss import reconstruction_loss
from emotalk.models.texture_blocks import identity_grid, style_statistics, warp
from emotalk.models.texture_generator import IdentityFeatures, TextureGenerator

log = logging.getLogger(__name__)

METHODS = ("full", "frozen_motion")


@dataclass
class OneShotInfo:
    """What a fine-tuning did. ``l1_before`` / ``l1_after`` (the photo's reconstruction L1 by the base model
    and by the adapted copy, fp32 forwards) are measured on first access, not during the call: they are two
    whole-G_T fp32 forwards (at 256² on the 2-core CPU about as long as three fine-tuning steps) that the
    generation pipeline never reads. The record keeps what they need: the caller's base generator (its
    frozen parts; do not change them before reading the L1s) and copies of E_T/D_T before and after the steps
    (dropped once both are measured)."""

    steps: int
    lr: float
    seconds: float  # wall time of the fine-tuning (iterations, frozen_motion: + its one motion pass; the
    #                 copy and the L1 forwards excluded)
    losses: list[float] = field(default_factory=list)  # loss before each update (working precision)
    device: str = "cpu"
    precision: str = "fp32"  # arithmetic of the fine-tuning steps (bf16: a bf16 working copy of E_T/D_T)
    method: str = "full"  # full: exact gradients; frozen_motion: the motion network's answer held fixed
    prepare_seconds: float = 0.0  # part of ``seconds`` spent on the frozen motion (frozen_motion method)
    setup_seconds: float = 0.0  # before ``seconds``: the copy of G_T, the flags, the E_T/D_T snapshot
    step_seconds: list[float] = field(default_factory=list)  # each iteration's wall time (CPU only: on a GPU
    #                 the steps are queued without a host sync, their times would be launch times)
    step_threads: list[int] = field(default_factory=list)  # torch CPU threads of each iteration (CPU only)
    l1_seconds: float = 0.0  # time spent measuring the L1s so far (on access)

    def __post_init__(self):
        # not dataclass fields (asdict/repr never copy the weights): the L1s known so far, and the probe
        # that measures the others (dropped once both are known)
        self._l1: dict[str, float] = {}
        self._measure: _L1Probe | None = None

    @property
    def l1_before(self) -> float:
        """Reconstruction L1 of the photo by the base model (fp32; NaN when it cannot be measured)."""
        return self._l1_of("before")

    @property
    def l1_after(self) -> float:
        """Reconstruction L1 of the photo by the adapted copy (fp32)."""
        return self._l1_of("after")

    def _l1_of(self, which: str) -> float:
        if which not in self._l1:
            t0 = time.perf_counter()
            self._l1[which] = self._measure(which) if self._measure is not None else float("nan")
            self.l1_seconds += time.perf_counter() - t0
            if {"before", "after"} <= self._l1.keys():
                self._measure = None  # release the weights and the photo
        return self._l1[which]


class _L1Probe:
    """The fp32 reconstruction L1 of the photo by ``base`` with E_T/D_T replaced by a saved state (the one
    before or after the steps), for :class:`OneShotInfo`'s deferred L1s."""

    def __init__(self, base: TextureGenerator, device: torch.device, img: Tensor, lm: Tensor, emo: Tensor,
                 states: dict[str, dict[str, Tensor]]):
        self.base, self.device, self.inputs, self.states = base, device, (img, lm, emo), states
        self.model: TextureGenerator | None = None  # one fp32 copy of the base for both L1s

    def __call__(self, which: str) -> float:
        if self.model is None:
            self.model = copy.deepcopy(self.base).to(self.device).eval()
        model = self.model
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.states[which].items():
                params[name].copy_(value)
        with ThreadFit("auto", self.device):  # (2 threads beside a busy process: 3-5 s instead of ~1)
            return _fp32_l1(model, *self.inputs)


def _identity_state(model: TextureGenerator) -> dict[str, Tensor]:
    """A copy of E_T/D_T's parameters (what the fine-tuning changes), by name."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone(memory_format=torch.contiguous_format)
            for n in model.identity_parameter_names()}


def _as_image(image, size: int, device) -> Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"the photo must be an RGB uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
        image = to_tensor_image(image)
    t = torch.as_tensor(image, dtype=torch.float32)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3 or tuple(t.shape[-2:]) != (size, size):
        raise InputError(f"the photo must be one {size}x{size} RGB face crop (the model's image_size), got "
                         f"shape {tuple(t.shape)}")
    return t.to(device)


def _as_landmarks(landmarks, device) -> Tensor:
    t = landmarks if torch.is_tensor(landmarks) else torch.from_numpy(np.asarray(landmarks, dtype=np.float32))
    t = t.float()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if tuple(t.shape) != (1, 68, 2):
        raise InputError(f"landmarks must be (68, 2) crop pixels, got {tuple(t.shape)}")
    return t.to(device)


def neutral_emotion(generator: TextureGenerator) -> Tensor:
    cfg = generator.cfg
    vocab = list(cfg.emotions)
    name = "neutral" if "neutral" in vocab else None
    if name is None:  # a vocabulary without neutral (e.g. the paper's six emotions): all-zero emotion part
        vec = np.zeros(cfg.emotion_dim, np.float32)
        vec[len(vocab)] = 1.0
        return torch.from_numpy(vec)[None]
    return torch.from_numpy(emotion_vector(name, 1, vocab, cfg.intensity_levels))[None]


# ------------------------------------------------------------------------------------------ frozen parts
class FrozenMotion(NamedTuple):
    """The frozen parts' answer for the photo (no gradient): G_T's flow and occlusion for G' = G."""

    flow: Tensor  # (1, 2, F, F) final flow (prior + residual where the model has a prior)
    occlusion: Tensor  # (1, 1, S/4, S/4) visibility
    occlusion_maps: Tensor  # (1, 1|2, S/4, S/4)
    warped_image: Tensor | None  # the flow-warped photo (``image_skip``), else None


def frozen_motion(generator: TextureGenerator, features: IdentityFeatures, landmarks: Tensor,
                  emotion: Tensor) -> tuple[FrozenMotion, Tensor]:
    """Run the frozen motion network once on ``features`` (E_T's output for the photo, no gradient) with
    driven = neutral landmarks. Returns the frozen motion and the model's output image for the photo."""
    detached = IdentityFeatures([s.detach() for s in features.skips], features.style.detach(), features.image)
    with torch.no_grad():
        out = generator(detached, landmarks, landmarks, emotion)
    warped = warp(features.image, out["flow"]) if generator.cfg.image_skip else None
    return FrozenMotion(out["flow"], out["occlusion"], out["occlusion_maps"], warped), out["image"]


def encode(encoder: nn.Module, image: Tensor) -> IdentityFeatures:
    """:meth:`TextureGenerator.encode_identity` with a given E_T (the bf16 working copy)."""
    skips = encoder(image)
    return IdentityFeatures(skips, style_statistics(skips[-1].float()).to(skips[-1].dtype), image)


class FixedWarp:
    """``warp(f, flow) * occlusion`` for one fixed flow and occlusion, as a gather in channels-last layout.

    With the flow frozen, backward warping is a fixed linear map: every output pixel is the same bilinear
    mix of (at most) four input pixels, gated by the same visibility. The taps and their weights (times the
    occlusion) are computed once, exactly as ``grid_sample`` (``align_corners=False``, border padding) and
    :func:`emotalk.models.texture_blocks.warp` (flow resampled to the feature grid) would
    (:func:`emotalk.inference.fast_ops.bilinear_taps`); each step is then one weighted row gather of the
    (H·W, C) channels-last matrix (:class:`~emotalk.inference.one_shot_step.TapGather`). Unlike
    ``grid_sample`` (NCHW, fp32 only on the CPU) it keeps the features - and their gradients - in the
    network's dtype and channels-last layout, so no layout or dtype conversions run around it. Batch 1."""

    def __init__(self, flow: Tensor, occlusion: Tensor, size: tuple[int, int], dtype: torch.dtype):
        H, W = size
        fl = flow.float()
        if fl.shape[-2] < H:  # as warp(): a coarser flow is upsampled bilinearly, a finer one averaged
            fl = F.interpolate(fl, size=(H, W), mode="bilinear", align_corners=False)
        elif fl.shape[-2] > H:
            fl = F.adaptive_avg_pool2d(fl, (H, W))
        occ = occlusion.float()
        if occ.shape[-2:] != (H, W):
            occ = F.interpolate(occ, size=(H, W), mode="bilinear", align_corners=False)
        grid = identity_grid(H, W, fl.device, torch.float32) + fl.permute(0, 2, 3, 1)
        self.index, weight = bilinear_taps(grid, (H, W), occ)
        self.weight = weight.to(dtype)
        self.size = (H, W)

    def __call__(self, features: Tensor) -> Tensor:
        (H, W), C = self.size, features.shape[1]
        rows = features.permute(0, 2, 3, 1).reshape(H * W, C)  # a view for channels-last features
        return TapGather.apply(rows, self.index, self.weight).view(1, H, W, C).permute(0, 3, 1, 2)


def fixed_warps(generator: TextureGenerator, features: IdentityFeatures, motion: FrozenMotion,
                dtype: torch.dtype) -> list[FixedWarp] | None:
    """One :class:`FixedWarp` per E_T skip (``flow_mode: warp``), else None."""
    if generator.cfg.flow_mode != "warp":
        return None
    return [FixedWarp(motion.flow, motion.occlusion, tuple(s.shape[-2:]), dtype) for s in features.skips]


def render(generator: TextureGenerator, decoder: nn.Module, features: IdentityFeatures, motion: FrozenMotion,
           warps: list[FixedWarp] | None = None) -> Tensor:
    """G_T's output image from E_T's ``features`` and the frozen motion: the part of
    :meth:`TextureGenerator.forward` after the motion network (kept equal to it by tests/test_one_shot.py).
    ``warps``: from :func:`fixed_warps` (built here when not given)."""
    f_t, dtype = features.f_t, features.f_t.dtype
    cl = torch.channels_last
    if generator.cfg.flow_mode == "warp":
        warps = warps if warps is not None else fixed_warps(generator, features, motion, dtype)
        skips = [w(s) for w, s in zip(warps, features.skips)]
        dec_in = skips[-1]
    else:
        skips = list(features.skips)
        flow = motion.flow
        flow_in = flow if flow.shape[-2:] == f_t.shape[-2:] else F.adaptive_avg_pool2d(flow, f_t.shape[-2:])
        dec_in = torch.cat([flow_in.to(dtype).contiguous(memory_format=cl),
                            motion.occlusion_maps.to(dtype).contiguous(memory_format=cl), f_t], dim=1)
    warped = None if motion.warped_image is None else motion.warped_image.to(dtype).contiguous(memory_format=cl)
    return decoder(dec_in, skips, features.style, warped)["image"]


def working_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A ``dtype``, channels-last copy of E_T or D_T for the fine-tuning steps."""
    return copy.deepcopy(module).to(dtype).to(memory_format=torch.channels_last)


def _loss_terms(perceptual: nn.Module | None, target: Tensor, lambda_rec: float, lambda_per: float):
    """``loss(pred)`` = λ_rec L1 (+ λ_per L_per) against the fixed ``target``; VGG(target) computed once
    (in the perceptual module's dtype and layout)."""
    per_fn = None
    if perceptual is not None and lambda_per > 0:
        p = next(perceptual.parameters(), None)
        t = target if p is None else target.to(p.dtype).contiguous(memory_format=torch.channels_last)
        if isinstance(perceptual, PerceptualLoss):
            per_fn = perceptual_to_target(perceptual, t)
        elif hasattr(perceptual, "target_features") and hasattr(perceptual, "from_features"):
            feats = perceptual.target_features(t)
            per_fn = lambda pred: perceptual.from_features(pred, feats)  # noqa: E731
        else:
            per_fn = lambda pred: perceptual(pred, t.to(pred.dtype))  # noqa: E731

    def loss(pred: Tensor) -> Tensor:
        total = lambda_rec * reconstruction_loss(pred.float(), target)
        return total if per_fn is None else total + lambda_per * per_fn(pred).float()

    return loss


class Adam:
    """Adam (Kingma & Ba 2015) exactly as ``torch.optim.Adam`` computes it (no weight decay, no amsgrad),
    written out because constructing ``torch.optim.Adam`` imports ``torch._dynamo``: seconds in a fresh
    process (``emotalk finetune``), more than the fine-tuning steps themselves."""

    def __init__(self, params: list[Tensor], lr: float, betas, eps: float = 1e-8):
        self.params, self.lr, self.eps = list(params), float(lr), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        step_size = self.lr / (1 - self.beta1 ** self.t)
        bias2_sqrt = (1 - self.beta2 ** self.t) ** 0.5
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        m, v = [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live]
        torch._foreach_lerp_(m, grads, 1 - self.beta1)  # one multi-tensor kernel per update, not per tensor
        torch._foreach_mul_(v, self.beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - self.beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


def _fp32_l1(model: TextureGenerator, img: Tensor, lm: Tensor, emo: Tensor) -> float:
    with torch.no_grad():
        return float(reconstruction_loss(model(img, lm, lm, emo)["image"].float(), img))


def one_shot_finetune(generator: TextureGenerator, image, landmarks_px, steps: int = 5, lr: float = 1e-4, *,
                      perceptual: torch.nn.Module | None = None, lambda_rec: float = 1.0, lambda_per: float = 10.0,
                      betas: tuple[float, float] = (0.5, 0.999), finetune_emotion: Tensor | None = None,
                      device: str | torch.device | None = None, progress: bool = False,
                      return_info: bool = False, precision: str = "auto", method: str = "full",
                      threads: int | str = "auto"):
    """Adapt a copy of ``generator`` to one neutral face; only E_T and D_T change.

    image: the face crop at the model's ``image_size``: a (3, S, S) / (1, 3, S, S) tensor in [-1, 1] or an
        (S, S, 3) uint8 RGB array.
    landmarks_px: (68, 2) landmarks of that crop, in its pixels.
    steps, lr, betas: Adam iterations (paper: up to 5), learning rate and betas.
    perceptual: optional eq. (7) module (``emotalk.models.losses.perceptual_loss.PerceptualLoss``), weighted by
        ``lambda_per``; the L1 term is weighted by ``lambda_rec``.
    finetune_emotion: control vector fed during fine-tuning (default and paper: neutral at intensity 1;
        the photo shows a neutral face, so this is *not* the emotion the video will be rendered with).
    device: where to fine-tune (default: the generator's device).
    progress: show a tqdm bar over the iterations.
    precision: ``auto`` (default: bf16 where the device has it natively, else fp32), ``fp32`` or ``bf16``.
    method: ``full`` (default: exact gradients, through the frozen motion network into E_T) or
        ``frozen_motion`` (the motion network's flow/occlusion for the photo computed once and held fixed;
        faster, measured slightly worse on the demo). See the module docstring.
    threads: CPU threads for the steps: ``auto`` (default: before each step, torch's count at the call
        capped at the cores other processes leave free, :class:`~emotalk.inference.thread_fit.ThreadFit`;
        restored at the end) or a fixed number.

    Returns the adapted copy (eval mode, fp32, contiguous), or ``(copy, OneShotInfo)`` with
    ``return_info=True``. The seconds are also logged.
    """
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    dev = torch.device(device) if device is not None else next(generator.parameters()).device
    S = generator.cfg.image_size
    img = _as_image(image, S, dev)
    lm = _as_landmarks(landmarks_px, dev)
    emo = (neutral_emotion(generator) if finetune_emotion is None
           else torch.as_tensor(finetune_emotion, dtype=torch.float32).reshape(1, -1)).to(dev)

    t_call = time.perf_counter()
    adapted = copy.deepcopy(generator).to(dev).eval()
    flags = {n: p.requires_grad for n, p in adapted.named_parameters()}
    for p in adapted.parameters():
        p.requires_grad_(False)
    params = adapted.identity_parameters()
    for p in params:
        p.requires_grad_(True)
    if perceptual is not None:
        perceptual = perceptual.to(dev).eval()
    amp = resolve_precision(precision, dev)
    loss_terms = (perceptual, lambda_rec, lambda_per)
    before = _identity_state(adapted) if method == "full" else None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    run = _run_full if method == "full" else _run_frozen_motion
    with ThreadFit(threads, dev) as fit:
        losses, prep, l1_prep, marks = run(adapted, params, img, lm, emo, steps, lr, betas, amp, loss_terms,
                                           progress, fit)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    adapted.to(memory_format=torch.contiguous_format)
    for n, p in adapted.named_parameters():
        p.requires_grad_(flags[n])
        p.grad = None
    info = OneShotInfo(steps=steps, lr=lr, seconds=seconds, losses=losses, device=str(dev),
                       precision="fp32" if amp == torch.float32 else "bf16", method=method, prepare_seconds=prep,
                       setup_seconds=t0 - t_call,
                       step_seconds=[b - a for a, b in zip(marks, marks[1:])] if dev.type == "cpu" else [],
                       step_threads=fit.used[1:] if dev.type == "cpu" else [])
    # fp32 L1s, measured when read (see OneShotInfo): a bf16 output is quantised to ~0.004, as large as the L1
    # of a good reconstruction, so the steps' own losses are no substitute
    states = {"after": _identity_state(adapted)}
    if before is not None:
        states["before"] = before
    else:
        info._l1["before"] = l1_prep  # frozen_motion: its exact fp32 motion pass gave it for free
    info._measure = _L1Probe(generator, dev, img, lm, emo, states)
    log.info("one-shot fine-tuning (%s, %s): %d steps in %.2f s on %s (step loss %s)", method, info.precision,
             steps, seconds, dev, " -> ".join(f"{v:.4f}" for v in losses[:1] + losses[-1:]) or "-")
    return (adapted, info) if return_info else adapted


def _steps_bar(steps: int, progress: bool):
    return tqdm(range(steps), desc="one-shot fine-tuning", unit="step", disable=not progress, leave=False)


def _run_frozen_motion(adapted, params, img, lm, emo, steps, lr, betas, amp, loss_terms, progress, fit):
    """Frozen motion once (fp32, exact; it also gives the base model's L1), then ``steps`` updates of E_T
    and D_T through ``encode -> render``; with bf16 on a working copy (see the module docstring)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = adapted.encode_identity(img)
    motion, base_image = frozen_motion(adapted, feats, lm, emo)
    l1_before = float(reconstruction_loss(base_image.float(), img))  # the only host sync before the loop
    prep = time.perf_counter() - t0
    # working copies (same parameter order as identity_parameters(): E_T, then D_T); Adam owns the fp32
    # master weights in ``adapted``
    enc, dec = working_copy(adapted.identity_encoder, amp), working_copy(adapted.decoder, amp)
    work = [p for m in (enc, dec) for p in m.parameters()]
    warps = fixed_warps(adapted, feats, motion, amp)
    loss_fn, x, opt = _loop_setup(loss_terms, img, amp, params, lr, betas)
    losses, marks = [], [time.perf_counter()]
    for _ in _steps_bar(steps, progress):
        fit.refit()
        loss = loss_fn(render(adapted, dec, encode(enc, x), motion, warps))
        loss.backward()
        _step(opt, params, work)
        losses.append(loss.detach())
        marks.append(time.perf_counter())
    return [float(v) for v in torch.stack(losses).tolist()] if losses else [], prep, l1_before, marks


def _loop_setup(loss_terms, img: Tensor, amp: torch.dtype, params, lr: float, betas):
    """What both methods' loops need: the loss on the photo (a frozen perceptual copy in the working dtype
    and layout; the caller's module stays as is), the photo in that dtype and layout, Adam on ``params``."""
    perceptual, lambda_rec, lambda_per = loss_terms
    if perceptual is not None:
        perceptual = converted_copy(perceptual, amp)
    loss_fn = _loss_terms(perceptual, img, lambda_rec, lambda_per)
    return loss_fn, img.to(amp).contiguous(memory_format=torch.channels_last), Adam(params, lr, betas)


def _run_full(adapted, params, img, lm, emo, steps, lr, betas, amp, loss_terms, progress, fit):
    """Exact steps: G_T's whole forward and backward (through the frozen motion network into E_T) on
    channels-last working copies (:class:`~emotalk.inference.one_shot_step.ExactStep`; bf16 where native)."""
    step = ExactStep(adapted, lm, emo, amp)
    master, work_params = step.pairs(adapted)
    if len(master) != len(params) or any(a is not b for a, b in zip(master, params)):
        raise RuntimeError("one-shot: the working copy's parameters do not match identity_parameters()")
    loss_fn, x, opt = _loop_setup(loss_terms, img, amp, params, lr, betas)
    losses, marks = [], [time.perf_counter()]
    for _ in _steps_bar(steps, progress):
        fit.refit()
        loss = loss_fn(step(x))
        loss.backward()
        _step(opt, params, work_params)
        losses.append(loss.detach())
        marks.append(time.perf_counter())
    return [float(v) for v in torch.stack(losses).tolist()] if losses else [], 0.0, float("nan"), marks


def _step(opt: Adam, params: list[Tensor], work: list[Tensor]) -> None:
    """Adam on the fp32 master weights with the working copy's gradients; refresh the working copy."""
    for p, w in zip(params, work):
        p.grad = None if w.grad is None else w.grad.to(p.dtype, memory_format=torch.contiguous_format)
        w.grad = None
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch._foreach_copy_(work, params)
