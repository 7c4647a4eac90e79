"""``emotalk preprocess``: a raw dataset folder -> processed clips (see :mod:`emotalk.data.preprocess.pipeline`).

    emotalk preprocess --dataset mead --root /data/MEAD --out data/processed/mead \\
        --subjects M003 M005 W009 --workers 8 --features phonemes
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emotalk.data.face.alignment import DEFAULT_FACE_SCALE
from emotalk.data.face.track import TrackerOptions
from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset
from emotalk.data.preprocess.readers import DEFAULT_TEST_LAST, READERS
from emotalk.data.speech.features import FEATURE_BACKENDS
from emotalk.errors import InputError

log = logging.getLogger(__name__)


def _subjects(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = []
    for v in values:
        out += [s for s in v.replace(",", " ").split() if s]
    return out or None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=sorted(READERS),
                   help="raw dataset layout (mead-mini: MEAD's layout with .wav audio)")
    p.add_argument("--root", required=True, help="folder holding the raw dataset")
    p.add_argument("--out", required=True, help="output folder, e.g. data/processed/mead")
    p.add_argument("--subjects", nargs="+", metavar="ID",
                   help="only these subjects (MEAD M003 ..., CREMA-D 1001 ..., RAVDESS Actor_01 ...; "
                        "space- or comma-separated)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--features", default="phonemes", choices=sorted(FEATURE_BACKENDS),
                   help="speech features: phonemes (offline pocketsphinx), mel, or deepspeech "
                        "(needs --deepspeech-model or --deepspeech-dir)")
    p.add_argument("--window", type=int, default=None,
                   help="feature window W per video frame (default: deepspeech 6, phonemes 20, mel 20)")
    p.add_argument("--deepspeech-model", default=None, metavar="PATH",
                   help="frozen DeepSpeech 0.1.0 graph (deepspeech-0_1_0-b90017e8.pb): compute the deepspeech "
                        "features from each clip's audio (in torch; no TensorFlow)")
    p.add_argument("--deepspeech-dir", default=None,
                   help="folder of per-clip DeepSpeech feature files ((T25, 16, 29) .npy)")
    p.add_argument("--deepspeech-fps", type=float, default=25.0,
                   help="window rate of the DeepSpeech files (default 25: 16-step windows, stride 2 at 50 Hz)")
    p.add_argument("--crop-size", type=int, default=256, help="face crop size in pixels (default 256)")
    p.add_argument("--face-scale", type=float, default=DEFAULT_FACE_SCALE,
                   help="face size in the crop: crop pixels per canonical unit / crop size (default %(default)s)")
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate of the processed clips (default 30)")
    p.add_argument("--detector", default="dlib", choices=["dlib", "face_alignment"],
                   help="landmark backend (face_alignment needs local FAN weights)")
    p.add_argument("--face-alignment-weights", default=None,
                   help="path of 2DFAN4-11f355bf06.pth.tar for --detector face_alignment")
    p.add_argument("--landmarks", default="detect", choices=["detect", "sidecar"],
                   help="detect: track landmarks with --detector (default); sidecar: use mead-mini's "
                        "ground-truth <NNN>.landmarks.npz where present")
    p.add_argument("--smoothing", default="savgol", choices=["savgol", "one_euro", "none"],
                   help="temporal landmark smoothing (default savgol)")
    p.add_argument("--test-last", type=int, default=DEFAULT_TEST_LAST,
                   help="MEAD: mark the last N sentences per emotion/level as split=test (default %(default)s)")
    p.add_argument("--min-frames", type=int, default=8, help="skip clips shorter than this (default 8)")
    p.add_argument("--max-clips", type=int, default=None, help="process at most this many clips (trial runs)")
    p.add_argument("--include-song", action="store_true", help="RAVDESS: include sung clips")
    p.add_argument("--no-calm", action="store_true", help="RAVDESS: drop calm clips (default: calm -> neutral)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    if args.crop_size < 32 or args.crop_size % 2:
        raise InputError(f"--crop-size must be an even number >= 32, got {args.crop_size}")
    for flag, value in (("--fps", args.fps), ("--face-scale", args.face_scale),
                        ("--deepspeech-fps", args.deepspeech_fps)):
        if not (value > 0 and value < float("inf")):
            raise InputError(f"{flag} must be a positive number, got {value}")
    for flag, value in (("--min-frames", args.min_frames), ("--window", args.window), ("--max-clips", args.max_clips)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a file; give a folder for the processed clips")
    reader_options = {}
    if args.dataset in ("mead", "mead-mini"):
        reader_options["test_last"] = args.test_last
    if args.dataset == "ravdess":
        reader_options.update(include_song=args.include_song, include_calm=not args.no_calm)
    opts = PreprocessOptions(fps=args.fps, crop_size=args.crop_size, face_scale=args.face_scale,
                             features=args.features, window=args.window, deepspeech_dir=args.deepspeech_dir,
                             deepspeech_model=args.deepspeech_model,
                             deepspeech_group_fps=args.deepspeech_fps, detector=args.detector,
                             face_alignment_weights=args.face_alignment_weights, min_frames=args.min_frames,
                             landmark_source=args.landmarks,
                             tracker=TrackerOptions(smoothing=args.smoothing))
    summary = preprocess_dataset(args.dataset, args.root, args.out, subjects=_subjects(args.subjects),
                                 workers=args.workers, options=opts, progress=False if args.quiet else None,
                                 max_clips=args.max_clips, reader_options=reader_options)
    for line in summary.lines():
        log.info(line)
    return 0
