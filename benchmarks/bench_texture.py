"""G_T speed at the paper config (256², c = 64) on this machine: inference frames/s of the training module
(eager) and of the inference-only path (:mod:`emotalk.inference.fast_texture`), at batch 1 and at the
batch the renderer chooses by measurement, as a fraction of this run's measured convolution peak; one-shot
seconds.

    python benchmarks/bench_texture.py [--device auto|cpu|cuda] [--batches 1,2,4,8] [--iters N]
                                       [--precision fp32,bf16] [--no-one-shot] [--json out.json]
                                       [--clock wall|cpu] [--breakdown] [--no-eager] [--whole-batch]

- FLOPs per frame: ``torch.utils.flop_counter.FlopCounterMode`` over one forward with E_T's identity
  features cached (as the renderer runs it); convolutions and matmuls only.
- Conv peak, measured in the same run, same dtype: every convolution of the model that carries >= 5 % of
  the FLOPs is run as the GEMM it is (M = B·H·W output pixels, K = C_in·k², N = C_out) through a 1×1
  convolution (oneDNN on CPU, cuDNN on CUDA; with its weight reordered per call and once, the better
  counts); the peak is the best of those rates (measured before and after the model, best of both: robust
  to a machine others are using). Two fractions, both over that peak:
  ``peak_fraction_*`` ("model FLOP/s over peak") = the training module's FLOPs/frame × frames/s / peak;
  ``executed_peak_fraction_*`` ("executed FLOP/s over peak") = the FLOPs the fast path's convolutions
  actually run per frame (counted on every :class:`PackedConv` call: 2·M·K·N) × frames/s / peak. They
  differ because the fast path skips f_t's share of two motion convolutions (per identity, ~7 % at 256²)
  and the emotion share of ``fuse`` (per frame constant: :class:`BroadcastConv`, ~0.6 %), and
  :class:`UpConv` adds its border lines (~0.5 %); the executed one is the honest utilisation.
- ``--breakdown``: the fast path's per-operator share of one forward's time (torch.profiler).
- Default batch: :class:`~emotalk.inference.fast_texture.BatchTuner` over ``--batches`` on real
  forwards (what ``emotalk generate`` does on its first frames), frames/s reported for every batch, timed
  in interleaved rounds (every batch once per round, best round counts) and as a ratio to batch 1.
- On CPUs the fast path runs a batch through its motion network and decoder in chunks of frames under a
  memory budget (``fast_texture.CHUNK_BYTES``; ``frames_per_pass_*`` says how many: at 256² fp32 one
  frame per decoder pass, so batching there only batches the small motion network and the Python calls).
  ``--whole-batch`` also times one pass per batch (``fps_*_by_batch_whole_batch_passes``): the curve the
  chunking fixes (page faults of the big activations at every larger batch).
- On CUDA the fp32 figures are given with TF32 off (strict fp32) and on (what ``generate`` gets), labelled.
- One-shot: ``one_shot_finetune`` with 5 steps, L1 only and with a VGG16-sized perceptual term.
Weights are random: speed does not depend on them. On a shared machine compare the same-run ratios
(peak fraction, x-times eager), not absolute frames/s, and prefer ``OMP_NUM_THREADS=1 ... --clock cpu``:
wall-clock peak and model timings taken minutes apart under a changing load are not comparable (a load of
11 on 2 cores measured the fp32 peak at 51 GFLOP/s one minute and 111 the next).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotalk.data.face.alignment import crop_template  # noqa: E402
from emotalk.inference.fast_ops import PackedConv  # noqa: E402
from emotalk.inference.fast_texture import BatchTuner, FastTextureGenerator, native_bf16  # noqa: E402
from emotalk.inference.one_shot import one_shot_finetune  # noqa: E402
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig, count_parameters  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: the clock ``timed`` reads: wall time, or with ``--clock cpu`` (one thread only) this thread's CPU time
CLOCK = time.perf_counter


def timed(fn, dev, iters: int, warmup: int = 1) -> float:
    """Seconds per call (best of ``iters``: the least disturbed run on a shared machine)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    best = float("inf")
    for _ in range(iters):
        t = CLOCK()
        fn()
        sync(dev)
        best = min(best, CLOCK() - t)
    return best


def interleaved_fps(fast, ident, lm, driven: dict, emo, dev, rounds: int) -> dict[int, float]:
    """frames/s per batch size, best of ``rounds`` rounds that each run every batch once (after one warm-up
    each): the batches see the same machine load, so their ratios are comparable on a shared machine."""
    best = {b: float("inf") for b in driven}
    for b in driven:
        fast(ident, lm, driven[b], emo)
    for _ in range(rounds):
        for b in driven:
            sync(dev)
            t = CLOCK()
            fast(ident, lm, driven[b], emo)
            sync(dev)
            best[b] = min(best[b], CLOCK() - t)
    return {b: b / t for b, t in best.items()}


def conv_shapes(G: TextureGenerator, inputs) -> list[dict]:
    """Every Conv2d call of one cached-identity forward: GEMM shape and FLOPs."""
    rows = []

    def hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        M = out.shape[0] * out.shape[2] * out.shape[3]
        rows.append({"M": M, "K": m.in_channels * k, "N": m.out_channels, "hw": out.shape[2:],
                     "batch": out.shape[0], "flops": 2 * M * m.in_channels * k * m.out_channels})

    hs = [m.register_forward_hook(hook) for m in G.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            G(*inputs)
    finally:
        for h in hs:
            h.remove()
    return rows


def gemm_peak(shapes: list[dict], dev: torch.device, dtype: torch.dtype) -> float:
    """Best FLOP/s of the dominant convolutions run as GEMMs (1×1 convolutions, channels_last), each both
    through ``F.conv2d`` and with its weight reordered once (:class:`PackedConv`, as the fast path runs):
    the better of the two counts, so the fast path's own weight packing cannot flatter its fraction."""
    total = sum(s["flops"] for s in shapes)
    best = 0.0
    seen = set()
    for s in sorted(shapes, key=lambda r: -r["flops"]):
        key = (s["K"], s["N"], tuple(s["hw"]), s["batch"])
        if s["flops"] < 0.05 * total or key in seen:
            continue
        seen.add(key)
        x = torch.randn(s["batch"], s["K"], *s["hw"], device=dev).to(dtype).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(s["K"], s["N"], 1, bias=False).to(dev, dtype).to(memory_format=torch.channels_last)
        packed = PackedConv.of(conv)
        with torch.no_grad():
            t = min(timed(lambda: conv(x), dev, iters=3, warmup=1),
                    timed(lambda: packed(x), dev, iters=3, warmup=1))
        best = max(best, s["flops"] / t)
    return best


def breakdown(fast: FastTextureGenerator, args: tuple, top: int = 12) -> list[tuple[str, float]]:
    """Share of one forward's CPU time per operator (torch.profiler), convolutions first: where the time
    that is not convolution goes."""
    from torch.profiler import ProfilerActivity, profile

    fast(*args)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fast(*args)
    ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    conv = sum(e.self_cpu_time_total for e in ev if "conv" in e.key)
    rows = [("convolution (all)", conv / total)]
    rows += [(e.key, e.self_cpu_time_total / total) for e in ev if "conv" not in e.key][:top]
    return rows


def flops_per_frame(G, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        G(*inputs)
    return fc.get_total_flops() // inputs[2].shape[0]


def executed_flops_per_frame(fast: FastTextureGenerator, args: tuple) -> int:
    """FLOPs of the convolutions the fast path runs in one forward (every PackedConv call, 2·M·K·N), per
    frame; the rest (emotion encoder's 1-D convolution, warps, norms) is not GEMM work and not counted."""
    total = 0
    forward = PackedConv.forward

    def counting(self, x, *a, **kw):
        nonlocal total
        y = forward(self, x, *a, **kw)
        k = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]  # C_in / groups · kh · kw
        total += 2 * y.shape[0] * y.shape[2] * y.shape[3] * k * y.shape[1]
        return y

    PackedConv.forward = counting
    try:
        fast(*args)
    finally:
        PackedConv.forward = forward
    return total // args[2].shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="", help="candidate batches (default 1,2,4,8 on CPU, 8,16,32,64 on CUDA)")
    ap.add_argument("--iters", type=int, default=0, help="timed repetitions per batch (default 10 CUDA, 2 CPU)")
    ap.add_argument("--precision", default="", help="fp32 and/or bf16 (default: fp32, plus bf16 where native)")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--no-eager", action="store_true", help="skip the training module's (eager) baseline")
    ap.add_argument("--no-one-shot", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="print the fast path's per-operator time shares")
    ap.add_argument("--whole-batch", action="store_true",
                    help="also time the batches without the CPU's chunked passes (one pass per batch)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time this thread's CPU seconds (with OMP_NUM_THREADS=1 on a machine others share: "
                         "time slices lost to other processes are not counted, for the peak or the model)")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            ap.error("--clock cpu needs one thread (OMP_NUM_THREADS=1): other threads' CPU time is not this thread's")
        CLOCK = time.thread_time
    res_clock = args.clock
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = dev.type == "cuda"
    batches = [int(b) for b in args.batches.split(",") if b] or ([8, 16, 32, 64] if cuda else [1, 2, 4, 8])
    iters = args.iters or (10 if cuda else 2)
    precisions = [p for p in args.precision.split(",") if p] or (["fp32", "bf16"] if native_bf16(dev) else ["fp32"])
    cfg = TextureModelConfig(image_size=args.image_size)  # paper: 256², base 64
    S = cfg.image_size
    torch.manual_seed(0)
    G = TextureGenerator(cfg).to(dev).eval()
    lm = torch.as_tensor(crop_template(S), dtype=torch.float32, device=dev)[None]
    img = torch.rand(1, 3, S, S, device=dev) * 2 - 1
    emo = torch.zeros(1, cfg.emotion_dim, device=dev)
    emo[0, 0] = emo[0, len(cfg.emotions)] = 1
    res: dict = {"device": torch.cuda.get_device_name(dev) if cuda else f"CPU {platform.processor() or platform.machine()}"
                 f" ({torch.get_num_threads()} threads, {os.cpu_count()} cores)",
                 "torch": torch.__version__, "image_size": S, "generator_parameters": count_parameters(G),
                 "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                 "clock": "thread CPU time" if res_clock == "cpu" else "wall"}
    with torch.no_grad():
        feats = G.encode_identity(img)
    driven = {b: lm + torch.randn(b, 68, 2, device=dev) for b in batches}
    fpf = flops_per_frame(G, (feats, lm, driven[batches[0]], emo))
    res["gflops_per_frame_cached_identity"] = fpf / 1e9
    shapes = {b: conv_shapes(G, (feats, lm, driven[b], emo)) for b in batches}
    modes = []  # (label, precision, tf32)
    for p in precisions:
        if cuda and p == "fp32":
            modes += [("fp32_tf32_off", p, False), ("fp32_tf32_on", p, True)]
        else:
            modes.append((p, p, False))
    for label, prec, tf32 in modes:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        dtype = torch.bfloat16 if prec == "bf16" else torch.float32
        peak = max(gemm_peak(shapes[b], dev, dtype) for b in (batches[0], batches[-1]))
        fast = FastTextureGenerator(G, precision=prec, device=dev)
        ident = fast.encode_identity(img)
        tuner = BatchTuner(label, tuple(batches))
        fps = interleaved_fps(fast, ident, lm, driven, emo, dev, iters)
        for b in batches:
            for _ in range(2):
                tuner.record(b, b / fps[b])
        res[f"frames_per_pass_{label}_motion_decoder"] = f"{fast.motion_chunk or 'all'}/{fast.decoder_chunk or 'all'}"
        if args.whole_batch and fast.decoder_chunk is not None:  # the same model without its CPU chunking
            chunks = fast.motion_chunk, fast.decoder_chunk
            fast.motion_chunk = fast.decoder_chunk = None
            whole = interleaved_fps(fast, ident, lm, driven, emo, dev, iters)
            fast.motion_chunk, fast.decoder_chunk = chunks
            res[f"fps_{label}_by_batch_whole_batch_passes"] = {str(b): round(v, 4) for b, v in whole.items()}
        peak = max(peak, *(gemm_peak(shapes[b], dev, dtype) for b in (batches[0], batches[-1])))
        chosen = tuner.chosen
        res[f"conv_gemm_peak_tflops_{label}"] = peak / 1e12
        res[f"fps_{label}_by_batch"] = {str(b): round(v, 4) for b, v in fps.items()}
        res[f"default_batch_{label}"] = chosen
        for name, b in (("batch1", batches[0]), ("default_batch", chosen)):
            res[f"fps_{label}_{name}"] = fps[b]
            res[f"peak_fraction_{label}_{name}"] = fpf * fps[b] / peak  # model FLOP/s over peak
            efpf = executed_flops_per_frame(fast, (ident, lm, driven[b], emo))
            res[f"executed_gflops_per_frame_{label}_{name}"] = efpf / 1e9
            res[f"executed_peak_fraction_{label}_{name}"] = efpf * fps[b] / peak  # executed FLOP/s over peak
        res[f"fps_never_lower_at_default_batch_{label}"] = fps[chosen] >= fps[batches[0]]
        # frames/s of every batch over the smallest batch's, measured in the same rounds (1.0 = flat)
        res[f"fps_ratio_to_batch1_{label}"] = {str(b): round(fps[b] / fps[batches[0]], 3) for b in batches}
        if args.breakdown:
            for name, b in (("batch1", batches[0]), ("default_batch", chosen)):
                rows = breakdown(fast, (ident, lm, driven[b], emo))
                res[f"time_share_{label}_{name}"] = {k: round(v, 3) for k, v in rows}
        if not args.no_eager and label in ("fp32", "fp32_tf32_on"):
            b = chosen
            with torch.no_grad():
                s = timed(lambda: G(feats, lm, driven[b], emo), dev, iters)
            res[f"fps_eager_training_module_{label}_default_batch"] = b / s
            res[f"speedup_vs_eager_{label}"] = fps[b] / (b / s)

    if not args.no_one_shot:
        G.train(False)
        one_shot_finetune(G, img, lm[0], steps=1)  # warm-up (allocations, cuDNN autotuning)
        _, info = one_shot_finetune(G, img, lm[0], steps=5, return_info=True)
        res["one_shot_5_steps_seconds_l1"] = info.seconds
        from emotalk.data.loading import build_perceptual_loss

        per, _ = build_perceptual_loss("vgg16-random", warn=False)
        per = per.to(dev)
        one_shot_finetune(G, img, lm[0], steps=1, perceptual=per)
        _, info = one_shot_finetune(G, img, lm[0], steps=5, perceptual=per, return_info=True)
        res["one_shot_5_steps_seconds_l1_vgg16"] = info.seconds

    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
