"""Inference: one photo + speech + emotion -> a talking-face mp4 (paper §3, Fig. 2, Fig. 5, Fig. 12).

    from emotalk import Pipeline
    pipe = Pipeline.from_checkpoints("checkpoints")          # checkpoints/landmark + checkpoints/texture
    result = pipe.generate("photo.jpg", "speech.wav", emotion="happy", intensity=2, out="out.mp4")

Flow of :meth:`Pipeline.generate` (each stage timed in ``GenerateResult.seconds``):

1. **photo** (:mod:`emotalk.inference.photo`): load, largest face, 68 landmarks, similarity alignment
   to the canonical template (X = the photo's aligned neutral landmarks) and the face crop, cut exactly as
   preprocessing cuts its references.
2. **audio**: any format (bundled ffmpeg) -> 16 kHz mono; ``T = round(seconds * fps)`` frames. Audio
   without speech is valid (a still face that shows the emotion, with a warning).
3. **features**: the speech-feature backend the landmark checkpoint was trained with (its metadata's
   ``feature_kind`` / ``window`` / ``feature_dim``); the feature stream is computed once and cut into
   per-frame windows batch by batch (identical to :func:`emotalk.data.speech.features.extract_features`).
4. **landmarks**: G_L per frame (batched) -> X' in the photo's aligned canonical space -> temporal
   smoothing (Savitzky-Golay) -> spontaneous blinks on the eyelids (:mod:`emotalk.mini.blinks`).
   Aligned landmarks map into the photo with the inverse of its similarity and on into crop pixels.
5. **finetune** (neural renderer): background replacement (:mod:`emotalk.data.face.background`), then
   one-shot fine-tuning of a copy of G_T's E_T/D_T on the photo crop
   (:func:`emotalk.inference.one_shot.one_shot_finetune`, ``finetune_steps``; 0 skips it), then E_T once.
6. **render**: G_T over the frames in batches (or, with ``renderer="warp"``, a piecewise-affine warp of
   the photo crop with a drawn mouth interior, :mod:`emotalk.mini.render`, no G_T); the generated
   person goes back onto the photo's own background and the crop is pasted into the full photo with a
   feathered mask; frames stream into :class:`emotalk.data.io.media.VideoWriter` (H.264 + AAC), which
   renames the file into place only when it is complete. Memory does not grow with the audio length:
   only per-frame landmarks (68 x 2 floats) are kept for the whole clip.

Lower-level steps for evaluation: :meth:`Pipeline.prepare_photo`, :meth:`Pipeline.audio_features`,
:meth:`Pipeline.predict_landmarks`, :meth:`Pipeline.animate` (smoothing + blinks),
:meth:`Pipeline.render_frames` (a generator of full frames or of face crops).
"""
from __future__ import annotations

import os
import tempfile
import time
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from emotalk.data.emotions import emotion_vector, parse_emotion
from emotalk.models.face_graph import canonical_template
from emotalk.errors import (CheckpointError, ConfigError, DataError, InputError,
                            MissingWeightsError)
from emotalk.inference.photo import Photo, prepare_photo

SAMPLE_RATE = 16000
RENDERERS = ("neural", "warp")
#: 20-ms RMS level (dBFS) that some part of the audio must exceed to count as containing speech.
SPEECH_LEVEL_DB = -40.0
#: Feather of the paste-back border, as a fraction of the crop size (8 px at 256, like paste_crop).
PASTE_FEATHER = 8 / 256


# ==================================================================================================
# results
# ==================================================================================================
@dataclass
class GenerateResult:
    """What :meth:`Pipeline.generate` made."""

    path: Path  # the finished mp4
    frames: int
    fps: float
    size: tuple[int, int]  # (width, height) of the video
    seconds: dict[str, float]  # per stage (photo, audio, features, landmarks, finetune, render) + total
    warnings: list[str] = field(default_factory=list)
    landmarks: np.ndarray | None = None  # (T, 68, 2) final landmarks, the photo's aligned canonical space
    blinks: np.ndarray | None = None  # (T,) eyelid closure 0..1 added to ``landmarks``
    emotion: dict[str, float] = field(default_factory=dict)
    intensity: float = 1.0
    renderer: str = "neural"
    speech: bool = True  # False: no speech was found in the audio
    background_rgb: tuple[int, int, int] | None = None  # training background used (neural renderer)

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def frames_per_second(self) -> float:
        """Rendering speed: frames over the time of the whole run."""
        total = self.seconds.get("total") or sum(self.seconds.values())
        return self.frames / total if total else 0.0


@dataclass
class Speech:
    """Decoded audio: float32 mono samples at 16 kHz, plus the file it came from (muxed into the mp4)."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    path: Path | None = None

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def num_frames(self, fps: float) -> int:
        return max(1, int(round(len(self.samples) / float(self.sample_rate) * fps)))

    def has_speech(self, level_db: float = SPEECH_LEVEL_DB) -> bool:
        """Whether any 20-ms window is louder than ``level_db`` dBFS (RMS)."""
        a = np.asarray(self.samples, np.float32)
        n = max(1, int(self.sample_rate * 0.02))
        k = len(a) // n
        if k == 0:
            rms = float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) if a.size else 0.0
        else:
            rms = float(np.sqrt((a[: k * n].astype(np.float64).reshape(k, n) ** 2).mean(1)).max())
        return rms > 10 ** (level_db / 20.0)


def load_speech(audio, sample_rate: int | None = None) -> Speech:
    """``audio``: a file path (any format ffmpeg reads), a :class:`Speech`, a float/int16 array at
    ``sample_rate`` (default 16 kHz) or an ``(array, sample_rate)`` pair -> 16 kHz mono :class:`Speech`."""
    from emotalk.data.io import media
    from emotalk.data.speech.features import _mono16k

    if isinstance(audio, Speech):
        return audio
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if path.is_dir():
            raise InputError(f"audio path {path} is a directory; give a speech file (wav, mp3, m4a, flac)")
        try:
            samples = media.load_audio(path, SAMPLE_RATE)
        except DataError as e:
            raise InputError(f"{e}; use a WAV, MP3, M4A or FLAC speech file") from None
        return Speech(samples.astype(np.float32, copy=False), SAMPLE_RATE, path)
    if isinstance(audio, tuple) and len(audio) == 2:
        audio, sample_rate = audio
    a = np.asarray(audio)
    if a.size == 0:
        raise InputError("the audio has no samples (zero length)")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"audio samples must be numbers, got dtype {a.dtype}")
    if a.dtype != np.int16 and not np.isfinite(a).all():
        raise InputError("the audio contains NaN or infinite samples")
    samples = _mono16k(a, int(sample_rate or SAMPLE_RATE))
    if samples.size == 0:
        raise InputError("the audio has no samples (zero length)")
    return Speech(np.ascontiguousarray(samples, dtype=np.float32), SAMPLE_RATE, None)


def check_output_path(out: str | Path) -> Path:
    """Fail early (before any work) when ``out`` cannot be written; nothing is created here."""
    p = Path(out)
    if str(out).strip() == "":
        raise InputError("no output path given; pass e.g. --out out.mp4")
    if p.is_dir():
        raise InputError(f"output path {p} is a directory; give a file name such as {p / 'out.mp4'}")
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"cannot write {p}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {p}: directory {probe} is not writable; choose another --out")
    if p.exists() and not os.access(p, os.W_OK):
        raise InputError(f"cannot write {p}: the existing file is read-only")
    return p


class EmotalkWarning(UserWarning):
    """A non-fatal problem with the inputs (several faces, silent audio, ...); also in ``result.warnings``."""


def _warn(messages: list[str], message: str) -> None:
    messages.append(message)
    _warnings.warn(message, EmotalkWarning, stacklevel=3)


def _interactive() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _progress(iterable=None, progress: bool = True, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress else True, leave=False, **kw)


# ==================================================================================================
# audio features, batch by batch
# ==================================================================================================
#: Backends whose stream step ``i`` depends only on the audio around ``i / rate`` s (a short-time
#: transform), so that long audio can be processed in chunks with identical results.
CHUNKABLE = ("mel",)
CHUNK_SECONDS = 30.0


def chunked_stream(backend, audio: np.ndarray, sr: int = SAMPLE_RATE, chunk_seconds: float = CHUNK_SECONDS,
                   margin_steps: int = 8) -> tuple[np.ndarray, float]:
    """``backend.stream`` over ``chunk_seconds`` pieces with ``margin_steps`` steps of real context on
    each side (dropped afterwards), so the transient memory of the transform (a 10-minute STFT is
    ~200 MB) does not grow with the audio length. Equal to the one-piece stream for short-time
    transforms whose window is shorter than the margin (log-mel: 25 ms window, 80 ms margin)."""
    rate = float(backend.rate)
    hop = sr / rate
    if abs(hop - round(hop)) > 1e-9:
        return backend.stream(audio, sr)
    hop = int(round(hop))
    n = len(audio)
    total = 1 + n // hop  # a centred short-time transform has one step every hop samples, plus one
    step = max(1, int(chunk_seconds * rate))
    margin = margin_steps * hop
    parts = []
    for s in range(0, total, step):
        e = min(s + step, total)
        a0 = max(s * hop - margin, 0)
        a1 = min(e * hop + margin, n)
        piece, _ = backend.stream(audio[a0:a1], sr)  # step k of the piece is global step a0 / hop + k
        first = s - a0 // hop
        parts.append(piece[first:first + (e - s)])
    stream = np.concatenate(parts, 0)
    if stream.shape[0] != total:  # not a centred short-time transform after all: do it in one piece
        return backend.stream(audio, sr)
    return stream, rate


class AudioFeatures:
    """A speech-feature stream cut into per-frame windows on demand: ``windows(a, b)`` equals
    ``extract_features(kind, audio, num_frames=T, fps=fps, window=W)[a:b]`` without holding all T
    windows (a 10-minute clip's windows would be ~100 MB; its stream is a fraction of that)."""

    def __init__(self, kind: str, speech: Speech | None, num_frames: int, fps: float = 30.0,
                 window: int | None = None, source=None):
        from emotalk.data.speech.features import FEATURE_BACKENDS, get_feature_backend, resample_stream

        key = str(kind).strip().lower()
        if key not in FEATURE_BACKENDS:
            raise CheckpointError(
                f"the landmark checkpoint was trained on {kind!r} speech features, which cannot be computed "
                f"from audio at inference (available: {', '.join(FEATURE_BACKENDS)}); train G_L on data "
                f"preprocessed with --features phonemes, mel or deepspeech")
        backend = get_feature_backend(key)
        self.kind, self.fps, self.num_frames = key, float(fps), int(num_frames)
        self.window = int(window or backend.default_window)
        self.dim = int(backend.dim)
        audio = None if speech is None else speech.samples
        sr = SAMPLE_RATE if speech is None else speech.sample_rate
        try:
            if key in CHUNKABLE and audio is not None and len(audio) > 2 * CHUNK_SECONDS * sr:
                stream, rate = chunked_stream(backend, audio, sr)
            else:
                stream, rate = backend.stream(audio if key != "deepspeech" else None, sr, source=source)
        except MissingWeightsError as e:
            if key == "deepspeech":
                raise MissingWeightsError(
                    "this landmark checkpoint was trained on DeepSpeech features, which are not computed here "
                    "(DeepSpeech itself is not available offline): pass the speech's precomputed DeepSpeech "
                    "logits with --audio-features FILE (Pipeline.generate(feature_source=...)), or use a G_L "
                    "checkpoint trained on phonemes or mel features") from None
            raise e
        if backend.video_rate:
            stream = resample_stream(stream, rate, self.fps, self.num_frames)
            rate = self.fps
        stream = np.asarray(stream, np.float32)
        self.rate = float(rate)
        self.dim = int(stream.shape[1])
        if not np.isfinite(stream).all():
            raise DataError(f"{key} features contain NaN or infinite values")
        pad = np.broadcast_to(np.asarray(backend.pad_vector(), np.float32), (self.dim,))
        self._ext = np.concatenate([stream, pad[None]], 0)  # the stream plus one padding row
        del stream

    @property
    def stream(self) -> np.ndarray:
        """``(N, D)`` feature stream at ``rate`` Hz."""
        return self._ext[:-1]

    def __len__(self) -> int:
        return self.num_frames

    def windows(self, start: int, stop: int) -> np.ndarray:
        """``(stop - start, W, D)`` float32, the windows of frames ``start .. stop - 1``."""
        n = self._ext.shape[0] - 1
        centres = np.rint(np.arange(start, stop) * (self.rate / self.fps)).astype(np.int64)
        idx = centres[:, None] - self.window // 2 + np.arange(self.window)[None, :]
        return self._ext[np.where((idx >= 0) & (idx < n), idx, n)]

    def all(self) -> np.ndarray:
        return self.windows(0, self.num_frames)


# ==================================================================================================
# landmark post-processing
# ==================================================================================================
def smooth_landmarks(landmarks: np.ndarray, window: int = 5, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing along time (removes frame-to-frame jitter, keeps mouth closures)."""
    from emotalk.data.face.track import savgol_smooth

    lm = np.asarray(landmarks, np.float32)
    if window <= 1 or len(lm) < 3:
        return lm
    return savgol_smooth(lm, window, order)


def add_blinks(landmarks: np.ndarray, fps: float = 30.0, seed: int = 0, rate: float = 0.3
               ) -> tuple[np.ndarray, np.ndarray]:
    """Spontaneous blinks (the paper adds them to G_L's output before G_T) on canonical landmarks
    ``(T, 68, 2)``; returns ``(landmarks with blinks, closure (T,))``. Uses the mead-mini blink model."""
    from emotalk.mini.blinks import apply_blink, blink_onsets, blink_track

    lm = np.asarray(landmarks, np.float32)
    T = len(lm)
    onsets = blink_onsets(T / float(fps), np.random.default_rng(seed), rate=rate)
    closure = blink_track(onsets, T, fps)
    return apply_blink(lm, closure).astype(np.float32), closure.astype(np.float32)


# ==================================================================================================
# rendering back-ends
# ==================================================================================================
def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


class NeuralRenderer:
    """G_T on one photo: background replaced, (optionally) fine-tuned, E_T computed once."""

    name = "neural"

    def __init__(self, generator, photo: Photo, emotion: np.ndarray, device: torch.device,
                 finetune_steps: int = 5, background_rgb=None, alpha: np.ndarray | None = None,
                 progress: bool = False, finetune_kwargs: dict | None = None):
        from emotalk.data.datasets.texture import resize_crop, to_tensor_image
        from emotalk.data.face.background import replace_background

        self.device = device
        self.S = photo.crop_size
        self.s = int(generator.cfg.image_size)
        identity = photo.crop if alpha is None else replace_background(photo.crop, alpha, background_rgb)
        self.identity_crop = identity
        img, lm = resize_crop(identity, photo.crop_landmarks, self.s)
        self.identity = to_tensor_image(img)[None].to(device)
        self.identity_landmarks = torch.from_numpy(np.asarray(lm, np.float32))[None].to(device)
        self.emotion = torch.from_numpy(np.asarray(emotion, np.float32))[None].to(device)
        self.finetune_info = None
        if finetune_steps and finetune_steps > 0:
            from emotalk.inference.one_shot import one_shot_finetune

            # works on a copy: the pipeline's G_T stays untouched for the next photo
            generator, self.finetune_info = one_shot_finetune(
                generator, self.identity, self.identity_landmarks, int(finetune_steps), device=device,
                progress=progress and _interactive(), return_info=True, **(finetune_kwargs or {}))
        self.G = generator.eval()
        with torch.no_grad():
            self.features = self.G.encode_identity(self.identity)

    @torch.no_grad()
    def __call__(self, crop_landmarks: np.ndarray) -> list[np.ndarray]:
        """Crop landmarks ``(B, 68, 2)`` (pixels of the S x S crop) -> B crops (S, S, 3) uint8."""
        from emotalk.data.datasets.texture import from_tensor_image

        lm = (np.asarray(crop_landmarks, np.float32) + 0.5) * (self.s / self.S) - 0.5
        driven = torch.from_numpy(lm).to(self.device)
        out = self.G(self.features, self.identity_landmarks, driven, self.emotion)["image"]
        return [_resize(from_tensor_image(x), self.S) for x in out]


class WarpRenderer:
    """Classical piecewise-affine warp of the photo crop to the landmarks, with a drawn mouth interior
    (the mead-mini renderer): no G_T, a fast preview and an evaluation baseline."""

    name = "warp"

    def __init__(self, photo: Photo):
        from emotalk.mini.render import FaceWarper

        self.warper = FaceWarper(photo.crop, photo.crop_landmarks)
        lm = photo.crop_landmarks
        self.unit = float(np.linalg.norm(lm[45] - lm[36]))

    def __call__(self, crop_landmarks: np.ndarray) -> list[np.ndarray]:
        from emotalk.mini.render import render_frame

        return [render_frame(self.warper, lm, self.unit) for lm in np.asarray(crop_landmarks)]


class Compositor:
    """Paste S x S crops back into the photo through the inverse crop similarity, blending with a
    feathered crop border (as :func:`emotalk.data.face.alignment.paste_crop`) times an optional person alpha
    (background restoration). Only the crop's bounding box in the photo is touched; the weights are
    computed once, so a frame costs one ROI warp and one blend."""

    def __init__(self, photo: Photo, alpha: np.ndarray | None = None, feather: float | None = None):
        import cv2

        from emotalk.data.face.alignment import apply_similarity, invert_similarity

        S = photo.crop_size
        self.image = photo.image
        h, w = self.image.shape[:2]
        inv = invert_similarity(photo.crop_matrix)
        corners = apply_similarity(inv, np.array([[-1, -1], [S, -1], [S, S], [-1, S]], np.float64))
        x0 = int(max(np.floor(corners[:, 0].min()) - 2, 0))
        y0 = int(max(np.floor(corners[:, 1].min()) - 2, 0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + 3, w))
        y1 = int(min(np.ceil(corners[:, 1].max()) + 3, h))
        if x1 <= x0 or y1 <= y0:  # pragma: no cover - the face is inside the photo
            x0, y0, x1, y1 = 0, 0, w, h
        self.roi = (x0, y0, x1, y1)
        self.m = inv.copy()
        self.m[:, 2] -= (x0, y0)
        f = max(int(round((PASTE_FEATHER * S) if feather is None else feather)), 0)
        mask = np.zeros((S, S), np.float32)
        mask[f:S - f, f:S - f] = 1.0
        if f:
            mask = cv2.GaussianBlur(mask, (0, 0), f / 2.0)
        if alpha is not None:
            mask = mask * np.asarray(alpha, np.float32)
        self.size = (x1 - x0, y1 - y0)
        self.weight = cv2.warpAffine(mask, self.m, self.size, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT)[..., None]
        self.base = self.image[y0:y1, x0:x1].astype(np.float32) * (1.0 - self.weight)

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        import cv2

        x0, y0, x1, y1 = self.roi
        back = cv2.warpAffine(np.ascontiguousarray(crop), self.m, self.size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        out = self.image.copy()
        out[y0:y1, x0:x1] = np.clip(self.base + back.astype(np.float32) * self.weight + 0.5, 0, 255
                                    ).astype(np.uint8)
        return out


# ==================================================================================================
# the pipeline
# ==================================================================================================
def _select_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    spec = str(device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def _load_landmark(path: str | Path):
    from emotalk.config import config_from_dict
    from emotalk.models.face_graph import adjacency_matrix
    from emotalk.models.landmark_generator import LandmarkGenerator
    from emotalk.data.io.checkpoint import load_checkpoint, load_module

    tensors, meta = load_checkpoint(path, kind="landmark", prefixes=("model/generator/",))
    try:
        cfg = config_from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{meta.get('path', path)}: the checkpoint's saved config is unusable ({e})") from None
    G = LandmarkGenerator.from_config(cfg.model, adjacency_matrix())
    load_module(G, tensors, "generator")
    return G.eval(), cfg, meta


def _load_texture(path: str | Path):
    from emotalk.train.texture_task import load_texture_generator

    try:
        return load_texture_generator(path)
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the texture checkpoint's saved config is unusable ({e})") from None


def _default_batch(device: torch.device) -> int:
    return 32 if device.type == "cuda" else 8


class Pipeline:
    """G_L (+ G_T) loaded from checkpoints; :meth:`generate` makes a video, the other methods are its steps."""

    def __init__(self, landmark_generator: torch.nn.Module, landmark_config, landmark_meta: dict,
                 texture_generator: torch.nn.Module | None = None, texture_config=None,
                 texture_meta: dict | None = None, device: str | torch.device = "auto", landmarker=None):
        self.device = _select_device(device)
        self.G_L = landmark_generator.to(self.device).eval()
        self.landmark_config = landmark_config
        self.landmark_meta = dict(landmark_meta or {})
        self.G_T = texture_generator.to(self.device).eval() if texture_generator is not None else None
        self.texture_config = texture_config
        self.texture_meta = dict(texture_meta or {})
        self._landmarker = landmarker
        m = landmark_config.model
        self.emotions: list[str] = list(m.emotions)
        self.intensity_levels = int(m.intensity_levels)
        meta = self.landmark_meta
        self.feature_kind = str(meta.get("feature_kind", "unknown"))
        self.feature_dim = int(meta.get("feature_dim", m.feature_dim))
        self.window = int(meta.get("window", m.window))
        self.fps = float(meta.get("fps", 30.0) or 30.0)
        self.graph_input = getattr(getattr(landmark_config, "data", None), "graph_input", "subject")

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoints(cls, checkpoints: str | Path | Sequence = "checkpoints", device: str = "auto",
                         load_texture: bool = True, landmarker=None) -> "Pipeline":
        """``checkpoints``: a folder holding ``landmark/`` and ``texture/`` (each a training run folder or
        a folder with a ``step_*.json`` + ``.safetensors`` checkpoint), or a ``(landmark, texture)`` pair
        of checkpoint paths / run folders (texture may be None). ``load_texture=False`` skips G_T (enough
        for ``renderer="warp"``). Missing, corrupt or wrong-kind checkpoints raise CheckpointError."""
        if isinstance(checkpoints, (list, tuple)):
            if len(checkpoints) != 2:
                raise CheckpointError("give checkpoints as a folder or a (landmark, texture) pair")
            lm_path, tex_path = checkpoints
        else:
            root = Path(checkpoints)
            if not root.is_dir():
                raise CheckpointError(f"checkpoints folder {root} not found; it must hold landmark/ and "
                                      f"texture/ (training run folders); pass --checkpoints DIR")
            lm_path, tex_path = root / "landmark", root / "texture"
            if not lm_path.exists():
                raise CheckpointError(f"{lm_path} not found: the checkpoints folder {root} must hold a "
                                      f"landmark/ run folder (train G_L with 'emotalk train --config landmark/...')")
            if load_texture and not tex_path.exists():
                raise CheckpointError(f"{tex_path} not found: the checkpoints folder {root} must hold a "
                                      f"texture/ run folder (train G_T with 'emotalk train --config texture/...'), "
                                      f"or use --renderer warp")
        if lm_path is None:
            raise CheckpointError("a landmark (G_L) checkpoint is required")
        G_L, lcfg, lmeta = _load_landmark(lm_path)
        G_T = tcfg = tmeta = None
        if load_texture:
            if tex_path is None:
                raise CheckpointError("a texture (G_T) checkpoint is required for the neural renderer; "
                                      "use renderer='warp' without one")
            G_T, tcfg, tmeta = _load_texture(tex_path)
        return cls(G_L, lcfg, lmeta, G_T, tcfg, tmeta, device=device, landmarker=landmarker)

    # ------------------------------------------------------------------------------------------ inputs
    def landmark_emotion(self, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1) -> np.ndarray:
        """G_L's emotion control vector (its vocabulary / levels); InputError for unknown emotions or an
        intensity outside ``1 .. levels``."""
        return emotion_vector(emotion, intensity, self.emotions, self.intensity_levels)

    def texture_emotion(self, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1) -> np.ndarray:
        if self.G_T is None:
            raise CheckpointError("no texture (G_T) checkpoint is loaded")
        m = self.G_T.cfg
        return emotion_vector(emotion, intensity, list(m.emotions), int(m.intensity_levels))

    def prepare_photo(self, image, size: int = 256) -> Photo:
        """Load a photo and prepare its largest face (landmarks, alignment, the ``size`` x ``size`` crop)."""
        if self._landmarker is None:
            from emotalk.data.face.detect import DlibLandmarker

            self._landmarker = DlibLandmarker(upsample=1)
        return prepare_photo(image, crop_size=size, landmarker=self._landmarker)

    def audio_features(self, speech, num_frames: int | None = None, feature_source=None) -> AudioFeatures:
        """The landmark checkpoint's speech features for ``speech`` (path, array or :class:`Speech`)."""
        sp = load_speech(speech) if speech is not None else None
        T = num_frames if num_frames is not None else (sp.num_frames(self.fps) if sp is not None else None)
        if T is None:
            raise InputError("give the speech or the number of frames")
        feats = AudioFeatures(self.feature_kind, sp, T, self.fps, self.window, source=feature_source)
        if feats.dim != self.feature_dim or feats.window != self.window:
            raise CheckpointError(f"the landmark checkpoint expects {self.feature_kind} features of "
                                  f"{self.window} x {self.feature_dim}, but this installation computes "
                                  f"{feats.window} x {feats.dim}; use the same feature settings as in training")
        return feats

    # ------------------------------------------------------------------------------------------ G_L
    @torch.no_grad()
    def predict_landmarks(self, audio_features, emotion_vector: np.ndarray, neutral: np.ndarray,
                          batch_size: int = 512, progress: bool = False) -> np.ndarray:
        """G_L per frame. ``audio_features``: ``(T, W, D)`` array or :class:`AudioFeatures`;
        ``emotion_vector``: ``(E + I,)`` or per frame ``(T, E + I)``; ``neutral``: the face's aligned
        neutral landmarks X ``(68, 2)`` in canonical space. Returns ``(T, 68, 2)`` float32 landmarks in the
        same aligned canonical space (``X + δ``), unsmoothed."""
        if isinstance(audio_features, AudioFeatures):
            T = len(audio_features)
            get = audio_features.windows
        else:
            arr = np.asarray(audio_features, np.float32)
            if arr.ndim != 3:
                raise InputError(f"audio features must be (T, W, D), got {arr.shape}")
            T = arr.shape[0]
            get = lambda a, b: arr[a:b]  # noqa: E731
        neutral = np.asarray(neutral, np.float32)
        if neutral.shape != (68, 2):
            raise InputError(f"neutral landmarks must be (68, 2), got {neutral.shape}")
        emo = np.asarray(emotion_vector, np.float32)
        E = self.landmark_config.model.emotion_dim
        if emo.shape[-1] != E or emo.ndim not in (1, 2) or (emo.ndim == 2 and emo.shape[0] != T):
            raise InputError(f"emotion vector must be ({E},) or ({T}, {E}), got {emo.shape}")
        template = canonical_template().astype(np.float32)
        x_in = template if self.graph_input == "template" else neutral
        X = torch.from_numpy(x_in).to(self.device)
        out = np.empty((T, 68, 2), np.float32)
        bar = _progress(total=T, progress=progress, desc="landmarks", unit="frame")
        try:
            for a in range(0, T, batch_size):
                b = min(a + batch_size, T)
                w = get(a, b)
                if w.shape[1:] != (self.window, self.feature_dim):
                    raise InputError(f"audio features are {w.shape[1]} x {w.shape[2]} per frame but the "
                                     f"landmark model expects {self.window} x {self.feature_dim}")
                audio = torch.from_numpy(np.ascontiguousarray(w, np.float32)).to(self.device)
                e = emo[None].repeat(b - a, 0) if emo.ndim == 1 else emo[a:b]
                pred = self.G_L(audio, torch.from_numpy(np.ascontiguousarray(e)).to(self.device),
                                X[None].expand(b - a, -1, -1))["landmarks"]
                out[a:b] = pred.float().cpu().numpy()
                bar.update(b - a)
        finally:
            bar.close()
        if self.graph_input == "template":  # G_L moved the template: put that motion on this face
            out = neutral[None] + (out - template[None])
        return out

    def animate(self, landmarks: np.ndarray, blink: bool = True, seed: int = 0, smooth_window: int = 5
                ) -> tuple[np.ndarray, np.ndarray]:
        """Temporal smoothing then spontaneous blinks: ``(landmarks (T, 68, 2), blink closure (T,))``."""
        lm = smooth_landmarks(landmarks, smooth_window)
        if blink:
            return add_blinks(lm, self.fps, seed)
        return lm, np.zeros(len(lm), np.float32)

    # ------------------------------------------------------------------------------------------ G_T
    def make_renderer(self, photo: Photo, renderer: str = "neural", emotion: str | Mapping = "neutral",
                      intensity: float = 1, finetune_steps: int = 5, background: bool = True,
                      progress: bool = False):
        """``(renderer, person alpha or None, training background rgb or None)`` for one photo."""
        if renderer == "warp":
            return WarpRenderer(photo), None, None
        if renderer != "neural":
            raise InputError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
        if self.G_T is None:
            raise CheckpointError("the neural renderer needs a texture (G_T) checkpoint; load one or use "
                                  "renderer='warp'")
        from emotalk.data.face.background import person_mask, training_background

        alpha = rgb = None
        if background:
            alpha = person_mask(photo.crop, photo.crop_landmarks)
            rgb, _ = training_background(self.texture_meta)
        vec = self.texture_emotion(emotion, intensity)
        r = NeuralRenderer(self.G_T, photo, vec, self.device, finetune_steps, rgb, alpha, progress)
        return r, alpha, rgb

    def render_frames(self, photo: Photo, landmarks: np.ndarray, emotion: str | Mapping = "neutral",
                      intensity: float = 1, renderer: str = "neural", finetune_steps: int = 5,
                      background: bool = True, batch_size: int | None = None, paste: bool = True,
                      progress: bool = False, prepared=None) -> Iterator[np.ndarray]:
        """Yield one RGB uint8 frame per landmark frame: the full photo (``paste=True``) or the
        ``crop_size`` face crop with the photo's own background (``paste=False``). ``landmarks``:
        ``(T, 68, 2)`` in the photo's aligned canonical space (from :meth:`predict_landmarks` /
        :meth:`animate`). ``prepared``: a :meth:`make_renderer` result to reuse."""
        from emotalk.data.face.background import restore_background

        r, alpha, _ = prepared if prepared is not None else self.make_renderer(
            photo, renderer, emotion, intensity, finetune_steps, background, progress)
        comp = Compositor(photo, alpha) if paste else None
        bs = int(batch_size or (_default_batch(self.device) if r.name == "neural" else 16))
        lm = np.asarray(landmarks, np.float32)
        for a in range(0, len(lm), bs):
            crop_lm = photo.aligned_to_crop(lm[a:a + bs])
            for crop in r(crop_lm):
                if comp is not None:
                    yield comp(crop)
                else:
                    yield crop if alpha is None else restore_background(crop, photo.crop, alpha)

    # ------------------------------------------------------------------------------------------ all
    def generate(self, image, audio, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1,
                 out: str | Path = "out.mp4", finetune_steps: int = 5, blink: bool = True,
                 renderer: str = "neural", size: int = 256, batch_size: int | None = None, seed: int = 0,
                 background: bool = True, progress: bool = True, feature_source=None) -> GenerateResult:
        """Photo + speech + emotion -> ``out`` (H.264 + AAC mp4, the photo's size, ``fps`` of the landmark
        checkpoint). ``emotion``: a vocabulary name (``"happy"``), a blend (``"happy:0.7,surprised:0.3"``
        or a mapping); ``intensity``: 1 .. levels, fractions allowed. ``size``: the face crop's resolution
        in pixels (G_T's output is brought to it before paste-back). ``batch_size``: G_T frames per
        forward. ``feature_source``: precomputed features for backends that need them (DeepSpeech)."""
        from emotalk.data.io.media import VideoWriter, write_wav

        t_start = time.perf_counter()
        seconds: dict[str, float] = {}
        warn: list[str] = []

        def tick(stage: str, t0: float) -> float:
            t = time.perf_counter()
            seconds[stage] = round(t - t0, 4)
            return t

        # --- cheap checks first: nothing is computed or written for bad arguments --------------------
        if renderer not in RENDERERS:
            raise InputError(f"unknown renderer {renderer!r}; choose one of: {', '.join(RENDERERS)}")
        if not isinstance(size, (int, np.integer)) or size < 64 or size % 2:
            raise InputError(f"size must be an even number of pixels >= 64, got {size}")
        if finetune_steps is None or int(finetune_steps) < 0:
            raise InputError(f"finetune_steps must be >= 0, got {finetune_steps}")
        if batch_size is not None and int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        out = check_output_path(out)
        weights = parse_emotion(emotion, self.emotions)
        emo_l = self.landmark_emotion(emotion, intensity)
        if renderer == "neural":
            if self.G_T is None:
                raise CheckpointError("the neural renderer needs a texture (G_T) checkpoint; pass one or use "
                                      "--renderer warp")
            self.texture_emotion(emotion, intensity)

        t = time.perf_counter()
        photo = self.prepare_photo(image, size)
        for w in photo.warnings:
            _warn(warn, w)
        t = tick("photo", t)
        speech = load_speech(audio)
        T = speech.num_frames(self.fps)
        has_speech = speech.has_speech()
        if not has_speech:
            _warn(warn, "no speech found in the audio (it is silent); the video shows a still face with "
                        "the emotion")
        t = tick("audio", t)
        feats = self.audio_features(speech, T, feature_source)
        t = tick("features", t)
        raw = self.predict_landmarks(feats, emo_l, photo.aligned, progress=progress)
        del feats
        landmarks, closure = self.animate(raw, blink=blink, seed=seed)
        del raw
        t = tick("landmarks", t)
        prepared = self.make_renderer(photo, renderer, emotion, intensity, finetune_steps, background, progress)
        t = tick("finetune", t)

        with tempfile.TemporaryDirectory(prefix="emotalk-") as tmp:
            # the muxed track is the decoded 16 kHz speech padded/trimmed to exactly T frames, so that
            # ffmpeg's -shortest keeps every video frame
            audio_path = Path(tmp) / "speech.wav"
            n = int(round(T / self.fps * speech.sample_rate))
            track = np.zeros(n, np.float32)
            track[:min(n, len(speech.samples))] = speech.samples[:n]
            write_wav(audio_path, track, speech.sample_rate)
            del track, speech
            frames = self.render_frames(photo, landmarks, emotion, intensity, renderer, finetune_steps,
                                        background, batch_size, paste=True, progress=progress,
                                        prepared=prepared)
            bar = _progress(total=T, progress=progress, desc="render", unit="frame")
            try:
                with VideoWriter(out, self.fps, audio=audio_path) as writer:
                    for frame in frames:
                        writer.write(frame)
                        bar.update(1)
            finally:
                bar.close()
                frames.close()
        tick("render", t)
        seconds["total"] = round(time.perf_counter() - t_start, 4)
        return GenerateResult(path=out, frames=T, fps=self.fps, size=photo.size, seconds=seconds, warnings=warn,
                              landmarks=landmarks, blinks=closure, emotion=weights, intensity=float(intensity),
                              renderer=renderer, speech=has_speech,
                              background_rgb=tuple(prepared[2]) if prepared[2] is not None else None)
