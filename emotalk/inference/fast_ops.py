"""Kernels of the inference-only G_T (:mod:`emotalk.inference.fast_texture`), each replacing a slow eager
pattern measured in a profile of the 256² paper model (issue 16 §1).

- :class:`PackedConv`: oneDNN reorders a plain ``(O, I, kh, kw)`` weight into its blocked layout on *every*
  eager ``conv2d`` call (the 1024 x 1152 x 3 x 3 one took 21 ms per frame, as long as a third of its
  convolution). Here the weight is reordered once, and ReLU and a residual / precomputed-term addition
  run as oneDNN post-ops in the same pass over the output (``torch.ops.mkldnn._convolution_pointwise``, the
  kernel inductor's CPU freezing path uses). Elsewhere (CUDA, builds without oneDNN): ``F.conv2d``.
- :func:`bilinear_taps` + :func:`gather_warp`: backward warping as a weighted gather of channels_last rows
  (``F.embedding_bag`` with per-sample weights): the four bilinear taps of every output pixel, with the
  occlusion gate folded into the tap weights, read whole C-channel rows of the identity features. This is
  ``grid_sample(..., padding_mode="border", align_corners=False) * occlusion`` exactly (same taps, same
  weights), an order of magnitude faster than CPU ``grid_sample`` on NCHW (which also needs fp32 NCHW
  inputs and a layout conversion of its output), and its output is already channels_last.
- :class:`UpConv`: ``relu(conv3x3([bilinear_x2(x), skip]) + add)`` (G_T's four up blocks) without the
  upsampled tensor or the concatenation (the bf16 profile at 256²: upsampling 13 %, ``cat`` 10 % of a frame).
  Sub-pixel rewrite: each of the four output phases of a 3x3 convolution of a x2 bilinear upsample is a
  3x3 convolution of the low-resolution input (the upsampling weights .25/.75 folded into the kernel), so
  one convolution with 4·C_out outputs on ``x`` plus a pixel shuffle gives the same numbers with the same
  FLOPs; the skip's share is its own convolution that adds the shuffled result in its oneDNN post-op.
- :class:`UpSplitConv`: the same block as two convolutions (one per part of the concatenation) summed in
  a post-op: no concatenated copy (fp32 only; AMX's bf16 prefers one convolution with the larger K).
- :class:`BroadcastConv`: a convolution's share of channels that are one value per frame broadcast over
  the map (the emotion features at the motion bottleneck) as k² small matrix-vector products.
- :func:`adain_relu`: instance statistics through the batch-norm kernel (per frame, training-mode
  statistics = instance statistics of one image), which is vectorised for channels_last; ``var_mean`` over
  (H, W) of a channels_last tensor is a strided reduction 20x slower.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_ONEDNN = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
           and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight"))


#: input shapes whose packed weight a :class:`PackedConv` keeps
PACKED_SHAPES = 2


class PackedConv(nn.Module):
    """A frozen ``nn.Conv2d`` (inference only) with its weight reordered once for oneDNN, and optional fused
    ``+ add`` (same shape as the output, or batch 1: broadcast) and ReLU."""

    def __init__(self, weight: Tensor, bias: Tensor | None, stride, padding, dilation=(1, 1), groups: int = 1):
        super().__init__()
        self.weight = weight.detach().contiguous(memory_format=torch.channels_last)
        self.bias = bias.detach().to(weight.dtype) if bias is not None else None
        self.stride, self.padding = list(_pair(stride)), list(_pair(padding))
        self.dilation, self.groups = list(_pair(dilation)), groups
        #: oneDNN's blocked weight per input shape, the most recent first (a weight packed for one batch size
        #: and used at another sends oneDNN down a path ~50x slower: fp32 G_T at batch 2 took 20 s a call)
        self.packed: dict[tuple[int, ...], Tensor] = {}

    @classmethod
    def of(cls, conv: nn.Conv2d, in_slices: list[slice] | None = None, bias: bool = True) -> "PackedConv":
        """``conv`` itself, or the part of it that reads the input channels ``in_slices`` (concatenated)."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("PackedConv supports zero padding given as numbers")
        w = conv.weight if in_slices is None else torch.cat([conv.weight[:, s] for s in in_slices], dim=1)
        return cls(w, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation, conv.groups)

    def _use_onednn(self, x: Tensor) -> bool:
        return _ONEDNN and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) \
            and self.weight.dtype == x.dtype

    def _packed_for(self, shape: tuple[int, ...]) -> Tensor:
        """The weight reordered for inputs of ``shape``; at most :data:`PACKED_SHAPES` kept (the batch tuner
        tries a few batch sizes, then one is used; a video's last, shorter batch is packed once more)."""
        packed = self.packed.pop(shape, None)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(shape))
        self.packed = {shape: packed, **dict(list(self.packed.items())[:PACKED_SHAPES - 1])}
        return packed

    def forward(self, x: Tensor, relu: bool = False, add: Tensor | None = None) -> Tensor:
        if not self._use_onednn(x):
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            if add is not None:
                y = y + add
            return torch.relu_(y) if relu else y
        x = x.contiguous(memory_format=torch.channels_last)
        packed = self._packed_for(tuple(x.shape))
        unary = "relu" if relu else "none"
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(x, packed, self.bias, self.padding, self.stride,
                                                           self.dilation, self.groups, unary, [], "")
        if add.shape[0] != x.shape[0]:  # a per-identity term for a batch of frames: oneDNN's broadcast binary
            # post-op is its reference kernel (G_T at batch 2 took 20 s a frame instead of 0.4); add in full
            add = add.expand(x.shape[0], *add.shape[1:])
        add = add.to(x.dtype).contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, add, packed, self.bias, self.padding, self.stride, self.dilation, self.groups, "add", 1.0,
            "relu" if relu else None, [], "")


#: ``_PHASE[a, d, r + 1]``: weight of ``x[i + r]`` in row ``2i + a + d`` of a x2 bilinear upsample of ``x``
#: (``align_corners=False``: output row ``2i`` is ``.25 x[i-1] + .75 x[i]``, row ``2i+1`` is ``.75 x[i] + .25
#: x[i+1]``), for output phase ``a`` and 3x3 tap ``d`` in (-1, 0, 1)
_PHASE = torch.tensor([[[.75, .25, 0.], [.25, .75, 0.], [0., .75, .25]],
                       [[.25, .75, 0.], [0., .75, .25], [0., .25, .75]]], dtype=torch.float64)


class UpConv(nn.Module):
    """``relu(conv(cat([interpolate(x, 2x, bilinear), skip])) + add)`` of a 3x3, stride 1, padding 1 ``conv``,
    without materialising the upsampled input or the concatenation.

    With ``U`` the upsample of ``x`` and ``x_r`` ``x`` padded by replication (the upsample clamps at the
    border, so ``U`` of ``x_r`` is ``U`` padded by replication), output phase ``(a, b)`` is a 3x3 convolution
    of ``x_r`` whose kernel is ``_PHASE``-mixed ``conv``'s (one packed convolution, 4·C_out channels, then
    a pixel shuffle). The zero padding of the original convolution differs from the replicated frame of
    ``U`` only on the outermost output rows and columns: those get a 1x3 / 3x1 convolution of ``U``'s
    border lines subtracted (4 · (H + W) output pixels, ~1 % of the FLOPs at 256²). The skip's share
    (its own channels of the weight) is a second convolution that adds the rest in its post-op.
    Same FLOPs as the original (plus the border lines); equal to float tolerance (tests/test_fast_ops.py).
    """

    def __init__(self, conv: nn.Conv2d, up: slice, skip: list[slice]):
        super().__init__()
        if conv.kernel_size != (3, 3) or _pair(conv.stride) != (1, 1) or _pair(conv.padding) != (1, 1) \
                or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("UpConv rewrites a 3x3, stride 1, padding 1 convolution")
        w = conv.weight.detach()
        wu = w[:, up].double()
        co, ci = wu.shape[:2]
        phases = torch.einsum("adr,bes,oide->aboirs", _PHASE.to(wu.device), _PHASE.to(wu.device), wu)
        bias = conv.bias.detach().repeat(4) if conv.bias is not None else None
        self.out_channels = co
        self.phase = PackedConv(phases.reshape(4 * co, ci, 3, 3).to(w.dtype), bias, 1, 0)
        # the four border lines' kernels (frame rows -1 / 2H: kernel rows 0 / 2; frame columns: kernel columns
        # 0 / 2, applied to the transposed column) as one grouped convolution over the four lines
        edges = torch.cat([wu[:, :, 0], wu[:, :, 2], wu[:, :, :, 0], wu[:, :, :, 2]])  # (4·Co, Ci, 3)
        self.edges = PackedConv(edges[:, :, None].to(w.dtype), None, 1, 0, groups=4)
        self.skip = PackedConv.of(conv, skip, bias=False)

    def forward(self, x: Tensor, skip: Tensor, relu: bool = False, add: Tensor | None = None) -> Tensor:
        B, C, h, w = x.shape
        H, W = 2 * h, 2 * w
        if tuple(skip.shape[-2:]) != (H, W):
            raise ValueError(f"UpConv upsamples by 2: input {h}x{w}, skip {tuple(skip.shape[-2:])}")
        x = x.contiguous(memory_format=torch.channels_last)
        p = self.phase(F.pad(x, (1, 1, 1, 1), mode="replicate"))  # (B, 4·Co, h, w), channels (a, b, o)
        co = self.out_channels
        y = (p.permute(0, 2, 3, 1).reshape(B, h, w, 2, 2, co).permute(0, 1, 3, 2, 4, 5)
             .reshape(B, H, W, co).permute(0, 3, 1, 2))  # pixel shuffle, channels_last
        # the rewrite saw U's replicated frame where the convolution's zero padding has zeros: subtract the
        # frame's share from the outermost rows (frame corners included) and columns (corners excluded)
        if H != W:
            raise ValueError(f"UpConv needs square maps, got {h}x{w}")
        rows = F.interpolate(x[:, :, [0, h - 1]], size=(2, W), mode="bilinear", align_corners=False)
        cols = F.interpolate(x[:, :, :, [0, w - 1]], size=(H, 2), mode="bilinear", align_corners=False)
        rows = F.pad(rows, (1, 1, 0, 0), mode="replicate")
        cols = F.pad(cols.transpose(2, 3), (1, 1))
        lines = torch.cat([rows[:, :, :1], rows[:, :, 1:], cols[:, :, :1], cols[:, :, 1:]], dim=1)
        e = self.edges(lines)[:, :, 0]  # (B, 4·Co, W): top, bottom, left, right
        y[:, :, 0].sub_(e[:, :co])
        y[:, :, -1].sub_(e[:, co:2 * co])
        y[:, :, :, 0].sub_(e[:, 2 * co:3 * co])
        y[:, :, :, -1].sub_(e[:, 3 * co:])
        if add is not None:
            y.add_(add.to(y.dtype))
        return self.skip(skip, relu=relu, add=y)


class RowTapConv(nn.Module):
    """A k x k convolution (stride 1, 'same' zero padding) with few output channels (G_T's last layer: 7x7,
    c -> 3 or 4 at S x S), as a 1 x k convolution with ``k · C_out`` outputs (one group per kernel row)
    and k row-shifted fp32 sums. oneDNN's fp32 kernel for ``C_out = 3`` keeps a vector register width of
    16 outputs mostly empty (at 256²: 57 ms against 24 ms this way); bf16 (AMX) runs the direct form
    faster, so it is used for fp32 only. Returns fp32, channels_last."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        kh, kw = conv.kernel_size
        if kh % 2 == 0 or _pair(conv.stride) != (1, 1) or _pair(conv.padding) != (kh // 2, kw // 2) \
                or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("RowTapConv needs an odd, stride 1, 'same' zero-padded convolution")
        w = conv.weight.detach()
        self.k, self.out_channels = kh, w.shape[0]
        self.rows = PackedConv(w.permute(2, 0, 1, 3).reshape(kh * w.shape[0], w.shape[1], 1, kw), None, 1,
                               (0, kw // 2))
        self.bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        k, co, p = self.k, self.out_channels, self.k // 2
        r = self.rows(x).permute(0, 2, 3, 1).reshape(B, H, W, k, co)  # tap row dy's share, at its own row
        out = self.bias.to(x.device).expand(B, H, W, co).clone()
        for dy in range(k):  # out[y] += r[y + dy - p, dy] (rows outside the map: zero padding)
            lo, hi = max(0, p - dy), min(H, H + p - dy)
            out[:, lo:hi] += r[:, lo + dy - p:hi + dy - p, :, dy].float()
        return out.permute(0, 3, 1, 2)


class UpCatConv(nn.Module):
    """The plain form of :class:`UpConv` (same call): upsample, concatenate, one packed convolution. Faster
    than the rewrite where the maps are small (the rewrite's two convolutions have a smaller K each and the
    phase convolution a 4x smaller M: at 256² bf16, 16²->32² took 26 ms instead of 17)."""

    def __init__(self, conv: nn.Conv2d, up: slice, skip: list[slice]):
        super().__init__()
        self.conv = PackedConv.of(conv, [up, *skip])

    def forward(self, x: Tensor, skip: Tensor, relu: bool = False, add: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, size=tuple(skip.shape[-2:]), mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1), relu=relu, add=add)


class UpSplitConv(nn.Module):
    """:class:`UpCatConv` without the concatenation (same call): the convolution of ``[up(x), skip]`` as the
    sum of two convolutions, one per part of the weight, the first's output added in the second's oneDNN
    post-op. Same FLOPs; the concatenated copy (written once, read nine times by the 3x3 taps) is gone.
    Measured at 256² in fp32, one thread: 1.15x on the motion decoder's 16² -> 32² block (130 -> 113 ms) and
    D_T's 64² -> 128² one (127 -> 107 ms); in bf16 (AMX) one convolution with the larger K wins."""

    def __init__(self, conv: nn.Conv2d, up: slice, skip: list[slice]):
        super().__init__()
        self.up = PackedConv.of(conv, [up], bias=False)
        self.skip = PackedConv.of(conv, skip)

    def forward(self, x: Tensor, skip: Tensor, relu: bool = False, add: Tensor | None = None) -> Tensor:
        x = F.interpolate(x, size=tuple(skip.shape[-2:]), mode="bilinear", align_corners=False)
        return self.skip(skip, relu=relu, add=self.up(x, add=add))


class BroadcastConv(nn.Module):
    """The share of a k x k, stride 1, 'same' zero-padded convolution that reads input channels ``part``
    when those channels hold one value per frame broadcast over the map (G_T's emotion features joined to
    the motion bottleneck): ``sum_t (W_t @ v) * valid_t(y, x)`` over the k² taps, exact at the zero-padded
    border, without the broadcast map, its concatenation or its GEMM share (fuse at 256²: 49 -> 43 ms in fp32).
    Returns ``(B, C_out, h, w)`` channels_last in the weight's dtype, no bias."""

    def __init__(self, conv: nn.Conv2d, part: slice):
        super().__init__()
        kh, kw = conv.kernel_size
        if _pair(conv.stride) != (1, 1) or _pair(conv.padding) != (kh // 2, kw // 2) or kh % 2 == 0 \
                or kw % 2 == 0 or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("BroadcastConv needs an odd, stride 1, 'same' zero-padded convolution")
        self.k = (kh, kw)
        self.dtype = conv.weight.dtype
        self.taps = conv.weight.detach()[:, part].float().flatten(2)  # (C_out, C_part, kh·kw)
        self.masks: dict[tuple[int, int], Tensor] = {}

    def _valid(self, h: int, w: int) -> Tensor:
        """``(kh·kw, h, w)``: 1 where tap ``t`` of output pixel ``(y, x)`` reads inside the map."""
        m = self.masks.get((h, w))
        if m is None:
            (kh, kw), dev = self.k, self.taps.device
            ones = F.pad(torch.ones(h, w, device=dev), (kw // 2, kw // 2, kh // 2, kh // 2))
            m = self.masks[(h, w)] = torch.stack([ones[dy:dy + h, dx:dx + w] for dy in range(kh) for dx in range(kw)])
        return m

    def forward(self, v: Tensor, hw: tuple[int, int]) -> Tensor:
        per_tap = torch.einsum("oit,bi->bot", self.taps, v.float())
        out = torch.einsum("bot,tyx->boyx", per_tap, self._valid(*hw))
        return out.to(self.dtype).contiguous(memory_format=torch.channels_last)


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def bilinear_taps(grid: Tensor, in_hw: tuple[int, int], gate: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The four bilinear taps of ``grid_sample(padding_mode="border", align_corners=False)``.

    grid: ``(B, H, W, 2)`` normalised sampling positions (x, y) into an ``in_hw`` image; gate: optional
    ``(B, 1, H, W)`` factor folded into the weights (the occlusion map). Returns row indices into the
    image's ``(h_in * w_in, C)`` channels_last rows and the weights, both ``(B * H * W, 4)``.
    """
    h_in, w_in = in_hw
    gx = (((grid[..., 0] + 1) * w_in - 1) / 2).clamp(0, w_in - 1)  # border padding clips the coordinate
    gy = (((grid[..., 1] + 1) * h_in - 1) / 2).clamp(0, h_in - 1)
    x0, y0 = gx.floor(), gy.floor()
    wx1, wy1 = gx - x0, gy - y0
    wx0, wy0 = 1 - wx1, 1 - wy1
    x0i, y0i = x0.long(), y0.long()
    x1i, y1i = (x0i + 1).clamp_max(w_in - 1), (y0i + 1).clamp_max(h_in - 1)  # weight 0 where clamped
    idx = torch.stack([y0i * w_in + x0i, y0i * w_in + x1i, y1i * w_in + x0i, y1i * w_in + x1i], dim=-1)
    w = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=-1)
    if gate is not None:
        w = w * gate[:, 0, :, :, None]
    return idx.reshape(-1, 4), w.reshape(-1, 4)


def nhwc_rows(x: Tensor) -> Tensor:
    """``(1, C, H, W)`` -> ``(H * W, C)`` rows (a view when ``x`` is channels_last)."""
    if x.shape[0] != 1:
        raise ValueError(f"gather_warp reads one identity image, got batch {x.shape[0]}")
    return x[0].permute(1, 2, 0).reshape(-1, x.shape[1])


def gather_warp(rows: Tensor, taps: tuple[Tensor, Tensor], out_bhw: tuple[int, int, int]) -> Tensor:
    """Sum of the weighted tap rows: ``(B, C, H, W)`` channels_last, the dtype of ``rows``."""
    idx, w = taps
    out = F.embedding_bag(idx, rows, per_sample_weights=w.to(rows.dtype), mode="sum")
    B, H, W = out_bhw
    return out.view(B, H, W, -1).permute(0, 3, 1, 2)


def adain_relu(x: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5) -> Tensor:
    """``relu(scale * InstanceNorm(x) + shift)`` for ``(B, C, H, W)`` ``x`` and per-channel ``(C,)`` fp32
    ``scale``/``shift`` (one identity), computed per frame with the batch-norm kernel (fp32 statistics)."""
    if x.shape[0] == 1:
        return torch.relu_(F.batch_norm(x, None, None, scale, shift, training=True, eps=eps))
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x)
    mean, invstd = x.new_empty(x.shape[1], dtype=torch.float32), x.new_empty(x.shape[1], dtype=torch.float32)
    for i in range(x.shape[0]):  # each frame's slice of a channels_last batch is itself contiguous
        torch.ops.aten.native_batch_norm.out(x[i:i + 1], scale, shift, None, None, True, 0.0, eps,
                                             out=out[i:i + 1], save_mean=mean, save_invstd=invstd)
    return torch.relu_(out)
