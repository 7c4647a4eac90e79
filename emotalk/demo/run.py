"""The demo: every stage of the project, end to end, offline, on a CPU.

Stages (each reuses its output when it is already there, so a second run is fast):

1. ``mini``       — generate mead-mini (real photos, TTS speech, ground-truth motion) in MEAD's layout;
2. ``preprocess`` — the real preprocessing pipeline → processed clips (phoneme features, dlib landmarks and
   mead-mini's exact ones beside them, the *true track*);
3. ``classifier`` — train the landmark-geometry emotion classifier behind Emo-Acc-LM
   (``configs/emotion/landmark-tiny.yaml``, training subjects, seconds) on dlib's landmarks, as it reads them;
   ``landmark``   — train G_L with ``configs/landmark/tiny-exact.yaml`` on the true track (dlib misreads the
   lids of the faces with glasses); its validation logs Emo-Acc-LM with that classifier (issue 12 §3);
4. ``texture``    — train G_T with ``configs/texture/tiny-exact.yaml`` on the same track as G_L (it learns the
   landmark-to-pixel motion of the landmarks it is driven with), else ``configs/texture/tiny.yaml``;
5. ``generate``   — one held-out identity, one sentence that is not in the training data, several emotions,
   one blend and the warp baseline (one-shot fine-tuning on the held-out photo each time);
6. ``emotions``   — the report's emotions panel: the held-out identity and the public-domain photo in every
   emotion x level 1-3, a still + a looping strip each, with the measured separation from neutral;
7. ``evaluate``   — the paper's metrics on held-out subjects: ours vs. the warp and static baselines and the
   real video (Table 2 with the emotion metrics, Table 5); the emotion grid only for ours and the warp
   ceiling. The G_T ablations of Table 4 and every other row stay ``emotalk evaluate``'s job
   (``configs/eval/mead-mini.yaml``): they would cost the demo minutes and the report shows none of them;
8. ``report``     — ``report.html`` with the videos side by side, landmark plots, training curves, tables.

Before the stages the demo measures the machine's fp32 matmul rate for a second (:mod:`.machine`) and prints
it beside the stage times, so a slow or busy machine explains itself. Each stage has a budget (:mod:`.budget`,
360 s in all on the reference machine, scaled to this one): a stage that overran says so when it ends, and the
``budget:`` line closes the stage times in the log, the report and ``stages/summary.json``.

Stages 5-7 share one :class:`~emotalk.demo.shared.SharedPipeline`: each face is prepared, cut out and
fine-tuned once for all its videos, panel tiles and evaluation renderings (it was nine times for the held-out
subject), the speech features of the demo sentence are computed once, and G_L runs once per distinct input.

Both cores work on the model stages (issue 16: the demo in 6 minutes): the models are small, so two torch
threads in one process mostly wait for each other, while two processes on one thread each do not
(:mod:`.forked`). The classifier trains on one thread; the videos after the first (which prepares the
held-out face for everyone) and the two faces of the emotions panel are split over this process and a forked
one; the evaluation renders each method's emotion grid in a forked process while this one makes and scores
the clips, and computes the pixel metrics beside the dlib ones (:mod:`emotalk.eval.parallel`, same numbers
as one process: ``DemoOptions.model_workers`` / ``eval_metric_workers`` = 1 restore the serial path).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from emotalk.config import load_config
from emotalk.data.datasets.landmark import has_true_track
from emotalk.data.io.checkpoint import latest_checkpoint
from emotalk.data.io.clip import load_subject, subject_path
from emotalk.data.io.media import load_audio, write_wav
from emotalk.data.io.photos import grace_hopper_path
from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset
from emotalk.demo.budget import BudgetCheck, check_budget, machine_scale, overrun_sentence, stage_budget
from emotalk.demo.forked import map_forked, torch_threads
from emotalk.demo.emotion_panel import PANEL_SENTENCE, EmotionPanel, PanelOptions, render_panel
from emotalk.demo.machine import MachineSpeed, measure_matmul_gflops
from emotalk.demo.report import plot_landmarks, plot_training_curves, write_report
from emotalk.demo.shared import SharedPipeline
from emotalk.errors import ConfigError, InputError
from emotalk.eval.evaluate import EvalConfig, evaluate
from emotalk.inference import GenerateOptions, Pipeline
from emotalk.inference.checkpoints import remember_checkpoints
from emotalk.mini.generator import generate_mini
from emotalk.mini.tts import synthesize
from emotalk.train.tasks import train_from_config
from emotalk.utils.io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

#: a sentence that is not among mead-mini's Harvard sentences (lists 1-6)
DEMO_SENTENCE = "Every emotion changes the face, but the words stay the same."


@dataclass
class DemoOptions:
    out: str = "runs/demo"
    size: str = "small"  # mead-mini size (emotalk.mini.plan.SIZES)
    #: an existing mead-mini folder (``emotalk make-mini``, e.g. with your own photos) used instead of generating
    #: one; it is read, never modified
    mini_source: str | None = None
    workers: int = 2
    features: str = "phonemes"
    #: where the training landmarks come from: "detect" runs dlib (tracked) on every clip as for real MEAD;
    #: "sidecar" reads mead-mini's ground-truth landmarks (no detector error, ~half the preprocessing time)
    landmarks: str = "detect"
    landmark_overrides: list[str] = field(default_factory=list)
    texture_overrides: list[str] = field(default_factory=list)
    emotions: tuple[tuple[str, float], ...] = (("neutral", 1), ("happy", 3), ("sad", 3), ("surprised", 3),
                                               ("angry", 3))
    blend: str = "happy:0.6,surprised:0.4"
    finetune_steps: int = 5
    #: held-out clips per subject in Table 2 (two subjects: 2 clips, each a different emotion at level 3). The
    #: per-frame metrics (dlib detection and embeddings, SSIM, CPBD) are most of the evaluation's time, so
    #: this is the demo's main evaluation knob; 'emotalk evaluate' or --eval-clips N scores more
    eval_clips_per_subject: int = 1
    progress: bool = True
    emotion_panel: bool = True  # the report's emotions x levels grids (held-out subject + full photo)
    panel_frames: int = 12  # rendered frames per grid tile (its looping strip)
    #: evaluation rows the report shows (Table 2 + Table 5); the Table 4 ablations are left to 'emotalk evaluate'
    eval_methods: tuple[str, ...] = ("Ours", "Warp baseline", "Static neutral photo", "Ground truth (real video)")
    #: methods that get the emotion grid behind ExT-*, Sep, Int-mono, Blink-ap: ours and its practical ceiling
    grid_methods: tuple[str, ...] = ("Ours", "Warp baseline")
    grid_frames: int = 4  # rendered frames per grid rendering (the config's 6 is for 'emotalk evaluate')
    #: dlib upsampling in the evaluation's re-detection: the 256x256 crops' faces are large, and 0 is ~4x cheaper
    eval_landmark_upsample: int = 0
    #: every k-th frame in the embedding metrics (FID-dlib, CSIM-dlib): dlib's face embedding is the costliest
    #: per-frame step of the demo's evaluation; 8 still scores ~11 frames of each 3-second clip
    eval_embedding_stride: int = 8
    #: processes for the evaluation's clip metrics: the pixel ones (PSNR, SSIM, CPBD, Emo-Acc-FER) in a forked
    #: second process beside dlib's (single-threaded), same numbers (:mod:`emotalk.eval.parallel`)
    eval_metric_workers: int = 2
    measure_machine: bool = True  # the one-second matmul measurement printed beside the stage times
    #: processes for the videos and the emotions panel, one torch thread each (emotalk.demo.forked); 1 = this one
    model_workers: int = 2


class Demo:
    def __init__(self, opts: DemoOptions, log: Callable[[str], None] | None = None):
        self.o = opts
        self.out = Path(opts.out)
        self.log = log or logger.info  # the CLI shows INFO unless --quiet
        self.stage_seconds: dict[str, float] = {}
        self.state_dir = self.out / "stages"
        self.machine: MachineSpeed | None = None
        self.reused: list[str] = []  # stages whose output an earlier run left (0 s here)
        self.budget: BudgetCheck | None = None
        self._pipe: SharedPipeline | None = None

    def pipeline(self) -> SharedPipeline:
        """One pipeline for generation, the emotions panel and the evaluation's own rows: the checkpoints are
        read and G_T is optimised for inference once, G_T's batch size is measured once, and each face is
        prepared and fine-tuned once (:class:`~emotalk.demo.shared.SharedPipeline`: one-shot fine-tuning is
        deterministic and emotion-free, so sharing it changes no output)."""
        if self._pipe is None:
            self._pipe = SharedPipeline.from_checkpoints(self.checkpoints)
        return self._pipe

    def _eval_pipeline(self, landmark: Path, texture: Path | None, device: str) -> Pipeline:
        """The evaluation's pipeline loader: the shared pipeline for the demo's own checkpoints (the warp row
        needs no G_T, so it can share it too), a new one for anything else."""
        own = Path(landmark) == self.checkpoints / "landmark" and texture in (None, self.checkpoints / "texture")
        if own and device in ("auto", str(self.pipeline().device)):
            return self.pipeline()
        return Pipeline.from_checkpoints((landmark, texture), device=device, load_texture=texture is not None)

    # --- bookkeeping -------------------------------------------------------------------------------
    def _done(self, name: str) -> dict | None:
        p = self.state_dir / f"{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def _stage(self, name: str, fn: Callable[[], dict]) -> dict:
        prev = self._done(name)
        if prev is not None:
            self.log(f"[demo] {name}: reusing {prev.get('output', '')}")
            self.stage_seconds[name] = 0.0
            self.reused.append(name)
            return prev
        self.log(f"[demo] {name} ...")
        t0 = time.perf_counter()
        info = fn()
        dt = time.perf_counter() - t0
        info["seconds"] = round(dt, 1)
        atomic_write_json(self.state_dir / f"{name}.json", info)
        self.stage_seconds[name] = dt
        self.log(f"[demo] {name}: done in {dt:.1f} s")
        self._check_stage(name, dt)
        return info

    def _check_stage(self, name: str, seconds: float) -> None:
        """Say so at once when a stage overran its budget (:mod:`.budget`), and what the shared pipeline
        saved so far."""
        if self._pipe is not None:
            logger.debug("[demo] shared pipeline: %s", self._pipe.cache_summary())
        scale = machine_scale(self.machine)
        budget = stage_budget(name, scale)
        if budget is not None and seconds > budget:
            self.log(f"[demo] {overrun_sentence(name, seconds, budget, scale)}")

    @property
    def mini_dir(self) -> Path:
        return Path(self.o.mini_source) if self.o.mini_source else self.out / "mead-mini"

    @property
    def processed_dir(self) -> Path:
        return self.out / "processed"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    # --- stages -------------------------------------------------------------------------------------
    def make_mini(self) -> dict:
        if self.o.mini_source:
            return self._existing_mini(self.mini_dir)
        if self.mini_dir.exists():  # an interrupted earlier attempt: start that stage again
            shutil.rmtree(self.mini_dir)
        info = generate_mini(self.mini_dir, self.o.size, workers=self.o.workers, progress=self.o.progress)
        return {"output": str(self.mini_dir), "splits": info["splits"]}

    @staticmethod
    def _existing_mini(root: Path) -> dict:
        info_path = root / "mini.json"
        if not info_path.is_file():
            raise InputError(f"--mini {root}: no mini.json there; give a folder made by 'emotalk make-mini'")
        info = json.loads(info_path.read_text())
        splits = info.get("splits") or {}
        if not splits.get("train") or not splits.get("test"):
            raise InputError(f"--mini {root}: the demo needs training and held-out subjects, mini.json lists "
                             f"{splits}; make it with at least two variants of a photo (size tiny or small)")
        return {"output": str(root), "splits": {"train": list(splits["train"]), "test": list(splits["test"])}}

    def preprocess(self) -> dict:
        summary = preprocess_dataset("mead-mini", self.mini_dir, self.processed_dir, workers=self.o.workers,
                                     options=PreprocessOptions(features=self.o.features, landmark_source=self.o.landmarks),
                                     progress=self.o.progress)
        return {"output": str(self.processed_dir), "summary": str(summary)}

    def landmark_stage(self) -> tuple[str, str, list[str]]:
        """``(config, run name, overrides)`` of G_L: ``landmark/tiny-exact`` when the clips have a true track
        (mead-mini's always do), else ``landmark/tiny``; Emo-Acc-LM's classifier once trained; user's last."""
        config = "landmark/tiny-exact" if has_true_track(self.processed_dir) else "landmark/tiny"
        classifier = self.checkpoints / "landmark_emotion"
        extra = ([f"validation.landmark_emotion_classifier={classifier}"]
                 if latest_checkpoint(classifier / "checkpoints") is not None else [])
        return config, "landmark", extra + self.o.landmark_overrides

    def texture_stage(self) -> tuple[str, str, list[str]]:
        """``(config, run name, overrides)`` of G_T: ``texture/tiny-exact`` exactly when G_L trains on the true
        track (:meth:`landmark_stage`), so that G_T learns the landmark motion G_L will ask of it."""
        exact = self.landmark_stage()[0] == "landmark/tiny-exact"
        return ("texture/tiny-exact" if exact else "texture/tiny"), "texture", self.o.texture_overrides

    def _train(self, config: str, name: str, overrides: list[str], splits: dict) -> dict:
        run = self.checkpoints / name
        base = [f"data.root={self.processed_dir}", f"train.run_dir={run}",
                f"data.train_subjects=[{', '.join(splits['train'])}]",
                f"data.val_subjects=[{', '.join(splits['test'])}]", f"train.progress={str(self.o.progress).lower()}"]
        resume = str(run) if latest_checkpoint(run / "checkpoints") is not None else None
        with warnings.catch_warnings():
            # the demo's configs choose their losses (texture/tiny: no perceptual loss) and the run's log.txt
            # names the choice; the warning is for users who pick such a loss themselves
            warnings.filterwarnings("ignore", message="perceptual loss: ", category=UserWarning)
            if resume:  # an interrupted earlier attempt: continue it exactly
                train_from_config(None, overrides, resume=resume)
            else:
                train_from_config(config, base + overrides)
        return {"output": str(run)}

    def generate(self, splits: dict) -> dict:
        gen_dir = self.out / "videos"
        gen_dir.mkdir(parents=True, exist_ok=True)
        held_out = splits["test"][0]
        photo = gen_dir / f"{held_out}_neutral.png"
        ref = load_subject(subject_path(self.processed_dir, held_out))
        with atomic_path(photo, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), ref.image[..., ::-1])
        speech = synthesize(DEMO_SENTENCE)
        wav = gen_dir / "speech.wav"
        write_wav(wav, speech.audio, speech.sample_rate)
        pipe = self.pipeline()
        jobs = [(f"{e} (level {i:g})", photo, e, i, "neural") for e, i in self.o.emotions]
        jobs.append((f"blend {self.o.blend}", photo, self.o.blend, 3, "neural"))
        jobs.append(("warp baseline, happy", photo, "happy", 3, "warp"))
        # the same sentence on the original full-size public-domain photo (pasted back into it)
        jobs.append(("full photo (Grace Hopper, seen in training), happy", grace_hopper_path(), "happy", 3, "neural"))

        def make(job) -> tuple[str, str, np.ndarray | None]:
            caption, image, emotion, intensity, renderer = job
            name = ("grace_hopper_happy" if image != photo else
                    caption.split(" (")[0].replace(" ", "_").replace(":", "").replace(",", "_"))
            out = gen_dir / f"{name}.mp4"
            opts = GenerateOptions(emotion=emotion, intensity=intensity, renderer=renderer,
                                   finetune_steps=self.o.finetune_steps, progress=False)
            res = pipe.generate(image, wav, opts, out=out)
            lm = getattr(res, "landmarks", None)
            return caption, str(out), (np.asarray(lm) if lm is not None and image == photo else None)

        # the first video in this process on both threads: the held-out face is prepared and fine-tuned and the
        # speech features computed once, before the fork, for every process; the rest on one thread per process
        done = [make(jobs[0])] + map_forked(make, jobs[1:], self.o.model_workers, cost=_video_cost)
        videos = [(caption, path) for caption, path, _ in done]
        tracks = {caption: lm for caption, _, lm in done if lm is not None}
        np.savez(gen_dir / "landmark_tracks.npz", **{k.replace(" ", "_"): v for k, v in tracks.items()})
        return {"output": str(gen_dir), "videos": videos, "photo": str(photo), "speech": str(wav),
                "held_out_subject": held_out, "tracks": list(tracks)}

    def evaluate(self, splits: dict) -> dict:
        cfg = load_config("eval/mead-mini", schema=EvalConfig, overrides=[
            f"checkpoints={self.checkpoints}", f"out_dir={self.out / 'eval'}", f"data.root={self.processed_dir}",
            f"data.subjects=[{', '.join(splits['test'])}]",
            f"data.clips_per_subject={self.o.eval_clips_per_subject}",
            "metrics.emotion_classifier=null",
            f"metrics.landmark_emotion_classifier={self.checkpoints / 'landmark_emotion'}",
            f"metrics.landmark_upsample={self.o.eval_landmark_upsample}", f"grid.frames={self.o.grid_frames}",
            f"metrics.embedding_stride={self.o.eval_embedding_stride}", f"metric_workers={self.o.eval_metric_workers}",
            f"progress={str(self.o.progress).lower()}"])
        trim_eval_config(cfg, self.o.eval_methods, self.o.grid_methods)
        res = evaluate(cfg, self._eval_pipeline)
        return {"output": res["out_dir"], "tables": res["tables"]}

    def emotion_panels(self, splits: dict) -> dict:
        """The report's emotions panel: the held-out subject and the full public-domain photo, each in every
        emotion x level 1-3 saying a short sentence (G_T fine-tuned once per face, per-frame emotions)."""
        out = self.out / "emotions"
        pipe = self.pipeline()
        speech = synthesize(PANEL_SENTENCE)
        held_out = splits["test"][0]
        ref = load_subject(subject_path(self.processed_dir, held_out))
        # dlib without upsampling: the 256² crops' faces are large, and it is 4x cheaper
        opts = PanelOptions(frames=self.o.panel_frames, finetune_steps=self.o.finetune_steps, landmark_upsample=0)
        photo = pipe.prepare_photo(grace_hopper_path(), size=ref.image.shape[0])
        faces = [(f"Held-out mead-mini subject {held_out} (never seen in training)", held_out, ref.image),
                 ("Full public-domain photo (Grace Hopper, the source of some mead-mini identities), its face "
                  "crop", "grace_hopper", photo.crop)]
        # one face per process, each on one torch thread (emotalk.demo.forked)
        panels = map_forked(lambda f: render_panel(pipe, f[0], f[2], speech.audio, speech.sample_rate, out / f[1],
                                                   opts, f[1]), faces, self.o.model_workers)
        return {"output": str(out), "sentence": PANEL_SENTENCE, "panels": [p.to_json() for p in panels]}

    def report(self, gen: dict, ev: dict, emo: dict | None = None) -> Path:
        images = []
        curves = plot_training_curves({"G_L (landmarks)": self.checkpoints / "landmark",
                                       "G_T (texture)": self.checkpoints / "texture"},
                                      self.out / "training_curves.png")
        tracks_file = Path(gen["output"]) / "landmark_tracks.npz"
        if tracks_file.is_file():
            with np.load(tracks_file, allow_pickle=False) as z:
                tracks = {k.replace("_", " "): z[k] for k in z.files}
            audio = load_audio(gen["speech"])
            hop = int(16000 / 30)
            rms = np.array([np.sqrt(np.mean(audio[i * hop:(i + 1) * hop] ** 2)) for i in range(len(audio) // hop)])
            images.append(("Landmarks of the generated clips (same speech, different emotions)",
                           plot_landmarks(tracks, 30.0, self.out / "landmarks.png", rms / (rms.max() + 1e-9))))
        if curves:
            images.append(("Training curves", curves))
        budget = check_budget(self.stage_seconds, self.machine, self.reused)
        notes = [f"Identity: held-out mead-mini subject {gen['held_out_subject']} (never seen in training), "
                 f"fine-tuned one-shot for {self.o.finetune_steps} steps. Speech: eSpeak NG saying "
                 f"\"{DEMO_SENTENCE}\" (not in the training sentences)."]
        if self.machine is not None:
            notes.append(self.machine.line())
        notes.append(budget.line() + " (the report's own writing is timed after it)")
        return write_report(self.out / "report.html", videos=gen["videos"], images=images,
                            tables=list(ev.get("tables", {}).values()), stage_seconds=self.stage_seconds,
                            stage_budget=budget.budget,
                            notes=notes, panels=[EmotionPanel.from_json(p) for p in (emo or {}).get("panels", [])])

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.o.measure_machine:
            self.machine = measure_matmul_gflops()
            self.log(f"[demo] {self.machine.line()}")
        mini = self._stage("mini", self.make_mini)
        splits = mini["splits"]
        self._stage("preprocess", self.preprocess)
        # the classifier first: G_L's validation measures Emo-Acc-LM on its raw landmarks with it
        with torch_threads(1):  # a 2-layer MLP: a second thread only waits at the barrier (emotalk.demo.forked)
            self._stage("classifier", lambda: self._train("emotion/landmark-tiny", "landmark_emotion", [], splits))
        self._stage("landmark", lambda: self._train(*self.landmark_stage(), splits))
        self._stage("texture", lambda: self._train(*self.texture_stage(), splits))
        remember_checkpoints(self.checkpoints)  # so 'emotalk generate' finds these models without flags
        gen = self._stage("generate", lambda: self.generate(splits))
        emo = self._stage("emotions", lambda: self.emotion_panels(splits)) if self.o.emotion_panel else None
        ev = self._stage("evaluate", lambda: self.evaluate(splits))
        t0 = time.perf_counter()
        path = self.report(gen, ev, emo)
        self.stage_seconds["report"] = time.perf_counter() - t0
        self.budget = self.write_summary()
        return path

    def write_summary(self) -> BudgetCheck:
        """``stages/summary.json``: every stage's seconds, its budget on this machine, the machine's GFLOP/s and
        the ``budget`` line, so a run can be quoted without its log."""
        budget = check_budget(self.stage_seconds, self.machine, self.reused)
        info = budget.to_json()
        info["machine"] = self.machine.to_json() if self.machine is not None else None
        info["machine_line"] = self.machine.line() if self.machine is not None else None
        if self._pipe is not None:
            info["shared_pipeline"] = dict(self._pipe.counts)
        atomic_write_json(self.state_dir / "summary.json", info)
        return budget


def _video_cost(job) -> float:
    """Relative cost of one demo video, to balance the processes: the full photo is fine-tuned and pasted at
    its own size, the warp baseline runs no G_T."""
    caption, image, _, _, renderer = job
    return 0.3 if renderer == "warp" else (2.0 if caption.startswith("full photo") else 1.0)


def trim_eval_config(cfg: EvalConfig, methods: tuple[str, ...], grid_methods: tuple[str, ...]) -> EvalConfig:
    """The demo's evaluation: only the rows in ``methods`` (in the config's order), none of them in Table 4
    (the ablation table needs the ablation rows the demo skips), and the emotion grid only for
    ``grid_methods``. Modifies and returns ``cfg``; a name the config lacks is an error, so a renamed row in
    ``configs/eval/mead-mini.yaml`` cannot silently empty the report's tables."""
    known = [m.name for m in cfg.methods]
    missing = [n for n in (*methods, *grid_methods) if n not in known]
    if missing:
        raise ConfigError(f"the demo evaluates {missing}, which configs/eval/mead-mini.yaml does not define "
                          f"(it has {known}); fix DemoOptions.eval_methods / grid_methods")
    cfg.methods = [m for m in cfg.methods if m.name in methods]
    for m in cfg.methods:
        m.tables = [t for t in m.tables if t != "table4"]
    cfg.grid.methods = [n for n in grid_methods if n in methods]
    cfg.grid.enabled = bool(cfg.grid.methods)
    return cfg
