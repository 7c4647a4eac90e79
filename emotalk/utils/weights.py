"""Loading a state dict into a module, with a one-line, actionable error when it does not fit."""
from __future__ import annotations

from typing import Mapping

import torch

from emotalk.errors import CheckpointError, EmotalkError


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, fix: str,
                      error: type[EmotalkError] = CheckpointError) -> torch.nn.Module:
    """``module.load_state_dict(state, strict=True)``; a mismatch raises ``error`` with the message
    ``"{what} ({first line of torch's complaint}); {fix}"``. Returns ``module``."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise error(f"{what} ({first}); {fix}") from None
    return module
