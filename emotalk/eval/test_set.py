"""The test set of an evaluation: which subjects (a named split's test list or ``data.subjects``) and
which of their clips are scored (never the clip a subject's neutral reference frame came from; the split's
``test_clips`` rule; ``data.emotions`` / ``clips_per_subject``). ``cfg`` is an
:class:`~emotalk.eval.evaluate.EvalConfig` (read only).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from emotalk.data.datasets.landmark import dataset_subjects
from emotalk.data.datasets.splits import REAL_DATASETS, dataset_source, load_split
from emotalk.data.io.clip import clip_label, list_clips, load_clip, load_subject, subject_path
from emotalk.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def test_subjects(cfg: Any) -> tuple[list[str], str]:
    """``(subjects, test_clips rule)``: ``data.subjects`` if given, else the named split's test subjects;
    neither is refused on a real dataset (it would score every subject, training ones included)."""
    d = cfg.data
    if d.subjects:
        return list(d.subjects), "all"
    if d.split:
        split = load_split(d.split)
        return split.test_subjects(dataset_subjects(d.root)), split.test_clips
    source = dataset_source(d.root)
    if source in REAL_DATASETS:
        raise ConfigError(f"{d.root} is the real {source} dataset and the evaluation names no test subjects: set "
                          f"data.split (e.g. mead-field, configs/splits/) or data.subjects, or use "
                          f"--protocol field|paper")
    return [], "all"


def _clip_extra(path: Path) -> dict:
    """A processed clip's free-form metadata (sentence split, neutral-reference source) without its frames."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(z["extra_json"].item()) if "extra_json" in z.files else {}
    except Exception as e:  # noqa: BLE001 - zip / JSON / key errors of a damaged file
        raise DataError(f"{path}: not a readable processed clip ({type(e).__name__}: {e}); delete it and re-run "
                        f"preprocessing") from None


def reference_clips(root: Path, extras: dict[Path, dict]) -> set[Path]:
    """The clips a subject's neutral reference frame (the identity image) was taken from.

    Preprocessing records it per clip: ``extra.neutral == "neutral_clip"`` with ``neutral_source`` = the
    neutral clip's id. A subject with no usable neutral clip fell back to the first frame of one clip (every
    clip then says ``neutral: first_frame``); that clip is found by comparing the reference image with the
    first frame of each of the subject's clips."""
    refs: set[Path] = set()
    fallback: dict[str, list[Path]] = {}
    for p, e in extras.items():
        if e.get("neutral") == "first_frame":
            fallback.setdefault(p.parent.name, []).append(p)
        elif e.get("neutral_source"):
            ref = p.parent / f"{e['neutral_source']}.npz"
            if ref in extras:
                refs.add(ref)
    for subject, paths in fallback.items():
        image = load_subject(subject_path(root, subject)).image.astype(np.int16)
        for p in paths:
            clip = load_clip(p, validate=False)
            first = clip.frame(0) if clip.has_frames else None
            if first is not None and first.shape == image.shape and np.abs(first.astype(np.int16) - image).mean() < 1.0:
                refs.add(p)
    return refs


def select_clips(cfg: Any) -> list[Path]:
    return select(cfg)[0]


def select(cfg: Any) -> tuple[list[Path], list[str]]:
    """``(clips to score, excluded reference clips)``: the test subjects' clips, without the clip each
    subject's neutral reference frame came from (scoring the identity image's own clip would flatter every
    metric), filtered by the split's test_clips rule and ``data.emotions`` / ``clips_per_subject``."""
    root = Path(cfg.data.root)
    subjects, rule = test_subjects(cfg)
    paths = list_clips(root, subjects or None)
    if cfg.data.subjects:
        available = dataset_subjects(root)
        unknown = sorted(set(subjects) - set(available))
        if unknown:
            raise DataError(f"{root}: data.subjects names subjects with no processed clips: {', '.join(unknown)} "
                            f"(the dataset has: {', '.join(available)})")
    if cfg.data.split and not cfg.data.subjects and paths:
        missing = sorted(set(subjects) - {p.parent.name for p in paths})
        if missing:
            log.warning("split %s: test subjects %s have no processed clips in %s", cfg.data.split, missing, root)
    extras = {p: _clip_extra(p) for p in paths}
    refs = reference_clips(root, extras)
    excluded = [f"{p.parent.name}/{p.stem}" for p in paths if p in refs]
    paths = [p for p in paths if p not in refs]
    if rule == "test":
        paths = [p for p in paths if extras[p].get("split") == "test"]
    if not paths:
        raise DataError(f"{root}: no processed clips to score for the evaluation subjects "
                        f"{subjects or '(all)'} (the clips that gave their neutral reference are never scored"
                        f"{'; only held-out sentences' if rule == 'test' else ''}); run 'emotalk preprocess' "
                        f"or fix data.subjects / data.split")
    labels = {p: clip_label(p) for p in paths} if (cfg.data.emotions or cfg.data.clips_per_subject) else {}
    if cfg.data.emotions:
        wanted = set(cfg.data.emotions)
        paths = [p for p in paths if labels[p][0] in wanted]
    if not paths:
        raise DataError(f"{root}: no clips left after the emotion filter {cfg.data.emotions}")
    if cfg.data.clips_per_subject:
        by_subject: dict[str, list[Path]] = {}
        for p in paths:
            by_subject.setdefault(p.parent.name, []).append(p)
        paths = []
        for i, subject in enumerate(sorted(by_subject)):
            paths += stratified_clips(by_subject[subject], labels, cfg.data.clips_per_subject, offset=i)
    return paths, excluded


def stratified_clips(paths: list[Path], labels: dict[Path, tuple[str, int]], n: int, offset: int = 0
                     ) -> list[Path]:
    """``n`` of one subject's clips spread over its emotions: round-robin over the emotions (starting at
    ``offset``, so consecutive subjects cover different ones), each emotion giving its strongest-intensity,
    last-numbered clip first (MEAD's test sentences are the last ones). Deterministic, sorted output."""
    by_emotion: dict[str, list[Path]] = {}
    for p in sorted(paths):
        by_emotion.setdefault(labels[p][0], []).append(p)
    queues = [sorted(ps, key=lambda p: (labels[p][1], p.name)) for _, ps in sorted(by_emotion.items())]
    start = offset * n % len(queues)
    queues = queues[start:] + queues[:start]
    chosen: list[Path] = []
    while len(chosen) < min(n, len(paths)):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return sorted(chosen)
