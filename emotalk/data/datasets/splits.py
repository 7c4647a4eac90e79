"""Subject-level train/validation/test splits (no subject appears in two splits)."""
from __future__ import annotations

import math
from typing import Sequence

from emotalk.errors import ConfigError


def split_subjects(subjects: Sequence[str], train: Sequence[str] = (), val: Sequence[str] = (),
                   val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Return (train, val) subject lists.

    Explicit lists win; otherwise the last ``ceil(val_fraction * n)`` subjects in sorted order are held out
    for validation (none when there is only one subject). Subjects named in a list but absent from the
    data are an error naming them.
    """
    available = sorted(set(subjects))
    for name, lst in (("train_subjects", train), ("val_subjects", val)):
        missing = sorted(set(lst) - set(available))
        if missing:
            raise ConfigError(f"data.{name} names subjects not in the dataset: {', '.join(missing)} "
                              f"(available: {', '.join(available) or 'none'})")
    overlap = set(train) & set(val)
    if overlap:
        raise ConfigError(f"subjects in both data.train_subjects and data.val_subjects: {sorted(overlap)}")
    if train or val:
        val_list = sorted(val)
        train_list = sorted(train) if train else [s for s in available if s not in set(val_list)]
        return train_list, val_list
    if len(available) < 2 or val_fraction <= 0:
        return available, []
    n_val = min(len(available) - 1, max(1, math.ceil(val_fraction * len(available))))
    return available[:-n_val], available[-n_val:]
