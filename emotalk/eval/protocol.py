"""The evaluation protocol: named presets (``emotalk evaluate --protocol field|paper``), the leak guard and
the protocol card written into every ``results.json`` and table header.

Why: two tables can only be compared when they were made under the same protocol -- same test identities,
vocabulary, frame rate, landmark convention, smoothing and classifier -- and when no model that produced
or scored a video saw its subject in training. The card states all of that at a glance; the guard makes
the second point impossible to get wrong silently.

- :data:`PROTOCOLS`: ``field`` is the MEAD test protocol since EAMM / EAT / EDTalk (test identities M003,
  M030, W009, W015 from ``configs/splits/mead-field.yaml``; LSE on 25 fps video; landmark distances in
  pixels of 256x256 aligned crops; Acc_emo with Emotion-FAN); ``paper`` is the paper's §4 setting (the
  same unseen test identities, ``configs/splits/mead-paper.yaml``; landmark distances in the processed
  crops' pixels; Emo-Acc with our own classifier as a stand-in for EVP's). Both use SSIM per Wang et al.
  2004 (11x11 Gaussian, sigma 1.5) and G_L's raw landmarks (no smoothing).
- :func:`check_seen_subjects`: the training subjects recorded in each used checkpoint (G_L, G_T, the
  emotion classifiers) against the evaluated subjects; an overlap is a one-line :class:`ConfigError`
  naming subjects and checkpoint, unless ``allow_seen_subjects: true`` (then the card carries it).
- :func:`protocol_card` / :func:`card_markdown`: what was used, as a dict and as a table header.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from emotalk.data.loading import CheckpointMeta, read_checkpoint_meta
from emotalk.errors import CheckpointError, ConfigError

#: preset name -> ``key=value`` overrides applied under the user's own (the user's win). The emotion
#: classifier follows from the weights given: ``metrics.emotion_fan_weights`` (field: Acc_emo) or
#: ``metrics.emotion_classifier`` (paper: our Emo-Acc); methods render G_L's raw landmarks by default.
PROTOCOLS: dict[str, list[str]] = {
    "field": ["protocol=field", "data.split=mead-field", "data.subjects=[]", "metrics.ssim_window=gaussian11",
              "metrics.landmark_units=pixels256", "metrics.lse_fps=25"],
    "paper": ["protocol=paper", "data.split=mead-paper", "data.subjects=[]", "metrics.ssim_window=gaussian11",
              "metrics.landmark_units=pixels", "metrics.lse_fps=25"],
}
#: ``methods[].landmark_smoothing`` -> the Savitzky-Golay window applied to G_L's landmarks (1 = none)
SMOOTHING_WINDOWS: dict[str, int] = {"none": 1, "savgol5": 5}

#: weight-backed metric -> the ``metrics.*`` key with its weights file and what the weights are
WEIGHT_KEYS: dict[str, tuple[str, str]] = {
    "fid": ("inception_weights", "Inception (pytorch-fid)"),
    "csim": ("arcface_weights", "ArcFace (insightface)"),
    "lse_c": ("syncnet_weights", "SyncNet v2 (syncnet_python)"),
    "lse_d": ("syncnet_weights", "SyncNet v2 (syncnet_python)"),
    "emo_acc": ("emotion_classifier", "our emotion classifier"),
    "emo_acc_lm": ("landmark_emotion_classifier", "our landmark-geometry classifier"),
    "emo_acc_fan": ("emotion_fan_weights", "Emotion-FAN (Meng et al. 2019)"),
}
#: offline metrics with no paper value (they replace a weight-backed one)
OFFLINE_STAND_INS = {"fid_dlib": "FID", "csim_dlib": "CSIM", "av_sync_conf": "LSE-C", "emo_acc_fer": "Emo-Acc"}


def protocol_overrides(name: str) -> list[str]:
    """The overrides of a named protocol (ConfigError listing the known ones)."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return list(PROTOCOLS[name])


@dataclass
class UsedModel:
    """One checkpoint the evaluation used, and what it saw in training."""

    role: str  # "G_L (Ours)", "G_T (Ours)", "emotion classifier", ...
    path: str
    train_subjects: tuple[str, ...] = ()
    val_subjects: tuple[str, ...] = ()
    emotions: tuple[str, ...] = ()
    intensity_levels: int | None = None
    step: int = 0
    meta: CheckpointMeta | None = field(default=None, repr=False)


def used_model(role: str, path: str | Path) -> UsedModel:
    meta = read_checkpoint_meta(path)
    model = meta.config.get("model") if isinstance(meta.config.get("model"), dict) else {}
    emotions = meta.emotions or tuple(str(e) for e in model.get("emotions", ()) or ())
    levels = model.get("intensity_levels")
    return UsedModel(role, str(meta.path), meta.train_subjects, meta.val_subjects, emotions,
                     int(levels) if isinstance(levels, int) else None, meta.step, meta)


def used_models(cfg: Any, metric_names: Sequence[str]) -> list[UsedModel]:
    """Every checkpoint an evaluation (``cfg``: an EvalConfig) will use, with the subjects it trained on
    (the leak guard's input): G_L / G_T of the neural and warp methods, the emotion classifiers scored."""
    used: dict[str, UsedModel] = {}
    for m in cfg.methods:
        if m.renderer not in ("neural", "warp"):
            continue
        base = Path(m.checkpoints or cfg.checkpoints)
        paths = [("G_L", Path(m.landmark) if m.landmark else base / "landmark")]
        if m.renderer == "neural":
            paths.append(("G_T", Path(m.texture) if m.texture else base / "texture"))
        for role, path in paths:
            model = checkpoint_or_none(f"{role} ({m.name})", path)
            if model is not None and model.path not in used:
                used[model.path] = model
    for metric, key, role in (("emo_acc", "emotion_classifier", "emotion classifier"),
                              ("emo_acc_lm", "landmark_emotion_classifier", "landmark emotion classifier")):
        if metric in metric_names:
            model = checkpoint_or_none(role, getattr(cfg.metrics, key))
            if model is not None and model.path not in used:
                used[model.path] = model
    return list(used.values())


def check_seen_subjects(models: Sequence[UsedModel], subjects: Sequence[str], allow: bool) -> dict[str, list[str]]:
    """``{checkpoint path: [evaluated subjects it trained on]}``; raises unless ``allow``.

    A checkpoint that records no training subjects cannot be checked: also refused unless ``allow``."""
    wanted = set(subjects)
    seen: dict[str, list[str]] = {}
    for m in models:
        if not m.train_subjects:
            if not allow:
                raise ConfigError(f"{m.role} checkpoint {m.path} records no training subjects, so it cannot be "
                                  f"checked against the evaluated ones; retrain it with this version or set "
                                  f"allow_seen_subjects: true (the tables are then marked)")
            seen[m.path] = ["(unknown: no training subjects recorded)"]
            continue
        overlap = sorted(wanted & set(m.train_subjects))
        if overlap:
            if not allow:
                raise ConfigError(f"refusing to score subjects {', '.join(overlap)}: the {m.role} checkpoint "
                                  f"{m.path} was trained on them; evaluate on a split's test subjects "
                                  f"(data.split) or set allow_seen_subjects: true to mark the tables")
            seen[m.path] = overlap
    return seen


def _weights_entry(key: str, what: str, value: Any, stand_ins: Sequence[str]) -> str:
    kind = "stand-in weights (declared in metrics.stand_in_weights)" if key in stand_ins else "user-supplied"
    return f"{what}: {kind}: {value}"


def protocol_card(cfg: Any, metric_names: Sequence[str], models: Sequence[UsedModel], subjects: Sequence[str],
                  seen: dict[str, list[str]], clip_fps: Sequence[float], excluded_reference: Sequence[str]) -> dict:
    """The protocol card (a plain dict) of an evaluation: ``cfg`` is the :class:`EvalConfig` it ran with."""
    opts = cfg.metrics
    g_l = [m for m in models if m.role.startswith("G_L")]
    vocab = sorted({(tuple(m.emotions), m.intensity_levels) for m in g_l if m.emotions})
    weights = {}
    for name in metric_names:
        if name in WEIGHT_KEYS:
            key, what = WEIGHT_KEYS[name]
            value = getattr(opts, key, None)
            if value:
                weights[name] = _weights_entry(key, what, value, opts.stand_in_weights)
        elif name in OFFLINE_STAND_INS:
            weights[name] = f"offline stand-in for {OFFLINE_STAND_INS[name]} (no paper value)"
    smoothing = sorted({m.landmark_smoothing for m in cfg.methods if m.renderer in ("neural", "warp")}) or ["n/a"]
    emo = [n for n in metric_names if n in ("emo_acc", "emo_acc_fan", "emo_acc_fer", "emo_acc_lm")]
    return {
        "protocol": cfg.protocol or "custom",
        "split": (f"none (data.subjects{'; split ' + cfg.data.split + ' not used' if cfg.data.split else ''})"
                  if cfg.data.subjects else cfg.data.split or "none"),
        "test_subjects": sorted(subjects),
        "vocabulary": [{"emotions": list(e), "intensity_levels": lv} for e, lv in vocab] or "n/a (no G_L used)",
        "fps": sorted({float(f) for f in clip_fps}),
        "lse_fps": opts.lse_fps,
        "landmark_detector": "dlib 68-point (shape_predictor_68_face_landmarks)",
        "landmark_units": opts.landmark_units,
        "ssim": opts.ssim_window,
        "smoothing": smoothing,
        "emotion_classifiers": emo or "none",
        "weights": weights,
        "checkpoints": {m.role: {"path": m.path, "step": m.step, "train_subjects": len(m.train_subjects)}
                        for m in models},
        "neutral_reference_clips_excluded": sorted(excluded_reference),
        "seen_subjects": seen,
    }


def card_markdown(card: dict) -> str:
    """The card as a few Markdown lines for the top of every table (a seen-subjects mark stands out)."""
    voc = card["vocabulary"]
    if isinstance(voc, list):
        voc = "; ".join(f"{'/'.join(v['emotions'])} x {v['intensity_levels']} levels" for v in voc)
    emo = card["emotion_classifiers"]
    fields = [f"Protocol: **{card['protocol']}**", f"split: {card['split']}",
              f"test subjects: {', '.join(card['test_subjects']) or '(all)'}", f"vocabulary: {voc}",
              f"fps: {', '.join(f'{f:g}' for f in card['fps'])} (LSE at {card['lse_fps']:g})",
              f"landmarks: {card['landmark_detector']}, {card['landmark_units']}", f"SSIM: {card['ssim']}",
              f"smoothing: {', '.join(card['smoothing'])}", f"emotion: {', '.join(emo) if isinstance(emo, list) else emo}"]
    lines = [" | ".join(fields)]
    if card["weights"]:
        lines.append("Weights: " + "; ".join(f"{k}: {v}" for k, v in card["weights"].items()))
    if card["seen_subjects"]:
        lines.append("**SEEN SUBJECTS (allow_seen_subjects: true): these numbers include subjects the models "
                     "trained on** -- " + "; ".join(f"{p}: {', '.join(s)}" for p, s in card["seen_subjects"].items()))
    return "\n".join(lines) + "\n\n"


def checkpoint_or_none(role: str, path: str | Path | None) -> UsedModel | None:
    """:func:`used_model` for an optional path (None when unset); a missing checkpoint is the caller's
    existing error, raised here with the role named."""
    if not path:
        return None
    try:
        return used_model(role, path)
    except CheckpointError as e:
        raise CheckpointError(f"{role}: {e}") from None
