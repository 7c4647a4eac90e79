"""ArcFace identity encoder: the improved ResNet ("IResNet") of insightface's ``arcface_torch``.

Parameter names follow ``recognition/arcface_torch/backbones/iresnet.py`` so the released backbones
(e.g. ``ms1mv3_arcface_r100_fp16/backbone.pth``, a plain state dict) load with ``strict=True``. Input: an
aligned 112x112 RGB face scaled to [-1, 1] (``(x / 255 - 0.5) / 0.5``); output: a 512-D embedding (not
normalised; compare with cosine similarity). No file I/O here; :mod:`emotalk.eval.detectors` loads
weights.
"""
from __future__ import annotations

import torch
from torch import nn

#: blocks per stage of each depth
LAYERS = {"iresnet18": (2, 2, 2, 2), "iresnet34": (3, 4, 6, 3), "iresnet50": (3, 4, 14, 3),
          "iresnet100": (3, 13, 30, 3)}
#: ArcFace's 5-point template in the 112x112 crop: eye centres (image left, right), nose tip, mouth corners
ARCFACE_TEMPLATE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                        (70.7299, 92.2041))


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, int, int, int] = LAYERS["iresnet100"], num_features: int = 512,
                 dropout: float = 0.0):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes, eps=1e-5))
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def iresnet(arch: str = "iresnet100", **kwargs) -> IResNet:
    if arch not in LAYERS:
        raise ValueError(f"unknown ArcFace backbone {arch!r}; choose from {', '.join(LAYERS)}")
    return IResNet(LAYERS[arch], **kwargs)


def arch_from_state_dict(state: dict) -> str:
    """Infer the depth from the number of blocks in each stage of a state dict."""
    counts = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}.") and k.split(".")[1].isdigit()}
        counts.append(max(idx) + 1 if idx else 0)
    for name, layers in LAYERS.items():
        if tuple(counts) == layers:
            return name
    raise ValueError(f"state dict has {counts} blocks per stage, which matches no IResNet "
                     f"({', '.join(f'{k}={v}' for k, v in LAYERS.items())})")
