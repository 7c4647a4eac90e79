"""``emotalk generate`` speed and memory: seconds per stage, frames/s and peak memory for a given audio length.

    python benchmarks/bench_generate.py [--seconds 600] [--checkpoints DIR | --model tiny|paper]
                                        [--renderer neural|warp] [--image PHOTO] [--device auto|cpu|cuda]
                                        [--batch N] [--finetune-steps 5] [--json out.json]

The default is the documented case: a **10-minute** speech track. The speech is eSpeak NG TTS (offline) of
a few Harvard sentences, tiled to ``--seconds``; the photo is Grace Hopper (512 x 600) unless ``--image``.

Models: trained checkpoints (``--checkpoints DIR`` with landmark/ and texture/), or randomly initialised
G_L + G_T built from ``configs/{landmark,texture}/<model>.yaml`` with log-mel features (``--model``,
default ``tiny``; ``paper`` = the appendix widths at 256 x 256) - speed and memory do not depend on the
weights.

Memory: a sampler thread reads the process's resident set size (``/proc/self/statm``) every 50 ms;
reported are the RSS before ``generate``, its peak during the run, and the RSS at 10 %, 50 % and 90 % of
the render stage - flat when frames are streamed (nothing per frame is kept but 68 x 2 landmarks).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler(threading.Thread):
    def __init__(self, every: float = 0.05):
        super().__init__(daemon=True)
        self.every, self.samples, self._halt = every, [], threading.Event()

    def run(self):
        while not self._halt.is_set():
            self.samples.append((time.perf_counter(), rss_bytes()))
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join()
        self.samples.append((time.perf_counter(), rss_bytes()))

    def at(self, t: float) -> int:
        """RSS of the last sample at or before time ``t``."""
        best = self.samples[0][1]
        for ts, r in self.samples:
            if ts > t:
                break
            best = r
        return best


def speech_track(seconds: float, path: Path) -> None:
    from emotalk.data.io.media import write_wav
    from emotalk.mini.tts import synthesize

    texts = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
             "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish."]
    clip = np.concatenate([synthesize(t, seed=i).audio for i, t in enumerate(texts)])
    n = int(round(seconds * 16000))
    write_wav(path, np.resize(clip, n), 16000)


def random_pipeline(model: str, device: str):
    """A Pipeline of randomly initialised G_L + G_T, built exactly as a checkpoint would be rebuilt."""
    from emotalk.config import to_dict
    from emotalk.data.face.background import DEFAULT_BACKGROUND_RGB
    from emotalk.data.loading import CheckpointMeta, LoadedModel, build_model
    from emotalk.data.speech.features import feature_info
    from emotalk.inference import Pipeline
    from emotalk.train.tasks import load_train_config

    info = feature_info("mel")
    lcfg = load_train_config(f"landmark/{model}" if model != "paper" else "landmark/mead")
    lcfg.model.feature_dim, lcfg.model.window = info.dim, info.window
    tcfg = load_train_config(f"texture/{model}" if model != "paper" else "texture/mead")
    landmark = LoadedModel(build_model("landmark", lcfg.model).eval(), lcfg.model,
                           CheckpointMeta("landmark", 0, to_dict(lcfg), feature_kind="mel", feature_dim=info.dim,
                                          window=info.window, fps=30.0))
    texture = LoadedModel(build_model("texture", tcfg.model).eval(), tcfg.model,
                          CheckpointMeta("texture", 0, to_dict(tcfg), background_rgb=DEFAULT_BACKGROUND_RGB))
    return Pipeline(landmark, texture, device=device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="audio length (default: 600 = 10 minutes)")
    ap.add_argument("--checkpoints", help="folder with landmark/ and texture/ (default: random weights)")
    ap.add_argument("--model", choices=("tiny", "paper"), default="tiny", help="random-weight model size")
    ap.add_argument("--renderer", choices=("neural", "warp"), default="neural")
    ap.add_argument("--image", help="photo (default: Grace Hopper, 512x600)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=None, help="G_T batch size")
    ap.add_argument("--finetune-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)

    import torch

    from emotalk.data.io.media import probe_video
    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.inference import Pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    image = args.image or str(grace_hopper_path())
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        wav = Path(tmp) / "speech.wav"
        t = time.perf_counter()
        speech_track(args.seconds, wav)
        tts_s = time.perf_counter() - t
        if args.checkpoints:
            pipe = Pipeline.from_checkpoints(args.checkpoints, device=args.device,
                                             load_texture=args.renderer == "neural")
            models = f"checkpoints {args.checkpoints}"
        else:
            pipe = random_pipeline(args.model, args.device)
            models = f"random {args.model} models"
        # warm-up on one second: imports, dlib, librosa/numba, allocator pools
        warm = Path(tmp) / "warm.wav"
        speech_track(1.0, warm)
        pipe.generate(image, warm, emotion="happy", intensity=2, out=Path(tmp) / "warm.mp4",
                      renderer=args.renderer, finetune_steps=args.finetune_steps, batch_size=args.batch,
                      progress=False)
        import gc

        gc.collect()
        sampler = RssSampler()
        rss0 = rss_bytes()
        sampler.start()
        r = pipe.generate(image, wav, emotion="happy", intensity=2, out=Path(tmp) / "out.mp4",
                          renderer=args.renderer, finetune_steps=args.finetune_steps, batch_size=args.batch,
                          progress=sys.stderr.isatty())
        t1 = time.perf_counter()
        sampler.stop()
        info = probe_video(r.path)
        size_mb = r.path.stat().st_size / 1e6
    render_s = r.seconds["render"]
    render_start = t1 - render_s
    peak = max(s for _, s in sampler.samples)
    mb = lambda b: round(b / 2**20, 1)  # noqa: E731
    out = {
        "audio_seconds": args.seconds, "frames": r.frames, "video_frames": info.num_frames,
        "size": list(r.size), "renderer": args.renderer, "models": models, "device": str(pipe.device),
        "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "seconds": r.seconds, "frames_per_second_total": round(r.frames / r.seconds["total"], 2),
        "frames_per_second_render": round(r.frames / render_s, 2) if render_s else None,
        "realtime_factor": round(args.seconds / r.seconds["total"], 3),
        "rss_before_mb": mb(rss0), "rss_peak_mb": mb(peak), "rss_growth_mb": mb(peak - rss0),
        "rss_render_10_50_90_mb": [mb(sampler.at(render_start + f * render_s)) for f in (0.1, 0.5, 0.9)],
        "mp4_mb": round(size_mb, 2), "tts_seconds": round(tts_s, 2),
    }
    print(f"{args.seconds:g} s of speech -> {r.frames} frames ({r.size[0]}x{r.size[1]}, {args.renderer}, {models}, "
          f"{out['device']}, {out['torch_threads']} threads)")
    for k, v in r.seconds.items():
        print(f"  {k:10s} {v:9.2f} s")
    print(f"  frames/s: {out['frames_per_second_render']} (render stage), "
          f"{out['frames_per_second_total']} (whole run); "
          f"{out['realtime_factor']}x real time")
    print(f"  RSS: {out['rss_before_mb']} MB before, peak {out['rss_peak_mb']} MB (+{out['rss_growth_mb']} MB); "
          f"during render at 10/50/90 %: {out['rss_render_10_50_90_mb']} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
