"""G_L / D_L modules (§3.1, appendix "Network Architectures"), eq. (1), eq. (2) and eq. (3)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from emotalk.config import from_dict
from emotalk.data.emotions import EMOTIONS, INTENSITY_LEVELS, emotion_vector
from emotalk.models import landmark_generator as lg
from emotalk.models.face_graph import REGIONS, adjacency_matrix, canonical_template
from emotalk.errors import ConfigError
from emotalk.models.audio_encoder import AudioEncoder
from emotalk.models.emotion_encoder import EmotionEncoder
from emotalk.models.graph_conv import GraphConv, normalized_adjacency
from emotalk.models.graph_pool import (GraphPool, GraphUnpool, face_regions, membership_matrix,
                                       pooled_adjacency)
from emotalk.models.landmark_generator import (GraphDiscriminator, GraphEncoder, LandmarkGenerator,
                                               LandmarkModelConfig)
from emotalk.models.losses.lsgan import lsgan_d_loss, lsgan_g_loss
from emotalk.models.losses.vertex_loss import vertex_loss

A68 = adjacency_matrix()
E = 11  # 8 MEAD emotions + 3 intensity levels
#: Path graph 0 - 1 - 2.
PATH3 = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=np.float32)


def batch(b: int = 3, w: int = 6, d: int = 29) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    audio = torch.randn(b, w, d)
    specs = [("happy", 1), ("sad", 3), ("angry", 2), ("surprised", 1), ("fear", 2)]
    emotion = torch.stack([torch.from_numpy(emotion_vector(*specs[k % len(specs)])) for k in range(b)])
    neutral = torch.from_numpy(canonical_template()).expand(b, -1, -1) + 0.01 * torch.randn(b, 68, 2)
    return audio, emotion, neutral


def generator(**overrides) -> LandmarkGenerator:
    """G_L with its zero-initialised output layer randomised, so that δ depends on the inputs."""
    g = LandmarkGenerator.from_config(LandmarkModelConfig(**overrides), A68)
    nn.init.normal_(g.graph_decoder.node_convs[-1].weight, std=0.5)
    return g


# --- eq. (1) ---------------------------------------------------------------------------------------

def test_normalized_adjacency_matches_hand_computation():
    # A + I = [[1,1,0],[1,1,1],[0,1,1]], degrees (2, 3, 2): entry (i, j) = 1 / sqrt(d_i d_j).
    s6 = 1 / math.sqrt(6)
    expected = torch.tensor([[1 / 2, s6, 0], [s6, 1 / 3, s6], [0, s6, 1 / 2]])
    torch.testing.assert_close(normalized_adjacency(PATH3), expected)


def test_graph_conv_eq1_on_hand_computed_graph():
    conv = GraphConv(PATH3, 2, 1, edge_weights=True, bias=False, activation=True)
    # One ω per nonzero of A + I, row-major: (0,0) (0,1) (1,0) (1,1) (1,2) (2,1) (2,2) — not symmetric.
    assert conv.edge_index.T.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [2, 1], [2, 2]]
    with torch.no_grad():
        conv.edge_weight.copy_(torch.tensor([1.0, 2.0, 3.0, 1.0, 0.5, 1.0, 2.0]))
        conv.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]])  # x W = [1, -2, 2]
    s6 = 1 / math.sqrt(6)
    p = torch.tensor([[1 * 1 / 2, 2 * s6, 0.0],
                      [3 * s6, 1 * 1 / 3, 0.5 * s6],
                      [0.0, 1 * s6, 2 * 1 / 2]])
    torch.testing.assert_close(conv.propagation_matrix().detach(), p)
    pre = [0.5 * 1 + 2 * s6 * -2,                      # node 0: 0.5 - 4/sqrt(6) < 0
           3 * s6 * 1 + (1 / 3) * -2 + 0.5 * s6 * 2,   # node 1
           s6 * -2 + 1.0 * 2]                          # node 2
    expected = torch.tensor([[[v if v > 0 else 0.2 * v] for v in pre]])  # σ = LeakyReLU(0.2)
    assert pre[0] < 0 < pre[1]
    torch.testing.assert_close(conv(x), expected)


def test_edge_weights_are_learnable_and_used():
    conv = GraphConv(A68, 2, 8)
    assert "edge_weight" in dict(conv.named_parameters())
    assert conv.edge_weight.numel() == int(A68.sum()) + 68  # every directed edge + self-loop
    assert torch.equal(conv.edge_weight, torch.ones_like(conv.edge_weight))
    x = torch.randn(2, 68, 2)
    y0 = conv(x)
    y0.pow(2).sum().backward()
    assert conv.edge_weight.grad is not None and conv.edge_weight.grad.abs().sum() > 0
    with torch.no_grad():
        conv.edge_weight[5] += 1.0
    assert not torch.allclose(conv(x), y0)


def test_no_edge_weights_fixes_omega_at_one():
    conv = GraphConv(PATH3, 2, 3, edge_weights=False)
    assert conv.edge_weight is None
    assert "edge_weight" not in dict(conv.named_parameters())
    torch.testing.assert_close(conv.propagation_matrix(), normalized_adjacency(PATH3))
    cfg = dict(use_edge_weights=False)
    for model in (LandmarkGenerator.from_config(LandmarkModelConfig(**cfg), A68),
                  GraphDiscriminator.from_config(LandmarkModelConfig(**cfg), A68)):
        assert not [n for n, _ in model.named_parameters() if "edge_weight" in n]


def test_graph_conv_rejects_bad_adjacency_and_input():
    with pytest.raises(ValueError, match="square"):
        GraphConv(np.ones((3, 4)), 2, 2)
    with pytest.raises(ValueError, match="diagonal"):
        GraphConv(np.eye(3), 2, 2)
    with pytest.raises(ValueError, match=r"\(B, 3, 2\)"):
        GraphConv(PATH3, 2, 2)(torch.zeros(1, 4, 2))


# --- pooling ---------------------------------------------------------------------------------------

def test_region_pooling_and_unpooling():
    regions = face_regions()
    assert len(regions) == 8
    x = torch.randn(2, 68, 5)
    pooled = GraphPool(regions, 68)(x)
    assert pooled.shape == (2, 8, 5)
    torch.testing.assert_close(pooled[:, 3], x[:, list(REGIONS["nose"])].mean(dim=1))
    up = GraphUnpool(regions, 68)(pooled)
    assert up.shape == (2, 68, 5)
    torch.testing.assert_close(up[:, 30], pooled[:, 3])  # landmark 30 is on the nose
    torch.testing.assert_close(GraphPool(regions, 68)(up), pooled)
    face = GraphPool([range(8)], 8)(pooled)
    assert face.shape == (2, 1, 5)
    torch.testing.assert_close(face[:, 0], pooled.mean(dim=1))


def test_pooled_adjacency_and_partition_check():
    a8 = pooled_adjacency(A68, face_regions())
    assert a8.shape == (8, 8)
    assert torch.equal(a8, a8.T) and a8.diagonal().sum() == 0
    names = list(REGIONS)
    assert a8[names.index("outer_lips"), names.index("inner_lips")] == 1
    assert a8[names.index("right_brow"), names.index("outer_lips")] == 0
    with pytest.raises(ValueError, match="node 1 is in 2 groups"):
        membership_matrix([[0, 1], [1, 2]], 3)
    with pytest.raises(ValueError, match="node 2 is in 0 groups"):
        membership_matrix([[0], [1]], 3)


# --- encoders and shapes -----------------------------------------------------------------------------

def test_feature_shapes_match_appendix():
    cfg = LandmarkModelConfig()
    assert (cfg.feature_dim, cfg.window, cfg.d, cfg.lstm_hidden, cfg.lstm_layers) == (29, 6, 128, 256, 3)
    g = LandmarkGenerator.from_config(cfg, A68)
    lstm = g.audio_encoder.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers) == (29, 256, 3)
    convs = [m for m in g.emotion_encoder.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    assert len(convs) == 1 and isinstance(convs[0], nn.Conv1d)  # "a single convolutional layer"
    audio, emotion, neutral = batch(3)
    assert g.audio_encoder(audio).shape == (3, 128)  # f_a
    assert g.emotion_encoder(emotion).shape == (3, 128)  # f_e
    enc = g.graph_encoder(neutral)
    assert enc.f_l.shape == (3, 128)  # f_l
    assert enc.regions.shape == (3, 8, 128)  # pooled graph G^1: 8 x 128
    assert enc.nodes.shape == (3, 68, 128)
    assert len(g.graph_encoder.node_convs) == 3  # 3 GCN layers before the first pooling
    assert g.graph_decoder.fc.in_features == 3 * 128  # [f_a, f_l, f_e]
    for b in (1, 5):
        out = g(*batch(b))
        assert out["landmarks"].shape == out["delta"].shape == (b, 68, 2)


def test_generator_starts_at_neutral_face():
    g = LandmarkGenerator.from_config(LandmarkModelConfig(), A68)
    audio, emotion, neutral = batch(4)
    out = g(audio, emotion, neutral)
    assert out["delta"].abs().max() < 1e-6
    torch.testing.assert_close(out["landmarks"], neutral)
    vertex_loss(out["landmarks"], neutral + 0.1).backward()  # the zero layer still learns
    assert g.graph_decoder.node_convs[-1].weight.grad.abs().sum() > 0


def test_other_feature_dim_and_window():
    g = LandmarkGenerator.from_config(LandmarkModelConfig(feature_dim=13, window=4), A68)
    assert g.audio_encoder.lstm.input_size == 13
    out = g(*batch(2, w=4, d=13))
    assert out["landmarks"].shape == (2, 68, 2)
    with pytest.raises(ValueError, match=r"\(B, 4, 13\)"):
        g(*batch(2))
    with pytest.raises(ValueError, match=r"\(B, 11\)"):
        EmotionEncoder(11)(torch.zeros(2, 9))


def test_audio_and_emotion_change_the_output():
    g = generator()
    audio, emotion, neutral = batch(3)
    base = g(audio, emotion, neutral)["delta"]
    assert not torch.allclose(g(torch.randn_like(audio), emotion, neutral)["delta"], base)
    assert not torch.allclose(g(audio, emotion.flip(0), neutral)["delta"], base)
    # Audio is read in time order; the last step's output sees the whole window.
    enc = AudioEncoder()
    a = torch.randn(2, 6, 29)
    a2 = a.clone()
    a2[:, 0] += 1.0
    assert not torch.allclose(enc(a), enc(a2))


def test_every_edge_weight_receives_gradient():
    g = generator()
    out = g(*batch(2))
    out["delta"].pow(2).sum().backward()
    omegas = {n: p for n, p in g.named_parameters() if n.endswith("edge_weight")}
    assert len(omegas) == 8  # E_G: 3 + 1, D_G: 1 + 3
    for name, p in omegas.items():
        assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name


# --- ablations ---------------------------------------------------------------------------------------

def test_without_graph_encoder_delta_ignores_neutral_face():
    g = generator(use_graph_encoder=False)
    assert g.graph_encoder is None
    assert not [n for n, _ in g.named_parameters() if n.startswith("graph_encoder")]
    assert g.graph_decoder.fc.in_features == 2 * 128  # [f_a, f_e]
    audio, emotion, neutral = batch(3)
    other = neutral + torch.randn_like(neutral)
    out1, out2 = g(audio, emotion, neutral), g(audio, emotion, other)
    assert out1["delta"].abs().max() > 1e-3
    torch.testing.assert_close(out1["delta"], out2["delta"])
    torch.testing.assert_close(out2["landmarks"], other + out2["delta"])
    assert not torch.allclose(g(audio, emotion.flip(0), neutral)["delta"], out1["delta"])


@pytest.mark.parametrize("use_skip", [True, False])
def test_skip_switch_really_adds_or_removes_the_skip_path(use_skip):
    g = generator(use_skip=use_skip)
    assert g.graph_decoder.use_skip is use_skip
    audio, emotion, neutral = batch(3)
    base = g(audio, emotion, neutral)["delta"]
    # Replace E_G's skip features with noise, keeping f_l.
    handle = g.graph_encoder.register_forward_hook(
        lambda m, i, out: out._replace(nodes=torch.randn_like(out.nodes),
                                       regions=torch.randn_like(out.regions)))
    noisy = g(audio, emotion, neutral)["delta"]
    handle.remove()
    assert torch.allclose(noisy, base) is (not use_skip)
    # f_l still carries X in both variants.
    assert not torch.allclose(g(audio, emotion, neutral + 0.3 * torch.randn_like(neutral))["delta"], base)


def test_decoder_refuses_skips_it_was_not_built_for():
    g = generator(use_skip=False)
    _, _, neutral = batch(2)
    enc = g.graph_encoder(neutral)
    with pytest.raises(ValueError, match="without skip"):
        g.graph_decoder(torch.zeros(2, 384), enc)
    with pytest.raises(ValueError, match="has skip"):
        generator().graph_decoder(torch.zeros(2, 384))


@pytest.mark.parametrize("switches", [dict(use_graph_encoder=False), dict(use_skip=False),
                                      dict(use_edge_weights=False),
                                      dict(use_graph_encoder=False, use_edge_weights=False)])
def test_every_ablation_builds_trains_and_runs(switches):
    cfg = LandmarkModelConfig(**switches)
    g = LandmarkGenerator.from_config(cfg, A68)
    d = GraphDiscriminator.from_config(cfg, A68)
    audio, emotion, neutral = batch(2)
    out = g(audio, emotion, neutral)
    loss = vertex_loss(out["landmarks"], neutral + 0.05) + 0.5 * lsgan_g_loss(d(out["landmarks"], emotion))
    loss.backward()
    assert all(p.grad is not None for p in g.graph_decoder.node_convs[-1].parameters())


# --- discriminator -----------------------------------------------------------------------------------

def test_discriminator_scores_graph_conditioned_on_emotion():
    d = GraphDiscriminator.from_config(LandmarkModelConfig(), A68)
    _, emotion, landmarks = batch(4)
    score = d(landmarks, emotion)
    assert score.shape == (4, 1)
    assert not torch.allclose(d(landmarks, emotion.flip(0)), score)
    assert not torch.allclose(d(landmarks + 0.2 * torch.randn_like(landmarks), emotion), score)
    assert isinstance(d.emotion_encoder, EmotionEncoder) and len(d.node_convs) == 3
    with torch.no_grad():
        d.score.bias += 5.0
    assert (d(landmarks, emotion) > 1).all()  # a raw LSGAN score, no sigmoid


def test_graph_encoder_standalone_for_small_widths():
    enc = GraphEncoder(A68, (8, 16))
    out = enc(torch.randn(2, 68, 2))
    assert out.f_l.shape == (2, 16) and out.regions.shape == (2, 8, 16)


# --- config ------------------------------------------------------------------------------------------

def test_model_default_vocabulary_is_the_data_layers():
    """models/ cannot import data/, so G_L's default vocabulary is written out; it must stay MEAD's."""
    assert lg.DEFAULT_EMOTIONS == EMOTIONS and lg.DEFAULT_INTENSITY_LEVELS == INTENSITY_LEVELS
    assert LandmarkModelConfig().emotion_dim == len(EMOTIONS) + INTENSITY_LEVELS == lg.DEFAULT_EMOTION_DIM


def test_config_from_dict_and_validation():
    cfg = from_dict(LandmarkModelConfig, {"gcn_channels": [16, 32, 128], "emotions": ["happy", "sad"],
                                          "intensity_levels": 2, "use_skip": False})
    assert cfg.gcn_channels == (16, 32, 128) and cfg.emotion_dim == 4
    g = LandmarkGenerator.from_config(cfg, A68)
    assert g.emotion_encoder.in_dim == 4
    with pytest.raises(ConfigError, match="gcn_channels"):
        from_dict(LandmarkModelConfig, {"gcn_channels": [32, 64]})
    with pytest.raises(ConfigError, match="emotions"):
        from_dict(LandmarkModelConfig, {"emotions": ["happy", "happy"]})


# --- eq. (2) and eq. (3) -----------------------------------------------------------------------------

def test_lsgan_losses_on_hand_computed_numbers():
    d_real = torch.tensor([[1.0], [0.5], [2.0]])
    d_fake = torch.tensor([[0.0], [1.0], [-1.0]])
    # real: mean(0, 0.25, 1) = 5/12; fake: mean(0, 1, 1) = 2/3  ->  (5/12 + 8/12) / 2 = 13/24
    torch.testing.assert_close(lsgan_d_loss(d_real, d_fake), torch.tensor(13 / 24))
    # mean(1, 0, 4) / 2 = 5/6
    torch.testing.assert_close(lsgan_g_loss(d_fake), torch.tensor(5 / 6))
    assert lsgan_d_loss(torch.ones(4, 1), torch.zeros(4, 1)) == 0
    assert lsgan_g_loss(torch.ones(4, 1)) == 0


def test_vertex_loss_is_squared_l2_per_graph_averaged_over_batch():
    target = torch.zeros(2, 3, 2)
    pred = torch.zeros(2, 3, 2)
    pred[0, 0] = torch.tensor([3.0, 4.0])  # graph 0: 25
    pred[1, 2] = torch.tensor([1.0, 0.0])  # graph 1: 1
    pred[1, 1] = torch.tensor([0.0, 2.0])  #          + 4
    torch.testing.assert_close(vertex_loss(pred, target), torch.tensor((25 + 5) / 2))
    with pytest.raises(ValueError, match="same shape"):
        vertex_loss(pred, target[:1])
