"""G_T speed at the paper config (256², c = 64) on this machine: inference frames/s, one-shot seconds,
FLOPs per frame and the fraction of the measured matmul peak.

    python benchmarks/bench_texture.py [--device auto|cpu|cuda] [--batch N] [--iters N] [--json out.json]

- FLOPs per frame: ``torch.utils.flop_counter.FlopCounterMode`` over one forward (convolutions and
  matmuls; grid_sample, norms and activations are not counted, they are memory-bound and small).
- Frames/s: steady state, E_T's identity features computed once (as the pipeline does) and the rest of
  G_T run on batches of driven landmarks; also the full forward including E_T. On CUDA also under bf16
  autocast.
- Matmul peak: the best FLOP/s of a large square ``torch.matmul`` in the same dtype on the same device,
  and of the same kind of GEMM run as a 1×1 convolution (on CPUs where torch.matmul's MKL path is slower
  than oneDNN's, e.g. AMD EPYC, the latter is the real attainable peak); the fraction is
  (FLOPs per frame × frames/s) / the larger of the two. Convolutions may use Winograd/FFT algorithms
  that need fewer FLOPs than counted, so a fraction near or above 1 is possible.
- One-shot: ``one_shot_finetune`` with 5 steps (the paper's "up to 5 iterations, 3-4 seconds" on a
  Quadro P5000), L1 only and with a VGG16-sized perceptual term (random weights: same cost as ImageNet).
Weights are random: speed does not depend on them.
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

from emotalk.inference.one_shot import one_shot_finetune  # noqa: E402
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig, count_parameters  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, iters: int, warmup: int = 1) -> float:
    """Seconds per call (median of ``iters``)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def matmul_peak(dev: torch.device, dtype: torch.dtype) -> float:
    """Best FLOP/s of a large square matmul (the best of several runs: the machine's attainable peak)."""
    n = 8192 if dev.type == "cuda" else 4096
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(dev)
    best = float("inf")
    for _ in range(20 if dev.type == "cuda" else 5):
        t = time.perf_counter()
        a @ b
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def conv_gemm_peak(dev: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of a GEMM run as a 1×1 convolution (oneDNN on CPU, cuDNN on CUDA).

    On some CPUs (e.g. AMD EPYC) torch.matmul goes through MKL, which does not use the widest vector
    path there, while convolutions go through oneDNN, which does; the convolution path then is the
    attainable peak the model's convolutions should be compared with."""
    best_rate = 0.0
    for c, hw in ((1024, 64), (2048, 32)):
        x = torch.randn(1, c, hw, hw, device=dev, dtype=dtype)
        conv = torch.nn.Conv2d(c, c, 1, bias=False).to(dev, dtype)
        with torch.no_grad():
            s = timed(lambda: conv(x), dev, iters=5, warmup=2)
        best_rate = max(best_rate, 2 * c * c * hw * hw / s)
    return best_rate


def flops_per_frame(G, inputs) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        G(*inputs)
    return fc.get_total_flops() // inputs[2].shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=0, help="frames per batch (default 32 on CUDA, 4 on CPU)")
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (default 20 on CUDA, 3 on CPU)")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    cuda = dev.type == "cuda"
    B = args.batch or (32 if cuda else 4)
    iters = args.iters or (20 if cuda else 3)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = TextureModelConfig()  # paper: 256², base 64
    S = cfg.image_size
    torch.manual_seed(0)
    G = TextureGenerator(cfg).to(dev).eval()
    from emotalk.data.face.alignment import crop_template

    lm = torch.as_tensor(crop_template(S), dtype=torch.float32, device=dev)[None]
    img = torch.rand(1, 3, S, S, device=dev) * 2 - 1
    driven = lm + torch.randn(B, 68, 2, device=dev)
    emo = torch.zeros(1, cfg.emotion_dim, device=dev)
    emo[0, 0] = emo[0, len(cfg.emotions)] = 1
    res: dict = {"device": torch.cuda.get_device_name(dev) if cuda else f"CPU {platform.processor() or platform.machine()}"
                 f" ({torch.get_num_threads()} threads, {os.cpu_count()} cores)",
                 "torch": torch.__version__, "image_size": S, "batch": B,
                 "generator_parameters": count_parameters(G)}
    fpf = flops_per_frame(G, (img.expand(B, -1, -1, -1), lm.expand(B, -1, -1), driven, emo.expand(B, -1)))
    with torch.no_grad():
        feats = G.encode_identity(img)
        enc_flops = 0
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            G.encode_identity(img)
        enc_flops = fc.get_total_flops()
    res["gflops_per_frame_full"] = fpf / 1e9
    res["gflops_per_frame_cached_identity"] = (fpf - enc_flops) / 1e9

    mm32 = matmul_peak(dev, torch.float32)
    conv32 = conv_gemm_peak(dev)
    with torch.no_grad():
        s_cached = timed(lambda: G(feats, lm, driven, emo), dev, iters)
        s_full = timed(lambda: G(img.expand(B, -1, -1, -1), lm, driven, emo), dev, iters)
    # re-measured after the model: robust to a machine that others are using
    mm32 = max(mm32, matmul_peak(dev, torch.float32))
    conv32 = max(conv32, conv_gemm_peak(dev))
    peak32 = max(mm32, conv32)
    res["matmul_peak_tflops_fp32_torch_matmul"] = mm32 / 1e12
    res["matmul_peak_tflops_fp32_as_1x1_conv"] = conv32 / 1e12
    res["fps_fp32_cached_identity"] = B / s_cached
    res["fps_fp32_full"] = B / s_full
    res["peak_fraction_fp32_cached_identity"] = (fpf - enc_flops) * B / s_cached / peak32
    if cuda:
        peak16 = matmul_peak(dev, torch.bfloat16)
        res["matmul_peak_tflops_bf16"] = peak16 / 1e12
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            s16 = timed(lambda: G(feats, lm, driven, emo), dev, iters)
        res["fps_bf16_cached_identity"] = B / s16
        res["peak_fraction_bf16_cached_identity"] = (fpf - enc_flops) * B / s16 / peak16

    # one-shot fine-tuning, 5 steps (each ≈ 3× a forward in FLOPs)
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
