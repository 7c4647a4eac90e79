"""The MEAD protocol (issue 13): named splits, the leak guard, the paper's vocabulary, the protocol card,
SSIM per Wang et al. 2004 and the Emotion-FAN backend. Fast tier except the one end-to-end test."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emotalk.config import load_config, resolve_config_path
from emotalk.data.datasets.splits import load_split, split_subjects
from emotalk.data.emotions import PAPER_EMOTIONS, control_level, emotion_vector
from emotalk.errors import ConfigError, MissingWeightsError
from emotalk.eval.evaluate import EvalConfig, EvalMethod, build_tables, evaluate
from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metric
from emotalk.eval.protocol import UsedModel, card_markdown, check_seen_subjects, protocol_card

FIELD_TEST = ("M003", "M030", "W009", "W015")


# --- named splits -----------------------------------------------------------------------------------------

def test_mead_field_split_holds_exactly_the_fields_four_test_identities():
    s = load_split("mead-field")
    assert s.test == FIELD_TEST
    everyone = set(s.train) | set(s.val) | set(s.test)
    assert len(everyone) == len(s.train) + len(s.val) + len(s.test) == 47  # MEAD's listed public ids
    assert not set(FIELD_TEST) & (set(s.train) | set(s.val))


def test_mead_paper_split_has_24_training_subjects_and_no_test_identity():
    s = load_split("mead-paper")
    assert len(s.train) == 24 and s.test == FIELD_TEST
    assert sum(x.startswith("M") for x in s.train) == 12  # documented choice: 12 men, 12 women
    assert not set(FIELD_TEST) & (set(s.train) | set(s.val))
    assert set(s.train) | set(s.val) <= set(load_split("mead-field").train) | set(load_split("mead-field").val)


@pytest.mark.parametrize("name", ["landmark/mead", "landmark/mead-8x3", "texture/mead", "texture/mead-8x3",
                                  "emotion/mead", "emotion/mead-8x3", "eval/mead", "eval/mead-field"])
def test_every_mead_config_names_a_split(name):
    from emotalk.train.tasks import TRAIN_CONFIGS

    schema = EvalConfig if name.startswith("eval/") else TRAIN_CONFIGS
    cfg = load_config(name, schema=schema)
    assert cfg.data.split in ("mead-field", "mead-paper")
    load_split(cfg.data.split)
    assert not getattr(cfg.data, "train_subjects", []) and not getattr(cfg.data, "subjects", [])


def _fake_dataset(root: Path, source: str, clips: dict[str, list[str]], reference: str = "neutral_level1_001"):
    """A processed-dataset skeleton: manifest + clip files holding only labels and metadata."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"feature_kind": "mel", "feature_dim": 80, "window": 20,
                                                    "source": source}))
    for subject, ids in clips.items():
        (root / "clips" / subject).mkdir(parents=True, exist_ok=True)
        for cid in ids:
            emotion, level = cid.split("_")[0], int(cid.split("_level")[1][0])
            np.savez(root / "clips" / subject / f"{cid}.npz", emotion=np.array(emotion),
                     intensity=np.array(level), extra_json=np.array(json.dumps({"neutral_source": reference})))
    return root


def test_real_dataset_without_a_split_is_refused_and_auto_must_be_asked_for(tmp_path):
    root = _fake_dataset(tmp_path / "mead", "mead", {"M003": [], "M005": []})
    with pytest.raises(ConfigError, match="names no split"):
        split_subjects(["M003", "M005"], root=root)
    assert split_subjects(["M003", "M005"], split="auto", root=root) == (["M003"], ["M005"])
    train, val = split_subjects(["M003", "M005", "M042"], split="mead-field", root=root)
    assert train == ["M005"] and val == ["M042"]  # the test identity M003 never trains
    with pytest.raises(ConfigError, match="both set"):
        split_subjects(["M003", "M005"], ["M005"], split="mead-field")
    with pytest.raises(ConfigError, match="not found"):
        split_subjects(["M005"], split="no-such-split")


# --- the paper's vocabulary ----------------------------------------------------------------------------

def test_three_mead_levels_map_onto_the_papers_two_in_one_place():
    assert [control_level(lv, 2) for lv in (1, 2, 3)] == [1, 1, 2]  # weak, medium -> low; strong -> high
    assert [control_level(lv, 3) for lv in (1, 2, 3)] == [1, 2, 3]
    neutral = emotion_vector("neutral", 1, PAPER_EMOTIONS, 2)
    assert neutral.tolist() == [0] * 6 + [1, 0]  # no neutral class: all-zero emotion part
    assert emotion_vector("neutral:0.5,happy:0.5", 2, PAPER_EMOTIONS, 2)[:6].tolist() == [0.5, 0, 0, 0, 0, 0]
    assert load_config("landmark/mead", schema=__import__("emotalk.train.tasks", fromlist=["x"]).TRAIN_CONFIGS
                       ).model.emotions == list(PAPER_EMOTIONS)


# --- leak guard and protocol card -----------------------------------------------------------------------

def _checkpoint(run: Path, train: list[str], kind: str = "landmark") -> Path:
    (run / "checkpoints").mkdir(parents=True)
    meta = {"kind": kind, "step": 7, "config": {"model": {"emotions": list(PAPER_EMOTIONS), "intensity_levels": 2}},
            "subjects": {"train": train, "val": []}}
    (run / "checkpoints" / "step_00000007.json").write_text(json.dumps(meta))
    (run / "checkpoints" / "step_00000007.safetensors").write_bytes(b"")
    return run


def test_evaluating_a_training_subject_is_refused_with_the_subject_and_checkpoint_named(tmp_path):
    root = _fake_dataset(tmp_path / "data", "mead-mini", {"W001": ["neutral_level1_001", "happy_level3_001"]})
    ckpts = tmp_path / "ckpts"
    _checkpoint(ckpts / "landmark", ["W001", "W002"])
    _checkpoint(ckpts / "texture", ["W002"], "texture")
    cfg = load_config("eval/mead-mini", [f"data.root={root}", "data.subjects=[W001]", f"checkpoints={ckpts}",
                                         f"out_dir={tmp_path / 'out'}", "progress=false"], schema=EvalConfig)
    with pytest.raises(ConfigError) as e:
        evaluate(cfg, load_pipeline=lambda *a: pytest.fail("nothing may be generated"))
    msg = str(e.value)
    assert "\n" not in msg and "W001" in msg and str(ckpts / "landmark") in msg and "W002" not in msg


def test_seen_subjects_mark_every_table_and_the_card():
    models = [UsedModel("G_L (Ours)", "/r/landmark/step.json", ("W001",)), UsedModel("G_T (Ours)", "/r/t.json", ("W9",))]
    assert check_seen_subjects(models, ["W003"], allow=False) == {}
    seen = check_seen_subjects(models, ["W001", "W003"], allow=True)
    assert seen == {"/r/landmark/step.json": ["W001"]}
    with pytest.raises(ConfigError, match="records no training subjects"):
        check_seen_subjects([UsedModel("G_L (Ours)", "/x.json")], ["W003"], allow=False)
    cfg = load_config("eval/mead", schema=EvalConfig)
    card = protocol_card(cfg, ["psnr", "ssim", "emo_acc_fer"], models, ["W001", "W003"], seen, [30.0], ["W001/n"])
    assert card["protocol"] == "paper" and card["split"] == "mead-paper" and card["ssim"] == "gaussian11"
    assert card["smoothing"] == ["none"] and card["seen_subjects"] == seen
    tables = build_tables(cfg, {"Ours": {"PSNR": 1.0}}, [EvalMethod(tables=["table2"])], card)
    md, csv_text = tables["table2"]
    assert "[SEEN SUBJECTS]" in md.splitlines()[0] and "SEEN SUBJECTS" in csv_text.splitlines()[0]
    assert "Protocol: **paper** | split: mead-paper" in md and "SEEN SUBJECTS (allow_seen_subjects" in card_markdown(card)


def test_the_neutral_reference_clip_is_never_scored(tmp_path):
    from emotalk.eval.test_set import select

    root = _fake_dataset(tmp_path / "data", "mead-mini",
                         {"W003": ["neutral_level1_001", "neutral_level1_002", "happy_level3_001"]})
    cfg = load_config("eval/mead-mini", [f"data.root={root}", "data.subjects=[W003]", "data.clips_per_subject=0"],
                      schema=EvalConfig)
    paths, excluded = select(cfg)
    assert [p.stem for p in paths] == ["happy_level3_001", "neutral_level1_002"]
    assert excluded == ["W003/neutral_level1_001"]


def test_protocol_presets_pick_the_whole_set():
    from emotalk.eval.protocol import protocol_overrides

    field = load_config("eval/mead", protocol_overrides("field"), schema=EvalConfig)
    assert (field.protocol, field.data.split, field.metrics.landmark_units) == ("field", "mead-field", "pixels256")
    paper = load_config("eval/mead", protocol_overrides("paper"), schema=EvalConfig)
    assert (paper.protocol, paper.data.split, paper.metrics.ssim_window) == ("paper", "mead-paper", "gaussian11")
    with pytest.raises(ConfigError, match="unknown protocol"):
        protocol_overrides("nope")


# --- metrics -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_pair():
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:48, 0:48]
    base = 128 + 60 * np.sin(x / 5.0)[..., None] * np.cos(y / 7.0)[..., None] * np.ones(3)  # smooth structure
    gt = np.stack([base, base[::-1]]).astype(np.uint8)
    gen = np.clip(gt.astype(int) + rng.integers(-40, 41, gt.shape), 0, 255).astype(np.uint8)
    return gen, gt


def test_ssim_is_wang_2004_by_default_and_7x7_uniform_on_request(noisy_pair):
    from skimage.metrics import structural_similarity

    gen, gt = noisy_pair
    s = VideoSample(generated=gen, ground_truth=gt)
    wang = np.mean([structural_similarity(t, g, channel_axis=-1, data_range=255, gaussian_weights=True,
                                          sigma=1.5, use_sample_covariance=False) for g, t in zip(gen, gt)])
    uniform = np.mean([structural_similarity(t, g, channel_axis=-1, data_range=255) for g, t in zip(gen, gt)])
    assert compute_metric("ssim", [s]).value == pytest.approx(wang, rel=1e-12)
    assert compute_metric("ssim", [s], MetricOptions(ssim_window="uniform7")).value == pytest.approx(uniform,
                                                                                                    rel=1e-12)
    assert abs(wang - uniform) > 1e-3  # the two windows really differ


def test_landmark_distance_in_pixels_of_a_256_crop():
    rng = np.random.default_rng(0)
    gt = rng.uniform(10, 50, (3, 68, 2))
    gen = gt + rng.normal(0, 1, gt.shape)
    frames = np.zeros((3, 64, 64, 3), np.uint8)
    s = VideoSample(generated=frames, ground_truth=frames, generated_landmarks=gen, ground_truth_landmarks=gt)
    px = compute_metric("f_ld", [s]).value
    assert compute_metric("f_ld", [s], MetricOptions(landmark_units="pixels256")).value == pytest.approx(4 * px)


def test_emotion_fan_loads_user_weights_strictly_and_says_how_to_supply_them(tmp_path, one_torch_thread):
    from emotalk.eval.detectors import clear_detector_cache
    from emotalk.models.emotion_fan import EmotionFAN

    frames = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)  # one frame: cheap
    sample = VideoSample(generated=frames, emotion="happy")
    with pytest.raises(MissingWeightsError) as e:
        compute_metric("emo_acc_fan", [sample], MetricOptions(emotion_fan_weights=str(tmp_path / "none.pth")))
    assert "metrics.emotion_fan_weights=" in str(e.value) and "\n" not in str(e.value)
    torch.manual_seed(0)
    model = EmotionFAN(8).eval()
    with torch.no_grad():  # stand-in weights: make "happy" (index 4 in the default order) win every clip
        model.pred_fc.bias.copy_(torch.tensor([0, 0, 0, 0, 50.0, 0, 0, 0]))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "fan.pth")
    clear_detector_cache()
    opts = MetricOptions(emotion_fan_weights=str(tmp_path / "fan.pth"), stand_in_weights=["emotion_fan_weights"])
    r = compute_metric("emo_acc_fan", [sample, VideoSample(generated=frames, emotion="sad")], opts)
    assert r.name == "Acc_emo (FAN)" and r.value == 50.0 and r.details["stand_in"]
    bad = {k: v for k, v in model.state_dict().items() if not k.startswith("beta.")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="not Emotion-FAN weights"):
        compute_metric("emo_acc_fan", [sample], MetricOptions(emotion_fan_weights=str(tmp_path / "bad.pth")))
    # the same architecture as the paper describes: attention heads 512 -> 1 and 1024 -> 1, classifier on 1024
    assert model.alpha[0].in_features == 512 and model.beta[0].in_features == 1024
    with torch.no_grad():
        assert model.pred_fc.in_features == 1024 and model(torch.zeros(1, 2, 3, 32, 32)).shape == (1, 8)


def test_shipped_split_files_exist_as_package_data():
    assert resolve_config_path("splits/mead-field").name == "mead-field.yaml"


def test_evaluation_renders_g_ls_raw_landmarks_unless_a_method_names_a_smoothing():
    from types import SimpleNamespace

    from emotalk.eval.evaluate import generate_clip

    windows = []

    class Pipe:  # records what generate_clip asks of the pipeline
        intensity_levels = 2
        feature_kind, window, feature_dim = "mel", 2, 3

        def prepare_photo(self, image, size):
            return SimpleNamespace(aligned=np.zeros((68, 2)))

        def landmark_emotion(self, emotion, level):
            windows.append(("level", level))
            return np.zeros(8)

        def predict_landmarks(self, feats, e, aligned):
            return np.zeros((4, 68, 2))

        def animate(self, raw, blink, smooth_window):
            windows.append(smooth_window)
            return raw, np.zeros(len(raw))

        def render_frames(self, photo, landmarks, **kw):
            return np.zeros((len(landmarks), 8, 8, 3), np.uint8)

    clip = SimpleNamespace(num_frames=4, emotion="happy", intensity=3, audio_features=np.zeros((4, 2, 3)),
                           feature_kind="mel")
    ref = SimpleNamespace(image=np.zeros((8, 8, 3), np.uint8))
    generate_clip(Pipe(), EvalMethod(), clip, ref)
    generate_clip(Pipe(), EvalMethod(landmark_smoothing="savgol5"), clip, ref)
    assert windows == [("level", 2), 1, ("level", 2), 5]  # MEAD level_3 -> the paper's high; raw, then smoothed
    with pytest.raises(ConfigError, match="landmark_smoothing"):
        EvalMethod(landmark_smoothing="kalman").validate()
