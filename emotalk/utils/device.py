"""The one device selector of emotalk (training, inference, fine-tuning and evaluation all use it).

``auto`` picks CUDA when it is available and the CPU otherwise; an explicit ``cpu``, ``cuda``, ``cuda:N``
or ``mps`` is checked here, once, with an error that says what to pass instead.
"""
from __future__ import annotations

import torch

from emotalk.errors import InputError

_HINT = "use auto, cpu, cuda or cuda:N"


def select_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` (or a ``torch.device``) -> ``torch.device``.

    ``local_rank`` (a process's GPU under ``torchrun``) gives ``auto`` and a bare ``cuda`` their index,
    so that every process of a distributed run gets its own GPU. Raises :class:`InputError` for an
    unknown spec or a device that is not there.
    """
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = str(spec or "auto").strip().lower()
        if text == "auto":
            if not torch.cuda.is_available():
                return torch.device("cpu")
            return torch.device("cuda", local_rank) if local_rank is not None else torch.device("cuda")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise InputError(f"unknown device {spec!r}; {_HINT}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {spec!r}; {_HINT}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} requested but CUDA is not available; use cpu (or auto)")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                             f"exist; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {spec!r} requested but MPS is not available; use cpu (or auto)")
    return dev
