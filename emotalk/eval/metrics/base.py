"""The metric registry and the common input every metric reads.

Every metric is one function ``fn(samples, opts) -> MetricResult`` registered under a short name::

    @register_metric("psnr", display="PSNR", needs=("generated", "ground_truth"))
    def psnr_metric(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult: ...

- ``samples`` is the evaluated set: one :class:`VideoSample` per generated video (frames plus whatever
  references the metric needs: ground-truth frames, the identity photo, the driving audio, the target
  emotion). Dataset-level metrics (FID) need the whole set at once, which is why a metric sees all samples.
- ``opts`` (:class:`MetricOptions`) holds the user's settings: local paths of third-party weights, device,
  batch size. It is a plain dataclass so an evaluation config can embed it as its ``metrics:`` section;
  error messages name its fields as ``metrics.<field>``.
- The result's ``value`` is reported under ``display`` (the table column); ``details`` carries JSON-able
  extras (per-video values, counts of skipped frames, offsets).

Expensive intermediate results (dlib landmarks of a video, SyncNet embeddings) are cached on the sample
(``sample.cache``), so ``m_ld`` and ``f_lvd`` detect landmarks once.

Like stylegan3's ``metric_main``: :func:`get_metric`, :func:`list_metrics`, :func:`compute_metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from emotalk.errors import ConfigError, DataError, MissingWeightsError

#: inputs a metric may need from a VideoSample
INPUTS = ("generated", "ground_truth", "identity", "audio", "emotion")


@dataclass
class VideoSample:
    """One generated video and the references it is measured against.

    Frames are RGB uint8 ``(T, H, W, 3)``, the crops the generator outputs (the processed dataset's face
    crops for ground truth). Landmarks are ``(T, 68, 2)`` pixel coordinates in those frames (NaN rows
    where no face was found); when ``None`` they are detected with dlib on first use and cached.
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
    cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.generated = _as_frames(self.generated, f"{self.name or 'sample'}: generated")
        if self.ground_truth is not None:
            self.ground_truth = _as_frames(self.ground_truth, f"{self.name or 'sample'}: ground_truth")
        if self.identity is not None:
            ident = np.asarray(self.identity)
            if ident.ndim != 3 or ident.shape[2] != 3:
                raise DataError(f"{self.name or 'sample'}: identity must be an (H, W, 3) RGB image, "
                                f"got shape {ident.shape}")
            self.identity = _to_uint8(ident)
        if not (self.fps > 0):
            raise DataError(f"{self.name or 'sample'}: fps must be positive, got {self.fps}")

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
    #: video-level decision from per-frame predictions: average the probabilities, or majority vote
    emotion_vote: Literal["mean", "majority"] = "mean"
    #: per-frame PSNR ceiling in dB (identical frames have infinite PSNR); None = no cap
    psnr_cap: float | None = None
    landmark_upsample: int = 1  # dlib detector upsampling (helps with small faces)
    #: score every k-th frame in the per-frame embedding metrics (FID, FID-dlib, CSIM, CSIM-dlib);
    #: 1 = every frame, as in the paper. The CPU demo uses 4: dlib's embedding costs ~60 ms a frame there
    embedding_stride: int = 1

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("metrics.batch_size must be >= 1")
        if self.embedding_stride < 1:
            raise ConfigError("metrics.embedding_stride must be >= 1 (1 = every frame)")
        if self.sync_vshift < 1:
            raise ConfigError("metrics.sync_vshift must be >= 1")

    def torch_device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"metrics.device={self.device!r} but CUDA is not available; use auto or cpu")
        return dev


@dataclass
class MetricResult:
    name: str  # the display name (table column), e.g. "FID-dlib"
    value: float
    details: dict = field(default_factory=dict)


MetricFn = Callable[[Sequence[VideoSample], MetricOptions], MetricResult]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # registry key, e.g. "fid_dlib"
    display: str  # reported name, e.g. "FID-dlib"
    fn: MetricFn
    needs: tuple[str, ...]  # VideoSample inputs that must be present
    weights: str | None  # the MetricOptions field that must point at third-party weights, if any
    higher_is_better: bool
    description: str


_REGISTRY: dict[str, MetricSpec] = {}


def register_metric(name: str, *, display: str, needs: Sequence[str] = ("generated",),
                    weights: str | None = None, higher_is_better: bool = True) -> Callable[[MetricFn], MetricFn]:
    """Decorator: register ``fn(samples, opts) -> MetricResult`` under ``name``."""
    bad = [n for n in needs if n not in INPUTS]
    if bad:
        raise ValueError(f"metric {name!r}: unknown inputs {bad}; choose from {INPUTS}")

    def deco(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MetricSpec(name, display, fn, tuple(needs), weights, higher_is_better,
                                     doc[0] if doc else "")
        return fn

    return deco


def _load_all() -> None:
    # importing the modules registers their metrics
    from emotalk.eval.metrics import (emotion, fid, identity, image_quality,  # noqa: F401
                                      landmark_distance, sync)


def list_metrics() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricSpec:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown metric {name!r}; choose from: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def check_inputs(spec: MetricSpec, samples: Sequence[VideoSample]) -> None:
    if not samples:
        raise DataError(f"metric {spec.name!r}: no videos to evaluate")
    for s in samples:
        missing = [n for n in spec.needs if not s.has(n)]
        if missing:
            raise DataError(f"metric {spec.name!r} ({spec.display}) needs {', '.join(missing)} but video "
                            f"{s.name or '?'} has none; drop the metric or supply the input")


def compute_metric(name: str, samples: Sequence[VideoSample], opts: MetricOptions | None = None) -> MetricResult:
    spec = get_metric(name)
    check_inputs(spec, samples)
    return spec.fn(samples, opts or MetricOptions())


def compute_metrics(names: Sequence[str], samples: Sequence[VideoSample],
                    opts: MetricOptions | None = None) -> dict[str, MetricResult]:
    """``{display name: result}`` for each registered ``name`` (inputs checked before any work)."""
    opts = opts or MetricOptions()
    specs = [get_metric(n) for n in names]
    for spec in specs:
        check_inputs(spec, samples)
    return {spec.display: spec.fn(samples, opts) for spec in specs}


# --- helpers shared by the metric modules ---------------------------------------------------------------

def require_weights(opts: MetricOptions, key: str, filename: str, what: str) -> Path:
    """The local weights file named by ``opts.<key>``; MissingWeightsError saying what to supply."""
    value = getattr(opts, key)
    if not value:
        raise MissingWeightsError(
            f"{what} needs the weights file {filename}, which cannot be downloaded here; download it "
            f"yourself and pass its path as metrics.{key}=PATH (config key metrics.{key})")
    path = Path(value).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"{what}: weights file {path} not found (metrics.{key}); point metrics.{key} at your local "
            f"copy of {filename}")
    return path
