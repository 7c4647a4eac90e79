"""CPU threads for a short burst of small-batch work on a machine other processes may share (issue 16 §2).

Measured on the 2-core CPU with other processes busy (load 4-5): the one-shot fine-tuning's 5 steps at 256²
took 30-57 s with torch's 2 threads and 4-6 s with 1 thread (idle, 2 threads: ~2-3 s). Every operator is an
OpenMP parallel region ending in a barrier; when the scheduler has taken one of the two cores for another
process, the other thread waits out its time slice at every barrier - thousands per step. One thread per
free core avoids that; a core lent to a thread that then waits costs far more than a core left unused.

:class:`ThreadFit` sets torch's thread count before each step to the cores not running other processes at that
moment (Linux: the runnable tasks of ``/proc/loadavg`` minus this process's own running threads), capped at
the count it found, and restores that count at the end. Where that cannot be read (not Linux, or a process
confined to some of the machine's CPUs) it keeps the count. ``torch.set_num_threads`` is process-wide: other threads of the process running torch meanwhile see
the same count.
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def _running_others() -> int | None:
    """Runnable tasks of other processes right now, or None where /proc cannot tell."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        ours = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    stat = f.read()
            except OSError:  # the thread ended meanwhile
                continue
            ours += stat[stat.rindex(")") + 2] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - ours)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int | None:
    """Cores of this process's CPU set that other processes are not running on right now (None: unknown).

    The runnable count is the whole machine's: where this process may run on only some of its CPUs (a
    cpuset-limited container on a bigger host) it says nothing about those, so the answer is None."""
    cores = _cores()
    if cores < (os.cpu_count() or cores):
        return None
    others = _running_others()
    return None if others is None else max(0, cores - others)


class ThreadFit:
    """Context manager: torch's CPU thread count fitted to the free cores at entry and at each :meth:`refit`,
    never above the count found at entry (or ``threads`` when given as a number: then fixed, no fitting);
    restored on exit. ``device`` other than the CPU: nothing changes. ``used``: the count of each refit."""

    def __init__(self, threads: int | str = "auto", device: torch.device | str = "cpu"):
        if not (threads == "auto" or (isinstance(threads, int) and threads >= 1)):
            raise ValueError(f"threads must be 'auto' or a positive integer, got {threads!r}")
        self.cpu = torch.device(device).type == "cpu"
        self.threads = threads
        self.start = torch.get_num_threads()
        self.used: list[int] = []

    def __enter__(self) -> "ThreadFit":
        self.start = torch.get_num_threads()
        if self.cpu and isinstance(self.threads, int):
            torch.set_num_threads(self.threads)
        self.refit()
        return self

    def refit(self) -> int:
        """Fit the count to the cores free now (auto) and return it."""
        n = torch.get_num_threads()
        if self.cpu and self.threads == "auto":
            free = free_cores()
            want = self.start if free is None else max(1, min(self.start, free))
            if want != n:
                torch.set_num_threads(want)
                log.debug("%d of %d cores free: %d torch threads", free, _cores(), want)
                n = want
        self.used.append(n)
        return n

    def __exit__(self, *exc) -> None:
        if self.cpu and torch.get_num_threads() != self.start:
            torch.set_num_threads(self.start)
