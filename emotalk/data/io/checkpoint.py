"""Checkpoints: tensors in one ``.safetensors`` file, everything else in a ``.json`` file beside it.

Layout of the tensor keys::

    model/<module>/<param or buffer name>      weights of each module (unwrapped from DDP)
    optim/<optimiser>/<param index>/<key>      optimiser state tensors (Adam moments, step, ...)
    rng/torch, rng/cuda/<i>                    RNG states (per rank: rng/rank<r>/...)

The JSON metadata holds ``kind`` (landmark, texture, ...), ``step``, the full resolved ``config``,
optimiser ``param_groups`` and non-tensor state, Python/NumPy RNG states and anything the task adds
(feature kind, feature dim, ...). Both files are written atomically (temp file + rename), the JSON
last, so a checkpoint counts as complete once its JSON exists.

Reading is defensive: the JSON is size-capped and the safetensors header is checked against the file's
size (every tensor's shape x dtype must fit its byte range inside the file) before any tensor is read, so a
damaged or hostile file cannot make the reader allocate what the file does not hold.
:func:`load_resume_checkpoint` skips a damaged newest checkpoint of a run for the one before it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch

from emotalk.errors import CheckpointError
from emotalk.utils.io import atomic_path, atomic_write_json
from emotalk.utils.weights import load_state_strict

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_STEP_RE = re.compile(r"step_(\d+)\.json$")
#: checkpoint metadata is config + RNG states + optimiser scalars: kilobytes. Larger is not ours.
MAX_META_BYTES = 64 << 20
#: a safetensors header lists names, dtypes, shapes and offsets: a few bytes per tensor
MAX_HEADER_BYTES = 32 << 20
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class WrongKindError(CheckpointError):
    """A readable checkpoint of another kind (a G_T checkpoint where G_L is needed): not damage."""


def check_safetensors_header(path: Path) -> None:
    """Refuse a weights file whose header does not describe its own bytes (truncated, damaged, or built to
    make the reader allocate more than the file holds), before any tensor is read."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: corrupt weights file (truncated to {size} bytes); use another checkpoint")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{path}: corrupt weights file (its header claims {n} bytes, the file has "
                                  f"{size}); use another checkpoint")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt weights file (unreadable header); use another checkpoint") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt weights file (header is not a table); use another checkpoint")
    data_bytes = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape, (begin, end) = [int(d) for d in entry["shape"]], entry["data_offsets"]
            numel = 1
            for d in shape:
                if d < 0:
                    raise ValueError
                numel *= d
            need = numel * _DTYPE_BYTES[entry["dtype"]]
            ok = 0 <= int(begin) <= int(end) <= data_bytes and int(end) - int(begin) == need
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: corrupt weights file (tensor {name!r} claims a shape or byte range the "
                                  f"{size}-byte file does not hold); use another checkpoint")


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def flatten_optimizer(name: str, opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and JSON-able data."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{name}/{idx}/{k}"] = _contiguous(v)
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, v in tensors.items():
        if key.startswith(prefix):
            idx, k = key[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[k] = v
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path_stem: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``<stem>.safetensors`` then ``<stem>.json`` atomically; returns the JSON path."""
    from safetensors.torch import save_file

    stem = Path(path_stem)
    st_path = stem.with_suffix(".safetensors")
    with atomic_path(st_path, suffix=".safetensors") as tmp:
        try:
            save_file({k: _contiguous(v) for k, v in tensors.items()}, str(tmp))
        except Exception as e:  # safetensors reports I/O failures as its own error type: make them OSErrors
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(st_path)) from None
    meta = {"format_version": FORMAT_VERSION, "weights": st_path.name, **meta}
    json_path = stem.with_suffix(".json")
    atomic_write_json(json_path, meta)
    return json_path


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder, a checkpoints folder, a ``.json`` or a ``.safetensors`` path -> JSON path."""
    p = Path(path)
    if p.is_dir():
        for d in (p / "checkpoints", p):
            found = latest_checkpoint(d)
            if found is not None:
                return found
        raise CheckpointError(f"no checkpoint found in {p}; train one first or pass a checkpoint file")
    if p.suffix == ".safetensors":
        p = p.with_suffix(".json")
    if p.suffix != ".json":
        p = p.with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {path} not found (looked for {p})")
    return p


def latest_checkpoint(directory: str | Path) -> Path | None:
    d = Path(directory)
    if not d.is_dir():
        return None
    best, best_step = None, -1
    for f in d.glob("*.json"):
        m = _STEP_RE.search(f.name)
        step = int(m.group(1)) if m else -1
        if m is None and f.name not in ("final.json", "last.json"):
            continue
        if m is None:
            step = 10**12  # an explicit final checkpoint wins
        if step > best_step and f.with_suffix(".safetensors").is_file():
            best, best_step = f, step
    return best


def load_checkpoint(path: str | Path, kind: str | None = None,
                    prefixes: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read metadata and tensors (optionally only keys starting with ``prefixes``)."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    json_path = resolve_checkpoint(path)
    try:
        if json_path.stat().st_size > MAX_META_BYTES:
            raise CheckpointError(f"{json_path}: {json_path.stat().st_size} bytes is far too large for checkpoint "
                                  f"metadata; this is not an emotalk checkpoint")
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{json_path}: corrupt checkpoint metadata ({e}); use another checkpoint") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise CheckpointError(f"{json_path}: not an emotalk checkpoint (no 'kind' in its metadata)")
    if kind is not None and meta["kind"] != kind:
        raise WrongKindError(f"{json_path} is a {meta['kind']!r} checkpoint, but a {kind!r} checkpoint is "
                             f"needed here; pass a {kind} checkpoint or run folder")
    st_path = json_path.with_name(meta.get("weights", json_path.with_suffix(".safetensors").name))
    tensors: dict[str, torch.Tensor] = {}
    try:
        check_safetensors_header(st_path)
        with safe_open(str(st_path), framework="pt", device="cpu") as f:
            for k in f.keys():
                if prefixes is None or k.startswith(prefixes):
                    tensors[k] = f.get_tensor(k)
    except FileNotFoundError:
        raise CheckpointError(f"{st_path} is missing (its metadata {json_path.name} exists); "
                              f"the checkpoint is incomplete") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{st_path}: corrupt weights file ({e}); use another checkpoint") from None
    meta["path"] = str(json_path)
    return tensors, meta


def module_state(tensors: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    prefix = f"model/{module}/"
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not out:
        raise CheckpointError(f"checkpoint has no weights for module {module!r}")
    return out


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Strictly load the weights of checkpoint module ``name`` into ``module`` (CheckpointError if they do
    not fit)."""
    load_state_strict(module, module_state(tensors, name),
                      f"checkpoint weights for {name!r} do not fit the model built from its config",
                      "was it written by another version or with other model settings?")


def checkpoints_newest_first(directory: str | Path) -> list[Path]:
    """The complete checkpoints (JSON + weights) of a folder, newest first (``final``/``last`` first of all)."""
    d = Path(directory)
    found = []
    for f in d.glob("*.json") if d.is_dir() else ():
        m = _STEP_RE.search(f.name)
        if m is None and f.name not in ("final.json", "last.json"):
            continue
        if f.with_suffix(".safetensors").is_file():
            found.append((10**12 if m is None else int(m.group(1)), f))
    return [f for _, f in sorted(found, reverse=True)]


def load_resume_checkpoint(path: str | Path, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """:func:`load_checkpoint` for resuming a run: given a run (or checkpoints) folder, a damaged newest
    checkpoint is skipped, with a warning, for the newest one that reads. A checkpoint file given
    explicitly is loaded as it is (no silent substitute)."""
    p = Path(path)
    if not p.is_dir():
        return load_checkpoint(p, kind)
    folder = p / "checkpoints" if checkpoints_newest_first(p / "checkpoints") else p
    candidates = checkpoints_newest_first(folder)
    if not candidates:
        raise CheckpointError(f"no checkpoint found in {p}; nothing to resume (start the run without --resume)")
    for i, c in enumerate(candidates):
        try:
            return load_checkpoint(c, kind)
        except WrongKindError:
            raise
        except CheckpointError as e:
            if i + 1 < len(candidates):
                log.warning("%s; resuming from the previous checkpoint %s instead", e, candidates[i + 1].name)
            last_error = e
    raise CheckpointError(f"every checkpoint in {folder} is damaged (last: {last_error}); start the run again "
                          f"without --resume")


def check_same_model(meta: dict, model_now: dict, where: str = "the data and config") -> None:
    """Resuming continues the same network: every ``model`` setting saved in checkpoint ``meta`` must equal
    ``model_now`` (the model section built now, e.g. with the feature size read from the data)."""
    saved = (meta.get("config") or {}).get("model")
    if not isinstance(saved, dict):
        return
    diff = [k for k in sorted(saved)  # keys a newer version added are not compared: they have defaults
            if json.dumps(saved.get(k), sort_keys=True) != json.dumps(_plain(model_now.get(k)), sort_keys=True)]
    if diff:
        shown = ", ".join(f"model.{k} is {saved.get(k)!r} in the checkpoint but {_plain(model_now.get(k))!r} now"
                          for k in diff[:3])
        raise CheckpointError(f"cannot resume {meta.get('path', 'the checkpoint')}: {shown} (from {where}); "
                              f"resume with the data and settings the run was trained with, or start a new run "
                              f"folder")


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


#: a model-config integer above this (and above every weight dimension in the file) cannot be a real size
MAX_PLAUSIBLE_DIM = 4096


def check_config_fits_weights(model_section: Any, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, before a network is built, a saved model config whose sizes dwarf the weights stored beside it
    (damaged or hostile metadata such as ``d: 1000000`` would make building the model allocate terabytes).
    Every size a network is built from shows up as a weight dimension, so an integer larger than all of them
    (and than :data:`MAX_PLAUSIBLE_DIM`) is refused."""
    largest = max((max(t.shape, default=1) for t in tensors.values()), default=0)
    limit = max(MAX_PLAUSIBLE_DIM, largest)

    def walk(x: Any, key: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{key}.{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}[{i}]")
        elif isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) > limit and float(x).is_integer():
            raise CheckpointError(f"{where}: its saved config says {key}={x}, far larger than any weight it holds "
                                  f"(largest dimension {largest}); the metadata is damaged, use another checkpoint")

    walk(model_section, "model")
