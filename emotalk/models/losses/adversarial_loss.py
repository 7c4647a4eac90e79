"""Eq. (8): the frame-discriminator GAN loss (§3.2), in its standard non-saturating form.

.. math::

    L_{adv} = \\min_G \\max_D \\; E_{\\hat I}[\\log D(\\hat I)] + E_{I_E}[\\log(1 - D(I_E))]

``D`` returns *logits* (a PatchGAN map, one logit per patch); ``D(x) = sigmoid(logit)``. The expectations
are means over every patch logit in the batch.

- Discriminator: maximising the objective = minimising the binary cross-entropy with real patches
  labelled 1 and generated patches labelled 0:
  ``L_D = BCE(D(Î), 1) + BCE(D(I_E), 0) = -log D(Î) - log(1 - D(I_E))``. Pass ``D(I_E.detach())``.
- Generator: instead of minimising ``log(1 - D(I_E))`` (which saturates when D confidently rejects the
  fakes early in training), the usual non-saturating substitute of Goodfellow et al. (2014) is used:
  ``L_G = BCE(D(I_E), 1) = -log D(I_E)``. It has the same fixed point and much stronger early gradients.

Both use ``binary_cross_entropy_with_logits`` (numerically stable; float32 even under AMP).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss: ``-log D(real) - log(1 - D(fake))`` (means over patches)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss ``-log D(fake)`` (mean over patches)."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
