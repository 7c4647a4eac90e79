"""One pipeline for all of the demo's model stages, with each face prepared once.

Why: the demo renders the same few faces again and again - the held-out subject in five emotions, a blend
and the warp baseline (``generate``), in every emotion x level (``emotions``), then on its test clip and
its emotion grid (``evaluate``); the public-domain photo twice. Through the plain :class:`Pipeline` every
one of those calls prepares the photo again (dlib on the photo), computes the same speech features again,
cuts the person out again (GrabCut) and fine-tunes a fresh copy of G_T on it again (one-shot): the held-out
subject was fine-tuned nine times with identical results (one-shot learning is deterministic and does not
depend on the emotion, which G_T receives per frame).

:class:`SharedPipeline` is a :class:`Pipeline` that remembers, for the lifetime of one demo run,

- prepared photos, by input (a file by path, size and modification time; an array by its bytes);
- speech features, by the audio samples, frame count and rate;
- G_L's landmarks, by the speech windows, the emotion control vector(s) and the face's neutral landmarks:
  the evaluation's emotion grid asks for the same 36 conditions of the same clip once for the neural and
  once for the warp row, and its test clips once per row (G_L is deterministic in eval mode);
- prepared renderers, by the face crop and its landmarks (so the same face reached through a PNG file and
  through the decoded array shares one), the renderer, the fine-tuning steps and the background switch.
  A renderer asked for again with another default emotion is handed out as a shallow copy with that
  emotion: the fine-tuned weights, the encoded identity and the measured batch size are shared.

Everything it returns is what :class:`Pipeline` would have computed (``tests/test_demo.py`` checks the
frames against the plain pipeline); :attr:`SharedPipeline.counts` records hits and misses so the demo can
log how much work was saved.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from emotalk.inference import Controls, Pipeline, PreparedRenderer
from emotalk.inference.landmarks import DEFAULT_BATCH
from emotalk.inference.photo import Photo

log = logging.getLogger(__name__)


def array_key(a: Any) -> Hashable:
    """A content key of an array (dtype, shape and a digest of its bytes): equal arrays, equal keys."""
    a = np.ascontiguousarray(a)
    return (str(a.dtype), a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest())


def _input_key(image: Any) -> Hashable | None:
    """The key of a photo input: a file by its resolved path, size and modification time, an array by its
    contents; None (not cached) for anything else."""
    if isinstance(image, (str, Path)):
        p = Path(image)
        try:
            st = p.stat()
        except OSError:
            return None  # let the pipeline raise its own error
        return ("file", str(p.resolve()), st.st_size, st.st_mtime_ns)
    if isinstance(image, np.ndarray):
        return ("array", array_key(image))
    return None


class SharedPipeline(Pipeline):
    """:class:`Pipeline` with per-run caches of photos, speech features and prepared renderers (see the
    module docstring). Use one per demo run: the caches live as long as the object."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._photos: dict[Hashable, Photo] = {}
        self._features: dict[Hashable, Any] = {}
        self._renderers: dict[Hashable, PreparedRenderer] = {}
        self._landmarks: dict[Hashable, np.ndarray] = {}
        self.counts: Counter = Counter()

    def prepare_photo(self, image, size: int = 256) -> Photo:
        key = _input_key(image)
        if key is None:
            return super().prepare_photo(image, size)
        key = (key, int(size))
        if key in self._photos:
            self.counts["photo hit"] += 1
        else:
            self.counts["photo miss"] += 1
            self._photos[key] = super().prepare_photo(image, size)
        return self._photos[key]

    def audio_features(self, speech, num_frames: int | None = None, feature_source=None, fps: float | None = None):
        samples = getattr(speech, "samples", None)
        if feature_source is not None or not isinstance(samples, np.ndarray):
            return super().audio_features(speech, num_frames, feature_source, fps)
        key = (array_key(samples), int(getattr(speech, "sample_rate", 0)), num_frames, fps)
        if key in self._features:
            self.counts["features hit"] += 1
        else:
            self.counts["features miss"] += 1
            self._features[key] = super().audio_features(speech, num_frames, feature_source, fps)
        return self._features[key]

    def predict_landmarks(self, audio_features, emotion_vector: np.ndarray, neutral: np.ndarray,
                          batch_size: int = DEFAULT_BATCH, progress: bool = False) -> np.ndarray:
        if not isinstance(audio_features, np.ndarray):  # streamed features: not cached
            return super().predict_landmarks(audio_features, emotion_vector, neutral, batch_size, progress)
        key = (array_key(audio_features), array_key(np.asarray(emotion_vector, np.float32)),
               array_key(np.asarray(neutral, np.float32)), int(batch_size))
        if key in self._landmarks:
            self.counts["landmarks hit"] += 1
        else:
            self.counts["landmarks miss"] += 1
            self._landmarks[key] = super().predict_landmarks(audio_features, emotion_vector, neutral, batch_size,
                                                             progress)
        return self._landmarks[key].copy()  # callers own what they get

    def prepare_renderer(self, photo: Photo, renderer: str, controls: Controls, finetune_steps: int = 5,
                         background: bool = True, progress: bool = False) -> PreparedRenderer:
        key = (array_key(photo.crop), array_key(np.asarray(photo.crop_landmarks, np.float32)), str(renderer),
               int(finetune_steps or 0), bool(background))
        prepared = self._renderers.get(key)
        if prepared is None:
            self.counts[f"{renderer} renderer miss"] += 1
            prepared = super().prepare_renderer(photo, renderer, controls, finetune_steps, background, progress)
            self._renderers[key] = prepared
            return prepared
        self.counts[f"{renderer} renderer hit"] += 1
        return _with_default_emotion(prepared, controls.texture)

    def cache_summary(self) -> str:
        """One line: what was prepared once and reused (for the demo's log)."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nothing cached"


def _with_default_emotion(prepared: PreparedRenderer, texture: np.ndarray | None) -> PreparedRenderer:
    """``prepared`` whose renderer draws ``texture`` (G_T's control vector, or one per frame: the first is
    the default, as :meth:`Pipeline.prepare_renderer` takes it) when a call gives none. A shallow copy: the
    fine-tuned generator, the encoded identity and the batch tuner are shared, only the default differs."""
    r = prepared.renderer
    if texture is None or not isinstance(getattr(r, "emotion", None), torch.Tensor):
        return prepared  # the warp renderer has no emotion of its own
    e = np.asarray(texture, np.float32)
    e = e if e.ndim == 1 else e[0]
    r2 = copy.copy(r)
    r2.emotion = torch.from_numpy(np.ascontiguousarray(e.reshape(1, -1))).to(r.emotion.device)
    return dataclasses.replace(prepared, renderer=r2)
