"""Speech-feature throughput: seconds of audio processed per second, per backend and device.

Backends: ``phonemes`` (pocketsphinx, CPU), ``mel`` (librosa, CPU) and ``deepspeech`` (the DeepSpeech
0.1.0 network in torch; CPU, and CUDA when available). The audio is eSpeak speech from the project's
TTS, ``--seconds`` long, processed as ``--clips`` clips. DeepSpeech runs the real file when given
(``--deepspeech-model deepspeech-0_1_0-b90017e8.pb``) and otherwise random weights at the released
model's sizes (``--n-hidden 2048``: same arithmetic, same speed); its time is split into the input
pipeline (MFCC, context, normalisation; numpy) and the network, and on CUDA the clips are also run as
one padded batch.

    python benchmarks/bench_features.py                                  # 3 clips x 10 s
    python benchmarks/bench_features.py --backends deepspeech --deepspeech-model deepspeech-0_1_0-b90017e8.pb
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

log = logging.getLogger("bench_features")


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    from emotalk.mini.tts import synthesize

    text = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
            "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. ")
    out, n = [], int(seconds * 16000)
    while sum(len(a) for a in out) < n:
        out.append(synthesize(text, sample_rate=16000, seed=seed).audio)
    return np.concatenate(out)[:n].astype(np.float32)


def random_weights(n_hidden: int, seed: int = 0):
    from emotalk.data.speech.deepspeech import N_CLASSES, N_INPUT, DeepSpeechWeights

    rng = np.random.default_rng(seed)
    nc = n_hidden

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[0])).astype(np.float32)

    dense = {"1": (w(N_INPUT, n_hidden), w(n_hidden)), "2": (w(n_hidden, n_hidden), w(n_hidden)),
             "3": (w(n_hidden, 2 * nc), w(2 * nc)), "5": (w(2 * nc, n_hidden), w(n_hidden)),
             "6": (w(n_hidden, N_CLASSES), w(N_CLASSES))}
    lstm = {d: (w(3 * nc, 4 * nc), w(4 * nc)) for d in ("fw", "bw")}
    return DeepSpeechWeights(dense=dense, lstm=lstm)


def timed(fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["phonemes", "mel", "deepspeech"])
    ap.add_argument("--deepspeech-model", default=None, help="frozen graph (default: random weights)")
    ap.add_argument("--n-hidden", type=int, default=2048, help="random-weight model width (released: 2048)")
    ap.add_argument("--devices", nargs="+", default=None, help="deepspeech devices (default: cpu [+ cuda])")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from emotalk.data.speech.deepspeech import DeepSpeechExtractor, input_vectors, pcm16_16k
    from emotalk.data.speech.features import get_feature_backend

    clips = [speech(args.seconds, seed=i) for i in range(args.clips)]
    total = sum(len(a) for a in clips) / 16000.0
    rows = []
    for kind in [b for b in args.backends if b in ("phonemes", "mel")]:
        backend = get_feature_backend(kind)
        backend.stream(clips[0][:16000], 16000)  # warm-up (model loading)
        t, _ = timed(lambda: [backend.stream(a, 16000) for a in clips], args.repeat)
        rows.append((kind, "cpu", total / t))
    if "deepspeech" in args.backends:
        devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
        t, xs = timed(lambda: [input_vectors(pcm16_16k(a, 16000)) for a in clips], args.repeat)
        rows.append(("deepspeech input pipeline", "cpu", total / t))
        weights = None if args.deepspeech_model else random_weights(args.n_hidden)
        for dev in devices:
            if args.deepspeech_model:
                t_load, ext = timed(lambda: DeepSpeechExtractor.from_file(args.deepspeech_model, device=dev))
                log.info("loaded %s on %s in %.1f s", args.deepspeech_model, dev, t_load)
            else:
                ext = DeepSpeechExtractor(weights, device=dev)
            ext.logits_batch([xs[0][:50]])  # warm-up (cuDNN plans, allocator)
            sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)

            def one_by_one():
                out = [ext.logits_batch([x]) for x in xs]
                sync()
                return out

            t, _ = timed(one_by_one, args.repeat)
            rows.append((f"deepspeech network ({ext.sizes['n_cell_dim']} cells), per clip", dev, total / t))
            if dev.startswith("cuda"):
                t, _ = timed(lambda: ext.logits_batch(xs), args.repeat)
                rows.append((f"deepspeech network, {len(xs)} clips batched", dev, total / t))
    print(f"{len(clips)} clips x {args.seconds:g} s of speech; seconds of audio per second (higher is faster)")
    for name, dev, rate in rows:
        print(f"  {name:48s} {dev:5s} {rate:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
