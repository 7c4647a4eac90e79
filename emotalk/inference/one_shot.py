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

Speed (issue 16 §2; a step is ~3 forward passes: E_T -> motion network -> D_T forward, then gradients back
through all of them, because E_T's f_t feeds the frozen motion network too): frozen parameters get no
weight gradients (``requires_grad`` off; only the input gradients the chain rule needs), the model and the
photo are in channels_last (oneDNN / cuDNN run NHWC convolutions without reorders), and
``precision="auto"`` / ``"bf16"`` runs the steps under bf16 autocast (Adam's weights stay fp32). fp32 stays
the default: on the shared 2-core AMX CPU, interleaved runs showed no gain from bf16 autocast for training
steps (the per-step weight casts and bf16 backward kernels ate the convolution savings), unlike inference.
The L1 before/after figures are always fp32. The adapted copy is returned in the ordinary (contiguous)
layout, so it saves and loads like any checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from emotalk.data.datasets.texture import to_tensor_image
from emotalk.data.emotions import emotion_vector
from emotalk.errors import InputError
from emotalk.inference.fast_texture import resolve_precision
from emotalk.models.losses.reconstruction_loss import reconstruction_loss
from emotalk.models.texture_generator import TextureGenerator

log = logging.getLogger(__name__)


@dataclass
class OneShotInfo:
    steps: int
    lr: float
    seconds: float  # wall time of the fine-tuning iterations (copy and final evaluation excluded)
    losses: list[float] = field(default_factory=list)  # loss before each update
    l1_before: float = float("nan")  # reconstruction L1 of the photo by the base model
    l1_after: float = float("nan")  # ... by the adapted copy
    device: str = "cpu"
    precision: str = "fp32"  # arithmetic of the fine-tuning steps (bf16: autocast where native)


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


def one_shot_finetune(generator: TextureGenerator, image, landmarks_px, steps: int = 5, lr: float = 1e-4, *,
                      perceptual: torch.nn.Module | None = None, lambda_rec: float = 1.0, lambda_per: float = 10.0,
                      betas: tuple[float, float] = (0.5, 0.999), finetune_emotion: Tensor | None = None,
                      device: str | torch.device | None = None, progress: bool = False,
                      return_info: bool = False, precision: str = "fp32"):
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
    precision: ``fp32`` (default), ``bf16`` (autocast) or ``auto`` (bf16 where the device has it natively).

    Returns the adapted copy (eval mode), or ``(copy, OneShotInfo)`` with ``return_info=True``. The seconds
    are also logged.
    """
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    dev = torch.device(device) if device is not None else next(generator.parameters()).device
    S = generator.cfg.image_size
    img = _as_image(image, S, dev)
    lm = _as_landmarks(landmarks_px, dev)
    emo = (neutral_emotion(generator) if finetune_emotion is None
           else torch.as_tensor(finetune_emotion, dtype=torch.float32).reshape(1, -1)).to(dev)

    adapted = copy.deepcopy(generator).to(dev).eval()
    flags = {n: p.requires_grad for n, p in adapted.named_parameters()}
    for p in adapted.parameters():
        p.requires_grad_(False)
    params = adapted.identity_parameters()
    for p in params:
        p.requires_grad_(True)
    if perceptual is not None:
        perceptual = perceptual.to(dev).eval()
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas))
    amp = resolve_precision(precision, dev)
    cast = torch.autocast(dev.type, dtype=amp) if amp != torch.float32 else contextlib.nullcontext()
    img_cl = img.contiguous(memory_format=torch.channels_last)

    def loss_fn(model: TextureGenerator) -> Tensor:
        with cast:
            out = model(img_cl, lm, lm, emo)["image"]
            per = perceptual(out, img) if perceptual is not None and lambda_per > 0 else None
        loss = lambda_rec * reconstruction_loss(out.float(), img)
        return loss if per is None else loss + lambda_per * per.float()

    with torch.no_grad():
        l1_before = float(reconstruction_loss(adapted(img, lm, lm, emo)["image"], img))
    losses = []
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    adapted.to(memory_format=torch.channels_last)
    from tqdm import tqdm

    for _ in tqdm(range(steps), desc="one-shot fine-tuning", unit="step", disable=not progress, leave=False):
        loss = loss_fn(adapted)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    adapted.to(memory_format=torch.contiguous_format)
    for n, p in adapted.named_parameters():
        p.requires_grad_(flags[n])
        p.grad = None
    with torch.no_grad():
        l1_after = float(reconstruction_loss(adapted(img, lm, lm, emo)["image"], img))
    info = OneShotInfo(steps=steps, lr=lr, seconds=seconds, losses=losses, l1_before=l1_before,
                       l1_after=l1_after, device=str(dev), precision="fp32" if amp == torch.float32 else "bf16")
    log.info("one-shot fine-tuning: %d steps in %.2f s on %s (L1 %.4f -> %.4f)", steps, seconds, dev,
             l1_before, l1_after)
    return (adapted, info) if return_info else adapted
