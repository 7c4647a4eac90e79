"""Golden outputs: every model emotalk trains (G_L, D_L, G_T, D, the two emotion classifiers), built at the tiny
configs' sizes from a fixed seed and run forward on fixed inputs, reproduces numbers stored here.

Parameters are the models' own initialisation plus seeded noise (see :func:`_jitter`). What this
catches: an unintended change to an architecture, an initialisation, a forward pass or a
default (a refactor that "changes nothing" must leave these numbers alone). What it does not: whether
the numbers are *good* — the training and reference tests cover that.

Each output is summarised by its mean, its standard deviation and four elements at fixed positions of
the flattened tensor. Tolerance: ``rtol = 1e-4, atol = 1e-5`` (float32 on CPU; thread count and BLAS
kernel choice change the last bits, not the fourth significant digit).

An intended change: run ``python tests/test_golden.py`` and paste the printed ``GOLDEN`` over the one
below, saying in the change why the numbers moved.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalk.data.emotions import emotion_vector
from emotalk.models.emotion_classifier import EmotionCNN
from emotalk.models.face_graph import adjacency_matrix, canonical_template
from emotalk.models.landmark_emotion import LandmarkEmotionMLP
from emotalk.models.landmark_generator import GraphDiscriminator, LandmarkGenerator
from emotalk.models.texture_generator import FrameDiscriminator, TextureGenerator, TextureModelConfig

RTOL, ATOL = 1e-4, 1e-5
SEED = 1234

#: G_L / D_L at configs/landmark/tiny.yaml's sizes (D = 29, W = 6: DeepSpeech-shaped input)
LANDMARK = dict(feature_dim=29, window=6, d=64, lstm_hidden=64, lstm_layers=3, gcn_channels=(16, 32, 64),
                emotion_dim=11)
#: G_T / D at configs/texture/tiny.yaml's widths, at 64x64 (the test fixtures' crop size) to stay fast
TEXTURE = dict(image_size=64, width_mult=0.25, emotion_feature_dim=32, heatmap_sigma=1.0, bottleneck_blocks=1,
               image_skip=True, prior_flow=True)


def _inputs_landmark(b: int = 3):
    g = torch.Generator().manual_seed(SEED)
    audio = torch.randn(b, 6, 29, generator=g)
    emotion = torch.from_numpy(np.stack([emotion_vector(e, i) for e, i in
                                         [("happy", 2), ("sad", 3), ("happy:0.5,angry:0.5", 1.5)][:b]]))
    neutral = torch.from_numpy(canonical_template()).expand(b, -1, -1) + 0.01 * torch.randn(b, 68, 2, generator=g)
    return audio, emotion, neutral


def _inputs_texture(b: int = 2):
    g = torch.Generator().manual_seed(SEED)
    s = TEXTURE["image_size"]
    image = torch.rand(1, 3, s, s, generator=g) * 2 - 1
    neutral = torch.from_numpy(canonical_template()).unsqueeze(0) * (s * 0.35) + s / 2
    driven = neutral.expand(b, -1, -1) + 1.5 * torch.randn(b, 68, 2, generator=g)
    emotion = torch.from_numpy(np.stack([emotion_vector("surprised", 3), emotion_vector("neutral", 1)][:b]))
    return image, neutral, driven, emotion


def _jitter(module: torch.nn.Module) -> torch.nn.Module:
    """Add seeded noise (σ = 0.05) to every parameter: some layers start at zero on purpose (G_L's last
    decoder layer, so that X' = X at step 0), which would make their golden output trivially zero."""
    g = torch.Generator().manual_seed(SEED + 1)
    for p in module.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


def run_models() -> dict[str, torch.Tensor]:
    """Name -> output tensor of every golden forward pass (fresh models from :data:`SEED`)."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        torch.manual_seed(SEED)
        g_l = _jitter(LandmarkGenerator(adjacency_matrix(), **LANDMARK))
        audio, emotion, neutral = _inputs_landmark()
        res = g_l(audio, emotion, neutral)
        out["G_L.delta"] = res["delta"]
        out["G_L.landmarks"] = res["landmarks"]
        torch.manual_seed(SEED)
        d_l = _jitter(GraphDiscriminator(adjacency_matrix(), emotion_dim=11, d=64, gcn_channels=(16, 32, 64)))
        out["D_L.score"] = d_l(res["landmarks"], emotion)

        torch.manual_seed(SEED)
        g_t = _jitter(TextureGenerator(TextureModelConfig(**TEXTURE)))
        image, neutral_px, driven_px, emo = _inputs_texture()
        res = g_t(image, neutral_px, driven_px, emo)
        out["G_T.image"] = res["image"]
        out["G_T.flow"] = res["flow"]
        out["G_T.occlusion"] = res["occlusion"]
        torch.manual_seed(SEED)
        d = _jitter(FrameDiscriminator(channels=16, layers=3))
        out["D.logits"] = d(res["image"])

        torch.manual_seed(SEED)
        cnn = _jitter(EmotionCNN(num_classes=8, width=32, blocks=4))
        g = torch.Generator().manual_seed(SEED)
        out["EmotionCNN.logits"] = cnn(torch.rand(2, 1, 64, 64, generator=g))

        torch.manual_seed(SEED)
        mlp = _jitter(LandmarkEmotionMLP(num_classes=8, hidden=128, layers=2))
        out["LandmarkEmotionMLP.logits"] = mlp(0.05 * torch.randn(3, 68, 2, generator=g))
    return out


def fingerprint(t: torch.Tensor) -> list:
    """[shape, mean, std, 4 elements at 0, n/3, 2n/3, n-1 of the flattened tensor], rounded for the file."""
    flat = t.detach().double().flatten()
    n = flat.numel()
    picks = [flat[i].item() for i in (0, n // 3, (2 * n) // 3, n - 1)]
    std = flat.std().item() if n > 1 else 0.0
    return [list(t.shape), *(float(f"{v:.7g}") for v in [flat.mean().item(), std, *picks])]


#: generated by `python tests/test_golden.py` (torch 2.14, CPU)
GOLDEN: dict[str, list] = {
    'G_L.delta': [[3, 68, 2], 0.001349589, 0.0222437, -0.008253244, -0.009953414, -0.008073358, 0.007506394],
    'G_L.landmarks': [[3, 68, 2], 0.0008024004, 0.4204782, -0.7989631, -0.826703, -0.7965256, 0.3487467],
    'D_L.score': [[3, 1], 0.03666933, 0.1030662, 0.09708674, -0.08233662, 0.09525788, 0.09525788],
    'G_T.image': [[2, 3, 64, 64], 0.01257905, 0.3935978, 0.2195887, 0.5367675, 0.08185801, 0.2315381],
    'G_T.flow': [[2, 2, 16, 16], 0.2164666, 0.4102448, 0.2401363, -0.02033841, 0.8354683, -0.0139982],
    'G_T.occlusion': [[2, 1, 16, 16], 0.5384807, 0.1144257, 0.3796549, 0.7355278, 0.5917556, 0.4690253],
    'D.logits': [[2, 1, 6, 6], -0.01548952, 1.611679, -0.383331, 1.438016, -0.8147609, -3.34932],
    'EmotionCNN.logits': [[2, 8], 0.3825021, 1.966951, 2.502411, -2.825765, -0.5587425, -2.110691],
    'LandmarkEmotionMLP.logits': [[3, 8], 0.1525646, 0.4609462, -0.617622, -0.3287099, -0.08809639, 1.179541],
}


@pytest.fixture(scope="module")
def outputs(one_torch_thread):
    return {k: fingerprint(v) for k, v in run_models().items()}


def test_every_model_has_a_golden_entry(outputs):
    assert sorted(outputs) == sorted(GOLDEN)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_forward_pass_matches_the_golden_numbers(outputs, name):
    got, want = outputs[name], GOLDEN[name]
    assert got[0] == want[0], f"{name}: shape {got[0]} != {want[0]}"
    np.testing.assert_allclose(got[1:], want[1:], rtol=RTOL, atol=ATOL,
                               err_msg=f"{name}: [mean, std, x0, x_n/3, x_2n/3, x_n-1] moved")


def test_golden_inputs_are_not_degenerate(outputs):
    """The fingerprints would be weak if an output were constant (e.g. all-zero deltas)."""
    for name, fp in outputs.items():
        assert fp[2] > 1e-6, f"{name} is constant"


if __name__ == "__main__":  # regenerate after an intended change
    torch.set_num_threads(1)
    print("GOLDEN: dict[str, list] = {")
    for k, v in run_models().items():
        print(f"    {k!r}: {fingerprint(v)!r},")
    print("}")
