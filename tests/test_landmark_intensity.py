"""G_L's separation from its neutral-emotion output on fixed speech, per intensity level (issue 12 §3):
known answers with a stand-in generator whose emotion displacement per level is chosen."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalk.data.emotions import emotion_vector
from emotalk.models.face_graph import MOUTH
from emotalk.train.landmark_intensity import control_report, control_separation

EMOTIONS = ["neutral", "happy", "contempt"]


class _Stand(torch.nn.Module):
    """landmarks = X + speech (from the audio, on every point) + the level's weight x 1 on the mouth's x (for
    every non-neutral emotion); ``weights`` per control level."""

    def __init__(self, weights):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(weights, dtype=torch.float32), requires_grad=False)

    def forward(self, audio, emotion, neutral):
        e = len(EMOTIONS)
        speech = audio[:, 0, 0][:, None, None] * torch.ones_like(neutral)
        expressive = emotion[:, 1:e].sum(dim=1)  # 0 for neutral
        k = (emotion[:, e:] * self.w).sum(dim=1) * expressive
        out = neutral + speech
        out[:, list(MOUTH), 0] += k[:, None]
        return {"landmarks": out}


def _frames(emotions_levels, n=8):
    audio, emo, neutral, index = [], [], [], []
    rng = np.random.default_rng(0)
    for cid, (e, lv) in enumerate(emotions_levels):
        audio.append(rng.normal(0, 0.05, (n, 2, 3)))  # different "speech" per clip
        emo.append(np.repeat(emotion_vector(e, lv, EMOTIONS, 3)[None], n, 0))
        neutral.append(np.zeros((n, 68, 2)))
        index.append(np.stack([np.full(n, cid), np.arange(n)], 1))
    t = lambda a: torch.from_numpy(np.concatenate(a).astype(np.float32))  # noqa: E731
    return t(audio), t(emo), t(neutral), np.concatenate(index)


def test_separation_cancels_speech_and_reads_the_level():
    audio, emo, neutral, index = _frames([("happy", 1), ("contempt", 3), ("neutral", 1)])
    sep = control_separation(_Stand([0.01, 0.02, 0.04]), audio, emo, neutral, index, EMOTIONS, 3, frame_stride=2)
    share = len(MOUTH) / 42  # the mouth's 20 of the 42 expression points move
    assert set(sep) == {"happy", "contempt"}  # neutral clips are the reference, not scored
    for e in sep:
        np.testing.assert_allclose(list(sep[e].values()), [0.01 * share, 0.02 * share, 0.04 * share], rtol=1e-5)
    assert control_report(sep)["expr_monotonic_control"] == 1.0
    assert control_report(sep)["expr_sep/contempt/2"] == pytest.approx(0.02 * share, rel=1e-5)


def test_a_level_that_moves_less_is_not_monotonic():
    audio, emo, neutral, index = _frames([("happy", 2), ("contempt", 1)])
    sep = control_separation(_Stand([0.02, 0.01, 0.03]), audio, emo, neutral, index, EMOTIONS, 3)
    assert control_report(sep)["expr_monotonic_control"] == 0.0
    assert control_report({})["expr_monotonic_control"] != control_report({})["expr_monotonic_control"]  # NaN
