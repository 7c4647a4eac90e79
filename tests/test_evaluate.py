"""`emotalk evaluate` end to end on mead-mini with a tiny checkpoint: tables with ours, baselines, paper."""
import json
import os
from pathlib import Path

import pytest

from emotalk.cli.main import main


def with_second_neutral(processed: Path, dest: Path, subject: str) -> Path:
    """A view of ``processed`` (symlinks) where ``subject`` has a second neutral clip: the tiny mead-mini has
    one neutral clip per subject, and it is the subject's neutral reference, which evaluation never scores.
    The copy is the same take under another clip id -- mechanics only (Table 5 rows exist), not a protocol."""
    from emotalk.data.io.clip import load_clip, save_clip

    (dest / "clips" / subject).mkdir(parents=True)
    for entry in ("manifest.json", "subjects"):
        os.symlink(processed / entry, dest / entry)
    for sub in (processed / "clips").iterdir():
        if sub.name != subject:
            os.symlink(sub, dest / "clips" / sub.name)
    for clip in (processed / "clips" / subject).glob("*.npz"):
        os.symlink(clip, dest / "clips" / subject / clip.name)
    ref = load_clip(processed / "clips" / subject / "neutral_level1_001.npz")
    ref.clip_id = "neutral_level1_002"
    save_clip(ref, dest / "clips" / subject / "neutral_level1_002.npz")
    return dest


def test_evaluate_command_writes_the_tables(tiny_checkpoints, tiny_mini_data, tmp_path, capsys):
    mini = json.loads((tiny_mini_data.raw / "mini.json").read_text())
    test_subjects = mini["splits"]["test"]
    root = with_second_neutral(tiny_mini_data.processed, tmp_path / "data", test_subjects[0])
    out = tmp_path / "eval"
    code = main(["evaluate", "--config", "eval/mead-mini", f"checkpoints={tiny_checkpoints}",
                 f"data.root={root}", f"data.subjects=[{', '.join(test_subjects)}]",
                 "data.emotions=[neutral, surprised]", f"out_dir={out}", "progress=false",
                 "metric_names=[psnr, ssim, m_ld, f_lvd, csim_dlib, av_sync_conf]",
                 "methods=[{name: Ours, finetune_steps: 1, tables: [table2, table4, table5], paper_row: full},"
                 " {name: Warp baseline, renderer: warp}, {name: Static neutral photo, renderer: static},"
                 " {name: Ours w/o one-shot learning, finetune_steps: 0, tables: [table4],"
                 " paper_row: w/o one-shot learning}, {name: Ground truth, renderer: reference}]"])
    assert code == 0, capsys.readouterr().err
    for table in ("table2", "table4", "table5"):
        assert (out / f"{table}.md").is_file() and (out / f"{table}.csv").is_file()
    md2 = (out / "table2.md").read_text()
    for row in ("| Ours |", "| Warp baseline |", "| Static neutral photo |", "| Ours (paper) |"):
        assert row in md2
    results = json.loads((out / "results.json").read_text())["results"]
    # the static photo never moves: its landmark velocity error is its ground truth's own motion, and its
    # identity similarity to itself is perfect
    assert results["Static neutral photo"]["CSIM-dlib"] > 0.99
    assert results["Ours"]["M-LD"] > 0 and results["Warp baseline"]["PSNR"] > 10
    assert "| w/o one-shot learning (paper) | 29.89 |" in (out / "table4.md").read_text()
    # the real videos scored against themselves: the metrics' own ceiling
    gt = results["Ground truth"]
    assert gt["PSNR"] == float("inf") and gt["SSIM"] == 1.0 and gt["M-LD"] == 0.0 and gt["F-LVD"] == 0.0
    assert "| Ground truth | ∞ | 1 |" in md2
    card = json.loads((out / "results.json").read_text())["protocol"]
    assert card["test_subjects"] == test_subjects and card["smoothing"] == ["none"] and not card["seen_subjects"]
    assert card["neutral_reference_clips_excluded"] == [f"{test_subjects[0]}/neutral_level1_001"]
    assert md2.splitlines()[2].startswith("Protocol: **custom** | split: none (data.subjects)")


def test_evaluate_leaves_its_config_alone_and_repeats_exactly(tiny_mini_data, tmp_path):
    """results.json records the config evaluate() was given, and a second call gives the same tables
    (Table 5 included: the neutral-only rows used to be lost on the second call)."""
    import dataclasses

    from emotalk.config import load_config
    from emotalk.eval.evaluate import EvalConfig, evaluate

    mini = json.loads((tiny_mini_data.raw / "mini.json").read_text())
    root = with_second_neutral(tiny_mini_data.processed, tmp_path / "data", mini["splits"]["test"][0])
    cfg = load_config("eval/mead-mini", schema=EvalConfig, overrides=[
        f"data.root={root}", f"data.subjects=[{mini['splits']['test'][0]}]",
        "data.emotions=[neutral]", "data.clips_per_subject=1", f"out_dir={tmp_path / 'eval'}", "progress=false",
        "metric_names=[psnr, m_ld]",
        "methods=[{name: Static neutral photo, renderer: static, tables: [table2, table5]},"
        " {name: Ground truth, renderer: reference, tables: [table2, table5]}]"])
    before = dataclasses.asdict(cfg)
    first = evaluate(cfg)  # static and reference rows need no generator: no pipeline loader
    assert dataclasses.asdict(cfg) == before
    recorded = json.loads((tmp_path / "eval" / "results.json").read_text())["config"]
    assert recorded["methods"] == before["methods"] and recorded["methods"][0]["tables"] == ["table2", "table5"]
    second = evaluate(cfg)
    assert second["tables"] == first["tables"]
    assert "| Static neutral photo [neutral] |" in second["tables"]["table5"]
    assert first["results"]["Ground truth"]["M-LD"] == 0.0


PAPER_VOCAB = "[happy, angry, sad, surprised, fear, disgusted]"


@pytest.mark.slow
def test_paper_vocabulary_end_to_end_and_seen_subjects(tiny_mini_data, tmp_path, capsys, one_torch_thread):
    """G_L and G_T trained with the paper's six emotions x two levels (a few steps: mechanics) and evaluated:
    a training subject is refused before anything is generated, and scored only with allow_seen_subjects,
    which marks the tables; the neutral clip (all-zero emotion part) fills Table 5."""
    from emotalk.train.tasks import train_from_config

    ckpts = tmp_path / "checkpoints"
    common = [f"data.root={tiny_mini_data.processed}", f"model.emotions={PAPER_VOCAB}", "model.intensity_levels=2",
              "train.progress=false", "train.tensorboard=false", "train.val_batches=1"]
    train_from_config("landmark/tiny", common + [f"train.run_dir={ckpts / 'landmark'}", "train.steps=4",
                                                 "train.ckpt_every=4", "train.val_every=4", "loss.lambda_gan=0"])
    train_from_config("texture/tiny", common + [f"train.run_dir={ckpts / 'texture'}", "model.image_size=64",
                                                "train.steps=2", "train.ckpt_every=2", "train.val_every=2",
                                                "train.batch_size=4", "loss.lambda_adv=0", "data.val_max_frames=4"])
    meta = json.loads(next((ckpts / "landmark" / "checkpoints").glob("*.json")).read_text())
    assert meta["subjects"] == {"train": ["W001", "W002"], "val": ["W003"]}  # recorded for the leak guard
    root = with_second_neutral(tiny_mini_data.processed, tmp_path / "data", "W003")
    argv = ["evaluate", "--config", "eval/mead-mini", f"checkpoints={ckpts}", f"data.root={root}",
            "data.subjects=[W001, W003]", "data.emotions=[neutral, happy]", "data.clips_per_subject=1",
            "progress=false", "metric_names=[psnr]", "grid.enabled=false",
            "methods=[{name: Ours, finetune_steps: 0, tables: [table2, table5], paper_row: full}]"]
    # W001 trained G_L and G_T: refused before anything is generated, in one line naming it and the checkpoint
    assert main(argv + [f"out_dir={tmp_path / 'refused'}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "W001" in err[0] and "W003" not in err[0] and str(ckpts / "landmark") in err[0]
    out = tmp_path / "seen"
    assert main(argv + [f"out_dir={out}", "allow_seen_subjects=true"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())
    assert all(subjects == ["W001"] for subjects in summary["seen_subjects"].values())
    assert len(summary["seen_subjects"]) == 2  # G_L and G_T
    assert "[SEEN SUBJECTS]" in (out / "table2.md").read_text() and "[SEEN SUBJECTS]" in (out / "table5.md").read_text()
    assert summary["protocol"]["vocabulary"] == [{"emotions": PAPER_VOCAB.strip("[]").split(", "),
                                                  "intensity_levels": 2}]
    clips = [f"{Path(c).parent.name}/{Path(c).stem}" for c in summary["clips"]]
    assert clips == ["W001/happy_level3_001", "W003/neutral_level1_002"]  # never a subject's reference clip
    assert "| Ours [neutral] |" in (out / "table5.md").read_text()  # neutral = the all-zero emotion part
    assert summary["results"]["Ours"]["PSNR"] > 5


def test_repeated_frames_are_measured_once_with_the_same_result(monkeypatch):
    """The static-photo baseline is one frame repeated: dlib runs once per run of identical frames, the
    repeats get the first frame's landmarks, and CPBD / SSIM equal the single frame's (known answers)."""
    import numpy as np

    from emotalk.data.face.detect import Face
    from emotalk.eval import face_features
    from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metrics
    from emotalk.eval.metrics.image_quality import cpbd, to_gray
    from emotalk.eval.sample import repeat_sources

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    frames = np.stack([a, a, a, b, b, a])
    assert repeat_sources(frames).tolist() == [0, 0, 0, 3, 3, 5]
    assert repeat_sources(frames, np.stack([a, a, b, b, b, a])).tolist() == [0, 0, 2, 3, 3, 5]

    calls = []

    class Stub:  # a detector that answers with the frame's mean grey level as its landmarks' x
        def detect_faces(self, frame):
            calls.append(1)
            return [Face((0, 0, 10, 10), np.full((68, 2), float(frame.mean()), np.float32))]

    monkeypatch.setattr(face_features, "get_feature_detector", lambda *a, **k: Stub())
    lms, boxes = face_features.detect_faces_video(frames)
    assert len(calls) == 3  # runs [a a a] [b b] [a]
    assert np.allclose(lms[:3, 0, 0], a.mean()) and np.allclose(lms[3:5, 0, 0], b.mean())
    assert np.allclose(lms[5, 0, 0], a.mean()) and np.isfinite(boxes).all()

    static = VideoSample(generated=np.stack([a] * 4), ground_truth=np.stack([a, a, b, a]), name="static")
    res = compute_metrics(["cpbd", "ssim"], [static], MetricOptions())
    assert res["CPBD"].value == cpbd(to_gray(a))
    one = compute_metrics(["ssim"], [VideoSample(generated=a[None], ground_truth=b[None])], MetricOptions())
    assert res["SSIM"].value == (3 * 1.0 + one["SSIM"].value) / 4  # identical frames score exactly 1


def _face_samples():
    """Two short clips of a real face (the bundled public-domain photo, shifted a few pixels per frame), with
    their landmarks already measured (as an earlier method leaves them): no dlib model to load here."""
    import cv2
    import numpy as np

    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.eval.feature_store import Feature, Side
    from emotalk.eval.metrics import VideoSample

    img = cv2.imread(str(grace_hopper_path()))[..., ::-1]
    h, w = img.shape[:2]
    s = min(h, w)
    face = cv2.resize(np.ascontiguousarray(img[:s, (w - s) // 2:(w - s) // 2 + s]), (128, 128),
                      interpolation=cv2.INTER_AREA)
    shift = lambda k: np.roll(face, k, axis=1)  # noqa: E731
    rng = np.random.default_rng(0)
    out = []
    for i, emo in enumerate(("happy", "neutral")):
        v = VideoSample(generated=np.stack([shift(k) for k in (0, 3)]),
                        ground_truth=np.stack([shift(k) for k in (1, 3)]),
                        identity=face, emotion=emo, name=f"clip{i}")
        for side in (Side.GENERATED, Side.GROUND_TRUTH):
            v.features.put(side, Feature.LANDMARKS, 40 + 50 * rng.random((2, 68, 2)))
        out.append(v)
    return out


def test_parallel_metrics_equal_the_serial_ones_and_keep_the_feature_store():
    """The pixel metrics computed in a forked process (the demo's evaluation) give exactly the serial numbers
    and details, in the serial order."""
    from emotalk.eval.metrics import MetricOptions, compute_metrics
    from emotalk.eval.parallel import PIXEL_METRICS, can_fork, compute_metrics_parallel, split_metrics

    names = ["psnr", "m_ld", "ssim", "cpbd", "emo_acc_fer", "f_lvd"]
    assert split_metrics(names) == (["psnr", "ssim", "cpbd", "emo_acc_fer"], ["m_ld", "f_lvd"])
    assert set(PIXEL_METRICS) <= set(names)
    opts = MetricOptions(device="cpu")
    assert can_fork(opts)
    serial = compute_metrics(names, _face_samples(), opts)
    samples = _face_samples()
    par = compute_metrics_parallel(names, samples, opts, workers=2)
    assert list(par) == list(serial) == ["PSNR", "M-LD", "SSIM", "CPBD", "Emo-Acc-FER", "F-LVD"]
    for k in serial:
        assert par[k].value == pytest.approx(serial[k].value, nan_ok=True, rel=0, abs=0), k
        assert json.dumps(par[k].details, sort_keys=True, default=str) == \
            json.dumps(serial[k].details, sort_keys=True, default=str), k
    assert [s.features.keys() for s in samples] == [s.features.keys() for s in _face_samples()]


def test_an_error_in_the_metric_process_reaches_the_caller(monkeypatch):
    """A metric failing in the forked process raises its own typed error here, not a hang or a bare EOF."""
    from emotalk.errors import InputError
    from emotalk.eval.metrics import MetricOptions, image_quality
    from emotalk.eval.parallel import compute_metrics_parallel

    def broken(gray):
        raise InputError("cpbd broke on purpose")

    monkeypatch.setattr(image_quality, "cpbd", broken)  # inherited by the forked child
    samples = _face_samples()[:1]
    with pytest.raises(InputError, match="on purpose"):
        compute_metrics_parallel(["cpbd", "m_ld"], samples, MetricOptions(device="cpu"))
