"""Checkpoints: tensors in one ``.safetensors`` file, everything else in a ``.json`` file beside it.

Layout of the tensor keys::

    model/<module>/<param or buffer name>      weights of each module (unwrapped from DDP)
    optim/<optimiser>/<param index>/<key>      optimiser state tensors (Adam moments, step, ...)
    rng/torch, rng/cuda/<i>                    RNG states (per rank: rng/rank<r>/...)

The JSON metadata holds ``kind`` (landmark, texture, ...), ``step``, the full resolved ``config``,
optimiser ``param_groups`` and non-tensor state, Python/NumPy RNG states and anything the task adds
(feature kind, feature dim, ...). Both files are written atomically (temp file + rename), the JSON
last, so a checkpoint counts as complete once its JSON exists.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from emotalk.errors import CheckpointError
from emotalk.utils.io import atomic_path, atomic_write_json
from emotalk.utils.weights import load_state_strict

FORMAT_VERSION = 1
_STEP_RE = re.compile(r"step_(\d+)\.json$")


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
        save_file({k: _contiguous(v) for k, v in tensors.items()}, str(tmp))
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
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{json_path}: corrupt checkpoint metadata ({e}); use another checkpoint") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise CheckpointError(f"{json_path}: not an emotalk checkpoint (no 'kind' in its metadata)")
    if kind is not None and meta["kind"] != kind:
        raise CheckpointError(f"{json_path} is a {meta['kind']!r} checkpoint, but a {kind!r} checkpoint is "
                              f"needed here")
    st_path = json_path.with_name(meta.get("weights", json_path.with_suffix(".safetensors").name))
    tensors: dict[str, torch.Tensor] = {}
    try:
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
