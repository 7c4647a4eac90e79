"""Hierarchical graph pooling / unpooling over facial regions (§3.1, appendix "Hierarchical Encoding").

The 68-landmark graph G is divided into K = 8 vertex subsets (``emotalk.models.face_graph.REGIONS``);
pooling each subset gives the region graph G^1 (8 nodes), pooling all of G^1 gives G^2 (one node for the
whole face). The graph decoder goes back up with unpooling.

Choices the paper leaves open, made here:

* **Pooling is the mean** over a group's member nodes (not the max): the pooled feature is a smooth
  function of every member, so every landmark receives gradient, and regions of very different size
  (17 jaw points vs. 5 brow points) are put on the same scale.
* **Unpooling broadcasts** a group's feature back to each of its member nodes (the transpose of the
  0/1 membership matrix), so pooling after unpooling is the identity.
* A coarse graph's adjacency (:func:`pooled_adjacency`) links two groups when any edge of the fine
  graph joins their members.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from emotalk.models.face_graph import REGIONS

Groups = Sequence[Sequence[int]]


def face_regions() -> tuple[tuple[int, ...], ...]:
    """The K = 8 facial regions as node-index groups, in ``REGIONS`` order."""
    return tuple(REGIONS.values())


def membership_matrix(groups: Groups, num_nodes: int) -> Tensor:
    """``(K, N)`` 0/1 matrix, row k marking the members of group k; groups must partition ``0..N-1``."""
    m = torch.zeros(len(groups), num_nodes)
    for k, members in enumerate(groups):
        if len(members) == 0:
            raise ValueError(f"group {k} has no nodes")
        idx = torch.as_tensor(list(members), dtype=torch.long)
        if bool(((idx < 0) | (idx >= num_nodes)).any()):
            raise ValueError(f"group {k} has a node index outside 0..{num_nodes - 1}")
        m[k, idx] = 1.0
    counts = m.sum(dim=0)
    if bool(counts.ne(1).any()):
        bad = int(torch.nonzero(counts.ne(1))[0])
        raise ValueError(f"groups must partition the {num_nodes} nodes; node {bad} is in "
                         f"{int(counts[bad])} groups")
    return m


def pooled_adjacency(adjacency: Tensor | np.ndarray, groups: Groups) -> Tensor:
    """``(K, K)`` 0/1 adjacency of the pooled graph: groups k ≠ l are linked if any fine edge joins them."""
    a = torch.as_tensor(adjacency).detach().to(dtype=torch.float32, device="cpu")
    m = membership_matrix(groups, a.shape[0])
    coarse = (m @ a @ m.T).gt(0).float()
    coarse.fill_diagonal_(0.0)
    return coarse


class GraphPool(nn.Module):
    """Mean-pool node features over groups: ``(B, N, C) -> (B, K, C)``."""

    def __init__(self, groups: Groups, num_nodes: int) -> None:
        super().__init__()
        m = membership_matrix(groups, num_nodes)
        self.register_buffer("pool_matrix", m / m.sum(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(self.pool_matrix, x)


class GraphUnpool(nn.Module):
    """Broadcast each group's feature back to its member nodes: ``(B, K, C) -> (B, N, C)``."""

    def __init__(self, groups: Groups, num_nodes: int) -> None:
        super().__init__()
        self.register_buffer("unpool_matrix", membership_matrix(groups, num_nodes).T.contiguous())

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(self.unpool_matrix, x)


def whole_graph(num_nodes: int) -> tuple[tuple[int, ...]]:
    """A single group holding every node (pooling to the one-node graph G^2)."""
    return (tuple(range(num_nodes)),)
