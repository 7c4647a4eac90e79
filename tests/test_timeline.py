"""Emotion timelines (issue 15 §1): parsing, the exact per-frame ramps, one-line errors naming the keyframe,
G_L and the rendered (re-detected) landmarks moving between the keyframes' geometries, and the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from emotalk.data.emotions import EMOTIONS, emotion_vector, parse_emotion
from emotalk.errors import InputError
from emotalk.inference import GenerateOptions
from emotalk.inference.timeline import Keyframe, Timeline, is_timeline, parse_timeline

ISSUE = "0:neutral, 1.5:happy@3, 4.0:sad@2, 6:surprised:0.6+happy:0.4@2.5"


def vec(emotion, intensity=1.0):
    return emotion_vector(emotion, intensity, EMOTIONS, 3)


# --- parsing and disambiguation --------------------------------------------------------------------------
def test_parse_the_issue_example():
    tl = parse_timeline(ISSUE)
    assert [k.time for k in tl.keyframes] == [0.0, 1.5, 4.0, 6.0]
    assert [k.intensity for k in tl.keyframes] == [None, 3.0, 2.0, 2.5]
    assert tl.keyframes[3].emotion == {"surprised": 0.6, "happy": 0.4}
    assert tl.ramp == 0.3 and tl.curve == "linear"
    keys = tl.keyframe_vectors(EMOTIONS, 3, intensity=2)
    np.testing.assert_array_equal(keys[0], vec("neutral", 2))  # no '@': the run's intensity
    np.testing.assert_array_equal(keys[1], vec("happy", 3))
    np.testing.assert_allclose(keys[3], vec("surprised:0.6,happy:0.4", 2.5), atol=1e-7)


@pytest.mark.parametrize("spec,expected", [("happy", False), ("happy:0.7,surprised:0.3", False),
                                           ("Happy : 1", False), ("0:happy", True), (" 2.5 :sad@2", True),
                                           (ISSUE, True), ("happy, 1:sad", True)])
def test_is_timeline(spec, expected):
    assert is_timeline(spec) is expected


def test_todays_single_emotion_and_blend_keep_their_meaning():
    assert parse_emotion("happy:0.7,surprised:0.3") == pytest.approx({"happy": 0.7, "surprised": 0.3})
    assert not GenerateOptions(emotion="happy:0.7,surprised:0.3").per_frame_emotion
    assert not GenerateOptions(emotion="happy").per_frame_emotion
    assert GenerateOptions(emotion="0:neutral, 1:happy").per_frame_emotion


# --- the per-frame control vectors are exactly the specified ramps ----------------------------------------
def test_linear_ramp_is_centred_on_the_keyframe_exact_values():
    # 10 fps, ramp 0.4 s centred on 1.0 s: from 0.8 s (frame 8) to 1.2 s (frame 12)
    tl = Timeline([Keyframe(0, "neutral", 1), Keyframe(1.0, "happy", 3)], ramp=0.4)
    c = tl.controls(20, 10.0, EMOTIONS, 3)
    a, b = vec("neutral", 1), vec("happy", 3)
    for frame, s in [(0, 0.0), (8, 0.0), (9, 0.25), (10, 0.5), (11, 0.75), (12, 1.0), (19, 1.0)]:
        np.testing.assert_allclose(c[frame], (1 - s) * a + s * b, atol=1e-6, err_msg=f"frame {frame}")
    # frame 9 literally: neutral 0.75, happy 0.25; level 1: 0.75, level 3: 0.25
    expected9 = np.zeros(11, np.float32)
    expected9[[0, 5, 8, 10]] = [0.75, 0.25, 0.75, 0.25]
    np.testing.assert_allclose(c[9], expected9, atol=1e-6)


def test_smoothstep_and_zero_ramp():
    tl = Timeline([(0, "neutral", 1), (1.0, "sad", 1)], ramp=0.4, curve="smoothstep")
    c = tl.controls(20, 10.0, EMOTIONS, 3)
    sad = EMOTIONS.index("sad")
    assert c[9, sad] == pytest.approx(0.15625)  # 3x^2 - 2x^3 at x = 0.25
    assert c[10, sad] == pytest.approx(0.5) and c[11, sad] == pytest.approx(0.84375)
    step = Timeline([(0, "neutral"), (1.0, "sad")], ramp=0).controls(20, 10.0, EMOTIONS, 3)
    assert step[9, sad] == 0 and step[10, sad] == 1


def test_first_keyframe_holds_before_its_time_and_close_keyframes_stay_convex():
    c = Timeline([(0.5, "angry", 2), (0.6, "happy", 1), (0.7, "sad", 3)], ramp=0.5).controls(30, 20.0, EMOTIONS, 3)
    np.testing.assert_allclose(c[0], vec("angry", 2), atol=1e-7)  # t=0 is before the first ramp starts
    assert (c >= -1e-7).all()
    np.testing.assert_allclose(c[:, :8].sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(c[:, 8:].sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(c[-1], vec("sad", 3), atol=1e-7)


def test_issue_example_at_chosen_frames():
    c = parse_timeline(ISSUE).controls(200, 25.0, EMOTIONS, 3)  # 8 s at 25 fps
    np.testing.assert_allclose(c[30], vec("neutral"), atol=1e-7)  # 1.2 s: before 1.35 s
    np.testing.assert_allclose(c[75], vec("happy", 3), atol=1e-7)  # 3.0 s
    np.testing.assert_allclose(c[100], 0.5 * vec("happy", 3) + 0.5 * vec("sad", 2), atol=1e-6)  # 4.0 s: half way
    np.testing.assert_allclose(c[199], vec("surprised:0.6,happy:0.4", 2.5), atol=1e-6)


# --- errors: one line, naming the keyframe ---------------------------------------------------------------
ERRORS = {
    "1:neutral, 0.5:happy": "keyframe 2 ('0.5:happy') at 0.5 s comes before keyframe 1",
    "0:neutral, 1:happy, 1:sad": "keyframes 2 and 3 ('1:sad') are both at 1 s",
    "0:neutral, 1:hapy": "keyframe 2 ('1:hapy'): unknown emotion 'hapy'",
    "0:neutral, 1:happy@4": "keyframe 2 ('1:happy@4'): intensity must be between 1 and 3",
    "0:neutral, 1:happy@0": "keyframe 2 ('1:happy@0'): intensity must be between 1 and 3",
    "0:neutral, 1:happy@loud": "keyframe 2 ('1:happy@loud'): intensity 'loud'",
    "0:neutral, 1:happy:x+sad": "keyframe 2 ('1:happy:x+sad'): emotion weight 'x'",
    "0:neutral, 1:happy:-1+sad": "keyframe 2 ('1:happy:-1+sad'): emotion weight for 'happy' must be",
    "0:neutral, sad": "keyframe 2 ('sad') must start with a time",
    "0:neutral, 9:sad": "keyframe 2 ('9:sad') is at 9 s, past the end of the audio (4.00 s)",
}


@pytest.mark.parametrize("spec", list(ERRORS))
def test_errors_name_the_keyframe(spec):
    with pytest.raises(InputError) as e:
        parse_timeline(spec).controls(100, 25.0, EMOTIONS, 3)
    msg = str(e.value)
    assert ERRORS[spec] in msg and "\n" not in msg, msg


def test_structural_errors_fail_when_the_options_are_built():
    with pytest.raises(InputError, match="comes before keyframe 1"):
        GenerateOptions(emotion="2:happy, 1:sad")
    with pytest.raises(InputError, match="ramp must be a number of seconds >= 0"):
        GenerateOptions(emotion="0:happy", ramp=-1)
    with pytest.raises(InputError, match="unknown ramp curve"):
        GenerateOptions(ramp_curve="cubic")
    with pytest.raises(InputError, match="time must be a number of seconds"):
        Timeline([(-1, "happy")])


# --- with the tiny trained models ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tiny_checkpoints, tmp_path_factory, one_torch_thread):
    from emotalk.data.io.media import write_wav
    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.inference import Pipeline
    from emotalk.mini.tts import synthesize

    d = tmp_path_factory.mktemp("timeline")
    wav = d / "speech.wav"
    write_wav(wav, synthesize("Open the crate but don't break the glass.", seed=1).audio)  # ~2.8 s
    pipe = Pipeline.from_checkpoints(tiny_checkpoints, device="cpu")
    photo = pipe.prepare_photo(grace_hopper_path(), 256)
    feats = pipe.audio_features(wav)
    return pipe, photo, feats, wav, grace_hopper_path()


def test_pipeline_controls_are_the_timeline_ramps_for_both_models(setup):
    pipe, _, feats, _, _ = setup
    tl = Timeline([(0, "neutral"), (1.0, "happy", 3), (2.0, "sad", 2)], ramp=0.5)
    c = pipe.controls(tl, 1, "neural", feats.num_frames, pipe.fps)
    assert c.landmark.shape == (feats.num_frames, pipe.landmark.emotion_dim) and c.texture.shape == c.landmark.shape
    t = pipe.texture.model_config
    np.testing.assert_array_equal(c.landmark, tl.controls(feats.num_frames, pipe.fps, pipe.emotions, 3))
    np.testing.assert_array_equal(c.texture, tl.controls(feats.num_frames, pipe.fps, list(t.emotions),
                                                         int(t.intensity_levels)))
    early = pipe.controls(tl, 1, "neural")  # before the audio is known: keyframe 0, every keyframe checked
    np.testing.assert_array_equal(early.landmark, vec("neutral"))
    with pytest.raises(InputError, match="keyframe 3"):
        pipe.controls("0:neutral, 1:happy, 2:joyful", 1, "neural")


def _progress(track, start, end):
    """Per frame, how far ``track`` has moved from ``start`` towards ``end`` (projection, 0 .. 1)."""
    d = end - start
    return ((track - start) * d).sum((1, 2)) / (d * d).sum((1, 2))


def test_landmarks_move_between_keyframe_geometries(setup):
    """G_L's own output, then the warp renderer's frames re-detected with dlib (a box detected once on the
    first frame, landmarks fitted in it on every frame, so detection jitter does not enter)."""
    from emotalk.data.face.detect import DlibLandmarker

    pipe, photo, feats, _, _ = setup
    T, fps = feats.num_frames, pipe.fps
    keys = [(0, "neutral", 1), (0.9, "happy", 3), (1.9, "surprised", 3)]
    tl = Timeline(keys, ramp=0.5)
    prepared = pipe.make_renderer(photo, "warp")
    det = DlibLandmarker()

    def run(control):
        raw = pipe.predict_landmarks(feats, control, photo.aligned)
        lm, _ = pipe.animate(raw, blink=False)
        return raw, list(pipe.frames(photo, lm, prepared, paste=False))

    raw_tl, frames_tl = run(pipe.controls(tl, 1, "warp", T, fps).landmark)
    const = [run(pipe.landmark_emotion(e, i)) for _, e, i in keys]
    box = det.largest_face(frames_tl[0]).box
    fitted = [np.stack([det.fit(f, box).landmarks for f in frames]) for frames in [frames_tl] + [c[1] for c in const]]

    for k in (1, 2):
        centre = int(round(keys[k][0] * fps))
        half = int(np.ceil(0.25 * fps))  # half the ramp in frames
        before = slice(centre - half - 8, centre - half - 2)  # clear of the ramp and the 5-frame smoothing
        after = slice(centre + half + 3, centre + half + 9)
        # G_L: outside the ramps exactly the keyframe's emotion (G_L is per frame); half way at the keyframe
        np.testing.assert_allclose(raw_tl[before], const[k - 1][0][before], atol=1e-5)
        np.testing.assert_allclose(raw_tl[after], const[k][0][after], atol=1e-5)
        g = _progress(raw_tl, const[k - 1][0], const[k][0])
        assert 0.2 < g[centre] < 0.8, g[centre - half:centre + half + 1]
        assert (np.diff(g[centre - half:centre + half + 1]) > -0.02).all()  # monotone through the ramp
        # re-detected: the two emotions' geometries differ by more than detector noise, and the timeline's
        # frames go from one to the other around the keyframe
        start, end = fitted[k], fitted[k + 1]
        assert np.linalg.norm(end - start, axis=-1).mean() > 1.0
        p = _progress(fitted[0], start, end)
        assert np.abs(p[before]).max() < 0.1 and np.abs(p[after] - 1).max() < 0.1, p
        first, second = p[centre - half:centre].mean(), p[centre + 1:centre + half + 1].mean()
        assert -0.1 < first < second < 1.1 and 0.15 < p[centre - 3:centre + 4].mean() < 0.85, p


def test_generate_with_timeline_object_and_equivalent_array(setup, tmp_path):
    pipe, _, feats, wav, image = setup
    tl = Timeline([(0, "neutral"), (1.2, "happy", 3)], ramp=0.3)
    opts = GenerateOptions(renderer="warp", size=128, progress=False, blink=False)
    a = pipe.generate(image, wav, opts, emotion=tl, out=tmp_path / "tl.mp4")
    per_frame = tl.controls(feats.num_frames, pipe.fps, pipe.emotions, pipe.intensity_levels)
    b = pipe.generate(image, wav, opts, emotion=per_frame, out=tmp_path / "array.mp4")
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-6)
    c = pipe.generate(image, wav, opts, emotion="neutral", out=tmp_path / "neutral.mp4")
    assert np.abs(a.landmarks[:20] - c.landmarks[:20]).max() < 1e-5  # before the ramp: the neutral face
    assert np.abs(a.landmarks[-20:] - c.landmarks[-20:]).max() > 1e-3  # after it: not neutral
    with pytest.raises(InputError, match="per-frame emotion control vectors for"):
        pipe.generate(image, wav, opts, emotion=per_frame[:10], out=tmp_path / "short.mp4")
    with pytest.raises(InputError, match="past the end of the audio"):
        pipe.generate(image, wav, opts, emotion="0:neutral, 5:happy", out=tmp_path / "late.mp4")
    assert not (tmp_path / "short.mp4").exists() and not (tmp_path / "late.mp4").exists()


def test_cli_timeline(tiny_checkpoints, setup, tmp_path, capsys):
    from emotalk.cli.main import main
    from emotalk.data.io.media import probe_video

    _, _, _, wav, image = setup
    out = tmp_path / "timeline.mp4"
    code = main(["generate", "--image", str(image), "--audio", str(wav), "--emotion", "0:neutral, 1:happy@3, 2:sad@2",
                 "--ramp", "0.4", "--ramp-curve", "smoothstep", "--checkpoints", str(tiny_checkpoints),
                 "--finetune-steps", "0", "--size", "128", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert probe_video(out).num_frames > 60
    bad = tmp_path / "bad.mp4"
    code = main(["generate", "--image", str(image), "--audio", str(wav), "--emotion", "0:neutral, 1:happy@3, 0.5:sad",
                 "--checkpoints", str(tiny_checkpoints), "--out", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "keyframe 3 ('0.5:sad')" in err[0], err
    assert not bad.exists()
