"""The one trainer every model in emotalk uses.

A *task* (see :class:`Task`) owns its models and losses; the :class:`Trainer` owns everything else:

- device selection (:func:`emotalk.utils.device.select_device`: ``cuda:<LOCAL_RANK % device_count>`` when
  available, else CPU), ``cudnn.benchmark`` and channels_last weights on CUDA (shapes are fixed), and AMP
  on CUDA only (bf16 where the GPU has it natively, else fp16 with a gradient scaler; a task may opt out
  with ``Task.use_amp = False``, as G_L does: its LSTM gains nothing and loses precision);
- multi-process data parallelism under ``torchrun`` (DistributedDataParallel; NCCL on CUDA, gloo on CPU);
- deterministic, resumable batch sampling: the batch of global step ``s`` is a pure function of
  ``(seed, s)``, so a resumed run sees exactly the batches an uninterrupted run would;
- logging to TensorBoard (``<run_dir>/tb``), ``<run_dir>/metrics.jsonl``, ``<run_dir>/log.txt`` (also
  through :mod:`logging`) and a tqdm bar;
- checkpoints every ``ckpt_every`` steps as safetensors + JSON (see :mod:`emotalk.data.io.checkpoint`),
  written atomically, and exact resume of models, optimisers, step, gradient scaler and all RNG states.

Multi-GPU batch and learning rate: ``train.batch_size`` is the *global* batch, split evenly over the
processes (checked before any model is built). The paper's G_T batch of 4 over 4-8 GPUs leaves 1 image
per GPU: BatchNorm then needs SyncBatchNorm (the texture task switches it on when the trainer runs on
CUDA with more than one process) and every step all-reduces G_T's gradients (~120 MB) for one image of
work. Prefer scaling the batch with the GPUs (``train.batch_size = 4 × GPUs``) and the learning rate with
it: linearly for plain SGD-like behaviour, or by √k for Adam, with a short warm-up; keep at least 2
images per GPU.

The task interface (:class:`Task`, :class:`StepContext`, the ``train``/``optim`` config sections) is in
:mod:`emotalk.train.task`, the sampling/RNG/process plumbing in :mod:`emotalk.train.runtime`; both are
re-exported here.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from emotalk.config import dump_config, to_dict
from emotalk.data.io import checkpoint as ckpt
from emotalk.errors import CheckpointError, ConfigError, DataError, EmotalkError, InputError
from emotalk.train.runtime import (StepBatchSampler, dist_info, rng_state, seed_everything, set_rng_state,
                                   tensors_to)
from emotalk.train.task import OptimConfig, StepContext, Task, TrainerConfig
from emotalk.utils.device import amp_dtype_for, select_device
from emotalk.utils.io import atomic_write_text, missing_folders, remove_created_folders
from emotalk.utils.lock import FolderLock

__all__ = ["OptimConfig", "StepBatchSampler", "StepContext", "Task", "Trainer", "TrainerConfig",
           "seed_everything", "select_device"]

logger = logging.getLogger(__name__)


def worker_init(worker_id: int) -> None:
    """DataLoader workers: OpenCV's own thread pool off (JPEG decode and resize run one per worker;
    ``num_workers`` processes each spawning a pool per core oversubscribe the CPU that feeds the GPU)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class Trainer:
    def __init__(self, task: Task, resume: str | Path | None = None):
        self.task = task
        self.cfg = task.cfg
        self.tc: TrainerConfig = task.cfg.train
        self.resume_from = resume
        self.run_dir = Path(self.tc.run_dir)
        self.rank, self.world, self.local_rank = dist_info()
        self.step = 0
        self.history: list[dict] = []  # logged rows of this process (rank 0 writes them to disk)

    # --- distributed ---
    def _init_distributed(self) -> None:
        if self.device.type == "cuda":  # also for one process: allocations and NCCL go to this GPU
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # --- checkpointing ---
    def _checkpoint_payload(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"kind": self.task.kind, "step": self.step, "config": to_dict(self.cfg),
                                "optimizers": {}, "world_size": self.world}
        for name, m in self.modules.items():
            for k, v in m.state_dict().items():
                tensors[f"model/{name}/{k}"] = v
        for name, opt in self.optimizers.items():
            t, m = ckpt.flatten_optimizer(name, opt.state_dict())
            tensors.update(t)
            meta["optimizers"][name] = m
        if self.scaler is not None:
            meta["grad_scaler"] = self.scaler.state_dict()
        rng_t, rng_m = rng_state()
        if self.world > 1:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, (rng_t, rng_m))
        else:
            gathered = [(rng_t, rng_m)]
        meta["rng"] = []
        for r, (t, m) in enumerate(gathered):
            for k, v in t.items():
                tensors[f"rng/rank{r}/{k}"] = v
            meta["rng"].append(m)
        meta.update(self.task.metadata())
        return tensors, meta

    def save(self) -> Path | None:
        tensors, meta = self._checkpoint_payload()  # collective: every rank takes part
        path = None
        if self.is_main:
            cdir = self.run_dir / "checkpoints"
            path = ckpt.save_checkpoint(cdir / f"step_{self.step:08d}", tensors, meta)
            if self.tc.keep_checkpoints > 0:
                olds = sorted(cdir.glob("step_*.json"))[: -self.tc.keep_checkpoints]
                for old in olds:
                    old.with_suffix(".safetensors").unlink(missing_ok=True)
                    old.unlink(missing_ok=True)
        self._barrier()
        return path

    def _restore(self, path: str | Path) -> None:
        tensors, meta = ckpt.load_resume_checkpoint(path, kind=self.task.kind)  # damaged newest -> previous
        data_root = getattr(getattr(self.cfg, "data", None), "root", None)  # what sets feature sizes
        ckpt.check_same_model(meta, to_dict(self.cfg).get("model", {}), f"data.root={data_root}")
        for name, m in self.modules.items():
            ckpt.load_module(m, tensors, name)
        for name, opt in self.optimizers.items():
            if name not in meta.get("optimizers", {}):
                raise CheckpointError(f"{meta['path']}: has no optimiser state for {name!r}")
            opt.load_state_dict(ckpt.unflatten_optimizer(name, tensors, meta["optimizers"][name]))
        if self.scaler is not None and "grad_scaler" in meta:
            self.scaler.load_state_dict(meta["grad_scaler"])
        self.step = int(meta["step"])
        rngs = meta.get("rng", [])
        if self.rank < len(rngs):
            prefix = f"rng/rank{self.rank}/"
            set_rng_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                           rngs[self.rank])
        self._log_line(f"resumed from {meta['path']} at step {self.step}")

    # --- logging ---
    def _log_line(self, msg: str) -> None:
        if self.is_main:
            logger.info(msg)
            with open(self.run_dir / "log.txt", "a") as f:
                f.write(msg + "\n")

    def _reduce(self, logs: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not logs:
            return logs
        keys = sorted(logs)
        t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def _write_metrics(self, row: dict) -> None:
        self.history.append(row)
        if not self.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step", "split"):
                    self.writer.add_scalar(f"{row['split']}/{k}", v, row["step"])

    def _truncate_metrics(self) -> None:
        """On resume, drop logged rows after the resumed step so the curve continues seamlessly."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main or not path.is_file():
            return
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("step", 0) <= self.step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    # --- main loop ---
    def _validate(self, ctx: StepContext) -> dict[str, float]:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        for m in self.modules.values():
            m.eval()
        loader = DataLoader(self.val_set, batch_size=max(1, self.tc.batch_size // self.world), shuffle=False,
                            num_workers=0)
        sums: dict[str, float] = {}
        n = 0
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= self.tc.val_batches:
                    break
                out = self.task.validate_step(tensors_to(batch, self.device), ctx)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        for m in self.modules.values():
            m.train()
        return self._reduce({k: v / max(n, 1) for k, v in sums.items()})

    def fit(self) -> dict:
        """Train to ``train.steps``; returns the last logged training row. The run folder is locked for the
        whole call (:class:`~emotalk.utils.lock.FolderLock`): a second trainer into it refuses."""
        created = missing_folders(self.run_dir)
        lock = FolderLock(self.tc.run_dir, f"training {self.task.kind}") if self.rank == 0 else None
        if lock is not None:
            lock.acquire()
        try:
            return self._fit()
        except (EmotalkError, OSError):
            # refused (bad data, config, checkpoint) or out of disk before anything was saved: leave no
            # run folder with nothing in it worth keeping
            if created and self.is_main and ckpt.latest_checkpoint(self.run_dir / "checkpoints") is None:
                remove_created_folders(created, contents=True)
            raise
        finally:
            if lock is not None:
                lock.release()

    def _fit(self) -> dict:
        tc = self.tc
        if self.resume_from is None:  # a fresh run would mix its checkpoints with these and prune them
            held = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
            if held is not None:
                raise ConfigError(f"{self.run_dir} already holds a training run ({Path(held).name}); continue it "
                                  f"with --resume {self.run_dir}, or choose another train.run_dir=...")
        try:
            self.device = select_device(tc.device, self.local_rank)
        except InputError as e:
            raise ConfigError(f"train.device: {e}") from None
        if tc.batch_size % self.world:  # before any model is built or data is read
            raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by the number of "
                              f"processes ({self.world}); use a multiple of {self.world}")
        self._init_distributed()
        seed_everything(tc.seed + self.rank)
        self.run_dir.mkdir(parents=True, exist_ok=True)

        self.task.device = self.device  # e.g. SyncBatchNorm only when the trainer itself runs on CUDA
        self.modules = {k: m.to(self.device) for k, m in self.task.build_modules().items()}
        if self.device.type == "cuda":  # NHWC convolutions: tensor cores without layout reorders
            self.modules = {k: m.to(memory_format=torch.channels_last) for k, m in self.modules.items()}
        self.optimizers = self.task.build_optimizers(self.modules)
        amp_dtype, self.scaler = None, None
        if tc.amp and self.task.use_amp:
            amp_dtype = amp_dtype_for(self.device)
            if amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        if self.resume_from is not None:
            self._restore(self.resume_from)
            self._truncate_metrics()
        if self.is_main:
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))

        wrapped: dict[str, nn.Module] = {}
        for name, m in self.modules.items():
            has_params = any(p.requires_grad for p in m.parameters())
            if self.world > 1 and has_params:
                ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped[name] = nn.parallel.DistributedDataParallel(
                    m, device_ids=ids, find_unused_parameters=tc.ddp_find_unused_parameters)
            else:
                wrapped[name] = m
        ctx = StepContext(wrapped, self.modules, self.optimizers, self.device, amp_dtype, self.scaler,
                          tc.grad_clip)
        ctx.keep_logs_on_device = True  # floats only on log steps (below)

        train_set, self.val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise DataError("the training dataset is empty; check data.root and data.subjects")
        sampler = StepBatchSampler(len(train_set), tc.batch_size, tc.seed, self.rank, self.world, self.step)
        # the loader gets its own generator so creating its iterator never draws from the global RNG
        # (which would shift a resumed run against an uninterrupted one)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=tc.num_workers,
                            pin_memory=self.device.type == "cuda",
                            worker_init_fn=worker_init if tc.num_workers > 0 else None,
                            generator=torch.Generator().manual_seed(tc.seed + self.step))

        self.writer = None
        if self.is_main and tc.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
        self._log_line(f"task={self.task.kind} device={self.device} world_size={self.world} "
                       f"amp={amp_dtype} run_dir={self.run_dir}")
        self.task.on_start(ctx, self._log_line)

        from tqdm import tqdm

        bar = tqdm(total=tc.steps, initial=self.step, desc=f"train {self.task.kind}", unit="step",
                   disable=not (self.is_main and tc.progress), dynamic_ncols=True)
        last: dict = {}
        it = iter(loader)
        try:
            for m in self.modules.values():
                m.train()
            while self.step < tc.steps:
                batch = tensors_to(next(it), self.device)
                ctx.step_index = self.step
                logs = self.task.train_step(batch, ctx)
                if self.scaler is not None:
                    self.scaler.update()
                self.step += 1
                bar.update(1)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    row = {"step": self.step, "split": "train", **self._reduce(
                        {k: float(v) for k, v in logs.items()})}
                    self._write_metrics(row)
                    last = row
                    bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "split")})
                is_ckpt = self.step % tc.ckpt_every == 0 or self.step == tc.steps
                if (tc.val_every and self.step % tc.val_every == 0) or is_ckpt:
                    val = self._validate(ctx)
                    if val:
                        self._write_metrics({"step": self.step, "split": "val", **val})
                if is_ckpt:
                    self.save()
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        return last

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
