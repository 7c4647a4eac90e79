"""Eq. (1) of the paper: graph convolution with learnable edge weights (§3.1).

.. math::

    f_{k+1} = \\sigma\\big(\\tilde D^{-1/2}\\, \\omega \\odot (A + I)\\, \\tilde D^{-1/2} f_k W_k\\big),
    \\qquad \\tilde D_{ii} = \\textstyle\\sum_j (A + I)_{ij}

Kipf & Welling's spectral GCN propagation rule, with ST-GCN's (Yan et al., 2018) learnable edge
importance ``ω`` applied element-wise to ``A + I``.

Choices the paper leaves open, made here:

* ``ω`` has **one independent scalar per nonzero entry of A + I** (every directed edge and every self-loop),
  initialised to 1 and *not* tied symmetrically, so node i may weigh neighbour j differently from how j
  weighs i. This is exactly ST-GCN's full learnable mask restricted to the entries it can affect (a mask
  entry where ``A + I`` is zero multiplies zero and never receives gradient, so it is not stored).
* ``D̃`` is the degree of the *unweighted* ``A + I``, as written in eq. (1); it is a fixed buffer.
* ``ω`` is placed between the two ``D̃^{-1/2}`` factors, so the propagation matrix is
  ``P = D̃^{-1/2} (ω ⊙ (A + I)) D̃^{-1/2}``, which equals Kipf & Welling's matrix when ``ω = 1``.
* ``W_k`` is followed by an optional bias (Kipf & Welling's reference implementation has one; eq. (1)
  omits it — pass ``bias=False`` for the literal equation). ``σ`` is LeakyReLU(0.2) by default, or none
  (``activation=False``) for output layers that regress coordinates.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Negative slope of the LeakyReLU used as σ throughout the graph networks.
LEAKY_SLOPE = 0.2


def as_adjacency(adjacency: Tensor | np.ndarray) -> Tensor:
    """Check and convert a square adjacency matrix ``A`` (no self-loops expected) to a float32 tensor."""
    a = torch.as_tensor(adjacency).detach().to(dtype=torch.float32, device="cpu")
    if a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency must be a square (N, N) matrix, got shape {tuple(a.shape)}")
    if bool((a < 0).any()):
        raise ValueError("adjacency must be non-negative")
    if bool(a.diagonal().ne(0).any()):
        raise ValueError("adjacency must have a zero diagonal; eq. (1) adds the self-loops (A + I) itself")
    return a


def normalized_adjacency(adjacency: Tensor | np.ndarray) -> Tensor:
    """Eq. (1)'s propagation matrix at ω = 1: ``D̃^{-1/2} (A + I) D̃^{-1/2}``, D̃_ii = Σ_j (A + I)_ij."""
    a = as_adjacency(adjacency)
    a_hat = a + torch.eye(a.shape[0])
    d_inv_sqrt = a_hat.sum(dim=1).rsqrt()
    return d_inv_sqrt[:, None] * a_hat * d_inv_sqrt[None, :]


class GraphConv(nn.Module):
    """One GCN layer of eq. (1): ``(B, N, C_in) -> (B, N, C_out)``.

    Args:
        adjacency: ``(N, N)`` adjacency ``A`` without self-loops (stored as buffers, never read from disk).
        in_channels, out_channels: feature widths ``C_in`` and ``C_out`` (``W_k`` is ``C_in × C_out``).
        edge_weights: learn ``ω`` (parameter ``edge_weight``, one entry per nonzero of ``A + I``); when
            False (Table 3 ablation "w/o edge weights") ``ω`` is fixed at 1 and no parameter exists.
        bias: add a learnable bias after propagation.
        activation: apply ``σ`` = LeakyReLU(0.2); False for a linear output layer.
    """

    def __init__(self, adjacency: Tensor | np.ndarray, in_channels: int, out_channels: int, *,
                 edge_weights: bool = True, bias: bool = True, activation: bool = True) -> None:
        super().__init__()
        norm = normalized_adjacency(adjacency)
        rows, cols = torch.nonzero(norm, as_tuple=True)
        self.num_nodes = norm.shape[0]
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.register_buffer("edge_index", torch.stack([rows, cols]))
        self.register_buffer("edge_norm", norm[rows, cols])
        self.edge_weight: nn.Parameter | None = (
            nn.Parameter(torch.ones(rows.numel())) if edge_weights else None)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform ``W`` (as Kipf & Welling), zero bias, ``ω = 1``."""
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.edge_weight is not None:
            nn.init.ones_(self.edge_weight)

    def propagation_matrix(self) -> Tensor:
        """The ``(N, N)`` matrix ``D̃^{-1/2} (ω ⊙ (A + I)) D̃^{-1/2}`` with the current ``ω``."""
        values = self.edge_norm if self.edge_weight is None else self.edge_norm * self.edge_weight
        p = values.new_zeros(self.num_nodes, self.num_nodes)
        return p.index_put((self.edge_index[0], self.edge_index[1]), values)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.num_nodes or x.shape[2] != self.in_channels:
            raise ValueError(f"GraphConv expects (B, {self.num_nodes}, {self.in_channels}), "
                             f"got {tuple(x.shape)}")
        out = torch.matmul(self.propagation_matrix(), x @ self.weight)
        if self.bias is not None:
            out = out + self.bias
        return F.leaky_relu(out, LEAKY_SLOPE) if self.activation else out

    def extra_repr(self) -> str:
        return (f"nodes={self.num_nodes}, {self.in_channels} -> {self.out_channels}, "
                f"edge_weights={self.edge_weight is not None}, bias={self.bias is not None}, "
                f"activation={self.activation}")
