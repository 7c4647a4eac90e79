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

Expensive intermediate results (dlib landmarks of a video, face embeddings, SyncNet scores) live in the
sample's typed :class:`~emotalk.eval.feature_store.FeatureStore` (``sample.features``), keyed by
``(Side, Feature, params)``, so ``m_ld`` and ``f_lvd`` detect landmarks once. Networks come from the one
cached getter :func:`emotalk.eval.detectors.get_feature_detector`.

Like stylegan3's ``metric_main``: :func:`get_metric`, :func:`list_metrics`, :func:`compute_metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from emotalk.errors import ConfigError, DataError, MissingWeightsError
from emotalk.eval.sample import INPUTS, MetricOptions, VideoSample

__all__ = ["INPUTS", "MetricFn", "MetricOptions", "MetricResult", "MetricSpec", "VideoSample", "check_inputs",
           "compute_metric", "compute_metrics", "get_metric", "list_metrics", "register_metric",
           "require_weights"]


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
    #: which samples it reads: "clips" (the test clips, the default) or "grid" (the emotion grid: one photo and
    #: speech rendered in every emotion and intensity, :mod:`emotalk.eval.emotion_grid`)
    on: str = "clips"


_REGISTRY: dict[str, MetricSpec] = {}
SAMPLE_SETS = ("clips", "grid")


def register_metric(name: str, *, display: str, needs: Sequence[str] = ("generated",),
                    weights: str | None = None, higher_is_better: bool = True,
                    on: str = "clips") -> Callable[[MetricFn], MetricFn]:
    """Decorator: register ``fn(samples, opts) -> MetricResult`` under ``name``."""
    bad = [n for n in needs if n not in INPUTS]
    if bad:
        raise ValueError(f"metric {name!r}: unknown inputs {bad}; choose from {INPUTS}")
    if on not in SAMPLE_SETS:
        raise ValueError(f"metric {name!r}: on={on!r}; choose from {SAMPLE_SETS}")

    def deco(fn: MetricFn) -> MetricFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"metric {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = MetricSpec(name, display, fn, tuple(needs), weights, higher_is_better,
                                     doc[0] if doc else "", on)
        return fn

    return deco


def list_metrics() -> list[str]:
    """Registered metric names (the metric modules register themselves when :mod:`emotalk.eval.metrics`
    is imported)."""
    return sorted(_REGISTRY)


def get_metric(name: str) -> MetricSpec:
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
