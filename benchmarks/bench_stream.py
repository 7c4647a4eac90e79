"""Streaming speed and latency (issue 15 §2): sustained frames/s, first-frame latency and the steady-state
audio-to-frame delay of :meth:`emotalk.Pipeline.stream`, split into feature look-ahead and compute.

    python benchmarks/bench_stream.py [--checkpoints DIR] [--seconds 10] [--size 128] [--threads 1]
                                      [--renderer neural|warp] [--device cpu] [--no-overlap]
                                      [--json out.json]

Three runs on the same TTS speech (eSpeak NG, Harvard sentences) and photo (Grace Hopper, 512 x 600):

``sustained``  the stream fed as fast as it takes the audio (a file) in ``--block-ms`` blocks: frames /
               seconds of iteration (no video encoding). ``compute_latency``: for each frame, the time from
               handing over the audio block that completed its window to the frame coming out (features,
               G_L, smoothing, G_T and paste-back of that block's frames) - the latency beyond the look-ahead
``batch``      the same work done the way ``generate`` does it (features of the whole file, G_L, smoothing,
               blinks, G_T + paste-back of every frame, no encoding): the same-run reference, so ``ratio``
               = sustained / batch is comparable across loaded machines
``realtime``   the audio arrives at its own pace (as from a microphone) for ``--realtime-seconds``: for each
               frame, ``delay`` = the time it came out minus the time its own audio sample arrived; the
               first frame's latency counts from the first audio sample. ``lookahead`` is the audio the
               stream waits for by design (feature window + step + smoothing delay; the phone decoder's
               warm-up only before the first frame). Meaningful only when ``keeps_up`` (sustained >= fps);
               otherwise the delay grows with the queue

The stream renders (G_T + paste-back) on a render thread while it decodes the next audio block, so two
cores work at once; ``--no-overlap`` renders on the stream's own thread (one core, the earlier figure).
With the render thread the stage seconds overlap (their sum exceeds the wall time) and a frame's compute
latency counts from the block that released it (``StreamFrame.ready_audio_seconds``).

``*_per_cpu_second``: frames per second of this process's CPU time - what one uncontended core would give,
a figure that survives a machine shared with other jobs (wall-clock figures there are inflated).
Targets (2-core CPU, tiny models, 128^2): sustained >= 30 frames/s, compute latency <= 150 ms beyond the
look-ahead. On a shared machine report ``ratio`` and the per-CPU-second figures, and say so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import random_pipeline, speech_track  # noqa: E402  (bench_generate's speech and models)


def paced(samples: np.ndarray, block: int, sr: int = 16000):
    """Yield ``block``-sample pieces no earlier than real time (the first sample arrives at the first
    ``next()``); ``paced.start`` is that moment."""
    paced.start = time.perf_counter()
    for i in range(0, len(samples), block):
        due = paced.start + (i + block) / sr  # the block is complete when its last sample has arrived
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield samples[i:i + block]


def batch_frames(pipe, image, speech, opts) -> tuple[int, float]:
    """``generate``'s stages without the encoder: frames, seconds."""
    t = time.perf_counter()
    photo = pipe.prepare_photo(image, opts.size)
    controls = pipe.controls(opts.emotion, opts.intensity, opts.renderer)
    prepared = pipe.prepare_renderer(photo, opts.renderer, controls, opts.finetune_steps, opts.background)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    feats = pipe.audio_features(speech)
    raw = pipe.predict_landmarks(feats, controls.landmark, photo.aligned)
    lm, _ = pipe.animate(raw, opts.blink, opts.seed, opts.smoothing)
    n = sum(1 for _ in pipe.frames(photo, lm, prepared))
    return n, time.perf_counter() - t, setup


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", default=None,
                    help="folder with landmark/ and texture/ (default: what generate finds, e.g. the demo's)")
    ap.add_argument("--model", choices=("tiny", "paper"), help="random-weight models instead of checkpoints "
                    "(paper: the appendix widths; speed does not depend on the weights)")
    ap.add_argument("--seconds", type=float, default=10.0, help="speech length (default: 10)")
    ap.add_argument("--realtime-seconds", type=float, default=4.0, help="length of the real-time run (default: 4)")
    ap.add_argument("--size", type=int, default=128, help="face crop size (default: 128)")
    ap.add_argument("--renderer", choices=("neural", "warp"), default="neural")
    ap.add_argument("--image", help="photo (default: Grace Hopper, 512x600)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1, best for tiny models)")
    ap.add_argument("--block-ms", type=float, default=20.0, help="audio block of the real-time run (ms)")
    ap.add_argument("--finetune-steps", type=int, default=0, help="one-shot steps (setup only; default 0)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="render on the stream's own thread (one core) instead of a render thread")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)

    import torch

    from emotalk.data.io.media import load_audio
    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.inference import GenerateOptions, Pipeline

    torch.set_num_threads(args.threads)
    image = args.image or str(grace_hopper_path())
    opts = GenerateOptions(emotion="happy", intensity=2, size=args.size, renderer=args.renderer,
                           finetune_steps=args.finetune_steps, progress=False)
    if args.model:
        pipe = random_pipeline(args.model, args.device)
        models = f"random {args.model} models (mel features)"
    else:
        pipe = Pipeline.from_checkpoints(args.checkpoints, device=args.device, load_texture=args.renderer == "neural")
        models = (f"{pipe.landmark.meta.path} ({pipe.feature_kind} features), "
                  f"{pipe.texture.meta.path if pipe.texture is not None else 'warp renderer'}")
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        wav = Path(tmp) / "speech.wav"
        speech_track(args.seconds, wav)
        audio = load_audio(wav)
        warm = pipe.stream(audio[:16000], image=image, options=opts)  # imports, librosa/numba, decoder model
        sum(1 for _ in warm)

        # sustained: as fast as the stream takes the audio (a file); per block, the time from handing the
        # block over to each frame it completed coming out = compute latency, whatever the pacing
        handed = {}  # samples handed over so far -> when (a frame's ready_audio_seconds names its block)

        def timed_blocks(a, n=int(round(args.block_ms / 1000 * 16000))):
            for i in range(0, len(a), n):
                handed[min(i + n, len(a))] = time.perf_counter()
                yield a[i:i + n]

        s = pipe.stream(timed_blocks(audio), image=image, options=opts, overlap=not args.no_overlap)
        compute = []
        t, c = time.perf_counter(), time.process_time()
        for f in s:  # frames rendered after the audio ended were released by the last block
            done = handed.get(int(round(f.ready_audio_seconds * 16000)))
            compute.append(time.perf_counter() - (done if done is not None else handed[max(handed)]))
        sustained_s, sustained_cpu = time.perf_counter() - t, time.process_time() - c
        n_stream = s.stats.frames
        stages = dict(s.stats.stages)
        # batch reference, same process, same inputs
        c = time.process_time()
        n_batch, batch_s, _ = batch_frames(pipe, image, audio, opts)
        batch_cpu = time.process_time() - c

        # real time: blocks arrive at the audio's own pace (a few seconds: enough for the steady state)
        rt = audio[:int(args.realtime_seconds * 16000)]
        s = pipe.stream(paced(rt, int(round(args.block_ms / 1000 * 16000))), image=image, options=opts,
                        overlap=not args.no_overlap)
        delays, first = [], None
        for f in s:
            now = time.perf_counter() - paced.start
            if first is None:
                first = now
            delays.append(now - f.time)
    la = s.lookahead
    d = np.array(delays)
    steady = d[int(len(d) * 0.3):]  # past the start (warm-up, first window)
    comp = np.array(compute)
    fps = float(s.fps)
    ms = lambda v: round(1000 * float(v), 1)  # noqa: E731
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} - shared: "
                   f"wall-clock figures are inflated), torch threads {args.threads}, device {pipe.device}",
        "models": models,
        "seconds_of_audio": args.seconds, "frames": n_stream, "crop_size": args.size,
        "frame_size": list(s.size),
        "overlap": not args.no_overlap,
        "sustained_fps": round(n_stream / sustained_s, 1),
        "sustained_fps_per_cpu_second": round(n_stream / sustained_cpu, 1),
        "batch_fps": round(n_batch / batch_s, 1),
        "batch_fps_per_cpu_second": round(n_batch / batch_cpu, 1),
        "ratio_stream_to_batch": round((n_stream / sustained_s) / (n_batch / batch_s), 2),
        "stage_seconds_sustained": {k: round(v, 2) for k, v in stages.items()},
        "setup_s": round(s.stats.setup_seconds, 2),
        "lookahead_ms": {k: ms(v) for k, v in la.as_dict().items()},
        "compute_latency_ms": {"median": ms(np.median(comp)), "p95": ms(np.percentile(comp, 95)),
                               "max": ms(comp.max())},
        "realtime": {"seconds": round(len(rt) / 16000, 1), "block_ms": args.block_ms,
                     "keeps_up": bool(n_stream / sustained_s >= fps),
                     "first_frame_latency_ms": ms(first),
                     "delay_ms": {"median": ms(np.median(steady)), "p95": ms(np.percentile(steady, 95))},
                     "delay_minus_lookahead_ms": ms(np.median(steady) - la.total)},
        "targets": {"sustained_fps>=30": n_stream / sustained_s >= 30,
                    "compute_latency_ms<=150": float(np.median(comp)) <= 0.150},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
