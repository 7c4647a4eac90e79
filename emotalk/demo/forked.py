"""The demo's model stages on both cores: independent pieces of work in forked processes, one torch thread each.

Why: the demo's models are small (G_T at 128x128 with quarter widths, a 2-layer MLP classifier), so an
operator does little arithmetic and two torch threads mostly wait for each other at OpenMP's barrier: in one
process the MLP's training step costs less CPU *and* less wall time on one thread than on two, and G_T
renders a frame in ~1/5 of the CPU time on one thread (measured in one process, 2 cores shared with other
jobs, where a spinning partner thread is at its worst). Two processes on one thread each keep both cores busy
with useful work instead, and the single-threaded parts (dlib, WebP and JPEG encoding) run side by side.

:func:`map_forked` runs ``fn(item)`` for each item, this process taking the first share and forked children
the others. Fork, not spawn: a child starts in milliseconds with the parent's loaded models and everything
the demo's :class:`~emotalk.demo.shared.SharedPipeline` prepared before the fork (fine-tuned faces, speech
features), where a spawned interpreter would import torch and load the checkpoints again. What a child
prepares itself stays in the child. Results come back pickled, so ``fn`` returns small things (paths,
JSON-able dicts, arrays of landmarks) and writes its media itself.

Serial in this process on its own thread setting (what the demo did before) when fork is unavailable, CUDA is
initialised (a forked child cannot use it) or ``workers`` is 1.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence, TypeVar

from emotalk.eval.parallel import Forked, fork_available, torch_threads  # noqa: F401 (torch_threads: the demo's API)

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def shares(items: Sequence[T], workers: int, cost: Callable[[T], float] | None = None) -> list[list[int]]:
    """Indices of ``items`` split into ``workers`` shares of about equal total ``cost`` (1 each by default),
    greedily from the most costly; each share keeps the items' order. Empty shares are dropped."""
    cost = cost or (lambda _: 1.0)
    order = sorted(range(len(items)), key=lambda i: -float(cost(items[i])))
    out: list[list[int]] = [[] for _ in range(max(1, int(workers)))]
    load = [0.0] * len(out)
    for i in order:
        k = min(range(len(out)), key=lambda j: (load[j], j))
        out[k].append(i)
        load[k] += float(cost(items[i]))
    return [sorted(s) for s in out if s]


def map_forked(fn: Callable[[T], R], items: Sequence[T], workers: int = 2,
               cost: Callable[[T], float] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, the items split over ``workers`` processes (this one and forked
    children), each running torch on one thread; results in the items' order. An exception in a child is
    raised here (its own type when it pickles)."""
    items = list(items)
    parts = shares(items, workers if fork_available() else 1, cost)
    results: list = [None] * len(items)
    if len(parts) <= 1:  # one process: as before, on this process's threads
        return [fn(x) for x in items]
    jobs = [Forked.start(lambda idx=idx: [fn(items[i]) for i in idx]) for idx in parts[1:]]
    try:
        with torch_threads(1):
            for i in parts[0]:
                results[i] = fn(items[i])
        for job, idx in zip(jobs, parts[1:]):
            for i, r in zip(idx, job.result()):
                results[i] = r
    finally:
        for job in jobs:  # after an error: no child left behind
            job.cancel()
    return results
