"""Known answers for G_L's expression-amplitude validation numbers (emotalk.train.landmark_validation,
emotalk.train.landmark_faces)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from emotalk.data.face.blinks import apply_blink, blink_track
from emotalk.models.face_graph import BROWS, EYES, MOUTH, canonical_template
from emotalk.models.losses.blink_mask import blink_frames, eye_aperture, open_eye_mask
from emotalk.train.landmark_faces import face_report, face_summary
from emotalk.train.landmark_intensity import control_report, control_separation
from emotalk.train.landmark_validation import (ClipAmplitude, amplitude_report, clip_amplitude,
                                               decode_control, expression_summary, level_amplitudes,
                                               predict_clip_amplitudes, real_clip_amplitudes,
                                               reference_amplitudes, region_displacement)

EMOTIONS = ["neutral", "happy", "sad"]


def _clip(seed: int, scale_brows: float = 1.0, amp: float = 0.05, frames: int = 12):
    """A neutral face and ``frames`` real frames whose brows/eyes/mouth move by random offsets."""
    g = torch.Generator().manual_seed(seed)
    neutral = torch.from_numpy(canonical_template())
    real = neutral.expand(frames, 68, 2).clone()
    real += amp * torch.randn(frames, 68, 2, generator=g)
    return neutral, real


def test_region_displacement_known_distance():
    neutral = torch.zeros(68, 2)
    moved = neutral.clone()
    moved[list(BROWS), 1] = -0.1  # brows 0.1 up
    moved[list(MOUTH), 0] = 0.3
    assert float(region_displacement(moved, neutral, BROWS)) == pytest.approx(0.1)
    assert float(region_displacement(moved, neutral, EYES)) == pytest.approx(0.0)
    assert float(region_displacement(moved, neutral, MOUTH)) == pytest.approx(0.3)
    # 3-4-5 triangle: the distance, not a coordinate
    moved[list(EYES)] = torch.tensor([0.3, 0.4])
    assert float(region_displacement(moved, neutral, EYES)) == pytest.approx(0.5)


def test_half_displacement_gives_half_ratio():
    """Predictions = neutral + 0.5 × the real displacement -> every ratio is 0.5 (the brief's check)."""
    clips = []
    for i, (emo, level) in enumerate([("happy", 1), ("happy", 3), ("sad", 2), ("neutral", 1)]):
        neutral, real = _clip(i)
        pred = neutral + 0.5 * (real - neutral)
        clips.append(clip_amplitude(emo, level, pred, real, neutral))
    rep = amplitude_report(clips)
    for key in ("brows", "eyes", "mouth", "expression", "happy", "sad", "neutral", "min"):
        assert rep[f"expr_ratio/{key}"] == pytest.approx(0.5, abs=1e-6), key


def _blinking_clip(frames: int = 90, offset: float = 0.02, jitter: float = 0.01, seed: int = 0):
    """A template face whose eyes and brows hold a static offset (``offset`` down and right: a known
    expression), blinks once (frames ~30-39, lids shut at ~34) and jitters like a landmark detector."""
    neutral = torch.from_numpy(canonical_template()).double()
    held = neutral.clone()
    held[list(EYES) + list(BROWS)] += torch.tensor([offset, offset]) / 2 ** 0.5
    closure = blink_track(np.array([1.0]), frames)
    clean = torch.from_numpy(apply_blink(np.repeat(held.numpy()[None], frames, 0), closure))
    g = torch.Generator().manual_seed(seed)
    real = clean + jitter * torch.randn(frames, 68, 2, generator=g, dtype=torch.float64)
    return neutral.float(), real.float(), held.float().expand(frames, 68, 2), closure


def test_blinks_are_found_from_the_eye_aperture():
    neutral, real, _, closure = _blinking_clip(jitter=0.0)
    ap = eye_aperture(real)
    assert float(eye_aperture(neutral)) == pytest.approx(float(ap[0]), rel=1e-5)  # the offset moves, not shapes
    assert float(ap[closure.argmax()]) < 0.3 * float(ap[0])
    blink = blink_frames(ap)
    shut = torch.from_numpy(closure > 0.3)
    assert bool(blink[shut].all())  # every well-closed frame ...
    assert int(blink.sum()) <= int((closure > 0).sum()) + 2 * 2  # ... and only the blink (plus dilation)
    # a clip-long squint (every frame's aperture 30 % lower) is the clip's open eye, not a blink
    assert not bool(blink_frames(0.7 * eye_aperture(neutral).expand(40)).any())
    # the table's row order does not matter: frames shuffled, the same frames found
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(1))
    index = np.stack([np.zeros(len(real), int), np.arange(len(real))], 1)
    mask = open_eye_mask(real[perm], index[perm.numpy()])
    assert torch.equal(mask, ~blink[perm])


def test_static_offset_plus_blink_plus_jitter_measures_the_offset():
    """Known answer: eyes and brows held 0.02 off neutral, one blink, 0.01 detector jitter per coordinate.
    The clip's expression amplitude is the offset (within the jitter's 1/sqrt(T) residue); the per-frame
    definition counts the blink and the jitter as expression too (~0.023). A prediction that holds exactly
    the offset and never blinks or jitters gets ratio ~1 (per-frame: ~0.85)."""
    neutral, real, held, closure = _blinking_clip()
    open_ = open_eye_mask(real, np.stack([np.zeros(len(real), int), np.arange(len(real))], 1))
    c = clip_amplitude("happy", 3, held, real, neutral, open_eyes=open_)
    for r in ("brows", "eyes"):
        assert c.real[r] == pytest.approx(0.02, rel=0.1), r
        assert c.predicted[r] == pytest.approx(0.02, rel=1e-5), r
        assert c.real_frames[r] > 1.1 * 0.02, r  # the old number: jitter and blink inflate the real side
    assert c.predicted["mouth"] == pytest.approx(0.0, abs=1e-6)  # the mouth did not move
    rep = amplitude_report([c])
    assert rep["expr_ratio/eyes"] == pytest.approx(1.0, abs=0.1)
    assert rep["expr_ratio_frames/eyes"] < 0.9
    # a clip that only blinks (no offset, no jitter) has no eye expression once the blink is left out
    neutral, blinking, _, _ = _blinking_clip(offset=0.0, jitter=0.0)
    index = np.stack([np.zeros(len(blinking), int), np.arange(len(blinking))], 1)
    only = clip_amplitude("neutral", 1, blinking, blinking, neutral, open_eyes=open_eye_mask(blinking, index))
    assert only.real["eyes"] == pytest.approx(0.0, abs=1e-6)
    assert clip_amplitude("neutral", 1, blinking, blinking, neutral).real["eyes"] > 1e-3  # unmasked: not 0
    _, clean, _, _ = _blinking_clip(jitter=0.0)
    still = clean.clone()
    still[:] = held[0]
    c0 = clip_amplitude("happy", 3, held, still, neutral)
    assert c0.real["eyes"] == pytest.approx(c0.real_frames["eyes"], rel=1e-5)


def test_reach_of_the_training_subjects_amplitude():
    """``expr_reach``: the training clips' mean real amplitude over the held-out one, per cell."""
    def c(emo, real_eyes):
        return ClipAmplitude(emo, 3, {"eyes": 0.5 * real_eyes}, {"eyes": real_eyes})

    train = [c("happy", 0.006), c("happy", 0.010), c("sad", 0.02)]
    ref = reference_amplitudes(train)
    assert ref == {"happy": {"eyes": pytest.approx(0.008)}, "sad": {"eyes": pytest.approx(0.02)}}
    rep = amplitude_report([c("happy", 0.016), c("sad", 0.01), c("angry", 0.02)], reference=ref)
    assert rep["expr_reach/happy/eyes"] == pytest.approx(0.5)
    assert rep["expr_reach/sad/eyes"] == pytest.approx(2.0)
    assert "expr_reach/angry/eyes" not in rep  # no training clip of that emotion
    assert not any(k.startswith("expr_reach") for k in amplitude_report(train))
    table = expression_summary(7, rep, regions=("eyes",))
    assert "0.500 /0.50" in table and "reach" in table


def test_real_clip_amplitudes_need_no_model():
    rows = []
    for cid, emo in enumerate(["happy", "sad"]):
        neutral, real = _clip(cid, frames=8)
        vec = torch.zeros(6)
        vec[EMOTIONS.index(emo)] = 1
        vec[5] = 1
        rows.append((real, vec.expand(8, 6), neutral.expand(8, 68, 2),
                     np.stack([np.full(8, cid), np.arange(8)], 1)))
    target, emotion, neutral = (torch.cat([r[i] for r in rows]) for i in range(3))
    index = np.concatenate([r[3] for r in rows])
    clips = real_clip_amplitudes(emotion, neutral, target, index, EMOTIONS, 3)
    assert [(c.emotion, c.level) for c in clips] == [("happy", 3), ("sad", 3)]
    direct = clip_amplitude("sad", 3, target[8:], target[8:], neutral[8:],
                            open_eyes=open_eye_mask(target[8:], index[8:]))
    assert clips[1].real == pytest.approx(direct.real) and clips[1].predicted == clips[1].real


def test_ratio_of_means_not_mean_of_ratios():
    # clip A: real 0.2, predicted 0.1; clip B: real 0.01, predicted 0.02 -> (0.1+0.02)/(0.2+0.01)
    a = ClipAmplitude("happy", 3, {"brows": 0.1}, {"brows": 0.2})
    b = ClipAmplitude("happy", 1, {"brows": 0.02}, {"brows": 0.01})
    rep = amplitude_report([a, b])
    assert rep["expr_ratio/brows"] == pytest.approx(0.12 / 0.21)
    assert rep["expr_ratio/happy"] == pytest.approx(0.12 / 0.21)


def test_min_is_the_weakest_cell():
    clips = [ClipAmplitude("happy", 3, {"brows": 0.9, "mouth": 1.0}, {"brows": 1.0, "mouth": 1.0}),
             ClipAmplitude("sad", 3, {"brows": 1.0, "mouth": 0.4}, {"brows": 1.0, "mouth": 1.0})]
    rep = amplitude_report(clips)
    assert rep["expr_ratio/min"] == pytest.approx(0.4)
    assert rep["expr_ratio/mouth"] == pytest.approx(0.7)
    # a region the emotion barely moves (real amplitude under min_real) does not decide the minimum
    clips.append(ClipAmplitude("contempt", 3, {"brows": 0.0001, "mouth": 0.9}, {"brows": 0.005, "mouth": 1.0}))
    assert amplitude_report(clips)["expr_ratio/min"] == pytest.approx(0.4)
    assert amplitude_report(clips, min_real=0.001)["expr_ratio/min"] == pytest.approx(0.02)


def test_every_emotion_region_cell_is_reported():
    """Issue 12 §3's criterion is per region AND per emotion: each (emotion, region) cell is its own ratio of
    means over that emotion's clips, with the real amplitude next to it."""
    def c(emo, level, pred, real):
        return ClipAmplitude(emo, level, dict(zip(("brows", "eyes", "mouth"), pred)),
                             dict(zip(("brows", "eyes", "mouth"), real)))

    clips = [c("happy", 1, (0.01, 0.02, 0.03), (0.02, 0.02, 0.03)),
             c("happy", 3, (0.03, 0.02, 0.09), (0.02, 0.04, 0.09)),
             c("sad", 3, (0.05, 0.004, 0.02), (0.04, 0.008, 0.04))]
    rep = amplitude_report(clips)
    assert rep["expr_ratio/happy/brows"] == pytest.approx(0.04 / 0.04)
    assert rep["expr_ratio/happy/eyes"] == pytest.approx(0.04 / 0.06)
    assert rep["expr_ratio/happy/mouth"] == pytest.approx(1.0)
    assert rep["expr_ratio/sad/brows"] == pytest.approx(1.25)
    assert rep["expr_ratio/sad/eyes"] == pytest.approx(0.5)
    assert rep["expr_ratio/sad/mouth"] == pytest.approx(0.5)
    assert rep["expr_real/happy/eyes"] == pytest.approx(0.03)
    assert rep["expr_real/sad/eyes"] == pytest.approx(0.008)
    # the region rows pool the emotions: eyes (0.02 + 0.02 + 0.004) / (0.02 + 0.04 + 0.008)
    assert rep["expr_ratio/eyes"] == pytest.approx(0.044 / 0.068)
    # sad's eyes move less than MIN_REAL_AMPLITUDE (0.01): reported, but not the minimum
    assert rep["expr_ratio/min"] == pytest.approx(0.5)  # sad/mouth
    assert amplitude_report(clips, min_real=0.001)["expr_ratio/min"] == pytest.approx(0.5)
    clips[2] = c("sad", 3, (0.05, 0.002, 0.02), (0.04, 0.008, 0.04))
    assert amplitude_report(clips)["expr_ratio/min"] == pytest.approx(0.5)
    assert amplitude_report(clips, min_real=0.001)["expr_ratio/min"] == pytest.approx(0.25)
    assert not any(k.startswith("expr_ratio/happy/expression") for k in rep)


def test_monotonic_verdicts():
    def c(emo, level, pred, real):
        return ClipAmplitude(emo, level, {"expression": pred}, {"expression": real})

    clips = [c("happy", 1, 0.1, 0.1), c("happy", 2, 0.2, 0.2), c("happy", 3, 0.3, 0.3),
             # sad: predicted level 3 weaker than level 2 -> not monotonic; real is
             c("sad", 1, 0.1, 0.1), c("sad", 2, 0.3, 0.2), c("sad", 3, 0.25, 0.3),
             # neutral is not judged even though it decreases
             c("neutral", 1, 0.5, 0.5), c("neutral", 2, 0.1, 0.1)]
    rep = amplitude_report(clips)
    assert rep["expr_monotonic"] == pytest.approx(0.5)
    assert rep["expr_monotonic_real"] == pytest.approx(1.0)
    assert level_amplitudes(clips)["sad"] == {1: 0.1, 2: 0.3, 3: 0.25}


def test_empty_groups_are_nan_not_errors():
    assert amplitude_report([]) == {}
    rep = amplitude_report([ClipAmplitude("happy", 3, {"brows": 0.0}, {"brows": 0.0})])
    assert math.isnan(rep["expr_ratio/brows"]) and math.isnan(rep["expr_monotonic"])


def test_decode_control():
    v = torch.tensor([0, 0, 1, 0, 0, 1], dtype=torch.float32)
    assert decode_control(v, EMOTIONS, 3) == ("sad", 3)
    with pytest.raises(ValueError):
        decode_control(v, EMOTIONS, 2)


class _HalfGenerator(torch.nn.Module):
    """Stands in for G_L: moves the neutral face half-way to a target it is handed through ``audio``."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, audio, emotion, neutral):
        return {"landmarks": neutral + 0.5 * (audio - neutral)}


@pytest.mark.parametrize("stride", [1, 3])
def test_predict_clip_amplitudes_groups_clips_and_strides(stride):
    rows = []
    for cid, (emo, level, frames) in enumerate([("happy", 3, 10), ("sad", 1, 7)]):
        neutral, real = _clip(cid, frames=frames)
        real[:, list(EYES)] = neutral[list(EYES)] + 0.01  # eyes held open (no aperture dips: no blink frames)
        vec = torch.zeros(6)
        vec[EMOTIONS.index(emo)] = 1
        vec[3 + level - 1] = 1
        rows.append((real, vec.expand(frames, 6), neutral.expand(frames, 68, 2),
                     np.stack([np.full(frames, cid), np.arange(frames)], 1)))
    target = torch.cat([r[0] for r in rows])
    emotion = torch.cat([r[1] for r in rows])
    neutral = torch.cat([r[2] for r in rows])
    index = np.concatenate([r[3] for r in rows])
    clips = predict_clip_amplitudes(_HalfGenerator(), target, emotion, neutral, target, index, EMOTIONS, 3,
                                    frame_stride=stride, batch_size=4)
    assert [(c.emotion, c.level) for c in clips] == [("happy", 3), ("sad", 1)]
    for c in clips:
        for r in c.real:
            assert c.predicted[r] == pytest.approx(0.5 * c.real[r], rel=1e-5)
    # the stride keeps frames 0, stride, 2·stride … of each clip: the mouth's real amplitude is the mean of
    # their per-frame displacements, the brows' the displacement of their mean over the open-eye frames
    # (blinks found on every frame of the clip, before the stride)
    kept = [i for i in range(10) if i % stride == 0]
    expect = float(region_displacement(target[kept], neutral[kept], MOUTH).mean())
    assert clips[0].real["mouth"] == pytest.approx(expect, rel=1e-6)
    assert bool(open_eye_mask(target, index).all())
    brows = list(BROWS)
    static = (target[kept][:, brows] - neutral[kept][:, brows]).mean(dim=0).norm(dim=-1).mean()
    assert clips[0].real["brows"] == pytest.approx(float(static), rel=1e-5)
    assert clips[0].real_frames["brows"] == pytest.approx(
        float(region_displacement(target[kept], neutral[kept], BROWS).mean()), rel=1e-6)


def test_predict_clips_names_each_clips_subject():
    rows = []
    for cid, frames in enumerate([6, 5, 4]):
        neutral, real = _clip(cid, frames=frames)
        vec = torch.zeros(6)
        vec[1], vec[5] = 1, 1
        rows.append((real, vec.expand(frames, 6), neutral.expand(frames, 68, 2),
                     np.stack([np.full(frames, cid), np.arange(frames)], 1)))
    target, emotion, neutral = (torch.cat([r[i] for r in rows]) for i in range(3))
    index = np.concatenate([r[3] for r in rows])
    clips = predict_clip_amplitudes(_HalfGenerator(), target, emotion, neutral, target, index, EMOTIONS, 3,
                                    subjects=["A", "B", "A"])
    assert [c.subject for c in clips] == ["A", "B", "A"]
    assert [c.subject for c in predict_clip_amplitudes(_HalfGenerator(), target, emotion, neutral, target,
                                                       index, EMOTIONS, 3)] == ["", "", ""]


def test_face_report_known_answers():
    """Two held-out faces: A carries its eyes at 0.9 of the real amplitude, B at 0.5; the training faces'
    eyes move 0.006 in happy, A's 0.006 (reach 1.0), B's 0.012 (reach 0.5)."""
    def amp(subject, pred, real):
        return ClipAmplitude("happy", 3, {"brows": 0.02, "eyes": pred, "mouth": 0.05},
                             {"brows": 0.02, "eyes": real, "mouth": 0.05}, subject=subject)

    clips = [amp("A", 0.0054, 0.006), amp("A", 0.0054, 0.006), amp("B", 0.004, 0.010), amp("B", 0.008, 0.014),
             amp("", 1.0, 0.001)]  # a clip without a subject is left out
    rep = face_report(clips, reference={"happy": {"eyes": 0.006, "brows": 0.02}})
    assert rep["expr_face/A/happy/eyes"] == pytest.approx(0.9)
    assert rep["expr_face/B/happy/eyes"] == pytest.approx(0.5)  # ratio of means: 0.006 / 0.012
    assert rep["expr_face_real/B/happy/eyes"] == pytest.approx(0.012)
    assert rep["expr_face_reach/A/happy/eyes"] == pytest.approx(1.0)
    assert rep["expr_face_reach/B/happy/eyes"] == pytest.approx(0.5)
    assert rep["expr_face/B/happy/mouth"] == pytest.approx(1.0) and "expr_face_reach/B/happy/mouth" not in rep
    assert not any("/happy/expression" in k for k in rep) and not any(k.startswith("expr_face//") for k in rep)
    assert face_report(clips[-1:]) == {}
    text = face_summary(rep)
    assert "A: none" in text and "B: happy eyes 0.50 (reach 0.50)" in text
    assert face_summary(rep, min_real=0.05).count("none") == 2  # B's eyes move too little to count then
    assert face_summary(amplitude_report(clips)) == ""


# --- the opt-in vertex-loss variants (emotalk.models.losses.weighted_vertex_loss) ---
from emotalk.models.losses.vertex_loss import vertex_loss  # noqa: E402
from emotalk.models.losses.weighted_vertex_loss import region_point_weights, weighted_vertex_loss  # noqa: E402


def test_weighted_vertex_loss_defaults_to_eq2():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(5, 68, 2, generator=g), torch.randn(5, 68, 2, generator=g)
    assert float(weighted_vertex_loss(pred, target)) == pytest.approx(float(vertex_loss(pred, target)))


def test_weighted_vertex_loss_known_values():
    target = torch.zeros(2, 68, 2)
    pred = target.clone()
    pred[:, list(BROWS), 1] = 0.5   # 10 brow points off by 0.5 in y
    pred[:, 60, :] = torch.tensor([0.3, -0.4])
    # l2: 10 * 0.25 + (0.09 + 0.16) = 2.75 ; brows weighted 4: 10 + 0.25
    assert float(weighted_vertex_loss(pred, target)) == pytest.approx(2.75)
    w = region_point_weights({"brows": 4.0})
    assert float(weighted_vertex_loss(pred, target, w)) == pytest.approx(10.25)
    # l1: 10 * 0.5 + (0.3 + 0.4) = 5.7
    assert float(weighted_vertex_loss(pred, target, norm="l1")) == pytest.approx(5.7)
    assert region_point_weights({}) is None
    with pytest.raises(ValueError, match="unknown face region"):
        region_point_weights({"forehead": 2.0})
    with pytest.raises(ValueError):
        weighted_vertex_loss(pred, target, norm="huber")


@pytest.mark.slow
def test_training_logs_the_expression_numbers_over_every_held_out_clip(tmp_path):
    """Wiring: the val rows of metrics.jsonl carry expr_ratio/* computed over *all* held-out clips (not
    just the trainer's first val_batches batches), equal to a direct computation with the final model."""
    import json

    from emotalk.data.datasets.landmark import LandmarkFrameDataset, load_clips
    from emotalk.data.datasets.toy import make_toy_dataset
    from emotalk.train.tasks import train_from_config

    from emotalk.data.loading import CheckpointMeta, save_model
    from emotalk.models.landmark_emotion import LandmarkEmotionMLP, LandmarkEmotionModelConfig
    from emotalk.train.landmark_validation import landmark_emotion_accuracy, predict_clips

    root = make_toy_dataset(tmp_path / "toy", subjects=3, frames=12, seed=2)
    # an (untrained) landmark emotion classifier checkpoint: the wiring, not its accuracy, is under test
    classes = ("neutral", "happy", "sad", "surprised")
    torch.manual_seed(0)
    clf = LandmarkEmotionMLP(len(classes), hidden=16, layers=1)
    clf_path = save_model(tmp_path / "clf" / "step_1", clf, "landmark_emotion",
                          LandmarkEmotionModelConfig(hidden=16, layers=1),
                          CheckpointMeta(kind="landmark_emotion", step=1, config={}, emotions=classes))
    trainer, _ = train_from_config("landmark/tiny", [
        f"data.root={root}", f"train.run_dir={tmp_path / 'run'}", "train.steps=6", "train.val_every=3",
        "train.ckpt_every=6", "train.val_batches=1", "train.batch_size=8", "train.progress=false",
        "data.val_subjects=[T002]", "validation.expression_frame_stride=2",
        f"validation.landmark_emotion_classifier={clf_path}"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["step"] for r in val] == [3, 6]
    # tiny.yaml computes them every 1000 steps and at the last step only (step 3 is neither)
    assert "expr_ratio/brows" not in val[0] and "mouth_open_std_ratio" in val[0]
    last = val[-1]
    for key in ("brows", "eyes", "mouth", "min", "neutral", "surprised"):
        assert f"expr_ratio/{key}" in last, key
    assert "expr_monotonic" in last
    ds = LandmarkFrameDataset(load_clips(root, ["T002"]))
    G = trainer.modules["generator"].eval()
    m = trainer.task.cfg.model
    clips = predict_clip_amplitudes(G, ds.audio, ds.emotion, ds.neutral, ds.target, ds.index, m.emotions,
                                    m.intensity_levels, frame_stride=2)
    assert len({(c.emotion, c.level) for c in clips}) == len(clips) > 2  # every held-out clip, not one batch
    direct = amplitude_report(clips)
    for key in ("expr_ratio/brows", "expr_ratio/mouth", "expr_ratio/min", "expr_ratio/happy/eyes",
                "expr_real/surprised/brows"):
        assert last[key] == pytest.approx(direct[key], rel=1e-4, nan_ok=True), key
    frames = predict_clips(G, ds.audio, ds.emotion, ds.neutral, ds.target, ds.index, m.emotions,
                           m.intensity_levels, frame_stride=2)
    acc = landmark_emotion_accuracy(clf.eval(), classes, frames)
    for key in ("emo_acc_lm", "emo_acc_lm_real"):
        assert last[key] == pytest.approx(acc[key]), key
    # the final numbers travel with the checkpoint and are printed as a table in the run's log
    meta = json.loads(sorted((tmp_path / "run" / "checkpoints").glob("step_*.json"))[-1].read_text())
    assert meta["expression_validation"]["step"] == 6 and meta["expression_validation"]["track"] == "detected"
    # G_L's response to the intensity control on fixed speech (train/landmark_intensity.py), same numbers
    sep = control_report(control_separation(G, ds.audio, ds.emotion, ds.neutral, ds.index, m.emotions,
                                            m.intensity_levels, frame_stride=12))
    assert last["expr_monotonic_control"] == pytest.approx(sep["expr_monotonic_control"], nan_ok=True)
    assert last["expr_sep/happy/3"] == pytest.approx(sep["expr_sep/happy/3"], rel=1e-4)
    assert meta["expression_validation"]["expr_ratio/mouth"] == pytest.approx(direct["expr_ratio/mouth"])
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "expression amplitude ratios at step 6" in log and "Emo-Acc-LM" in log
    # the per-face breakdown (train/landmark_faces.py) names the held-out subject
    faces = face_report([dataclasses.replace(c, subject="T002") for c in clips])
    assert faces and last["expr_face/T002/happy/eyes"] == pytest.approx(faces["expr_face/T002/happy/eyes"],
                                                                      rel=1e-4, nan_ok=True)
    assert "held-out faces" in log and "T002:" in log


def test_amplitude_loss_known_values_and_finite_gradient_at_rest():
    from emotalk.models.losses.amplitude_loss import amplitude_loss, region_amplitudes

    neutral = torch.zeros(2, 68, 2)
    target = neutral.clone()
    target[:, list(EYES)] = torch.tensor([0.3, 0.4])  # eyes 0.5 from neutral
    target[:, list(BROWS), 1] = -0.2
    pred = target.clone()
    pred[:, list(EYES)] = torch.tensor([0.0, 0.1])  # eyes 0.1 from neutral, brows and mouth exact
    assert region_amplitudes(target, neutral)[0].tolist() == pytest.approx([0.2, 0.5, 0.0], abs=1e-5)
    assert float(amplitude_loss(pred, target, neutral)) == pytest.approx(0.4 ** 2, rel=1e-5)
    # the direction is not its business: eyes moved 0.5 the other way cost nothing
    assert float(amplitude_loss(-target, target, neutral)) == pytest.approx(0.0, abs=1e-6)
    # the push is proportional to each point's displacement (RMS): a point at rest stays at rest, the
    # others are scaled along their own direction -- no movement is invented
    half = neutral.clone()
    half[:, list(EYES)[:6]] = torch.tensor([0.15, 0.2])  # half the eye points half-way, the others at rest
    half.requires_grad_(True)
    amplitude_loss(half, target, neutral).backward()
    g = half.grad[0, list(EYES)]
    assert torch.all(g[6:] == 0)
    assert torch.allclose(g[:6] / g[:6].norm(dim=-1, keepdim=True), -torch.tensor([0.6, 0.8]).expand(6, 2))
    rest = neutral.clone().requires_grad_(True)  # G_L starts at δ = 0
    amplitude_loss(rest, target, neutral).backward()
    assert torch.isfinite(rest.grad).all()
    with pytest.raises(ValueError):
        amplitude_loss(pred[:, :60], target, neutral)


class _BrowClassifier(torch.nn.Module):
    """Stands in for the landmark emotion classifier: brows raised (dy < 0) -> "happy", lowered -> "sad"."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # tells the caller its device

    def forward(self, displacement):
        dy = displacement[:, list(BROWS), 1].mean(dim=1)
        return torch.stack([-dy, dy], dim=1) * 100.0


def test_emo_acc_lm_on_raw_landmarks_known_answer():
    from emotalk.train.landmark_validation import ClipFrames, landmark_emotion_accuracy

    neutral = torch.from_numpy(canonical_template()).expand(5, 68, 2)

    def face(dy):
        f = neutral.clone()
        f[:, list(BROWS), 1] += dy
        return f

    up, down = face(-0.05), face(0.05)
    clips = [ClipFrames("happy", 3, up, up, neutral),  # both right
             ClipFrames("sad", 3, up, down, neutral),  # G_L raises the brows of a sad clip: wrong
             ClipFrames("sad", 1, down, down, neutral),  # both right
             ClipFrames("angry", 3, up, up, neutral)]  # not a class of this classifier: skipped
    out = landmark_emotion_accuracy(_BrowClassifier(), ["happy", "sad"], clips)
    assert out == pytest.approx({"emo_acc_lm": 2 / 3, "emo_acc_lm_real": 1.0, "emo_acc_lm_ratio": 2 / 3})
    # the video vote is the mean softmax over frames: 3 frames barely down, 2 far up -> up wins (a majority
    # vote would say sad)
    mixed = torch.cat([face(0.002)[:3], face(-0.05)[:2]])
    assert landmark_emotion_accuracy(_BrowClassifier(), ["happy", "sad"],
                                     [ClipFrames("happy", 2, mixed, up, neutral)])["emo_acc_lm"] == 1.0
    assert landmark_emotion_accuracy(_BrowClassifier(), ["happy", "sad"], clips[3:]) == {}
