"""G_L's held-out expression amplitude per *face* (issue 12 §3): which held-out subject limits a cell, and
whether the data lets any predictor trained on the other subjects reach it.

Why a per-face view: the pooled cells of :func:`emotalk.train.landmark_validation.amplitude_report` average
the held-out subjects, so a cell that fails because of one face looks like a weakness of G_L on the whole
emotion. On mead-mini v2 (demo data, held-out W007 and W008) that is what happens to the eyes: the
generator moves every subject's eyes by the same canonical field (``emotalk.mini.action_units`` — no term
depends on the face's eye size, aperture or scale, and preprocessing normalises scale by the similarity
fit), but the landmarks G_L learns from are dlib's re-detections on the rendered frames, and dlib follows
the rendered eyelids by a factor that depends on the face's pixels, not on its geometry: projected on the
generator's own eye displacement (happy, angry, surprised, all levels) it reports 0.62–0.66 of it on the
four astronaut-derived subjects and 0.14–0.36 on the four Grace-Hopper-derived ones, with the same eye
apertures within each photo (0.078–0.084 canonical units for all Grace-Hopper subjects: gains 0.14, 0.14,
0.32, 0.36 — the largest on the held-out W008, whose aperture is the smallest). W008's detected eyes also
move with its mouth 2–4 times as much as any other subject's (eye shift per unit mouth opening), so its
neutral reference X (closed-mouth frames) sits 0.0047 eye distances off its own neutral speech (others:
0.002). The result: W008's *happy* eye amplitude is 0.0112 against 0.0049–0.0081 for its three siblings.

So the per-face numbers are: ``expr_face/<subject>/<emotion>/<region>`` — the amplitude ratio of that
face's clips (G_L / ground truth, the module definition of ``landmark_validation``), and, given the
training clips' amplitudes, ``expr_face_reach/<subject>/<emotion>/<region>`` — the training subjects' mean
real amplitude over that face's: below the target, no predictor that moves this face like the training
faces move reaches the target; only one that moves it further than any training face would.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np

from emotalk.train.landmark_validation import MIN_REAL_AMPLITUDE, ClipAmplitude

#: The regions of the per-face breakdown (the pooled "expression" is left to the pooled report).
FACE_REGIONS: tuple[str, ...] = ("brows", "eyes", "mouth")


def face_report(clips: Iterable[ClipAmplitude],
                reference: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, float]:
    """Per held-out face (the clips' ``subject``; clips without one are skipped) and per (emotion, region)
    cell: ``expr_face/<subject>/<emotion>/<region>`` (ratio of mean predicted to mean real amplitude),
    ``expr_face_real/...`` (the mean real amplitude) and, with ``reference`` = the training clips'
    ``{emotion: {region: mean real amplitude}}``, ``expr_face_reach/...`` (reference over real)."""
    groups: dict[tuple[str, str], list[ClipAmplitude]] = defaultdict(list)
    for c in clips:
        if c.subject:
            groups[(c.subject, c.emotion)].append(c)
    out: dict[str, float] = {}
    for (subject, emo), group in sorted(groups.items()):
        for r in FACE_REGIONS:
            if r not in group[0].real:
                continue
            real = float(np.mean([c.real[r] for c in group]))
            pred = float(np.mean([c.predicted[r] for c in group]))
            key = f"{subject}/{emo}/{r}"
            out[f"expr_face/{key}"] = pred / real if real > 1e-9 else math.nan
            out[f"expr_face_real/{key}"] = real
            ref = (reference or {}).get(emo, {}).get(r)
            if ref is not None:
                out[f"expr_face_reach/{key}"] = ref / real if real > 1e-9 else math.nan
    return out


def face_summary(numbers: Mapping[str, float], target: float = 0.85,
                 min_real: float = MIN_REAL_AMPLITUDE) -> str:
    """One log line per held-out face: its cells under ``target`` (whose real amplitude is at least
    ``min_real``, as for ``expr_ratio/min``), each as ``emotion region ratio (reach R)``; "" without
    per-face numbers."""
    faces: dict[str, list[str]] = defaultdict(list)
    for key, ratio in sorted(numbers.items()):
        if not key.startswith("expr_face/"):
            continue
        cell = key[len("expr_face/"):]
        subject, emo, region = cell.split("/")
        faces.setdefault(subject, [])
        if numbers.get(f"expr_face_real/{cell}", 0.0) < min_real or not ratio < target:
            continue
        reach = numbers.get(f"expr_face_reach/{cell}")
        faces[subject].append(f"{emo} {region} {ratio:.2f}" + (f" (reach {reach:.2f})" if reach is not None else ""))
    if not faces:
        return ""
    lines = [f"held-out faces, cells under {target} (reach = training subjects' real amplitude / this face's):"]
    lines += [f"  {s}: {', '.join(cells) if cells else 'none'}" for s, cells in sorted(faces.items())]
    return "\n".join(lines)
