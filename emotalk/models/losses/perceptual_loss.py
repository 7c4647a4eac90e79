"""Eq. (7): perceptual loss ``L_per = |VGG16(I_E) - VGG16(Î)|`` (§3.2).

VGG16 is torchvision's architecture (``torchvision.models.vgg16().features``), read at relu1_2, relu2_2,
relu3_3 and relu4_3 (``features`` indices 3, 8, 15, 22). Images in [-1, 1] are mapped to [0, 1] and
normalised with the ImageNet mean/std before the network. The loss is the weighted mean over those layers
of the element-wise mean absolute difference of the features (weights ``loss.perceptual_layer_weights``,
default 1 each); the target's features carry no gradient.

This module is the network and the loss only; reading the weights file (and finding it) is I/O and lives
in :func:`emotalk.data.loading.build_perceptual_loss`, which hands the state dict to
:func:`vgg16_features_from_state`. Where the weights come from (``loss.perceptual`` chooses; nothing is
ever downloaded):

``vgg16`` (default, the paper)
    torchvision's ImageNet state dict ``vgg16-397923af.pth`` (the file ``torchvision.models.vgg16(
    weights="IMAGENET1K_V1")`` would fetch), read with ``torch.load(..., weights_only=True)`` from
    ``loss.vgg16_weights`` if set, else from torchvision's cache
    ``<torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth`` if it is already there. Otherwise
    :class:`~emotalk.errors.MissingWeightsError` says which file to put where. Only the ``features.*``
    tensors up to relu4_3 are used (the classifier may be absent from the file).
``vgg16-random``
    A fixed, randomly initialised VGG16 (torchvision's init, seed :data:`RANDOM_VGG_SEED`, independent of
    the run's RNG): a "random-feature perceptual loss". Random conv features still measure multi-scale
    local structure, so it helps over pure L1, but it is clearly weaker than ImageNet features; for
    offline smoke runs and tests only.
``none``
    No perceptual term (λ_per is ignored).

Whatever is chosen, :func:`~emotalk.data.loading.build_perceptual_loss` returns a one-line description
that the task writes to the run log and emits as a warning when it is not the paper's setting.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from emotalk.errors import MissingWeightsError

VGG16_FILE = "vgg16-397923af.pth"
#: name -> index of the ReLU in ``torchvision.models.vgg16().features``
VGG16_LAYERS: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
#: torchvision's VGG16 ("D") ``features`` up to relu4_3: conv widths, "M" = 2×2 max pool
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_VGG_SEED = 0
PERCEPTUAL_CHOICES = ("vgg16", "vgg16-random", "none")


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features[:23]`` (same module indices, so state-dict keys match)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.taps = sorted(VGG16_LAYERS.values())
        assert len(self.features) == self.taps[-1] + 1
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def reset_parameters_like_torchvision(self) -> None:
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def load_torchvision_state_dict(self, state: dict, source: str = "") -> None:
        """Load ``features.*`` from a torchvision VGG16 state dict (extra keys such as the classifier ignored)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise MissingWeightsError(f"{source or 'VGG16 weights'} is not torchvision's VGG16 state dict "
                                      f"(no {missing[0]!r}); supply {VGG16_FILE} via loss.vgg16_weights")
        sub = {k: state[k] for k in own}
        bad = [k for k in own if tuple(sub[k].shape) != tuple(own[k].shape)]
        if bad:
            raise MissingWeightsError(f"{source or 'VGG16 weights'}: {bad[0]} has shape "
                                      f"{tuple(sub[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}; "
                                      f"supply torchvision's {VGG16_FILE} via loss.vgg16_weights")
        self.load_state_dict(sub, strict=True)

    def forward(self, image: Tensor) -> list[Tensor]:
        """``image`` (B, 3, H, W) in [-1, 1] -> features at relu1_2, relu2_2, relu3_3, relu4_3."""
        x = ((image + 1) / 2 - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def vgg16_features_from_state(state: Mapping[str, Tensor], source: str = "") -> VGG16Features:
    """VGG16 features up to relu4_3 with torchvision's (already loaded) VGG16 state dict ``state``."""
    if not isinstance(state, Mapping):
        raise MissingWeightsError(f"{source or 'VGG16 weights'}: not a state dict; supply torchvision's "
                                  f"{VGG16_FILE} via loss.vgg16_weights")
    net = VGG16Features()
    net.load_torchvision_state_dict(dict(state), source)
    return net


def random_vgg16_features(seed: int = RANDOM_VGG_SEED) -> VGG16Features:
    """A fixed random VGG16 (torchvision's initialisation, own seed; the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = VGG16Features()
        net.reset_parameters_like_torchvision()
    return net


class PerceptualLoss(nn.Module):
    """Eq. (7) with a frozen feature extractor. ``forward(pred, target)`` -> scalar."""

    def __init__(self, features: VGG16Features, layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 description: str = ""):
        super().__init__()
        if len(layer_weights) != len(VGG16_LAYERS):
            raise ValueError(f"need {len(VGG16_LAYERS)} layer weights ({', '.join(VGG16_LAYERS)}), "
                             f"got {len(layer_weights)}")
        self.vgg = features.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.description = description

    def train(self, mode: bool = True) -> "PerceptualLoss":  # the extractor always stays in eval mode
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"perceptual loss: shapes {tuple(pred.shape)} and {tuple(target.shape)} differ")
        return self.from_features(pred, self.target_features(target))

    def target_features(self, target: Tensor) -> list[Tensor]:
        """VGG features of a target, without a graph; reusable when the target repeats (one-shot)."""
        with torch.no_grad():  # the target's features need no graph: no activations kept, no backward
            return self.vgg(target)

    def from_features(self, pred: Tensor, target_feats: Sequence[Tensor]) -> Tensor:
        """The loss of ``pred`` against :meth:`target_features` of the target."""
        feats = self.vgg(pred)
        total = pred.new_zeros((), dtype=torch.float32)
        for w, f, t in zip(self.layer_weights, feats, target_feats):
            total = total + w * (f.float() - t.float()).abs().mean()
        return total / sum(self.layer_weights)
