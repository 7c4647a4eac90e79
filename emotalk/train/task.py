"""What a trainable system provides (:class:`Task`), what the trainer hands to its steps
(:class:`StepContext`), and the config sections every training config has (``train``, ``optim``).

Kept apart from :mod:`emotalk.train.trainer` so that tasks depend only on this small interface, not on
the training loop.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from emotalk.errors import ConfigError


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
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"train.steps must be >= 1 and train.batch_size >= 1, got steps={self.steps}, "
                              f"batch_size={self.batch_size}; e.g. train.steps=1000 train.batch_size=32")
        if self.num_workers < 0 or self.keep_checkpoints < 0 or self.val_every < 0 or self.val_batches < 0:
            raise ConfigError("train.num_workers, train.keep_checkpoints, train.val_every and train.val_batches "
                              "must be >= 0")
        if self.ckpt_every < 1 or self.log_every < 1:
            raise ConfigError("train.ckpt_every and train.log_every must be >= 1")


@dataclass
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0
    #: per-module learning-rate overrides, e.g. {discriminator: 1e-4}
    lr_overrides: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        """Out-of-range values fail here, at load time, not as NaN losses (or no learning) hours later."""
        for name, lr in {"optim.lr": self.lr, **{f"optim.lr_overrides.{k}": v
                                                 for k, v in self.lr_overrides.items()}}.items():
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(f"{name} must be a positive number such as 2e-4, got {lr!r}")
        if not all(math.isfinite(b) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1) such as [0.5, 0.999], got {list(self.betas)}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay!r}")


class Task:
    """What a trainable system provides. Subclasses set ``kind`` and implement the hooks.

    ``cfg`` must have ``train`` (:class:`TrainerConfig`) and ``optim`` (:class:`OptimConfig`) sections.
    """

    kind: str = "task"
    #: mixed precision on CUDA when ``train.amp``; False keeps a task in fp32 (G_L: small, LSTM)
    use_amp: bool = True
    #: the trainer's device, set before :meth:`build_modules` (e.g. SyncBatchNorm only on CUDA)
    device: torch.device = torch.device("cpu")

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
        """One optimisation step; returns log values, best as detached 0-d tensors: the trainer turns them
        into Python floats only on log steps (a float() every step makes the CPU wait for the GPU)."""
        raise NotImplementedError

    @torch.no_grad()
    def validate_step(self, batch: Any, ctx: "StepContext") -> dict[str, float]:
        return {}

    def metadata(self) -> dict:
        """Extra JSON metadata stored in every checkpoint (feature kind, dims, ...)."""
        return {}

    def on_start(self, ctx: "StepContext", log) -> None:
        """Called once after models are built and moved to the device (e.g. to log choices)."""


class StepContext:
    """Handed to ``Task.train_step``: the (DDP-wrapped) models, device, AMP and optimiser steps."""

    def __init__(self, models: dict[str, nn.Module], raw: dict[str, nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], device: torch.device, amp_dtype,
                 scaler, grad_clip: float):
        self.models, self.raw, self.optimizers = models, raw, optimizers
        self.device, self.amp_dtype, self.scaler, self.grad_clip = device, amp_dtype, scaler, grad_clip
        self.step_index = 0
        #: set by the trainer: log values stay detached tensors on the device until a log step
        self.keep_logs_on_device = False

    def log_values(self, logs: dict) -> dict:
        """A train step's log values: detached tensors when the trainer reads them only on log steps
        (no CPU-GPU synchronisation per step), else Python floats (tasks called directly, tests)."""
        if self.keep_logs_on_device:
            return {k: v.detach() if torch.is_tensor(v) else v for k, v in logs.items()}
        return {k: float(v) for k, v in logs.items()}

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
