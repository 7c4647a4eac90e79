"""Regenerate tests/fixtures/deepspeech/: a DeepSpeech-0.1.0-shaped frozen graph and TensorFlow's answers.

The real ``deepspeech-0_1_0-b90017e8.pb`` (490 MB, trained weights) cannot live in the repository, so the
cross-implementation test uses a graph built here **in real TensorFlow** with the structure, variable
names and ops of DeepSpeech 0.1.0's ``BiRNN()`` / ``create_inference_graph()`` (top-level variables
``h1 b1 h2 b2 h3 b3 h5 b5 h6 b6``, ``tf.nn.bidirectional_dynamic_rnn`` over two
``BasicLSTMCell(forget_bias=1.0)``, time-major, ``sequence_length``, placeholders ``input_node`` /
``input_lengths``, output ``logits``), random weights and reduced widths (``--n-hidden``, default 16, so
the fixture stays small), frozen with ``convert_variables_to_constants`` (what ``freeze_graph`` does).
The frozen file is then imported again, exactly as the field's recipe does, and run on a short eSpeak
clip with the recipe's input pipeline (python_speech_features MFCC, every second frame, 9 frames of
context, global normalisation; AD-NeRF's windowing). Files written:

- ``graph.pb``      the frozen graph;
- ``clip.wav``      the speech clip (16 kHz int16, eSpeak NG via emotalk.mini.tts);
- ``reference.npz`` ``logits`` (N, 29) for the clip alone, ``batch_logits`` (2, N, 29) and
  ``batch_lengths`` for the clip batched with its first 60 % (checks ``sequence_length`` semantics),
  ``windows`` (G, 16, 29) as AD-NeRF writes them, ``sizes``, ``tf_version``.

TensorFlow is needed only here, never at run time or in CI. Run it in a separate virtual environment
(TensorFlow 2.x with ``tf_keras`` provides TF1's ``BasicLSTMCell`` under ``TF_USE_LEGACY_KERAS=1``)::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf_keras python_speech_features scipy
    /tmp/tfvenv/bin/python scripts/make_deepspeech_fixture.py --emotalk-python .venv/bin/python

The clip is synthesised by the project's own environment (``--emotalk-python``), or pass ``--wav``.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TF1's BasicLSTMCell lives in tf_keras
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

log = logging.getLogger("make_deepspeech_fixture")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "deepspeech"
TEXT = "She had your dark suit in greasy wash water."
N_CEP, N_CONTEXT, N_CLASSES = 26, 9, 29


def synthesize_clip(python: str, path: Path) -> None:
    """eSpeak NG through the project's TTS, written as 16 kHz int16 (the recipe reads int16 wavs)."""
    code = ("import sys, numpy as np; from scipy.io import wavfile; from emotalk.mini.tts import synthesize; "
            f"s = synthesize({TEXT!r}, sample_rate=16000, lead=0.1, tail=0.1); "
            "wavfile.write(sys.argv[1], 16000, np.round(np.clip(s.audio, -1, 1) * 32767).astype(np.int16))")
    subprocess.run([python, "-c", code, str(path)], check=True, cwd=ROOT)


def recipe_input_vector(audio_int16: np.ndarray) -> np.ndarray:
    """The field's input pipeline (steps 2-5 of emotalk.data.speech.deepspeech), via python_speech_features."""
    from python_speech_features import mfcc

    feats = mfcc(audio_int16, samplerate=16000, numcep=N_CEP)[::2]
    n = len(feats)
    empty = np.zeros((N_CONTEXT, N_CEP), feats.dtype)
    feats = np.concatenate((empty, feats, empty))
    win = 2 * N_CONTEXT + 1
    x = np.lib.stride_tricks.as_strided(feats, (n, win, N_CEP), (feats.strides[0],) + feats.strides,
                                        writeable=False).reshape(n, -1).copy()
    return (x - x.mean()) / x.std()


def recipe_windows(logits: np.ndarray, num_samples: int) -> np.ndarray:
    """AD-NeRF: interpolate 50 Hz -> 50 Hz over round(duration * 50) frames, 1-step windows, then pad 8
    zero steps at each end and take 16-step windows every 2 steps."""
    n = int(round(num_samples / 16000.0 * 50))
    t_in, t_out = np.arange(len(logits)) / 50.0, np.arange(n) / 50.0
    stream = np.stack([np.interp(t_out, t_in, logits[:, j]) for j in range(logits.shape[1])], 1)
    pad = np.zeros((8, stream.shape[1]))
    stream = np.concatenate((pad, stream, pad))
    return np.array([stream[i:i + 16] for i in range(0, stream.shape[0] - 16, 2)], np.float32)


def build_and_freeze(n_hidden: int, seed: int) -> tuple[bytes, dict]:
    import tensorflow as tf

    tf1 = tf.compat.v1
    tf1.disable_v2_behavior()
    n_input = N_CEP * (2 * N_CONTEXT + 1)
    n_cell = n_hidden
    sizes = dict(n_input=n_input, n_hidden_1=n_hidden, n_hidden_2=n_hidden, n_hidden_3=2 * n_cell,
                 n_cell_dim=n_cell, n_hidden_5=n_hidden, n_classes=N_CLASSES)
    graph = tf1.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed)
        x_in = tf1.placeholder(tf.float32, [None, None, n_input], name="input_node")
        seq_length = tf1.placeholder(tf.int32, [None], name="input_lengths")
        # Wide initialisers so that the clip at 20 and the LSTM's forget bias both matter.
        init = lambda std: tf1.random_normal_initializer(stddev=std, seed=None)  # noqa: E731
        shape_x = tf.shape(x_in)
        x = tf.reshape(tf.transpose(x_in, [1, 0, 2]), [-1, n_input])

        def dense(inp, i, n_in, n_out, std_h, std_b, clip=True):
            b = tf1.get_variable(f"b{i}", [n_out], initializer=init(std_b))
            h = tf1.get_variable(f"h{i}", [n_in, n_out], initializer=init(std_h))
            y = tf.add(tf.matmul(inp, h), b)
            return tf.minimum(tf.nn.relu(y), 20.0) if clip else y

        l1 = dense(x, 1, n_input, n_hidden, 0.6, 2.0)
        l2 = dense(l1, 2, n_hidden, n_hidden, 0.5, 2.0)
        l3 = dense(l2, 3, n_hidden, 2 * n_cell, 0.3, 1.0)
        fw = tf1.nn.rnn_cell.BasicLSTMCell(n_cell, forget_bias=1.0, state_is_tuple=True)
        bw = tf1.nn.rnn_cell.BasicLSTMCell(n_cell, forget_bias=1.0, state_is_tuple=True)
        l3 = tf.reshape(l3, [-1, shape_x[0], 2 * n_cell])
        outputs, _ = tf1.nn.bidirectional_dynamic_rnn(cell_fw=fw, cell_bw=bw, inputs=l3, dtype=tf.float32,
                                                      time_major=True,
                                                      sequence_length=tf.cast(seq_length, tf.int64))
        outputs = tf.reshape(tf.concat(outputs, 2), [-1, 2 * n_cell])
        l5 = dense(outputs, 5, 2 * n_cell, n_hidden, 0.4, 1.0)
        l6 = dense(l5, 6, n_hidden, N_CLASSES, 0.3, 0.5, clip=False)
        tf.reshape(l6, [-1, shape_x[0], N_CLASSES], name="logits")
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            # The LSTM biases start at zero in TF; random ones test the gate order and the forget bias.
            rng = np.random.default_rng(seed)
            for v in tf1.global_variables():
                if v.name.endswith("basic_lstm_cell/bias:0"):
                    v.load(rng.normal(0.0, 0.7, v.shape.as_list()).astype(np.float32), sess)
            log.info("variables: %s", [(v.name, v.shape.as_list()) for v in tf1.global_variables()])
            frozen = tf1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["logits"])
    return frozen.SerializeToString(deterministic=True), sizes


def run_frozen(pb: bytes, inputs: list[np.ndarray]) -> np.ndarray:
    """Import the frozen graph as the recipe does (prefix ``deepspeech``) and run a padded batch."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    gd = tf1.GraphDef()
    gd.ParseFromString(pb)
    graph = tf1.Graph()
    with graph.as_default():
        tf1.import_graph_def(gd, name="deepspeech")
    lengths = [len(a) for a in inputs]
    x = np.zeros((len(inputs), max(lengths), inputs[0].shape[1]), np.float32)
    for i, a in enumerate(inputs):
        x[i, :len(a)] = a
    with tf1.Session(graph=graph) as sess:
        out = sess.run(graph.get_tensor_by_name("deepspeech/logits:0"),
                       {graph.get_tensor_by_name("deepspeech/input_node:0"): x,
                        graph.get_tensor_by_name("deepspeech/input_lengths:0"): lengths})
    return np.transpose(out, (1, 0, 2))  # time-major -> (B, N, 29)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--wav", type=Path, help="16 kHz int16 speech clip (default: synthesise with eSpeak)")
    p.add_argument("--emotalk-python", default=str(ROOT / ".venv" / "bin" / "python"),
                   help="python of the project's environment, used to synthesise the clip")
    p.add_argument("--n-hidden", type=int, default=16, help="n_hidden = n_cell_dim (released model: 2048)")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import tensorflow as tf
    from scipy.io import wavfile

    args.out.mkdir(parents=True, exist_ok=True)
    wav = args.out / "clip.wav"
    if args.wav:
        sr, audio = wavfile.read(args.wav)
        if sr != 16000 or audio.dtype != np.int16:
            raise SystemExit(f"{args.wav}: need a 16 kHz int16 wav, got {sr} Hz {audio.dtype}")
        wavfile.write(wav, sr, audio)
    else:
        synthesize_clip(args.emotalk_python, wav)
    sr, audio = wavfile.read(wav)
    pb, sizes = build_and_freeze(args.n_hidden, args.seed)
    (args.out / "graph.pb").write_bytes(pb)
    x = recipe_input_vector(audio)
    logits = run_frozen(pb, [x])[0]
    cut = int(len(x) * 0.6)
    x_short = recipe_input_vector(audio[: cut * 320])
    batch = run_frozen(pb, [x, x_short])
    windows = recipe_windows(logits, len(audio))
    np.savez_compressed(args.out / "reference.npz", logits=logits.astype(np.float32),
                        batch_logits=batch.astype(np.float32), batch_lengths=np.array([len(x), len(x_short)]),
                        short_samples=np.int64(cut * 320), windows=windows,
                        sizes=np.array([sizes[k] for k in sorted(sizes)]), size_names=np.array(sorted(sizes)),
                        tf_version=np.array(tf.__version__))
    log.info("TF %s; clip %.2f s, %d steps; logits std %.3f; files: %s", tf.__version__, len(audio) / sr,
             len(x), logits.std(), {f.name: f.stat().st_size for f in sorted(args.out.iterdir())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
