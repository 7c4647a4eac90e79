"""Emotion encoder E_E (§3.1; appendix "Network Architectures").

"The Emotion Encoder E_E consists of a single convolutional layer to map emotion vector input e
(concatenation of one-hot vectors for emotion type and intensity) to 128-dimensional encoder feature f_e."

The control vector (``emotalk.data.emotions.emotion_vector``: ``[emotion weights | intensity weights]``)
is read as a one-channel sequence of length ``E + I`` and convolved with 128 kernels that each span the
whole vector (``Conv1d(1, 128, kernel_size=E + I)``, output length 1), followed by σ = LeakyReLU(0.2).
The module is standalone because the texture generator G_T (§3.2) builds f_e "in a similar manner".
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.models.graph_conv import LEAKY_SLOPE


class EmotionEncoder(nn.Module):
    """``(B, E + I)`` emotion control vector -> ``(B, out_dim)`` feature f_e."""

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.conv = nn.Conv1d(1, out_dim, kernel_size=in_dim)

    def forward(self, emotion: Tensor) -> Tensor:
        if emotion.dim() != 2 or emotion.shape[1] != self.in_dim:
            raise ValueError(f"EmotionEncoder expects a (B, {self.in_dim}) emotion vector, "
                             f"got {tuple(emotion.shape)}")
        return F.leaky_relu(self.conv(emotion.unsqueeze(1)).squeeze(-1), LEAKY_SLOPE)
