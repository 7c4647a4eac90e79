"""The training loop's plumbing: deterministic resumable batch sampling, torchrun process info, RNG state
capture/restore and seeding, moving batches to the device.

Kept apart from :mod:`emotalk.train.trainer` so that the loop reads as the steps it takes.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from emotalk.errors import DataError


def tensors_to(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: tensors_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(tensors_to(v, device) for v in batch)
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


def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
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


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
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
