"""Inference-only G_T: the same function as :class:`~emotalk.models.texture_generator.TextureGenerator` in
eval mode, arranged for speed (issue 16 §1). The training module is wrapped, never edited.

Why each change (measured with ``benchmarks/bench_texture.py`` and a per-layer profile, 256², c = 64):

- **BatchNorm folded into the convolutions.** In eval mode BatchNorm is a per-channel affine map of the
  convolution's output, so ``BN(conv(x)) = conv'(x)`` with scaled weights and a bias; one pass over the
  activations less per block (the profile showed batch-norm growing with the batch).
- **channels_last.** oneDNN (CPU) and cuDNN (tensor cores) run NHWC convolutions natively; in NCHW every
  convolution reorders its input and output ("copy_" in the profile).
- **Flow and occlusion resampled once per resolution.** The training forward upsamples the flow for every
  warped tensor (the S x S skip and the S x S photo get the same upsampling twice) and rebuilds the
  sampling grid each time; here each resolution's grid and gate are made once per batch.
- **Per-identity work done once.** E_T, the AdaIN style, each AdaIN layer's scale and bias (they depend
  only on the photo) are computed when the identity is encoded; AdaIN becomes one fused ``x * a + b``.
- **The two S/4 heads (occlusion, flow) as one convolution** (a 2-channel output wastes a GEMM's width).
- **bf16 where the hardware has it natively** (``precision="auto"``: CPUs with AMX or AVX512-BF16, CUDA
  GPUs with native bf16): weights stored in bf16 once (no per-call autocast casts), warping, softmax,
  statistics and the output in fp32. On a CPU without native bf16 (e.g. AVX2-only) it would be emulated
  and slower, so ``auto`` means fp32 there. fp32 results equal the training module's to float tolerance
  (tests/test_fast_texture.py); bf16 ones to bf16 rounding.
- **The batch is measured, not a constant** (:class:`BatchTuner`): the first frames of a video are
  rendered at each candidate batch size, the fastest frames/s wins (real frames, nothing is wasted) and is
  cached per machine, model shape and precision in ``<user dir>/texture_batch.json``.

``torch.compile`` is an opt-in (``compile=True``): inductor's first compile of this graph takes tens of
seconds on a 2-core CPU, more than a short video's whole rendering time.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import platform
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.errors import InputError
from emotalk.inference.checkpoints import user_dir
from emotalk.models.heatmap import heatmap_difference
from emotalk.models.texture_blocks import identity_grid, style_statistics
from emotalk.models.texture_generator import TextureGenerator
from emotalk.utils.device import cuda_bf16_native
from emotalk.utils.io import atomic_write_text

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
_CL = torch.channels_last


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 convolutions natively (not emulated through fp32)."""
    if device.type == "cuda":
        return cuda_bf16_native(device)
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


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
    """One photo's per-identity work: E_T's skips (channels_last, compute dtype), the AdaIN scale/bias of
    every bottleneck layer, the photo itself (``image_skip``). Batch 1; frames broadcast it."""

    skips: list[Tensor]
    adain: list[tuple[Tensor, Tensor]]  # (1 + γ, β) per AdaIN layer, (1, C, 1, 1) fp32
    image: Tensor  # (1, 3, S, S) fp32
    sources: list[Tensor]  # the skips as fp32 NCHW: what grid_sample reads (converted once, not per batch)


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
        self._grids: dict[tuple[int, int], Tensor] = {}
        self._body = torch.compile(self._forward, dynamic=False) if compile else self._forward

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

    def _up(self, block: nn.Module, x: Tensor, skip: Tensor) -> Tensor:
        """UpBlock: ×2 bilinear, concatenation with the skip, folded conv + ReLU."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return block.conv(torch.cat([x, skip.expand(x.shape[0], -1, -1, -1)], dim=1))

    # --- per photo ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_identity(self, image: Tensor) -> FastIdentity:
        """E_T (folded) on one ``(1, 3, S, S)`` image in [-1, 1], plus everything else per-identity."""
        S = self.cfg.image_size
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3 or tuple(image.shape[-2:]) != (S, S):
            raise InputError(f"identity image must be (1, 3, {S}, {S}) in [-1, 1], got {tuple(image.shape)}")
        image = image.to(self.device, torch.float32)
        skips = self.G.identity_encoder(self._cl(image))
        style = style_statistics(skips[-1].float())
        adain = []
        for blk in self.G.decoder.blocks:
            for norm in (blk.norm1, blk.norm2):
                gamma, beta = norm.affine(style).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
                adain.append((1 + gamma, beta))
        return FastIdentity([s.contiguous(memory_format=self.memory_format) for s in skips], adain, image,
                            [s.float().contiguous() for s in skips])

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

    def _adain(self, x: Tensor, scale: Tensor, beta: Tensor) -> Tensor:
        """ReLU(AdaIN(x)) with instance statistics in fp32, as one ``x * a + b``."""
        var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False, keepdim=True)
        a = scale * torch.rsqrt(var + 1e-5)
        return torch.relu(torch.addcmul(beta - mean * a, x.float(), a)).to(self.dtype)

    def _forward(self, ident: FastIdentity, neutral: Tensor, driven: Tensor, emotion: Tensor) -> dict[str, Tensor]:
        cfg, G, B = self.cfg, self.G, driven.shape[0]
        f_t = ident.skips[-1]
        f_h = heatmap_difference(neutral, driven, cfg.image_size, cfg.heatmap_size, cfg.heatmap_sigma)
        x = torch.cat([f_t.expand(B, -1, -1, -1), self._cl(f_h)], dim=1)
        mot = G.motion
        m1 = mot.enc1(x)
        f_m = mot.enc2(m1)
        f_e = G.emotion_encoder(emotion)
        e = f_e[:, :, None, None].to(self.dtype).expand(B, -1, *f_m.shape[-2:])
        fused = mot.fuse(torch.cat([f_m, e], dim=1))
        d2 = self._up(mot.up2, self._up(mot.up1, fused, m1), x)
        heads = self.heads(d2).float()
        logits, flow = heads[:, :self.occ_channels], torch.tanh(heads[:, self.occ_channels:])
        occ_maps = torch.softmax(logits, dim=1) if cfg.occlusion == "softmax" else torch.sigmoid(logits)
        occ = occ_maps[:, :1]
        if cfg.prior_flow:
            prior = G.prior_flow(neutral, driven).float()
            flow = (prior + self._resample(flow, tuple(prior.shape[-2:]))).clamp(-1.0, 1.0)
        grids: dict[tuple[int, int], Tensor] = {}

        def sample(f: Tensor) -> Tensor:  # backward warp; one grid per resolution per batch
            size = tuple(f.shape[-2:])
            if size not in grids:
                grids[size] = self._grid(*size) + self._resample(flow, size).permute(0, 2, 3, 1)
            return F.grid_sample(f.float().expand(B, -1, -1, -1), grids[size], mode="bilinear",
                                 padding_mode="border", align_corners=False)

        if cfg.flow_mode == "warp":
            skips = [self._cl(sample(s) * self._resample(occ, tuple(s.shape[-2:]))) for s in ident.sources]
            dec_in = skips[-1]
        else:
            skips = list(ident.skips)
            flow_in = self._resample(flow, tuple(f_t.shape[-2:]))
            dec_in = torch.cat([self._cl(flow_in), self._cl(occ_maps), f_t.expand(B, -1, -1, -1)], dim=1)
        dec = G.decoder
        h = dec.inp(dec_in)
        for i, blk in enumerate(dec.blocks):
            r = blk.conv1(self._adain(h, *ident.adain[2 * i]))
            h = h + blk.conv2(self._adain(r, *ident.adain[2 * i + 1]))
        d2 = self._up(dec.up2, self._up(dec.up1, h, skips[1]), skips[0])
        o = dec.out(d2).float()
        if cfg.image_skip:
            decoded, mask = torch.tanh(o[:, :3]), torch.sigmoid(o[:, 3:4])
            image = mask * sample(ident.image) + (1 - mask) * decoded
        else:
            image = torch.tanh(o)
        return {"image": image.contiguous(), "flow": flow, "occlusion": occ}


# ------------------------------------------------------------------------------------------- batch size
def batch_candidates(device: torch.device) -> tuple[int, ...]:
    return (8, 16, 32, 64) if device.type == "cuda" else (1, 2, 4, 8)


def machine_key(device: torch.device) -> str:
    """What the best batch depends on besides the model: the processor and the thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu:{name}:{torch.get_num_threads()}threads"


class BatchTuner:
    """Chooses the frames-per-forward of G_T by measurement on the frames being rendered.

    Each candidate batch size is timed twice on real work (the first call of a shape includes oneDNN /
    cuDNN set-up; the better of the two counts); then the batch with the best frames/s is kept (ties
    within 2 % go to the smaller batch: less latency and memory) - so frames/s at the chosen batch is
    never below batch 1's. The choice is stored under ``key`` in ``cache`` (JSON) and reused by the next
    run on the same machine and model.
    """

    TIE = 1.02

    def __init__(self, key: str, candidates: tuple[int, ...], cache: str | os.PathLike | None = None):
        self.key, self.candidates = key, tuple(sorted(set(int(c) for c in candidates)))
        self.cache = cache
        self.per_frame: dict[int, list[float]] = {}
        self.chosen: int | None = None
        if cache is not None:
            try:
                with open(cache) as f:
                    hit = json.load(f).get(key)
                if isinstance(hit, int) and hit >= 1:
                    self.chosen = hit
            except (OSError, ValueError, AttributeError):
                pass

    @property
    def default(self) -> int:
        """The batch to ask the pipeline for: the chosen one, or the largest candidate while measuring."""
        return self.chosen or self.candidates[-1]

    def next_batch(self, remaining: int) -> int:
        if self.chosen is not None:
            return min(self.chosen, remaining)
        for b in self.candidates:
            if b <= remaining and len(self.per_frame.get(b, ())) < 2:
                return b
        return min(self.candidates[-1], remaining)

    def record(self, batch: int, seconds: float) -> None:
        if self.chosen is not None or batch not in self.candidates:
            return
        self.per_frame.setdefault(batch, []).append(seconds / batch)
        if all(len(self.per_frame.get(b, ())) >= 2 for b in self.candidates):
            best = {b: min(ts) for b, ts in self.per_frame.items()}
            fastest = min(best.values())
            self.chosen = min(b for b, t in best.items() if t <= fastest * self.TIE)
            log.info("G_T batch chosen by measurement: %d (%s)", self.chosen,
                     ", ".join(f"b={b}: {1 / t:.3g} frames/s" for b, t in sorted(best.items())))
            self._save()

    def _save(self) -> None:
        if self.cache is None:
            return
        try:
            with open(self.cache) as f:
                data = json.load(f)
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        data[self.key] = self.chosen
        try:
            os.makedirs(os.path.dirname(os.fspath(self.cache)) or ".", exist_ok=True)
            atomic_write_text(self.cache, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as e:  # a read-only home only costs the next run its measurement
            log.debug("could not cache the G_T batch choice in %s: %s", self.cache, e)


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
