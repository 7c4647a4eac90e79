"""Subject-level train/validation/test splits (no subject appears in two splits), and the named splits
shipped as data files in ``configs/splits/`` (``mead-field``, ``mead-paper``).

Why named splits: a number is only comparable with another one when both were trained and scored on the
same identities. The field's MEAD protocol tests on M003, M030, W009 and W015; the paper trains on 24
subjects it does not list. Both live as YAML files (one place, reviewable, loaded here); every MEAD
config names one with ``data.split``. An empty subject list used to mean "everything but the last 10 %
in sorted order" -- on a real dataset that silently trains on the field's test identities, so it is now
refused: a real dataset needs a named split or explicit subject lists, and the old automatic split must
be asked for by name (``data.split: auto``; used for the synthetic mead-mini).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from emotalk.config import resolve_config_path
from emotalk.data.io.clip import DatasetManifest
from emotalk.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: the automatic held-out split (last ``val_fraction`` of the sorted subjects), chosen explicitly
AUTO = "auto"
#: ``DatasetManifest.source`` values of real datasets: these need a named split or explicit subject lists
REAL_DATASETS = ("mead", "crema-d", "ravdess")
#: which clips of the test subjects are scored: every clip, or only the held-out sentences
TEST_CLIPS = ("all", "test")
#: ``test: "*"``: every subject of the dataset not in train / val (an evaluation-only dataset, e.g. CREMA-D
#: for models trained on MEAD)
ALL = "*"


@dataclass(frozen=True)
class Split:
    """A named subject split (one ``configs/splits/<name>.yaml``)."""

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    dataset: str = ""
    view: str = ""
    #: ``all``: every clip of a test subject is scored; ``test``: only clips whose processed metadata says
    #: ``split: test`` (the held-out sentences, ``data/preprocess/readers.py``)
    test_clips: str = "all"
    path: str = ""

    def test_subjects(self, available: Sequence[str]) -> list[str]:
        """The test subjects (``"*"`` expanded over ``available``: every one not in train / val)."""
        if self.test == (ALL,):
            return sorted(set(available) - set(self.train) - set(self.val))
        return list(self.test)

    def validate(self) -> None:
        where = self.path or self.name
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                raise ConfigError(f"split {where}: subjects in both {a} and {b}: {', '.join(both)}")
        for part in ("train", "val", "test"):
            lst = getattr(self, part)
            if len(set(lst)) != len(lst):
                raise ConfigError(f"split {where}: {part} lists a subject twice")
        if ALL in self.test and len(self.test) != 1:
            raise ConfigError(f"split {where}: test is either a list of subjects or \"{ALL}\" alone")
        if self.test_clips not in TEST_CLIPS:
            raise ConfigError(f"split {where}: test_clips must be one of {', '.join(TEST_CLIPS)}, "
                              f"got {self.test_clips!r}")


def _subject_list(data: dict, key: str, where: str) -> tuple[str, ...]:
    v = data.get(key) or []
    if v == ALL and key == "test":
        return (ALL,)
    if not isinstance(v, list) or not all(isinstance(s, (str, int)) for s in v):
        raise ConfigError(f"split {where}: {key} must be a list of subject ids")
    return tuple(str(s) for s in v)


def split_path(name: str | Path) -> Path:
    """A split's YAML file: a path, or a shipped name (``mead-field`` -> ``configs/splits/mead-field.yaml``)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    try:
        return resolve_config_path(f"splits/{name}")
    except ConfigError:
        shipped = sorted(q.stem for q in resolve_config_path("splits/mead-field").parent.glob("*.yaml"))
        raise ConfigError(f"split {str(name)!r} not found; name one of the shipped splits "
                          f"({', '.join(shipped)}), give a split YAML path, or use data.split=auto "
                          f"(automatic held-out subjects, for synthetic data)") from None


def load_split(name: str | Path) -> Split:
    """Read and check a named split (ConfigError naming the file and what is wrong)."""
    path = split_path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a split file is a mapping with train / val / test subject lists")
    unknown = sorted(set(data) - {"name", "dataset", "view", "train", "val", "test", "test_clips"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown} (a split has name, dataset, view, train, val, test, "
                          f"test_clips)")
    where = str(path)
    split = Split(name=str(data.get("name") or path.stem), train=_subject_list(data, "train", where),
                  val=_subject_list(data, "val", where), test=_subject_list(data, "test", where),
                  dataset=str(data.get("dataset") or ""), view=str(data.get("view") or ""),
                  test_clips=str(data.get("test_clips") or "all"), path=where)
    split.validate()
    return split


def dataset_source(root: str | Path | None) -> str:
    """The processed dataset's ``manifest.json`` source (``mead``, ``mead-mini``, ...), "" when unknown."""
    if root is None:
        return ""
    try:
        return DatasetManifest.load(root).source.lower()
    except DataError:
        return ""


def split_subjects(subjects: Sequence[str], train: Sequence[str] = (), val: Sequence[str] = (),
                   val_fraction: float = 0.1, split: str = "", root: str | Path | None = None
                   ) -> tuple[list[str], list[str]]:
    """Return (train, val) subject lists.

    ``split`` names a split file (its train / val lists are used; its test subjects are never returned);
    explicit ``train`` / ``val`` lists are the alternative (giving both is an error). ``split="auto"``
    holds out the last ``ceil(val_fraction * n)`` subjects in sorted order (none when there is only one
    subject). With neither, a real dataset (``root``'s manifest says MEAD, CREMA-D or RAVDESS) is refused:
    that default used to train on the field's test identities; other data falls back to ``auto``.
    Subjects named in a list but absent from the data are an error naming them.
    """
    available = sorted(set(subjects))
    if split and split != AUTO:
        if train or val:
            raise ConfigError(f"data.split={split} and data.train_subjects / data.val_subjects are both set; "
                              f"give one of them (a split file, or explicit lists with data.split='')")
        s = load_split(split)
        missing = sorted((set(s.train) | set(s.val)) - set(available))
        present_train = [x for x in s.train if x in set(available)]
        if not present_train:
            raise ConfigError(f"none of split {s.name}'s training subjects are in the dataset "
                              f"(available: {', '.join(available) or 'none'}); is data.root the right "
                              f"dataset, or should data.split name another split?")
        if missing:
            log.warning("split %s: %d subjects are not in the dataset and are skipped: %s", s.name, len(missing),
                        ", ".join(missing))
        return sorted(present_train), sorted(x for x in s.val if x in set(available))
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
    if split != AUTO:
        source = dataset_source(root)
        if source in REAL_DATASETS:
            raise ConfigError(f"{root} is the real {source} dataset and the config names no split: set "
                              f"data.split (e.g. mead-field or mead-paper, configs/splits/) or list "
                              f"data.train_subjects; data.split=auto (hold out the last subjects in sorted "
                              f"order) must be asked for by name")
    if len(available) < 2 or val_fraction <= 0:
        return available, []
    n_val = min(len(available) - 1, max(1, math.ceil(val_fraction * len(available))))
    return available[:-n_val], available[-n_val:]
