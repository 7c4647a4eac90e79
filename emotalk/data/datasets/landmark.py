"""Frame-level dataset for G_L over a folder of processed clips.

Each item is one video frame ``t`` of one clip::

    audio    (W, D)     speech-feature window centred on the frame
    emotion  (E + I,)   emotion control vector (one-hot emotion | one-hot intensity)
    neutral  (68, 2)    the input graph X: the subject's aligned neutral face (or the template)
    target   (68, 2)    ground truth X^ = X + (landmarks[t] - template)

All clips are loaded into memory once (landmarks and features are small).

``track`` chooses which landmark track of the clips is X and X^: ``detected`` (the clips' ``landmarks`` /
``neutral_landmarks``: what the face tracker read, as for real MEAD) or ``exact`` (``true_landmarks`` /
``true_neutral_landmarks``: mead-mini's exact generator landmarks, see :mod:`emotalk.data.io.clip`; a clip
preprocessed with ``--landmarks sidecar`` has its exact landmarks in the main track and uses those).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emotalk.data.io.clip import Clip, DatasetManifest, list_clips, load_clip
from emotalk.data.emotions import EMOTIONS, INTENSITY_LEVELS, control_level, emotion_vector, trains_on
from emotalk.models.face_graph import canonical_template
from emotalk.errors import DataError


def load_clips(root: str | Path, subjects: Sequence[str] | None = None, max_clips: int = 0) -> list[Clip]:
    root = Path(root)
    paths = list_clips(root, list(subjects) if subjects is not None else None)
    if subjects is not None and not subjects:
        return []
    if not paths:
        raise DataError(f"{root}: no processed clips found under {root / 'clips'}; run 'emotalk preprocess' "
                        f"first (or check data.root)")
    if max_clips:
        paths = paths[:max_clips]
    return [load_clip(p) for p in paths]


#: the landmark tracks a clip can give G_L and G_T (``data.track``)
TRACKS = ("detected", "exact")


def check_track(track: str) -> None:
    """:class:`DataError` unless ``track`` is one of :data:`TRACKS`."""
    if track not in TRACKS:
        raise DataError(f"data.track must be one of {list(TRACKS)}, got {track!r}")


def main_track_is_exact(extra: dict) -> bool:
    """Whether a clip (its ``extra`` metadata) was preprocessed with ``--landmarks sidecar``: its main track is
    then mead-mini's exact landmarks already, and ``data.track=exact`` uses it."""
    return extra.get("landmarks_source") == "sidecar"


def no_true_track_error(what: str, space: str = "") -> DataError:
    """The error of ``data.track=exact`` on data without a true track (``space``: e.g. " in crop pixels")."""
    return DataError(f"{what} has no true landmark track{space} (data.track=exact): only mead-mini clips "
                     f"preprocessed with their ground-truth sidecars (<NNN>.landmarks.npz beside the video; "
                     f"emotalk preprocess --dataset mead-mini, this version or later) have one. Re-run "
                     f"preprocessing into a new folder, or train with data.track=detected")


def clip_track(clip: Clip, track: str = "detected") -> tuple[np.ndarray, np.ndarray]:
    """``(landmarks (T, 68, 2), neutral (68, 2))`` of one clip's ``track`` (module docstring); a clip without
    a true track raises :class:`DataError` saying what to do."""
    check_track(track)
    if track == "detected":
        return clip.landmarks, clip.neutral_landmarks
    if clip.has_true_track:
        return clip.true_landmarks, clip.true_neutral_landmarks
    if main_track_is_exact(clip.extra):
        return clip.landmarks, clip.neutral_landmarks
    raise no_true_track_error(f"clip {clip.subject}/{clip.clip_id}")


def has_true_track(root: str | Path) -> bool:
    """Whether the first processed clip under ``root`` has a true landmark track (or exact main landmarks),
    reading only its entry names and metadata (not frames): how the demo decides ``data.track``."""
    paths = list_clips(root)
    if not paths:
        return False
    try:
        with np.load(paths[0], allow_pickle=False) as z:
            if "true_landmarks" in z.files and "true_neutral_landmarks" in z.files:
                return True
            extra = json.loads(z["extra_json"].item()) if "extra_json" in z.files else {}
    except (OSError, ValueError, KeyError):
        return False
    return main_track_is_exact(extra)


def dataset_subjects(root: str | Path) -> list[str]:
    clips_dir = Path(root) / "clips"
    if not clips_dir.is_dir():
        raise DataError(f"{root}: not a processed dataset (no clips/ folder); run 'emotalk preprocess' first")
    subjects = sorted(p.name for p in clips_dir.iterdir() if p.is_dir() and any(p.glob("*.npz")))
    if not subjects:
        raise DataError(f"{root}: the dataset has no clips; run 'emotalk preprocess' first")
    return subjects


class LandmarkFrameDataset(Dataset):
    def __init__(self, clips: Sequence[Clip], emotions: Sequence[str] = EMOTIONS,
                 intensity_levels: int = INTENSITY_LEVELS, graph_input: str = "subject", track: str = "detected"):
        if graph_input not in ("subject", "template"):
            raise DataError(f"graph_input must be 'subject' or 'template', got {graph_input!r}")
        self.track = track
        template = canonical_template()
        audio, emo, neutral, target, index = [], [], [], [], []
        dims = set()
        for ci, c in enumerate(clips):
            if not trains_on(c.emotion, emotions):
                continue  # e.g. the paper's 6-emotion setting skips contempt clips (neutral: zero emotion part)
            dims.add(c.audio_features.shape[1:])
            landmarks, own_neutral = clip_track(c, track)
            x = template if graph_input == "template" else own_neutral
            level = control_level(c.intensity, intensity_levels)
            vec = emotion_vector(c.emotion, level, emotions, intensity_levels)
            audio.append(c.audio_features.astype(np.float32))
            emo.append(np.repeat(vec[None], c.num_frames, 0))
            neutral.append(np.repeat(x[None].astype(np.float32), c.num_frames, 0))
            target.append((x[None] + (landmarks - template[None])).astype(np.float32))
            index.append(np.stack([np.full(c.num_frames, ci), np.arange(c.num_frames)], 1))
        if len(dims) > 1:
            raise DataError(f"clips have different feature window shapes {sorted(dims)}; preprocess every "
                            f"clip with the same feature backend")
        empty = lambda *s: np.zeros((0, *s), np.float32)  # noqa: E731
        self.audio = torch.from_numpy(np.concatenate(audio)) if audio else torch.from_numpy(empty(1, 1))
        self.emotion = torch.from_numpy(np.concatenate(emo)) if emo else torch.from_numpy(empty(1))
        self.neutral = torch.from_numpy(np.concatenate(neutral)) if neutral else torch.from_numpy(empty(68, 2))
        self.target = torch.from_numpy(np.concatenate(target)) if target else torch.from_numpy(empty(68, 2))
        self.index = np.concatenate(index) if index else np.zeros((0, 2), np.int64)
        self.window, self.feature_dim = (next(iter(dims)) if dims else (0, 0))

    def __len__(self) -> int:
        return int(self.audio.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"audio": self.audio[i], "emotion": self.emotion[i], "neutral": self.neutral[i],
                "target": self.target[i]}


def manifest_or_none(root: str | Path) -> DatasetManifest | None:
    try:
        return DatasetManifest.load(root)
    except DataError:
        return None
