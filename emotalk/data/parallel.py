"""One process pool for the CPU-bound batch jobs: preprocessing (:mod:`emotalk.data.preprocess.pipeline`)
and mead-mini generation (:mod:`emotalk.mini.generator`).

Why a helper: both jobs need the same three things, and getting any of them wrong hangs or oversubscribes
a small machine:

* **forkserver (else spawn), never plain fork** — forking a process whose OpenMP / torch thread pools
  are already running (the demo and the tests import torch first) can deadlock the children (see the
  commit "mead-mini: forkserver worker pool");
* **one thread per worker** — ``OMP_NUM_THREADS=1`` and ``cv2.setNumThreads(1)``, since the
  parallelism is across items;
* **per-worker state** — read-only inputs shipped once per worker (not once per item) and caches of
  heavy objects (the dlib landmarker, a speech-feature backend, a subject's face warper) built once per
  worker: :func:`worker_state` / :func:`worker_cached`. With ``workers=1`` everything runs in this
  process, with the same state API, so a job's code is identical either way.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: this process's worker state: set from the pool's ``state`` when a worker starts (in-process: when the
#: pool is entered); caches added by :func:`worker_cached` live here too
_STATE: dict[str, Any] = {}


def worker_state() -> dict[str, Any]:
    """The state the current :class:`WorkerPool` shipped to this worker (or to this process)."""
    return _STATE


def worker_cached(key: Any, make: Callable[[], T]) -> T:
    """``make()`` once per worker process, under ``key``; later calls return the same object."""
    if key not in _STATE:
        _STATE[key] = make()
    return _STATE[key]


def _start_worker(state: dict, threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass
    _STATE.clear()
    _STATE.update(state)


def start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn`` (never ``fork``, see the module docs)."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class WorkerPool:
    """``with WorkerPool(workers, state) as pool: for r in pool.imap(fn, items): ...``

    ``fn`` must be a module-level function (it is pickled by name); ``state`` (picklable) reaches every
    worker once, readable there through :func:`worker_state`. ``workers <= 1`` runs in this process.
    """

    def __init__(self, workers: int = 1, state: dict | None = None, threads: int = 1):
        self.workers = max(1, int(workers))
        self.state = dict(state or {})
        self.threads = int(threads)
        self._pool = None

    def __enter__(self) -> "WorkerPool":
        if self.workers > 1:
            ctx = mp.get_context(start_method())
            self._pool = ctx.Pool(self.workers, initializer=_start_worker, initargs=(self.state, self.threads))
        else:
            _STATE.update(self.state)
        return self

    def imap(self, fn: Callable[[T], R], items: Iterable[T], ordered: bool = True) -> Iterator[R]:
        """Results of ``fn`` over ``items`` as they finish (in input order unless ``ordered=False``)."""
        if self._pool is None:
            return map(fn, items)
        run = self._pool.imap if ordered else self._pool.imap_unordered
        return run(fn, items, chunksize=1)

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        else:
            for key in self.state:
                _STATE.pop(key, None)
