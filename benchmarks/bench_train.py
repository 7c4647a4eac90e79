"""Training throughput: G_L and G_T steps/s and samples/s at the tiny and the paper configs, the texture data
loader's samples/s per worker (JPEG decode + resize + colour augmentation), and the worker count needed to
keep the device fed at the paper's batch.

    python benchmarks/bench_train.py [--device auto|cpu|cuda] [--configs tiny,mead] [--steps-tiny 5]
                                     [--steps-paper 2] [--amp auto|off] [--loader-data ROOT] [--json out.json]
    torchrun --nproc_per_node=N benchmarks/bench_train.py --device cuda --configs mead ...   # DDP

- Steps run the real tasks' ``train_step`` (losses, discriminators, augmentation, AMP exactly as
  ``emotalk train``) on one fixed synthetic batch of the config's batch size, so no dataset is needed and
  the reconstruction loss must fall (``loss_fell``: mean of the last 5 steps below the first 5; meaningful
  from ~20 steps). The paper config's VGG16 perceptual term uses random weights (same cost as ImageNet's).
- Under ``torchrun`` every process takes ``batch / world`` samples and the models are wrapped in
  DistributedDataParallel (NCCL on CUDA, gloo on CPU) as the trainer does; rank 0 reports.
- Loader: ``TextureFrameDataset`` items (one frame's byte range read, JPEG decode, resize) plus
  ``augment_consistent`` per sample, in one process: that is one worker's rate. Without ``--loader-data``
  a few synthetic clips of 256² JPEG frames are written to a temporary folder.
On a shared machine compare ratios, not absolute figures.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emotalk.data.face.alignment import crop_template  # noqa: E402
from emotalk.models.face_graph import canonical_template  # noqa: E402
from emotalk.train.task import StepContext  # noqa: E402
from emotalk.train.tasks import build_task, load_train_config  # noqa: E402
from emotalk.utils.device import amp_dtype_for, select_device  # noqa: E402

LOSS_KEY = {"landmark": "ver", "texture": "rec"}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def synthetic_batch(kind: str, cfg, batch: int, dev: torch.device, window: int = 6, feature_dim: int = 29) -> dict:
    """One fixed batch with the shapes the datasets produce (smooth images: a learnable target)."""
    g = torch.Generator().manual_seed(0)
    m = cfg.model
    emotion = torch.zeros(batch, len(m.emotions) + m.intensity_levels)
    emotion[torch.arange(batch), torch.arange(batch) % len(m.emotions)] = 1
    emotion[:, len(m.emotions)] = 1
    if kind == "landmark":
        neutral = torch.from_numpy(canonical_template()).float()[None].expand(batch, -1, -1).clone()
        out = {"audio": torch.randn(batch, window, feature_dim, generator=g), "emotion": emotion,
               "neutral": neutral, "target": neutral + 0.01 * torch.randn(batch, 68, 2, generator=g)}
    else:
        S = m.image_size
        coarse = torch.rand(batch, 3, 8, 8, generator=g) * 2 - 1
        ident = torch.nn.functional.interpolate(coarse, size=(S, S), mode="bilinear", align_corners=False)
        lm = torch.as_tensor(crop_template(S), dtype=torch.float32)[None].expand(batch, -1, -1)
        out = {"identity": ident, "target": torch.roll(ident, shifts=S // 32, dims=-1), "identity_landmarks": lm,
               "target_landmarks": lm + torch.randn(batch, 68, 2, generator=g), "emotion": emotion}
    return {k: v.to(dev) for k, v in out.items()}


def bench_steps(kind: str, config: str, steps: int, dev: torch.device, amp: bool, rank: int, world: int) -> dict:
    cfg = load_train_config(f"{kind}/{config}")
    if kind == "texture" and cfg.loss.perceptual == "vgg16":  # ImageNet weights may be absent: same cost
        cfg = load_train_config(f"{kind}/{config}", ["loss.perceptual=vgg16-random"])
    task = build_task(cfg)
    task.device = dev
    if kind == "landmark":  # build_modules takes W and D from the data: give it DeepSpeech's shapes instead
        task._datasets = (SimpleNamespace(window=6, feature_dim=29), None)
    modules = {k: m.to(dev) for k, m in task.build_modules().items()}
    if dev.type == "cuda":
        modules = {k: m.to(memory_format=torch.channels_last) for k, m in modules.items()}
    opts = task.build_optimizers(modules)
    wrapped = dict(modules)
    if world > 1:
        ids = [dev.index] if dev.type == "cuda" else None
        wrapped = {k: torch.nn.parallel.DistributedDataParallel(m, device_ids=ids) if any(
            p.requires_grad for p in m.parameters()) else m for k, m in modules.items()}
    amp_dtype = amp_dtype_for(dev) if amp and getattr(task, "use_amp", True) else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ctx = StepContext(wrapped, modules, opts, dev, amp_dtype, scaler, 0.0)
    ctx.keep_logs_on_device = True
    B = cfg.train.batch_size
    if B % world:
        raise SystemExit(f"{kind}/{config}: batch {B} is not divisible by {world} processes")
    batch = synthetic_batch(kind, cfg, B // world, dev)
    for m in modules.values():
        m.train()
    losses, times = [], []
    for i in range(steps + 1):  # step 0: warm-up (allocation, cuDNN autotuning), not timed
        sync(dev)
        t = time.perf_counter()
        ctx.step_index = i
        logs = task.train_step(batch, ctx)
        if scaler is not None:
            scaler.update()
        sync(dev)
        if i:
            times.append(time.perf_counter() - t)
        losses.append(logs[LOSS_KEY[kind]])
    losses = [float(v) for v in losses]
    k = min(5, max(1, len(losses) // 2))
    s = float(np.median(times)) if times else float("nan")
    return {"steps": steps, "batch_global": B, "batch_per_process": B // world, "world": world,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32",
            "seconds_per_step": s, "steps_per_s": 1 / s, "samples_per_s": B / s,
            "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
            "loss_fell": bool(np.mean(losses[-k:]) < np.mean(losses[:k]))}


def synthetic_clips(root: Path, clips: int = 4, frames: int = 24, size: int = 256) -> Path:
    """A few processed clips with JPEG frames (the texture dataset's format) under ``root``."""
    from emotalk.data.io.clip import (Clip, SubjectReference, clip_path, encode_frames, save_clip, save_subject,
                                      subject_path)

    rng = np.random.default_rng(0)
    import cv2

    lm = crop_template(size).astype(np.float32)
    for c in range(clips):
        imgs = [cv2.resize(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), (size, size),
                           interpolation=cv2.INTER_CUBIC) for _ in range(frames)]
        data, offsets = encode_frames(imgs)
        clip = Clip(landmarks=np.zeros((frames, 68, 2), np.float32), neutral_landmarks=np.zeros((68, 2), np.float32),
                    audio_features=np.zeros((frames, 6, 29), np.float32), emotion="happy", intensity=2, fps=30.0,
                    subject="S01", clip_id=f"c{c:03d}", feature_kind="deepspeech",
                    crop_landmarks=np.repeat(lm[None], frames, 0), frames_jpeg=data, frames_offsets=offsets)
        save_clip(clip, clip_path(root, "S01", clip.clip_id))
    save_subject(SubjectReference("S01", imgs[0], lm, np.zeros((68, 2), np.float32)), subject_path(root, "S01"))
    return root


def bench_loader(root: Path, image_size: int, samples: int = 48) -> dict:
    """One worker's samples/s: item reads (byte range + JPEG decode + resize) and per-sample augmentation."""
    import cv2

    from emotalk.data.datasets.augment import augment_consistent
    from emotalk.data.datasets.texture import TextureFrameDataset

    cv2.setNumThreads(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = TextureFrameDataset(root, image_size=image_size)
        order = np.random.default_rng(0).permutation(len(ds))[:samples]  # shuffled across clips, as training
        ds[int(order[0])]
        t = time.perf_counter()
        for i in order:
            item = ds[int(i)]
            augment_consistent(item["identity"][None], item["target"][None])
        per = (time.perf_counter() - t) / len(order)
    finally:
        torch.set_num_threads(threads)
    return {"image_size": image_size, "samples_per_s_per_worker": 1 / per, "frames": len(ds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--configs", default="tiny,mead", help="tiny and/or mead (the paper's sizes)")
    ap.add_argument("--kinds", default="landmark,texture")
    ap.add_argument("--steps-tiny", type=int, default=5)
    ap.add_argument("--steps-paper", type=int, default=2)
    ap.add_argument("--amp", choices=("auto", "off"), default="auto", help="auto: AMP on CUDA as the trainer")
    ap.add_argument("--no-loader", action="store_true")
    ap.add_argument("--loader-data", default=None, help="processed dataset root (default: synthetic clips)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    world, rank, local = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    dev = select_device(args.device, local if world > 1 else None)
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "threads": torch.get_num_threads(), "world": world, "train": {}}
    for config in [c for c in args.configs.split(",") if c]:
        steps = args.steps_tiny if config == "tiny" else args.steps_paper
        for kind in [k for k in args.kinds.split(",") if k]:
            r = bench_steps(kind, config, steps, dev, args.amp == "auto", rank, world)
            res["train"][f"{kind}/{config}"] = r
            if rank == 0:
                print(f"{kind}/{config}: {r['steps_per_s']:.3g} steps/s, {r['samples_per_s']:.3g} samples/s "
                      f"(batch {r['batch_global']}, {r['amp']}), {LOSS_KEY[kind]} "
                      f"{r['loss_first']:.4g} -> {r['loss_last']:.4g}", flush=True)
    if not args.no_loader and rank == 0:
        with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
            root = Path(args.loader_data) if args.loader_data else synthetic_clips(Path(tmp))
            loader = {}
            for config in [c for c in args.configs.split(",") if c]:
                S = load_train_config(f"texture/{config}").model.image_size
                loader[config] = bench_loader(root, S)
                need = res["train"].get(f"texture/{config}", {}).get("samples_per_s")
                if need:
                    loader[config]["device_samples_per_s"] = need
                    loader[config]["workers_needed"] = math.ceil(need / loader[config]["samples_per_s_per_worker"])
                print(f"loader texture/{config} ({S}²): {loader[config]['samples_per_s_per_worker']:.3g} "
                      f"samples/s per worker; workers to feed this device: "
                      f"{loader[config].get('workers_needed', '?')}", flush=True)
            res["loader"] = loader
    if rank == 0 and args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


if __name__ == "__main__":
    main()
