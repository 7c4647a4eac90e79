"""The exact one-shot step, arranged for speed (issue 16 §2): G_T's prediction of the photo itself (identity =
target = the photo, driven = neutral landmarks, neutral emotion) on working copies of the model, with the
same function and the same gradients as :meth:`TextureGenerator.forward` (the paper's objective: E_T's
gradient also flows back through the frozen motion network). The training modules are wrapped, never edited.

What a profile of the plain step (256², c = 64, bf16 channels-last working copy, 2-core AMX CPU) showed
besides the convolutions, and what replaces it here:

- **Warping** was ~10 % of a step: CPU ``grid_sample`` runs only NCHW fp32, so every warp converted the
  bf16 channels-last skips to NCHW fp32 and back, and its backward (for the features and the flow) is a
  slow scalar kernel. :func:`warp_gate` computes ``warp(f, flow) * occlusion`` as a weighted gather of the
  channels-last ``(H·W, C)`` rows (:class:`TapGather`, one ``embedding_bag``) with the four bilinear taps of
  :func:`emotalk.inference.fast_ops.bilinear_taps` (``grid_sample``'s, ``align_corners=False``, border
  padding) made from the flow and gate in fp32; differentiable in the features, the flow and the gate. Its
  backward is a second ``embedding_bag`` over the taps sorted by the row they read, plus per-tap dot
  products. (The first version, four ``index_select`` + weighted sum, with ``index_add`` backward, took 2.3x
  as long for the three warps of a step: 261 against 113 ms, 1 thread, bf16 at 256².)
- **Bilinear x2 upsampling's backward** (every :class:`UpBlock`; ~18 % of a step with the layout copies
  it caused) has no channels-last CPU kernel: the
  incoming gradient (a channel slice of the concatenation's) was made NCHW-contiguous, the result fed
  back to channels-last convolutions (two layout copies and a slow kernel per block). :class:`Upsample2x`
  keeps ``F.interpolate``'s forward and computes the adjoint as what it is, a depthwise stride-2
  convolution with the kernel ``[1, 3, 3, 1]/4 ⊗ [1, 3, 3, 1]/4`` of the replicate-padded gradient.
- **BatchNorm** (eval mode: a per-channel affine map) is folded into the convolution: once for the frozen
  motion network; for E_T/D_T's blocks on every call from their own weight, γ, β (:class:`ConvBN`), so
  autograd still gives those three parameters their exact gradients. One activation pass less per block,
  forward and backward.
- **AdaIN's instance norm** turned channels-last inputs NCHW: :class:`AdaINCL` runs ``(1 + γ)·IN(x) + β``
  as one training-mode ``batch_norm`` of the single image (channels-last kernel, statistics in fp32).

- **Per-photo constants** (independent of E_T/D_T): the heatmap difference (zero: G' = G), the emotion
  feature and the landmark prior flow are computed once.

Net (1 thread, interleaved with the previous whole-model bf16 step in one process on the shared machine):
the 5-step fine-tuning in 0.41-0.57x the time (L1), 0.54-0.61x (with the VGG16 perceptual term); the
:class:`TapGather` warp then took another ~10 % off (0.89-0.90x, same kind of measurement).

Rounding aside the result is :meth:`TextureGenerator.forward`'s ``image``; tests/test_one_shot.py
compares the two and their gradients.
"""
from __future__ import annotations

import copy
from functools import lru_cache

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.inference.fast_ops import bilinear_taps
from emotalk.models.heatmap import heatmap_difference
from emotalk.models.texture_blocks import AdaIN, UpBlock, identity_grid, style_statistics
from emotalk.models.texture_generator import TextureGenerator

_CL = torch.channels_last


@lru_cache(maxsize=32)
def _adjoint_kernel(channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    k = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=torch.float64)
    return (k[:, None] * k[None, :]).to(dtype=dtype, device=device).expand(channels, 1, 4, 4) \
        .contiguous(memory_format=_CL)


class Upsample2x(torch.autograd.Function):
    """Bilinear x2 upsampling (``align_corners=False``) with a channels-last backward.

    Along one axis the upsampled ``y[2i] = ¾x[i] + ¼x[i-1]``, ``y[2i+1] = ¾x[i] + ¼x[i+1]`` (indices
    clamped), so ``∂L/∂x[j] = ¼g[2j-1] + ¾g[2j] + ¾g[2j+1] + ¼g[2j+2]`` with ``g`` replicate-padded by one
    (the clamped border taps): a stride-2 depthwise convolution of the padded gradient, in 2-D with the
    outer product of the 1-D kernel. The kernel's entries (1/16, 3/16, 9/16) are exact in bf16."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.channels = x.shape[1]
        return F.interpolate(x, size=(2 * x.shape[-2], 2 * x.shape[-1]), mode="bilinear", align_corners=False)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        g = grad.contiguous(memory_format=_CL)
        g = torch.cat([g[:, :, :1], g, g[:, :, -1:]], dim=2)
        g = torch.cat([g[:, :, :, :1], g, g[:, :, :, -1:]], dim=3)
        return F.conv2d(g, _adjoint_kernel(ctx.channels, g.dtype, g.device), stride=2, groups=ctx.channels)


def upsample_to(x: Tensor, size) -> Tensor:
    """``F.interpolate(x, size, bilinear, align_corners=False)``; exact doubling through :class:`Upsample2x`."""
    size = tuple(size)
    if size == (2 * x.shape[-2], 2 * x.shape[-1]):
        return Upsample2x.apply(x)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UpBlockCL(nn.Module):
    """:class:`UpBlock` (x2 upsampling, concatenation with the skip, conv block) with :func:`upsample_to`."""

    def __init__(self, block: UpBlock):
        super().__init__()
        self.conv = block.conv

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([upsample_to(x, skip.shape[-2:]), skip], dim=1))


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``x·scale + shift`` (fp32; differentiable in γ and β)."""
    inv = torch.rsqrt(bn.running_var.float() + bn.eps)
    scale = inv if bn.weight is None else bn.weight.float() * inv
    shift = -bn.running_mean.float() * scale
    return scale, shift if bn.bias is None else shift + bn.bias.float()


class ConvBN(nn.Module):
    """A ConvBlock (conv -> eval BatchNorm -> ReLU) as one biased convolution and a ReLU.

    Trainable blocks (E_T, D_T): the folded weight ``W·s`` and bias ``β - μ·s`` (``s = γ/√(σ² + ε)``) are made
    from the block's own parameters on every call, so autograd gives W, γ and β their exact gradients, and
    the parameters keep their names (``0.weight``, ``1.weight``, ``1.bias``). Frozen blocks (the motion
    network) are folded once."""

    def __init__(self, block: nn.Sequential, dtype: torch.dtype | None = None):
        super().__init__()
        conv, bn = block[0], block[1]
        self.relu = len(block) > 2
        self.frozen = not any(p.requires_grad for p in block.parameters())
        if self.frozen:
            with torch.no_grad():
                scale, shift = _bn_scale_shift(bn)
                if conv.bias is not None:
                    shift = shift + conv.bias.float() * scale
                dtype = dtype or conv.weight.dtype
                w = conv.weight.float() * scale.view(-1, 1, 1, 1)
                self.register_buffer("weight", w.to(dtype, memory_format=_CL))
                self.register_buffer("bias", shift.to(dtype))
            self.geometry = (conv.stride, conv.padding, conv.dilation, conv.groups)
        else:
            self.add_module("0", conv)
            self.add_module("1", bn)

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen:
            y = F.conv2d(x, self.weight, self.bias, *self.geometry)
        else:
            conv, bn = self._modules["0"], self._modules["1"]
            scale, shift = _bn_scale_shift(bn)
            if conv.bias is not None:
                shift = shift + conv.bias.float() * scale
            w = (conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
            y = F.conv2d(x, w, shift.to(w.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
        return torch.relu_(y) if self.relu else y


class AdaINCL(nn.Module):
    """:class:`AdaIN` ``(1 + γ(s))·IN(x) + β(s)`` for one image as one training-mode ``batch_norm`` (per-channel
    statistics over H x W of a batch of one are the instance norm's), with ``1 + γ`` and ``β`` as its
    affine weight and bias: channels-last in and out, statistics in fp32. Same parameter (``affine``)."""

    def __init__(self, m: AdaIN):
        super().__init__()
        self.affine = m.affine
        self.eps = float(m.norm.eps)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        if x.shape[0] != 1:
            raise ValueError(f"AdaINCL normalises one image, got a batch of {x.shape[0]}")
        gamma, beta = self.affine(style).float()[0].chunk(2)
        return F.batch_norm(x, None, None, 1 + gamma, beta, True, 0.0, self.eps)


def _is_conv_block(m: nn.Module) -> bool:
    return (isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d)
            and isinstance(m[1], nn.BatchNorm2d))


def _swap(module: nn.Module, dtype: torch.dtype | None = None) -> None:
    """Replace, below ``module``, every ConvBlock, UpBlock and AdaIN by the versions above (in place; frozen
    blocks folded into ``dtype``)."""
    for name, child in list(module.named_children()):
        _swap(child, dtype)
        if _is_conv_block(child):
            setattr(module, name, ConvBN(child, dtype))
        elif isinstance(child, UpBlock):
            setattr(module, name, UpBlockCL(child))
        elif isinstance(child, AdaIN):
            setattr(module, name, AdaINCL(child))


def working_module(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A ``dtype``, channels-last copy of ``module`` with the fast blocks (eval mode; the copy's parameters
    keep their names and ``requires_grad`` flags; ``module`` is not changed).

    Each tensor is converted once, straight from the source: the module tree is copied with the tensors
    shared, frozen blocks are folded from the shared fp32 weights, then every remaining parameter and
    buffer is replaced by its converted copy (no fp32 deep copy of the motion network's 100 MB first)."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    work = copy.deepcopy(module, memo=shared).eval()
    _swap(work, dtype)
    for m in work.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = nn.Parameter(_converted(p.detach(), dtype), requires_grad=p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None and id(b) in shared:  # (the folded weights are new, already in dtype)
                m._buffers[name] = _converted(b, dtype if b.is_floating_point() else b.dtype)
    return work


def _converted(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A new tensor: ``t`` in ``dtype``, channels-last if 4-D."""
    fmt = _CL if t.dim() == 4 else torch.contiguous_format
    out = torch.empty_like(t, dtype=dtype, memory_format=fmt)
    return out.copy_(t)


@lru_cache(maxsize=16)
def _identity_grid(h: int, w: int, device: torch.device) -> Tensor:
    return identity_grid(h, w, device, torch.float32)


class TapGather(torch.autograd.Function):
    """``out[i] = Σ_k w[i, k] · rows[idx[i, k]]``: the four bilinear taps of every output pixel read as whole
    channels-last rows, differentiable in ``rows`` and ``w`` (not ``idx``).

    Forward: one ``embedding_bag`` (each output pixel a bag of its four weighted taps), no ``(4·N, C)``
    intermediate. Backward, for the rows: the transpose gather - the taps sorted by the row they read, so
    every input row is one bag of the (output pixel, weight) pairs that read it, again one ``embedding_bag``
    (an ``index_add`` of the weighted gradient rows was 2-3x slower); for the weights: per tap the dot
    products ``<g[i], rows[idx[i, k]]>`` (summed in the rows' dtype with fp32 accumulation).
    ``w`` must have the rows' dtype (``embedding_bag``'s rule)."""

    @staticmethod
    def forward(ctx, rows: Tensor, idx: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(rows, idx, w)
        return F.embedding_bag(idx, rows, per_sample_weights=w, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, idx, w = ctx.saved_tensors
        grad = grad.contiguous()
        grad_rows = grad_w = None
        if ctx.needs_input_grad[0]:
            flat = idx.reshape(-1)
            order = torch.argsort(flat)
            counts = torch.bincount(flat, minlength=rows.shape[0])
            grad_rows = F.embedding_bag(torch.div(order, idx.shape[1], rounding_mode="floor"), grad,
                                        counts.cumsum(0) - counts, per_sample_weights=w.reshape(-1)[order],
                                        mode="sum")
        if ctx.needs_input_grad[2]:
            grad_w = torch.stack([(rows.index_select(0, idx[:, k]) * grad).sum(1) for k in range(idx.shape[1])], 1)
        return grad_rows, None, grad_w


def warp_gate(features: Tensor, flow: Tensor, gate: Tensor | None = None) -> Tensor:
    """``warp(features, flow) * gate`` (:func:`emotalk.models.texture_blocks.warp`; the gate bilinearly
    resampled to the features' size) for one image, as one channels-last weighted row gather
    (:class:`TapGather`); differentiable in all three. The flow is resampled as ``warp`` does and the taps
    and their weights are :func:`emotalk.inference.fast_ops.bilinear_taps` (``grid_sample``'s, border padding:
    no gradient beyond the border), computed in fp32; the weights then take the features' dtype."""
    _, C, H, W = features.shape
    fl = flow.float()
    if fl.shape[-2] < H:
        fl = F.interpolate(fl, size=(H, W), mode="bilinear", align_corners=False)
    elif fl.shape[-2] > H:
        fl = F.adaptive_avg_pool2d(fl, (H, W))
    g = None
    if gate is not None:
        g = gate.float()
        if g.shape[-2:] != (H, W):
            g = F.interpolate(g, size=(H, W), mode="bilinear", align_corners=False)
    idx, w = bilinear_taps(_identity_grid(H, W, fl.device) + fl.permute(0, 2, 3, 1), (H, W), g)
    rows = features.permute(0, 2, 3, 1).reshape(H * W, C)  # a view when channels-last
    out = TapGather.apply(rows, idx, w.to(features.dtype))
    return out.view(1, H, W, C).permute(0, 3, 1, 2)


class ExactStep:
    """G_T's ``image`` for the photo with G' = G on working copies of E_T, D_T (trained) and the motion
    network (frozen; BatchNorm folded once), in ``dtype`` and channels-last. ``step(x)`` with ``x`` the photo
    in that dtype and layout. :meth:`pairs` maps the model's E_T/D_T parameters to the working ones."""

    def __init__(self, model: TextureGenerator, landmarks: Tensor, emotion: Tensor, dtype: torch.dtype):
        cfg = model.cfg
        self.cfg, self.dtype = cfg, dtype
        self.encoder = working_module(model.identity_encoder, dtype)
        self.decoder = working_module(model.decoder, dtype)
        self.motion = working_module(model.motion, dtype)
        with torch.no_grad():
            f_h = heatmap_difference(landmarks, landmarks, cfg.image_size, cfg.heatmap_size, cfg.heatmap_sigma)
            self.f_h = f_h.to(dtype).contiguous(memory_format=_CL)
            self.f_e = model.emotion_encoder(emotion.to(model.emotion_encoder.conv.weight.dtype))
            self.prior = model.prior_flow(landmarks, landmarks) if cfg.prior_flow else None

    def pairs(self, model: TextureGenerator) -> tuple[list[Tensor], list[Tensor]]:
        """(the model's E_T + D_T parameters in ``identity_parameters()`` order, the working ones)."""
        master, work = [], []
        for src, dst in ((model.identity_encoder, self.encoder), (model.decoder, self.decoder)):
            named = dict(dst.named_parameters())
            for name, p in src.named_parameters():
                master.append(p)
                work.append(named[name])
        return master, work

    def __call__(self, x: Tensor) -> Tensor:
        cfg, dtype = self.cfg, self.dtype
        skips = self.encoder(x)
        f_t = skips[-1]
        style = style_statistics(f_t.float()).to(dtype)
        mot = self.motion(f_t, self.f_h, self.f_e)
        flow, occ = mot["flow"], mot["occlusion"]
        if self.prior is not None:  # flow = residual + prior, as TextureGenerator.forward
            prior = self.prior.to(flow.dtype)
            up = flow if flow.shape[-2:] == prior.shape[-2:] else F.interpolate(
                flow, size=prior.shape[-2:], mode="bilinear", align_corners=False)
            flow = (prior + up).clamp(-1.0, 1.0)
        if cfg.flow_mode == "warp":
            skips = [warp_gate(s, flow, occ) for s in skips]
            dec_in = skips[-1]
        else:
            flow_in = flow if flow.shape[-2:] == f_t.shape[-2:] else F.adaptive_avg_pool2d(flow, f_t.shape[-2:])
            dec_in = torch.cat([flow_in.to(dtype).contiguous(memory_format=_CL),
                                mot["occlusion_maps"].contiguous(memory_format=_CL), f_t], dim=1)
        warped = warp_gate(x, flow) if cfg.image_skip else None
        return self.decoder(dec_in, skips, style, warped)["image"]


# ------------------------------------------------------------------------------------------ perceptual term
class L1ToTarget(torch.autograd.Function):
    """``mean |f - t|`` for a fixed target ``t`` of ``f``'s dtype: the value accumulated in fp32, the
    gradient ``sign(f - t) / N`` written straight in ``f``'s dtype and layout. Same gradient as
    ``(f.float() - t.float()).abs().mean()`` (a bf16 difference is rounded but never changes sign, and
    ``1/N`` is a power of two for VGG's maps at 256²); without its fp32 copies of every feature map."""

    @staticmethod
    def forward(ctx, f: Tensor, t: Tensor) -> Tensor:
        d = f - t
        ctx.save_for_backward(d)
        return d.abs().sum(dtype=torch.float32) / d.numel()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (d,) = ctx.saved_tensors
        return torch.sign(d).mul_((grad / d.numel()).to(d.dtype)), None


def perceptual_to_target(perceptual: nn.Module, target: Tensor):
    """``loss(pred)`` = ``perceptual.from_features(pred, perceptual.target_features(target))`` (eq. 7: the
    weighted mean over VGG layers of the mean absolute feature difference) with :class:`L1ToTarget` per
    layer; VGG(target) computed once. ``perceptual``: a PerceptualLoss (``vgg``, ``layer_weights``)."""
    feats = perceptual.target_features(target)
    weights = [float(w) for w in perceptual.layer_weights]
    total_w = sum(weights)

    def loss(pred: Tensor) -> Tensor:
        total = None
        for w, f, t in zip(weights, perceptual.vgg(pred), feats):
            term = w * L1ToTarget.apply(f, t)
            total = term if total is None else total + term
        return total / total_w

    return loss


def converted_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen ``dtype``, channels-last copy of ``module`` (each tensor converted once, straight from the
    source), in eval mode with in-place ReLUs (safe where no ReLU input is needed again: VGG's convolutions
    are frozen, their backward needs only the weights)."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    work = copy.deepcopy(module, memo=shared).eval()
    for m in work.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = nn.Parameter(_converted(p.detach(), dtype), requires_grad=False)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = _converted(b, dtype if b.is_floating_point() else b.dtype)
        if isinstance(m, nn.ReLU):
            m.inplace = True
    return work
