"""Training G_T (paper §3.2, §4.1): eq. (9) ``L_img = λ_rec L_rec + λ_per L_per + λ_adv L_adv``.

- L_rec, eq. (6): :mod:`emotalk.models.losses.reconstruction_loss` (λ_rec = 1);
- L_per, eq. (7): :mod:`emotalk.models.losses.perceptual_loss` (λ_per = 10), VGG16 weights from ``loss.vgg16_weights``
  or torchvision's cache, or an explicitly chosen documented alternative (``loss.perceptual``);
- L_adv, eq. (8): :mod:`emotalk.models.losses.adversarial_loss` with the PatchGAN frame discriminator (λ_adv = 1;
  0 removes the discriminator).

Beyond the paper (0 by default): ``loss.lambda_decoded`` adds the L1 of D_T's own image when
``model.image_skip`` blends it with the warped photo (see :class:`TextureLossConfig`); ``loss.lambda_eyes``
and ``loss.lambda_mouth`` add the mean L1 inside the eyes and the mouth interior
(:mod:`emotalk.models.losses.region_loss`). ``cpu_precision`` trains on a CPU under bf16 autocast (the trainer's
AMP is CUDA-only): ``auto`` where the CPU has native bf16, which halves a texture/tiny step.

Each step: colour/illumination augmentation (Fig. 9, :mod:`emotalk.data.datasets.augment`) applied identically to
the identity image and the target frame, one generator update, then one discriminator update on
``[real, fake.detach()]`` in a single forward. Ground-truth landmarks drive G_T in training (§4.1).
Validation reports the L1 of G_T's frames and of the "return the identity image" baseline.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist

from emotalk.data.datasets.augment import ColorAugmentConfig, augment_consistent
from emotalk.data.datasets.landmark import TRACKS, dataset_subjects, manifest_or_none
from emotalk.data.datasets.splits import split_subjects
from emotalk.data.datasets.texture import TextureFrameDataset
from emotalk.data.face.background import estimate_background_from_references
from emotalk.data.loading import build_model, build_perceptual_loss
from emotalk.errors import ConfigError, DataError
from emotalk.models.losses.adversarial_loss import d_loss, g_loss
from emotalk.models.losses.perceptual_loss import PerceptualLoss
from emotalk.models.losses.reconstruction_loss import reconstruction_loss
from emotalk.models.losses.region_loss import region_losses
from emotalk.models.texture_generator import TextureModelConfig, build_discriminator, count_parameters
from emotalk.train.task import OptimConfig, Task, TrainerConfig
from emotalk.utils.device import cpu_bf16_native

logger = logging.getLogger(__name__)


@dataclass
class TextureDataConfig:
    root: str = "data/processed/mead"
    split: str = ""  # a named split (configs/splits/, e.g. mead-field) | auto | "" with explicit lists
    train_subjects: list[str] = field(default_factory=list)  # with split "": explicit lists
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    frame_stride: int = 1  # use every n-th frame of each training clip
    max_clips: int = 0  # 0 = all
    val_max_frames: int = 256  # evenly spaced validation frames
    cache_clips: int = 16  # decoded clips kept per data-loader process
    augment: ColorAugmentConfig = field(default_factory=ColorAugmentConfig)
    # which crop landmarks are G and G' (data/datasets/texture.py): "detected" (the face tracker's, as for real
    # MEAD) | "exact" (the clips' true track in crop pixels: mead-mini's generator landmarks, stored beside the
    # detected ones by preprocessing; for a G_T driven by a G_L trained on that track)
    track: str = "detected"


@dataclass
class TextureLossConfig:
    lambda_rec: float = 1.0
    lambda_per: float = 10.0
    lambda_adv: float = 1.0  # 0 disables the discriminator
    # beyond the paper, for model.image_skip: L1 of D_T's own image (before the blend with the warped photo).
    # Without it D_T only learns where the mask already lets it through, and in a short run the mask can
    # settle on the (stretched) photo inside an opening mouth before D_T has learnt to paint it.
    lambda_decoded: float = 0.0
    # beyond the paper: mean L1 inside the eyes / the mouth interior (emotalk.models.losses.region_loss)
    lambda_eyes: float = 0.0
    lambda_mouth: float = 0.0
    region_margin: float = 0.1  # regions grown by this many outer-eye-corner distances
    # beyond the paper, for model.prior_flow: mean |learned residual flow| (normalised units). The mesh prior
    # already moves the lids, brows and lips exactly as the landmarks ask; a residual that a short run learns
    # at S/4 and upsamples smears that motion (measured: the eyes' expression transfer drops). The penalty
    # keeps the residual at zero wherever the prior explains the frame and lets it act where it does not.
    lambda_flow_residual: float = 0.0
    perceptual: Literal["vgg16", "vgg16-random", "none"] = "vgg16"
    vgg16_weights: str | None = None  # torchvision's vgg16-397923af.pth (else torchvision's cache dir)
    perceptual_layer_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])


@dataclass
class LRScheduleConfig:
    """Learning-rate schedule of G_T (and D) over ``train.steps`` (not in the paper, which keeps Adam's lr
    constant over 400k steps). ``cosine``: a linear warm-up over ``warmup_steps`` from 0 to ``optim.lr``, then
    a half cosine down to ``final_fraction`` x ``optim.lr`` at the last step. Why: a CPU run of a few hundred
    steps can afford a high learning rate early only if it anneals it before the end; the last steps then
    settle the blend mask and the mouth interior instead of jittering around them. ``constant``: the
    paper's."""

    kind: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    final_fraction: float = 0.05

    def factor(self, step: int, total: int) -> float:
        """The multiplier of ``optim.lr`` at 0-based ``step`` of a ``total``-step run."""
        if self.kind == "constant":
            return 1.0
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        span = max(1, total - self.warmup_steps - 1)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t))


@dataclass
class TextureTrainConfig:
    task: str = "texture"
    model: TextureModelConfig = field(default_factory=TextureModelConfig)
    data: TextureDataConfig = field(default_factory=TextureDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    loss: TextureLossConfig = field(default_factory=TextureLossConfig)
    train: TrainerConfig = field(default_factory=lambda: TrainerConfig(run_dir="runs/texture", batch_size=4))
    # G_T's arithmetic when training on a CPU (the trainer's AMP is CUDA-only): ``bf16`` runs the forward and
    # backward under bf16 autocast (weights, optimiser and losses stay fp32), ``auto`` does so only where the
    # CPU computes bf16 natively (AVX512-BF16 / AMX: a texture/tiny step at 0.48x the fp32 time, measured in
    # one process; emulated bf16 would be slower than fp32), ``fp32`` never.
    cpu_precision: Literal["auto", "fp32", "bf16"] = "fp32"

    def validate(self) -> None:
        if self.data.track not in TRACKS:
            raise ConfigError(f"data.track must be one of {list(TRACKS)}, got {self.data.track!r}")
        if self.cpu_precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"cpu_precision must be auto, fp32 or bf16, got {self.cpu_precision!r}")
        lo = self.loss
        if min(lo.lambda_rec, lo.lambda_per, lo.lambda_adv, lo.lambda_decoded, lo.lambda_eyes,
               lo.lambda_mouth, lo.region_margin, lo.lambda_flow_residual) < 0:
            raise ConfigError("loss.lambda_rec, loss.lambda_per, loss.lambda_adv, loss.lambda_decoded, "
                              "loss.lambda_eyes, loss.lambda_mouth, loss.region_margin and "
                              "loss.lambda_flow_residual must be >= 0")
        if len(lo.perceptual_layer_weights) != 4:
            raise ConfigError("loss.perceptual_layer_weights needs 4 values (relu1_2, relu2_2, relu3_3, relu4_3)")
        sc = self.lr_schedule
        if sc.kind not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule.kind must be 'constant' or 'cosine', got {sc.kind!r}")
        if sc.warmup_steps < 0 or not 0.0 <= sc.final_fraction <= 1.0:
            raise ConfigError("lr_schedule.warmup_steps must be >= 0 and lr_schedule.final_fraction in [0, 1]")


def training_backdrop(root: str) -> tuple[tuple[int, int, int] | None, str]:
    """The training data's backdrop colour and where it came from: the dataset manifest's
    ``background_rgb`` (written by preprocessing), else estimated from the subjects' reference crops (older
    datasets), else None. It is stored in every texture checkpoint so that inference never needs the
    training data folder."""
    manifest = manifest_or_none(root)
    if manifest is not None and manifest.background_rgb is not None:
        return tuple(int(v) for v in manifest.background_rgb), "dataset manifest"
    try:
        est = estimate_background_from_references(root)
    except Exception as e:  # noqa: BLE001 - optional information; training does not depend on it
        logger.warning("could not estimate the training backdrop colour from %s: %s", root, e)
        est = None
    return (est, "estimated from the subject reference crops") if est is not None else (None, "no references")


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Temporarily stop gradients into ``module``'s parameters (G's step through D)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class TextureTask(Task):
    kind = "texture"

    def __init__(self, cfg: TextureTrainConfig):
        super().__init__(cfg)
        self._datasets = None
        self.perceptual: PerceptualLoss | None = None
        self.perceptual_description = ""

    # --- construction ---
    def build_datasets(self):
        if self._datasets is None:
            d, m = self.cfg.data, self.cfg.model
            subjects = dataset_subjects(d.root)
            train_s, val_s = split_subjects(subjects, d.train_subjects, d.val_subjects, d.val_fraction,
                                           split=d.split, root=d.root)
            common = dict(image_size=m.image_size, emotions=m.emotions, intensity_levels=m.intensity_levels,
                          cache_clips=d.cache_clips, track=d.track)
            train = TextureFrameDataset(d.root, train_s, frame_stride=d.frame_stride, max_clips=d.max_clips,
                                        **common)
            if len(train) == 0:
                raise DataError(f"{d.root}: no training frames for subjects {train_s}")
            val = TextureFrameDataset(d.root, val_s, max_frames=d.val_max_frames, **common) if val_s else None
            self._datasets = (train, val)
            self.subjects = {"train": train_s, "val": val_s}
        return self._datasets

    def build_modules(self):
        lo = self.cfg.loss
        # resolve the perceptual network first: missing VGG16 weights stop the run before anything else
        if lo.lambda_per > 0:
            self.perceptual, self.perceptual_description = build_perceptual_loss(
                lo.perceptual, lo.vgg16_weights, lo.perceptual_layer_weights)
        else:
            self.perceptual, self.perceptual_description = None, "perceptual loss: off (loss.lambda_per=0)"
        G = build_model("texture", self.cfg.model)
        self.sync_bn = (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
                        and self.device.type == "cuda")  # the trainer's device, not "a GPU is visible"
        if self.sync_bn:  # batch 4 split over GPUs is too small for per-GPU BatchNorm statistics
            G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)  # same state-dict keys as BatchNorm2d
        modules = {"generator": G}
        if lo.lambda_adv > 0:
            modules["discriminator"] = build_discriminator(self.cfg.model)
        return modules

    def on_start(self, ctx, log) -> None:
        if self.perceptual is not None:
            self.perceptual.to(ctx.device)
        train, val = self.build_datasets()
        m = self.cfg.model
        log(f"texture data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); "
            f"image {m.image_size}x{m.image_size}, flow_mode={m.flow_mode}, image_skip={m.image_skip}, "
            f"prior_flow={m.prior_flow}, "
            f"G_T {count_parameters(ctx.raw['generator']):,} parameters")
        log(self.perceptual_description)
        if ctx.device.type == "cpu":
            log(f"G_T arithmetic on the CPU: {'bf16 autocast' if self.cpu_bf16 else 'fp32'} "
                f"(cpu_precision={self.cfg.cpu_precision})")
        if getattr(self, "sync_bn", False):
            log("BatchNorm in G_T synchronised across processes (SyncBatchNorm)")
        a = self.cfg.data.augment
        log(f"colour/illumination augmentation: {'on (p=%g)' % a.p if a.enabled else 'off'}")
        self.background_rgb, where = training_backdrop(self.cfg.data.root)
        log(f"training backdrop colour (for background replacement at inference): "
            f"{self.background_rgb if self.background_rgb is not None else 'unknown'} ({where})")

    # --- steps ---
    def _inputs(self, batch):
        return batch["identity"], batch["identity_landmarks"], batch["target_landmarks"], batch["emotion"]

    def _apply_lr_schedule(self, ctx) -> None:
        """Set every optimiser's lr for this step (``lr_schedule``); the configured lr is kept in each param
        group as ``base_lr`` so a resumed run (optimiser state restored) continues the same curve."""
        sc = self.cfg.lr_schedule
        if sc.kind == "constant":
            return
        f = sc.factor(ctx.step_index, self.cfg.train.steps)
        for opt in ctx.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group.setdefault("base_lr", group["lr"]) * f

    @property
    def cpu_bf16(self) -> bool:
        """Whether a CPU run trains under bf16 autocast (``cpu_precision``)."""
        p = self.cfg.cpu_precision
        return p == "bf16" or (p == "auto" and cpu_bf16_native())

    def autocast(self, ctx):
        """The trainer's autocast (CUDA AMP), or on a CPU bf16 autocast when ``cpu_precision`` asks for it."""
        if ctx.device.type == "cpu" and self.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return ctx.autocast()

    def train_step(self, batch, ctx):
        lo = self.cfg.loss
        self._apply_lr_schedule(ctx)
        identity, target = batch["identity"], batch["target"]
        if self.cfg.data.augment.enabled:
            identity, target = augment_consistent(identity, target, cfg=self.cfg.data.augment)
        G = ctx.models["generator"]
        with self.autocast(ctx):
            out = G(identity, batch["identity_landmarks"], batch["target_landmarks"], batch["emotion"])
            fake = out["image"].float()  # the losses in fp32 whatever the network's arithmetic
            l_rec = reconstruction_loss(fake, target)
            loss = lo.lambda_rec * l_rec
            logs = {"rec": l_rec.detach()}
            if lo.lambda_decoded > 0 and "decoded_image" in out:
                l_dec = reconstruction_loss(out["decoded_image"], target)
                loss = loss + lo.lambda_decoded * l_dec
                logs["rec_decoded"] = l_dec.detach()
            if lo.lambda_eyes > 0 or lo.lambda_mouth > 0:
                reg = region_losses(fake, target, batch["identity_landmarks"], batch["target_landmarks"],
                                    lo.region_margin)
                loss = loss + lo.lambda_eyes * reg["eyes"] + lo.lambda_mouth * reg["mouth"]
                logs.update(rec_eyes=reg["eyes"].detach(), rec_mouth=reg["mouth"].detach())
            # model.prior_flow: how far the learned flow departs from the prior (logged; penalised on request)
            res_abs = out["flow_residual"].float().abs().mean() if "flow_residual" in out else None
            if lo.lambda_flow_residual > 0 and res_abs is not None:
                loss = loss + lo.lambda_flow_residual * res_abs
            if self.perceptual is not None:
                l_per = self.perceptual(fake, target)
                loss = loss + lo.lambda_per * l_per
                logs["per"] = l_per.detach()
            if "discriminator" in ctx.models:
                # G's adversarial term goes through the bare D with its parameters frozen: no gradient
                # (and no DDP synchronisation) for D here; D is updated below on its own loss
                with frozen(ctx.raw["discriminator"]) as D:
                    l_g = g_loss(D(fake))
                loss = loss + lo.lambda_adv * l_g
                logs["adv_g"] = l_g.detach()
        ctx.step("generator", loss)
        logs["total"] = loss.detach()
        if "discriminator" in ctx.models:
            n = target.shape[0]
            with ctx.autocast():
                scores = ctx.models["discriminator"](torch.cat([target, fake.detach()]))
                l_d = d_loss(scores[:n], scores[n:])
            ctx.step("discriminator", l_d)
            logs["adv_d"] = l_d.detach()
        with torch.no_grad():
            logs["flow_abs"] = out["flow"].detach().float().abs().mean()
            if res_abs is not None:
                logs["flow_residual_abs"] = res_abs.detach()
            logs["occlusion"] = out["occlusion"].detach().float().mean()
        if self.cfg.lr_schedule.kind != "constant":
            logs["lr"] = ctx.optimizers["generator"].param_groups[0]["lr"]
        return ctx.log_values(logs)

    @torch.no_grad()
    def validate_step(self, batch, ctx):
        G = ctx.raw["generator"]
        with ctx.autocast():
            fake = G(*self._inputs(batch))["image"]
        target = batch["target"]
        rows = {"l1": float(reconstruction_loss(fake, target)),
                "l1_identity_baseline": float(reconstruction_loss(batch["identity"], target))}
        if self.perceptual is not None:
            rows["per"] = float(self.perceptual(fake.float(), target))
        return rows

    def metadata(self) -> dict:
        m = self.cfg.model
        meta = {"image_size": m.image_size, "image_value_range": [-1.0, 1.0], "flow_mode": m.flow_mode,
                "prior_flow": m.prior_flow,
                "perceptual": self.perceptual_description, "subjects": getattr(self, "subjects", {})}
        if not hasattr(self, "background_rgb"):  # metadata() before on_start (e.g. a bare save)
            self.background_rgb, _ = training_backdrop(self.cfg.data.root)
        if self.background_rgb is not None:
            meta["background_rgb"] = [int(v) for v in self.background_rgb]
        return meta
