"""Inference: photo + speech + emotion -> a talking-face video (paper Fig. 2), one module per stage.

=================  ==================================================================================
``options``        :class:`GenerateOptions` (what to make) and :class:`GenerateResult` (what was made)
``photo``          the target photo: face, landmarks, alignment, crop
``speech``         audio input (:func:`load_speech`) and output-path checks
``feature_stream`` the checkpoint's speech features, cut into per-frame windows batch by batch
``landmarks``      G_L (:class:`LandmarkPredictor`), smoothing and blinks
``one_shot``       one-shot fine-tuning of G_T's E_T / D_T on the photo (§4.1)
``renderers``      G_T and the warp preview behind a small registry (:func:`make_renderer`)
``compositor``     paste-back of the generated crop onto the photo
``video``          frames + speech -> mp4
``pipeline``       :class:`Pipeline`, the stages in Fig. 2's order
``stream``         :meth:`Pipeline.stream`: the same stages on small batches while the audio arrives
``live_features``  speech features computed while the audio arrives (streaming)
``timeline``       emotion timelines: keyframes -> per-frame control vectors with smooth ramps
``checkpoints``    where trained models are found without flags (after ``emotalk demo``)
=================  ==================================================================================
"""
from emotalk.inference.options import EmotalkWarning, GenerateOptions, GenerateResult
from emotalk.inference.pipeline import Controls, Pipeline
from emotalk.inference.renderers import RENDERERS, PreparedRenderer, register_renderer
from emotalk.inference.speech import Speech, check_output_path, load_speech
from emotalk.inference.checkpoints import find_checkpoints, remember_checkpoints
from emotalk.inference.timeline import Keyframe, Timeline, parse_timeline
from emotalk.inference.stream import FrameStream, StreamFrame

__all__ = ["Controls", "EmotalkWarning", "GenerateOptions", "GenerateResult", "Keyframe", "Pipeline",
           "FrameStream", "PreparedRenderer", "RENDERERS", "Speech", "StreamFrame", "Timeline", "check_output_path", "find_checkpoints",
           "load_speech", "parse_timeline", "register_renderer", "remember_checkpoints"]
