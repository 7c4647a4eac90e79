"""Audio encoder E_A (§3.1; appendix "Network Architectures").

"E_A consists of 3 LSTM layers which encode input size 29 to a hidden size 256. The LSTM network output is
mapped to a feature f_a of size 128 for each a_t", where ``a_t ∈ R^{W×D}`` is the window of W = 6 audio
feature frames centred at video frame t (D = 29 for DeepSpeech logits; other feature kinds give other D,
so D is a constructor argument taken from the data).

The window is read in time order by a unidirectional LSTM and the output at the **last** time step — the
only one that has seen the whole window, including the frames after the centre — is mapped by one linear
layer (no activation) to f_a.
"""
from __future__ import annotations

from torch import Tensor, nn


class AudioEncoder(nn.Module):
    """``(B, W, D)`` audio feature window -> ``(B, out_dim)`` feature f_a."""

    def __init__(self, feature_dim: int = 29, window: int = 6, hidden: int = 256, layers: int = 3,
                 out_dim: int = 128) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.window = window
        self.lstm = nn.LSTM(feature_dim, hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, audio: Tensor) -> Tensor:
        if audio.dim() != 3 or audio.shape[1:] != (self.window, self.feature_dim):
            raise ValueError(f"AudioEncoder expects (B, {self.window}, {self.feature_dim}) feature windows, "
                             f"got {tuple(audio.shape)}")
        out, _ = self.lstm(audio)
        return self.proj(out[:, -1])
