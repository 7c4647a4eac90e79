"""Eq. (3): least-squares GAN losses (Mao et al., 2017) for the graph discriminator D_L and G_L (§3.1).

.. math::

    L_{gan}(D_L) = \\big(E[(D_L(\\hat G, e) - 1)^2] + E[D_L(G', e)^2]\\big) / 2, \\qquad
    L_{gan}(G_L) = E[(D_L(G', e) - 1)^2] / 2

The expectations are means over every score in the batch. Scores are raw discriminator outputs (no
sigmoid). For the discriminator step, pass ``D_L(G'.detach(), e)`` so that no gradient reaches G_L.
"""
from __future__ import annotations

from torch import Tensor


def lsgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Discriminator loss: real scores pulled to 1, fake scores to 0."""
    return ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean()) / 2


def lsgan_g_loss(d_fake: Tensor) -> Tensor:
    """Generator loss: fake scores pulled to 1."""
    return (d_fake - 1).pow(2).mean() / 2
