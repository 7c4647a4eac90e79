"""DeepSpeech 0.1.0 in torch against real TensorFlow (no TensorFlow needed here).

tests/fixtures/deepspeech/ was made by scripts/make_deepspeech_fixture.py in a separate TensorFlow 2.21 +
tf_keras environment: a frozen graph with DeepSpeech 0.1.0's structure, names and ops (BiRNN with
BasicLSTMCell, forget_bias 1.0, clipped ReLU) at reduced width (n_hidden = n_cell = 16) with random
weights, an eSpeak clip, and the logits TensorFlow computed for it with the field's input recipe.
Tolerance: 1e-4 absolute on logits of magnitude up to ~6 (float32 in both; observed ~1e-5).
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from emotalk.cli.main import main
from emotalk.data.speech.deepspeech import (DeepSpeechExtractor, check_model_file, input_vectors,
                                            logits_to_windows, mfcc, pcm16_16k)
from emotalk.data.speech.deepspeech_graph import read_graph
from emotalk.data.speech.features import deepspeech_stream, extract_features, get_feature_backend
from emotalk.errors import DataError, MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "deepspeech"
GRAPH = FIX / "graph.pb"
ATOL = 1e-4
#: the fixture's LSTM steps are tiny: two threads on shared cores spend seconds spinning per clip
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ref():
    with np.load(FIX / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def clip():
    sr, audio = wavfile.read(FIX / "clip.wav")
    assert sr == 16000 and audio.dtype == np.int16
    return audio, sr


@pytest.fixture(scope="module")
def ext():
    return DeepSpeechExtractor.from_file(GRAPH)


@pytest.fixture(scope="module")
def recipe():
    """The fixture script's reference implementation of the recipe (python_speech_features based)."""
    spec = importlib.util.spec_from_file_location("make_ds_fixture", ROOT / "scripts" / "make_deepspeech_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------------------------ input
@pytest.mark.parametrize("n", [100, 400, 401, 16000, 16123])
def test_mfcc_is_python_speech_features(n):
    psf = pytest.importorskip("python_speech_features")
    x = np.random.default_rng(n).normal(0, 3000, n).astype(np.int16)
    np.testing.assert_allclose(mfcc(x.astype(np.float64)), psf.mfcc(x, 16000, numcep=26), rtol=0, atol=1e-9)


def test_input_vectors_match_recipe(clip, recipe):
    pytest.importorskip("python_speech_features")
    audio, sr = clip
    x = input_vectors(pcm16_16k(audio, sr))
    assert x.shape == (len(mfcc(audio)[::2]), 494)
    np.testing.assert_allclose(x, recipe.recipe_input_vector(audio), atol=1e-5)


def test_float_audio_gives_the_int16_values():
    a = np.array([0, 1, -1, 32767, -32768, 1234], np.int16)
    np.testing.assert_array_equal(pcm16_16k(a.astype(np.float32) / 32768.0, 16000), a.astype(np.float64))
    np.testing.assert_array_equal(pcm16_16k(a, 16000), a.astype(np.float64))


# ------------------------------------------------------------------------------------------- network
def test_graph_sizes_are_read_from_the_file(ext):
    assert ext.sizes == {"n_input": 494, "n_hidden_1": 16, "n_hidden_2": 16, "n_hidden_3": 32, "n_cell_dim": 16,
                         "n_hidden_5": 16, "n_classes": 29}


def test_logits_match_tensorflow(ext, clip, ref):
    logits = ext.logits(*clip)
    assert logits.shape == ref["logits"].shape == (127, 29)
    assert np.abs(ref["logits"]).max() > 2.0  # a non-trivial answer
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=ATOL)


def test_batch_follows_tensorflow_sequence_lengths(ext, clip, ref):
    audio, sr = clip
    short = audio[: int(ref["short_samples"])]
    out = ext.logits_batch([input_vectors(pcm16_16k(audio, sr)), input_vectors(pcm16_16k(short, sr))])
    lengths = ref["batch_lengths"]
    assert [len(o) for o in out] == list(lengths)
    for i in range(2):
        np.testing.assert_allclose(out[i], ref["batch_logits"][i, : lengths[i]], rtol=0, atol=ATOL)
    # the backward LSTM starts at the short clip's own end, so its logits differ from the long clip's
    assert np.abs(out[1] - out[0][: lengths[1]]).max() > 1e-2


@pytest.mark.parametrize("kw", [{"forget_bias": 0.0}, {"relu_clip": 1e9}])
def test_forget_bias_and_clip_matter(clip, ref, kw):
    """Without the run-time forget bias or the clip at 20 the answer is wrong: the fixture exercises both."""
    wrong = DeepSpeechExtractor.from_file(GRAPH, **kw).logits(*clip)
    assert np.abs(wrong - ref["logits"]).max() > 0.1


def test_windows_match_the_adnerf_recipe(ext, clip, ref):
    w = ext.windows(*clip)
    assert w.shape == ref["windows"].shape == (64, 16, 29)
    np.testing.assert_allclose(w, ref["windows"], rtol=0, atol=ATOL)


def test_computed_and_imported_features_meet(ext, clip, ref, tmp_path):
    """The computed (T25, 16, 29) array is what the .npy importer reads: the 50 Hz stream comes back."""
    audio, sr = clip
    stream = deepspeech_stream(ext.windows(audio, sr))
    np.testing.assert_allclose(stream[: len(ref["logits"])], ref["logits"], atol=ATOL)
    np.save(tmp_path / "clip.npy", ref["windows"])
    fps = 30.0
    from_file = extract_features("deepspeech", None, sr, num_frames=77, fps=fps, source=tmp_path / "clip.npy")
    from_model = extract_features("deepspeech", audio.astype(np.float32) / 32768.0, sr, num_frames=77, fps=fps,
                                  source=GRAPH)
    assert from_model.shape == (77, 6, 29)
    np.testing.assert_allclose(from_model, from_file, atol=ATOL)


def test_other_window_layouts():
    logits = np.arange(10 * 29, dtype=np.float32).reshape(10, 29)
    w = logits_to_windows(logits, 0.2, step_fps=50, group_fps=50, window=4)  # stride 1, no interpolation
    assert w.shape == (10, 4, 29)
    np.testing.assert_array_equal(w[2], logits[0:4])  # window i starts at step i - 2
    np.testing.assert_array_equal(w[0, :2], 0)
    w30 = logits_to_windows(logits, 0.2, step_fps=60, group_fps=30)  # 12 steps at 60 Hz, stride 2
    assert w30.shape == (6, 16, 29)
    np.testing.assert_allclose(w30[0, 8 + 1], logits[0] + (logits[1] - logits[0]) * (50 / 60), rtol=1e-6)


def test_resampled_input_is_close(ext, clip, ref):
    """48 kHz input goes through soxr (the recipe uses resampy): same logits up to resampling noise."""
    audio, sr = clip
    from scipy.signal import resample_poly

    up = np.round(resample_poly(audio.astype(np.float64), 3, 1)).astype(np.int16)
    logits = ext.logits(up, 48000)
    assert logits.shape == ref["logits"].shape
    # observed: correlation 0.998, mean |diff| 0.04; a one-step (20 ms) shift would give 0.89 and 0.43
    assert np.corrcoef(logits.ravel(), ref["logits"].ravel())[0, 1] > 0.99
    assert np.abs(logits - ref["logits"]).mean() < 0.15


# ------------------------------------------------------------------------------------------- errors
def _write_modified(tmp_path, edit) -> Path:
    from tensorboard.compat.proto import graph_pb2

    gd = graph_pb2.GraphDef()
    gd.ParseFromString(GRAPH.read_bytes())
    edit(gd)
    out = tmp_path / "edited.pb"
    out.write_bytes(gd.SerializeToString())
    return out


def test_missing_tensor_is_listed(tmp_path):
    def drop_h2(gd):
        keep = [n for n in gd.node if n.name != "h2"]
        del gd.node[:]
        gd.node.extend(keep)

    with pytest.raises(DataError) as e:
        check_model_file(_write_modified(tmp_path, drop_h2))
    msg = str(e.value)
    assert "missing h2" in msg and "h1 (494, 16)" in msg and "deepspeech-info" in msg


def test_wrong_shape_is_listed(tmp_path):
    def shrink_h6(gd):
        node = next(n for n in gd.node if n.name == "h6")
        t = node.attr["value"].tensor
        t.tensor_shape.dim[1].size = 28
        t.tensor_content = np.zeros((16, 28), np.float32).tobytes()

    with pytest.raises(DataError, match=r"h6 has shape \(16, 28\), expected \(16, 29\)"):
        DeepSpeechExtractor.from_file(_write_modified(tmp_path, shrink_h6))


@pytest.mark.parametrize("content", [b"hello, not a graph\n", bytes(range(256)) * 4, b"PK\x03\x04zipzip"])
def test_not_a_graphdef_is_one_line(tmp_path, content):
    p = tmp_path / "model.pb"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_graph(p)
    assert "\n" not in str(e.value) and ("GraphDef" in str(e.value) or "zip" in str(e.value))


def test_missing_file_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="deepspeech-0_1_0-b90017e8.pb"):
        read_graph(tmp_path / "nope.pb")


def test_backend_needs_audio_to_run_the_model():
    with pytest.raises(Exception, match="audio"):
        get_feature_backend("deepspeech").stream(None, 16000, source=GRAPH)


# ---------------------------------------------------------------------------------------------- cli
def test_deepspeech_info_lists_weights(capsys):
    assert main(["deepspeech-info", str(GRAPH)]) == 0
    out = capsys.readouterr().out
    assert "h1" in out and "(494, 16)" in out and "bidirectional_rnn/fw/basic_lstm_cell/kernel" in out
    assert "input_node float32 (?, ?, 494)" in out and "structure: OK" in out
    assert "differs from b90017e816572ddce84f5843f1fa21e6a377975e" in out


def test_deepspeech_info_rejects_non_graph(tmp_path, capsys, caplog):
    bad = tmp_path / "x.pb"
    bad.write_text("not a graph")
    caplog.set_level(logging.ERROR)
    assert main(["deepspeech-info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a frozen TensorFlow GraphDef" in err and err.count("\n") == 1


@pytest.mark.slow
def test_generate_with_deepspeech_model(tmp_path, capsys):
    """``emotalk generate --deepspeech-model``: a G_L checkpoint on deepspeech features (untrained, tiny)
    gets its features computed from the speech by the frozen graph; without the option the error says so."""
    import torch

    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.data.loading import CheckpointMeta, build_model, save_model
    from emotalk.models.landmark_generator import LandmarkModelConfig

    cfg = LandmarkModelConfig(feature_dim=29, window=6, d=16, lstm_hidden=16, lstm_layers=1, gcn_channels=(8, 16))
    torch.manual_seed(0)
    meta = CheckpointMeta(kind="landmark", step=0, config={"model": {}}, feature_kind="deepspeech", feature_dim=29,
                          window=6, fps=25.0)
    ckpt = save_model(tmp_path / "gl", build_model("landmark", cfg), "landmark", cfg, meta)
    args = ["generate", "--image", str(grace_hopper_path()), "--audio", str(FIX / "clip.wav"),
            "--landmark-checkpoint", str(ckpt), "--renderer", "warp", "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "no.mp4")]) == 2
    assert "--deepspeech-model" in capsys.readouterr().err
    out = tmp_path / "talk.mp4"
    assert main([*args, "--out", str(out), "--deepspeech-model", str(GRAPH)]) == 0
    assert out.is_file() and out.stat().st_size > 1000


@pytest.mark.slow
def test_preprocess_with_deepspeech_model(tmp_path, clip):
    """``emotalk preprocess --features deepspeech --deepspeech-model``: one CREMA-D-layout clip (a face video
    and the eSpeak wav); the stored features are the ones the extractor computes for that audio."""
    from skimage import data as skdata

    from emotalk.data.io import media
    from emotalk.data.io.clip import clip_path, load_clip

    audio, sr = clip
    n, fps = 45, 30.0
    pcm = audio[: int(n / fps * sr)]  # int16, written as is: the samples the recipe would read
    raw = tmp_path / "CREMA-D"
    (raw / "AudioWAV").mkdir(parents=True)
    (raw / "VideoMP4").mkdir(parents=True)
    media.write_wav(raw / "AudioWAV/1001_DFA_NEU_XX.wav", pcm, sr)
    face = np.ascontiguousarray(skdata.astronaut()[0:320, 60:380])
    media.write_video(raw / "VideoMP4/1001_DFA_NEU_XX.mp4", [face] * n, fps)
    out = tmp_path / "out"
    assert main(["preprocess", "--dataset", "crema-d", "--root", str(raw), "--out", str(out), "--features",
                 "deepspeech", "--deepspeech-model", str(GRAPH), "--crop-size", "96", "--quiet"]) == 0
    c = load_clip(clip_path(out, "1001", "1001_DFA_NEU_XX"))
    assert c.feature_kind == "deepspeech" and c.audio_features.shape == (n, 6, 29)
    expected = extract_features("deepspeech", pcm, sr, num_frames=n, fps=fps, source=GRAPH)
    np.testing.assert_allclose(c.audio_features, expected, atol=ATOL)
    assert np.abs(c.audio_features).max() > 1.0
    # a file that is not a graph stops the run before the first clip, in one line
    bad = tmp_path / "bad.pb"
    bad.write_text("no graph")
    assert main(["preprocess", "--dataset", "crema-d", "--root", str(raw), "--out", str(tmp_path / "o2"),
                 "--features", "deepspeech", "--deepspeech-model", str(bad), "--quiet"]) == 2
