"""The emotion classifier (`emotalk train-emotion`): trained through the shared trainer on a tiny rendered
dataset, it beats chance on held-out subjects, and the Emo-Acc metric uses it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from emotalk.data.io.clip import Clip, DatasetManifest, clip_path, encode_frames, save_clip
from emotalk.models.face_graph import canonical_template
from emotalk.train.tasks import load_train_config
from emotalk.errors import ConfigError

EMOTIONS = ["neutral", "happy", "sad", "surprised"]
SIZE = 64


def _emotion_shape(emotion: str, strength: float) -> np.ndarray:
    """Displacements (canonical units) of a caricatured expression."""
    d = np.zeros((68, 2))
    if emotion == "happy":  # lip corners up and out
        d[[48, 60], 0] -= 0.08 * strength
        d[[54, 64], 0] += 0.08 * strength
        d[[48, 54, 60, 64], 1] -= 0.10 * strength
    elif emotion == "sad":  # lip corners down, inner brows up
        d[[48, 54, 60, 64], 1] += 0.10 * strength
        d[[20, 21, 22, 23], 1] -= 0.08 * strength
    elif emotion == "surprised":  # brows up, mouth open
        d[17:27, 1] -= 0.12 * strength
        d[56:59, 1] += 0.15 * strength
        d[65:68, 1] += 0.15 * strength
    return d


def render_face(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A grey line drawing of a 68-point face (canonical units) on a noisy background, RGB uint8."""
    bg = int(rng.integers(90, 170))
    img = np.full((SIZE, SIZE), bg, np.float32)
    scale = SIZE * rng.uniform(0.66, 0.74)
    centre = np.array([SIZE / 2, SIZE / 2 + 2]) + rng.normal(0, 1.5, 2)
    p = (points * scale + centre).round().astype(np.int32)
    skin = int(np.clip(bg + rng.choice([-60, 60]), 0, 255))
    cv2.fillPoly(img, [cv2.convexHull(p[:27])], skin)
    ink = int(np.clip(skin - 120, 0, 255)) if skin > 128 else int(np.clip(skin + 120, 0, 255))
    for idx, closed in ((range(17, 22), False), (range(22, 27), False), (range(36, 42), True),
                        (range(42, 48), True), (range(27, 31), False), (range(48, 60), True), (range(60, 68), True)):
        cv2.polylines(img, [p[list(idx)]], closed, ink, 2, cv2.LINE_AA)
    img += rng.normal(0, 6, img.shape)
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def make_rendered_dataset(root, subjects: int = 6, clips: int = 2, frames: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    template = canonical_template().astype(np.float64)
    for s in range(subjects):
        subject = f"S{s:02d}"
        shape = template * [1 + rng.uniform(-0.1, 0.1), 1 + rng.uniform(-0.1, 0.1)] + rng.normal(0, 0.015, (68, 2))
        for emotion in EMOTIONS:
            for k in range(clips):
                strength = rng.uniform(1.2, 1.8)
                imgs = []
                for t in range(frames):
                    pts = shape + _emotion_shape(emotion, strength) + rng.normal(0, 0.01, (68, 2))
                    pts[[61, 62, 63], 1] -= 0.03 * rng.uniform()  # a little speech
                    pts[[65, 66, 67], 1] += 0.05 * rng.uniform()
                    imgs.append(render_face(pts, rng))
                jpeg, offsets = encode_frames(imgs)
                lms = np.repeat(template[None], frames, 0).astype(np.float32)
                clip = Clip(landmarks=lms, neutral_landmarks=shape.astype(np.float32),
                            audio_features=np.zeros((frames, 2, 3), np.float32), emotion=emotion, intensity=2,
                            fps=30.0, subject=subject, clip_id=f"{emotion}_{k}", feature_kind="none",
                            dataset="rendered", frames_jpeg=jpeg, frames_offsets=offsets,
                            crop_landmarks=lms * 30 + 32)
                save_clip(clip, clip_path(root, subject, clip.clip_id))
    DatasetManifest(feature_kind="none", feature_dim=3, window=2, fps=30.0, crop_size=SIZE, source="toy",
                    emotions=EMOTIONS).save(root)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from emotalk.cli.main import main

    root = make_rendered_dataset(tmp_path_factory.mktemp("rendered"))
    run = tmp_path_factory.mktemp("run") / "emotion"
    code = main(["train-emotion", "--config", "configs/emotion/tiny.yaml", f"data.root={root}",
                 "data.train_subjects=[S00, S01, S02, S03]", "data.val_subjects=[S04, S05]",
                 f"data.emotions=[{', '.join(EMOTIONS)}]", "model.image_size=32", "train.steps=100",
                 "train.batch_size=32", "train.ckpt_every=100", "train.val_every=100", "train.log_every=50",
                 "train.tensorboard=false", "train.progress=false", f"train.run_dir={run}"])
    assert code == 0
    return root, run


def test_tiny_config_is_an_emotion_task():
    cfg = load_train_config("configs/emotion/tiny.yaml", ["train.steps=5"])
    assert cfg.task == "emotion" and cfg.train.steps == 5 and cfg.data.root.endswith("mead-mini")
    assert cfg.model.image_size % (2 ** cfg.model.blocks) == 0
    with pytest.raises(ConfigError, match="emotion"):
        load_train_config("configs/emotion/tiny.yaml", ["data.emotions=[happy, bored]"])


@pytest.mark.slow
def test_classifier_beats_chance_on_held_out_subjects(trained):
    from emotalk.eval.emotion_classifier import EmotionFrameDataset, frame_accuracy, load_emotion_classifier

    root, run = trained
    clf = load_emotion_classifier(run)  # the run folder resolves to its latest checkpoint
    assert clf.emotions == EMOTIONS and clf.image_size == 32
    held_out = EmotionFrameDataset(root, ["S04", "S05"], clf.emotions, clf.image_size, frames_per_clip=6)
    assert len(held_out) == 2 * len(EMOTIONS) * 2 * 6
    acc = frame_accuracy(clf, held_out)
    assert acc > 0.5, acc  # chance is 0.25
    assert (run / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_emo_acc_metric_uses_the_trained_classifier(trained):
    from emotalk.data.io.clip import list_clips, load_clip
    from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metric

    root, run = trained
    samples = []
    for p in list_clips(root, ["S04", "S05"]):
        c = load_clip(p)
        samples.append(VideoSample(generated=np.stack([c.frame(t) for t in range(c.num_frames)]),
                                   emotion=c.emotion, name=f"{c.subject}/{c.clip_id}"))
    opts = MetricOptions(emotion_classifier=str(run))
    r = compute_metric("emo_acc", samples, opts)
    assert r.details["videos"] == len(samples) == 16
    assert r.value > 50.0, r.details["confusion"]
    maj = compute_metric("emo_acc", samples, MetricOptions(emotion_classifier=str(run), emotion_vote="majority"))
    assert maj.details["vote"] == "majority" and maj.value > 50.0
    # an emotion the classifier does not know is skipped, not counted wrong
    odd = VideoSample(generated=samples[0].generated, emotion="contempt", name="x")
    assert "x" in compute_metric("emo_acc", [odd, samples[0]], opts).details["skipped"]
