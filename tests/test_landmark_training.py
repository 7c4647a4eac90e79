"""G_L trained with the tiny config learns what the data teaches: mouth from audio, brows from emotion."""
import numpy as np
import pytest
import torch

from emotalk.data.emotions import emotion_vector
from emotalk.data.datasets.landmark import LandmarkFrameDataset, load_clips
from emotalk.models.face_graph import BROWS, MOUTH
from emotalk.data.datasets.toy import make_toy_dataset
from emotalk.train.tasks import train_from_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_toy_dataset(tmp_path_factory.mktemp("toy"), subjects=4, frames=40, seed=1)
    run = tmp_path_factory.mktemp("run")
    # eq. (2) + GAN as in the paper (tiny.yaml's region weights and amplitude term tuned for mead-mini's
    # 800-step demo budget are switched off): this module checks what G_L's architecture learns from data
    trainer, _ = train_from_config("landmark/tiny", [f"data.root={root}", f"train.run_dir={run}",
                                                     "train.steps=600", "train.progress=false",
                                                     "data.val_subjects=[T003]",
                                                     "loss.region_weights={eyes: 1, brows: 1}",  # = eq. (2)
                                                     "loss.lambda_amplitude=0", "loss.mask_blinks=false"])
    return root, trainer


@pytest.mark.slow
def test_beats_copy_the_neutral_face_baseline(trained):
    root, trainer = trained
    G = trainer.modules["generator"].eval()
    val = LandmarkFrameDataset(load_clips(root, ["T003"]))
    with torch.no_grad():
        pred = G(val.audio, val.emotion, val.neutral)["landmarks"]
    err = (pred - val.target).norm(dim=-1)
    base = (val.neutral - val.target).norm(dim=-1)
    mouth = list(MOUTH)
    assert err[:, mouth].mean() < 0.6 * base[:, mouth].mean()
    assert err.mean() < 0.75 * base.mean()


@pytest.mark.slow
def test_same_audio_different_emotions_differ_where_the_emotion_acts(trained):
    root, trainer = trained
    G = trainer.modules["generator"].eval()
    val = LandmarkFrameDataset(load_clips(root, ["T003"]))
    audio, neutral = val.audio[:40], val.neutral[:40]
    out = {}
    with torch.no_grad():
        for emo in ("neutral", "surprised", "happy"):
            e = torch.from_numpy(emotion_vector(emo, 3 if emo != "neutral" else 1)).expand(40, -1)
            out[emo] = G(audio, e, neutral)["landmarks"].numpy()
    brows = list(BROWS)
    # surprised raises the brows (smaller y), happy pulls the lip corners up
    raise_ = out["neutral"][:, brows, 1].mean() - out["surprised"][:, brows, 1].mean()
    assert raise_ > 0.05
    corners = [48, 54]
    assert out["neutral"][:, corners, 1].mean() - out["happy"][:, corners, 1].mean() > 0.03
    # and the audio still drives the mouth identically in spirit: mouth opening correlates across emotions
    from emotalk.models.face_graph import mouth_opening

    a, b = mouth_opening(out["neutral"]), mouth_opening(out["surprised"])
    assert np.corrcoef(a, b)[0, 1] > 0.8


# --- blink frames and the clip's mean face in G_L's losses (fast; no training) ---
from emotalk.data.face.blinks import apply_blink, blink_track  # noqa: E402
from emotalk.models.face_graph import EYES, canonical_template  # noqa: E402
from emotalk.models.losses.amplitude_loss import amplitude_loss  # noqa: E402
from emotalk.train.landmark_task import (EyeAwareFrames, LandmarkLossConfig, LandmarkTask,  # noqa: E402
                                         LandmarkTrainConfig)


class _Frames:
    """Stands in for a LandmarkFrameDataset: two clips of a template face with a held eye offset; clip 0
    blinks once (frames ~15-24), clip 1 does not."""

    def __init__(self, frames=40):
        face = canonical_template().astype(np.float64)
        face[list(EYES), 1] += 0.02
        held = np.repeat(face[None], frames, 0)
        clip0 = apply_blink(held, blink_track(np.array([0.5]), frames))
        self.target = torch.from_numpy(np.concatenate([clip0, held])).float()
        self.index = np.concatenate([np.stack([np.full(frames, c), np.arange(frames)], 1) for c in (0, 1)])
        self.closure = np.concatenate([blink_track(np.array([0.5]), frames), np.zeros(frames)])

    def __len__(self):
        return len(self.target)

    def __getitem__(self, i):
        return {"target": self.target[i]}


def test_eye_aware_frames_mark_blinks_and_hold_the_clip_mean_face():
    frames = _Frames()
    ds = EyeAwareFrames(frames)
    shut = torch.from_numpy(frames.closure > 0.3)
    assert bool((ds.open_eyes[shut] == 0).all()) and bool((ds.open_eyes[40:] == 1).all())
    item = ds[frames.closure.argmax()]
    assert set(item) == {"target", "open_eyes", "clip_target"} and float(item["open_eyes"]) == 0.0
    # the clip's mean face over its open-eye frames is the held face: the blink does not enter it
    held = frames.target[40]
    assert torch.allclose(ds.clip_target[: 40], held.expand(40, 68, 2), atol=1e-6)
    assert ds.index is frames.index  # the wrapped dataset's attributes


def test_blink_frames_leave_the_eye_points_of_both_losses():
    cfg = LandmarkTrainConfig(loss=LandmarkLossConfig(region_weights={"eyes": 8}, mask_blinks=True,
                                                      amplitude_weights={"eyes": 3}))
    task = LandmarkTask(cfg)
    target = torch.zeros(2, 68, 2)
    pred = target.clone()
    pred[:, list(EYES), 1] = 0.1  # 12 eye points off by 0.1
    pred[:, 0, 0] = 0.5  # one jaw point off by 0.5
    open_eyes = torch.tensor([1.0, 0.0])  # sample 1 is a blink frame
    # sample 0: 8 * 12 * 0.01 + 0.25 = 1.21; sample 1: 0.25 (its eyes weigh 0) -> mean 0.73
    assert float(task._vertex_loss(pred, target, open_eyes)) == pytest.approx(0.73, rel=1e-5)
    assert float(task._vertex_loss(pred, target)) == pytest.approx(1.21, rel=1e-5)
    w = task._amplitude_weights(open_eyes, pred)
    assert w.tolist() == [[1.0, 3.0, 1.0], [1.0, 0.0, 1.0]]  # brows, eyes, mouth
    # eyes 0.1 from neutral in the prediction, 0 in the target: (0.1)^2 * 3 for sample 0 only
    assert float(amplitude_loss(pred, target, target, weights=w)) == pytest.approx(0.03 / 2, rel=1e-4)
    assert float(amplitude_loss(pred, target, target)) == pytest.approx(0.01, rel=1e-4)
    # amplitude_target: clip -> brows and eyes from the clip's mean face, the mouth from the frame
    task.cfg.loss.amplitude_target = "clip"
    batch = {"target": torch.zeros(1, 68, 2), "clip_target": torch.ones(1, 68, 2)}
    t = task._amplitude_target(batch)
    assert float(t[0, list(EYES)].min()) == 1.0 and float(t[0, 17].min()) == 1.0 and float(t[0, 60].abs().max()) == 0.0
    with pytest.raises(Exception, match="amplitude_weights"):
        LandmarkTrainConfig(loss=LandmarkLossConfig(amplitude_weights={"nose": 2})).validate()
