"""The emotion grid: one photo and one speech clip rendered by one method in every emotion and intensity.

The expression metrics (:mod:`emotalk.eval.metrics.expression`) need what a test clip cannot give: the
same input rendered with the neutral emotion (the baseline every displacement is measured from) and the
landmarks that drove each rendering (what the renderer was asked to draw). For a subject's neutral
reference photo and the speech of one of its test clips, :func:`grid_samples` renders

- the neutral emotion (level 1): the baseline;
- every other emotion of G_L's vocabulary at each of ``GridConfig.intensities`` (fractional levels too);
- a blink rendering: the neutral frames again with the eyelids closed in the driving landmarks
  (:func:`emotalk.data.face.blinks.apply_blink` at closure 1), so the renderer's eyes can be checked.

Only ``GridConfig.frames`` evenly spaced frames of the clip are rendered: G_L runs over the whole clip (its
prediction depends on the speech around each frame) and its output is sampled, so the grid costs a few
hundred rendered and re-detected frames per method, not a clip per emotion. G_T is fine-tuned once per
photo and receives per-frame emotion vectors, the same prepared renderer serving every emotion.

The pipeline is used through the methods :func:`emotalk.eval.evaluate.generate_clip` uses; evaluation
receives it from its caller and never imports the inference package (sibling layers).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotalk.data.face.blinks import apply_blink
from emotalk.errors import ConfigError, DataError
from emotalk.eval.face_features import detect_faces_video
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.protocol import SMOOTHING_WINDOWS
from emotalk.eval.sample import VideoSample

log = logging.getLogger(__name__)


@dataclass
class GridConfig:
    """The emotion grid of an evaluation (config section ``grid:``)."""

    enabled: bool = True
    subjects: int = 1  # how many test subjects get a grid (the first ones, sorted)
    frames: int = 8  # rendered frames per emotion x intensity (evenly spaced over the clip)
    intensities: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5, 3.0])
    emotions: list[str] = field(default_factory=list)  # empty: every emotion G_L knows
    blink: bool = True  # add the blink rendering (for blink_visibility)
    methods: list[str] = field(default_factory=list)  # names of the methods that get a grid; empty: every
    # neural / warp method (each grid costs a few hundred rendered and re-detected frames)

    def validate(self) -> None:
        if self.frames < 2:
            raise ConfigError("grid.frames must be >= 2")
        if self.subjects < 1:
            raise ConfigError("grid.subjects must be >= 1 (set grid.enabled=false to skip the grid)")
        if not self.intensities or any(not (v >= 1) for v in self.intensities):
            raise ConfigError(f"grid.intensities must be levels >= 1, got {self.intensities}")


def frame_subset(num_frames: int, k: int) -> np.ndarray:
    """``k`` evenly spaced frame indices, away from the clip's first and last frame (onset / offset)."""
    return np.unique(np.linspace(0, num_frames - 1, k + 2)[1:-1].round().astype(int))


def clip_features(pipe: Any, clip) -> np.ndarray:
    """The clip's speech features as the pipeline's G_L needs them (the stored ones when they match)."""
    if clip.feature_kind == pipe.feature_kind and clip.audio_features.shape[1:] == (pipe.window, pipe.feature_dim):
        return clip.audio_features  # exactly the features the model was trained on (e.g. DeepSpeech)
    if clip.audio is None:
        raise DataError(f"{clip.subject}/{clip.clip_id}: no audio stored, and its features "
                        f"({clip.feature_kind}) differ from the checkpoint's ({pipe.feature_kind})")
    return pipe.audio_features(clip.audio.astype(np.float32) / 32768.0, num_frames=clip.num_frames)


def grid_samples(pipe: Any, method, clip, reference, cfg: GridConfig, landmark_upsample: int = 1
                 ) -> list[VideoSample]:
    """The grid of one method for one (photo, speech) pair, as :class:`VideoSample` s ready for the grid
    metrics (the neutral rendering's landmarks detected once and shared by all samples)."""
    photo = pipe.prepare_photo(reference.image, size=reference.image.shape[0])
    feats = clip_features(pipe, clip)
    idx = frame_subset(clip.num_frames, cfg.frames)
    emotions = [e for e in (cfg.emotions or pipe.emotions) if e != "neutral"]
    levels = [min(float(v), float(pipe.intensity_levels)) for v in cfg.intensities]
    levels = sorted(set(levels))

    def driving(emotion: str, level: float) -> np.ndarray:
        e_l = pipe.landmark_emotion(emotion if method.emotional_landmarks else "neutral",
                                    level if method.emotional_landmarks else 1)
        lm, _ = pipe.animate(pipe.predict_landmarks(feats, e_l, photo.aligned), blink=False,
                             smooth_window=SMOOTHING_WINDOWS[getattr(method, "landmark_smoothing", "none")])
        return np.asarray(lm)[idx]

    def texture(emotion: str, level: float) -> np.ndarray:
        v = pipe.texture_emotion(emotion, level) if method.emotion_feature else pipe.texture_emotion("neutral", 1)
        return np.repeat(np.asarray(v)[None], len(idx), 0)

    conditions = [("neutral", 1.0)] + [(e, lv) for e in emotions for lv in levels]
    lms = [driving(e, lv) for e, lv in conditions]
    closure = None
    if cfg.blink:
        closure = np.concatenate([np.zeros(len(idx)), np.ones(len(idx))])
        lms.append(apply_blink(lms[0], np.ones(len(idx))))
    tex = None
    if method.renderer == "neural":  # G_T's per-frame emotion vectors (the warp renderer has no G_T)
        tex = np.concatenate([texture(e, lv) for e, lv in conditions] + ([texture("neutral", 1)] if cfg.blink else []))
    prepared = pipe.make_renderer(photo, method.renderer, "neutral", 1, method.finetune_steps)
    frames = np.stack(list(pipe.frames(photo, np.concatenate(lms), prepared, emotion=tex)))
    frames = frames.reshape(len(lms), len(idx), *frames.shape[1:])
    pixels = [np.asarray(photo.aligned_to_image(lm), np.float64) for lm in lms]
    neutral_lms, neutral_boxes = detect_faces_video(frames[0], landmark_upsample)
    neutral_lms = neutral_lms.astype(np.float64)

    def sample(name: str, emotion: str, level: float, gen: np.ndarray, drv: np.ndarray, blink=None) -> VideoSample:
        s = VideoSample(generated=gen, identity=reference.image, fps=clip.fps, emotion=emotion, intensity=level,
                        name=f"{clip.subject}/grid/{name}", driving_landmarks=drv, neutral_generated=frames[0],
                        neutral_driving_landmarks=pixels[0] if blink is None else np.concatenate([pixels[0]] * 2),
                        blink=np.zeros(len(gen)) if blink is None else blink)
        s.features.put(Side.NEUTRAL_GENERATED, Feature.LANDMARKS, neutral_lms)
        s.features.put(Side.NEUTRAL_GENERATED, Feature.BOXES, neutral_boxes)
        return s

    out = []
    for i, (emotion, level) in enumerate(conditions):
        s = sample(f"{emotion}@{level:g}", emotion, level, frames[i], pixels[i])
        if i == 0:  # the neutral rendering is its own baseline: measured once
            s.features.put(Side.GENERATED, Feature.LANDMARKS, neutral_lms)
            s.features.put(Side.GENERATED, Feature.BOXES, neutral_boxes)
        out.append(s)
    if cfg.blink:
        gen = np.concatenate([frames[0], frames[-1]])
        s = sample("blink", "neutral", 1.0, gen, np.concatenate([pixels[0], pixels[-1]]), blink=closure)
        closed_lms, closed_boxes = detect_faces_video(frames[-1], landmark_upsample)
        s.features.put(Side.GENERATED, Feature.LANDMARKS,
                       np.concatenate([neutral_lms, closed_lms.astype(np.float64)]))
        s.features.put(Side.GENERATED, Feature.BOXES, np.concatenate([neutral_boxes, closed_boxes]))
        out.append(s)
    log.info("emotion grid of %s for %s: %d renderings x %d frames", method.name, clip.subject, len(lms), len(idx))
    return out
