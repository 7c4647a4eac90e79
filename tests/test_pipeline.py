"""emotalk.Pipeline: photo + speech + emotion -> mp4, with tiny checkpoints trained in the session."""
from __future__ import annotations

import subprocess
import sys
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from emotalk.models.face_graph import REGIONS, brow_height, mouth_opening
from emotalk.data.io.media import probe_video, read_video, write_wav
from emotalk.errors import CheckpointError, InputError, NoFaceError

FPS = 30.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints):
    from emotalk import Pipeline

    return Pipeline.from_checkpoints(tiny_checkpoints, device="cpu")


@pytest.fixture(scope="module")
def hopper():
    from emotalk.data.io.photos import grace_hopper_path

    return grace_hopper_path()  # 512 x 600 JPEG of a real person


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """TTS speech followed by 1 s of silence, as a wav; frame ranges of speech and of silence."""
    from emotalk.mini.tts import synthesize

    sp = synthesize("The birch canoe slid on the smooth planks.", seed=0)
    audio = np.concatenate([sp.audio, np.zeros(16000, np.float32)])
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    write_wav(path, audio, 16000)
    voiced = [p for p in sp.phones if not p.is_pause]
    start, end = voiced[0].start, voiced[-1].end
    T = int(round(len(audio) / 16000 * FPS))
    return SimpleNamespace(path=path, seconds=len(audio) / 16000, frames=T,
                           speech=slice(int(start * FPS) + 2, int(end * FPS) - 1),
                           silence=slice(int((end + 0.35) * FPS), T))


@pytest.fixture(scope="module")
def generated(pipe, hopper, speech, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "talk.mp4"
    result = pipe.generate(hopper, speech.path, emotion="happy", intensity=2, out=out, progress=False)
    return result


def test_generate_writes_a_complete_mp4(generated, speech):
    r = generated
    info = probe_video(r.path)
    assert r.frames == speech.frames == round(speech.seconds * FPS)
    assert info.num_frames == speech.frames
    assert info.fps == pytest.approx(FPS)
    assert info.has_audio
    assert (info.width, info.height) == r.size == (512, 600)  # the photo's own size
    assert r.landmarks.shape == (speech.frames, 68, 2) and np.isfinite(r.landmarks).all()
    assert set(r.seconds) >= {"photo", "audio", "features", "landmarks", "finetune", "render", "total"}
    assert r.speech and not any("no speech" in w for w in r.warnings)
    leftovers = [p.name for p in r.path.parent.iterdir() if p.name != r.path.name]
    assert leftovers == []  # no temp / partial files beside the output


def test_paste_back_keeps_pixels_away_from_the_face(pipe, generated, hopper):
    """Outside the face crop, and on the photo's own background inside it, frames equal the photo."""
    from emotalk.data.face.alignment import apply_similarity
    from emotalk.data.face.background import person_mask

    photo = pipe.prepare_photo(hopper)
    h, w = photo.image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    c = apply_similarity(photo.crop_matrix, np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64))
    S = photo.crop_size
    outside = ((c[:, 0] < -2) | (c[:, 0] > S + 1) | (c[:, 1] < -2) | (c[:, 1] > S + 1)).reshape(h, w)
    alpha = person_mask(photo.crop, photo.crop_landmarks)
    cx = np.clip(np.round(c[:, 0]).astype(int), 0, S - 1)
    cy = np.clip(np.round(c[:, 1]).astype(int), 0, S - 1)
    import cv2

    grown = cv2.dilate((alpha > 0.01).astype(np.uint8), np.ones((9, 9), np.uint8))
    background = (grown[cy, cx] == 0).reshape(h, w) & ~outside
    assert outside.sum() > 5000 and background.sum() > 5000
    frames = read_video(generated.path)
    for t in (0, len(frames) // 2, len(frames) - 1):
        diff = np.abs(frames[t].astype(np.int16) - photo.image.astype(np.int16)).mean(-1)
        assert diff[outside].mean() < 3.0, t
        assert diff[background].mean() < 3.0, t
        # while the face itself is re-rendered
        fx0, fy0, fx1, fy1 = (int(v) for v in photo.box)
        assert diff[fy0:fy1, fx0:fx1].mean() > diff[outside].mean() + 1.0


def test_lips_move_more_during_speech_than_in_silence(generated, speech):
    m = mouth_opening(generated.landmarks)
    talk, quiet = m[speech.speech], m[speech.silence]
    assert len(talk) > 30 and len(quiet) > 15
    assert np.ptp(talk) > 0.01
    assert talk.std() > 3 * quiet.std() + 1e-4


def test_emotions_change_the_regions_they_name(pipe, hopper, speech):
    photo = pipe.prepare_photo(hopper)
    feats = pipe.audio_features(speech.path)

    def run(emotion, level=3):
        return pipe.predict_landmarks(feats, pipe.landmark_emotion(emotion, level), photo.aligned)

    neutral, surprised, happy = run("neutral"), run("surprised"), run("happy")

    def region_change(a, b, names):
        idx = [i for n in names for i in REGIONS[n]]
        return float(np.linalg.norm(a[:, idx] - b[:, idx], axis=-1).mean())

    # surprise raises the brows (AU1 + AU2)
    assert brow_height(surprised).mean() > brow_height(neutral).mean() + 0.005
    brows = region_change(surprised, neutral, ["right_brow", "left_brow"])
    assert brows > 1.5 * region_change(surprised, neutral, ["nose"])
    # happiness moves the lips (AU12), not the nose
    lips = region_change(happy, neutral, ["outer_lips", "inner_lips"])
    assert lips > 2 * region_change(happy, neutral, ["nose"])
    # same audio: the speech motion is shared, the emotions differ
    assert not np.allclose(surprised, happy)


def test_warp_renderer_moves_the_mouth(tiny_checkpoints, hopper, speech, tmp_path):
    from emotalk import Pipeline

    warp = Pipeline.from_checkpoints(tiny_checkpoints, device="cpu", load_texture=False)
    r = warp.generate(hopper, speech.path, emotion="surprised", intensity=3, out=tmp_path / "warp.mp4",
                      renderer="warp", progress=False)
    info = probe_video(r.path)
    assert info.num_frames == speech.frames and info.has_audio and (info.width, info.height) == (512, 600)
    frames = read_video(r.path).astype(np.float32)
    photo = warp.prepare_photo(hopper)
    lm = photo.landmarks
    x0, y0 = lm[48:68].min(0).astype(int) - 5
    x1, y1 = lm[48:68].max(0).astype(int) + 10
    mouth = frames[:, y0:y1, x0:x1].std(0).mean()
    corner = frames[:, :60, :60].std(0).mean()
    assert mouth > 3 * corner + 0.5


def test_silent_audio_gives_a_still_face_and_memory_stays_flat(pipe, hopper, tmp_path):
    """Peak memory of a 3x longer (silent) audio grows by far less than the extra frames would take."""
    def run(seconds, trace=True):
        audio = np.zeros(int(seconds * 16000), np.float32)
        if trace:
            tracemalloc.start()
        try:
            with pytest.warns(UserWarning, match="no speech"):
                r = pipe.generate(hopper, audio, emotion="surprised", intensity=3, out=tmp_path / f"s{seconds}.mp4",
                                  finetune_steps=0, blink=False, progress=False)
            return (tracemalloc.get_traced_memory()[1] if trace else 0), r
        finally:
            if trace:
                tracemalloc.stop()

    run(0.2, trace=False)  # warm-up: lazy imports and caches
    short, r_short = run(1.0)
    long, r_long = run(3.0)
    assert r_long.frames == 90 and r_short.frames == 30
    frame_bytes = 512 * 600 * 3
    growth = long - short
    assert growth < 0.1 * 60 * frame_bytes, (short, long)  # holding the 60 extra frames: 55 MB
    # a still face: no motion over time (blinks off); the warning says why
    lm = r_long.landmarks
    assert np.abs(lm - lm[:1]).max() < 1e-4
    assert not r_long.speech and any("no speech" in w for w in r_long.warnings)


def test_audio_feature_windows_match_extract_features(pipe, speech):
    from emotalk.data.speech.features import extract_features
    from emotalk.inference.pipeline import load_speech

    sp = load_speech(speech.path)
    feats = pipe.audio_features(sp)
    ref = extract_features(pipe.feature_kind, sp.samples, 16000, num_frames=speech.frames, fps=FPS,
                           window=pipe.window)
    np.testing.assert_array_equal(feats.all(), ref)
    np.testing.assert_array_equal(feats.windows(7, 19), ref[7:19])


def test_long_audio_features_are_computed_in_chunks_with_the_same_result():
    from emotalk.data.speech.features import get_feature_backend
    from emotalk.inference.pipeline import chunked_stream

    backend = get_feature_backend("mel")
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 25 + 37).astype(np.float32)
    full, rate = backend.stream(audio, 16000)
    chunked, rate2 = chunked_stream(backend, audio, 16000, chunk_seconds=4)
    assert rate == rate2 and chunked.shape == full.shape
    np.testing.assert_allclose(chunked, full, atol=1e-4)


def test_load_image_converts_any_mode_to_rgb(tmp_path):
    from PIL import Image

    from emotalk.inference.photo import load_image

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((20, 30), 77, np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(rgba[..., :3].copy(), "RGB").save(tmp_path / "c.webp", lossless=True)
    Image.fromarray(np.full((20, 30), 60000, np.uint16)).save(tmp_path / "d.png")
    a = load_image(tmp_path / "a.png")
    assert a.shape == (20, 30, 3) and a.dtype == np.uint8
    assert tuple(a[0, 0]) == (200, 0, 0) and tuple(a[-1, -1]) == (255, 255, 255)
    g = load_image(tmp_path / "g.png")
    assert g.shape == (20, 30, 3) and (g == 77).all()
    assert load_image(tmp_path / "c.webp").shape == (20, 30, 3)
    d = load_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and abs(int(d[0, 0, 0]) - 233) <= 1
    assert load_image(np.ones((8, 8), np.float32)).max() == 255


def test_prepare_photo_uses_the_largest_face_and_says_how_many(hopper):
    import cv2

    from emotalk.data.io.photos import public_domain_photos
    from emotalk.inference.photo import load_image, prepare_photo

    big = load_image(hopper)  # face ~186 px
    small = cv2.resize(public_domain_photos()["astronaut"], (400, 400), interpolation=cv2.INTER_AREA)
    canvas = np.full((600, 912, 3), 255, np.uint8)
    canvas[:, :512] = big
    canvas[100:500, 512:] = small
    photo = prepare_photo(canvas)
    assert photo.num_faces == 2
    assert any("2 faces found" in w for w in photo.warnings)
    assert photo.landmarks[:, 0].max() < 512  # Grace Hopper's, the larger face
    assert photo.size == (912, 600) and photo.crop.shape == (256, 256, 3)
    odd = prepare_photo(canvas[:599, :911])
    assert odd.size == (910, 598)  # even sizes for H.264


def test_api_errors(pipe, hopper, speech, tmp_path):
    with pytest.raises(InputError, match="unknown emotion"):
        pipe.generate(hopper, speech.path, emotion="joyful", out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(InputError, match="intensity"):
        pipe.generate(hopper, speech.path, emotion="happy", intensity=0.5, out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(NoFaceError):
        pipe.generate(np.full((200, 200, 3), 128, np.uint8), speech.path, out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(InputError, match="zero length"):
        pipe.generate(hopper, np.zeros(0, np.float32), out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(InputError, match="renderer"):
        pipe.generate(hopper, speech.path, renderer="pixar", out=tmp_path / "x.mp4", progress=False)
    with pytest.raises(CheckpointError):
        from emotalk import Pipeline

        Pipeline.from_checkpoints(tmp_path / "nowhere")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_rendering_leaves_no_file(pipe, hopper, speech, tmp_path, monkeypatch):
    from emotalk.inference import pipeline as P

    calls = {"n": 0}
    real = P.Compositor.__call__

    def flaky(self, crop):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("boom")
        return real(self, crop)

    monkeypatch.setattr(P.Compositor, "__call__", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        pipe.generate(hopper, speech.path, out=tmp_path / "never.mp4", finetune_steps=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_import_emotalk_stays_light():
    code = ("import sys, emotalk; assert 'torch' not in sys.modules, 'torch imported'; "
            "from emotalk import Pipeline; assert Pipeline.__name__ == 'Pipeline'")
    subprocess.run([sys.executable, "-c", code], check=True)
