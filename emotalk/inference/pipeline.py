"""Inference: one photo + speech + emotion -> a talking-face mp4 (paper §3, Fig. 2, Fig. 5, Fig. 12).

    from emotalk import Pipeline
    pipe = Pipeline.from_checkpoints("checkpoints")          # checkpoints/landmark + checkpoints/texture
    result = pipe.generate("photo.jpg", "speech.wav", emotion="happy", intensity=2, out="out.mp4")

:meth:`Pipeline.generate` follows Fig. 2 from left to right, one module per box (each stage is timed in
``GenerateResult.seconds``):

=============  ==============================================================================================
photo          :mod:`~emotalk.inference.photo`: largest face, 68 landmarks, X = its aligned neutral
               landmarks, the face crop cut as preprocessing cuts its references
audio          :mod:`~emotalk.inference.speech`: any format -> 16 kHz mono; ``T = round(seconds * fps)``
features       :mod:`~emotalk.inference.feature_stream`: the checkpoint's speech features, one stream cut
               into per-frame windows batch by batch (the training windowing function)
landmarks      :mod:`~emotalk.inference.landmarks`: G_L per batch -> X' = X + δ, then temporal smoothing
               and spontaneous blinks
finetune       :mod:`~emotalk.inference.renderers`: background replacement, one-shot fine-tuning of a copy
               of E_T/D_T on the photo, E_T once (``renderer="warp"``: a piecewise-affine warp, no G_T)
render         G_T per batch -> face crops -> :mod:`~emotalk.inference.compositor` (paste-back onto the
               photo's own background) -> :mod:`~emotalk.inference.video` (H.264 + AAC, renamed into
               place only when complete)
=============  ==============================================================================================

The emotion enters once, as control vectors for G_L and G_T (:meth:`Pipeline.controls`, checked against
both checkpoints' vocabularies before any work); both models also take one vector per frame, which is
how emotion timelines (:mod:`~emotalk.inference.timeline`: ``emotion="0:neutral, 1.5:happy@3"`` or a
:class:`~emotalk.inference.timeline.Timeline`) and caller-made ``(T, E + I)`` arrays drive them. Memory does not grow with the audio length beyond
the per-frame landmarks (68 x 2 floats per frame).

The lower-level steps are public for evaluation: :meth:`Pipeline.prepare_photo`,
:meth:`Pipeline.audio_features`, :meth:`Pipeline.predict_landmarks`, :meth:`Pipeline.animate`,
:meth:`Pipeline.make_renderer`, :meth:`Pipeline.frames` / :meth:`Pipeline.render_frames`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Tuple, Union

import numpy as np
import torch

from emotalk.data.emotions import emotion_vector, parse_control
from emotalk.data.face.detect import DlibLandmarker
from emotalk.data.loading import LoadedModel, load_model
from emotalk.errors import CheckpointError, InputError
from emotalk.inference.checkpoints import find_checkpoints
from emotalk.inference.compositor import Compositor, crop_on_own_background
from emotalk.inference.feature_stream import AudioFeatures
from emotalk.inference.landmarks import DEFAULT_BATCH, LandmarkPredictor, animate
from emotalk.inference.options import EmotalkWarning, GenerateOptions, GenerateResult, warn
from emotalk.inference.photo import Photo, prepare_photo
from emotalk.inference.renderers import PreparedRenderer, RenderRequest, make_renderer, needs_texture
from emotalk.inference.speech import Speech, check_output_path, load_speech
from emotalk.inference.stream import FrameStream, stream as _stream
from emotalk.inference.timeline import DEFAULT_RAMP, Timeline, is_timeline, parse_timeline
from emotalk.inference.video import write_video
from emotalk.utils.device import select_device

__all__ = ["Controls", "EmotalkWarning", "GenerateOptions", "GenerateResult", "Pipeline", "Speech", "check_output_path",
           "load_speech"]

log = logging.getLogger(__name__)

#: what ``emotion=`` accepts: a name, a blend, a mapping, a timeline (object or string), per-frame arrays
EmotionSpec = Union[str, Mapping[str, float], Timeline, np.ndarray, Tuple[np.ndarray, np.ndarray]]


@dataclass
class Controls:
    """The emotion as the models take it: G_L's and G_T's control vectors, ``(E + I,)`` for the whole
    clip or ``(T, E + I)`` per frame (each model has its own vocabulary, so they are two vectors)."""

    landmark: np.ndarray
    texture: np.ndarray | None  # None when the renderer does not use G_T
    weights: dict[str, float]  # the parsed blend (a timeline's first keyframe), for the result record
    intensity: float
    timeline: Timeline | None = None  # when the emotion changes within the clip


class _Stopwatch:
    """Seconds per stage, in order."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.last, 4)
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total": round(time.perf_counter() - self.start, 4)}


class Pipeline:
    """G_L (+ G_T) loaded from checkpoints; :meth:`generate` makes a video, the other methods are its steps.

    ``landmark`` / ``texture``: models from :func:`emotalk.data.loading.load_model` (texture may be None:
    enough for ``renderer="warp"``)."""

    def __init__(self, landmark: LoadedModel, texture: LoadedModel | None = None, device: str | torch.device = "auto",
                 landmarker=None):
        self.device = select_device(device)
        self.landmark = LandmarkPredictor(landmark, self.device)
        if texture is not None:
            texture.module.to(self.device).eval()
        self.texture = texture
        self._landmarker = landmarker

    # --- facts of the loaded checkpoints -------------------------------------------------------------
    @property
    def G_L(self) -> torch.nn.Module:
        return self.landmark.G

    @property
    def G_T(self) -> torch.nn.Module | None:
        return self.texture.module if self.texture is not None else None

    @property
    def emotions(self) -> list[str]:
        return self.landmark.emotions

    @property
    def intensity_levels(self) -> int:
        return self.landmark.intensity_levels

    @property
    def feature_kind(self) -> str:
        return self.landmark.feature_kind

    @property
    def feature_dim(self) -> int:
        return self.landmark.feature_dim

    @property
    def window(self) -> int:
        return self.landmark.window

    @property
    def fps(self) -> float:
        return self.landmark.fps

    # --- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, checkpoints: str | Path | Sequence | None = None, device: str = "auto",
                         load_texture: bool = True, landmarker=None) -> "Pipeline":
        """``checkpoints``: a folder holding ``landmark/`` and ``texture/`` (each a training run folder or
        a folder with a ``step_*.json`` + ``.safetensors`` checkpoint), or a ``(landmark, texture)`` pair
        of checkpoint paths / run folders (texture may be None); None searches ``./checkpoints`` and what
        ``emotalk demo`` trained (:func:`~emotalk.inference.checkpoints.find_checkpoints`).
        ``load_texture=False`` skips G_T (enough for ``renderer="warp"``). Missing, corrupt or wrong-kind
        checkpoints raise CheckpointError."""
        if checkpoints is None:
            checkpoints = find_checkpoints(texture=load_texture).path
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
        if load_texture and tex_path is None:
            raise CheckpointError("a texture (G_T) checkpoint is required for the neural renderer; "
                                  "use renderer='warp' without one")
        dev = select_device(device)
        landmark = load_model(lm_path, "landmark", dev)
        texture = load_model(tex_path, "texture", dev) if load_texture else None
        log.info("G_L from %s, G_T from %s, on %s", landmark.meta.path,
                 texture.meta.path if texture is not None else "(not loaded)", dev)
        return cls(landmark, texture, device=dev, landmarker=landmarker)

    # --- the emotion: control vectors, checked once --------------------------------------------------
    def landmark_emotion(self, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1) -> np.ndarray:
        """G_L's emotion control vector (its vocabulary / levels); InputError for unknown emotions or an
        intensity outside ``1 .. levels``."""
        return self.landmark.emotion_vector(emotion, intensity)

    def texture_emotion(self, emotion: str | Mapping[str, float] = "neutral", intensity: float = 1) -> np.ndarray:
        """G_T's emotion control vector (G_T's own vocabulary / levels)."""
        if self.texture is None:
            raise CheckpointError("no texture (G_T) checkpoint is loaded")
        m = self.texture.model_config
        return emotion_vector(emotion, intensity, list(m.emotions), int(m.intensity_levels))

    def controls(self, emotion: EmotionSpec = "neutral", intensity: float = 1, renderer: str = "neural",
                 num_frames: int | None = None, fps: float | None = None, duration: float | None = None,
                 ramp: float = DEFAULT_RAMP, curve: str = "linear") -> Controls:
        """Both models' control vectors, validated against both vocabularies, and the check that
        ``renderer`` has the model it needs - before any photo or audio is touched.

        ``emotion``: a name / blend / mapping (one vector ``(E + I,)`` each); a :class:`Timeline` or a
        timeline string (``"0:neutral, 1.5:happy@3"``, ramps of ``ramp`` seconds shaped by ``curve``);
        or per-frame control vectors ``(T, E + I)`` for G_L (reused for G_T when both share a vocabulary)
        or a ``(landmark, texture)`` pair of such arrays. Per-frame kinds give ``(T, E + I)`` vectors when
        ``num_frames`` is given (a timeline also needs ``fps``; keyframes past ``duration`` seconds are an
        error), else - for the early check - the vectors of the first frame."""
        want_texture = needs_texture(renderer)
        if want_texture and self.texture is None:
            raise CheckpointError("the neural renderer needs a texture (G_T) checkpoint; pass one or use "
                                  "--renderer warp")
        if isinstance(emotion, (np.ndarray, tuple, list)):
            return self._array_controls(emotion, intensity, want_texture, num_frames)
        if is_timeline(emotion):
            tl = emotion if isinstance(emotion, Timeline) else parse_timeline(emotion, ramp, curve)
            tm = self.texture.model_config if want_texture else None
            if num_frames is None:  # validate every keyframe now; vectors of the first one
                lm = tl.keyframe_vectors(self.emotions, self.intensity_levels, intensity)[0]
                tex = tl.keyframe_vectors(list(tm.emotions), int(tm.intensity_levels), intensity)[0] if tm else None
            else:
                if fps is None:
                    raise InputError("per-frame timeline controls need the frame rate (fps)")
                lm = tl.controls(num_frames, fps, self.emotions, self.intensity_levels, intensity, duration)
                tex = (tl.controls(num_frames, fps, list(tm.emotions), int(tm.intensity_levels), intensity, duration)
                       if tm else None)
            return Controls(lm, tex, tl.weights(self.emotions)[0], float(intensity), tl)
        weights = parse_control(emotion, self.emotions)  # neutral: also in the paper's vocabulary (zero part)
        landmark = self.landmark_emotion(emotion, intensity)
        texture = self.texture_emotion(emotion, intensity) if want_texture else None
        return Controls(landmark, texture, weights, float(intensity))

    def _array_controls(self, emotion, intensity: float, want_texture: bool, num_frames: int | None) -> Controls:
        """Caller-made per-frame control vectors: shapes checked against both models."""
        if isinstance(emotion, np.ndarray):
            lm = tex = emotion
            if want_texture:
                m = self.texture.model_config
                if list(m.emotions) != self.emotions or int(m.intensity_levels) != self.intensity_levels:
                    raise InputError("G_L and G_T have different emotion vocabularies; pass per-frame controls as "
                                     "a (landmark, texture) pair of arrays, or a Timeline")
        elif len(emotion) == 2:
            lm, tex = emotion
        else:
            raise InputError("per-frame emotion controls are one (T, E + I) array or a (landmark, texture) pair")
        dims = [("G_L", lm, self.landmark.emotion_dim)]
        if want_texture:
            dims.append(("G_T", tex, int(self.texture.model_config.emotion_dim)))
        out = []
        for name, arr, dim in dims:
            a = np.asarray(arr, np.float32)
            if a.ndim != 2 or a.shape[1] != dim or not np.isfinite(a).all():
                raise InputError(f"{name}'s per-frame emotion controls must be a finite (T, {dim}) array, "
                                 f"got shape {a.shape}")
            if num_frames is not None and len(a) != num_frames:
                raise InputError(f"{len(a)} per-frame emotion control vectors for {num_frames} video frames; "
                                 f"give one per frame")
            out.append(a if num_frames is not None else a[0])
        return Controls(out[0], out[1] if want_texture else None, {}, float(intensity))

    # --- inputs ----------------------------------------------------------------------------------------
    def prepare_photo(self, image, size: int = 256) -> Photo:
        """Load a photo and prepare its largest face (landmarks, alignment, the ``size`` x ``size`` crop)."""
        if self._landmarker is None:
            self._landmarker = DlibLandmarker(upsample=1)
        return prepare_photo(image, crop_size=size, landmarker=self._landmarker)

    def audio_features(self, speech, num_frames: int | None = None, feature_source=None,
                       fps: float | None = None) -> AudioFeatures:
        """The landmark checkpoint's speech features for ``speech`` (path, array or :class:`Speech`)."""
        sp = load_speech(speech) if speech is not None else None
        fps = float(fps or self.fps)
        T = num_frames if num_frames is not None else (sp.num_frames(fps) if sp is not None else None)
        if T is None:
            raise InputError("give the speech or the number of frames")
        return self.landmark.features(sp, T, fps, source=feature_source)

    # --- G_L -------------------------------------------------------------------------------------------
    def predict_landmarks(self, audio_features, emotion_vector: np.ndarray, neutral: np.ndarray,
                          batch_size: int = DEFAULT_BATCH, progress: bool = False) -> np.ndarray:
        """G_L per frame. ``audio_features``: :class:`AudioFeatures` or ``(T, W, D)`` windows;
        ``emotion_vector``: ``(E + I,)`` or per frame ``(T, E + I)``; ``neutral``: the face's aligned
        neutral landmarks X ``(68, 2)``. Returns ``(T, 68, 2)`` float32 landmarks ``X + δ`` in the same
        aligned canonical space, unsmoothed."""
        return self.landmark.predict(audio_features, emotion_vector, neutral, batch_size, progress)

    def animate(self, landmarks: np.ndarray, blink: bool = True, seed: int = 0, smooth_window: int = 5,
                fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Temporal smoothing then spontaneous blinks: ``(landmarks (T, 68, 2), blink closure (T,))``."""
        return animate(landmarks, float(fps or self.fps), blink, seed, smooth_window)

    # --- G_T / renderers -------------------------------------------------------------------------------
    def prepare_renderer(self, photo: Photo, renderer: str, controls: Controls, finetune_steps: int = 5,
                         background: bool = True, progress: bool = False) -> PreparedRenderer:
        """Renderer ``renderer`` prepared for ``photo`` with already checked ``controls``."""
        texture = controls.texture
        default = texture if texture is None or texture.ndim == 1 else texture[0]
        return make_renderer(renderer, RenderRequest(photo, self.device, self.texture, default, finetune_steps,
                                                     background, progress))

    def make_renderer(self, photo: Photo, renderer: str = "neural", emotion: str | Mapping = "neutral",
                      intensity: float = 1, finetune_steps: int = 5, background: bool = True,
                      progress: bool = False) -> PreparedRenderer:
        """A :class:`PreparedRenderer` for one photo and one emotion."""
        return self.prepare_renderer(photo, renderer, self.controls(emotion, intensity, renderer), finetune_steps,
                                     background, progress)

    def frames(self, photo: Photo, landmarks: np.ndarray, prepared: PreparedRenderer,
               batch_size: int | None = None, paste: bool = True, emotion: np.ndarray | None = None
               ) -> Iterator[np.ndarray]:
        """Yield one RGB uint8 frame per landmark frame: the full photo (``paste=True``) or the face crop on
        the photo's own background. ``landmarks``: ``(T, 68, 2)`` in the photo's aligned canonical space;
        ``emotion``: optional per-frame G_T control vectors ``(T, E + I)`` (default: the renderer's own)."""
        comp = Compositor(photo, prepared.alpha) if paste else None
        bs = int(batch_size or prepared.batch_size)
        lm = np.asarray(landmarks, np.float32)
        emo = None if emotion is None else np.asarray(emotion, np.float32)
        if emo is not None and emo.ndim == 2 and len(emo) != len(lm):
            raise InputError(f"{len(lm)} landmark frames but {len(emo)} emotion vectors")
        for a in range(0, len(lm), bs):
            crop_lm = photo.aligned_to_crop(lm[a:a + bs])
            e = emo[a:a + bs] if emo is not None and emo.ndim == 2 else emo
            for crop in prepared.renderer(crop_lm, e):
                yield comp(crop) if comp is not None else crop_on_own_background(crop, photo, prepared.alpha)

    def render_frames(self, photo: Photo, landmarks: np.ndarray, emotion: str | Mapping = "neutral",
                      intensity: float = 1, renderer: str = "neural", finetune_steps: int = 5,
                      background: bool = True, batch_size: int | None = None, paste: bool = True,
                      progress: bool = False, prepared: PreparedRenderer | None = None) -> Iterator[np.ndarray]:
        """:meth:`frames` with the renderer prepared here for one emotion (or ``prepared`` reused)."""
        if prepared is None:
            prepared = self.make_renderer(photo, renderer, emotion, intensity, finetune_steps, background, progress)
        return self.frames(photo, landmarks, prepared, batch_size, paste)

    # --- Fig. 2, end to end ----------------------------------------------------------------------------
    def generate(self, image, audio, options: GenerateOptions | None = None, *, out: str | Path = "out.mp4",
                 **overrides) -> GenerateResult:
        """Photo + speech + emotion -> ``out`` (H.264 + AAC mp4 of the photo's size). ``options``: a
        :class:`GenerateOptions`; keyword arguments (``emotion="happy", intensity=2, ...``) build or
        override it. Bad options, emotions or paths fail before any work, and nothing is written."""
        opts = GenerateOptions.resolve(options, overrides, "generate(image, audio, emotion=...)")
        out = check_output_path(out)
        controls = self.controls(opts.emotion, opts.intensity, opts.renderer, ramp=opts.ramp, curve=opts.ramp_curve)
        fps = float(opts.fps or self.fps)
        clock, warnings = _Stopwatch(), []

        photo = self.prepare_photo(image, opts.size)  # the target face: X and the crop G_T works on
        for w in photo.warnings:
            warn(warnings, w)
        clock.lap("photo")
        speech = load_speech(audio)  # A
        T = speech.num_frames(fps)
        has_speech = speech.has_speech()
        if not has_speech:
            warn(warnings, "no speech found in the audio (it is silent); the video shows a still face with the "
                           "emotion")
        if opts.per_frame_emotion:  # a timeline or per-frame arrays: one vector per frame, now that T is known
            controls = self.controls(opts.emotion, opts.intensity, opts.renderer, T, fps, speech.seconds,
                                     opts.ramp, opts.ramp_curve)
        clock.lap("audio")
        features = self.audio_features(speech, T, opts.feature_source, fps)
        clock.lap("features")
        raw = self.predict_landmarks(features, controls.landmark, photo.aligned, progress=opts.progress)  # G_L
        del features
        landmarks, closure = self.animate(raw, opts.blink, opts.seed, opts.smoothing, fps)
        del raw
        clock.lap("landmarks")
        prepared = self.prepare_renderer(photo, opts.renderer, controls, opts.finetune_steps, opts.background,
                                         opts.progress)  # G_T: one-shot fine-tuning, E_T once
        clock.lap("finetune")
        per_frame = controls.texture if controls.texture is not None and controls.texture.ndim == 2 else None
        frames = self.frames(photo, landmarks, prepared, opts.batch_size, opts.paste, per_frame)
        write_video(frames, out, fps, speech, T, opts.progress)
        clock.lap("render")
        size = photo.size if opts.paste else (photo.crop_size, photo.crop_size)
        return GenerateResult(path=out, frames=T, fps=fps, size=size, seconds=clock.total(), warnings=warnings,
                              landmarks=landmarks, blinks=closure, emotion=controls.weights,
                              intensity=controls.intensity, renderer=opts.renderer, speech=has_speech,
                              background_rgb=prepared.background_rgb, finetune=prepared.finetune, options=opts)

    def stream(self, audio, image=None, options: GenerateOptions | None = None, **kwargs) -> FrameStream:
        """Frames while the speech arrives (:mod:`~emotalk.inference.stream`): ``audio`` is a file, an array
        or an iterable of PCM blocks (``sample_rate=``); iterate the returned :class:`FrameStream` for
        :class:`~emotalk.inference.stream.StreamFrame` objects (``.image``, ``.time``). Same options as
        :meth:`generate`; the photo is prepared here, before any audio is read."""
        return _stream(self, audio, image, options, **kwargs)

