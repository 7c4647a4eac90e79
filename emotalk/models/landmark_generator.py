"""Speech and emotion driven landmark generation G_L and its graph discriminator D_L (§3.1, Fig. 2,
appendix "Network Architectures").

``G_L(S, e, X) = X + δ``: the audio encoder E_A gives f_a, the emotion encoder E_E gives f_e, the graph
encoder E_G encodes the neutral landmark graph X into f_l, and the graph decoder D_G maps
``[f_a, f_l, f_e]`` back to per-landmark displacements δ (all features are d = 128 wide).

Layer widths (the paper fixes only d = 128 and the 8 × 128 pooled graph; the rest is chosen here and set
by ``LandmarkModelConfig.gcn_channels``, default ``(32, 64, 128)``):

* E_G: eq. (1) GCN on the 68-node graph ``2 → 32 → 64 → 128``; mean-pool to the K = 8 region graph G^1
  (8 × 128); GCN ``128 → 128`` on G^1; mean-pool to the one-node graph G^2: f_l (128).
* D_G: linear ``3d → d`` on the single node (eq. (1) on a one-node graph is ``σ(f W)``); unpool to 8
  nodes, add E_G's 8 × 128 features (skip); GCN ``128 → 128``; unpool to 68 nodes, add E_G's 68 × 128
  features (skip); GCN ``128 → 64 → 32 → 2`` (mirror of E_G), the last layer linear and zero-initialised
  so that δ = 0 and X' = X when training starts.
* Unpooling broadcasts a coarse node to its members, which would give every member the same feature;
  D_G therefore adds a learned per-node embedding after each unpooling so that its shared-weight GCN
  layers can move each landmark differently even when no skip features are present (the "w/o skip" and
  "w/o graph encoder" ablations). The skips are the appendix's "graph convolution intermediate features
  in E_G added via skip connections during upsampling": the output of E_G's last GCN at each resolution.
* D_L: E_G's layout on the (real or generated) graph; at the pooled 8-node level f_e of D_L's own emotion
  encoder is concatenated to every region node (conditioning on e), then GCN ``2d → d``, pooling to one
  node and a linear realism score — no sigmoid, for the LSGAN losses of eq. (3).

Table 3 ablations are switches of :class:`LandmarkModelConfig` (the fourth, "w/o L_gan", is λ_gan = 0 in
the training config): ``use_graph_encoder=False`` drops E_G entirely — D_G decodes ``[f_a, f_e]`` and X
enters only through ``X' = X + δ``, so δ does not depend on X; ``use_skip=False`` builds D_G without any
skip path (it has no effect without E_G); ``use_edge_weights=False`` fixes ω = 1 in every eq. (1) layer of
G_L and D_L.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.errors import ConfigError
from emotalk.models.audio_encoder import AudioEncoder
from emotalk.models.emotion_encoder import EmotionEncoder
from emotalk.models.graph_conv import LEAKY_SLOPE, GraphConv, as_adjacency
from emotalk.models.graph_pool import (GraphPool, GraphUnpool, Groups, face_regions, pooled_adjacency,
                                       whole_graph)

Adjacency = Tensor | np.ndarray
#: Default control-vector vocabulary: MEAD's 8 emotions and 3 intensity levels, written out here because
#: models sit below the data layer (they are ``emotalk.data.emotions.EMOTIONS`` / ``INTENSITY_LEVELS``; a
#: test keeps them equal). Configs name their own vocabulary.
DEFAULT_EMOTIONS: tuple[str, ...] = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad",
                                     "surprised")
DEFAULT_INTENSITY_LEVELS = 3
#: Length of the default control vector (8 MEAD emotions + 3 intensity levels).
DEFAULT_EMOTION_DIM = len(DEFAULT_EMOTIONS) + DEFAULT_INTENSITY_LEVELS


@dataclass
class LandmarkModelConfig:
    """Architecture of G_L and D_L; defaults are the paper's settings (§3.1, appendix)."""

    #: D, audio feature size per frame (29 DeepSpeech logits); must match the data.
    feature_dim: int = 29
    #: W, audio feature frames per video frame.
    window: int = 6
    #: d, width of f_a, f_e, f_l and of the pooled graphs.
    d: int = 128
    lstm_hidden: int = 256
    lstm_layers: int = 3
    #: Widths of E_G's GCN layers on the landmark graph; the last one must equal d.
    gcn_channels: tuple[int, ...] = (32, 64, 128)
    #: Emotion vocabulary of the control vector (``emotalk.data.emotions``).
    emotions: list[str] = field(default_factory=lambda: list(DEFAULT_EMOTIONS))
    intensity_levels: int = DEFAULT_INTENSITY_LEVELS
    #: Table 3 ablation switches.
    use_graph_encoder: bool = True
    use_skip: bool = True
    use_edge_weights: bool = True

    @property
    def emotion_dim(self) -> int:
        """Length of the emotion control vector ``[emotion weights | intensity weights]``."""
        return len(self.emotions) + self.intensity_levels

    def validate(self) -> None:
        for name in ("feature_dim", "window", "d", "lstm_hidden", "lstm_layers", "intensity_levels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {getattr(self, name)}")
        if not self.gcn_channels or min(self.gcn_channels) < 1:
            raise ConfigError(f"model.gcn_channels must be positive widths, got {list(self.gcn_channels)}")
        if self.gcn_channels[-1] != self.d:
            raise ConfigError(f"model.gcn_channels must end with d = {self.d} (the pooled graph is 8 × d), "
                              f"got {list(self.gcn_channels)}")
        if not self.emotions or len(set(self.emotions)) != len(self.emotions):
            raise ConfigError(f"model.emotions must be a non-empty list without repeats, got {self.emotions}")


def _gcn_stack(adjacency: Adjacency, channels: Sequence[int], edge_weights: bool,
               last_activation: bool = True) -> nn.ModuleList:
    """Eq. (1) layers ``channels[0] → channels[1] → …``; all with σ except possibly the last."""
    n = len(channels) - 1
    return nn.ModuleList(
        GraphConv(adjacency, c_in, c_out, edge_weights=edge_weights,
                  activation=last_activation or i < n - 1)
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])))


class GraphEncoding(NamedTuple):
    """Output of E_G: f_l and the intermediate features that D_G receives through skip connections."""

    #: (B, d) feature of the one-node graph G^2.
    f_l: Tensor
    #: (B, N, d) output of the last GCN on the landmark graph (before pooling to regions).
    nodes: Tensor
    #: (B, K, d) output of the GCN on the region graph G^1 (before pooling to one node).
    regions: Tensor


class GraphEncoder(nn.Module):
    """E_G: ``(B, N, 2)`` neutral landmarks -> :class:`GraphEncoding` (hierarchical local-to-global GCN).

    Args:
        adjacency: ``(N, N)`` landmark-graph adjacency ``A`` (Delaunay edges, no self-loops).
        channels: widths of the eq. (1) layers on the landmark graph; the last one is d.
        edge_weights: learn ω in every eq. (1) layer (False: Table 3 "w/o edge weights").
        regions: the K node groups to pool over (default: the 8 facial regions).
        in_channels: per-node input features (2 for x, y).
    """

    def __init__(self, adjacency: Adjacency, channels: Sequence[int] = (32, 64, 128), *,
                 edge_weights: bool = True, regions: Groups | None = None, in_channels: int = 2) -> None:
        super().__init__()
        a = as_adjacency(adjacency)
        regions = face_regions() if regions is None else regions
        d = channels[-1]
        self.node_convs = _gcn_stack(a, [in_channels, *channels], edge_weights)
        self.pool_regions = GraphPool(regions, a.shape[0])
        self.region_conv = GraphConv(pooled_adjacency(a, regions), d, d, edge_weights=edge_weights)
        self.pool_face = GraphPool(whole_graph(len(regions)), len(regions))

    def forward(self, x: Tensor) -> GraphEncoding:
        h = x
        for conv in self.node_convs:
            h = conv(h)
        regions = self.region_conv(self.pool_regions(h))
        return GraphEncoding(f_l=self.pool_face(regions).squeeze(1), nodes=h, regions=regions)


class GraphDecoder(nn.Module):
    """D_G: ``(B, code_dim)`` code (+ E_G skips) -> ``(B, N, out_channels)`` displacements δ.

    Args:
        adjacency: ``(N, N)`` landmark-graph adjacency.
        code_dim: width of the concatenated input (3d for ``[f_a, f_l, f_e]``, 2d without E_G).
        channels: E_G's GCN widths; D_G mirrors them (``d → … → channels[0] → out_channels``).
        use_skip: add E_G's features at the 8- and 68-node levels; when False there is no skip path and
            ``forward`` refuses skip features.
    """

    def __init__(self, adjacency: Adjacency, code_dim: int, channels: Sequence[int] = (32, 64, 128), *,
                 edge_weights: bool = True, use_skip: bool = True, regions: Groups | None = None,
                 out_channels: int = 2) -> None:
        super().__init__()
        a = as_adjacency(adjacency)
        regions = face_regions() if regions is None else regions
        d = channels[-1]
        self.use_skip = use_skip
        self.fc = nn.Linear(code_dim, d)
        self.unpool_face = GraphUnpool(whole_graph(len(regions)), len(regions))
        self.region_embedding = nn.Parameter(torch.empty(len(regions), d))
        self.region_conv = GraphConv(pooled_adjacency(a, regions), d, d, edge_weights=edge_weights)
        self.unpool_regions = GraphUnpool(regions, a.shape[0])
        self.node_embedding = nn.Parameter(torch.empty(a.shape[0], d))
        self.node_convs = _gcn_stack(a, [*reversed(channels), out_channels], edge_weights,
                                     last_activation=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small random node embeddings; zero last layer so that δ = 0 at initialisation."""
        nn.init.normal_(self.region_embedding, std=0.02)
        nn.init.normal_(self.node_embedding, std=0.02)
        last = self.node_convs[-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)

    def forward(self, code: Tensor, skips: GraphEncoding | None = None) -> Tensor:
        if self.use_skip and skips is None:
            raise ValueError("this GraphDecoder has skip connections; pass the GraphEncoder's output")
        if not self.use_skip and skips is not None:
            raise ValueError("this GraphDecoder was built without skip connections (use_skip=False)")
        h = F.leaky_relu(self.fc(code), LEAKY_SLOPE).unsqueeze(1)
        h = self.unpool_face(h) + self.region_embedding
        if skips is not None:
            h = h + skips.regions
        h = self.unpool_regions(self.region_conv(h)) + self.node_embedding
        if skips is not None:
            h = h + skips.nodes
        for conv in self.node_convs:
            h = conv(h)
        return h


class LandmarkGenerator(nn.Module):
    """G_L: ``forward(audio (B, W, D), emotion (B, E + I), neutral X (B, N, 2))`` ->
    ``{"landmarks": X' = X + δ (B, N, 2), "delta": δ (B, N, 2)}``.

    The keyword arguments mirror :class:`LandmarkModelConfig` (see :meth:`from_config`); ``emotion_dim``
    is the control-vector length E + I and ``regions`` the K node groups (default: the 8 facial regions).
    """

    def __init__(self, adjacency: Adjacency, *, feature_dim: int = 29, window: int = 6, d: int = 128,
                 lstm_hidden: int = 256, lstm_layers: int = 3,
                 gcn_channels: Sequence[int] = (32, 64, 128), emotion_dim: int = DEFAULT_EMOTION_DIM,
                 use_graph_encoder: bool = True, use_skip: bool = True, use_edge_weights: bool = True,
                 regions: Groups | None = None) -> None:
        super().__init__()
        if gcn_channels[-1] != d:
            raise ValueError(f"gcn_channels must end with d = {d}, got {list(gcn_channels)}")
        a = as_adjacency(adjacency)
        self.num_nodes = a.shape[0]
        self.audio_encoder = AudioEncoder(feature_dim, window, lstm_hidden, lstm_layers, d)
        self.emotion_encoder = EmotionEncoder(emotion_dim, d)
        self.graph_encoder: GraphEncoder | None = (
            GraphEncoder(a, gcn_channels, edge_weights=use_edge_weights, regions=regions)
            if use_graph_encoder else None)
        self.use_skip = use_skip and use_graph_encoder
        self.graph_decoder = GraphDecoder(a, (3 if use_graph_encoder else 2) * d, gcn_channels,
                                          edge_weights=use_edge_weights, use_skip=self.use_skip,
                                          regions=regions)

    @classmethod
    def from_config(cls, cfg: LandmarkModelConfig, adjacency: Adjacency,
                    regions: Groups | None = None) -> LandmarkGenerator:
        """Build G_L from the config's architecture and ablation switches."""
        return cls(adjacency, feature_dim=cfg.feature_dim, window=cfg.window, d=cfg.d,
                   lstm_hidden=cfg.lstm_hidden, lstm_layers=cfg.lstm_layers,
                   gcn_channels=tuple(cfg.gcn_channels), emotion_dim=cfg.emotion_dim,
                   use_graph_encoder=cfg.use_graph_encoder, use_skip=cfg.use_skip,
                   use_edge_weights=cfg.use_edge_weights, regions=regions)

    def forward(self, audio: Tensor, emotion: Tensor, neutral: Tensor) -> dict[str, Tensor]:
        if neutral.dim() != 3 or neutral.shape[1:] != (self.num_nodes, 2):
            raise ValueError(f"neutral landmarks must be (B, {self.num_nodes}, 2), "
                             f"got {tuple(neutral.shape)}")
        f_a = self.audio_encoder(audio)
        f_e = self.emotion_encoder(emotion)
        if self.graph_encoder is None:
            delta = self.graph_decoder(torch.cat([f_a, f_e], dim=1))
        else:
            enc = self.graph_encoder(neutral)
            delta = self.graph_decoder(torch.cat([f_a, enc.f_l, f_e], dim=1),
                                       enc if self.use_skip else None)
        return {"landmarks": neutral + delta, "delta": delta}


class GraphDiscriminator(nn.Module):
    """D_L: ``forward(landmarks (B, N, 2), emotion (B, E + I))`` -> realism score ``(B, 1)`` (no sigmoid).

    Conditioned on the emotion through its own :class:`EmotionEncoder`, whose f_e joins every node of the
    pooled region graph. Arguments as for :class:`LandmarkGenerator`.
    """

    def __init__(self, adjacency: Adjacency, *, emotion_dim: int = DEFAULT_EMOTION_DIM, d: int = 128,
                 gcn_channels: Sequence[int] = (32, 64, 128), use_edge_weights: bool = True,
                 regions: Groups | None = None) -> None:
        super().__init__()
        if gcn_channels[-1] != d:
            raise ValueError(f"gcn_channels must end with d = {d}, got {list(gcn_channels)}")
        a = as_adjacency(adjacency)
        regions = face_regions() if regions is None else regions
        self.node_convs = _gcn_stack(a, [2, *gcn_channels], use_edge_weights)
        self.pool_regions = GraphPool(regions, a.shape[0])
        self.emotion_encoder = EmotionEncoder(emotion_dim, d)
        self.region_conv = GraphConv(pooled_adjacency(a, regions), 2 * d, d, edge_weights=use_edge_weights)
        self.pool_face = GraphPool(whole_graph(len(regions)), len(regions))
        self.score = nn.Linear(d, 1)

    @classmethod
    def from_config(cls, cfg: LandmarkModelConfig, adjacency: Adjacency,
                    regions: Groups | None = None) -> GraphDiscriminator:
        """Build D_L from the config (``use_edge_weights`` applies to D_L's eq. (1) layers too)."""
        return cls(adjacency, emotion_dim=cfg.emotion_dim, d=cfg.d, gcn_channels=tuple(cfg.gcn_channels),
                   use_edge_weights=cfg.use_edge_weights, regions=regions)

    def forward(self, landmarks: Tensor, emotion: Tensor) -> Tensor:
        h = landmarks
        for conv in self.node_convs:
            h = conv(h)
        h = self.pool_regions(h)
        f_e = self.emotion_encoder(emotion).unsqueeze(1).expand(-1, h.shape[1], -1)
        h = self.region_conv(torch.cat([h, f_e], dim=2))
        return self.score(self.pool_face(h).squeeze(1))
