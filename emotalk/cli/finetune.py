"""``emotalk finetune --checkpoint CKPT --image PHOTO --out ADAPTED [--steps 5]``

One-shot fine-tuning of G_T (§4.1): E_T and D_T adapt to one neutral photo; the rest of G_T and the base
checkpoint are untouched. The photo is prepared exactly as for generation
(:func:`emotalk.inference.photo.prepare_photo`: dlib landmarks, canonical face crop), then
:func:`emotalk.inference.one_shot.one_shot_finetune` runs. The result is a normal ``texture`` checkpoint
(``ADAPTED.safetensors`` + ``ADAPTED.json``) usable wherever a G_T checkpoint is; it also stores the
identity crop (``identity/image``, ``identity/landmarks``) and a ``one_shot`` metadata record.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from emotalk.data.loading import build_perceptual_loss, load_model, save_model
from emotalk.errors import InputError
from emotalk.inference.one_shot import one_shot_finetune
from emotalk.inference.photo import load_image, prepare_photo
from emotalk.utils.device import select_device

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="G_T checkpoint (run folder, .json or .safetensors)")
    p.add_argument("--image", required=True, help="photo of the new person, neutral expression, closed lips")
    p.add_argument("--out", required=True, help="adapted checkpoint path (ADAPTED -> ADAPTED.safetensors + .json)")
    p.add_argument("--steps", type=int, default=5, help="fine-tuning iterations (paper: up to 5)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--perceptual", choices=("none", "vgg16", "vgg16-random"), default="none",
                   help="add the eq. (7) perceptual term (vgg16 needs --vgg16-weights or torchvision's cache)")
    p.add_argument("--vgg16-weights", default=None, help="torchvision's vgg16-397923af.pth")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="arithmetic of the steps (auto: bf16 where the device runs it natively)")
    p.add_argument("--method", choices=("full", "frozen_motion"), default="full",
                   help="full: exact gradients (paper); frozen_motion: motion network's answer held fixed, faster")


def _out_stem(out: str) -> Path:
    p = Path(out)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def run(args: argparse.Namespace) -> int:
    if args.steps < 0:
        raise InputError(f"--steps must be >= 0, got {args.steps}")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise InputError(f"--lr must be a positive number such as 1e-4, got {args.lr}")
    load_image(args.image)  # a bad photo fails before the checkpoint is loaded
    device = select_device(args.device)
    loaded = load_model(args.checkpoint, "texture", device)
    G, meta = loaded.module, loaded.meta
    S = loaded.model_config.image_size
    photo = prepare_photo(args.image, crop_size=S)
    for w in photo.warnings:
        log.warning("%s", w)
    perceptual = None
    if args.perceptual != "none":
        perceptual, desc = build_perceptual_loss(args.perceptual, args.vgg16_weights, warn=False)
        log.info("%s", desc)
    adapted, info = one_shot_finetune(G, photo.crop, photo.crop_landmarks, steps=args.steps, lr=args.lr,
                                      perceptual=perceptual, device=device, return_info=True,
                                      precision=args.precision, method=args.method)
    tensors = {}
    tensors["identity/image"] = torch.from_numpy(np.ascontiguousarray(photo.crop))
    tensors["identity/landmarks"] = torch.from_numpy(np.asarray(photo.crop_landmarks, np.float32))
    tensors["identity/crop_matrix"] = torch.from_numpy(np.asarray(photo.crop_matrix, np.float32))
    # every fact of the base checkpoint is kept (model config incl. prior_flow, background_rgb, ...)
    out_meta = dataclasses.replace(meta, extra={
        **meta.extra, "image_size": S, "image_value_range": [-1.0, 1.0],
        "one_shot": {"base_checkpoint": str(meta.path or args.checkpoint),
                     "image": str(args.image), "steps": info.steps, "lr": info.lr,
                     "seconds": round(info.seconds, 4), "device": info.device,
                     "l1_before": info.l1_before, "l1_after": info.l1_after,
                     "precision": info.precision, "method": info.method,
                     "perceptual": args.perceptual}})
    path = save_model(_out_stem(args.out), adapted, "texture", loaded.model_config, out_meta, tensors=tensors)
    log.info("adapted G_T written to %s (%d steps in %.2f s on %s; reconstruction L1 %.4f -> %.4f)", path,
             info.steps, info.seconds, info.device, info.l1_before, info.l1_after)
    return 0
