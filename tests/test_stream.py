"""Streaming generation (issue 15 §2): audio blocks, incremental features, bounded-delay smoothing, lazy
blinks, flat memory, frames equal to ``generate``'s, and ``emotalk generate --out -`` as fragmented MP4."""
from __future__ import annotations

import io
import os
import struct
import sys
import threading
import tracemalloc

import numpy as np
import pytest

from emotalk.data.io.media import load_audio, probe_video, write_wav
from emotalk.errors import CheckpointError, InputError
from emotalk.inference.feature_stream import AudioFeatures
from emotalk.inference.live_features import IncrementalFeatures
from emotalk.inference.landmarks import add_blinks, smooth_landmarks
from emotalk.inference.speech import audio_blocks, load_speech
from emotalk.inference.stream import BlinkStream, DelayedSmoother
from emotalk.inference.timeline import parse_timeline
from emotalk.inference.video import FragmentedMP4Writer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    """2.7 s of TTS speech then 0.3 s of silence, as a 16 kHz wav."""
    from emotalk.mini.tts import synthesize

    a = synthesize("The birch canoe slid on the smooth planks.", seed=0).audio
    a = np.concatenate([a, np.zeros(4800, np.float32)])
    path = tmp_path_factory.mktemp("stream") / "speech.wav"
    write_wav(path, a, 16000)
    return path


@pytest.fixture(scope="module")
def short_tts(tts, tmp_path_factory):
    """The first 1.5 s of :func:`tts` (speech from 0.2 s on): the end-to-end tests' audio."""
    path = tmp_path_factory.mktemp("stream") / "short.wav"
    write_wav(path, load_audio(tts)[:24000], 16000)
    return path


def _irregular(a: np.ndarray, sizes=(1, 157, 320, 999, 40, 2048)):
    i = k = 0
    while i < len(a):
        n = sizes[k % len(sizes)]
        yield a[i:i + n]
        i, k = i + n, k + 1


def _stream_windows(feats: IncrementalFeatures, blocks) -> np.ndarray:
    """Frames taken as soon as they are ready, with the steps behind them discarded."""
    out, nxt = [], 0
    for b in blocks:
        feats.push(b)
        r = feats.ready()
        if r > nxt:
            out.append(feats.windows(nxt, r))
            nxt = r
            feats.discard_before(nxt)
    T = feats.finish()
    out.append(feats.windows(nxt, T))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------------------
# audio in blocks
# ---------------------------------------------------------------------------------------------------------
def test_file_blocks_equal_the_decoded_file(tts):
    blocks = list(audio_blocks(tts, block_seconds=0.05))
    assert {len(b) for b in blocks[:-1]} == {800}
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(tts))


def test_pcm_blocks_int16_stereo_and_other_rates():
    from scipy.signal import resample_poly

    rng = np.random.default_rng(0)
    x = (rng.normal(size=48000 + 77) * 0.1).astype(np.float32)
    got = np.concatenate(list(audio_blocks(_irregular(x), sample_rate=48000)))  # resampled on the fly
    np.testing.assert_allclose(got, resample_poly(x, 1, 3), atol=1e-6)  # independent of the block cuts
    pcm = (x * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], 1)
    got = np.concatenate(list(audio_blocks(iter([stereo[:1000], stereo[1000:]]))))
    np.testing.assert_allclose(got, pcm.astype(np.float32) / 32768.0)
    with pytest.raises(InputError, match="int16"):
        list(audio_blocks(iter([np.zeros(10, np.int32)])))
    with pytest.raises(InputError, match="NaN"):
        list(audio_blocks(iter([np.full(10, np.nan, np.float32)])))


# ---------------------------------------------------------------------------------------------------------
# incremental features
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fps", [30.0, 25.0])
def test_incremental_mel_equals_the_whole_file(tts, fps):
    sp = load_speech(tts)
    ref = AudioFeatures("mel", sp, sp.num_frames(fps), fps, 20).all()
    feats = IncrementalFeatures("mel", fps, 20)
    got = _stream_windows(feats, _irregular(sp.samples))
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert feats.lookahead == pytest.approx({"window": 0.09, "steps": 0.016})


def test_frames_are_ready_exactly_when_their_window_is_in():
    """After t / fps + look-ahead seconds of audio, frame t is ready (and not much later)."""
    feats = IncrementalFeatures("mel", 30.0, 20)
    rng = np.random.default_rng(1)
    for k in range(1, 60):
        feats.push(rng.normal(size=160).astype(np.float32) * 0.1)  # 10 ms
        have = feats.samples / 16000
        ready = feats.ready()
        # frame ready - 1 needs audio up to its time + 106 ms; frame `ready` needs more than there is
        if ready:
            assert (ready - 1) / 30 + 0.106 <= have + 1e-9
        assert ready / 30 + 0.106 > have - 0.01


def test_feature_memory_is_flat():
    feats = IncrementalFeatures("mel", 30.0, 20)
    rng = np.random.default_rng(2)
    sizes, nxt = [], 0
    for _ in range(300):  # 60 s
        feats.push(rng.normal(size=3200).astype(np.float32) * 0.1)
        r = feats.ready()
        feats.windows(nxt, r)
        nxt = r
        feats.discard_before(nxt)
        sizes.append(len(feats._buf))
    assert max(sizes) <= 40  # steps held: one window plus a block, not the 6000 steps of the minute
    assert nxt >= 60 * 30 - 5


def test_deepspeech_cannot_stream():
    with pytest.raises(CheckpointError, match="streaming supports"):
        IncrementalFeatures("deepspeech", 25.0, 6)


@pytest.mark.slow
def test_incremental_phonemes(tts):
    """Shorter than the warm-up: one batch decode, exactly the batch features. Longer (with utterance
    restarts every second): live decoding, close to batch but not equal (see PhonemeSteps)."""
    sp = load_speech(tts)
    T = sp.num_frames(30.0)
    ref = AudioFeatures("phonemes", sp, T, 30.0, 20).all()
    exact = _stream_windows(IncrementalFeatures("phonemes", 30.0, 20, warmup=10.0), _irregular(sp.samples))
    np.testing.assert_array_equal(exact, ref)
    live = _stream_windows(IncrementalFeatures("phonemes", 30.0, 20, warmup=0.5, max_utterance=1.0),
                           _irregular(sp.samples))
    assert live.shape == ref.shape and (live.sum(-1) == 1).all()  # one-hot steps
    agree = (live.argmax(-1) == ref.argmax(-1)).mean()
    assert 0.5 < agree < 1.0, agree


# ---------------------------------------------------------------------------------------------------------
# smoothing, blinks, timelines
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [0, 1, 3, 5, 7])
@pytest.mark.parametrize("T", [1, 2, 3, 4, 6, 23])
def test_delayed_smoothing_equals_whole_clip(window, T):
    raw = np.random.default_rng(T).normal(size=(T, 68, 2)).astype(np.float32)
    sm = DelayedSmoother(window)
    out, i = [], 0
    for n in (1, 2, 1, 3, 5, 1, 8, 2):
        if i >= T:
            break
        sm.push(raw[i:i + n])
        i = min(i + n, T)
        got = sm.pop()
        out.append(got)
        h = window // 2 if window > 1 else 0
        if i >= max(window, 1):  # bounded delay: everything up to h frames back is out
            assert sm.emitted >= i - h
    sm.push(raw[i:])
    out.append(sm.pop(final=True))
    np.testing.assert_allclose(np.concatenate(out), smooth_landmarks(raw, window), atol=1e-6)
    assert len(sm._raw) <= max(window, 1) + 8  # only the last frames are held


def test_lazy_blinks_equal_the_whole_clip():
    T, fps = 900, 30.0
    lm = np.zeros((T, 68, 2), np.float32)
    _, closure = add_blinks(lm, fps, seed=3)
    b = BlinkStream(fps, seed=3)
    got = np.concatenate([b.closure(a, min(a + 7, T)) for a in range(0, T, 7)])
    assert closure.max() == 1.0  # there are blinks in 30 s
    np.testing.assert_allclose(got, closure, atol=1e-6)
    assert len(b._onsets) <= 3  # only onsets that can still touch a frame


def test_timeline_rows_for_a_batch():
    tl = parse_timeline("0:neutral, 1:happy@3, 2:sad@2")
    full = tl.ramp_weights(90, 30.0)
    np.testing.assert_array_equal(tl.ramp_weights(47, 30.0, start=20), full[20:47])


# ---------------------------------------------------------------------------------------------------------
# fragmented MP4
# ---------------------------------------------------------------------------------------------------------
def mp4_boxes(data: bytes) -> list[str]:
    """Top-level box types of an MP4 byte string (size 1 = 64-bit size, 0 = to the end)."""
    out, i = [], 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
        elif size == 0:
            size = len(data) - i
        assert size >= 8, f"bad box size at {i}"
        out.append(kind.decode("latin-1"))
        i += size
    assert i == len(data), "truncated box"
    return out


def test_fragmented_mp4_writer(tmp_path):
    buf = io.BytesIO()
    with FragmentedMP4Writer(buf, fps=30) as w:
        for i in range(45):
            if i % 3 == 0:
                w.add_audio(np.sin(np.arange(1600) / 10).astype(np.float32) * 0.1)
            w.write(np.full((64, 96, 3), i * 5, np.uint8))
    boxes = mp4_boxes(buf.getvalue())
    assert boxes[:2] == ["ftyp", "moov"] and "moof" in boxes and "mdat" in boxes  # empty moov, then fragments
    assert boxes.count("moof") >= 2  # a keyframe (fragment) a second
    path = tmp_path / "f.mp4"
    path.write_bytes(buf.getvalue())
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (96, 64, 45, True)


# ---------------------------------------------------------------------------------------------------------
# the whole stream
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_pipe():
    """Randomly initialised tiny G_L (mel) + G_T at 64^2: the mechanics need no training."""
    from emotalk.config import to_dict
    from emotalk.data.face.background import DEFAULT_BACKGROUND_RGB
    from emotalk.data.loading import CheckpointMeta, LoadedModel, build_model
    from emotalk.inference import Pipeline
    from emotalk.train.tasks import load_train_config

    import torch

    torch.manual_seed(0)
    lcfg = load_train_config("landmark/tiny", ["model.feature_dim=80", "model.window=20"])
    tcfg = load_train_config("texture/tiny", ["model.image_size=64"])
    landmark = LoadedModel(build_model("landmark", lcfg.model).eval(), lcfg.model,
                           CheckpointMeta("landmark", 0, to_dict(lcfg), feature_kind="mel", feature_dim=80, window=20,
                                          fps=30.0))
    texture = LoadedModel(build_model("texture", tcfg.model).eval(), tcfg.model,
                          CheckpointMeta("texture", 0, to_dict(tcfg), background_rgb=DEFAULT_BACKGROUND_RGB))
    return Pipeline(landmark, texture, device="cpu")


@pytest.fixture(scope="module")
def hopper():
    from emotalk.data.io.photos import grace_hopper_path

    return grace_hopper_path()


@pytest.mark.slow
def test_stream_memory_is_flat(random_pipe, hopper):
    """8 s of PCM blocks from a generator: what is allocated after frame 90 and still alive at frame 239
    is a few blocks' worth, not per-frame (150 frames would hold 1.8 MB of crops, 80 KB of landmarks)."""
    rng = np.random.default_rng(0)

    def microphone(seconds: float):
        for _ in range(int(seconds / 0.1)):
            yield (rng.normal(size=1600) * 3000).astype(np.int16)  # 100 ms of int16 PCM

    s = random_pipe.stream(microphone(8), image=hopper, emotion="0:neutral, 3:happy@3, 6:sad",
                           renderer="warp", size=64, paste=False, finetune_steps=0)
    held = []
    try:
        for f in s:
            if f.index == 90:
                tracemalloc.start()
            if f.index >= 90:
                held.append((len(s.features._buf), len(s.smoother._raw)))
            if f.index == 239:
                grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert s.stats.num_frames == 240 and f.index == 239 and f.image.shape == (64, 64, 3)
    assert grown < 200 * 1024, grown
    assert max(h[0] for h in held) <= 40 and max(h[1] for h in held) <= 12
    assert s.lookahead.total == pytest.approx(0.09 + 0.016 + 2 / 30)


def test_stream_input_errors(random_pipe, hopper):
    with pytest.raises(InputError, match="unknown emotion|not in"):
        random_pipe.stream(np.zeros(1600, np.float32), image=hopper, emotion="ecstatic")
    with pytest.raises(InputError, match="photo"):
        random_pipe.stream(np.zeros(1600, np.float32))
    feats = IncrementalFeatures("mel", 30.0, 20)
    with pytest.raises(InputError, match="before any samples"):
        feats.finish()  # what iterating a stream of an empty PCM iterator ends with


@pytest.fixture(scope="module")
def tiny_pipe(tiny_checkpoints):
    from emotalk import Pipeline

    return Pipeline.from_checkpoints(tiny_checkpoints, device="cpu")


def test_stream_matches_generate(tiny_pipe, hopper, short_tts, tmp_path):
    """A whole file through stream() gives generate()'s landmarks (to float rounding: smoothing has a
    bounded delay, not a causal approximation) and its frames (G_T batches differ: +-1 grey level at most)."""
    emotion = "0:neutral, 0.5:happy@3, 1:sad@2"
    opts = dict(emotion=emotion, intensity=2, finetune_steps=0, size=128)
    r = tiny_pipe.generate(hopper, short_tts, out=tmp_path / "g.mp4", progress=False, **opts)
    s = tiny_pipe.stream(short_tts, image=hopper, block_seconds=0.03, **opts)
    frames = list(s)
    assert len(frames) == r.frames == s.stats.num_frames
    assert [f.time for f in frames[:3]] == pytest.approx([0, 1 / 30, 2 / 30])
    np.testing.assert_allclose(np.stack([f.landmarks for f in frames]), r.landmarks, atol=1e-5)
    photo = tiny_pipe.prepare_photo(hopper, 128)
    ctl = tiny_pipe.controls(emotion, 2, "neural", r.frames, 30.0)
    ref = tiny_pipe.frames(photo, r.landmarks, tiny_pipe.prepare_renderer(photo, "neural", ctl, 0), None, True,
                           ctl.texture)
    diffs = [np.abs(a.astype(np.int16) - f.image.astype(np.int16)) for a, f in zip(ref, frames)]
    assert max(d.max() for d in diffs) <= 2 and np.mean([d.mean() for d in diffs]) < 0.01


def test_cli_out_dash_streams_fragmented_mp4(tiny_checkpoints, hopper, short_tts, tmp_path, monkeypatch, capsys):
    """``emotalk generate --out -`` with stdout a real pipe (read by a thread, like ``| ffplay -``): the pipe
    carries a fragmented MP4 and nothing else, the report goes to stderr. In-process (a subprocess would
    spend seconds importing); the warp renderer keeps it cheap - what is tested is the stdout container."""
    from emotalk.cli.main import main

    r, w = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 1 << 16), b"")))
    reader.start()
    pipe_out = io.TextIOWrapper(os.fdopen(w, "wb"))
    monkeypatch.setattr(sys, "stdout", pipe_out)
    try:
        code = main(["generate", "--image", str(hopper), "--audio", str(short_tts), "--emotion", "happy",
                     "--checkpoints", str(tiny_checkpoints), "--renderer", "warp", "--size", "64", "--device", "cpu",
                     "--out", "-"])
        pipe_out.flush()  # anything written as text to stdout would land in the pipe and break the boxes
    finally:
        pipe_out.close()
        reader.join()
        os.close(r)
    assert code == 0
    data = b"".join(chunks)
    boxes = mp4_boxes(data)
    assert boxes[:2] == ["ftyp", "moov"] and "moof" in boxes
    assert "streamed 45 frames" in capsys.readouterr().err  # the report went to stderr
    path = tmp_path / "piped.mp4"
    path.write_bytes(data)
    info = probe_video(path)
    assert load_speech(short_tts).num_frames(30.0) == 45
    assert (info.width, info.height, info.num_frames, info.has_audio) == (512, 600, 45, True)


def test_render_thread_gives_the_same_frames_and_its_errors(random_pipe, hopper):
    """G_T + paste-back on the render thread (``overlap``, the default) change nothing but the timing: the
    same frames in the same order as on the caller's thread; a renderer error reaches the caller and the
    render thread is gone afterwards."""
    pcm = (np.random.default_rng(1).normal(size=4800) * 0.1).astype(np.float32)  # 0.3 s: 9 frames
    opts = dict(emotion="0:neutral, 0.2:happy@3", size=64, renderer="warp", block_seconds=0.02)
    runs = {}
    for overlap in (True, False):
        s = random_pipe.stream(pcm, image=hopper, overlap=overlap, **opts)
        runs[overlap] = list(s)
    a, b = runs[True], runs[False]
    assert [f.index for f in a] == list(range(9)) == [f.index for f in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert all(f.ready_audio_seconds <= f.audio_seconds for f in a)
    assert a[0].image.shape == (600, 512, 3)  # pasted into the photo

    s = random_pipe.stream(pcm, image=hopper, **opts)

    def broken(*_):
        raise RuntimeError("renderer failed")

    s.prepared.renderer = broken
    with pytest.raises(RuntimeError, match="renderer failed"):
        list(s)
    assert not any(t.name.startswith("emotalk-render") for t in threading.enumerate())
