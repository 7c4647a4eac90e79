"""The frames-per-forward of the inference-only G_T (:mod:`emotalk.inference.fast_texture`), chosen by
measurement on the frames being rendered, not a constant (issue 16 §1): the best batch depends on the
device, the thread count, the model's shape and its precision, so it is measured once and cached per
machine in ``<user dir>/texture_batch.json``."""
from __future__ import annotations

import json
import logging
import os
import platform

import torch

from emotalk.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def batch_candidates(device: torch.device) -> tuple[int, ...]:
    return (8, 16, 32, 64) if device.type == "cuda" else (1, 2, 4, 8)


def machine_key(device: torch.device) -> str:
    """What the best batch depends on besides the model: the processor and the thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu:{name}:{torch.get_num_threads()}threads"


class BatchTuner:
    """Chooses the frames-per-forward of G_T by measurement on the frames being rendered.

    Each candidate batch size is timed twice on real work (the first call of a shape includes oneDNN /
    cuDNN set-up; the better of the two counts); then the batch with the best frames/s is kept (ties
    within 2 % go to the smaller batch: less latency and memory) - so frames/s at the chosen batch is
    never below batch 1's. The choice is stored under ``key`` in ``cache`` (JSON) and reused by the next
    run on the same machine and model.
    """

    TIE = 1.02

    def __init__(self, key: str, candidates: tuple[int, ...], cache: str | os.PathLike | None = None):
        self.key, self.candidates = key, tuple(sorted(set(int(c) for c in candidates)))
        self.cache = cache
        self.per_frame: dict[int, list[float]] = {}
        self.chosen: int | None = None
        if cache is not None:
            try:
                with open(cache) as f:
                    hit = json.load(f).get(key)
                if isinstance(hit, int) and hit >= 1:
                    self.chosen = hit
            except (OSError, ValueError, AttributeError):
                pass

    @property
    def default(self) -> int:
        """The batch to ask the pipeline for: the chosen one, or the largest candidate while measuring."""
        return self.chosen or self.candidates[-1]

    def next_batch(self, remaining: int) -> int:
        if self.chosen is not None:
            return min(self.chosen, remaining)
        for b in self.candidates:
            if b <= remaining and len(self.per_frame.get(b, ())) < 2:
                return b
        return min(self.candidates[-1], remaining)

    def record(self, batch: int, seconds: float) -> None:
        if self.chosen is not None or batch not in self.candidates:
            return
        self.per_frame.setdefault(batch, []).append(seconds / batch)
        if all(len(self.per_frame.get(b, ())) >= 2 for b in self.candidates):
            best = {b: min(ts) for b, ts in self.per_frame.items()}
            fastest = min(best.values())
            self.chosen = min(b for b, t in best.items() if t <= fastest * self.TIE)
            log.info("G_T batch chosen by measurement: %d (%s)", self.chosen,
                     ", ".join(f"b={b}: {1 / t:.3g} frames/s" for b, t in sorted(best.items())))
            self._save()

    def _save(self) -> None:
        if self.cache is None:
            return
        try:
            with open(self.cache) as f:
                data = json.load(f)
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        data[self.key] = self.chosen
        try:
            os.makedirs(os.path.dirname(os.fspath(self.cache)) or ".", exist_ok=True)
            atomic_write_text(self.cache, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as e:  # a read-only home only costs the next run its measurement
            log.debug("could not cache the G_T batch choice in %s: %s", self.cache, e)
