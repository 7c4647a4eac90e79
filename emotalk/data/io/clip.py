"""The processed-clip format: what preprocessing writes and both generators read.

A processed dataset is a folder::

    <root>/manifest.json                 dataset-wide facts (see DatasetManifest)
    <root>/clips/<subject>/<clip_id>.npz one file per clip (see Clip), written atomically
    <root>/subjects/<subject>.npz        the subject's neutral reference (see SubjectReference)
    <root>/report.jsonl                  preprocessing log: one line per skipped clip with its reason

Canonical space is defined in :mod:`emotalk.models.face_graph` (template centroid at 0, outer eye corners
one unit apart). Per-frame landmarks are stored *retargeted* onto the canonical template (Das et al.
2020): ``landmarks[t] = template + (aligned[t] - aligned_neutral)``, so ``landmarks - template`` are the
speech/emotion displacements independent of the subject's face shape; ``neutral_landmarks`` keeps the
subject's own similarity-aligned neutral geometry, which is G_L's input graph X.

A clip may carry a second, optional landmark track, ``true_landmarks`` / ``true_neutral_landmarks``: the
same quantities (same canonical space, same retargeting) computed from landmarks that are known exactly
instead of detected — today only mead-mini's generator sidecars (:mod:`emotalk.data.preprocess.clip_analysis`).
Why two tracks: dlib misreads some faces (mead-mini's subjects with glasses: ~0.35 of the true lid motion),
so G_L is better trained and judged on the exact track, while the landmark emotion classifier, which later
reads dlib's re-detections of rendered frames, must keep dlib's reading. Its neutral face follows the same
rule as the detected one, on the true landmarks (see there). ``true_crop_landmarks`` is the same track in
crop pixels (the clip's one crop, as ``crop_landmarks``; the subject reference has its reference frame's):
G_T's graphs when it trains with ``data.track: exact``, so that it learns the landmark-to-pixel motion of the
track its G_L drives it with (a consistency choice: both tracks passed the demo's transfer checks).

Every array is a plain numpy array (strings as 0-d unicode arrays), so files load with
``allow_pickle=False``. Frames are stored as concatenated JPEG bytes plus offsets for random access.
"""
from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotalk.errors import DataError
from emotalk.utils.io import atomic_path, atomic_write_json

FORMAT_VERSION = 1


@dataclass
class Clip:
    """One processed clip. Shapes: T video frames at ``fps``, W feature frames per window, D feature dims."""

    landmarks: np.ndarray  # (T, 68, 2) float32, canonical space, retargeted onto the template
    neutral_landmarks: np.ndarray  # (68, 2) float32, the subject's aligned neutral face (canonical space)
    audio_features: np.ndarray  # (T, W, D) float32, one window centred on each video frame
    emotion: str  # a name from emotalk.data.emotions.EMOTIONS
    intensity: int  # 1..3 (MEAD levels; other datasets mapped onto this scale)
    fps: float
    subject: str
    clip_id: str
    feature_kind: str  # "deepspeech" | "phonemes" | "mel" | ...
    dataset: str = ""
    # --- texture (G_T) data, optional for landmark-only datasets ---
    crop_landmarks: np.ndarray | None = None  # (T, 68, 2) float32, pixels in the face crop
    frames_jpeg: np.ndarray | None = None  # (N,) uint8: concatenated JPEG files of the crops
    frames_offsets: np.ndarray | None = None  # (T + 1,) int64 byte offsets into frames_jpeg
    # --- audio, for evaluation and regeneration ---
    audio: np.ndarray | None = None  # (S,) int16 mono
    sample_rate: int = 16000
    extra: dict = field(default_factory=dict)  # free-form JSON metadata (sentence id, source files, ...)
    # --- optional exact ("true") landmark track, same conventions as landmarks / neutral_landmarks ---
    true_landmarks: np.ndarray | None = None  # (T, 68, 2) float32, canonical space, retargeted
    true_neutral_landmarks: np.ndarray | None = None  # (68, 2) float32, aligned neutral face (same rule)
    #: (T, 68, 2) float32: the true track in crop pixels (the same crop as ``crop_landmarks``), for G_T
    true_crop_landmarks: np.ndarray | None = None

    @property
    def has_true_track(self) -> bool:
        return self.true_landmarks is not None and self.true_neutral_landmarks is not None

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def has_frames(self) -> bool:
        return self.frames_jpeg is not None and self.frames_offsets is not None

    def frame(self, t: int) -> np.ndarray:
        """Decode crop ``t`` as RGB uint8 (S, S, 3)."""
        import cv2

        if not self.has_frames:
            raise DataError(f"clip {self.subject}/{self.clip_id} has no frames (landmark-only dataset)")
        a, b = int(self.frames_offsets[t]), int(self.frames_offsets[t + 1])
        bgr = cv2.imdecode(self.frames_jpeg[a:b], cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"clip {self.subject}/{self.clip_id}: frame {t} is not a valid JPEG")
        return bgr[..., ::-1].copy()

    def validate(self, where: str = "") -> None:
        """Raise DataError naming ``where`` if shapes disagree or values are not finite."""
        name = where or f"{self.subject}/{self.clip_id}"
        T = self.landmarks.shape[0] if self.landmarks.ndim == 3 else -1
        if self.landmarks.ndim != 3 or self.landmarks.shape[1:] != (68, 2):
            raise DataError(f"{name}: landmarks must have shape (T, 68, 2), got {self.landmarks.shape}")
        if T < 1:
            raise DataError(f"{name}: clip has no frames")
        if self.neutral_landmarks.shape != (68, 2):
            raise DataError(f"{name}: neutral_landmarks must have shape (68, 2), "
                            f"got {self.neutral_landmarks.shape}")
        if self.audio_features.ndim != 3 or self.audio_features.shape[0] != T:
            raise DataError(f"{name}: audio_features must have shape (T={T}, W, D), "
                            f"got {self.audio_features.shape} (mismatched lengths)")
        if self.crop_landmarks is not None and self.crop_landmarks.shape != (T, 68, 2):
            raise DataError(f"{name}: crop_landmarks must have shape ({T}, 68, 2), "
                            f"got {self.crop_landmarks.shape} (mismatched lengths)")
        if self.frames_offsets is not None and self.frames_offsets.shape != (T + 1,):
            raise DataError(f"{name}: frames_offsets must have {T + 1} entries for {T} frames, "
                            f"got {self.frames_offsets.shape[0]} (mismatched lengths)")
        if (self.true_landmarks is None) != (self.true_neutral_landmarks is None):
            raise DataError(f"{name}: true_landmarks and true_neutral_landmarks come together (the track and "
                            f"its neutral face); re-run preprocessing for this clip")
        if self.true_landmarks is not None and self.true_landmarks.shape != (T, 68, 2):
            raise DataError(f"{name}: true_landmarks must have shape ({T}, 68, 2), "
                            f"got {self.true_landmarks.shape} (mismatched lengths)")
        if self.true_neutral_landmarks is not None and self.true_neutral_landmarks.shape != (68, 2):
            raise DataError(f"{name}: true_neutral_landmarks must have shape (68, 2), "
                            f"got {self.true_neutral_landmarks.shape}")
        if self.true_crop_landmarks is not None and self.true_crop_landmarks.shape != (T, 68, 2):
            raise DataError(f"{name}: true_crop_landmarks must have shape ({T}, 68, 2), "
                            f"got {self.true_crop_landmarks.shape} (mismatched lengths)")
        for key in _FLOAT_ARRAYS:
            arr = getattr(self, key)
            if arr is not None and not np.isfinite(arr).all():
                raise DataError(f"{name}: {key} contains NaN or infinite values")
        if not (self.fps > 0):
            raise DataError(f"{name}: fps must be positive, got {self.fps}")


_ARRAYS = ("landmarks", "neutral_landmarks", "audio_features", "crop_landmarks", "frames_jpeg",
           "frames_offsets", "audio", "true_landmarks", "true_neutral_landmarks", "true_crop_landmarks")
#: the float32 arrays (checked finite, converted on load)
_FLOAT_ARRAYS = ("landmarks", "neutral_landmarks", "audio_features", "crop_landmarks", "true_landmarks",
                 "true_neutral_landmarks", "true_crop_landmarks")
_SCALARS = ("emotion", "intensity", "fps", "subject", "clip_id", "feature_kind", "dataset", "sample_rate")


def encode_frames(frames, quality: int = 92) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 frames -> (concatenated JPEG bytes, offsets)."""
    import cv2

    chunks, offsets = [], [0]
    for f in frames:
        f = np.asarray(f)
        # cvtColor: the same bytes as a reversed-channel copy at a tenth of its cost (preprocessing encodes every crop)
        bgr = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR) if f.dtype == np.uint8 and f.ndim == 3
               and f.shape[2] == 3 else np.ascontiguousarray(f[..., ::-1]))
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DataError("could not JPEG-encode a frame")
        chunks.append(buf.reshape(-1))
        offsets.append(offsets[-1] + buf.size)
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    return data.astype(np.uint8), np.asarray(offsets, dtype=np.int64)


def save_clip(clip: Clip, path: str | Path) -> None:
    clip.validate(str(path))
    payload: dict[str, Any] = {"format_version": np.array(FORMAT_VERSION)}
    for k in _ARRAYS:
        v = getattr(clip, k)
        if v is not None:
            payload[k] = np.asarray(v)
    for k in _SCALARS:
        payload[k] = np.array(getattr(clip, k))
    payload["extra_json"] = np.array(json.dumps(clip.extra))
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **payload)


@contextmanager
def _open_npz(path: str | Path, missing: str, unreadable: str, fix: str = ""):
    """``np.load`` without pickles; a missing or unreadable file (or an entry the caller does not find in
    it) becomes a :class:`DataError`: ``"{path}: {missing}"`` or ``"{path}: not a readable {unreadable}
    (...){fix}"``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except Exception as e:  # noqa: BLE001 - zipfile.BadZipFile, KeyError, ValueError, OSError ...
        raise DataError(f"{path}: not a readable {unreadable} ({type(e).__name__}: {e}){fix}") from None


def _open_clip(path: str | Path):
    return _open_npz(path, "clip file not found", "processed clip", "; delete it and re-run preprocessing")


def load_clip(path: str | Path, validate: bool = True) -> Clip:
    path = Path(path)
    with _open_clip(path) as z:
        data = {k: z[k] for k in z.files}
    missing = [k for k in ("landmarks", "neutral_landmarks", "audio_features", "emotion", "fps")
               if k not in data]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}; re-run preprocessing for this clip")
    kwargs: dict[str, Any] = {}
    for k in _ARRAYS:
        if k in data:
            kwargs[k] = data[k]
    for k in _SCALARS:
        if k in data:
            v = data[k].item()
            kwargs[k] = v
    kwargs.setdefault("subject", path.parent.name)
    kwargs.setdefault("clip_id", path.stem)
    kwargs.setdefault("feature_kind", "unknown")
    kwargs.setdefault("intensity", 1)
    kwargs["extra"] = json.loads(data["extra_json"].item()) if "extra_json" in data else {}
    for k in _FLOAT_ARRAYS:
        if k in kwargs:
            kwargs[k] = kwargs[k].astype(np.float32, copy=False)
    clip = Clip(**kwargs)
    if validate:
        clip.validate(str(path))
    return clip


@dataclass
class SubjectReference:
    """A subject's neutral reference frame, used as G_T's identity image."""

    subject: str
    image: np.ndarray  # (S, S, 3) uint8 face crop, neutral expression, closed mouth if possible
    crop_landmarks: np.ndarray  # (68, 2) float32, pixels in the crop
    neutral_landmarks: np.ndarray  # (68, 2) float32, canonical space (similarity-aligned)
    #: (68, 2) float32: the same neutral face on the clips' optional true track (None: no true track)
    true_neutral_landmarks: np.ndarray | None = None
    #: (68, 2) float32: the reference frame's true landmarks in crop pixels (G_T's graph G on the true track)
    true_crop_landmarks: np.ndarray | None = None


#: a subject reference's optional true-track arrays
_SUBJECT_TRUE = ("true_neutral_landmarks", "true_crop_landmarks")


def save_subject(ref: SubjectReference, path: str | Path) -> None:
    for k in _SUBJECT_TRUE:
        v = getattr(ref, k)
        if v is not None and np.shape(v) != (68, 2):
            raise DataError(f"subject {ref.subject}: {k} must have shape (68, 2), got {np.shape(v)}")
    true = {k: np.asarray(getattr(ref, k), np.float32) for k in _SUBJECT_TRUE if getattr(ref, k) is not None}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, subject=np.array(ref.subject), image=ref.image.astype(np.uint8),
                     crop_landmarks=ref.crop_landmarks.astype(np.float32),
                     neutral_landmarks=ref.neutral_landmarks.astype(np.float32), **true)


def load_subject(path: str | Path) -> SubjectReference:
    with _open_npz(path, "subject reference not found; re-run preprocessing", "subject reference") as z:
        true = {k: z[k].astype(np.float32) for k in _SUBJECT_TRUE if k in z.files}
        for k, v in true.items():
            if v.shape != (68, 2):
                raise DataError(f"{path}: {k} must have shape (68, 2), got {v.shape}; re-run preprocessing")
        return SubjectReference(subject=str(z["subject"].item()), image=z["image"],
                                crop_landmarks=z["crop_landmarks"].astype(np.float32),
                                neutral_landmarks=z["neutral_landmarks"].astype(np.float32), **true)


@dataclass
class DatasetManifest:
    """``manifest.json`` of a processed dataset."""

    feature_kind: str
    feature_dim: int  # D
    window: int  # W
    fps: float = 30.0
    crop_size: int = 256
    source: str = ""  # mead | crema-d | ravdess | mead-mini | toy
    emotions: list[str] = field(default_factory=list)
    intensity_levels: int = 3
    #: the backdrop colour of the processed face crops (RGB 0..255), estimated by preprocessing from the
    #: subjects' reference crops; texture checkpoints carry it so inference never reads the dataset.
    #: None: unknown (datasets processed before it was recorded).
    background_rgb: list[int] | None = None
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def save(self, root: str | Path) -> None:
        atomic_write_json(Path(root) / "manifest.json", dataclasses.asdict(self))

    @classmethod
    def load(cls, root: str | Path) -> "DatasetManifest":
        path = Path(root) / "manifest.json"
        if not path.is_file():
            raise DataError(f"{path} not found: {root} is not a processed dataset; create one with "
                            f"'emotalk preprocess'")
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"{path}: unreadable manifest ({e}); re-run preprocessing") from None


def clip_path(root: str | Path, subject: str, clip_id: str) -> Path:
    return Path(root) / "clips" / subject / f"{clip_id}.npz"


def subject_path(root: str | Path, subject: str) -> Path:
    return Path(root) / "subjects" / f"{subject}.npz"


def clip_label(path: str | Path) -> tuple[str, int]:
    """``(emotion, intensity)`` of a processed clip, reading only those two entries (not frames or audio)."""
    with _open_clip(path) as z:
        return str(z["emotion"].item()), int(z["intensity"].item()) if "intensity" in z.files else 1


def list_clips(root: str | Path, subjects: list[str] | None = None) -> list[Path]:
    clips_dir = Path(root) / "clips"
    paths = sorted(clips_dir.glob("*/*.npz"))
    if subjects:
        wanted = set(subjects)
        paths = [p for p in paths if p.parent.name in wanted]
    return paths
