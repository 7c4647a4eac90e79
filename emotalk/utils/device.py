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
    so that every process of a distributed run gets its own GPU: ``local_rank % device_count`` (a
    launcher that exposes one GPU per process, ``CUDA_VISIBLE_DEVICES=<rank>``, has device 0 only). Raises :class:`InputError` for an
    unknown spec or a device that is not there.
    """
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = str(spec or "auto").strip().lower()
        if text == "auto":
            if not torch.cuda.is_available():
                return torch.device("cpu")
            return torch.device("cuda", _gpu_index(local_rank)) if local_rank is not None else torch.device("cuda")
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
            dev = torch.device("cuda", _gpu_index(local_rank))
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) "
                             f"exist; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {spec!r} requested but MPS is not available; use cpu (or auto)")
    return dev


def _gpu_index(local_rank: int) -> int:
    return int(local_rank) % max(1, torch.cuda.device_count())


def cuda_bf16_native(device: torch.device | None = None) -> bool:
    """Whether the GPU computes bf16 natively (Ampere and later).

    ``torch.cuda.is_bf16_supported()`` is also true where bf16 is *emulated* (V100, T4): AMP in bf16 runs
    there far slower than fp16 with a gradient scaler, so emulation must not count."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the flag: bf16 is native from compute capability 8.0 on
        return torch.cuda.get_device_capability(device)[0] >= 8


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 convolutions natively (AVX512-BF16 or AMX), not emulated in fp32:
    only then is bf16 autocast faster on the CPU (measured on an AVX512-BF16 Xeon: a G_T training step at
    0.48x the fp32 time)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for training on ``device``: bf16 on GPUs with native bf16, fp16 (with a
    gradient scaler) on older GPUs, None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
