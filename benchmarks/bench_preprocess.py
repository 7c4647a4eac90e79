"""Preprocessing throughput (frames/s) on this machine.

Builds its own input: a MEAD-layout folder whose clips are a real public-domain photo (Grace Hopper)
placed on a ``--size`` canvas with a face about ``--face`` pixels wide and a small head motion, plus a
tone-burst wav, then runs the real pipeline (decode, landmark tracking, alignment, crops, JPEG,
features, atomic writes) and prints frames/s overall and per stage.

    python benchmarks/bench_preprocess.py                      # 1280x720, 4 clips x 4 s, 1 worker
    python benchmarks/bench_preprocess.py --size 1920x1080 --workers 1 2 --features mel
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_video(path: Path, wav: Path, width: int, height: int, face: int, seconds: float, fps: float) -> None:
    import cv2

    from emotalk.data.io import media
    from emotalk.data.face.detect import DlibLandmarker
    from emotalk.data.io.photos import public_domain_photos

    photo = public_domain_photos()["grace_hopper"]
    box = DlibLandmarker().largest_face(photo).box
    s = face / float(box[2] - box[0])
    photo = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:] = (30, 70, 40)  # MEAD-like dark green
    ph, pw = photo.shape[:2]
    y0, x0 = max(0, (height - ph) // 2), max(0, (width - pw) // 2)
    canvas[y0:y0 + min(ph, height), x0:x0 + min(pw, width)] = photo[:min(ph, height), :min(pw, width)]
    n = int(round(seconds * fps))
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    media.write_wav(wav, (0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2.5 * t) > 0)).astype(np.float32), sr)

    def frames():
        for i in range(n):
            m = np.float32([[1, 0, 6 * np.sin(2 * np.pi * i / 50)], [0, 1, 3 * np.sin(2 * np.pi * i / 70)]])
            yield cv2.warpAffine(canvas, m, (width, height), borderMode=cv2.BORDER_REPLICATE)

    media.write_video(path, frames(), fps, crf=20)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1280x720", help="video size WxH (MEAD is 1920x1080)")
    ap.add_argument("--face", type=int, default=300, help="face width in pixels")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1])
    ap.add_argument("--features", default="phonemes", choices=["phonemes", "mel"])
    ap.add_argument("--crop-size", type=int, default=256)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    from emotalk.data.io.clip import list_clips, load_clip
    from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        t0 = time.perf_counter()
        src_v, src_a = tmp / "src.mp4", tmp / "src.wav"
        make_video(src_v, src_a, width, height, args.face, args.seconds, 30.0)
        raw = tmp / "raw"
        for i in range(args.clips):
            emo, lvl = ("neutral", 1) if i == 0 else ("happy", 2)
            v = raw / "B001" / "video" / "front" / emo / f"level_{lvl}" / f"{i + 1:03d}.mp4"
            a = raw / "B001" / "audio" / emo / f"level_{lvl}" / f"{i + 1:03d}.wav"
            for p, s in ((v, src_v), (a, src_a)):
                p.parent.mkdir(parents=True, exist_ok=True)
                os.link(s, p)
        print(f"input: {args.clips} clips of {args.seconds:g} s, {width}x{height} at 30 fps, face ~{args.face} px "
              f"(made in {time.perf_counter() - t0:.1f} s); cpu cores: {os.cpu_count()}")
        for w in args.workers:
            out = tmp / f"out_w{w}"
            opts = PreprocessOptions(features=args.features, crop_size=args.crop_size)
            t1 = time.perf_counter()
            summary = preprocess_dataset("mead", raw, out, workers=w, options=opts, progress=False)
            dt = time.perf_counter() - t1
            if summary.skipped:
                print(f"  workers={w}: skipped {summary.skipped}; see {out / 'report.jsonl'}")
            stages = {"landmarks": 0.0, "crops": 0.0, "features": 0.0}
            for p in list_clips(out):
                for k, v in load_clip(p, validate=False).extra.get("seconds", {}).items():
                    stages[k] = stages.get(k, 0.0) + v
            per_stage = ", ".join(f"{k} {summary.frames / v:.0f} f/s" for k, v in stages.items() if v > 0)
            print(f"workers={w}: {summary.frames} frames in {dt:.2f} s = {summary.frames / dt:.1f} frames/s "
                  f"end to end (per stage, one process: {per_stage})")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
