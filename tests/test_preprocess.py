"""Landmark extraction and tracking, and the per-clip / dataset preprocessing pipeline on tiny real videos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emotalk.data.io import media
from emotalk.data.io.clip import DatasetManifest, clip_path, list_clips, load_clip, load_subject, subject_path
from emotalk.data.face.detect import DlibLandmarker
from emotalk.data.face.landmarkers import FAN_WEIGHTS_FILE, FaceAlignmentLandmarker, make_landmarker
from emotalk.data.face.track import TrackerOptions, smooth_landmarks, track_landmarks
from emotalk.models.face_graph import canonical_template
from emotalk.data.io.photos import public_domain_photos
from emotalk.errors import MissingWeightsError, NoFaceError

SR = 16000


# ------------------------------------------------------------------------------------------- helpers
def face_image() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:320, 60:380])  # 320x320, face about 90 px


def shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT)


def motion(t: int) -> tuple[float, float]:
    return 4.0 * np.sin(2 * np.pi * t / 30), 2.0 * np.cos(2 * np.pi * t / 45)


def face_frames(n: int, img: np.ndarray | None = None) -> list[np.ndarray]:
    img = face_image() if img is None else img
    return [shift(img, *motion(t)) for t in range(n)]


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def make_clip_files(video: Path, audio: Path | None, n: int = 60, fps: float = 30.0, frames=None,
                    mux_audio: bool = False) -> None:
    video.parent.mkdir(parents=True, exist_ok=True)
    wav = None
    if audio is not None or mux_audio:
        wav = audio if audio is not None else video.with_suffix(".tmp.wav")
        wav.parent.mkdir(parents=True, exist_ok=True)
        media.write_wav(wav, tone(n / fps), SR)
    media.write_video(video, frames if frames is not None else face_frames(n), fps,
                      audio=wav if mux_audio else None)
    if mux_audio and audio is None:
        wav.unlink()


# ------------------------------------------------------------------------------------------- landmarks
@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_dlib_landmarks_land_on_facial_features(name):
    import cv2

    img = public_domain_photos()[name]
    face = DlibLandmarker().largest_face(img)
    p = face.landmarks
    right_eye, left_eye = p[36:42].mean(0), p[42:48].mean(0)  # the subject's right eye is on the image left
    nose_tip, mouth, chin = p[30], p[48:68].mean(0), p[8]
    assert left_eye[0] > right_eye[0] + 20
    assert nose_tip[1] > max(right_eye[1], left_eye[1]) + 10
    assert mouth[1] > nose_tip[1] + 5 and chin[1] > mouth[1] + 5
    assert right_eye[0] < nose_tip[0] < left_eye[0]
    l, t, r, b = face.box
    m = 0.25 * (r - l)
    assert (p[:, 0] > l - m).all() and (p[:, 0] < r + m).all() and (p[:, 1] > t - m).all() and (p[:, 1] < b + m).all()
    # independent check: OpenCV's Haar eye detector finds each eye around one of dlib's eye centres
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_eye.xml")
    boxes = cascade.detectMultiScale(gray[int(t):int(b), int(l):int(r)], 1.05, 3)
    assert len(boxes) == 2
    hits = set()
    for ex, ey, ew, eh in boxes:
        inside = [k for k, c in enumerate((right_eye, left_eye))
                  if l + ex <= c[0] <= l + ex + ew and t + ey <= c[1] <= t + ey + eh]
        assert len(inside) == 1
        hits.add(inside[0])
    assert hits == {0, 1}


def test_tracking_detects_once_and_follows_motion():
    frames = face_frames(45)
    res = track_landmarks(frames, options=TrackerOptions(smoothing="none"))
    assert res.detections == 1 and res.missing == 0 and res.redetect_frames == []
    assert res.landmarks.shape == (45, 68, 2)
    moved = res.landmarks.mean(1) - res.landmarks[0].mean(0)
    expect = np.array([motion(t) for t in range(45)]) - np.array(motion(0))
    assert np.abs(moved - expect).max() < 1.0  # pixels


def test_tracking_follows_the_largest_face():
    import cv2

    img = face_image()
    small = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)  # the same face, 0.7x
    canvas = np.zeros((320, 640, 3), np.uint8)
    canvas[:224, :224] = small
    canvas[:, 320:] = img
    res = track_landmarks([canvas] * 5, options=TrackerOptions(smoothing="none"))
    assert res.raw[:, :, 0].mean() > 320  # the big face on the right, not the small one
    assert len(DlibLandmarker().detect_faces(canvas)) == 2


def test_tracking_redetects_after_jump_and_gap():
    img = face_image()
    frames = face_frames(20, img)
    frames += [np.full_like(img, 128)] * 3  # the face disappears ...
    frames += [shift(np.roll(img, 70, axis=1), *motion(t)) for t in range(23, 40)]  # ... and comes back elsewhere
    frames += [shift(np.roll(img, -60, axis=1), *motion(t)) for t in range(40, 50)]  # a jump, no gap
    res = track_landmarks(frames, options=TrackerOptions(smoothing="none"))
    assert res.missing == 3 and not res.found[20:23].any()
    assert 20 in res.redetect_frames and 40 in res.redetect_frames
    assert res.detections <= 7  # first frame, the gap (3), the return, the jump
    assert res.raw[30].mean(0)[0] - res.raw[10].mean(0)[0] == pytest.approx(70 + motion(30)[0] - motion(10)[0], abs=1.5)
    assert res.raw[45].mean(0)[0] - res.raw[10].mean(0)[0] == pytest.approx(-60 + motion(45)[0] - motion(10)[0], abs=1.5)
    assert np.isfinite(res.landmarks).all()  # the gap is interpolated
    with pytest.raises(NoFaceError, match="no face"):
        track_landmarks([np.full_like(img, 90)] * 5)
    with pytest.raises(NoFaceError, match="of 10 frames"):
        track_landmarks(face_frames(4, img) + [np.full_like(img, 90)] * 6)


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    clean = np.broadcast_to(np.sin(t / 10.0)[:, None, None] * 5, (60, 68, 2)).astype(np.float32)
    noisy = clean + rng.normal(0, 0.5, clean.shape).astype(np.float32)
    for kind, gain in (("savgol", 0.7), ("one_euro", 0.9)):  # one-euro is causal: less smoothing, no look-ahead
        out = smooth_landmarks(noisy, TrackerOptions(smoothing=kind, smooth_window=7))
        assert np.abs(out - clean).mean() < gain * np.abs(noisy - clean).mean()
    assert smooth_landmarks(noisy, TrackerOptions(smoothing="none")) is not None


def test_face_alignment_backend_needs_local_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("EMOTALK_FACE_ALIGNMENT_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError) as e:
        make_landmarker("face_alignment")
    msg = str(e.value)
    assert FAN_WEIGHTS_FILE in msg and "--face-alignment-weights" in msg
    with pytest.raises(MissingWeightsError, match=FAN_WEIGHTS_FILE):
        make_landmarker("face_alignment", weights=tmp_path / "nope.pth.tar")


@pytest.mark.slow
def test_face_alignment_backend_runs_from_a_local_file(tmp_path):
    """The FAN code path with a (random, 1-module) weights file supplied locally: shapes and plumbing."""
    torch = pytest.importorskip("torch")
    fan = pytest.importorskip("face_alignment.models")
    torch.manual_seed(0)
    path = tmp_path / FAN_WEIGHTS_FILE
    torch.save(fan.FAN(1).state_dict(), path)
    lm = FaceAlignmentLandmarker(weights=tmp_path, device="cpu", flip_input=False)
    assert lm.weights_path == path
    face = lm.fit(face_image(), (115, 76, 205, 166))
    assert face.landmarks.shape == (68, 2) and np.isfinite(face.landmarks).all()
    # every point decodes inside the FAN crop around the box
    assert (np.abs(face.landmarks - [160, 110]) < 200).all()
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(MissingWeightsError, match="do not fit"):
        FaceAlignmentLandmarker(weights=bad, device="cpu")


# ------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def mini_raw(tmp_path_factory):
    """A tiny MEAD-layout dataset (.wav audio, like mead-mini) with good and bad clips."""
    root = tmp_path_factory.mktemp("raw")
    s1 = root / "S01"
    make_clip_files(s1 / "video/front/neutral/level_1/001.mp4", s1 / "audio/neutral/level_1/001.wav")
    make_clip_files(s1 / "video/front/happy/level_2/001.mp4", s1 / "audio/happy/level_2/001.wav", n=50, fps=25.0)
    bad = s1 / "video/front/sad/level_1/001.mp4"  # corrupt
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    make_clip_files(s1 / "video/front/sad/level_2/001.mp4", None)  # no wav and no audio track
    make_clip_files(s1 / "video/front/angry/level_1/001.mp4", s1 / "audio/angry/level_1/001.wav", n=4)  # short
    blank = [np.full((240, 320, 3), 100, np.uint8)] * 30
    make_clip_files(s1 / "video/front/fear/level_1/001.mp4", s1 / "audio/fear/level_1/001.wav", frames=blank)
    # S02 has no neutral clip (first-frame fallback); its audio is the video's own track
    make_clip_files(root / "S02/video/front/angry/level_3/002.mp4", None, n=40, mux_audio=True)
    (root / "S02/video/front/angry/level_7").mkdir(parents=True)
    (root / "S02/video/front/angry/level_7/001.mp4").write_bytes(b"x")  # bad name
    return root


@pytest.mark.slow
def test_preprocess_dataset_end_to_end(mini_raw, tmp_path):
    from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset

    out = tmp_path / "processed"
    opts = PreprocessOptions(features="phonemes", crop_size=128)
    summary = preprocess_dataset("mead-mini", mini_raw, out, options=opts, progress=False)
    assert summary.done == 3
    assert summary.skipped == {"corrupt video": 1, "missing audio": 1, "too short": 1, "no face": 1}
    assert summary.rejected_names == 1
    report = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    reasons = {(r.get("clip_id"), r["reason"]) for r in report}
    assert ("sad_level1_001", "corrupt video") in reasons and ("sad_level2_001", "missing audio") in reasons
    assert ("angry_level1_001", "too short") in reasons and ("fear_level1_001", "no face") in reasons
    assert any(r["reason"] == "bad name" and "level 7" in r["message"] for r in report)

    man = DatasetManifest.load(out)
    assert (man.feature_kind, man.feature_dim, man.window, man.crop_size, man.source) == \
        ("phonemes", 40, 20, 128, "mead-mini")
    assert man.extra["subjects"]["S01"] == {"mode": "neutral_clip", "source": "neutral_level1_001"}
    assert man.extra["subjects"]["S02"]["mode"] == "first_frame"

    tpl = canonical_template()
    ref = load_subject(subject_path(out, "S01"))
    assert ref.image.shape == (128, 128, 3) and ref.crop_landmarks.shape == (68, 2)
    for p in list_clips(out):
        c = load_clip(p)  # validates shapes
        T = c.num_frames
        assert c.audio_features.shape == (T, 20, 40) and c.crop_landmarks.shape == (T, 68, 2)
        assert c.frames_offsets.shape == (T + 1,) and c.frame(T - 1).shape == (128, 128, 3)
        assert len(c.audio) == round(T / 30.0 * SR) and c.fps == 30.0
        # a static face (no expression): retargeted landmarks stay on the template
        assert np.abs(c.landmarks - tpl).max() < 0.06
        # one fixed crop per clip: the face moves inside it with the synthetic head motion
        scale = np.hypot(*np.asarray(c.extra["crop_matrix"])[:, 0])
        moved = c.crop_landmarks.mean(1)
        assert np.ptp(moved[:, 0]) == pytest.approx(8.0 * scale, rel=0.3)
        # crop-space landmarks sit on the face in the crop image
        found = DlibLandmarker().largest_face(c.frame(0)).landmarks
        assert np.median(np.linalg.norm(found - c.crop_landmarks[0], axis=1)) < 2.5
    neutral = load_clip(clip_path(out, "S01", "neutral_level1_001"))
    happy = load_clip(clip_path(out, "S01", "happy_level2_001"))
    assert neutral.num_frames == 60 and happy.num_frames == 60  # 2 s at 25 fps -> 60 frames at 30 fps
    np.testing.assert_allclose(happy.neutral_landmarks, ref.neutral_landmarks)
    assert happy.extra["neutral"] == "neutral_clip" and happy.extra["source_fps"] == 25.0
    assert (happy.emotion, happy.intensity, happy.extra["sentence"]) == ("happy", 2, "001")
    s2 = load_clip(clip_path(out, "S02", "angry_level3_002"))
    assert s2.extra["neutral"] == "first_frame" and s2.extra["audio_source"] == "video track"
    np.testing.assert_allclose(s2.landmarks[0], tpl, atol=1e-5)  # its own first frame is the neutral

    # resume: nothing is redone; a deleted clip is redone (through worker processes)
    stamp = {p: p.stat().st_mtime_ns for p in list_clips(out)}
    again = preprocess_dataset("mead-mini", mini_raw, out, options=opts, progress=False)
    assert again.done == 0 and again.already_done == 3 and sum(again.skipped.values()) == 4
    assert {p: p.stat().st_mtime_ns for p in list_clips(out)} == stamp
    clip_path(out, "S02", "angry_level3_002").unlink()
    third = preprocess_dataset("mead-mini", mini_raw, out, options=opts, progress=False, workers=2)
    assert third.done == 1 and third.already_done == 2
    assert load_clip(clip_path(out, "S02", "angry_level3_002")).num_frames == 40


@pytest.mark.slow
def test_cli_preprocess_crema_d_with_deepspeech(tmp_path, capsys):
    from emotalk.cli.main import main

    raw = tmp_path / "CREMA-D"
    make_clip_files(raw / "VideoMP4/1001_DFA_NEU_XX.mp4", raw / "AudioWAV/1001_DFA_NEU_XX.wav", n=45)
    make_clip_files(raw / "VideoMP4/1001_IEO_HAP_HI.mp4", raw / "AudioWAV/1001_IEO_HAP_HI.wav", n=45)
    ds = tmp_path / "ds"
    (ds / "1001").mkdir(parents=True)
    np.save(ds / "1001" / "1001_DFA_NEU_XX.npy", np.zeros((38, 16, 29), np.float32))  # 1.5 s at 25 fps
    out = tmp_path / "out"
    code = main(["preprocess", "--dataset", "crema-d", "--root", str(raw), "--out", str(out), "--features",
                 "deepspeech", "--deepspeech-dir", str(ds), "--crop-size", "96"])
    assert code == 0
    text = capsys.readouterr().out  # the summary is logged at INFO (hidden by --quiet)
    assert "1 clips done" in text and "skipped (missing features): 1" in text
    c = load_clip(clip_path(out, "1001", "1001_DFA_NEU_XX"))
    assert c.audio_features.shape == (45, 6, 29) and c.feature_kind == "deepspeech"
    assert c.frame(0).shape == (96, 96, 3) and c.extra["split"] == "test"
    # a user error is one line, not a traceback
    code = main(["preprocess", "--dataset", "crema-d", "--root", str(raw), "--out", str(tmp_path / "o2"),
                 "--features", "deepspeech"])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error:") and "--deepspeech-dir" in err and len(err.strip().splitlines()) == 1
    # changing the feature kind of an existing output folder is refused
    code = main(["preprocess", "--dataset", "crema-d", "--root", str(raw), "--out", str(out), "--quiet"])
    assert code != 0 and "feature_kind" in capsys.readouterr().err


@pytest.mark.slow
def test_ground_truth_sidecar_landmarks(tmp_path):
    """mead-mini's <NNN>.landmarks.npz replaces tracking with --landmarks sidecar."""
    from emotalk.data.face.alignment import apply_similarity, invert_similarity
    from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset

    raw = tmp_path / "raw"
    video = raw / "W001/video/front/neutral/level_1/001.mp4"
    make_clip_files(video, raw / "W001/audio/neutral/level_1/001.wav", n=30)
    base = DlibLandmarker().largest_face(face_image()).landmarks
    gt = np.stack([base + np.array(motion(t), np.float32) for t in range(30)]).astype(np.float32)
    np.savez(video.with_name("001.landmarks.npz"), landmarks=gt, fps=np.array(30.0))
    out = tmp_path / "out"
    summary = preprocess_dataset("mead-mini", raw, out, options=PreprocessOptions(landmark_source="sidecar"),
                                 progress=False)
    assert summary.done == 1
    c = load_clip(clip_path(out, "W001", "neutral_level1_001"))
    assert c.extra["landmarks_source"] == "sidecar" and c.extra["detections"] == 0
    back = apply_similarity(invert_similarity(np.asarray(c.extra["crop_matrix"])), c.crop_landmarks)
    np.testing.assert_allclose(back, gt, atol=1e-2)


def _scaled_by_worker_state(x: int) -> tuple[int, int]:
    from emotalk.data.parallel import worker_cached, worker_state

    calls = worker_cached("calls", lambda: [])  # one list per worker process
    calls.append(x)
    return x * worker_state()["factor"], len(calls)


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_pool_ships_state_once_and_keeps_order(workers):
    """The one pool preprocessing and mead-mini share: same results in process and in forkserver workers,
    state readable in every worker, per-worker caches, state gone from this process afterwards."""
    from emotalk.data.parallel import WorkerPool, worker_state

    with WorkerPool(workers, state={"factor": 3}) as pool:
        out = list(pool.imap(_scaled_by_worker_state, range(8)))
    assert [v for v, _ in out] == [3 * i for i in range(8)]
    counts = [n for _, n in out]
    if workers == 1:  # one cache, in this process: it grows by one per item
        assert counts == list(range(counts[0], counts[0] + 8))
    assert "factor" not in worker_state()


def test_pcm_wav_is_read_without_ffmpeg_bit_for_bit(tmp_path, monkeypatch):
    """load_audio reads a 16-bit mono WAV at the asked rate directly (no ffmpeg process per clip); the samples
    equal ffmpeg's decode exactly, and any other WAV still goes through ffmpeg."""
    wav = tmp_path / "a.wav"
    samples = np.random.default_rng(0).integers(-32768, 32768, 4000).astype(np.int16)
    media.write_wav(wav, samples, SR)
    direct = media.load_audio(wav, SR)
    assert media._pcm16_wav(wav, SR) is not None
    monkeypatch.setattr(media, "_pcm16_wav", lambda path, sr: None)
    via_ffmpeg = media.load_audio(wav, SR)
    assert direct.dtype == via_ffmpeg.dtype == np.float32
    np.testing.assert_array_equal(direct, via_ffmpeg)
    np.testing.assert_array_equal(direct * 32768, samples)
    monkeypatch.undo()
    assert media._pcm16_wav(wav, 22050) is None  # another rate: ffmpeg resamples
    assert len(media.load_audio(wav, 8000)) == 2000


@pytest.mark.slow
def test_decoding_once_matches_two_passes(tmp_path, monkeypatch):
    """Small videos are decoded once (grey for the tracker made from the kept colour frames); the result
    matches the two-pass path that large videos take: same audio features, landmarks and crops within what
    the grey conversion moves them."""
    from emotalk.data.preprocess import clip_analysis as ca
    from emotalk.data.preprocess.readers import ClipRecord

    video, wav = tmp_path / "v.mp4", tmp_path / "a.wav"
    make_clip_files(video, wav, n=20)
    rec = ClipRecord("mead-mini", "S01", "neutral_level1_001", "neutral", 1, "001", video, wav)
    opts = ca.PreprocessOptions(features="mel")
    assert ca._decode_once(media.probe_video(video), 30.0)
    once = ca.analyze_clip(rec, opts)
    monkeypatch.setattr(ca, "DECODE_ONCE_BYTES", 0)
    assert not ca._decode_once(media.probe_video(video), 30.0)
    twice = ca.analyze_clip(rec, opts)
    assert once.num_frames == twice.num_frames == 20
    np.testing.assert_array_equal(once.features, twice.features)
    assert np.abs(once.crop_landmarks - twice.crop_landmarks).mean() < 1.0
    a = np.stack([cv2_decode(once, t) for t in range(20)]).astype(float)
    b = np.stack([cv2_decode(twice, t) for t in range(20)]).astype(float)
    # the crop follows the landmarks' median, which the two grey conversions move by sub-pixels (0.5 px here: 5.5 on
    # this textured photo; a 3-pixel shift: 11)
    assert np.abs(once.crop_matrix[:, 2] - twice.crop_matrix[:, 2]).max() < 0.75
    assert np.abs(a - b).mean() < 7.0


def cv2_decode(an, t: int) -> np.ndarray:
    import cv2

    return cv2.imdecode(an.frames_jpeg[int(an.frames_offsets[t]):int(an.frames_offsets[t + 1])], cv2.IMREAD_COLOR)


def test_small_video_decoded_in_process_bit_for_bit(tmp_path):
    """decode_small_video (OpenCV's FFmpeg, no ffmpeg process) gives ffmpeg's frames byte for byte, and refuses
    what it cannot do the same way: another frame rate (ffmpeg's fps filter would resample), a video over the
    size limit, a missing or unreadable file."""
    video = tmp_path / "v.mp4"
    make_clip_files(video, None, n=12)
    got = media.decode_small_video(video, 30.0, 1 << 30)
    assert got is not None
    info, frames = got
    ref = list(media.iter_video_frames(video, 30.0))
    assert len(frames) == len(ref) == info.num_frames == 12 and (info.width, info.height) == (320, 320)
    for a, b in zip(frames, ref):
        np.testing.assert_array_equal(a, b)
    assert media.decode_small_video(video, 25.0, 1 << 30) is None
    assert media.decode_small_video(video, 30.0, 320 * 320 * 3 * 11) is None
    assert media.decode_small_video(tmp_path / "none.mp4", 30.0, 1 << 30) is None
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert media.decode_small_video(tmp_path / "bad.mp4", 30.0, 1 << 30) is None


def test_jpeg_frames_are_the_bytes_of_a_reversed_channel_copy():
    """encode_frames converts RGB with cvtColor (cheaper than a reversed-stride copy): the same JPEG bytes."""
    import cv2

    from emotalk.data.io.clip import encode_frames

    frames = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(3)]
    data, offsets = encode_frames(frames, quality=92)
    want = [cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].ravel()
            for f in frames]
    np.testing.assert_array_equal(data, np.concatenate(want))
    assert offsets.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()
