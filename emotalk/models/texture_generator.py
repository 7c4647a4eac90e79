"""Texture generator G_T and frame discriminator D (§3.2; appendix "Network Architectures").

G_T turns one neutral identity image ``I_n`` plus a neutral landmark graph G, a driven graph G' and an
emotion control vector into the frame ``I_E``. With ``c = round(base_channels * width_mult)`` and
``S = image_size`` (paper: c = 64, S = 256) the layers are::

    E_T   identity encoder    S×S×c  ->  S/2×S/2×2c  ->  S/4×S/4×4c  (= f_t; all three are skips to D_T)
    f_h   heatmap difference  S/4×S/4×69  (68 Gaussians + background, driven minus neutral; heatmap.py)
    motion encoder            [f_t ⊕ f_h] (4c + 69 = 325 ch) -> S/8×S/8×8c -> S/16×S/16×16c (= f_m)
    E_E   emotion encoder     control vector -> f_e (128), broadcast over S/16×S/16 and concatenated to f_m
    motion decoder            S/16×S/16×16c -> S/8×S/8×8c -> S/4×S/4×4c (U-Net skips from the encoder)
    heads at S/4              occlusion map (softmax over [visible, occluded]) and optical flow (tanh, 2 ch)
    D_T   image decoder       S/4×S/4×4c (AdaIN bottleneck) -> S/2×S/2×2c -> S×S×c -> S×S×3 (tanh)

At the paper config this is exactly the appendix: E_T 256²×64, 128²×128, 64²×256; 325 channels into the
motion encoder; a 16×16×1024 bottleneck; decoder 16²×1024, 32²×512, 64²×256; flow/occlusion at 64×64;
D_T 64²×256, 128²×128, 256²×64, 256²×3.

Conventions
-----------
- Images (input identity image and output ``image``) are RGB in **[-1, 1]**, ``(B, 3, S, S)``.
- Landmarks are crop pixels of the S×S image, pixel-index convention (see :mod:`emotalk.models.heatmap`).
- ``flow`` ``(B, 2, S/4, S/4)`` (with ``prior_flow``: ``S / flow_stride``) in [-1, 1] is a *backward*
  displacement in normalised image coordinates (``grid_sample``'s [-1, 1] span, ``align_corners=False``),
  channel 0 = x, channel 1 = y: output position p takes identity features from ``p + flow(p)``. The flow head starts at zero, i.e. at
  the identity warp (with ``prior_flow``: at the landmark prior flow). It is resolution independent, so
  it is bilinearly upsampled to warp the S/2 and S skips (and, with ``image_skip``, the S x S photo).
- ``occlusion`` ``(B, 1, S/4, S/4)`` in [0, 1] is the *visibility* weight (FOMM's convention): 1 = the
  warped identity feature is valid there, 0 = D_T must generate the content (e.g. the inside of an opening
  mouth). The paper says "softmax": with ``occlusion: softmax`` (default) the head predicts two logits
  [visible, occluded] and ``occlusion`` is the softmax probability of "visible"; ``occlusion: sigmoid`` is
  the equivalent one-logit form.

``flow_mode``
-------------
The paper's eq. (5) reads ``I_E = D_T(OF ⊕ OM, f_t)``: D_T receives the concatenated flow and occlusion
maps, with f_t entering through AdaIN and the skips. Taken literally the flow is then just another input
feature and nothing forces it to act as a displacement. Two readings are implemented so they can be
compared:

- ``warp`` (default): flow-guided generation as in FOMM (Siarohin et al. 2019): the E_T features at every
  resolution (f_t and both skips) are warped with the predicted flow (``grid_sample``) and gated by the
  occlusion map before D_T decodes them.
- ``concat``: the literal reading: D_T's first layer gets ``flow ⊕ occlusion-softmax ⊕ f_t`` and the skips
  are the unwarped E_T features.

``image_skip`` (off by default, not in the paper): D_T's last layer also predicts a mask m and the output
is ``m · warp(I_n, flow) + (1 - m) · D_T's image``: the flow-warped identity image is available to the output
directly, so a briefly trained model starts from "copy the (warped) photo" instead of from a blurry
reconstruction (useful for small CPU runs; the decoder still paints whatever the warp cannot explain).
The warped photo is sampled at full S x S resolution with the bilinearly upsampled flow, so where the warp
explains the motion the output keeps the photo's sharpness.

``prior_flow`` (off by default, not in the paper): the landmarks already say how the face moves, but a
briefly trained flow head learns almost nothing (it starts at zero, the identity warp, and the frames differ
from the photo mostly in a few pixels around the mouth). With ``prior_flow: true`` a dense backward flow is
interpolated from the sparse landmark motion G -> G' (:func:`emotalk.models.heatmap.landmark_prior_flow`: a
normalised Gaussian-weighted average of the landmark displacements around the driven landmarks, ``σ =
prior_flow_sigma`` x the outer-eye-corner distance, with a zero-displacement background term of weight
``prior_flow_background`` so everything away from the face stays put) and the flow head predicts a
*residual*: ``flow = clamp(prior + tanh(head), -1, 1)``. The motion is then right from step 0 and training
refines it; the occlusion map and D_T still handle what a warp cannot (the inside of an opening mouth).
No parameters are added (checkpoints keep their keys); ``prior_flow`` and ``flow_residual`` are returned.

``prior_flow_kind: mesh`` replaces the Gaussian interpolation by the piecewise-affine warp of a fixed
triangulation of the landmarks (:mod:`emotalk.models.mesh_flow`, the warp baseline's geometry). Why: in
a blink the upper lid travels the whole eye opening while the lower lid, a few pixels below, stays; any
smooth average of the two displacements samples the open eye, and the rendered eye never closes (seen in
the demo). The mesh keeps the lids apart: the eye's triangles collapse and the lid skin covers the eye;
``lid_slide`` then moves the upper lid as a plate (:func:`emotalk.models.heatmap.lid_slide_flow`).
``flow_stride`` puts the prior (and so the final flow) on a finer grid than the motion network's S/4
(2: S/2, 1: full resolution): at 128² the lid's ~4 px travel is 1 px on the S/4 grid. The learned
residual stays at S/4 and is bilinearly upsampled before it is added; ``flow`` is then ``(B, 2, S /
flow_stride, S / flow_stride)`` and is averaged down onto the coarser E_T features it warps.

In both modes the D_T bottleneck is ``bottleneck_blocks`` residual blocks with AdaIN (Huang & Belongie
2017) whose style is E_T's output f_t summarised by its per-channel mean and standard deviation; a learned
linear map per AdaIN layer turns those statistics into that layer's scale and bias
(``(1 + γ) · IN(x) + β``).

Normalisation elsewhere is BatchNorm (as in FOMM): instance normalisation in E_T would erase the very
colour/illumination statistics that AdaIN is meant to carry. One-shot fine-tuning keeps BatchNorm in
eval mode (running statistics), see :mod:`emotalk.inference.one_shot`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emotalk.errors import ConfigError
from emotalk.models.emotion_encoder import EmotionEncoder
from emotalk.models.heatmap import NUM_HEATMAP_CHANNELS, heatmap_difference, landmark_prior_flow, lid_slide_flow
from emotalk.models.mesh_flow import mesh_prior_flow
from emotalk.models.texture_blocks import (AdaIN, AdaINResBlock, ConvBlock, FrameDiscriminator,  # noqa: F401
                                           UpBlock, identity_grid, style_statistics, warp)

#: default control-vector vocabulary (MEAD's 8 emotions, 3 levels); callers pass the dataset's own
#: (``emotalk.data.emotions``) - models/ does not import data/
DEFAULT_EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
DEFAULT_INTENSITY_LEVELS = 3


@dataclass
class TextureModelConfig:
    image_size: int = 256  # S: crop size G_T works at (multiple of 16)
    base_channels: int = 64  # c at width_mult 1 (the paper's widths)
    width_mult: float = 1.0  # scales every width: c = round(base_channels * width_mult)
    emotions: list[str] = field(default_factory=lambda: list(DEFAULT_EMOTIONS))  # control-vector vocabulary
    intensity_levels: int = DEFAULT_INTENSITY_LEVELS
    emotion_feature_dim: int = 128  # f_e
    heatmap_sigma: float = 1.0  # Gaussian σ in heatmap pixels (heatmaps are S/4 × S/4)
    flow_mode: Literal["warp", "concat"] = "warp"
    occlusion: Literal["softmax", "sigmoid"] = "softmax"
    bottleneck_blocks: int = 2  # AdaIN residual blocks at D_T's bottleneck
    image_skip: bool = False  # beyond the paper: blend D_T's image with the flow-warped identity image
    prior_flow: bool = False  # beyond the paper: flow = landmark-interpolated prior flow + learned residual
    prior_flow_kind: Literal["gaussian", "mesh"] = "gaussian"  # how the prior interpolates the landmarks
    prior_flow_sigma: float = 0.1  # gaussian prior's σ, in outer-eye-corner distances of the neutral face
    prior_flow_background: float = 0.01  # gaussian prior: weight of the zero-displacement background (> 0)
    flow_stride: int = 4  # the flow's grid is S / flow_stride (4: the paper's S/4; 1 or 2 with prior_flow)
    lid_slide: bool = False  # mesh prior: upper lids slide rigidly instead of stretching (heatmap.lid_slide_flow)
    # frame discriminator D (PatchGAN)
    disc_channels: int = 64
    disc_layers: int = 3

    @property
    def channels(self) -> int:
        return max(1, int(round(self.base_channels * self.width_mult)))

    @property
    def emotion_dim(self) -> int:
        return len(self.emotions) + self.intensity_levels

    @property
    def heatmap_size(self) -> int:
        return self.image_size // 4

    @property
    def flow_size(self) -> int:
        """Side of the returned ``flow``: S/4 unless ``prior_flow`` puts the prior on a finer grid."""
        return self.image_size // self.flow_stride if self.prior_flow else self.heatmap_size

    def validate(self) -> None:
        if self.image_size < 16 or self.image_size % 16:
            raise ConfigError(f"model.image_size must be a multiple of 16 (>= 16), got {self.image_size}")
        if self.base_channels < 1 or self.width_mult <= 0:
            raise ConfigError("model.base_channels must be >= 1 and model.width_mult > 0")
        if self.flow_mode not in ("warp", "concat"):
            raise ConfigError(f"model.flow_mode must be 'warp' or 'concat', got {self.flow_mode!r}")
        if self.occlusion not in ("softmax", "sigmoid"):
            raise ConfigError(f"model.occlusion must be 'softmax' or 'sigmoid', got {self.occlusion!r}")
        if not self.emotions or self.intensity_levels < 1:
            raise ConfigError("model.emotions must be non-empty and model.intensity_levels >= 1")
        if self.heatmap_sigma <= 0:
            raise ConfigError("model.heatmap_sigma must be > 0")
        if self.prior_flow_sigma <= 0 or self.prior_flow_background <= 0:
            raise ConfigError("model.prior_flow_sigma and model.prior_flow_background must be > 0")
        if self.prior_flow_kind not in ("gaussian", "mesh"):
            raise ConfigError(f"model.prior_flow_kind must be 'gaussian' or 'mesh', got {self.prior_flow_kind!r}")
        if self.flow_stride not in (1, 2, 4):
            raise ConfigError(f"model.flow_stride must be 1, 2 or 4, got {self.flow_stride}")
        if self.flow_stride != 4 and not self.prior_flow:
            raise ConfigError("model.flow_stride below 4 needs model.prior_flow: true (without a prior the "
                              "flow is the motion network's S/4 output); set flow_stride: 4 or prior_flow: true")
        if self.bottleneck_blocks < 0 or self.disc_layers < 1 or self.disc_channels < 1:
            raise ConfigError("model.bottleneck_blocks >= 0, model.disc_layers >= 1, model.disc_channels >= 1")


# ---------------------------------------------------------------------------------------------- modules
class IdentityEncoder(nn.Module):
    """E_T: image (B, 3, S, S) in [-1, 1] -> [S×S×c, S/2×S/2×2c, S/4×S/4×4c]."""

    def __init__(self, c: int):
        super().__init__()
        self.stem = ConvBlock(3, c, k=7)
        self.down1 = ConvBlock(c, 2 * c, stride=2)
        self.down2 = ConvBlock(2 * c, 4 * c, stride=2)

    def forward(self, image: Tensor) -> list[Tensor]:
        e1 = self.stem(image)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        return [e1, e2, e3]


class MotionNetwork(nn.Module):
    """[f_t ⊕ f_h] + f_e -> occlusion map and optical flow at S/4 (encoder, emotion join, decoder, heads)."""

    def __init__(self, c: int, emotion_feature_dim: int, occlusion: str):
        super().__init__()
        cin = 4 * c + NUM_HEATMAP_CHANNELS
        self.enc1 = ConvBlock(cin, 8 * c, stride=2)
        self.enc2 = ConvBlock(8 * c, 16 * c, stride=2)
        self.fuse = ConvBlock(16 * c + emotion_feature_dim, 16 * c)
        self.up1 = UpBlock(16 * c, 8 * c, 8 * c)
        self.up2 = UpBlock(8 * c, cin, 4 * c)
        self.occlusion_kind = occlusion
        self.occlusion_head = nn.Conv2d(4 * c, 2 if occlusion == "softmax" else 1, 3, padding=1)
        self.flow_head = nn.Conv2d(4 * c, 2, 3, padding=1)
        nn.init.zeros_(self.flow_head.weight)  # start at the identity warp
        nn.init.zeros_(self.flow_head.bias)

    def forward(self, f_t: Tensor, f_h: Tensor, f_e: Tensor) -> dict[str, Tensor]:
        """Returns the occlusion maps and ``flow`` (B, 2, S/4, S/4): the whole flow, or with
        ``model.prior_flow`` the residual that :class:`TextureGenerator` adds to the prior."""
        x = torch.cat([f_t, f_h], dim=1)
        m1 = self.enc1(x)
        f_m = self.enc2(m1)
        e = f_e[:, :, None, None].expand(-1, -1, *f_m.shape[-2:])
        fused = self.fuse(torch.cat([f_m, e.to(f_m.dtype)], dim=1))
        d1 = self.up1(fused, m1)
        d2 = self.up2(d1, x)
        logits = self.occlusion_head(d2)
        if self.occlusion_kind == "softmax":
            probs = torch.softmax(logits.float(), dim=1).to(logits.dtype)
            occ, occ_maps = probs[:, :1], probs
        else:
            occ = torch.sigmoid(logits)
            occ_maps = occ
        flow = torch.tanh(self.flow_head(d2))
        out = {"motion_input": x, "motion_enc1": m1, "motion_bottleneck": f_m, "motion_fused": fused,
               "motion_dec1": d1, "motion_features": d2, "occlusion_logits": logits,
               "occlusion_maps": occ_maps, "occlusion": occ, "flow": flow}
        return out


class ImageDecoder(nn.Module):
    """D_T: S/4×S/4×4c (AdaIN bottleneck) -> S/2×S/2×2c -> S×S×c -> S×S×3 with skips from E_T."""

    def __init__(self, c: int, in_channels: int, bottleneck_blocks: int, image_skip: bool = False):
        super().__init__()
        self.inp = ConvBlock(in_channels, 4 * c)
        self.blocks = nn.ModuleList([AdaINResBlock(4 * c, 8 * c) for _ in range(bottleneck_blocks)])
        self.up1 = UpBlock(4 * c, 2 * c, 2 * c)
        self.up2 = UpBlock(2 * c, c, c)
        self.image_skip = image_skip
        self.out = nn.Conv2d(c, 4 if image_skip else 3, 7, padding=3)
        if image_skip:  # start by mostly keeping the warped identity image (mask = sigmoid(2) = 0.88)
            with torch.no_grad():
                self.out.bias[3] = 2.0

    def forward(self, x: Tensor, skips: list[Tensor], style: Tensor,
                warped_image: Tensor | None = None) -> dict[str, Tensor]:
        d0 = self.inp(x)
        h = d0
        for blk in self.blocks:
            h = blk(h, style)
        d1 = self.up1(h, skips[1])
        d2 = self.up2(d1, skips[0])
        o = self.out(d2)
        out = {"decoder_input": d0, "decoder_bottleneck": h, "decoder_up1": d1, "decoder_up2": d2}
        if self.image_skip:
            decoded, mask = torch.tanh(o[:, :3]), torch.sigmoid(o[:, 3:4])
            out.update(decoded_image=decoded, image_mask=mask,
                       image=mask * warped_image.to(decoded.dtype) + (1 - mask) * decoded)
        else:
            out["image"] = torch.tanh(o)
        return out


class IdentityFeatures(NamedTuple):
    """E_T's output for one or more identity images, cached by :meth:`TextureGenerator.encode_identity`."""

    skips: list[Tensor]  # [S×S×c, S/2×S/2×2c, S/4×S/4×4c]; the last one is f_t
    style: Tensor  # (B, 8c): mean and std of f_t (AdaIN style)
    image: Tensor  # (B, 3, S, S) the identity image itself (used by ``image_skip``)

    @property
    def f_t(self) -> Tensor:
        return self.skips[-1]

    def expand(self, batch: int) -> "IdentityFeatures":
        if self.style.shape[0] == batch:
            return self
        if self.style.shape[0] != 1:
            raise ValueError(f"identity features for {self.style.shape[0]} images cannot drive a batch of "
                             f"{batch} frames (use 1 identity or one per frame)")
        return IdentityFeatures([s.expand(batch, -1, -1, -1) for s in self.skips],
                                self.style.expand(batch, -1), self.image.expand(batch, -1, -1, -1))


class TextureGenerator(nn.Module):
    """G_T. See the module docstring for shapes and conventions."""

    def __init__(self, cfg: TextureModelConfig | None = None):
        super().__init__()
        cfg = cfg or TextureModelConfig()
        cfg.validate()
        self.cfg = cfg
        c = cfg.channels
        self.identity_encoder = IdentityEncoder(c)  # E_T
        self.emotion_encoder = EmotionEncoder(cfg.emotion_dim, cfg.emotion_feature_dim)  # E_E
        self.motion = MotionNetwork(c, cfg.emotion_feature_dim, cfg.occlusion)
        occ_ch = 2 if cfg.occlusion == "softmax" else 1
        dec_in = 4 * c if cfg.flow_mode == "warp" else 4 * c + 2 + occ_ch
        self.decoder = ImageDecoder(c, dec_in, cfg.bottleneck_blocks, cfg.image_skip)  # D_T

    # --- parameter groups (one-shot fine-tuning updates only E_T and D_T) ---
    def identity_modules(self) -> dict[str, nn.Module]:
        return {"E_T": self.identity_encoder, "D_T": self.decoder}

    def identity_parameters(self) -> list[nn.Parameter]:
        """Parameters of E_T and D_T (including D_T's AdaIN maps): what one-shot fine-tuning updates."""
        return [p for m in self.identity_modules().values() for p in m.parameters()]

    def identity_parameter_names(self) -> list[str]:
        prefixes = ("identity_encoder.", "decoder.")
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]

    # --- forward ---
    @torch.no_grad()
    def prior_flow(self, neutral_landmarks: Tensor, driven_landmarks: Tensor) -> Tensor:
        """The landmark prior flow ``(B, 2, F, F)`` on the flow grid (``F = cfg.flow_size``), no gradient."""
        cfg = self.cfg
        if cfg.prior_flow_kind == "mesh":
            flow = mesh_prior_flow(neutral_landmarks, driven_landmarks, cfg.image_size, cfg.flow_size)
            if cfg.lid_slide:
                flow = lid_slide_flow(flow, neutral_landmarks, driven_landmarks, cfg.image_size)
            return flow
        return landmark_prior_flow(neutral_landmarks, driven_landmarks, cfg.image_size, cfg.flow_size,
                                   cfg.prior_flow_sigma, cfg.prior_flow_background)

    def encode_identity(self, image: Tensor) -> IdentityFeatures:
        """E_T on ``(B, 3, S, S)`` images in [-1, 1]; compute once per photo and reuse for every frame."""
        S = self.cfg.image_size
        if image.dim() != 4 or image.shape[1] != 3 or tuple(image.shape[-2:]) != (S, S):
            raise ValueError(f"identity image must be (B, 3, {S}, {S}) in [-1, 1], got {tuple(image.shape)}")
        skips = self.identity_encoder(image)
        return IdentityFeatures(skips, style_statistics(skips[-1].float()).to(skips[-1].dtype), image)

    def forward(self, identity: Tensor | IdentityFeatures, neutral_landmarks: Tensor, driven_landmarks: Tensor,
                emotion: Tensor) -> dict[str, Tensor]:
        """Generate frames.

        identity: ``(B|1, 3, S, S)`` neutral image in [-1, 1], or :class:`IdentityFeatures` from
            :meth:`encode_identity` (a single identity is broadcast over the batch).
        neutral_landmarks: ``(B|1, 68, 2)`` landmarks of the identity image (graph G), crop pixels.
        driven_landmarks: ``(B, 68, 2)`` target landmarks (graph G'), crop pixels.
        emotion: ``(B|1, E + I)`` control vector (``emotalk.data.emotions.emotion_vector``).

        Returns a dict with ``image`` (B, 3, S, S) in [-1, 1], ``flow`` (B, 2, S/4, S/4) in [-1, 1],
        ``occlusion`` (B, 1, S/4, S/4) in [0, 1], ``heatmap_diff`` (B, 69, S/4, S/4) and the
        intermediate features (``identity_*``, ``motion_*``, ``decoder_*``, ``emotion_feature``); with
        ``prior_flow`` the ``flow`` and ``prior_flow`` are ``(B, 2, S / flow_stride, ...)`` and the learned
        ``flow_residual`` is (B, 2, S/4, S/4).
        """
        cfg = self.cfg
        B = driven_landmarks.shape[0]
        feats = identity if isinstance(identity, IdentityFeatures) else self.encode_identity(identity)
        feats = feats.expand(B)
        if neutral_landmarks.shape[0] != B:
            neutral_landmarks = neutral_landmarks.expand(B, -1, -1)
        if emotion.shape[0] != B:
            emotion = emotion.expand(B, -1)
        f_t = feats.f_t
        f_h = heatmap_difference(neutral_landmarks, driven_landmarks, cfg.image_size, cfg.heatmap_size,
                                 cfg.heatmap_sigma).to(f_t.dtype)
        f_e = self.emotion_encoder(emotion.to(self.emotion_encoder.conv.weight.dtype))
        mot = self.motion(f_t, f_h, f_e)
        if cfg.prior_flow:
            residual = mot.pop("flow")
            prior = self.prior_flow(neutral_landmarks, driven_landmarks).to(residual.dtype)
            up = residual if residual.shape[-2:] == prior.shape[-2:] else F.interpolate(
                residual, size=prior.shape[-2:], mode="bilinear", align_corners=False)
            mot.update(flow_residual=residual, prior_flow=prior, flow=(prior + up).clamp(-1.0, 1.0))
        flow, occ = mot["flow"], mot["occlusion"]
        if cfg.flow_mode == "warp":
            def gate(f: Tensor) -> Tensor:
                o = occ if f.shape[-2:] == occ.shape[-2:] else F.interpolate(
                    occ, size=f.shape[-2:], mode="bilinear", align_corners=False)
                return warp(f, flow) * o.to(f.dtype)

            skips = [gate(s) for s in feats.skips]
            dec_in = skips[-1]
        else:
            skips = list(feats.skips)
            # a finer flow (flow_stride < 4) enters D_T as its local mean on f_t's S/4 grid
            flow_in = flow if flow.shape[-2:] == f_t.shape[-2:] else F.adaptive_avg_pool2d(flow, f_t.shape[-2:])
            dec_in = torch.cat([flow_in.to(f_t.dtype), mot["occlusion_maps"], f_t], dim=1)
        warped_image = warp(feats.image, flow) if cfg.image_skip else None
        dec = self.decoder(dec_in, skips, feats.style, warped_image)
        out = {"image": dec["image"], "flow": flow, "occlusion": occ, "heatmap_diff": f_h,
               "emotion_feature": f_e, "identity_e1": feats.skips[0], "identity_e2": feats.skips[1],
               "identity_f_t": f_t, "decoder_skips": skips}
        out.update({k: v for k, v in mot.items() if k not in out})
        out.update({k: v for k, v in dec.items() if k not in out})
        return out


def build_discriminator(cfg: TextureModelConfig) -> FrameDiscriminator:
    return FrameDiscriminator(max(1, int(round(cfg.disc_channels * cfg.width_mult))), cfg.disc_layers)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
