"""Inference-only G_T: the same function as :class:`~emotalk.models.texture_generator.TextureGenerator` in
eval mode, arranged for speed (issue 16 §1). The training module is wrapped, never edited.

Why each change (measured with ``benchmarks/bench_texture.py`` and a per-layer profile, 256², c = 64):

- **BatchNorm folded into the convolutions.** In eval mode BatchNorm is a per-channel affine map of the
  convolution's output, so ``BN(conv(x)) = conv'(x)`` with scaled weights and a bias; one pass over the
  activations less per block (the profile showed batch-norm growing with the batch).
- **channels_last.** oneDNN (CPU) and cuDNN (tensor cores) run NHWC convolutions natively; in NCHW every
  convolution reorders its input and output ("copy_" in the profile).
- **Weights reordered once, ReLU and additions fused** (:class:`~emotalk.inference.fast_ops.PackedConv`):
  eager oneDNN convolutions reorder their weights on every call (up to a third of a convolution's time).
- **Warping as a weighted gather** (:func:`~emotalk.inference.fast_ops.gather_warp`): the bilinear taps
  of each resolution are made once per batch from the flow, the occlusion gate is folded into the tap
  weights, and channels_last rows of the identity features are gathered: ``grid_sample * occlusion``
  exactly, without CPU ``grid_sample``'s NCHW fp32 round trip.
- **Per-identity work done once.** E_T, the AdaIN style, each AdaIN layer's scale and bias (they depend
  only on the photo), and f_t's share of the two motion convolutions that read ``[f_t, f_h]`` (a
  convolution of a concatenation is the sum of the convolutions of its parts; f_t's part is the same for
  every frame: 7 % of a frame's FLOPs at 256²). AdaIN runs through the batch-norm kernel per frame.
- **The two S/4 heads (occlusion, flow) as one convolution** (a 2-channel output wastes a GEMM's width).
- **Up blocks without their concatenation.** The full-resolution one without its upsample too
  (:class:`~emotalk.inference.fast_ops.UpConv`, an exact sub-pixel rewrite, same FLOPs: its upsampled input
  would be a 32 MB fp32 temporary per frame at 256², page-faulted in afresh on every call); in fp32 the
  smaller ones as one convolution per part of ``[up(x), skip]`` summed in a post-op
  (:class:`~emotalk.inference.fast_ops.UpSplitConv`, 1.15x per block at 256²); in bf16 they keep upsample +
  cat + one convolution (AMX prefers the larger K), :class:`~emotalk.inference.fast_ops.UpCatConv`.
- **Subnormal heatmap tails zeroed** before the motion encoder (x86 multiplies subnormals in microcode:
  the two fp32 convolutions reading f_h ran 1.6-5x slower); the change is below 1e-37.
- **Batches in chunks of frames on CPUs** (:data:`CHUNK_BYTES`): one pass over a whole batch page-faulted
  its big activations in afresh on every call (glibc returns blocks above 32 MiB to the kernel), so
  frames/s fell at larger batches; in chunks it stays flat.
- **The 7x7 output layer (c -> 3/4 channels) as row taps in fp32**
  (:class:`~emotalk.inference.fast_ops.RowTapConv`: 2.3x on that layer; bf16 keeps the direct form).
- **bf16 where the hardware has it natively** (``precision="auto"``: CPUs with AMX or AVX512-BF16, CUDA
  GPUs with native bf16): weights stored in bf16 once (no per-call autocast casts); the flow, its
  sampling taps, softmax, AdaIN statistics and the output in fp32 (the warp gathers bf16 features).
  On a CPU without native bf16 (e.g. AVX2-only) it would be emulated and slower, so ``auto`` means fp32
  there. fp32 results equal the training module's to float tolerance (tests/test_fast_texture.py); bf16
  ones to bf16 rounding.
- **The batch is measured, not a constant** (:class:`~emotalk.inference.texture_batch.BatchTuner`, re-exported
  here): the first frames of a video are
  rendered at each candidate batch size, the fastest frames/s wins (real frames, nothing is wasted) and is
  cached per machine, model shape and precision in ``<user dir>/texture_batch.json``.

``torch.compile`` is an opt-in (``compile=True``): inductor's first compile of this graph takes tens of
seconds on a 2-core CPU, more than a short video's whole rendering time.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.errors import InputError
from emotalk.inference.checkpoints import user_dir
from emotalk.inference.fast_ops import (BroadcastConv, PackedConv, RowTapConv, UpCatConv, UpConv, UpSplitConv,
                                        adain_relu, bilinear_taps, gather_warp, nhwc_rows)
from emotalk.inference.texture_batch import BatchTuner, batch_candidates, machine_key
from emotalk.models.heatmap import NUM_HEATMAP_CHANNELS, heatmap_difference
from emotalk.models.texture_blocks import identity_grid, style_statistics
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig
from emotalk.utils.device import cpu_bf16_native, cuda_bf16_native


PRECISIONS = ("auto", "fp32", "bf16")
#: on CPUs, the most bytes the largest activation of one pass may take: larger batches are run in chunks of
#: frames. Why: glibc's malloc hands blocks above its mmap threshold (at most 32 MiB) back to the kernel on
#: free, so every forward page-faults its big activations in afresh (zeroed by the kernel) and streams them
#: through memory. Measured at 256² fp32, one thread: the whole-batch forward took 14 000 / 37 000 / 46 000
#: page faults and 32 / 75 / 93 ms of kernel time per frame at batch 2 / 4 / 8 (none at batch 1), and its
#: frames/s fell below batch 1's; in chunks under this budget: no faults, frames/s flat over the batch.
#: The motion network's chunks are larger than the decoder's (its maps are 4-16x smaller).
CHUNK_BYTES = 16 << 20
_CL = torch.channels_last
_TINY = torch.finfo(torch.float32).tiny  # the smallest normal fp32


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (not emulated through fp32)."""
    if device.type == "cuda":
        return cuda_bf16_native(device)
    if device.type == "cpu":
        return cpu_bf16_native()
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def chunk_frames(cfg: TextureModelConfig, dtype: torch.dtype, budget: int = CHUNK_BYTES) -> tuple[int, int]:
    """Frames per pass of (motion network, decoder), powers of two keeping their largest activation within
    ``budget`` bytes: the motion decoder's ``[up(d1), f_h]`` (8c + 69 channels at S/4, or ``[up(fused), m1]``,
    24c at S/8) and D_T's ``[up(h), skip]`` (6c channels at S/2; the full-resolution block makes neither
    its upsample nor its concatenation, :class:`~emotalk.inference.fast_ops.UpConv`)."""
    S, c, item = cfg.image_size, cfg.channels, torch.finfo(dtype).bits // 8
    motion = max((8 * c + NUM_HEATMAP_CHANNELS) * (S // 4) ** 2, 24 * c * (S // 8) ** 2) * item
    decoder = max(6 * c * (S // 2) ** 2, c * S * S) * item
    # powers of two, as the batch candidates: chunks of 3 cut batch 8 into 3 + 3 + 2, and every further
    # input shape costs each PackedConv a weight reorder once its few packed shapes are taken
    return tuple(1 << (max(1, budget // n).bit_length() - 1) for n in (motion, decoder))  # type: ignore[return-value]


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` with ``bn`` in eval mode (running statistics), in float64."""
    w = conv.weight.detach().double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    shift = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(scale)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        folded.weight.copy_((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        folded.bias.copy_(((bias - bn.running_mean.double()) * scale + shift).to(conv.weight.dtype))
    return folded.to(conv.weight.device)


def fold_all_batchnorms(module: nn.Module) -> int:
    """Fold every ``Sequential(Conv2d, BatchNorm2d, ...)`` in place (G_T's ConvBlocks); returns the count."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d) \
                and isinstance(m[1], nn.BatchNorm2d):
            m[0] = fold_batchnorm(m[0], m[1])
            m[1] = nn.Identity()
            n += 1
    return n


@dataclass
class FastIdentity:
    """One photo's per-identity work (batch 1; frames broadcast it): E_T's skips (channels_last, compute
    dtype), the same skips as the ``(H * W, C)`` rows the warp gathers from, each AdaIN layer's per-channel
    scale ``1 + γ`` and shift ``β`` (fp32), the photo, and f_t's share of the two motion convolutions that
    read it (a convolution of a concatenation is the sum of its parts: f_t's part is the same every frame)."""

    skips: list[Tensor]
    rows: list[Tensor]
    adain: list[tuple[Tensor, Tensor]]
    image: Tensor  # (1, 3, S, S) fp32
    image_rows: Tensor  # (S * S, 3) fp32
    enc1_ft: Tensor  # f_t's term of the motion encoder's first convolution (no bias)
    up2_ft: Tensor  # f_t's term of the motion decoder's last convolution (no bias)


class FastTextureGenerator(nn.Module):
    """G_T in eval mode for rendering only: :meth:`encode_identity` once per photo, then
    :meth:`forward` per batch of driven landmarks. Works on a deep copy; ``generator`` is not touched."""

    def __init__(self, generator: TextureGenerator, precision: str = "auto",
                 device: torch.device | str | None = None, channels_last: bool = True, compile: bool = False):
        super().__init__()
        dev = torch.device(device) if device is not None else next(generator.parameters()).device
        self.device = dev
        self.dtype = resolve_precision(precision, dev)
        self.precision = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        self.memory_format = _CL if channels_last else torch.contiguous_format
        G = copy.deepcopy(generator).to(dev).eval()
        for p in G.parameters():
            p.requires_grad_(False)
        self.cfg = G.cfg
        self.folded = fold_all_batchnorms(G)
        mot = G.motion
        heads = nn.Conv2d(mot.flow_head.in_channels, mot.occlusion_head.out_channels + 2, 3, padding=1).to(dev)
        with torch.no_grad():  # [occlusion logits, flow] from one convolution
            heads.weight.copy_(torch.cat([mot.occlusion_head.weight, mot.flow_head.weight]))
            heads.bias.copy_(torch.cat([mot.occlusion_head.bias, mot.flow_head.bias]))
        self.heads = heads
        self.occ_channels = mot.occlusion_head.out_channels
        self.G = G
        for m in list(G.modules()) + [heads]:  # convolutions in the compute dtype and layout
            if isinstance(m, nn.Conv2d):
                m.to(dtype=self.dtype, memory_format=self.memory_format)
        self.convs = self._pack(G, heads)
        self._grids: dict[tuple[int, int], Tensor] = {}
        #: frames per pass of the motion network and of the decoder (``None``: the whole batch), see CHUNK_BYTES
        self.motion_chunk, self.decoder_chunk = chunk_frames(self.cfg, self.dtype) if dev.type == "cpu" \
            else (None, None)
        self._body = torch.compile(self._forward, dynamic=False) if compile else self._forward

    @staticmethod
    def _pack(G: TextureGenerator, heads: nn.Conv2d) -> nn.ModuleDict:
        """Every convolution as a :class:`PackedConv` (up blocks: :class:`UpConv` / :class:`UpCatConv`, the
        output layer in fp32: :class:`RowTapConv`, both chosen by per-layer measurement at 256²); the two
        motion convolutions that read f_t split into f_t's part (computed per identity) and the rest."""
        mot, dec, c4 = G.motion, G.decoder, G.cfg.channels * 4
        cpu = dec.out.weight.device.type == "cpu"  # the rewrites below were measured on CPUs only
        fp32 = dec.out.weight.dtype == torch.float32
        up_cat = UpSplitConv if cpu and fp32 else UpCatConv
        cin = mot.enc1[0].in_channels  # f_t (4c) + heatmaps
        c8 = mot.up2.conv[0].in_channels - cin  # the upsampled motion features
        c16, c2, c = mot.up1.conv[0].in_channels - c8, c4 // 2, c4 // 4  # up1 reads [up(16c), m1 (8c)]
        P = {"enc1_ft": PackedConv.of(mot.enc1[0], [slice(0, c4)], bias=False),
             "enc1_fh": PackedConv.of(mot.enc1[0], [slice(c4, cin)]),
             "enc2": PackedConv.of(mot.enc2[0]), "fuse": PackedConv.of(mot.fuse[0], [slice(0, 4 * c4)]),
             "fuse_e": BroadcastConv(mot.fuse[0], slice(4 * c4, mot.fuse[0].in_channels)),
             "mup1": up_cat(mot.up1.conv[0], slice(0, c16), [slice(c16, c16 + c8)]),
             "mup2_ft": PackedConv.of(mot.up2.conv[0], [slice(c8, c8 + c4)], bias=False),
             "mup2": UpCatConv(mot.up2.conv[0], slice(0, c8), [slice(c8 + c4, c8 + cin)]),
             "heads": PackedConv.of(heads), "inp": PackedConv.of(dec.inp[0]),
             "dup1": up_cat(dec.up1.conv[0], slice(0, c4), [slice(c4, c4 + c2)]),
             "dup2": (UpConv if cpu else UpCatConv)(dec.up2.conv[0], slice(0, c2), [slice(c2, c2 + c)]),
             "out": RowTapConv(dec.out) if cpu and fp32 else PackedConv.of(dec.out)}
        for i, blk in enumerate(dec.blocks):
            P[f"b{i}c1"], P[f"b{i}c2"] = PackedConv.of(blk.conv1), PackedConv.of(blk.conv2)
        return nn.ModuleDict(P)

    # --- helpers ------------------------------------------------------------------------------------
    def _cl(self, x: Tensor) -> Tensor:
        return x.to(self.dtype).contiguous(memory_format=self.memory_format)

    def _grid(self, h: int, w: int) -> Tensor:
        g = self._grids.get((h, w))
        if g is None:
            g = self._grids[(h, w)] = identity_grid(h, w, self.device, torch.float32)
        return g

    @staticmethod
    def _resample(x: Tensor, size: tuple[int, int]) -> Tensor:
        """The training forward's rule: bilinear up to a finer grid, local mean down to a coarser one."""
        if x.shape[-2:] == size:
            return x
        if x.shape[-2] < size[0]:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.adaptive_avg_pool2d(x, size)

    # --- per photo ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_identity(self, image: Tensor) -> FastIdentity:
        """E_T (folded) on one ``(1, 3, S, S)`` image in [-1, 1], plus everything else per-identity."""
        S = self.cfg.image_size
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3 or tuple(image.shape[-2:]) != (S, S):
            raise InputError(f"identity image must be (1, 3, {S}, {S}) in [-1, 1], got {tuple(image.shape)}")
        image = image.to(self.device, torch.float32)
        skips = [s.contiguous(memory_format=self.memory_format) for s in self.G.identity_encoder(self._cl(image))]
        style = style_statistics(skips[-1].float())
        adain = []
        for blk in self.G.decoder.blocks:
            for norm in (blk.norm1, blk.norm2):
                gamma, beta = norm.affine(style)[0].float().chunk(2)
                adain.append(((1 + gamma).contiguous(), beta.contiguous()))
        f_t = skips[-1]
        return FastIdentity(skips, [nhwc_rows(s.contiguous(memory_format=_CL)) for s in skips], adain, image,
                            nhwc_rows(image).contiguous(), self.convs["enc1_ft"](f_t), self.convs["mup2_ft"](f_t))

    # --- per batch ----------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, ident: FastIdentity, neutral_landmarks: Tensor, driven_landmarks: Tensor,
                emotion: Tensor) -> dict[str, Tensor]:
        """``image`` (B, 3, S, S) fp32 in [-1, 1], ``flow`` and ``occlusion`` as the training module's."""
        B = driven_landmarks.shape[0]
        neutral = neutral_landmarks.to(self.device, torch.float32).expand(B, -1, -1)
        driven = driven_landmarks.to(self.device, torch.float32)
        emotion = emotion.to(self.device, torch.float32)
        if emotion.shape[0] not in (1, B):
            raise InputError(f"{B} frames but {emotion.shape[0]} emotion vectors")
        return self._body(ident, neutral, driven, emotion)

    def _forward(self, ident: FastIdentity, neutral: Tensor, driven: Tensor, emotion: Tensor) -> dict[str, Tensor]:
        B = driven.shape[0]
        n = self.motion_chunk or B
        parts = [self._motion(ident, neutral[i:i + n], driven[i:i + n],
                              emotion if emotion.shape[0] == 1 else emotion[i:i + n]) for i in range(0, B, n)]
        flow, occ, occ_maps = (torch.cat(t) if len(parts) > 1 else t[0] for t in zip(*parts))
        n = self.decoder_chunk or B
        image = torch.empty(B, 3, *ident.image.shape[-2:], device=self.device)
        for i in range(0, B, n):  # the decoder frame by frame on CPUs (see _decode), whole on GPUs
            image[i:i + n] = self._decode(ident, flow[i:i + n], occ[i:i + n], occ_maps[i:i + n])
        return {"image": image, "flow": flow, "occlusion": occ}

    def _motion(self, ident: FastIdentity, neutral: Tensor, driven: Tensor, emotion: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """The motion network for a chunk of frames: ``flow`` (prior included), ``occ``, ``occ_maps`` (fp32)."""
        cfg, G, P, B = self.cfg, self.G, self.convs, driven.shape[0]
        f_h = heatmap_difference(neutral, driven, cfg.image_size, cfg.heatmap_size, cfg.heatmap_sigma)
        # the Gaussians' far tails are subnormal floats (~3 % of f_h at 256²), which x86 multiplies in
        # microcode: the two fp32 convolutions reading f_h ran 5x / 1.6x slower (42 -> 8 ms, 153 -> 97 ms a
        # frame). Zeroing them changes the result by < 1e-37 (AMX's bf16 path flushes them itself)
        f_h = self._cl(f_h.masked_fill_(f_h.abs() < _TINY, 0.0))
        m1 = P["enc1_fh"](f_h, relu=True, add=ident.enc1_ft)  # = enc1([f_t, f_h]) with f_t's term cached
        f_m = P["enc2"](m1, relu=True)
        f_e = G.emotion_encoder(emotion).expand(B, -1)
        fused = P["fuse"](f_m, relu=True, add=P["fuse_e"](f_e, tuple(f_m.shape[-2:])))  # = fuse([f_m, f_e broadcast])
        d1 = P["mup1"](fused, m1, relu=True)  # = conv([up(fused), m1])
        d2 = P["mup2"](d1, f_h, relu=True, add=ident.up2_ft)
        heads = P["heads"](d2).float()
        logits, flow = heads[:, :self.occ_channels], torch.tanh(heads[:, self.occ_channels:])
        occ_maps = torch.softmax(logits, dim=1) if cfg.occlusion == "softmax" else torch.sigmoid(logits)
        if cfg.prior_flow:
            prior = G.prior_flow(neutral, driven).float()
            flow = (prior + self._resample(flow, tuple(prior.shape[-2:]))).clamp(-1.0, 1.0)
        return flow, occ_maps[:, :1], occ_maps

    def _decode(self, ident: FastIdentity, flow: Tensor, occ: Tensor, occ_maps: Tensor) -> Tensor:
        """D_T (warps, AdaIN bottleneck, up blocks, output layer, image skip) for a chunk of frames."""
        cfg, G, P, B = self.cfg, self.G, self.convs, flow.shape[0]
        f_t = ident.skips[-1]
        taps: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

        def warp(rows: Tensor, size: tuple[int, int], gated: bool) -> Tensor:  # backward warp, one set of taps per size
            if size not in taps:
                grid = self._grid(*size) + self._resample(flow, size).permute(0, 2, 3, 1)
                taps[size] = bilinear_taps(grid, size)
            idx, w = taps[size]
            if gated:
                w = w * self._resample(occ, size).reshape(-1, 1)
            return gather_warp(rows, (idx, w), (B, *size))

        if cfg.flow_mode == "warp":
            skips = [warp(r, tuple(s.shape[-2:]), True) for r, s in zip(ident.rows, ident.skips)]
            dec_in = skips[-1]
        else:
            skips = [s.expand(B, -1, -1, -1) for s in ident.skips]
            flow_in = self._resample(flow, tuple(f_t.shape[-2:]))
            dec_in = torch.cat([self._cl(flow_in), self._cl(occ_maps), f_t.expand(B, -1, -1, -1)], dim=1)
        h = P["inp"](dec_in, relu=True)
        for i in range(len(G.decoder.blocks)):
            r = P[f"b{i}c1"](adain_relu(h, *ident.adain[2 * i]))
            h = P[f"b{i}c2"](adain_relu(r, *ident.adain[2 * i + 1]), add=h)
        d1 = P["dup1"](h, skips[1], relu=True)
        d2 = P["dup2"](d1, skips[0], relu=True)
        o = P["out"](d2).float()
        if cfg.image_skip:
            decoded, mask = torch.tanh(o[:, :3]), torch.sigmoid(o[:, 3:4])
            return mask * warp(ident.image_rows, tuple(ident.image.shape[-2:]), False) + (1 - mask) * decoded
        return torch.tanh(o)


# ------------------------------------------------------------------------------------------- batch size
def default_tuner(fast: FastTextureGenerator) -> BatchTuner:
    cfg = fast.cfg
    key = (f"{machine_key(fast.device)}|S{cfg.image_size}|c{cfg.channels}|b{cfg.bottleneck_blocks}|"
           f"{cfg.flow_mode}|skip{int(cfg.image_skip)}|prior{int(cfg.prior_flow)}|{fast.precision}")
    return BatchTuner(key, batch_candidates(fast.device), user_dir() / "texture_batch.json")


def render_batches(fast: FastTextureGenerator, ident: FastIdentity, neutral: Tensor, driven: Tensor,
                   emotion: Tensor, tuner: BatchTuner | None = None) -> Tensor:
    """Images ``(T, 3, S, S)`` for ``T`` driven landmark sets, in batches chosen by ``tuner``."""
    T, out, i = driven.shape[0], [], 0
    while i < T:
        b = tuner.next_batch(T - i) if tuner is not None else T - i
        e = emotion if emotion.shape[0] == 1 else emotion[i:i + b]
        t0 = time.perf_counter()
        img = fast(ident, neutral, driven[i:i + b], e)["image"]
        if fast.device.type == "cuda":
            torch.cuda.synchronize(fast.device)
        if tuner is not None:
            tuner.record(b, time.perf_counter() - t0)
        out.append(img)
        i += b
    return torch.cat(out) if len(out) > 1 else out[0]
