"""The one trainer every model in emotalk uses.

A *task* (see :class:`Task`) owns its models and losses; the :class:`Trainer` owns everything else:

- device auto-selection (``cuda:<LOCAL_RANK>`` when available, else CPU) and AMP on CUDA only
  (bf16 where supported, else fp16 with a gradient scaler);
- multi-process data parallelism under ``torchrun`` (DistributedDataParallel; NCCL on CUDA, gloo on CPU);
- deterministic, resumable batch sampling: the batch of global step ``s`` is a pure function of
  ``(seed, s)``, so a resumed run sees exactly the batches an uninterrupted run would;
- logging to TensorBoard (``<run_dir>/tb``), ``<run_dir>/metrics.jsonl`` and a tqdm bar;
- checkpoints every ``ckpt_every`` steps as safetensors + JSON (see :mod:`emotalk.data.io.checkpoint`),
  written atomically, and exact resume of models, optimisers, step, gradient scaler and all RNG states.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from emotalk.config import dump_config, to_dict
from emotalk.errors import CheckpointError, ConfigError, DataError
from emotalk.data.io import checkpoint as ckpt
from emotalk.utils.io import atomic_write_text


@dataclass
class TrainerConfig:
    run_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 32  # global batch, split evenly across processes
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 3  # older step checkpoints are deleted (0 = keep all)
    val_every: int = 0  # 0: validate only at checkpoints
    val_batches: int = 8
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision; only ever used on CUDA
    grad_clip: float = 0.0  # max grad norm per optimiser step (0 = off)
    tensorboard: bool = True
    progress: bool = True
    ddp_find_unused_parameters: bool = False

    def validate(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ConfigError("train.steps must be >= 0 and train.batch_size >= 1")
        if self.ckpt_every < 1 or self.log_every < 1:
            raise ConfigError("train.ckpt_every and train.log_every must be >= 1")


@dataclass
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    #: per-module learning-rate overrides, e.g. {discriminator: 1e-4}
    lr_overrides: dict[str, float] = field(default_factory=dict)


class Task:
    """What a trainable system provides. Subclasses set ``kind`` and implement the hooks.

    ``cfg`` must have ``train`` (:class:`TrainerConfig`) and ``optim`` (:class:`OptimConfig`) sections.
    """

    kind: str = "task"

    def __init__(self, cfg: Any):
        self.cfg = cfg

    # --- construction ---
    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        raise NotImplementedError

    def build_modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def build_optimizers(self, modules: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """Default: one Adam per module that has trainable parameters."""
        o = self.cfg.optim
        out = {}
        for name, m in modules.items():
            params = [p for p in m.parameters() if p.requires_grad]
            if params:
                out[name] = torch.optim.Adam(params, lr=o.lr_overrides.get(name, o.lr), betas=tuple(o.betas),
                                             weight_decay=o.weight_decay)
        return out

    # --- steps ---
    def train_step(self, batch: Any, ctx: "StepContext") -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def validate_step(self, batch: Any, ctx: "StepContext") -> dict[str, float]:
        return {}

    def metadata(self) -> dict:
        """Extra JSON metadata stored in every checkpoint (feature kind, dims, ...)."""
        return {}

    def on_start(self, ctx: "StepContext", log) -> None:
        """Called once after models are built and moved to the device (e.g. to log choices)."""


def _tensors_to(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _tensors_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_tensors_to(v, device) for v in batch)
    return batch


class StepBatchSampler(Sampler[list[int]]):
    """Infinite batch sampler whose batch for global step ``s`` depends only on ``(seed, s)``.

    Each epoch is a fresh permutation seeded by ``(seed, epoch)``; the global batch is split across
    ranks (``rank::world``). Starting at ``start_step`` reproduces the stream of an uninterrupted run.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 start_step: int = 0):
        if n < 1:
            raise DataError("the training dataset is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self.per_epoch = max(1, n // batch_size)
        self._cache: tuple[int, torch.Tensor] | None = None

    def _perm(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
            if self.n < self.batch_size:  # tiny datasets: tile the permutation
                perm = perm.repeat(math.ceil(self.batch_size / self.n))
            self._cache = (epoch, perm)
        return self._cache[1]

    def batch_for(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        idx = self._perm(epoch)[i * self.batch_size:(i + 1) * self.batch_size]
        return idx[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.batch_for(step)
            step += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def select_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available; use train.device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


class StepContext:
    """Handed to ``Task.train_step``: the (DDP-wrapped) models, device, AMP and optimiser steps."""

    def __init__(self, models: dict[str, nn.Module], raw: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], device: torch.device, amp_dtype,
                 scaler, grad_clip: float):
        self.models, self.raw, self.optimizers = models, raw, optimizers
        self.device, self.amp_dtype, self.scaler, self.grad_clip = device, amp_dtype, scaler, grad_clip
        self.step_index = 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Zero ``name``'s gradients, backpropagate ``loss`` and take one optimiser step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.raw[name].parameters(), self.grad_clip)
            self.scaler.step(opt)
        else:
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.raw[name].parameters(), self.grad_clip)
            opt.step()


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s.clone()
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {"numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                      float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    cuda = sorted(k for k in tensors if k.startswith("cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k].to(torch.uint8) for k in cuda][: torch.cuda.device_count()])
    n = meta["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, task: Task, resume: str | Path | None = None):
        self.task = task
        self.cfg = task.cfg
        self.tc: TrainerConfig = task.cfg.train
        self.resume_from = resume
        self.run_dir = Path(self.tc.run_dir)
        self.rank, self.world, self.local_rank = _dist_info()
        self.step = 0
        self.history: list[dict] = []  # logged rows of this process (rank 0 writes them to disk)

    # --- distributed ---
    def _init_distributed(self) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend=backend)

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
        rng_t, rng_m = _rng_state()
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
        tensors, meta = ckpt.load_checkpoint(path, kind=self.task.kind)
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
            _set_rng_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                           rngs[self.rank])
        self._log_line(f"resumed from {meta['path']} at step {self.step}")

    # --- logging ---
    def _log_line(self, msg: str) -> None:
        if self.is_main:
            from tqdm import tqdm

            tqdm.write(f"[emotalk] {msg}")
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
                out = self.task.validate_step(_tensors_to(batch, self.device), ctx)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                n += 1
        for m in self.modules.values():
            m.train()
        return self._reduce({k: v / max(n, 1) for k, v in sums.items()})

    def fit(self) -> dict:
        """Train to ``train.steps``; returns the last logged training row."""
        tc = self.tc
        self.device = select_device(tc.device, self.local_rank)
        self._init_distributed()
        seed_everything(tc.seed + self.rank)
        self.run_dir.mkdir(parents=True, exist_ok=True)

        self.modules = {k: m.to(self.device) for k, m in self.task.build_modules().items()}
        self.optimizers = self.task.build_optimizers(self.modules)
        amp_dtype, self.scaler = None, None
        if tc.amp and self.device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                amp_dtype = torch.bfloat16
            else:
                amp_dtype = torch.float16
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

        train_set, self.val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise DataError("the training dataset is empty; check data.root and data.subjects")
        if tc.batch_size % self.world:
            raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by the number of "
                              f"processes ({self.world})")
        sampler = StepBatchSampler(len(train_set), tc.batch_size, tc.seed, self.rank, self.world, self.step)
        # the loader gets its own generator so creating its iterator never draws from the global RNG
        # (which would shift a resumed run against an uninterrupted one)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=tc.num_workers,
                            pin_memory=self.device.type == "cuda",
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
                batch = _tensors_to(next(it), self.device)
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
