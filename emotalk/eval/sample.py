"""The input every metric reads: :class:`VideoSample` (one generated video and its references, plus the
feature store where metrics keep what they measured on it) and :class:`MetricOptions` (the user's
settings: weights paths, device, batch size).

These live apart from the metric registry (:mod:`emotalk.eval.metrics.base`) so that the shared face
measurements (:mod:`emotalk.eval.face_features`) can use them without importing the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from emotalk.errors import ConfigError, DataError, InputError
from emotalk.eval.feature_store import Feature, FeatureStore, Side
from emotalk.utils.device import select_device

#: inputs a metric may need from a VideoSample
INPUTS = ("generated", "ground_truth", "identity", "audio", "emotion", "intensity", "driving_landmarks",
          "neutral_generated", "neutral_driving_landmarks", "blink")


@dataclass
class VideoSample:
    """One generated video and the references it is measured against.

    Frames are RGB uint8 ``(T, H, W, 3)``, the crops the generator outputs (the processed dataset's face
    crops for ground truth). ``generated_landmarks`` / ``ground_truth_landmarks``, when given, are
    ``(T, 68, 2)`` pixel coordinates in those frames (NaN rows where no face was found) and are put into
    ``features``; otherwise metrics detect them with dlib on first use (:mod:`emotalk.eval.face_features`).
    The sample's inputs are never modified by a metric; what metrics measure goes to ``features``.
    """

    generated: np.ndarray
    ground_truth: np.ndarray | None = None
    identity: np.ndarray | None = None  # (H, W, 3) uint8: the identity photo the video was made from
    audio: np.ndarray | None = None  # (S,) mono, float in [-1, 1] (or int16)
    sample_rate: int = 16000
    fps: float = 30.0
    emotion: str | None = None  # the target emotion (ground-truth label)
    name: str = ""
    generated_landmarks: np.ndarray | None = None
    ground_truth_landmarks: np.ndarray | None = None
    # --- what the renderer was asked to draw (the emotion-grid samples of emotalk.eval.emotion_grid) ---
    intensity: float | None = None  # the target intensity level (fractional levels allowed)
    #: (T, 68, 2) the landmarks that drove the rendering, in pixels of ``generated``
    driving_landmarks: np.ndarray | None = None
    #: the same method's rendering of the same photo and speech with the neutral emotion (T, H, W, 3) ...
    neutral_generated: np.ndarray | None = None
    neutral_driving_landmarks: np.ndarray | None = None  # ... and the landmarks that drove it
    blink: np.ndarray | None = None  # (T,) eyelid closure 0..1 inserted into the driving landmarks
    features: FeatureStore = field(default_factory=FeatureStore, repr=False)

    def __post_init__(self) -> None:
        self.generated = _as_frames(self.generated, f"{self.name or 'sample'}: generated")
        if self.ground_truth is not None:
            self.ground_truth = _as_frames(self.ground_truth, f"{self.name or 'sample'}: ground_truth")
        if self.neutral_generated is not None:
            self.neutral_generated = _as_frames(self.neutral_generated, f"{self.name or 'sample'}: neutral_generated")
        if self.identity is not None:
            ident = np.asarray(self.identity)
            if ident.ndim != 3 or ident.shape[2] != 3:
                raise DataError(f"{self.name or 'sample'}: identity must be an (H, W, 3) RGB image, "
                                f"got shape {ident.shape}")
            self.identity = _to_uint8(ident)
        if not (self.fps > 0):
            raise DataError(f"{self.name or 'sample'}: fps must be positive, got {self.fps}")
        for side, given in ((Side.GENERATED, self.generated_landmarks),
                            (Side.GROUND_TRUTH, self.ground_truth_landmarks)):
            if given is not None:
                lms = np.asarray(given, dtype=np.float64)
                if lms.ndim != 3 or lms.shape[1:] != (68, 2):
                    raise DataError(f"{self.name or 'sample'}: {side.value}_landmarks must be (T, 68, 2), "
                                    f"got {lms.shape}")
                self.features.put(side, Feature.LANDMARKS, lms)
        for what in ("driving_landmarks", "neutral_driving_landmarks"):
            v = getattr(self, what)
            if v is not None:
                v = np.asarray(v, dtype=np.float64)
                if v.ndim != 3 or v.shape[1:] != (68, 2):
                    raise DataError(f"{self.name or 'sample'}: {what} must be (T, 68, 2), got {v.shape}")
                setattr(self, what, v)

    def frames(self, side: Side) -> np.ndarray | None:
        """The frames of ``side`` (the identity photo as a one-frame video)."""
        if side == Side.IDENTITY:
            return None if self.identity is None else self.identity[None]
        return getattr(self, side.value)

    @property
    def num_frames(self) -> int:
        return int(self.generated.shape[0])

    def has(self, what: str) -> bool:
        return getattr(self, what) is not None

    def paired_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(generated, ground_truth) cut to the shorter length (generation may differ by a frame)."""
        if self.ground_truth is None:
            raise DataError(f"{self.name or 'sample'}: this metric needs ground-truth frames")
        n = min(len(self.generated), len(self.ground_truth))
        g, t = self.generated[:n], self.ground_truth[:n]
        if g.shape[1:] != t.shape[1:]:
            raise DataError(f"{self.name or 'sample'}: generated frames are {g.shape[2]}x{g.shape[1]} but "
                            f"ground-truth frames are {t.shape[2]}x{t.shape[1]}; resize one to the other")
        return g, t


def repeat_sources(*videos: np.ndarray) -> np.ndarray:
    """``(T,)`` for each frame index ``t``, the first frame of the run of identical consecutive frames it
    belongs to (in all of ``videos`` at once, e.g. generated and ground truth for a paired metric).

    Why: a per-frame measurement of a frame equal to the previous one is the previous one's (dlib, CPBD,
    the face embedding and the FER crop are deterministic), and the static-photo baseline is one frame
    repeated for a whole clip: measured once, not 80 times. Comparing two 256x256 frames costs ~0.05 ms,
    against ~10 ms for a dlib detection."""
    n = min(len(v) for v in videos) if videos else 0
    src = np.arange(n)
    for t in range(1, n):
        if all(np.array_equal(v[t], v[t - 1]) for v in videos):
            src[t] = src[t - 1]
    return src


def per_unique_frame(fn, n: int, src: np.ndarray) -> list:
    """``[fn(t) for t in range(n)]`` computing ``fn`` only on the first frame of each run in ``src``
    (:func:`repeat_sources`) and reusing its value for the run's repeats."""
    out: list = [None] * n
    for t in range(n):
        out[t] = fn(t) if src[t] == t else out[src[t]]
    return out


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    a = np.asarray(a, dtype=np.float64)
    if a.size and a.max() <= 1.0 + 1e-6:
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def _as_frames(frames, what: str) -> np.ndarray:
    a = np.asarray(frames)
    if a.ndim == 3 and a.shape[-1] == 3:  # a single frame
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] < 1:
        raise DataError(f"{what}: expected RGB frames of shape (T, H, W, 3), got {a.shape}")
    return _to_uint8(a)


@dataclass
class MetricOptions:
    """Settings shared by all metrics (an evaluation config's ``metrics:`` section)."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 32
    #: pytorch-fid's Inception weights ``pt_inception-2015-12-05-6726825d.pth`` (for "fid")
    inception_weights: str | None = None
    #: insightface arcface_torch backbone weights, e.g. ms1mv3_arcface_r100_fp16/backbone.pth (for "csim")
    arcface_weights: str | None = None
    arcface_arch: Literal["auto", "iresnet100", "iresnet50"] = "auto"
    #: syncnet_python's ``syncnet_v2.model`` (for "lse_c" / "lse_d")
    syncnet_weights: str | None = None
    #: offset search range in video frames (syncnet_python's --vshift)
    sync_vshift: int = 15
    #: our own emotion classifier: a run folder or checkpoint of ``emotalk train-emotion`` (for "emo_acc")
    emotion_classifier: str | None = None
    #: the landmark-geometry classifier of ``emotalk train-emotion --config emotion/landmark-tiny`` (a run
    #: folder or checkpoint, for "emo_acc_lm")
    landmark_emotion_classifier: str | None = None
    #: video-level decision from per-frame predictions: average the probabilities, or majority vote
    emotion_vote: Literal["mean", "majority"] = "mean"
    #: per-frame PSNR ceiling in dB (identical frames have infinite PSNR); None = no cap
    psnr_cap: float | None = None
    landmark_upsample: int = 1  # dlib detector upsampling (helps with small faces)
    #: score every k-th frame in the per-frame embedding metrics (FID, FID-dlib, CSIM, CSIM-dlib);
    #: 1 = every frame, as in the paper. The CPU demo uses 4: dlib's embedding costs ~60 ms a frame there
    embedding_stride: int = 1
    #: SSIM window: gaussian11 = Wang et al. 2004 (11x11 Gaussian, sigma 1.5, population covariances; the
    #: paper's citation) | uniform7 = scikit-image's default 7x7 uniform window with sample covariances
    ssim_window: Literal["gaussian11", "uniform7"] = "gaussian11"
    #: landmark distances (M-LD ... F-LVD) in pixels of the frames scored (the processed crops: 256x256 for the
    #: MEAD configs) | pixels256: rescaled to a 256x256 aligned crop whatever the frame size (the field's
    #: convention; equal to "pixels" at 256x256)
    landmark_units: Literal["pixels", "pixels256"] = "pixels"
    #: frame rate SyncNet sees (syncnet_python resamples every video to 25 fps; recorded in the protocol card)
    lse_fps: float = 25.0
    #: Emotion-FAN weights (a state dict of emotalk.models.emotion_fan.EmotionFAN, 8 MEAD classes) for
    #: "emo_acc_fan", the field's Acc_emo; never downloaded
    emotion_fan_weights: str | None = None
    #: the output order of those weights' classes (default: MEAD's 8 in alphabetical order)
    emotion_fan_classes: list[str] = field(default_factory=lambda: [
        "angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised"])
    #: weight keys above (e.g. [emotion_fan_weights]) whose files are stand-ins, not the real weights: the
    #: protocol card says so beside the number
    stand_in_weights: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("metrics.batch_size must be >= 1")
        if self.embedding_stride < 1:
            raise ConfigError("metrics.embedding_stride must be >= 1 (1 = every frame)")
        if self.sync_vshift < 1:
            raise ConfigError("metrics.sync_vshift must be >= 1")
        if abs(self.lse_fps - 25.0) > 1e-9:
            raise ConfigError(f"metrics.lse_fps must be 25 (SyncNet is trained on 25 fps video, as syncnet_python "
                              f"resamples), got {self.lse_fps}")

    def torch_device(self) -> torch.device:
        """``metrics.device`` through emotalk's one device selector (ConfigError naming the key)."""
        try:
            return select_device(self.device)
        except InputError as e:
            raise ConfigError(f"metrics.device: {e}") from None
