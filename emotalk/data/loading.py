"""The one place where a model is built from its config and from a checkpoint.

Training builds its networks with :func:`build_model`; inference, one-shot fine-tuning and evaluation
rebuild them with :func:`load_model`, which resolves a checkpoint (run folder, checkpoints folder,
``.json`` or ``.safetensors``), reads it (:mod:`emotalk.data.io.checkpoint`), parses only the saved
config's ``model`` section into the model's own config dataclass, builds the network with the same
:func:`build_model` and loads the weights strictly. Construction therefore cannot drift between the
training and the using side, and nothing here needs the training code (no import of ``emotalk.train``):
the full training config stays a plain dict in :attr:`CheckpointMeta.config`.

:func:`save_model` writes a model back as an ordinary checkpoint (e.g. a one-shot adapted G_T), with its
model config written into the saved config's ``model`` section, so every model setting (``prior_flow``,
``flow_mode``, ...) survives the round trip.

Kinds and the checkpoint module each one lives under::

    landmark   G_L   LandmarkGenerator  (model/generator/...)   needs the 68-point face graph adjacency
    texture    G_T   TextureGenerator   (model/generator/...)
    emotion    the emotion classifier EmotionCNN (model/classifier/...); its classes are the checkpoint's
               ``emotions`` (the training config's ``data.emotions``)
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from emotalk.config import from_dict, plain
from emotalk.data.io.checkpoint import (check_config_fits_weights, load_checkpoint, module_state,
                                      resolve_checkpoint, save_checkpoint)
from emotalk.errors import CheckpointError, ConfigError, MissingWeightsError
from emotalk.models.emotion_classifier import EmotionCNN, EmotionModelConfig
from emotalk.models.landmark_emotion import LandmarkEmotionMLP, LandmarkEmotionModelConfig
from emotalk.models.face_graph import adjacency_matrix
from emotalk.models.landmark_generator import LandmarkGenerator, LandmarkModelConfig
from emotalk.models.losses.perceptual_loss import (PERCEPTUAL_CHOICES, RANDOM_VGG_SEED, VGG16_FILE, PerceptualLoss,
                                                   random_vgg16_features, vgg16_features_from_state)
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig
from emotalk.utils.weights import load_state_strict

#: kind -> (model-config dataclass, checkpoint module name).
MODEL_KINDS: dict[str, tuple[type, str]] = {
    "landmark": (LandmarkModelConfig, "generator"),
    "texture": (TextureModelConfig, "generator"),
    "emotion": (EmotionModelConfig, "classifier"),
    "landmark_emotion": (LandmarkEmotionModelConfig, "classifier"),  # Emo-Acc-LM (issue 12)
}

#: Metadata keys that only make sense for resuming a training run; :func:`save_model` leaves them out
#: (a saved model is weights plus facts, not a resumable optimiser state).
TRAINING_STATE_KEYS = ("optimizers", "rng", "grad_scaler", "world_size")

#: Keys written by :func:`emotalk.data.io.checkpoint.save_checkpoint` itself.
_FORMAT_KEYS = ("format_version", "weights", "path")


def _rgb_or_none(v: Any) -> tuple[int, int, int] | None:
    """Three 0..255 integers, or None for anything else (old or hand-edited metadata)."""
    try:
        t = tuple(int(round(float(x))) for x in v)
    except (TypeError, ValueError):
        return None
    if len(t) != 3 or min(t) < 0 or max(t) > 255:
        return None
    return t  # type: ignore[return-value]


def _opt(v: Any, cast: Callable[[Any], Any]) -> Any:
    if v is None:
        return None
    try:
        return cast(v)
    except (TypeError, ValueError):
        return None


@dataclass
class CheckpointMeta:
    """Typed view of a checkpoint's JSON metadata (see :mod:`emotalk.data.io.checkpoint`).

    Fields the code relies on are typed; everything else a task or tool stored (``one_shot`` record,
    ``flow_mode``, ``image_size``, optimiser state, ...) stays in :attr:`extra` and is written back
    unchanged by :meth:`to_json`.
    """

    kind: str  # "landmark" | "texture" | "emotion" (+ any future kind)
    step: int
    config: dict  # the resolved training config as saved (plain dict; parse sections as needed)
    path: Path | None = None  # the JSON file it was read from
    feature_kind: str | None = None
    feature_dim: int | None = None
    window: int | None = None
    fps: float | None = None
    #: the training data's backdrop colour (dataset manifest, else estimated at training start)
    background_rgb: tuple[int, int, int] | None = None
    train_subjects: tuple[str, ...] = ()
    val_subjects: tuple[str, ...] = ()
    #: the classifier's classes, in output order (emotion checkpoints)
    emotions: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict, path: str | Path | None = None) -> "CheckpointMeta":
        if not isinstance(d, dict) or "kind" not in d:
            raise CheckpointError(f"{path or 'checkpoint'}: not an emotalk checkpoint (no 'kind' in its metadata)")
        config = d.get("config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path or 'checkpoint'}: its metadata has no saved config; "
                                  f"it was not written by emotalk's trainer, use another checkpoint")
        subjects = d.get("subjects") if isinstance(d.get("subjects"), dict) else {}
        known = {"kind", "step", "config", "feature_kind", "feature_dim", "window", "fps", "background_rgb",
                 "subjects", "emotions", *_FORMAT_KEYS}
        if path is None and d.get("path"):
            path = d["path"]
        return cls(kind=str(d["kind"]), step=int(d.get("step", 0) or 0), config=config,
                   path=Path(path) if path is not None else None,
                   feature_kind=_opt(d.get("feature_kind"), str), feature_dim=_opt(d.get("feature_dim"), int),
                   window=_opt(d.get("window"), int), fps=_opt(d.get("fps"), float),
                   background_rgb=_rgb_or_none(d.get("background_rgb")),
                   train_subjects=tuple(str(s) for s in subjects.get("train", ()) or ()),
                   val_subjects=tuple(str(s) for s in subjects.get("val", ()) or ()),
                   emotions=tuple(str(e) for e in d.get("emotions", ()) or ()),
                   extra={k: v for k, v in d.items() if k not in known})

    def to_json(self) -> dict:
        """The metadata dict as stored in a checkpoint's JSON (without the file-format keys)."""
        out: dict[str, Any] = {"kind": self.kind, "step": int(self.step), "config": self.config}
        for name in ("feature_kind", "feature_dim", "window", "fps"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.background_rgb is not None:
            out["background_rgb"] = [int(v) for v in self.background_rgb]
        if self.train_subjects or self.val_subjects:
            out["subjects"] = {"train": list(self.train_subjects), "val": list(self.val_subjects)}
        if self.emotions:
            out["emotions"] = list(self.emotions)
        out.update({k: v for k, v in self.extra.items() if k not in out and k not in _FORMAT_KEYS})
        return out


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint: the network (eval mode, on the requested device), its typed
    model config and the checkpoint's metadata."""

    module: torch.nn.Module
    model_config: Any
    meta: CheckpointMeta


def _check_kind(kind: str) -> tuple[type, str]:
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; known kinds: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind]


def build_model(kind: str, model_config: Any, *, num_classes: int | None = None) -> torch.nn.Module:
    """The one constructor of emotalk's networks from their model config (freshly initialised).

    ``num_classes`` is needed only for ``emotion`` (the length of the class list).
    """
    cfg_cls, _ = _check_kind(kind)
    if not isinstance(model_config, cfg_cls):
        raise TypeError(f"build_model({kind!r}) needs a {cfg_cls.__name__}, got {type(model_config).__name__}")
    if kind == "landmark":
        return LandmarkGenerator.from_config(model_config, adjacency_matrix())
    if kind == "texture":
        return TextureGenerator(model_config)
    if kind == "landmark_emotion":
        if num_classes is None or num_classes < 2:
            raise ValueError(f"build_model('landmark_emotion') needs num_classes >= 2, got {num_classes}")
        return LandmarkEmotionMLP.from_config(model_config, num_classes)
    if num_classes is None or num_classes < 2:
        raise ValueError(f"build_model('emotion') needs num_classes >= 2, got {num_classes}")
    return EmotionCNN.from_config(model_config, num_classes)


def parse_model_config(kind: str, meta: CheckpointMeta) -> Any:
    """The saved config's ``model`` section as ``kind``'s model-config dataclass (CheckpointError if it
    cannot be used)."""
    cfg_cls, _ = _check_kind(kind)
    section = meta.config.get("model", {})
    if not isinstance(section, dict):
        raise CheckpointError(f"{meta.path}: the saved config's 'model' section is not a mapping; "
                              f"the checkpoint is damaged, use another one")
    try:
        return from_dict(cfg_cls, dict(section), prefix="model.")
    except ConfigError as e:
        raise CheckpointError(f"{meta.path}: the {kind} checkpoint's saved model config is unusable ({e}); "
                              f"it was probably written by another emotalk version, retrain or use another "
                              f"checkpoint") from None


def _emotion_classes(meta: CheckpointMeta) -> tuple[str, ...]:
    if meta.emotions:
        return meta.emotions
    data = meta.config.get("data") if isinstance(meta.config.get("data"), dict) else {}
    classes = tuple(str(e) for e in data.get("emotions", ()) or ())
    if len(classes) < 2:
        raise CheckpointError(f"{meta.path}: the emotion checkpoint names no classes (no 'emotions' in its "
                              f"metadata or data.emotions in its config); retrain the classifier")
    return classes


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """A checkpoint's metadata only (run folder, checkpoints folder or file; no weights read): what the
    evaluation's leak guard needs (``train_subjects`` / ``val_subjects`` recorded by every training task)."""
    json_path = resolve_checkpoint(path)
    try:
        raw = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{json_path}: corrupt checkpoint metadata ({e}); use another checkpoint") from None
    return CheckpointMeta.from_json(raw, json_path)


def load_model(path: str | Path, kind: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Resolve and read a ``kind`` checkpoint, rebuild its network with :func:`build_model` and load the
    weights strictly. A checkpoint of another kind, a damaged file or a config that no longer builds
    raise :class:`~emotalk.errors.CheckpointError`."""
    _, module_name = _check_kind(kind)
    tensors, raw = load_checkpoint(path, kind=kind, prefixes=(f"model/{module_name}/",))
    meta = CheckpointMeta.from_json(raw, raw.get("path"))
    check_config_fits_weights(meta.config.get("model"), tensors, str(meta.path))  # before allocating anything
    model_config = parse_model_config(kind, meta)
    extra = {}
    if kind in ("emotion", "landmark_emotion"):
        meta.emotions = _emotion_classes(meta)
        extra["num_classes"] = len(meta.emotions)
    try:
        module = build_model(kind, model_config, **extra)
    except (ValueError, ConfigError) as e:
        raise CheckpointError(f"{meta.path}: cannot build the {kind} model from its saved config ({e}); "
                              f"use another checkpoint") from None
    load_state_strict(module, module_state(tensors, module_name),
                      f"{meta.path}: weights for {module_name!r} do not fit the {kind} model built from its "
                      f"saved config", "was it written by another version or with other model settings?")
    return LoadedModel(module.to(device).eval(), model_config, meta)


def save_model(stem: str | Path, module: torch.nn.Module, kind: str, model_config: Any, meta: CheckpointMeta,
               tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``module`` as a ``kind`` checkpoint ``<stem>.safetensors`` + ``<stem>.json``; returns the JSON.

    The metadata is ``meta`` with its config's ``model`` section replaced by ``model_config`` (so every
    model setting is kept) and without training-resume state. ``tensors`` adds extra entries (e.g. the
    ``identity/...`` crop of a one-shot adapted G_T).
    """
    cfg_cls, module_name = _check_kind(kind)
    if not isinstance(model_config, cfg_cls):
        raise TypeError(f"save_model({kind!r}) needs a {cfg_cls.__name__}, got {type(model_config).__name__}")
    out = {f"model/{module_name}/{k}": v for k, v in module.state_dict().items()}
    for k, v in (tensors or {}).items():
        if k.startswith("model/"):
            raise ValueError(f"extra tensor {k!r} would overwrite model weights")
        out[k] = v
    config = dict(meta.config)
    config["model"] = plain(dataclasses.asdict(model_config))
    saved = dataclasses.replace(meta, kind=kind, config=config,
                                extra={k: v for k, v in meta.extra.items() if k not in TRAINING_STATE_KEYS})
    return save_checkpoint(Path(stem), out, saved.to_json())




# --- the perceptual loss's ImageNet VGG16 (eq. 7): finding and reading the weights file -----------------

def vgg16_cache_path() -> Path:
    """Where torchvision would have cached the ImageNet VGG16 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def _missing_vgg16(configured: str | None) -> str:
    cache = vgg16_cache_path()
    where = (f"the file loss.vgg16_weights={configured} does not exist" if configured else
             f"loss.vgg16_weights is not set and torchvision's cache has no {cache}")
    return (f"VGG16 ImageNet weights for the perceptual loss (eq. 7) are missing: {where}. Copy torchvision's "
            f"{VGG16_FILE} (the state dict behind torchvision.models.vgg16(weights='IMAGENET1K_V1')) to "
            f"{cache} or anywhere and set loss.vgg16_weights=/path/to/{VGG16_FILE}; nothing is downloaded. "
            f"Or choose a documented alternative explicitly: loss.perceptual=vgg16-random (fixed random "
            f"VGG16 features, weaker) or loss.perceptual=none")


def resolve_vgg16_weights(path: str | Path | None) -> Path:
    """The weights file to use: ``path`` if given (must exist), else torchvision's cache, else an error."""
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise MissingWeightsError(_missing_vgg16(str(path)))
    cache = vgg16_cache_path()
    if cache.is_file():
        return cache
    raise MissingWeightsError(_missing_vgg16(None))


def read_vgg16_state(path: str | Path) -> dict:
    """torchvision's VGG16 state dict from ``path`` (``weights_only``; memory-mapped when possible)."""
    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise MissingWeightsError(f"{path}: cannot read VGG16 weights ({type(e).__name__}: {e}); supply "
                                  f"torchvision's {VGG16_FILE} via loss.vgg16_weights") from None
    if not isinstance(state, dict):
        raise MissingWeightsError(f"{path}: not a state dict; supply torchvision's {VGG16_FILE} via "
                                  f"loss.vgg16_weights")
    return state


def build_perceptual_loss(kind: str = "vgg16", weights: str | Path | None = None,
                          layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                          warn: bool = True) -> tuple[PerceptualLoss | None, str]:
    """Build the eq. (7) loss for ``loss.perceptual`` = ``kind``; returns (module or None, description).

    Raises :class:`MissingWeightsError` for ``vgg16`` without weights. The description names the choice;
    non-paper choices are also emitted as a ``UserWarning`` unless ``warn=False``.
    """
    if kind == "vgg16":
        path = resolve_vgg16_weights(weights)
        desc = f"perceptual loss: VGG16 ImageNet weights from {path}"
        features = vgg16_features_from_state(read_vgg16_state(path), str(path))
        return PerceptualLoss(features, layer_weights, desc), desc
    if kind == "vgg16-random":
        desc = (f"perceptual loss: vgg16-random (fixed randomly-initialised VGG16, seed {RANDOM_VGG_SEED}; "
                f"weaker than the paper's ImageNet VGG16, chosen explicitly by loss.perceptual)")
        if warn:
            warnings.warn(desc, stacklevel=2)
        return PerceptualLoss(random_vgg16_features(), layer_weights, desc), desc
    if kind == "none":
        desc = "perceptual loss: none (eq. 7 disabled by loss.perceptual=none; lambda_per ignored)"
        if warn:
            warnings.warn(desc, stacklevel=2)
        return None, desc
    raise ConfigError(f"loss.perceptual={kind!r} is not one of {', '.join(PERCEPTUAL_CHOICES)}")
