"""The optional exact ("true") landmark track of processed clips (issue 12 §3): stored by preprocessing from
mead-mini's sidecars beside the detected track (canonical space for G_L, crop pixels for G_T), saved and loaded
with the clip and the subject reference, and read by G_L's and G_T's datasets with ``data.track: exact`` (a
clip without it is a typed error); the demo trains both on it together."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotalk.data.datasets.landmark import LandmarkFrameDataset, clip_track, has_true_track
from emotalk.data.datasets.texture import TextureFrameDataset
from emotalk.data.face.alignment import align_to_template, apply_similarity
from emotalk.data.io.clip import (Clip, SubjectReference, clip_path, encode_frames, load_clip, load_subject,
                                  save_clip, save_subject, subject_path)
from emotalk.errors import ConfigError, DataError
from emotalk.models.face_graph import BROWS, canonical_template

T = 10


def _clip(true: bool = True, t: int = T, **kw) -> Clip:
    rng = np.random.default_rng(0)
    tpl = canonical_template().astype(np.float32)
    args = dict(landmarks=tpl + rng.normal(0, 0.01, (t, 68, 2)).astype(np.float32),
                neutral_landmarks=tpl + 0.02, audio_features=np.zeros((t, 4, 3), np.float32), emotion="happy",
                intensity=3, fps=30.0, subject="W001", clip_id="happy_level3_001", feature_kind="mel")
    if true:
        moved = np.repeat(tpl[None], t, 0)
        moved[:, list(BROWS), 1] -= 0.05  # brows up by 0.05 eye distances in every frame
        args.update(true_landmarks=moved, true_neutral_landmarks=tpl + 0.01)
    args.update(kw)
    return Clip(**args)


def test_true_track_round_trips_and_old_files_still_load(tmp_path):
    c = _clip()
    save_clip(c, tmp_path / "a.npz")
    back = load_clip(tmp_path / "a.npz")
    assert back.has_true_track
    np.testing.assert_array_equal(back.true_landmarks, c.true_landmarks)
    np.testing.assert_array_equal(back.true_neutral_landmarks, c.true_neutral_landmarks)
    old = _clip(true=False)  # a file written before the track existed has neither entry
    save_clip(old, tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz") as z:
        assert "true_landmarks" not in z.files
    assert not load_clip(tmp_path / "b.npz").has_true_track


def test_true_track_is_validated():
    with pytest.raises(DataError, match=r"true_landmarks must have shape \(10, 68, 2\)"):
        _clip(true_landmarks=np.zeros((T - 1, 68, 2), np.float32)).validate()
    with pytest.raises(DataError, match="come together"):
        _clip(true_neutral_landmarks=None).validate()
    bad = _clip()
    bad.true_landmarks[3, 5, 0] = np.nan
    with pytest.raises(DataError, match="true_landmarks contains NaN"):
        bad.validate()


def test_dataset_reads_the_chosen_track():
    c = _clip()
    tpl = canonical_template()
    true = LandmarkFrameDataset([c], track="exact")
    # X = the true neutral face, X^ = X + (true_landmarks - template): the brows 0.05 up, nothing else moves
    np.testing.assert_allclose(true.neutral[0].numpy(), c.true_neutral_landmarks)
    disp = true.target.numpy() - true.neutral.numpy()
    np.testing.assert_allclose(disp[:, list(BROWS), 1], -0.05, atol=1e-6)
    np.testing.assert_allclose(np.delete(disp, list(BROWS), axis=1), 0.0, atol=1e-6)
    det = LandmarkFrameDataset([c])  # the default: the detected track, unchanged
    np.testing.assert_allclose(det.target.numpy(), c.neutral_landmarks + (c.landmarks - tpl), atol=1e-6)
    # a clip preprocessed with --landmarks sidecar has its exact landmarks in the main track
    side = _clip(true=False, extra={"landmarks_source": "sidecar"})
    assert clip_track(side, "exact")[0] is side.landmarks


def test_missing_true_track_is_a_data_error_that_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"W001/happy_level3_001 has no true landmark track.*data\.track=detected"):
        LandmarkFrameDataset([_clip(true=False)], track="exact")
    with pytest.raises(DataError, match="data.track must be one of"):
        clip_track(_clip(), "sidecar")
    save_clip(_clip(true=False), clip_path(tmp_path, "W001", "a"))
    assert not has_true_track(tmp_path)
    save_clip(_clip(), clip_path(tmp_path / "t", "W001", "a"))
    assert has_true_track(tmp_path / "t")


def test_landmark_config_checks_the_track():
    from emotalk.train.landmark_task import LandmarkTrainConfig

    cfg = LandmarkTrainConfig()
    cfg.data.track = "sidecar"
    with pytest.raises(ConfigError, match="data.track"):
        cfg.validate()
    cfg.data.track = "exact"
    cfg.validate()


def test_validation_log_names_the_ground_truth_track():
    from emotalk.train.landmark_validation import expression_summary

    numbers = {"expr_ratio/happy/eyes": 0.9, "expr_real/happy/eyes": 0.02, "expr_ratio/eyes": 0.9}
    assert "ground truth: exact track" in expression_summary(800, numbers, regions=("eyes",), track="exact")
    assert "ground truth" not in expression_summary(800, numbers, regions=("eyes",)).split("(")[1].split(";")[1]


# ------------------------------------------------------------------------------------------- preprocessing
REST = (canonical_template() * 100.0 + np.array([160.0, 150.0])).astype(np.float32)  # a face in pixels


class _StillFace:
    """A landmarker that always reads the rest face: the detected track stays still, whatever the frames
    show (the test is about the other track; no dlib model to load)."""

    def detect_boxes(self, image):
        return [(60.0, 40.0, 260.0, 260.0)]

    def fit(self, image, box):
        from emotalk.data.face.detect import Face

        return Face(tuple(box), REST.copy())


class _NoFeatures:
    def windows(self, audio, sr, num_frames, **kw):
        return np.zeros((num_frames, 4, 3), np.float32)


@pytest.fixture
def fast_analysis(monkeypatch):
    from emotalk.data.preprocess import clip_analysis

    monkeypatch.setattr(clip_analysis, "_landmarker", lambda opts: _StillFace())
    monkeypatch.setattr(clip_analysis, "_backend", lambda opts: _NoFeatures())
    return clip_analysis


def _options(**kw):
    from emotalk.data.face.track import TrackerOptions
    from emotalk.data.preprocess.clip_analysis import PreprocessOptions

    return PreprocessOptions(features="mel", tracker=TrackerOptions(smoothing="none"), **kw)


def _mini_clip(root: Path, emotion: str, n: int, sidecar_frames: int, brow_px: float = 0.0) -> Path:
    """A mead-mini-like clip of W001 (MEAD's layout, a wav, a sidecar; the frames are plain grey): the sidecar's
    exact landmarks are the rest face translated a little per frame, with the brows ``brow_px`` up."""
    from emotalk.data.io import media

    level = 1 if emotion == "neutral" else 3
    video = root / f"W001/video/front/{emotion}/level_{level}/001.mp4"
    wav = root / f"W001/audio/{emotion}/level_{level}/001.wav"
    for folder in (video.parent, wav.parent):
        folder.mkdir(parents=True, exist_ok=True)
    media.write_video(video, [np.full((320, 320, 3), 120 + 5 * t, np.uint8) for t in range(n)], 30.0)
    media.write_wav(wav, np.zeros(int(16000 * n / 30.0), np.float32))
    face = REST.copy()
    face[list(BROWS), 1] -= brow_px
    shift = np.stack([np.array([np.sin(t), 0.5 * np.cos(t)], np.float32) for t in range(sidecar_frames)])
    gt = (face[None] + 4.0 * shift[:, None]).astype(np.float32)
    np.savez(video.with_name("001.landmarks.npz"), landmarks=gt, neutral_landmarks=REST, fps=np.array(30.0))
    return video


def test_preprocessing_stores_the_sidecar_as_true_track(tmp_path, fast_analysis):
    """Detect mode (the whole pipeline, in this process): the true track is the sidecar aligned and retargeted
    like the detected one, onto a neutral face chosen by the same rule from the subject's neutral clip, and
    it equals sidecar mode's main track; frame counts agree; G_L's dataset reads it with track=exact."""
    from emotalk.data.io.clip import load_subject, subject_path
    from emotalk.data.preprocess.pipeline import preprocess_dataset

    n = 12
    raw = tmp_path / "raw"
    _mini_clip(raw, "neutral", n, sidecar_frames=n)
    _mini_clip(raw, "happy", n, sidecar_frames=n + 1, brow_px=3.0)  # one extra sidecar frame: trimmed
    out, side = tmp_path / "detect", tmp_path / "sidecar"
    assert preprocess_dataset("mead-mini", raw, out, options=_options(), progress=False).done == 2
    assert preprocess_dataset("mead-mini", raw, side, options=_options(landmark_source="sidecar"),
                              progress=False).done == 2
    rest_aligned, m = align_to_template(REST)
    np.testing.assert_allclose(load_subject(subject_path(out, "W001")).true_neutral_landmarks, rest_aligned,
                               atol=1e-5)
    clip = load_clip(clip_path(out, "W001", "happy_level3_001"))
    assert clip.has_true_track and clip.true_landmarks.shape == clip.landmarks.shape == (n, 68, 2)
    assert clip.extra["true_track"] == "sidecar" and clip.extra["landmarks_source"] == "dlib"
    np.testing.assert_allclose(clip.landmarks, np.repeat(canonical_template()[None], n, 0), atol=1e-5)
    np.testing.assert_allclose(clip.true_neutral_landmarks, rest_aligned, atol=1e-5)
    # known answer: the frames only translate, so the true track is the template with the brows moved by
    # 3 px in canonical units (the similarity's scale: 1/100), the same in every frame
    assert float(np.sqrt(abs(np.linalg.det(m[:, :2])))) == pytest.approx(0.01, rel=1e-4)
    disp = clip.true_landmarks - canonical_template()[None]
    np.testing.assert_allclose(disp[:, list(BROWS), 1], -0.03, atol=1e-5)
    np.testing.assert_allclose(np.delete(disp, list(BROWS), axis=1), 0.0, atol=1e-5)
    # sidecar mode: the same landmarks in its main track, not duplicated
    side_clip = load_clip(clip_path(side, "W001", "happy_level3_001"))
    assert not side_clip.has_true_track and side_clip.num_frames == n
    np.testing.assert_allclose(clip.true_landmarks, side_clip.landmarks, atol=1e-5)
    np.testing.assert_allclose(clip.true_neutral_landmarks, side_clip.neutral_landmarks, atol=1e-5)
    ds = LandmarkFrameDataset([clip], track="exact")
    np.testing.assert_allclose(ds.target.numpy() - ds.neutral.numpy(), disp, atol=1e-5)
    _check_true_crop_track(raw, out, side, n)


def _check_true_crop_track(raw: Path, out: Path, side: Path, n: int) -> None:
    """G_T's side of the true track, on the folders of the test above."""
    clip = load_clip(clip_path(out, "W001", "happy_level3_001"))
    neutral = load_clip(clip_path(out, "W001", "neutral_level1_001"))
    # known answer: the sidecar's pixels through the clip's one crop (the detected face's), trimmed to n frames
    with np.load(raw / "W001/video/front/happy/level_3/001.landmarks.npz") as z:
        gt = z["landmarks"][:n]
    m_crop = np.array(clip.extra["crop_matrix"])
    assert clip.true_crop_landmarks.shape == clip.crop_landmarks.shape == (n, 68, 2)
    np.testing.assert_allclose(clip.true_crop_landmarks, apply_similarity(m_crop, gt), atol=1e-3)
    # = sidecar mode's crop landmarks, up to the crops' own difference (one from the detected median face,
    # one from the sidecar's: here a translation of 0.007 px for happy, 0.22 px for neutral)
    for c in (clip, neutral):
        s = load_clip(clip_path(side, "W001", c.clip_id))
        assert s.true_crop_landmarks is None
        np.testing.assert_allclose(c.true_crop_landmarks, s.crop_landmarks, atol=0.25)
    # the reference: the true crop landmarks of its frame (frame 0: the detected face never moves), which the
    # sidecar puts 4 * 0.5 px lower than the detected rest face (x 0.768, the crop's scale)
    ref = load_subject(subject_path(out, "W001"))
    np.testing.assert_allclose(ref.true_crop_landmarks, neutral.true_crop_landmarks[0], atol=1e-6)
    np.testing.assert_allclose(ref.true_crop_landmarks - ref.crop_landmarks, [[0.0, 2.0 * m_crop[0, 0]]] * 68,
                               atol=1e-3)
    # G_T's dataset at the crop's size (landmarks unscaled): exact -> the true track, detected -> dlib's
    exact, det = (TextureFrameDataset(out, ["W001"], image_size=256, track=tr) for tr in ("exact", "detected"))
    ci = next(i for i, c in enumerate(exact.clips) if c["path"].stem == "happy_level3_001")
    i = int(np.flatnonzero((exact.index[:, 0] == ci) & (exact.index[:, 1] == 5))[0])
    item, item_det = exact[i], det[i]
    np.testing.assert_allclose(item["target_landmarks"].numpy(), clip.true_crop_landmarks[5], atol=1e-5)
    np.testing.assert_allclose(item["identity_landmarks"].numpy(), ref.true_crop_landmarks, atol=1e-5)
    np.testing.assert_allclose(item_det["target_landmarks"].numpy(), clip.crop_landmarks[5], atol=1e-5)
    np.testing.assert_allclose(item_det["identity_landmarks"].numpy(), ref.crop_landmarks, atol=1e-5)
    assert (item["target"] == item_det["target"]).all()  # the same frame: only the graphs differ
    exact._layouts[ci] = None  # the whole-array fallback (compressed clips) reads the same track
    np.testing.assert_allclose(exact.frame(ci, 5)[1], clip.true_crop_landmarks[5], atol=1e-5)


def test_a_sidecar_of_another_length_gives_no_true_track(tmp_path, fast_analysis):
    from emotalk.data.preprocess.readers import read_dataset

    _mini_clip(tmp_path / "raw", "happy", 10, sidecar_frames=16)
    (rec,) = read_dataset("mead-mini", tmp_path / "raw").records
    opts = _options()
    an = fast_analysis.analyze_clip(rec, opts)
    clip = fast_analysis.build_clip(an, None, opts)
    assert an.true_aligned is None and not clip.has_true_track and "16 frames" in clip.extra["true_track"]


# ------------------------------------------------------------------------------------------- G_T's dataset
def _texture_folder(root: Path, true_clip: bool = True, true_ref: bool = True, **extra) -> Path:
    """One 2-frame clip of W001 with frames and a subject reference (32 px crops), each with or without the
    true track in crop pixels; the true track is the detected one 3 px up."""
    crop = np.full((2, 68, 2), 16.0, np.float32) + np.arange(68, dtype=np.float32)[None, :, None] / 10
    jpeg, offsets = encode_frames([np.full((32, 32, 3), 100, np.uint8)] * 2)
    c = _clip(t=2, crop_landmarks=crop, frames_jpeg=jpeg, frames_offsets=offsets, extra=extra,
              true_crop_landmarks=crop - [0, 3] if true_clip else None)
    save_clip(c, clip_path(root, "W001", c.clip_id))
    save_subject(SubjectReference("W001", np.full((32, 32, 3), 100, np.uint8), crop[0], canonical_template(),
                                  true_crop_landmarks=crop[0] - [0, 3] if true_ref else None),
                 subject_path(root, "W001"))
    return root


def test_true_crop_track_round_trips_and_is_validated(tmp_path):
    root = _texture_folder(tmp_path)
    c = load_clip(clip_path(root, "W001", "happy_level3_001"))
    np.testing.assert_allclose(c.true_crop_landmarks, c.crop_landmarks - [0, 3])
    np.testing.assert_allclose(load_subject(subject_path(root, "W001")).true_crop_landmarks, c.crop_landmarks[0] - [0, 3])
    old = _texture_folder(tmp_path / "old", true_clip=False, true_ref=False)  # written before the field
    assert load_clip(clip_path(old, "W001", "happy_level3_001")).true_crop_landmarks is None
    assert load_subject(subject_path(old, "W001")).true_crop_landmarks is None
    with pytest.raises(DataError, match=r"true_crop_landmarks must have shape \(2, 68, 2\)"):
        _clip(t=2, true_crop_landmarks=np.zeros((3, 68, 2), np.float32)).validate()
    with pytest.raises(DataError, match="true_crop_landmarks contains NaN"):
        _clip(t=2, true_crop_landmarks=np.full((2, 68, 2), np.nan, np.float32)).validate()


def test_texture_dataset_without_the_true_track_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"W001/happy_level3_001, has no true landmark track in crop pixels.*"
                                        r"data\.track=detected"):
        TextureFrameDataset(_texture_folder(tmp_path / "a", true_clip=False), image_size=32, track="exact")
    ds = TextureFrameDataset(_texture_folder(tmp_path / "b", true_ref=False), image_size=32, track="exact")
    with pytest.raises(DataError, match=r"reference of subject 'W001'\) has no true landmark track"):
        ds[0]
    assert len(TextureFrameDataset(tmp_path / "a", image_size=32)) == 2  # detected: as before
    with pytest.raises(DataError, match="data.track must be one of"):
        TextureFrameDataset(tmp_path / "a", image_size=32, track="sidecar")
    # preprocessed with --landmarks sidecar: the exact landmarks are the main track, reference included
    side = _texture_folder(tmp_path / "c", true_clip=False, true_ref=False, landmarks_source="sidecar")
    item = TextureFrameDataset(side, image_size=32, track="exact")[1]
    c = load_clip(clip_path(side, "W001", "happy_level3_001"))
    np.testing.assert_allclose(item["target_landmarks"].numpy(), c.crop_landmarks[1], atol=1e-5)
    np.testing.assert_allclose(item["identity_landmarks"].numpy(), c.crop_landmarks[0], atol=1e-5)
    # and the exact track of a clip that has one: 3 px up
    item = TextureFrameDataset(tmp_path / "b", image_size=32, track="exact")._frame_bytes(0, 1)[1]
    np.testing.assert_allclose(item, c.crop_landmarks[1] - [0, 3], atol=1e-5)


def test_texture_config_checks_the_track_and_tiny_exact_sets_it():
    from emotalk.config import to_dict
    from emotalk.train.tasks import load_train_config

    tiny, exact = load_train_config("texture/tiny"), load_train_config("texture/tiny-exact")
    assert (tiny.data.track, exact.data.track) == ("detected", "exact")
    assert exact.train.run_dir != tiny.train.run_dir
    a, b = to_dict(tiny), to_dict(exact)  # nothing else differs
    for d in (a, b):
        d["data"].pop("track"), d["train"].pop("run_dir")
    assert a == b
    exact.validate()
    exact.data.track = "sidecar"
    with pytest.raises(ConfigError, match="data.track"):
        exact.validate()


def test_demo_trains_g_t_on_the_track_of_g_l(tmp_path):
    from emotalk.demo.run import Demo, DemoOptions

    demo = Demo(DemoOptions(out=str(tmp_path)))
    demo.o.texture_overrides.append("model.image_size=64")
    tpl = canonical_template().astype(np.float32)
    save_clip(_clip(true=False, t=2), clip_path(demo.processed_dir, "W001", "a"))
    assert demo.landmark_stage()[0] == "landmark/tiny"
    assert demo.texture_stage() == ("texture/tiny", "texture", ["model.image_size=64"])
    save_clip(_clip(t=2, true_landmarks=np.stack([tpl, tpl])), clip_path(demo.processed_dir, "W001", "a"))
    assert demo.landmark_stage()[0] == "landmark/tiny-exact"
    assert demo.texture_stage() == ("texture/tiny-exact", "texture", ["model.image_size=64"])
