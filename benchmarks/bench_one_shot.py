"""One-shot fine-tuning time (issue 16 §2): 5 steps of E_T/D_T at the paper's G_T size, the earlier method
against the current one, in the same process.

    python benchmarks/bench_one_shot.py [--device auto|cpu|cuda] [--steps 5] [--reps 2] [--threads N]
                                        [--variants l1,vgg16] [--config configs/texture/mead.yaml]
                                        [--flops] [--json out.json]

Methods:

- ``old``: the previous implementation, kept here verbatim as :func:`old_one_shot` (whole G_T forward and
  backward each step in fp32, model and photo channels-last, ``torch.optim.Adam``, VGG(target) recomputed
  every step, a host sync per step).
- ``full_fp32``: :func:`emotalk.inference.one_shot.one_shot_finetune` (exact gradients) in fp32: the steps run
  on :class:`emotalk.inference.one_shot_step.ExactStep` working copies (BatchNorm folded, gather warp,
  channels-last upsampling backward and AdaIN, per-photo constants cached; see that module).
- ``full``: the same in the default precision (``auto``: a bf16 working copy where the device runs bf16
  natively) - what ``emotalk generate`` / ``finetune`` run.
- ``frozen_motion``: the opt-in approximation (motion network's answer held fixed), default precision.

Variants: ``l1`` (λ_rec L1) and ``vgg16`` (+ λ_per 10 x perceptual with a VGG16-sized random network; the
ImageNet weights cost the same). Reported per method: the best of ``--reps`` interleaved runs of the
fine-tuning seconds (what ``OneShotInfo.seconds`` measures: the frozen-motion pass and the steps) and of the
whole call (copy and the final fp32 L1 forward included), the speed-up over ``old`` measured in the same
run, the CPU seconds of the whole call (``time.process_time``: with ``--threads 1`` the figure least
disturbed by other processes) and the machine load (``os.getloadavg``) before and after: on a shared
machine compare the ratios.
Weights are random: the time does not depend on them. ``--flops`` adds GFLOP per step (one extra
fine-tuning call per method under ``torch.utils.flop_counter``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotalk.config import load_config  # noqa: E402
from emotalk.data.face.alignment import crop_template  # noqa: E402
from emotalk.inference.one_shot import neutral_emotion, one_shot_finetune  # noqa: E402
from emotalk.models.texture_generator import TextureGenerator  # noqa: E402
from emotalk.train.texture_task import TextureTrainConfig  # noqa: E402
from emotalk.utils.device import select_device  # noqa: E402

METHODS = {"old": None,
           "full_fp32": {"method": "full", "precision": "fp32"},
           "full": {"method": "full", "precision": "auto"},
           "frozen_motion": {"method": "frozen_motion", "precision": "auto"}}


def old_one_shot(generator, img, lm, steps, perceptual=None, lr=1e-4, lambda_rec=1.0, lambda_per=10.0):
    """The one-shot loop as it was before issue 16 §2 (the baseline; returns its fine-tuning seconds and
    the final L1 like OneShotInfo)."""
    from emotalk.models.losses.reconstruction_loss import reconstruction_loss

    dev = img.device
    lm = lm.reshape(1, 68, 2).to(dev)
    emo = neutral_emotion(generator).to(dev)
    adapted = copy.deepcopy(generator).to(dev).eval()
    for p in adapted.parameters():
        p.requires_grad_(False)
    params = adapted.identity_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    img_cl = img.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        l1_before = float(reconstruction_loss(adapted(img, lm, lm, emo)["image"], img))
    sync(dev)
    t0 = time.perf_counter()
    adapted.to(memory_format=torch.channels_last)
    for _ in range(steps):
        out = adapted(img_cl, lm, lm, emo)["image"]
        per = perceptual(out, img) if perceptual is not None else None
        loss = lambda_rec * reconstruction_loss(out.float(), img)
        loss = loss if per is None else loss + lambda_per * per.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())
    sync(dev)
    seconds = time.perf_counter() - t0
    adapted.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        l1_after = float(reconstruction_loss(adapted(img, lm, lm, emo)["image"], img))
    return SimpleNamespace(seconds=seconds, precision="fp32", l1_before=l1_before, l1_after=l1_after)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_method(name: str, G, img, lm, steps: int, perceptual):
    if METHODS[name] is None:
        return old_one_shot(G, img, lm, steps, perceptual)
    return one_shot_finetune(G, img, lm, steps=steps, perceptual=perceptual, return_info=True,
                             **METHODS[name])[1]


def build_generator(config: str, device: torch.device) -> TextureGenerator:
    return TextureGenerator(load_config(config, schema=TextureTrainConfig).model).to(device).eval()


def step_gflop(name, G, img, lm, perceptual) -> float:
    """FLOPs of one step: a 2-step call minus a 1-step call (the frozen pass and the L1 forwards cancel)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as fc:
            run_method(name, G, img, lm, steps, perceptual)
        counts.append(fc.get_total_flops())
    return (counts[1] - counts[0]) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/texture/mead.yaml"),
                    help="G_T config whose model: section is built (default: the paper's, 256²)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions per method (best is reported)")
    ap.add_argument("--variants", default="l1,vgg16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--flops", action="store_true", help="also count GFLOP per step (one more call per method)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = select_device(args.device)
    torch.manual_seed(0)
    G = build_generator(args.config, dev)
    S = G.cfg.image_size
    img = (torch.rand(1, 3, S, S, device=dev) * 2 - 1)
    lm = torch.as_tensor(crop_template(S), dtype=torch.float32)
    methods = [m for m in args.methods.split(",") if m]
    res: dict = {"device": str(dev), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "image_size": S, "steps": args.steps,
                 "load_before": os.getloadavg()[0]}
    for variant in [v for v in args.variants.split(",") if v]:
        per = None
        if variant == "vgg16":
            from emotalk.data.loading import build_perceptual_loss

            per = build_perceptual_loss("vgg16-random", warn=False)[0].to(dev)
        for m in methods:  # warm-up: allocations, oneDNN primitive / cuDNN choices, lazy imports
            run_method(m, G, img, lm, 1, per)
        best = {m: [float("inf")] * 3 for m in methods}
        for _ in range(args.reps):
            for m in methods:
                t0, c0 = time.perf_counter(), time.process_time()
                info = run_method(m, G, img, lm, args.steps, per)
                call, cpu = time.perf_counter() - t0, time.process_time() - c0
                best[m] = [min(best[m][0], info.seconds), min(best[m][1], call), min(best[m][2], cpu)]
                res[f"{variant}_{m}_precision"] = info.precision
                res[f"{variant}_{m}_l1_after"] = info.l1_after
                print(f"  {variant:5s} {m:13s} {info.seconds:7.2f} s fine-tuning, {call:7.2f} s call, {cpu:7.2f} s "
                      f"CPU ({info.precision}, L1 {info.l1_before:.4f} -> {info.l1_after:.4f})", flush=True)
        for m in methods:
            res[f"{variant}_{m}_seconds"], res[f"{variant}_{m}_call_seconds"] = best[m][:2]
            res[f"{variant}_{m}_call_cpu_seconds"] = best[m][2]
            if "old" in methods and m != "old":
                res[f"{variant}_{m}_speedup_vs_old"] = best["old"][0] / best[m][0]
                res[f"{variant}_{m}_cpu_speedup_vs_old"] = best["old"][2] / best[m][2]
            if args.flops:
                res[f"{variant}_{m}_gflop_per_step"] = step_gflop(m, G, img, lm, per)
    res["load_after"] = os.getloadavg()[0]
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
