"""The metrics of one evaluated set computed by two processes at once, with exactly the serial results.

Why: on the demo's 2-core CPU most of the evaluation's metric time is single-threaded (dlib's detection and
face embeddings, CPBD, SSIM, the fer Haar cascade), so one core idles while the other scores. The metrics
fall into two groups that share no state:

- the *pixel* metrics (:data:`PIXEL_METRICS`: PSNR, SSIM, CPBD, Emo-Acc-FER) read only the frames;
- the others read and fill each sample's :class:`~emotalk.eval.feature_store.FeatureStore` (dlib landmarks,
  embeddings), which :func:`emotalk.eval.evaluate.evaluate` hands from one method to the next.

:func:`compute_metrics_parallel` computes the pixel group in a forked child on its copy-on-write view of the samples
while this process computes the rest (and keeps every FeatureStore entry); the child sends back only the
:class:`MetricResult` s. The same functions run on the same data, so the numbers are those of
:func:`compute_metrics` (``tests/test_evaluate.py`` checks equality).

Fork, not spawn: the child needs the samples (tens of MB of frames) and the loaded detectors, which fork
shares for free, where a spawned interpreter would import torch again and pickle the frames (seconds). The
child runs torch on one thread (the fer network). Serial instead when fork is unavailable, when CUDA is
initialised or the metrics' device is not the CPU (a forked child cannot use CUDA), or with ``workers < 2``.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import sys
from typing import Any, Callable, Iterator, Sequence

import torch

from emotalk.errors import EmotalkError
from emotalk.eval.metrics import MetricOptions, MetricResult, VideoSample, compute_metrics, get_metric
from emotalk.eval.metrics.base import check_inputs

log = logging.getLogger(__name__)

#: registered metrics that read only a sample's frames (no FeatureStore): safe to compute in another process
PIXEL_METRICS = ("psnr", "ssim", "cpbd", "emo_acc_fer")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def split_metrics(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(pixel metrics, the rest)`` of ``names``, each in the given order."""
    return [n for n in names if n in PIXEL_METRICS], [n for n in names if n not in PIXEL_METRICS]


def fork_available() -> bool:
    """Whether this process may fork a worker: the platform has fork and CUDA is not initialised (a forked
    child cannot use it)."""
    return sys.platform != "win32" and "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()


def can_fork(opts: MetricOptions) -> bool:
    """Whether a forked child may compute metrics here (see the module docstring)."""
    if not fork_available():
        return False
    try:
        return opts.torch_device().type == "cpu"
    except Exception:  # noqa: BLE001 - an invalid device fails in the serial path with its own message
        return False


def _child(conn, fn: Callable[[], Any]) -> None:
    torch.set_num_threads(1)  # the parent keeps the other core
    try:
        msg = ("ok", fn())
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which raises it
        msg = ("error", e)
    try:  # the pipe pickles: only between this program's own processes, never data from files
        conn.send(msg)
    except Exception as e:  # noqa: BLE001 - an unpicklable result or error: send its text
        conn.send(("error", EmotalkError(f"the worker process failed: {msg[1]!r} ({e})")))
    conn.close()


class Forked:
    """``fn()`` running in a forked child on one torch thread (:meth:`start`); :meth:`result` waits for its
    (pickled) return value or raises its exception. With ``fork=False`` nothing is started and :meth:`result`
    calls ``fn`` here, on this process's threads."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn = fn
        self._proc = None
        self._conn = None

    @classmethod
    def start(cls, fn: Callable[[], Any], fork: bool = True) -> "Forked":
        job = cls(fn)
        if fork:
            ctx = mp.get_context("fork")
            recv, send = ctx.Pipe(duplex=False)
            job._proc = ctx.Process(target=_child, args=(send, fn), daemon=True, name="emotalk-worker")
            job._proc.start()
            send.close()
            job._conn = recv
        return job

    def result(self) -> Any:
        if self._proc is None:
            return self.fn()
        try:
            status, payload = self._conn.recv()
        except EOFError:
            self._proc.join()
            raise EmotalkError(f"a worker process died (exit code {self._proc.exitcode}); rerun with one worker "
                               f"(metric_workers=1 for 'emotalk evaluate')") from None
        finally:
            self._conn.close()
        self._proc.join()
        self._proc = None
        if status == "error":
            raise payload
        return payload

    def cancel(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join()
            self._conn.close()
            self._proc = None


def compute_metrics_parallel(names: Sequence[str], samples: Sequence[VideoSample],
                             opts: MetricOptions | None = None, workers: int = 2) -> dict[str, MetricResult]:
    """:func:`compute_metrics` with the pixel metrics in a second process when ``workers >= 2``: the same
    ``{display name: result}``, in the same order."""
    opts = opts or MetricOptions()
    pixel, rest = split_metrics(names)
    if workers < 2 or not pixel or not rest or not can_fork(opts):
        return compute_metrics(names, samples, opts)
    for n in names:  # every input error before any work, as compute_metrics does
        check_inputs(get_metric(n), samples)
    job = Forked.start(lambda: compute_metrics(pixel, samples, opts))
    try:
        mine = compute_metrics(rest, samples, opts)
    except BaseException:
        job.cancel()
        raise
    theirs = job.result()
    return ordered(names, {**mine, **theirs})


def ordered(names: Sequence[str], results: dict[str, MetricResult]) -> dict[str, MetricResult]:
    """``results`` in the order of ``names`` (the order :func:`compute_metrics` returns)."""
    out = {}
    for n in names:
        d = get_metric(n).display
        if d in results:
            out[d] = results[d]
    return out
