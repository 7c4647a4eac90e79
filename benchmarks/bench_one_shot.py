"""One-shot fine-tuning time (issue 16 §2): 5 steps of E_T/D_T at the paper's G_T size, the earlier method
against the current one, in the same process.

    python benchmarks/bench_one_shot.py [--device auto|cpu|cuda] [--steps 5] [--reps 3] [--threads N]
                                        [--variants l1,vgg16] [--methods old,full,...] [--cold]
                                        [--config configs/texture/mead.yaml] [--flops] [--json out.json]

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
ImageNet weights cost the same). Every one of ``--reps`` interleaved calls is printed and kept in the JSON
(``runs``): the fine-tuning seconds (``OneShotInfo.seconds``: building the working copies, the frozen-motion
pass, the steps), the whole call (the copy of G_T included), its CPU seconds (``time.process_time``), the
per-step wall times and the machine load (``os.getloadavg``); the summary gives the best and the median, and
the speed-up over ``old`` measured in the same run. The fp32 L1s are timed apart (``l1_seconds``):
``one_shot_finetune`` measures them when they are read, which ``generate`` never does. ``--cold`` adds, per
repetition, the call as the first one of a fresh process (a child process; what a user's ``emotalk
finetune`` / ``generate`` pays, oneDNN kernel generation included). On a shared machine compare ratios
measured in one run; with two threads and another busy process the OpenMP threads wait for each other at
every barrier (a step took 2-4x its idle time while the same step with one thread barely changed).
Weights are random: the time does not depend on them. ``--flops`` adds GFLOP per step (one extra
fine-tuning call per method under ``torch.utils.flop_counter``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
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


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def timed_call(name: str, G, img, lm, steps: int, perceptual) -> dict:
    """One fine-tuning call: its phases (OneShotInfo), the call's wall and CPU seconds (the L1s excluded:
    ``one_shot_finetune`` measures them when read; ``old`` computes them inside its call) and the L1s."""
    t0, c0 = time.perf_counter(), time.process_time()
    info = run_method(name, G, img, lm, steps, perceptual)
    call, cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    l1_before, l1_after = info.l1_before, info.l1_after
    rec = {"seconds": info.seconds, "call": call, "cpu": cpu, "l1_seconds": time.perf_counter() - t1,
           "precision": info.precision, "l1_before": l1_before, "l1_after": l1_after,
           "load": os.getloadavg()[0]}
    steps_s = getattr(info, "step_seconds", [])
    if steps_s:
        rec.update(setup=info.setup_seconds, build=info.seconds - sum(steps_s) - info.prepare_seconds,
                   prepare=info.prepare_seconds, step_seconds=steps_s, step_threads=info.step_threads)
    return rec


def cold_call(args, method: str, variant: str) -> dict:
    """The same call as the first fine-tuning of a fresh process (what ``emotalk finetune`` / ``generate``
    pay: oneDNN kernel generation, first-touch allocations), in a child process; the child's import and model
    building are not counted."""
    cmd = [sys.executable, __file__, "--_child", method, "--variants", variant, "--config", args.config,
           "--device", args.device, "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = select_device(args.device)
    torch.manual_seed(0)
    G = build_generator(args.config, dev)
    S = G.cfg.image_size
    img = (torch.rand(1, 3, S, S, device=dev) * 2 - 1)
    lm = torch.as_tensor(crop_template(S), dtype=torch.float32)
    return dev, G, img, lm


def perceptual_for(variant: str, dev):
    if variant != "vgg16":
        return None
    from emotalk.data.loading import build_perceptual_loss

    return build_perceptual_loss("vgg16-random", warn=False)[0].to(dev)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/texture/mead.yaml"),
                    help="G_T config whose model: section is built (default: the paper's, 256²)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per method (best and median)")
    ap.add_argument("--variants", default="l1,vgg16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--cold", action="store_true",
                    help="also time each method's first call in a fresh process, once per repetition")
    ap.add_argument("--flops", action="store_true", help="also count GFLOP per step (one more call per method)")
    ap.add_argument("--json", help="also write the numbers (every repetition) to this file")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dev, G, img, lm = setup(args)
    if args._child:  # cold_call's child: one call, no warm-up, one JSON line
        rec = timed_call(args._child, G, img, lm, args.steps, perceptual_for(args.variants, dev))
        print(json.dumps(rec))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    res: dict = {"device": str(dev), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                 "threads": torch.get_num_threads(), "image_size": G.cfg.image_size, "steps": args.steps,
                 "reps": args.reps, "load_before": os.getloadavg()[0], "runs": []}
    for variant in [v for v in args.variants.split(",") if v]:
        per = perceptual_for(variant, dev)
        for m in methods:  # warm-up: allocations, oneDNN primitive / cuDNN choices, lazy imports
            run_method(m, G, img, lm, 1, per)
        for rep in range(args.reps):
            for m in methods:
                rec = {"variant": variant, "method": m, "rep": rep, **timed_call(m, G, img, lm, args.steps, per)}
                res["runs"].append(rec)
                steps_s = " ".join(f"{t:.2f}" for t in rec.get("step_seconds", []))
                print(f"  {variant:5s} {m:13s} {rec['seconds']:6.2f} s fine-tuning, {rec['call']:6.2f} s call, "
                      f"{rec['cpu']:6.2f} s CPU, L1 {rec['l1_seconds']:5.2f} s ({rec['precision']}, L1 "
                      f"{rec['l1_before']:.4f} -> {rec['l1_after']:.4f}) steps [{steps_s}] load {rec['load']:.2f}",
                      flush=True)
                if args.cold and m != "old":
                    c = {"variant": variant, "method": m, "rep": rep, "cold": True, **cold_call(args, m, variant)}
                    res["runs"].append(c)
                    print(f"  {variant:5s} {m:13s} cold: {c['seconds']:6.2f} s fine-tuning, {c['call']:6.2f} s call "
                          f"(steps {' '.join(f'{t:.2f}' for t in c.get('step_seconds', []))}) load {c['load']:.2f}",
                          flush=True)
        for m in methods:
            warm = [r for r in res["runs"] if r["variant"] == variant and r["method"] == m and not r.get("cold")]
            key = f"{variant}_{m}"
            res[f"{key}_precision"], res[f"{key}_l1_after"] = warm[-1]["precision"], warm[-1]["l1_after"]
            for field in ("seconds", "call", "cpu"):
                vals = [r[field] for r in warm]
                suffix = {"seconds": "seconds", "call": "call_seconds", "cpu": "call_cpu_seconds"}[field]
                res[f"{key}_{suffix}"], res[f"{key}_{suffix}_median"] = min(vals), _median(vals)
            cold = [r["call"] for r in res["runs"] if r["variant"] == variant and r["method"] == m and r.get("cold")]
            if cold:
                res[f"{key}_cold_call_seconds_median"] = _median(cold)
            if "old" in methods and m != "old":
                res[f"{key}_speedup_vs_old"] = res[f"{variant}_old_seconds"] / res[f"{key}_seconds"]
                res[f"{key}_cpu_speedup_vs_old"] = res[f"{variant}_old_call_cpu_seconds"] / res[f"{key}_call_cpu_seconds"]
            if args.flops:
                res[f"{key}_gflop_per_step"] = step_gflop(m, G, img, lm, per)
    res["load_after"] = os.getloadavg()[0]
    summary = {k: v for k, v in res.items() if k != "runs"}
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
