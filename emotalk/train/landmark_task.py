"""Training G_L (paper §3.1): vertex loss (eq. 2) + LSGAN with the graph discriminator D_L (eq. 3),
combined as eq. (4): L_lm = λ_ver L_ver + λ_gan L_gan."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from emotalk.data.datasets.landmark import (TRACKS, LandmarkFrameDataset, dataset_subjects, load_clips,
                                            manifest_or_none)
from emotalk.data.datasets.splits import split_subjects
from emotalk.data.loading import build_model, load_model
from emotalk.errors import ConfigError
from emotalk.models.face_graph import BROWS, EYES, MOUTH, adjacency_matrix, mouth_opening
from emotalk.models.landmark_generator import GraphDiscriminator, LandmarkModelConfig
from emotalk.models.losses.amplitude_loss import AMPLITUDE_REGIONS, amplitude_loss
from emotalk.models.losses.blink_mask import open_eye_mask
from emotalk.models.losses.lsgan import lsgan_d_loss, lsgan_g_loss
from emotalk.models.losses.vertex_loss import vertex_loss
from emotalk.models.losses.weighted_vertex_loss import NORMS, region_point_weights, weighted_vertex_loss
from emotalk.train.landmark_faces import face_report, face_summary
from emotalk.train.landmark_intensity import control_report, control_separation
from emotalk.train.landmark_validation import (LandmarkValidationConfig, amplitude_report, clip_amplitude,
                                               expression_summary, landmark_emotion_accuracy, predict_clips,
                                               real_clip_amplitudes, reference_amplitudes)
from emotalk.train.task import OptimConfig, Task, TrainerConfig


@dataclass
class LandmarkDataConfig:
    root: str = "data/processed/mead"
    split: str = ""  # a named split (configs/splits/, e.g. mead-field) | auto | "" with explicit lists
    train_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    graph_input: str = "subject"  # subject: X = subject's aligned neutral face; template: canonical face
    max_clips: int = 0  # 0 = all
    # which landmark track is X and X^ (data/datasets/landmark.py): "detected" (the face tracker's, as for real
    # MEAD) | "exact" (the clips' true track: mead-mini's generator landmarks, stored beside the detected ones
    # by preprocessing); the held-out validation then measures against the same track
    track: str = "detected"


@dataclass
class LandmarkLossConfig:
    lambda_ver: float = 1.0
    lambda_gan: float = 0.5  # 0 disables the discriminator (Table 3 "w/o L_gan")
    # options on eq. (2), not in the paper (models/losses/weighted_vertex_loss.py); the defaults are eq. (2)
    vertex_norm: str = "l2"  # l2 (paper) | l1
    region_weights: dict[str, float] = field(default_factory=dict)  # e.g. {brows: 4, eyes: 4}; {} = paper
    # region amplitude matching against regression to the mean (models/losses/amplitude_loss.py); 0 = paper
    lambda_amplitude: float = 0.0
    # L_amp stays off for this fraction of train.steps: it scales the directions that eq. (2) has learned,
    # so it should not act before there are any (measured: from step 0 it slows the emotion's direction)
    amplitude_warmup: float = 0.0
    # per-region factors on L_amp's terms (brows, eyes, mouth; missing = 1)
    amplitude_weights: dict[str, float] = field(default_factory=dict)
    # the brows' and eyes' L_amp target: "frame" = the target frame's own amplitude (detector jitter and
    # blinks included) | "clip" = the amplitude of the clip's mean face over its open-eye frames, the
    # quantity the held-out validation measures (train/landmark_validation.py)
    amplitude_target: str = "frame"
    # leave blink frames (eye-aperture dips of the target, models/losses/blink_mask.py) out of the eye
    # points of eq. (2) and of L_amp's eye term: a random blink is no part of the emotion (the paper adds
    # blinks with a separate module); False = eq. (2) on every frame
    mask_blinks: bool = False


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
        if min(self.loss.lambda_ver, self.loss.lambda_gan, self.loss.lambda_amplitude) < 0:
            raise ConfigError("loss.lambda_ver, loss.lambda_gan and loss.lambda_amplitude must be >= 0")
        if self.data.track not in TRACKS:
            raise ConfigError(f"data.track must be one of {list(TRACKS)}, got {self.data.track!r}")
        if self.loss.vertex_norm not in NORMS:
            raise ConfigError(f"loss.vertex_norm must be one of {list(NORMS)}, got {self.loss.vertex_norm!r}")
        try:
            region_point_weights(self.loss.region_weights)
        except ValueError as e:
            raise ConfigError(f"loss.region_weights: {e}") from None
        unknown = set(self.loss.amplitude_weights) - set(AMPLITUDE_REGIONS)
        if unknown or min(self.loss.amplitude_weights.values(), default=0) < 0:
            raise ConfigError(f"loss.amplitude_weights takes non-negative factors for "
                              f"{', '.join(AMPLITUDE_REGIONS)}; got {dict(self.loss.amplitude_weights)}")
        if self.loss.amplitude_target not in ("frame", "clip"):
            raise ConfigError(f"loss.amplitude_target must be 'frame' or 'clip', got {self.loss.amplitude_target!r}")
        if not 0 <= self.loss.amplitude_warmup < 1:
            raise ConfigError(f"loss.amplitude_warmup is a fraction of train.steps in [0, 1), "
                              f"got {self.loss.amplitude_warmup}")
        if self.validation.expression_frame_stride < 1:
            raise ConfigError("validation.expression_frame_stride must be >= 1 (1 = every frame)")
        if self.validation.intensity_control_stride < 0:
            raise ConfigError("validation.intensity_control_stride must be >= 0 (0 = not measured)")
        if self.validation.expression_every < 0:
            raise ConfigError("validation.expression_every must be >= 0 (0 = at every validation)")


class EyeAwareFrames(Dataset):
    """A :class:`LandmarkFrameDataset` whose items also carry ``open_eyes`` (1.0, or 0.0 on a blink frame of
    the target: models/losses/blink_mask.py) and ``clip_target`` (the mean target face of the frame's clip
    over its open-eye frames: the face without blinks and detector jitter). Other attributes are the
    wrapped dataset's."""

    def __init__(self, frames: LandmarkFrameDataset):
        self.frames = frames
        self.open_eyes = open_eye_mask(frames.target, frames.index).float()
        self.clip_target = frames.target.clone()
        ids = np.asarray(frames.index)[:, 0]
        for cid in np.unique(ids):
            rows = torch.from_numpy(np.nonzero(ids == cid)[0])
            sel = rows[self.open_eyes[rows] > 0]
            self.clip_target[rows] = frames.target[sel if len(sel) else rows].mean(dim=0)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**self.frames[i], "open_eyes": self.open_eyes[i], "clip_target": self.clip_target[i]}

    def __getattr__(self, name: str):
        if name == "frames":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.frames, name)


class LandmarkTask(Task):
    kind = "landmark"
    use_amp = False  # 1.5 M parameters: AMP gains nothing, and the LSTM would run unscaled in half precision

    def __init__(self, cfg: LandmarkTrainConfig):
        super().__init__(cfg)
        self._datasets = None
        self._expression_numbers: tuple[int | None, dict] = (None, {})
        self._classifier = None  # the landmark emotion classifier for Emo-Acc-LM, loaded on first use
        self._reference = None  # the training clips' real expression amplitudes, computed on first use
        self._log, self._device = None, "cpu"

    def build_datasets(self):
        if self._datasets is None:
            d = self.cfg.data
            subjects = dataset_subjects(d.root)
            train_s, val_s = split_subjects(subjects, d.train_subjects, d.val_subjects, d.val_fraction,
                                           split=d.split, root=d.root)
            m = self.cfg.model
            train = LandmarkFrameDataset(load_clips(d.root, train_s, d.max_clips), m.emotions,
                                         m.intensity_levels, d.graph_input, d.track)
            lo = self.cfg.loss
            if lo.mask_blinks or (lo.lambda_amplitude > 0 and lo.amplitude_target == "clip"):
                train = EyeAwareFrames(train)
            val_clips = load_clips(d.root, val_s) if val_s else []
            val = (LandmarkFrameDataset(val_clips, m.emotions, m.intensity_levels, d.graph_input, d.track)
                   if val_s else None)
            self._val_clip_subjects = [c.subject for c in val_clips]  # by clip id: the per-face breakdown
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
        self._log, self._device = log, ctx.device
        train, val = self.build_datasets()
        log(f"landmark data: {len(train)} train frames ({len(self.subjects['train'])} subjects), "
            f"{len(val) if val else 0} val frames ({len(self.subjects['val'])} subjects); "
            f"features W={self.cfg.model.window} D={self.cfg.model.feature_dim}; landmark track: {self.cfg.data.track}")

    def train_step(self, batch, ctx):
        G = ctx.models["generator"]
        lam = self.cfg.loss
        open_eyes = batch["open_eyes"] if lam.mask_blinks else None  # (B,) 1 = not a blink frame
        with ctx.autocast():
            pred = G(batch["audio"], batch["emotion"], batch["neutral"])["landmarks"]
            l_ver = self._vertex_loss(pred.float(), batch["target"], open_eyes)
        logs = {"ver": l_ver.detach()}
        l_gen = lam.lambda_ver * l_ver  # eq. (4) without its GAN term, plus the optional amplitude term
        if lam.lambda_amplitude > 0 and ctx.step_index >= lam.amplitude_warmup * self.cfg.train.steps:
            l_amplitude = amplitude_loss(pred.float(), self._amplitude_target(batch), batch["neutral"],
                                         weights=self._amplitude_weights(open_eyes, pred))
            l_gen = l_gen + lam.lambda_amplitude * l_amplitude
            logs["amplitude"] = l_amplitude.detach()
        if "discriminator" in ctx.models:
            D = ctx.models["discriminator"]
            with ctx.autocast():  # the generator's step: D unwrapped (no DDP all-reduce of D's gradients)
                l_g = lsgan_g_loss(ctx.raw["discriminator"](pred, batch["emotion"]).float())
            ctx.step("generator", l_gen + lam.lambda_gan * l_g)
            # discriminator: real and fake in one forward (a single DDP forward per backward)
            both = torch.cat([batch["target"], pred.detach()])
            with ctx.autocast():
                scores = D(both, torch.cat([batch["emotion"], batch["emotion"]])).float()
            n = batch["target"].shape[0]
            l_d = lsgan_d_loss(scores[:n], scores[n:])
            ctx.step("discriminator", l_d)
            logs.update(gan_g=l_g.detach(), gan_d=l_d.detach())
        else:
            ctx.step("generator", l_gen)
        logs["total"] = (lam.lambda_ver * logs["ver"] + lam.lambda_gan * logs.get("gan_g", 0.0)
                         + lam.lambda_amplitude * logs.get("amplitude", 0.0))
        return ctx.log_values(logs)

    def _vertex_loss(self, pred, target, open_eyes=None):
        """Eq. (2), or its weighted / L1 / blink-masked variant when the config asks for one."""
        lo = self.cfg.loss
        if lo.vertex_norm == "l2" and not lo.region_weights and open_eyes is None:
            return vertex_loss(pred, target)
        weights = region_point_weights(lo.region_weights)
        if open_eyes is not None:  # (B, 68): the eye points of blink frames weigh 0
            weights = (torch.ones(68) if weights is None else weights).to(pred).expand(len(pred), -1).clone()
            weights[:, list(EYES)] *= open_eyes.to(pred)[:, None]
        return weighted_vertex_loss(pred, target, weights, lo.vertex_norm)

    def _amplitude_target(self, batch):
        """L_amp's target: the frame, or (``amplitude_target: clip``) for the brows and eyes its clip's mean
        open-eye face."""
        if self.cfg.loss.amplitude_target != "clip":
            return batch["target"]
        target = batch["target"].clone()
        static = list(BROWS + EYES)
        target[:, static] = batch["clip_target"][:, static]
        return target

    def _amplitude_weights(self, open_eyes, pred):
        """``(B, R)`` factors on L_amp's region terms: the config's per-region weights, eyes 0 on blink
        frames when masked; None when all are 1."""
        lo = self.cfg.loss
        if not lo.amplitude_weights and open_eyes is None:
            return None
        names = list(AMPLITUDE_REGIONS)
        w = torch.tensor([float(lo.amplitude_weights.get(r, 1.0)) for r in names]).to(pred)
        w = w.expand(len(pred), -1).clone()
        if open_eyes is not None:
            w[:, names.index("eyes")] *= open_eyes.to(pred)
        return w

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
        cover only the first few clips), and Emo-Acc-LM on G_L's raw landmarks when a landmark emotion
        classifier is configured. Computed once per validation round (keyed by the step) and returned with
        every batch, so the trainer's mean over batches leaves it unchanged."""
        v = self.cfg.validation
        _, val = self.build_datasets()
        if not v.expression or val is None or len(val) == 0:
            return {}
        step = ctx.step_index + 1  # the trainer validates after finishing step index step - 1
        if v.expression_every and step % v.expression_every and step != self.cfg.train.steps:
            return {}
        if self._expression_numbers[0] != ctx.step_index:
            m = self.cfg.model
            clips = predict_clips(ctx.raw["generator"], val.audio, val.emotion, val.neutral, val.target,
                                  val.index, m.emotions, m.intensity_levels, v.expression_frame_stride,
                                  subjects=self._val_clip_subjects)
            amps = [clip_amplitude(c.emotion, c.level, c.predicted, c.real, c.neutral, open_eyes=c.open_eyes,
                                   subject=c.subject) for c in clips]
            numbers = amplitude_report(amps, reference=self._reference_amplitudes())
            numbers.update(face_report(amps, self._reference_amplitudes()))
            if v.intensity_control_stride:
                numbers.update(control_report(control_separation(
                    ctx.raw["generator"], val.audio, val.emotion, val.neutral, val.index, m.emotions,
                    m.intensity_levels, v.intensity_control_stride)))
            clf = self._landmark_classifier()
            if clf is not None:
                numbers.update(landmark_emotion_accuracy(clf.module, clf.meta.emotions, clips))
            self._expression_numbers = (ctx.step_index, numbers)
            if self._log is not None:
                self._log(expression_summary(step, numbers, track=self.cfg.data.track))
                faces = face_summary(numbers)
                if faces:
                    self._log(faces)
        return self._expression_numbers[1]

    def _reference_amplitudes(self):
        """The training clips' real amplitudes per emotion and region (for ``expr_reach``), computed once
        (no model: about 0.1 s per thousand frames at the validation's frame stride)."""
        if self._reference is None:
            train, _ = self.build_datasets()
            m = self.cfg.model
            self._reference = reference_amplitudes(real_clip_amplitudes(
                train.emotion, train.neutral, train.target, train.index, m.emotions, m.intensity_levels,
                self.cfg.validation.expression_frame_stride))
        return self._reference

    def _landmark_classifier(self):
        path = self.cfg.validation.landmark_emotion_classifier
        if not path:
            return None
        if self._classifier is None:
            self._classifier = load_model(path, "landmark_emotion", device=self._device)
        return self._classifier

    def metadata(self) -> dict:
        train, _ = self.build_datasets()
        manifest = manifest_or_none(self.cfg.data.root)
        meta = {"feature_kind": manifest.feature_kind if manifest else "unknown",
                "feature_dim": int(train.feature_dim), "window": int(train.window),
                "fps": manifest.fps if manifest else 30.0, "subjects": self.subjects, "track": self.cfg.data.track}
        step, numbers = self._expression_numbers
        if step is not None:  # the latest held-out expression numbers travel with the checkpoint
            meta["expression_validation"] = {"step": step + 1, "track": self.cfg.data.track, **numbers}
        return meta
