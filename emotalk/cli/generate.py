"""``emotalk generate --image PHOTO --audio SPEECH [--emotion happy] [--intensity 2] [--out out.mp4]``

Photo + speech + emotion -> a talking-face mp4 (H.264 + AAC) through :class:`emotalk.Pipeline`.
``--emotion`` takes a name from the checkpoint's vocabulary, a blend such as ``happy:0.7,surprised:0.3``
or a timeline such as ``"0:neutral, 1.5:happy@3, 4:sad@2"`` (:mod:`emotalk.inference.timeline`; ``--ramp``
and ``--ramp-curve`` shape its transitions); ``--intensity`` a level 1..3 (fractions such as 2.5
interpolate). Without ``--checkpoints`` the models are searched for as :mod:`emotalk.inference.checkpoints`
describes (``./checkpoints``, then what ``emotalk demo`` trained) and the log says which were used. The flags
map one to one onto :class:`emotalk.inference.GenerateOptions` (whose checks run before any model is
loaded). Bad inputs end with one ``error:`` line and exit code 2, and no output file is written.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings

from emotalk.errors import InputError
from emotalk.inference import RENDERERS, EmotalkWarning, GenerateOptions, Pipeline, check_output_path, load_speech
from emotalk.inference.checkpoints import find_checkpoints
from emotalk.inference.video import FragmentedMP4Writer
from emotalk.inference.photo import load_image
from emotalk.inference.renderers import needs_texture
from emotalk.inference.timeline import CURVES

log = logging.getLogger(__name__)

_DEFAULTS = GenerateOptions()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, metavar="PHOTO", help="photo of the target face (jpg, png, webp, ...)")
    p.add_argument("--audio", required=True, metavar="SPEECH", help="speech audio (wav, mp3, m4a, flac, ...)")
    p.add_argument("--emotion", default=_DEFAULTS.emotion,
                   help="emotion name (e.g. happy), a blend such as happy:0.7,surprised:0.3, or a timeline of "
                        "TIME:EMOTION[@INTENSITY] keyframes (seconds) such as '0:neutral, 1.5:happy@3, "
                        "4:sad@2, 6:surprised:0.6+happy:0.4@2.5' (default: neutral)")
    p.add_argument("--ramp", type=float, default=_DEFAULTS.ramp, metavar="SECONDS",
                   help=f"length of each timeline transition, centred on its keyframe (default: {_DEFAULTS.ramp})")
    p.add_argument("--ramp-curve", choices=tuple(CURVES), default=_DEFAULTS.ramp_curve,
                   help=f"shape of the timeline transitions (default: {_DEFAULTS.ramp_curve})")
    p.add_argument("--intensity", default="1", metavar="LEVEL",
                   help="intensity level 1..3; fractions interpolate, e.g. 2.5 (default: 1)")
    p.add_argument("--out", default="out.mp4",
                   help="output mp4 (default: out.mp4); '-' streams a fragmented MP4 to stdout while it is made "
                        "(e.g. | ffplay -)")
    p.add_argument("--checkpoints", default=None, metavar="DIR",
                   help="folder with landmark/ and texture/ checkpoints (run folders); default: the first of "
                        "./checkpoints, the folder the last 'emotalk demo' recorded ($EMOTALK_HOME/latest, else "
                        "$XDG_CACHE_HOME/emotalk/latest or ~/.cache/emotalk/latest) and runs/demo/checkpoints "
                        "that holds them")
    p.add_argument("--landmark-checkpoint", metavar="PATH",
                   help="G_L checkpoint or run folder (overrides DIR/landmark)")
    p.add_argument("--texture-checkpoint", metavar="PATH", help="G_T checkpoint or run folder (overrides DIR/texture)")
    p.add_argument("--finetune-steps", type=int, default=_DEFAULTS.finetune_steps, metavar="N",
                   help=f"one-shot fine-tuning steps of G_T on the photo (0 disables; default: {_DEFAULTS.finetune_steps})")
    p.add_argument("--no-blink", action="store_true", help="do not add spontaneous eye blinks")
    p.add_argument("--renderer", choices=tuple(RENDERERS), default=_DEFAULTS.renderer,
                   help="neural: G_T (default); warp: piecewise-affine warp of the photo (fast preview, no G_T)")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, metavar="PX",
                   help=f"resolution of the face crop that is generated and pasted back (default: {_DEFAULTS.size})")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="frames per G_T forward pass")
    p.add_argument("--no-background-replacement", action="store_true",
                   help="feed the photo's own background to G_T instead of the training background")
    p.add_argument("--audio-features", metavar="FILE",
                   help="precomputed speech features for backends that cannot run here (DeepSpeech logits .npy)")
    p.add_argument("--deepspeech-model", metavar="PATH",
                   help="frozen DeepSpeech 0.1.0 graph (deepspeech-0_1_0-b90017e8.pb) to compute the speech "
                        "features of a G_L trained on --features deepspeech (instead of --audio-features)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed of the blinks (default: 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _intensity(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"intensity must be a number such as 1, 2 or 2.5, got {text!r}") from None


def options_from_args(args: argparse.Namespace) -> GenerateOptions:
    """The command line as :class:`GenerateOptions` (validated here, before anything is loaded)."""
    return GenerateOptions(emotion=args.emotion, intensity=_intensity(args.intensity), ramp=args.ramp,
                           ramp_curve=args.ramp_curve, renderer=args.renderer,
                           finetune_steps=args.finetune_steps, blink=not args.no_blink, size=args.size,
                           batch_size=args.batch_size, seed=args.seed,
                           background=not args.no_background_replacement, progress=not args.quiet,
                           feature_source=_feature_source(args))


def _feature_source(args: argparse.Namespace):
    """``--deepspeech-model`` (a .pb, run on the speech) or ``--audio-features`` (a file), not both."""
    model = getattr(args, "deepspeech_model", None)
    if model and args.audio_features:
        raise InputError("pass either --deepspeech-model or --audio-features, not both")
    if model and not str(model).lower().endswith(".pb"):
        raise InputError(f"--deepspeech-model must be the frozen graph file (.pb), got {model}")
    return model or args.audio_features


def _checkpoint_source(args: argparse.Namespace, texture_needed: bool):
    """A checkpoints folder or a ``(landmark, texture)`` pair: explicit paths first, then the search of
    :func:`emotalk.inference.checkpoints.find_checkpoints` for whatever is still missing."""
    lm, tex = args.landmark_checkpoint, args.texture_checkpoint
    if lm and (tex or not texture_needed):
        return lm, tex
    root = find_checkpoints(args.checkpoints, texture=texture_needed and not tex).path
    if lm or tex:
        return lm or root / "landmark", (tex or root / "texture") if texture_needed or tex else None
    return root


def _show(message, category, filename, lineno, file=None, line=None):
    """Input warnings as ``warning: ...`` log lines; anything else the standard way."""
    if issubclass(category, EmotalkWarning):
        log.warning("%s", message)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _stream_to_stdout(pipe: Pipeline, image, speech, options: GenerateOptions, out) -> int:
    """``--out -``: :meth:`Pipeline.stream` into a fragmented MP4 on stdout (``| ffplay -``); only the
    video bytes go to stdout, logs stay on stderr."""
    writer = FragmentedMP4Writer(out)
    frames = pipe.stream(speech, image=image, options=options, audio_tap=writer.add_audio)
    writer.fps = frames.fps
    with writer:
        for frame in frames:
            writer.write(frame.image)
    w, h = frames.size
    log.info("streamed %d frames (%.2f s at %g fps), %dx%d, %s renderer, to stdout as fragmented MP4; look-ahead "
             "%.0f ms", writer.frames, writer.frames / frames.fps, frames.fps, w, h, options.renderer,
             1000 * frames.lookahead.total)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.out == "-":  # the video owns stdout: what the command reports goes to stderr instead
        video_out = sys.stdout.buffer
        with contextlib.redirect_stdout(sys.stderr):
            return _run(args, video_out)
    return _run(args, None)


def _run(args: argparse.Namespace, video_out) -> int:
    options = options_from_args(args)
    if args.out != "-":  # '-': a fragmented MP4 streamed to stdout
        check_output_path(args.out)  # before loading anything
    load_image(args.image)  # the inputs too: a bad photo or speech file fails in a second, before the models
    speech = load_speech(args.audio)
    texture_needed = needs_texture(options.renderer)
    source = _checkpoint_source(args, texture_needed)
    with warnings.catch_warnings():
        warnings.simplefilter("always", EmotalkWarning)
        warnings.showwarning = _show
        pipe = Pipeline.from_checkpoints(source, device=args.device, load_texture=texture_needed)
        if args.out == "-":
            return _stream_to_stdout(pipe, args.image, speech, options, video_out)
        result = pipe.generate(args.image, speech, options, out=args.out)
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items() if k != "total")
    w, h = result.size
    log.info("wrote %s: %d frames (%.2f s at %g fps), %dx%d, %s renderer; %.1f s (%s)", result.path, result.frames,
             result.duration, result.fps, w, h, result.renderer, result.seconds["total"], stages)
    return 0
