"""Frame-level dataset for G_T over a folder of processed clips with frames (see :mod:`emotalk.data.io.clip`).

Each item is one video frame ``t`` of one clip, resized to the model's ``image_size`` S::

    identity            (3, S, S) float32 in [-1, 1]  the subject's neutral reference crop (I_n)
    identity_landmarks  (68, 2)   float32             its crop landmarks (graph G), S×S crop pixels
    target              (3, S, S) float32 in [-1, 1]  the frame's crop (Î)
    target_landmarks    (68, 2)   float32             the frame's crop landmarks (graph G')
    emotion             (E + I,)  float32             the clip's emotion control vector

Landmarks use the pixel-index convention (pixel centres at integers) and are rescaled with
``x' = (x + 0.5) · S / S_crop - 0.5``, matching ``cv2.resize``. Subjects are chosen by the caller (the
task splits by subject, :func:`emotalk.data.datasets.splits.split_subjects`). Clip metadata is indexed once;
frames are decoded on demand. Clips are uncompressed ``.npz`` files (``np.savez``), so a frame is read as
three byte ranges of its file (its two JPEG offsets, its landmark row, its JPEG bytes; :func:`stored_layout`
finds where each array's data starts): with frames shuffled across thousands of clips a whole-clip cache
would almost never hit at MEAD scale and every frame would cost a whole clip's read. Clips written
otherwise (compressed) fall back to reading whole arrays through a small per-process LRU cache of clips.

``track`` chooses the landmarks of G and G': ``detected`` (``crop_landmarks``: the face tracker's, as for real
MEAD) or ``exact`` (``true_crop_landmarks`` of the clips and of the subject references: mead-mini's generator
landmarks in the same crop pixels, see :mod:`emotalk.data.io.clip`; clips preprocessed with ``--landmarks
sidecar`` have them in ``crop_landmarks`` already). Why exact: the demo's G_L learns the exact track, and G_T then
learns the landmark-to-pixel motion of the landmarks it will be driven with (a consistency choice, not a
measured win: the demo measured both, one seed each: G_T on dlib's track gave expression transfer of 1.04 / 1.05 / 0.96 of the warp baseline's (brows / eyes / mouth), on the exact track 1.04 / 0.92 / 0.95).
"""
from __future__ import annotations

import json
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from emotalk.data.datasets.landmark import check_track, main_track_is_exact, no_true_track_error
from emotalk.data.io.clip import list_clips, load_subject, subject_path
from emotalk.data.emotions import EMOTIONS, INTENSITY_LEVELS, control_level, emotion_vector, trains_on
from emotalk.errors import DataError


def resize_crop(image: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a square crop (H, W, 3) uint8 and its pixel landmarks to ``size`` × ``size``."""
    import cv2

    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image, landmarks.astype(np.float32)
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    out = cv2.resize(image, (size, size), interpolation=interp)
    scale = np.array([size / w, size / h], dtype=np.float32)
    return out, ((landmarks + 0.5) * scale - 0.5).astype(np.float32)


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def from_tensor_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 RGB."""
    x = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(1, 2, 0).cpu().numpy()


def _read_keys(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys if k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: clip file not found") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: not a readable processed clip ({type(e).__name__}: {e}); delete it and "
                        f"re-run preprocessing") from None


def stored_layout(path: str | Path, keys: Sequence[str]) -> dict[str, tuple[int, np.dtype, tuple]] | None:
    """Where the raw data of each array ``key`` starts in an uncompressed ``.npz``: ``{key: (file offset,
    dtype, shape)}``; None when any of them is compressed, Fortran-ordered or missing (then read whole)."""
    out = {}
    try:
        with open(path, "rb") as f:
            with zipfile.ZipFile(f) as zf:
                infos = {k: zf.getinfo(k + ".npy") for k in keys}
            for k, info in infos.items():
                if info.compress_type != zipfile.ZIP_STORED:
                    return None
                f.seek(info.header_offset)
                local = f.read(30)
                if local[:4] != b"PK\x03\x04":
                    return None
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                if fortran or dtype.hasobject:
                    return None
                out[k] = (f.tell(), dtype, tuple(shape))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return out


def _read_rows(f, layout: tuple[int, np.dtype, tuple], start: int, count: int) -> np.ndarray:
    """Rows ``start .. start + count`` of a C-ordered array stored at ``layout`` in the open file ``f``."""
    offset, dtype, shape = layout
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    f.seek(offset + start * row)
    data = f.read(count * row)
    if len(data) != count * row:
        raise DataError(f"{getattr(f, 'name', 'clip')}: truncated clip file; re-run preprocessing")
    return np.frombuffer(data, dtype=dtype).reshape((count,) + tuple(shape[1:]))


class TextureFrameDataset(Dataset):
    """Frames of the processed clips of ``subjects`` (all subjects when None) under ``root``."""

    def __init__(self, root: str | Path, subjects: Sequence[str] | None = None, image_size: int = 256,
                 emotions: Sequence[str] = EMOTIONS, intensity_levels: int = INTENSITY_LEVELS,
                 frame_stride: int = 1, max_clips: int = 0, max_frames: int = 0, cache_clips: int = 16,
                 track: str = "detected"):
        check_track(track)
        self.root = Path(root)
        self.track = track
        self.image_size = int(image_size)
        self.emotions, self.intensity_levels = tuple(emotions), int(intensity_levels)
        self.cache_clips = max(1, int(cache_clips))
        if subjects is not None and len(subjects) == 0:
            paths: list[Path] = []
        else:
            paths = list_clips(self.root, list(subjects) if subjects is not None else None)
            if not paths:
                raise DataError(f"{self.root}: no processed clips found under {self.root / 'clips'}"
                                + (f" for subjects {', '.join(subjects)}" if subjects else "")
                                + "; run 'emotalk preprocess' first (or check data.root)")
        if max_clips:
            paths = paths[:max_clips]
        self.clips: list[dict] = []
        index = []
        skipped_no_frames = 0
        missing: list[str] = []  # exact track: clips without it
        self._subject_key: dict[str, str] = {}  # subject -> the array of its reference's landmarks
        for p in paths:
            meta = _read_keys(p, ("frames_offsets", "crop_landmarks", "emotion", "intensity", "subject")
                              + (("true_crop_landmarks", "extra_json") if track == "exact" else ()))
            if "frames_offsets" not in meta or "crop_landmarks" not in meta:
                skipped_no_frames += 1
                continue
            key = "crop_landmarks"
            if track == "exact":
                extra = json.loads(meta["extra_json"].item()) if "extra_json" in meta else {}
                if "true_crop_landmarks" in meta:
                    key = "true_crop_landmarks"
                elif not main_track_is_exact(extra):
                    missing.append(f"{p.parent.name}/{p.stem}")
                    continue
            emotion = str(meta["emotion"].item()) if "emotion" in meta else "neutral"
            if not trains_on(emotion, self.emotions):
                continue
            level = control_level(int(meta["intensity"].item()) if "intensity" in meta else 1, intensity_levels)
            subject = str(meta["subject"].item()) if "subject" in meta else p.parent.name
            T = int(meta["crop_landmarks"].shape[0])
            ci = len(self.clips)
            self._subject_key.setdefault(subject, key)
            self.clips.append({"path": p, "subject": subject, "num_frames": T, "landmarks_key": key,
                               "emotion": emotion_vector(emotion, level, self.emotions, intensity_levels)})
            ts = np.arange(0, T, max(1, int(frame_stride)))
            index.append(np.stack([np.full(len(ts), ci), ts], 1))
        if missing:
            raise no_true_track_error(f"{self.root}: {len(missing)} clip(s), e.g. {missing[0]},", " in crop pixels")
        if paths and not self.clips:
            why = (f"{skipped_no_frames} clips have no frames (a landmark-only dataset)" if skipped_no_frames
                   else f"no clip has an emotion in {list(self.emotions)}")
            raise DataError(f"{self.root}: no usable clips for G_T: {why}; preprocess with frames / check "
                            f"model.emotions")
        self.index = np.concatenate(index).astype(np.int64) if index else np.zeros((0, 2), np.int64)
        if max_frames and len(self.index) > max_frames:  # evenly spaced subsample (validation)
            pick = np.linspace(0, len(self.index) - 1, max_frames).round().astype(np.int64)
            self.index = self.index[pick]
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._layouts: dict[int, dict | None] = {}  # clip -> stored_layout (a few numbers per clip)
        self._subjects: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def subjects(self) -> list[str]:
        return sorted({c["subject"] for c in self.clips})

    def _clip_arrays(self, ci: int) -> dict:
        hit = self._cache.get(ci)
        if hit is not None:
            self._cache.move_to_end(ci)
            return hit
        p, key = self.clips[ci]["path"], self.clips[ci]["landmarks_key"]
        arrays = _read_keys(p, ("frames_jpeg", "frames_offsets", key))
        if len(arrays) < 3:
            raise DataError(f"{p}: has no frames (or no {key}) any more; re-run preprocessing")
        arrays["landmarks"] = arrays.pop(key).astype(np.float32)
        self._cache[ci] = arrays
        while len(self._cache) > self.cache_clips:
            self._cache.popitem(last=False)
        return arrays

    def _identity(self, subject: str) -> tuple[torch.Tensor, torch.Tensor]:
        if subject not in self._subjects:
            path = subject_path(self.root, subject)
            if not path.is_file():
                raise DataError(f"{path}: subject {subject!r} has no neutral reference (the identity image "
                                f"G_T needs); re-run preprocessing for this subject")
            ref = load_subject(path)
            ref_lm = ref.crop_landmarks
            if self._subject_key.get(subject, "crop_landmarks") == "true_crop_landmarks":
                if ref.true_crop_landmarks is None:
                    raise no_true_track_error(f"{path} (the reference of subject {subject!r})", " in crop pixels")
                ref_lm = ref.true_crop_landmarks
            img, lm = resize_crop(np.asarray(ref.image), ref_lm, self.image_size)
            self._subjects[subject] = (to_tensor_image(img), torch.from_numpy(lm))
        return self._subjects[subject]

    def frame(self, ci: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded crop (S, S, 3) uint8 and its landmarks (68, 2) at the dataset's image size."""
        import cv2

        jpeg, lm = self._frame_bytes(ci, t)
        bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{self.clips[ci]['path']}: frame {t} is not a valid JPEG; re-run preprocessing")
        return resize_crop(bgr[..., ::-1], lm.astype(np.float32), self.image_size)

    def _frame_bytes(self, ci: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``t``'s JPEG bytes and landmarks: byte ranges of the clip file, else whole arrays."""
        key = self.clips[ci]["landmarks_key"]
        keys = ("frames_jpeg", "frames_offsets", key)
        if ci not in self._layouts:
            self._layouts[ci] = stored_layout(self.clips[ci]["path"], keys)
        layout = self._layouts[ci]
        if layout is None:
            a = self._clip_arrays(ci)
            lo, hi = int(a["frames_offsets"][t]), int(a["frames_offsets"][t + 1])
            return a["frames_jpeg"][lo:hi], a["landmarks"][t]
        try:
            with open(self.clips[ci]["path"], "rb") as f:
                lo, hi = (int(v) for v in _read_rows(f, layout["frames_offsets"], t, 2))
                lm = _read_rows(f, layout[key], t, 1)[0]
                jpeg = _read_rows(f, layout["frames_jpeg"], lo, hi - lo)
        except FileNotFoundError:
            raise DataError(f"{self.clips[ci]['path']}: clip file not found") from None
        return jpeg, lm

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ci, t = (int(v) for v in self.index[i])
        clip = self.clips[ci]
        img, lm = self.frame(ci, t)
        ident, ident_lm = self._identity(clip["subject"])
        return {"identity": ident, "identity_landmarks": ident_lm, "target": to_tensor_image(img),
                "target_landmarks": torch.from_numpy(lm), "emotion": torch.from_numpy(clip["emotion"])}
