"""Speech features: windows of shape (T, W, D) aligned to video frames, for every backend."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from emotalk.data.speech.features import (FEATURE_BACKENDS, PHONES, SIL_INDEX, deepspeech_stream, extract_features,
                                   feature_info, find_deepspeech_file, frame_windows, get_feature_backend,
                                   phone_index, phone_segments, resample_stream)
from emotalk.errors import DataError, InputError, MissingWeightsError

SR = 16000


# ------------------------------------------------------------------------------------------- helpers
def espeak_tts(text: str, sr: int = SR) -> np.ndarray:
    """Speech from eSpeak NG (PyPI espeakng-loader): the project's TTS when available, else ctypes."""
    try:
        from emotalk.mini.tts import synthesize

        return np.asarray(synthesize(text, sample_rate=sr, lead=0.0, tail=0.0).audio, np.float32)
    except ImportError:
        pass
    import espeakng_loader
    from scipy.signal import resample_poly

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    src_sr = lib.espeak_Initialize(2, 0, str(Path(espeakng_loader.get_data_path()).parent).encode(), 0)
    chunks = []
    cb_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def cb(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    keep = cb_type(cb)
    lib.espeak_SetSynthCallback(keep)
    lib.espeak_SetVoiceByName(b"en-us")
    data = text.encode()
    lib.espeak_Synth(data, ctypes.c_size_t(len(data) + 1), 0, 0, 0, 0, None, None)
    lib.espeak_Synchronize()
    audio = np.concatenate(chunks).astype(np.float64) / 32768.0
    g = np.gcd(sr, src_sr)
    return resample_poly(audio, sr // g, src_sr // g).astype(np.float32)


def adnerf_windows(stream50: np.ndarray, win: int = 16, stride: int = 2) -> np.ndarray:
    """What the DeepSpeech-0.1.0 extractors (AD-NeRF / ER-NeRF ``deepspeech_features.py``) save."""
    pad = np.zeros((win // 2, stream50.shape[1]), stream50.dtype)
    x = np.concatenate([pad, stream50, pad])
    return np.stack([x[i:i + win] for i in range(0, x.shape[0] - win, stride)])


@pytest.fixture(scope="module")
def speech():
    """1 s silence + TTS sentence + 1 s silence, and the speech's start/end in seconds."""
    voice = espeak_tts("The quick brown fox jumps over the lazy dog.")
    assert voice.size > SR  # more than a second of speech
    sil = np.zeros(SR, np.float32)
    return np.concatenate([sil, voice, sil]), 1.0, 1.0 + len(voice) / SR


# ------------------------------------------------------------------------------------------- windowing
def test_frame_windows_centred_and_padded():
    stream = np.arange(100, dtype=np.float32)[:, None]  # sample i has value i, rate 100 Hz
    w = frame_windows(stream, rate=100, num_frames=30, fps=30, window=6, pad=-1)
    assert w.shape == (30, 6, 1)
    for t in (0, 7, 29):
        c = int(round(t * 100 / 30))
        expect = [v if 0 <= v < 100 else -1 for v in range(c - 3, c + 3)]
        assert w[t, :, 0].tolist() == expect
    assert w[0, :3, 0].tolist() == [-1, -1, -1]  # before the start: padding


def test_resample_stream_linear():
    s = np.stack([np.arange(50), 2 * np.arange(50)], 1).astype(np.float32)  # 1 s at 50 Hz
    r = resample_stream(s, 50, 30, 30)
    np.testing.assert_allclose(r[:, 0], np.arange(30) * 50 / 30, atol=1e-4)


# ------------------------------------------------------------------------------------------- deepspeech
def test_deepspeech_import_convention(tmp_path):
    rng = np.random.default_rng(0)
    n50 = 151  # 3.02 s of 50 Hz logits
    stream50 = rng.normal(size=(n50, 29)).astype(np.float32)
    ds = adnerf_windows(stream50)
    assert ds.shape == (76, 16, 29)  # (T25, 16, 29)
    rebuilt = deepspeech_stream(ds)
    np.testing.assert_array_equal(rebuilt[:n50], stream50)  # exact: the windows overlap losslessly
    path = tmp_path / "M003" / "angry_level1_001.npy"
    path.parent.mkdir()
    np.save(path, ds)
    assert find_deepspeech_file(tmp_path, "M003", "angry_level1_001") == path
    T = 90  # 3 s at 30 fps
    feats = extract_features("deepspeech", source=path, num_frames=T, fps=30.0)
    assert feats.shape == (T, 6, 29) and feats.dtype == np.float32
    # window centre (index W//2) of frame t is the 50 Hz stream interpolated at t / 30 s
    for t in (0, 10, 45, 89):
        x = t / 30 * 50
        j = int(np.floor(x))
        expect = stream50[j] * (1 - (x - j)) + stream50[min(j + 1, n50 - 1)] * (x - j)
        np.testing.assert_allclose(feats[t, 3], expect, atol=1e-4)
    np.testing.assert_array_equal(feats[0, :3], 0)  # zero padding before the start, like the extractors
    np.testing.assert_allclose(feats[1, 2], feats[0, 3], atol=1e-6)  # consecutive frames overlap
    # other window sizes and a raw (N, 29) stream
    assert extract_features("deepspeech", source=stream50, num_frames=T, window=8).shape == (T, 8, 29)


def test_deepspeech_errors(tmp_path):
    with pytest.raises(MissingWeightsError, match="deepspeech-dir"):
        extract_features("deepspeech", np.zeros(SR, np.float32))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((10, 16, 30), np.float32))
    with pytest.raises(DataError, match="29 logits"):
        extract_features("deepspeech", source=bad, num_frames=5)
    with pytest.raises(DataError, match="no DeepSpeech features"):
        find_deepspeech_file(tmp_path, "M003", "missing_clip")


# ------------------------------------------------------------------------------------------- phonemes
def test_phoneme_windows_shape_and_one_hot(speech):
    audio, _, _ = speech
    fps = 30.0
    T = int(round(len(audio) / SR * fps))
    feats = extract_features("phonemes", audio, SR, fps=fps)
    assert feats.shape == (T, 20, len(PHONES)) == (T, 20, 40)
    np.testing.assert_array_equal(feats.sum(-1), 1.0)  # one-hot everywhere (padding is SIL)
    # explicit frame count (e.g. a video a little longer than its audio) is honoured
    assert extract_features("phonemes", audio, SR, num_frames=T + 7, fps=fps).shape[0] == T + 7
    assert phone_index("AH1") == PHONES.index("AH") and phone_index("+NSN+") == SIL_INDEX


def test_phonemes_find_silence_and_speech(speech):
    audio, start, end = speech
    fps = 30.0
    feats = extract_features("phonemes", audio, SR, fps=fps)
    centre = feats[:, feats.shape[1] // 2]  # the 10-ms frame at each video frame
    is_sil = centre[:, SIL_INDEX] == 1
    t = np.arange(len(feats)) / fps
    lead = is_sil[t < start - 0.15]
    tail = is_sil[t > end + 0.15]
    inside = is_sil[(t > start + 0.15) & (t < end - 0.15)]
    assert lead.mean() > 0.9 and tail.mean() > 0.9, (lead.mean(), tail.mean())
    assert inside.mean() < 0.3, inside.mean()
    segs = phone_segments(audio, SR)
    speech_phones = {p for p, s, e in segs if phone_index(p) != SIL_INDEX}
    assert len(speech_phones) >= 8  # a real sentence has many different phones


# ------------------------------------------------------------------------------------------- mel
def test_mel_windows(speech):
    audio, start, end = speech
    feats = extract_features("mel", audio, SR, num_frames=100, fps=25.0)
    assert feats.shape == (100, 20, 80)
    energy = feats[:, 10].mean(-1)
    t = np.arange(100) / 25.0
    assert energy[(t > start + 0.2) & (t < end - 0.2)].mean() > energy[t < start - 0.2].mean() + 3.0
    # the padding value is the log floor (silence)
    assert np.allclose(feats[0, 0], np.log(1e-5))


# ------------------------------------------------------------------------------------------- registry
def test_registry_and_info():
    assert set(FEATURE_BACKENDS) >= {"deepspeech", "phonemes", "mel"}
    assert feature_info("deepspeech").dim == 29 and feature_info("deepspeech").window == 6
    assert feature_info("phonemes", window=10).window == 10 and feature_info("phonemes").dim == 40
    assert feature_info("mel").dim == 80 and feature_info("mel").rate == 100
    assert get_feature_backend("MEL").kind == "mel"
    with pytest.raises(InputError, match="unknown feature kind"):
        get_feature_backend("wav2vec")
