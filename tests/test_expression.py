"""Emotion you can see (issue 12 §1): expression transfer, emotion separation, intensity monotonicity, blink
visibility and Emo-Acc-LM, each on a hand-made case whose answer is known -- a photo warped by a known
displacement and re-detected with dlib -- so a wrong sign or a wrong normalisation fails."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from emotalk.data.face.blinks import apply_blink
from emotalk.data.face.warp import FaceWarper
from emotalk.eval.emotion_grid import GridConfig, grid_samples
from emotalk.eval.face_features import detect_landmarks
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metric, compute_metrics
from emotalk.eval.metrics.expression import (EYE_POLYGONS, INNER_LIPS, REGIONS, eye_aperture, polygon_mask,
                                             separation, transfer_gain)

BROWS = list(REGIONS["brows"])


@pytest.fixture(scope="module")
def face():
    """A 256x256 photo, its dlib landmarks and a piecewise-affine warper (the 'perfect renderer')."""
    from skimage import data

    img = cv2.resize(data.astronaut()[20:260, 120:360], (256, 256), interpolation=cv2.INTER_AREA)
    lm = detect_landmarks(img[None])[0].astype(np.float64)
    return SimpleNamespace(image=img, lm=lm, warper=FaceWarper(img, lm), iod=float(np.linalg.norm(lm[45] - lm[36])))


def _grid_sample(face, asked: np.ndarray, rendered: np.ndarray, emotion="angry", intensity=3.0, name="s"):
    """One grid rendering: the face warped by ``rendered`` (68, 2) pixels while ``asked`` was requested."""
    neutral = face.warper.warp(face.lm)
    gen = face.warper.warp(face.lm + rendered)
    return VideoSample(generated=gen[None], neutral_generated=neutral[None], emotion=emotion, intensity=intensity,
                       driving_landmarks=(face.lm + asked)[None], neutral_driving_landmarks=face.lm[None], name=name)


def test_transfer_gain_is_the_least_squares_share_of_the_asked_displacement():
    asked = np.array([[0.0, -2.0], [1.0, 0.0]])
    assert transfer_gain(asked, asked)[0] == pytest.approx(1.0)
    assert transfer_gain(0.5 * asked, asked)[0] == pytest.approx(0.5)
    assert transfer_gain(-asked, asked)[0] == pytest.approx(-1.0)
    assert transfer_gain(asked + [[3.0, 0.0], [0.0, 0.0]], asked)[0] == pytest.approx(1.0)  # orthogonal: ignored
    assert np.isnan(transfer_gain(asked, np.zeros_like(asked))[0])


@pytest.mark.parametrize("dy", [-6.0, 5.0])  # brows raised (image y up) and lowered
def test_expression_transfer_of_a_warped_brow_displacement(face, dy):
    asked = np.zeros((68, 2))
    asked[BROWS, 1] = dy
    full = compute_metric("expr_transfer_brows", [_grid_sample(face, asked, asked)]).value
    half = compute_metric("expr_transfer_brows", [_grid_sample(face, asked, 0.5 * asked)]).value
    wrong = compute_metric("expr_transfer_brows", [_grid_sample(face, asked, -asked)]).value
    ignored = compute_metric("expr_transfer_brows", [_grid_sample(face, asked, 0 * asked)]).value
    assert 0.7 < full < 1.2  # dlib re-detects most of a 5-6 px brow move (measured: 0.84-0.87)
    assert 0.3 < half < 0.65 and half < full
    assert -1.2 < wrong < -0.7
    assert abs(ignored) < 0.1


def test_mouth_transfer_and_separation_in_eye_distances(face):
    asked = np.zeros((68, 2))
    asked[48:68, 1] = 4.0  # the whole mouth 4 px lower
    s = _grid_sample(face, asked, asked)
    res = compute_metrics(["expr_transfer_mouth", "emotion_separation"], [s])
    assert 0.8 < res["ExT-mouth"].value < 1.2
    # asked separation: 4 px over the eye distance, on the mouth only
    driving = res["Sep"].details["driving"]["angry"]["3"]
    assert driving["mouth"] == pytest.approx(4.0 / face.iod, rel=1e-6) and driving["brows"] == 0.0
    rendered = res["Sep"].details["rendered"]["angry"]["3"]
    assert rendered["mouth"] == pytest.approx(4.0 / face.iod, rel=0.35) and rendered["brows"] < rendered["mouth"]
    # the reported number: mean over regions of the top level's rendered separation
    assert res["Sep"].value == pytest.approx(np.mean(list(rendered.values())))


def _geometry_sample(neutral: np.ndarray, lms: np.ndarray, emotion: str, intensity: float) -> VideoSample:
    """A grid sample whose landmarks are given (no rendering, no dlib): for pure bookkeeping checks."""
    dummy = np.zeros((len(lms), 8, 8, 3), np.uint8)
    s = VideoSample(generated=dummy, neutral_generated=dummy, emotion=emotion, intensity=intensity,
                    generated_landmarks=lms, driving_landmarks=lms, neutral_driving_landmarks=neutral,
                    name=f"{emotion}@{intensity}")
    s.features.put(Side.NEUTRAL_GENERATED, Feature.LANDMARKS, neutral)
    return s


def test_intensity_monotonicity_yes_and_no_with_the_numbers():
    from emotalk.models.face_graph import canonical_template

    neutral = (canonical_template() * 60 + 128)[None].astype(np.float64)
    raised = lambda px: neutral + np.where(np.isin(np.arange(68), BROWS)[None, :, None], [0.0, -px], 0.0)  # noqa: E731
    grid = [_geometry_sample(neutral, raised(px), "surprised", lvl) for lvl, px in
            ((1, 2.0), (1.5, 3.0), (2, 4.0), (2.5, 5.0), (3, 6.0))]
    grid += [_geometry_sample(neutral, raised(px), "sad", lvl) for lvl, px in ((1, 4.0), (2, 2.0), (3, 6.0))]
    r = compute_metric("intensity_monotonic", grid)
    assert r.value == 0.5  # one of two emotions
    surprised, sad = r.details["per_emotion"]["surprised"], r.details["per_emotion"]["sad"]
    assert surprised["monotonic"] and surprised["intensities"] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert surprised["driving_monotonic"] and not sad["driving_monotonic"]  # here driving = rendered
    np.testing.assert_allclose(surprised["separation"], np.array([2, 3, 4, 5, 6]) / 60 / 3, rtol=1e-9)  # brows px / eye distance, 0 elsewhere
    assert not sad["monotonic"] and not sad["levels_monotonic"]
    # separation of a static renderer (nothing moves) is zero, whatever was asked
    still = _geometry_sample(neutral, neutral.copy(), "angry", 3)
    still.driving_landmarks = raised(6.0)
    assert compute_metric("emotion_separation", [still]).value == 0.0


def test_blink_visibility_closed_eyes_versus_a_renderer_that_ignores_the_blink(face):
    closed = apply_blink(face.lm[None], np.ones(1))[0]
    assert eye_aperture(closed) == pytest.approx(0.0, abs=1e-9) and eye_aperture(face.lm) > 0.2
    open_frame = face.warper.warp(face.lm)

    def blink_sample(rendered_closed: np.ndarray) -> VideoSample:
        return VideoSample(generated=np.stack([open_frame, face.warper.warp(rendered_closed)]), emotion="neutral",
                           driving_landmarks=np.stack([face.lm, closed]), blink=np.array([0.0, 1.0]), name="b")

    shown = compute_metric("blink_visibility", [blink_sample(closed)])
    ignored = compute_metric("blink_visibility", [blink_sample(face.lm)]).value
    assert shown.details["driving_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert shown.value < 0.6  # dlib never closes a lid fully: a perfect warp re-detects at ~0.44 of open
    assert ignored > 0.9


def _painted_eyes(lm: np.ndarray, lid_at: float = 0.0) -> np.ndarray:
    """A 256x256 'face' of uniform skin with drawn eyes: in each eye polygon's columns, skin from the top
    down to the upper lid at ``lid_at`` of the eye's height (0: open, 1: closed), a 2-px dark lash line, then
    bright sclera with a dark iris in the middle third of the eye's width."""
    img = np.full((256, 256, 3), (200, 160, 140), np.uint8)
    for poly in EYE_POLYGONS:
        eye = polygon_mask(img.shape[:2], lm[list(poly)])
        cols = np.nonzero(eye.any(axis=0))[0]
        third = (cols[-1] - cols[0]) / 3
        for x in cols:
            rows = np.nonzero(eye[:, x])[0]
            lid = int(round(rows[0] + lid_at * (rows[-1] + 1 - rows[0])))
            img[lid:rows[-1] + 1, x] = (30, 30, 40) if abs(x - cols[0] - 1.5 * third) < third / 2 else (235, 235, 230)
            img[lid - 1:lid + 1, x] = (30, 30, 40)
    return img


def _blink_px(lm, closed, open_frame, shut_frame) -> float:
    s = VideoSample(generated=np.stack([open_frame, shut_frame]), emotion="neutral",
                    driving_landmarks=np.stack([lm, closed]), blink=np.array([0.0, 1.0]), name="b")
    return compute_metric("blink_pixels", [s]).value


def test_blink_pixels_known_answers_on_painted_eyes(face):
    lm = face.lm
    closed = apply_blink(lm[None], np.ones(1))[0]
    assert _blink_px(lm, closed, _painted_eyes(lm), _painted_eyes(lm, 1.0)) < 0.1  # a lash line on skin
    assert _blink_px(lm, closed, _painted_eyes(lm), _painted_eyes(lm)) == pytest.approx(1.0)  # blink ignored
    assert 0.35 < _blink_px(lm, closed, _painted_eyes(lm), _painted_eyes(lm, 0.5)) < 0.65  # half of it left


def test_blink_pixels_on_a_real_face_sees_the_blink_that_dlib_misses(face):
    """The known answer on real pixels: the same photo warped to its landmarks with the eyes open, half shut
    and shut (how mead-mini's ground-truth frames draw a blink; the real blinks of mead-mini's held-out
    subjects read 0.16-0.29 at their middle frame, open frames 1.00)."""
    lm = face.lm
    closed = apply_blink(lm[None], np.ones(1))[0]
    half = apply_blink(lm[None], np.full(1, 0.5))[0]
    opened, shut = face.warper.warp(lm), face.warper.warp(closed)
    assert _blink_px(lm, closed, opened, shut) < 0.4  # issue 12: aperture <= 40 % of open at the blink
    assert 0.4 < _blink_px(lm, half, opened, face.warper.warp(half)) < 0.85
    assert _blink_px(lm, closed, opened, opened) == pytest.approx(1.0)
    # dlib's aperture on the same frames stays far from closed (its shape model favours open eyes)
    dlib = compute_metric("blink_visibility", [VideoSample(generated=np.stack([opened, shut]), emotion="neutral",
                                                           driving_landmarks=np.stack([lm, closed]),
                                                           blink=np.array([0.0, 1.0]), name="d")]).value
    assert dlib > 0.35


def test_mouth_psnr_known_answer_inside_the_inner_lips_only(face):
    lm = face.lm.copy()
    lm[[65, 66, 67], 1] += 12.0  # the real mouth opens 12 px
    gt = np.full((2, 256, 256, 3), 120, np.uint8)
    inside = polygon_mask((256, 256), lm[list(INNER_LIPS)])
    gt[:, inside] = 20  # a dark cavity in the real frames
    gen = gt.copy()
    gen[:, ~inside] = 250  # differences outside the mouth do not count ...
    gen[0, inside] = 30  # ... an error of 10 grey levels inside does: PSNR = 20 log10(255 / 10)
    closed = face.lm.copy()  # a frame whose real mouth is closed is left out
    closed[[67, 66, 65], :] = closed[[61, 62, 63], :]
    s = VideoSample(generated=gen, ground_truth=gt, ground_truth_landmarks=np.stack([lm, closed]), name="m")
    res = compute_metric("mouth_psnr", [s])
    assert res.value == pytest.approx(20 * np.log10(255 / 10), abs=1e-6) and res.details["open_frames"] == 1
    gen[0, inside] = 20
    assert compute_metric("mouth_psnr", [s]).value == float("inf")


class _WarpPipeline:
    """A stand-in for the inference pipeline: G_L raises the brows by ``3 px x level`` for 'surprised',
    and the renderer warps the photo exactly to the driving landmarks (the warp renderer)."""

    emotions = ["neutral", "surprised"]
    intensity_levels = 3
    feature_kind, window, feature_dim = "mel", 1, 1

    def __init__(self, face):
        self.face = face

    def prepare_photo(self, image, size):
        return SimpleNamespace(aligned=self.face.lm, aligned_to_image=lambda lm: np.asarray(lm))

    def landmark_emotion(self, emotion, level):
        return np.array([3.0 * level if emotion == "surprised" else 0.0])

    def texture_emotion(self, emotion, level):
        return np.zeros(2)

    def predict_landmarks(self, feats, e_l, aligned):
        out = np.repeat(aligned[None], len(feats), 0).copy()
        out[:, BROWS, 1] -= e_l[0]
        out[:, 62:67:4, 1] += np.sin(np.arange(len(feats)))[:, None]  # speech: the lips move
        return out

    def animate(self, lm, blink=False, **smoothing):
        return lm, np.zeros(len(lm))

    def make_renderer(self, photo, renderer, emotion, intensity, finetune_steps):
        return renderer

    def frames(self, photo, landmarks, prepared, emotion=None):
        if prepared == "neural":  # G_T gets one emotion vector per frame
            assert emotion is not None and emotion.shape == (len(landmarks), 2)
        else:
            assert emotion is None  # the warp renderer has no G_T
        return (self.face.warper.warp(lm) for lm in landmarks)


@pytest.mark.parametrize("renderer", ["warp", "neural"])
def test_emotion_grid_end_to_end_on_a_warp_renderer(face, renderer):
    clip = SimpleNamespace(num_frames=12, feature_kind="mel", audio_features=np.zeros((12, 1, 1), np.float32),
                           fps=30.0, subject="S", clip_id="c", audio=None)
    method = SimpleNamespace(name=renderer, renderer=renderer, emotional_landmarks=True, emotion_feature=True,
                             finetune_steps=0)
    ref = SimpleNamespace(image=face.image)
    grid = grid_samples(_WarpPipeline(face), method, clip, ref, GridConfig(frames=3, intensities=[1, 2, 3]))
    assert [s.name for s in grid] == ["S/grid/neutral@1", "S/grid/surprised@1", "S/grid/surprised@2",
                                      "S/grid/surprised@3", "S/grid/blink"]
    names = ["expr_transfer_brows", "expr_transfer_mouth", "emotion_separation", "intensity_monotonic",
             "blink_visibility", "blink_pixels"]
    res = compute_metrics(names, grid)
    assert 0.7 < res["ExT-brows"].value < 1.2  # the warp renders what it is asked
    assert np.isnan(res["ExT-mouth"].value) or abs(res["ExT-mouth"].value) < 5  # nothing asked of the mouth
    assert res["Int-mono"].value == 1.0
    assert res["Sep"].details["driving"]["surprised"]["3"]["brows"] == pytest.approx(9.0 / face.iod, rel=1e-6)
    assert res["Blink-ap"].value < 0.6
    assert res["Blink-px"].value < 0.4  # the warp closes the eyes to a line


def _displacement(kind: str) -> np.ndarray:
    d = np.zeros((68, 2))
    if kind == "happy":
        d[[48, 54], 1] -= 0.08  # lip corners up
        d[48, 0] -= 0.05
        d[54, 0] += 0.05
    else:  # surprised: brows up, mouth open
        d[BROWS, 1] -= 0.1
        d[[57, 66], 1] += 0.1
    return d


@pytest.mark.slow
def test_emo_acc_lm_reads_geometry_with_a_known_classifier(face, tmp_path):
    """A classifier trained on two synthetic expressions must recognise them on dlib landmarks of warped
    frames (100 %), and fail when the labels are swapped (0 %); the alignment makes it pose-invariant."""
    from emotalk.data.loading import CheckpointMeta, save_model
    from emotalk.eval.metrics.emotion import expression_displacements
    from emotalk.models.landmark_emotion import LandmarkEmotionMLP, LandmarkEmotionModelConfig

    # rotating and scaling the whole face leaves the aligned displacement unchanged
    rot = np.array([[np.cos(0.2), -np.sin(0.2)], [np.sin(0.2), np.cos(0.2)]]) * 1.3
    moved = face.lm + _displacement("happy") * face.iod
    a = expression_displacements(moved[None], face.lm)
    b = expression_displacements((moved @ rot.T + 7)[None], face.lm @ rot.T + 7)
    np.testing.assert_allclose(a, b, atol=1e-5)

    torch.manual_seed(0)
    cfg = LandmarkEmotionModelConfig(hidden=32, layers=1, dropout=0.0)
    net = LandmarkEmotionMLP.from_config(cfg, 2)
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(np.stack([_displacement("happy"), _displacement("surprised")]), dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        idx = torch.randint(0, 2, (64,), generator=g)
        batch = x[idx] * (0.5 + torch.rand(64, 1, 1, generator=g)) + 0.01 * torch.randn(64, 68, 2, generator=g)
        loss = torch.nn.functional.cross_entropy(net(batch), idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    meta = CheckpointMeta(kind="landmark_emotion", step=150, config={"model": {}}, emotions=("happy", "surprised"))
    path = save_model(tmp_path / "step_150", net.eval(), "landmark_emotion", cfg, meta)

    frames = {e: np.stack([face.warper.warp(face.lm + _displacement(e) * face.iod)] * 2)
              for e in ("happy", "surprised")}
    ok = [VideoSample(generated=frames[e], identity=face.image, emotion=e, name=e) for e in frames]
    swapped = [VideoSample(generated=frames[e], identity=face.image, emotion=o, name=e)
               for e, o in (("happy", "surprised"), ("surprised", "happy"))]
    opts = MetricOptions(landmark_emotion_classifier=str(path))
    r = compute_metric("emo_acc_lm", ok, opts)
    assert r.value == 100.0 and r.details["predictions"] == {"happy": "happy", "surprised": "surprised"}
    assert compute_metric("emo_acc_lm", swapped, opts).value == 0.0


def test_emo_acc_lm_without_a_classifier_says_how_to_train_one(face):
    from emotalk.errors import MissingWeightsError

    s = VideoSample(generated=face.image[None], identity=face.image, emotion="happy")
    with pytest.raises(MissingWeightsError, match=r"train-emotion --config emotion/landmark-tiny"):
        compute_metric("emo_acc_lm", [s])


@pytest.mark.slow
def test_train_emotion_trains_the_landmark_classifier_on_ground_truth(tiny_mini_data, tmp_path, capsys):
    """``emotalk train-emotion --config emotion/landmark-tiny`` on the training subjects; the held-out
    subject's ground-truth landmarks are classified far above chance (measured: 0.89 at 600 steps)."""
    import json

    from emotalk.cli.main import main
    from emotalk.data.loading import load_model

    test = json.loads((tiny_mini_data.raw / "mini.json").read_text())["splits"]["test"]
    run = tmp_path / "lm_emotion"
    assert main(["train-emotion", "--config", "emotion/landmark-tiny", f"data.root={tiny_mini_data.processed}",
                 f"train.run_dir={run}", "train.progress=false", "train.steps=300", f"data.val_subjects=[{test[0]}]",
                 "data.emotions=[neutral, happy, sad, surprised]"]) == 0
    loaded = load_model(run, "landmark_emotion")
    assert loaded.meta.emotions == ("neutral", "happy", "sad", "surprised")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r.get("split") == "val"]
    assert val and val[-1]["acc"] > 0.5  # chance: 0.25
    assert main(["train-emotion", "--config", "landmark/tiny"]) != 0
    assert "train-emotion trains" in capsys.readouterr().err
