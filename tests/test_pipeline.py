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
def generated(tiny_checkpoints, hopper, speech, tmp_path_factory):
    """The README's Python example, verbatim, in a folder holding checkpoints/, photo.jpg and speech.wav."""
    import os
    import shutil

    work = tmp_path_factory.mktemp("readme")
    (work / "checkpoints").symlink_to(tiny_checkpoints, target_is_directory=True)
    shutil.copyfile(hopper, work / "photo.jpg")
    shutil.copyfile(speech.path, work / "speech.wav")
    (work / "out").mkdir()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        from emotalk import Pipeline

        pipe = Pipeline.from_checkpoints("checkpoints")
        result = pipe.generate("photo.jpg", "speech.wav", emotion="happy", intensity=2, out="out/out.mp4")
    finally:
        os.chdir(cwd)
    result.path = work / result.path
    return result


def test_readme_call_builds_its_options_from_the_keywords(generated):
    from emotalk import GenerateOptions

    assert generated.options == GenerateOptions(emotion="happy", intensity=2)
    assert generated.emotion == {"happy": 1.0} and generated.intensity == 2.0
    assert generated.renderer == "neural" and generated.finetune is not None and generated.finetune.steps == 5
    assert generated.background_rgb is not None  # from the texture checkpoint's metadata


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


def test_a_blend_lies_between_its_two_emotions_in_every_region_they_move(pipe, hopper, speech):
    """happy:0.5 + surprised:0.5 through G_L (deterministic, eval mode): in each face region where the two
    emotions' landmarks differ, the blend's landmarks project strictly between them on the segment from
    one to the other, and stay close to that segment (not off somewhere a third emotion would go)."""
    photo = pipe.prepare_photo(hopper)
    feats = pipe.audio_features(speech.path)

    def run(emotion):
        return pipe.predict_landmarks(feats, pipe.landmark_emotion(emotion, 3), photo.aligned)

    happy, surprised = run("happy"), run("surprised")
    blend = run({"happy": 0.5, "surprised": 0.5})
    np.testing.assert_array_equal(blend, run("happy:0.5,surprised:0.5"))  # the string form is the same blend
    checked = []
    for name, idx in REGIONS.items():
        d = (surprised - happy)[:, idx].ravel()
        if np.abs(d).mean() < 0.005:  # the two emotions barely differ here (canonical units)
            continue
        x = (blend - happy)[:, idx].ravel()
        t = float(x @ d / (d @ d))  # 0: at happy, 1: at surprised
        off = float(np.linalg.norm(x - t * d) / np.linalg.norm(d))
        assert 0.1 < t < 0.9, (name, t)
        if np.abs(d).mean() >= 0.02:  # off-segment share only where the two differ clearly: in a region that
            assert off < 0.4, (name, off)  # barely moves (eyes ~0.01) G_L's small nonlinearity dominates it
        checked.append(name)
    assert {"outer_lips", "right_brow", "left_brow"} <= set(checked), checked


def test_per_frame_emotion_vectors_drive_g_l_frame_by_frame(pipe, hopper, speech):
    """A (T, E) control array equals the constant vector where it is constant: the seam emotion
    timelines and streaming use."""
    photo = pipe.prepare_photo(hopper)
    feats = pipe.audio_features(speech.path)
    T = len(feats)
    happy, sad = pipe.landmark_emotion("happy", 2), pipe.landmark_emotion("sad", 2)
    per_frame = np.where(np.arange(T)[:, None] < T // 2, happy[None], sad[None])
    mixed = pipe.predict_landmarks(feats, per_frame, photo.aligned, batch_size=7)
    ref_h = pipe.predict_landmarks(feats, happy, photo.aligned)
    ref_s = pipe.predict_landmarks(feats, sad, photo.aligned)
    np.testing.assert_allclose(mixed[:T // 2], ref_h[:T // 2], atol=1e-5)
    np.testing.assert_allclose(mixed[T // 2:], ref_s[T // 2:], atol=1e-5)
    with pytest.raises(InputError, match="emotion vector"):
        pipe.predict_landmarks(feats, per_frame[:-1], photo.aligned)


def test_neural_renderer_takes_per_frame_emotions_and_the_checkpoint_background(pipe, hopper):
    import dataclasses

    from emotalk.data.face.background import DEFAULT_BACKGROUND_RGB
    from emotalk.inference.renderers import training_background

    photo = pipe.prepare_photo(hopper, size=128)
    prepared = pipe.make_renderer(photo, "neural", "surprised", 3, finetune_steps=0, background=False)
    assert prepared.name == "neural" and prepared.alpha is None and prepared.finetune is None
    lm = photo.aligned_to_crop(np.stack([photo.aligned] * 3))
    default = prepared.renderer(lm)
    vec = pipe.texture_emotion("surprised", 3)
    same = prepared.renderer(lm, np.stack([vec] * 3))
    assert all(np.array_equal(a, b) for a, b in zip(default, same))
    other = prepared.renderer(lm, np.stack([vec, pipe.texture_emotion("happy", 3), vec]))
    assert np.array_equal(other[0], default[0]) and np.array_equal(other[2], default[2])
    assert not np.array_equal(other[1], default[1])  # frame 1 was rendered with its own emotion
    # the backdrop comes from the checkpoint's metadata only (never from the training data folder)
    assert training_background(pipe.texture) == tuple(pipe.texture.meta.background_rgb)
    bare = dataclasses.replace(pipe.texture, meta=dataclasses.replace(pipe.texture.meta, background_rgb=None))
    assert training_background(bare) == DEFAULT_BACKGROUND_RGB


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


def test_options_crop_video_at_another_frame_rate(tiny_checkpoints, hopper, speech, tmp_path):
    """paste=False writes the face crop itself; fps changes the frame count, smoothing=0 keeps G_L's raw
    output; options passed as an object and overridden by a keyword."""
    from emotalk import GenerateOptions, Pipeline

    warp = Pipeline.from_checkpoints(tiny_checkpoints, device="cpu", load_texture=False)
    opts = GenerateOptions(emotion="sad", intensity=2, renderer="warp", paste=False, size=128, fps=25.0,
                           smoothing=0, blink=False, progress=False)
    r = warp.generate(hopper, speech.path, opts, out=tmp_path / "crop.mp4", emotion="happy")
    info = probe_video(r.path)
    T = round(speech.seconds * 25)
    assert r.frames == info.num_frames == T and info.fps == pytest.approx(25.0)
    assert (info.width, info.height) == r.size == (128, 128)
    assert r.options.emotion == "happy" and r.options.paste is False and r.emotion == {"happy": 1.0}
    photo = warp.prepare_photo(hopper, 128)
    feats = warp.audio_features(speech.path, fps=25.0)
    raw = warp.predict_landmarks(feats, warp.landmark_emotion("happy", 2), photo.aligned)
    np.testing.assert_array_equal(r.landmarks, raw)  # no smoothing, no blinks


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
    from emotalk.inference import load_speech

    sp = load_speech(speech.path)
    feats = pipe.audio_features(sp)
    ref = extract_features(pipe.feature_kind, sp.samples, 16000, num_frames=speech.frames, fps=FPS,
                           window=pipe.window)
    np.testing.assert_array_equal(feats.all(), ref)
    np.testing.assert_array_equal(feats.windows(7, 19), ref[7:19])


def test_long_audio_features_are_computed_in_chunks_with_the_same_result():
    from emotalk.data.speech.features import get_feature_backend
    from emotalk.inference.feature_stream import chunked_stream

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
    from emotalk.inference import compositor as C

    calls = {"n": 0}
    real = C.Compositor.__call__

    def flaky(self, crop):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("boom")
        return real(self, crop)

    monkeypatch.setattr(C.Compositor, "__call__", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        pipe.generate(hopper, speech.path, out=tmp_path / "never.mp4", finetune_steps=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_import_emotalk_stays_light():
    code = ("import sys, emotalk; assert 'torch' not in sys.modules, 'torch imported'; "
            "from emotalk import Pipeline; assert Pipeline.__name__ == 'Pipeline'")
    subprocess.run([sys.executable, "-c", code], check=True)
