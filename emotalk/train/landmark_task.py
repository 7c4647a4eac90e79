"""Training G_L (paper §3.1): vertex loss (eq. 2) + LSGAN with the graph discriminator D_L (eq. 3),
combined as eq. (4): L_lm = λ_ver L_ver + λ_gan L_gan."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from emotalk.data.datasets.landmark import LandmarkFrameDataset, dataset_subjects, load_clips, manifest_or_none
from emotalk.data.datasets.splits import split_subjects
from emotalk.data.loading import build_model
from emotalk.errors import ConfigError
from emotalk.models.face_graph import MOUTH, adjacency_matrix, mouth_opening
from emotalk.models.landmark_generator import GraphDiscriminator, LandmarkModelConfig
from emotalk.models.losses.lsgan import lsgan_d_loss, lsgan_g_loss
from emotalk.models.losses.vertex_loss import vertex_loss
from emotalk.models.losses.weighted_vertex_loss import NORMS, region_point_weights, weighted_vertex_loss
from emotalk.train.landmark_validation import (LandmarkValidationConfig, amplitude_report,
                                               predict_clip_amplitudes)
from emotalk.train.task import OptimConfig, Task, TrainerConfig


@dataclass
class LandmarkDataConfig:
    root: str = "data/processed/mead"
    train_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    graph_input: str = "subject"  # subject: X = subject's aligned neutral face; template: canonical face
    max_clips: int = 0  # 0 = all


@dataclass
class LandmarkLossConfig:
    lambda_ver: float = 1.0
    lambda_gan: float = 0.5  # 0 disables the discriminator (Table 3 "w/o L_gan")
    # options on eq. (2), not in the paper (models/losses/weighted_vertex_loss.py); the defaults are eq. (2)
    vertex_norm: str = "l2"  # l2 (paper) | l1
    region_weights: dict[str, float] = field(default_factory=dict)  # e.g. {brows: 4, eyes: 4}; {} = paper


@dataclass
class LandmarkTrainConfig:
    task: str = "landmark"
    model: LandmarkModelConfig = field(default_factory=LandmarkModelConfig)
    data: LandmarkDataConfig = field(default_factory=LandmarkDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LandmarkLossConfig = field(default_factory=LandmarkLossConfig)
    train: TrainerConfig = field(default_factory=lambda: TrainerConfig(run_dir="runs/landmark"))
    validation: LandmarkValidationConfig = field(default_factory=LandmarkValidationConfig)

    def validate(self) -> None:
        if self.loss.lambda_ver < 0 or self.loss.lambda_gan < 0:
            raise ConfigError("loss.lambda_ver and loss.lambda_gan must be >= 0")
        if self.loss.vertex_norm not in NORMS:
            raise ConfigError(f"loss.vertex_norm must be one of {list(NORMS)}, got {self.loss.vertex_norm!r}")
        try:
            region_point_weights(self.loss.region_weights)
        except ValueError as e:
            raise ConfigError(f"loss.region_weights: {e}") from None
        if self.validation.expression_frame_stride < 1:
            raise ConfigError("validation.expression_frame_stride must be >= 1 (1 = every frame)")
        if self.validation.expression_every < 0:
            raise ConfigError("validation.expression_every must be >= 0 (0 = at every validation)")


class LandmarkTask(Task):
    kind = "landmark"

    def __init__(self, cfg: LandmarkTrainConfig):
        super().__init__(cfg)
        self._datasets = None
        self._expression_numbers: tuple[int | None, dict] = (None, {})

    def build_datasets(self):
        if self._datasets is None:
            d = self.cfg.data
            subjects = dataset_subjects(d.root)
            train_s, val_s = split_subjects(subjects, d.train_subjects, d.val_subjects, d.val_fraction)
            m = self.cfg.model
            train = LandmarkFrameDataset(load_clips(d.root, train_s, d.max_clips), m.emotions,
                                         m.intensity_levels, d.graph_input)
            val = LandmarkFrameDataset(load_clips(d.root, val_s), m.emotions, m.intensity_levels,
                                       d.graph_input) if val_s else None
            self._datasets = (train, val)
            self.subjects = {"train": train_s, "val": val_s}
        return self._datasets

    def build_modules(self):
        train, _ = self.build_datasets()
        m = self.cfg.model
        # D and W always come from the data (e.g. 29 × 6 for DeepSpeech, other sizes for other features)
        m.window, m.feature_dim = int(train.window), int(train.feature_dim)
        modules = {"generator": build_model("landmark", m)}
        if self.cfg.loss.lambda_gan > 0:
            modules["discriminator"] = GraphDiscriminator.from_config(m, adjacency_matrix())
        return modules

    def on_start(self, ctx, log) -> None:
        train, val = self.build_datasets()
        log(f"landmark data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); "
            f"features W={self.cfg.model.window} D={self.cfg.model.feature_dim}")

    def train_step(self, batch, ctx):
        G = ctx.models["generator"]
        lam = self.cfg.loss
        with ctx.autocast():
            pred = G(batch["audio"], batch["emotion"], batch["neutral"])["landmarks"]
            l_ver = self._vertex_loss(pred.float(), batch["target"])
        logs = {"ver": l_ver.detach()}
        if "discriminator" in ctx.models:
            D = ctx.models["discriminator"]
            with ctx.autocast():
                l_g = lsgan_g_loss(D(pred, batch["emotion"]).float())
            ctx.step("generator", lam.lambda_ver * l_ver + lam.lambda_gan * l_g)
            # discriminator: real and fake in one forward (a single DDP forward per backward)
            both = torch.cat([batch["target"], pred.detach()])
            with ctx.autocast():
                scores = D(both, torch.cat([batch["emotion"], batch["emotion"]])).float()
            n = batch["target"].shape[0]
            l_d = lsgan_d_loss(scores[:n], scores[n:])
            ctx.step("discriminator", l_d)
            logs.update(gan_g=l_g.detach(), gan_d=l_d.detach())
        else:
            ctx.step("generator", lam.lambda_ver * l_ver)
        logs["total"] = lam.lambda_ver * logs["ver"] + lam.lambda_gan * logs.get("gan_g", 0.0)
        return {k: float(v) for k, v in logs.items()}

    def _vertex_loss(self, pred, target):
        """Eq. (2), or its weighted / L1 variant when the config asks for one."""
        lo = self.cfg.loss
        if lo.vertex_norm == "l2" and not lo.region_weights:
            return vertex_loss(pred, target)
        return weighted_vertex_loss(pred, target, region_point_weights(lo.region_weights), lo.vertex_norm)

    @torch.no_grad()
    def validate_step(self, batch, ctx):
        pred = ctx.raw["generator"](batch["audio"], batch["emotion"], batch["neutral"])["landmarks"]
        err = (pred - batch["target"]).norm(dim=-1)  # (B, 68) canonical units
        base = (batch["neutral"] - batch["target"]).norm(dim=-1)
        mouth = list(MOUTH)
        # how much the mouth opens and closes, predicted vs. real (1 = full amplitude; regression to the mean
        # shows up here long before it shows in the distances)
        gap_pred, gap_true = mouth_opening(pred), mouth_opening(batch["target"])
        ratio = float(gap_pred.std() / gap_true.std().clamp_min(1e-6)) if len(gap_true) > 1 else float("nan")
        return {"ver": float(vertex_loss(pred, batch["target"])), "face_ld": float(err.mean()),
                "mouth_open_std_ratio": ratio,
                "mouth_ld": float(err[:, mouth].mean()), "face_ld_copy_neutral": float(base.mean()),
                "mouth_ld_copy_neutral": float(base[:, mouth].mean()), **self._expression(ctx)}

    def _expression(self, ctx) -> dict:
        """Expression amplitude per region / emotion over *every* held-out clip (the trainer's batches
        cover only the first few clips). Computed once per validation round (keyed by the step) and
        returned with every batch, so the trainer's mean over batches leaves it unchanged."""
        v = self.cfg.validation
        _, val = self.build_datasets()
        if not v.expression or val is None or len(val) == 0:
            return {}
        step = ctx.step_index + 1  # the trainer validates after finishing step index step - 1
        if v.expression_every and step % v.expression_every and step != self.cfg.train.steps:
            return {}
        if self._expression_numbers[0] != ctx.step_index:
            m = self.cfg.model
            clips = predict_clip_amplitudes(ctx.raw["generator"], val.audio, val.emotion, val.neutral,
                                            val.target, val.index, m.emotions, m.intensity_levels,
                                            v.expression_frame_stride)
            self._expression_numbers = (ctx.step_index, amplitude_report(clips))
        return self._expression_numbers[1]

    def metadata(self) -> dict:
        train, _ = self.build_datasets()
        manifest = manifest_or_none(self.cfg.data.root)
        return {"feature_kind": manifest.feature_kind if manifest else "unknown",
                "feature_dim": int(train.feature_dim), "window": int(train.window),
                "fps": manifest.fps if manifest else 30.0, "subjects": self.subjects}
