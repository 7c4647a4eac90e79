"""``emotalk generate --image PHOTO --audio SPEECH [--emotion happy] [--intensity 2] [--out out.mp4]``

Photo + speech + emotion -> a talking-face mp4 (H.264 + AAC) through :class:`emotalk.Pipeline`.
``--emotion`` takes a name from the checkpoint's vocabulary or a blend such as ``happy:0.7,surprised:0.3``;
``--intensity`` a level 1..3 (fractions such as 2.5 interpolate). Bad inputs end with one ``error:`` line
and exit code 2, and no output file is written.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, metavar="PHOTO", help="photo of the target face (jpg, png, webp, ...)")
    p.add_argument("--audio", required=True, metavar="SPEECH", help="speech audio (wav, mp3, m4a, flac, ...)")
    p.add_argument("--emotion", default="neutral",
                   help="emotion name (e.g. happy) or a blend such as happy:0.7,surprised:0.3 (default: neutral)")
    p.add_argument("--intensity", default="1", metavar="LEVEL",
                   help="intensity level 1..3; fractions interpolate, e.g. 2.5 (default: 1)")
    p.add_argument("--out", default="out.mp4", help="output mp4 (default: out.mp4)")
    p.add_argument("--checkpoints", default="checkpoints", metavar="DIR",
                   help="folder with landmark/ and texture/ checkpoints (run folders) (default: checkpoints)")
    p.add_argument("--landmark-checkpoint", metavar="PATH",
                   help="G_L checkpoint or run folder (overrides DIR/landmark)")
    p.add_argument("--texture-checkpoint", metavar="PATH", help="G_T checkpoint or run folder (overrides DIR/texture)")
    p.add_argument("--finetune-steps", type=int, default=5, metavar="N",
                   help="one-shot fine-tuning steps of G_T on the photo (0 disables; default: 5)")
    p.add_argument("--no-blink", action="store_true", help="do not add spontaneous eye blinks")
    p.add_argument("--renderer", choices=("neural", "warp"), default="neural",
                   help="neural: G_T (default); warp: piecewise-affine warp of the photo (fast preview, no G_T)")
    p.add_argument("--size", type=int, default=256, metavar="PX",
                   help="resolution of the face crop that is generated and pasted back (default: 256)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="frames per G_T forward pass")
    p.add_argument("--no-background-replacement", action="store_true",
                   help="feed the photo's own background to G_T instead of the training background")
    p.add_argument("--audio-features", metavar="FILE",
                   help="precomputed speech features for backends that cannot run here (DeepSpeech logits .npy)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the blinks (default: 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def _intensity(text: str) -> float:
    from emotalk.errors import InputError

    try:
        return float(text)
    except (TypeError, ValueError):
        raise InputError(f"intensity must be a number such as 1, 2 or 2.5, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import warnings

    from emotalk.inference.pipeline import EmotalkWarning, Pipeline, check_output_path

    intensity = _intensity(args.intensity)
    check_output_path(args.out)  # before loading anything

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EmotalkWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    if args.landmark_checkpoint or args.texture_checkpoint:
        from pathlib import Path

        root = Path(args.checkpoints)
        source = (args.landmark_checkpoint or root / "landmark",
                  None if args.renderer == "warp" and not args.texture_checkpoint
                  else (args.texture_checkpoint or root / "texture"))
    else:
        source = args.checkpoints
    with warnings.catch_warnings():
        warnings.simplefilter("always", EmotalkWarning)
        warnings.showwarning = show
        pipe = Pipeline.from_checkpoints(source, device=args.device, load_texture=args.renderer == "neural")
        result = pipe.generate(args.image, args.audio, emotion=args.emotion, intensity=intensity, out=args.out,
                               finetune_steps=args.finetune_steps, blink=not args.no_blink,
                               renderer=args.renderer, size=args.size, batch_size=args.batch_size,
                               seed=args.seed, background=not args.no_background_replacement,
                               progress=not args.quiet, feature_source=args.audio_features)
    if not args.quiet:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items() if k != "total")
        w, h = result.size
        print(f"wrote {result.path}: {result.frames} frames ({result.duration:.2f} s at {result.fps:g} fps), "
              f"{w}x{h}, {result.renderer} renderer; {result.seconds['total']:.1f} s ({stages})")
    return 0
