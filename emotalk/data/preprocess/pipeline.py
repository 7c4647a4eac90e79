"""Raw dataset -> processed clips (the format of :mod:`emotalk.data.io.clip`); ``emotalk preprocess``.

What happens to one clip and how a subject's neutral reference is chosen is described in
:mod:`emotalk.data.preprocess.clip_analysis`. This module runs a whole dataset: phase A finds every
subject's neutral reference, phase B processes the remaining clips, both on a
:class:`emotalk.data.parallel.WorkerPool`.

The run is resumable (finished clips and subject references are skipped), a failing clip (corrupt file,
no face, missing audio, too short, missing features) never stops it: it is logged with its reason in
``<out>/report.jsonl`` (rewritten each run, together with raw files whose names were rejected), and a
summary counts clips done and skipped by reason. Clips run in parallel worker processes.
"""
from __future__ import annotations

import json
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from emotalk.data.emotions import EMOTIONS, INTENSITY_LEVELS
from emotalk.data.face.background import estimate_background_from_references
from emotalk.data.face.landmarkers import make_landmarker
from emotalk.data.io.clip import (DatasetManifest, clip_path, load_subject, save_clip, save_subject,
                                  subject_path)
from emotalk.data.parallel import WorkerPool
from emotalk.data.preprocess.clip_analysis import (REASONS, ClipFailure, PreprocessOptions, _rel, analyze_clip,
                                                   build_clip, neutral_from_analysis, subject_reference)
from emotalk.data.preprocess.readers import ClipRecord, DatasetListing, read_dataset
from emotalk.data.speech.deepspeech import check_model_file
from emotalk.data.speech.features import feature_info
from emotalk.errors import (NO_SPACE_ERRNOS, DataError, EmotalkError, InputError, MissingWeightsError,
                            NoSpaceError)
from emotalk.utils.lock import owned_folder

__all__ = ["REASONS", "PreprocessOptions", "PreprocessSummary", "preprocess_dataset"]


# ==================================================================================================
# worker tasks (module-level so multiprocessing can pickle them)
# ==================================================================================================
def _failure(record: ClipRecord, reason: str, message: str, root: Path | None, stage: str = "clip") -> dict:
    return {"status": "skipped", "subject": record.subject, "clip_id": record.clip_id,
            "dataset": record.dataset, "video": _rel(record.video, root), "reason": reason,
            "message": " ".join(str(message).split()), "stage": stage}


def _guarded(record: ClipRecord, root: Path | None, fn, stage: str):
    try:
        return fn(), None
    except ClipFailure as e:
        return None, _failure(record, e.reason, str(e), root, stage)
    except (MissingWeightsError, NoSpaceError):
        raise
    except EmotalkError as e:
        return None, _failure(record, "error", f"{type(e).__name__}: {e}", root, stage)
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS:  # a full disk is not a bad clip: stop (the CLI says "no space")
            raise
        return None, _failure(record, "error", f"{type(e).__name__}: {e}", root, stage)
    except Exception as e:  # one bad clip never stops the run
        tb = traceback.format_exc(limit=3).strip().splitlines()
        return None, _failure(record, "error", f"{type(e).__name__}: {e} ({tb[-3] if len(tb) > 2 else ''})",
                              root, stage)


def _subject_task(args) -> dict:
    """Phase A: find a subject's neutral reference (also writes the clip it came from). Tries up to
    ``neutral_candidates`` neutral clips; failing those (or with none), falls back to the first frame of
    the first usable other clip."""
    subject, neutral_cands, other_cands, opts, out, root = args
    results = []
    n = max(1, opts.neutral_candidates)
    plan = [(r, "neutral_clip") for r in neutral_cands[:n]] + [(r, "first_frame") for r in other_cands[:n]]
    for record, mode in plan:
        an, fail = _guarded(record, root, lambda: analyze_clip(record, opts, root), "neutral reference")
        if fail:
            results.append(fail)
            continue
        if mode == "neutral_clip":
            neutral, frame = neutral_from_analysis(an, opts.closed_fraction)
            ref = subject_reference(an, neutral, frame, opts.closed_fraction)
            clip = build_clip(an, neutral, opts, root, neutral_source=record.clip_id,
                              true_neutral=ref.true_neutral_landmarks)
        else:
            ref = subject_reference(an, an.aligned[0], 0, closed_fraction=None)
            clip = build_clip(an, None, opts, root)
        save_clip(clip, clip_path(out, subject, record.clip_id))
        save_subject(ref, subject_path(out, subject))
        results.append({"status": "done", "subject": subject, "clip_id": record.clip_id,
                        "frames": an.num_frames})
        return {"subject": subject, "mode": mode, "source": record.clip_id, "results": results}
    return {"subject": subject, "mode": "first_frame", "source": None, "results": results}


def _clip_task(args) -> dict:
    record, neutral, source, opts, out, root, true_neutral = args

    def run():
        an = analyze_clip(record, opts, root)
        clip = build_clip(an, neutral, opts, root, neutral_source=source, true_neutral=true_neutral)
        save_clip(clip, clip_path(out, record.subject, record.clip_id))
        return an.num_frames

    frames, fail = _guarded(record, root, run, "clip")
    if fail:
        return fail
    return {"status": "done", "subject": record.subject, "clip_id": record.clip_id, "frames": frames}


# ==================================================================================================
# dataset level
# ==================================================================================================
@dataclass
class PreprocessSummary:
    out: str
    clips_total: int = 0
    done: int = 0  # processed in this run
    already_done: int = 0  # found finished from an earlier run
    skipped: dict = field(default_factory=dict)  # reason -> count (this run)
    rejected_names: int = 0
    frames: int = 0
    seconds: float = 0.0
    subjects: dict = field(default_factory=dict)  # subject -> {"mode", "source"}

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"{self.done} clips done ({self.frames} frames, {self.frames_per_second:.1f} frames/s), "
               f"{self.already_done} already done, {sum(self.skipped.values())} skipped, "
               f"{self.rejected_names} files with unusable names -> {self.out}"]
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            out.append(f"  skipped ({reason}): {n}")
        fallback = sorted(s for s, v in self.subjects.items() if v.get("mode") == "first_frame")
        if fallback:
            out.append(f"  subjects without a usable neutral clip (first-frame fallback): {', '.join(fallback)}")
        if self.skipped or self.rejected_names:
            out.append(f"  details: {Path(self.out) / 'report.jsonl'}")
        return out


class _Report:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w", encoding="utf-8")

    def write(self, entry: dict) -> None:
        self.f.write(json.dumps(entry) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _check_manifest(out: Path, manifest: DatasetManifest) -> dict:
    path = out / "manifest.json"
    if not path.is_file():
        return {}
    old = DatasetManifest.load(out)
    for key in ("source", "feature_kind", "feature_dim", "window", "fps", "crop_size"):
        if getattr(old, key) != getattr(manifest, key):
            raise InputError(f"{out} was preprocessed with {key}={getattr(old, key)!r}, this run asks for "
                             f"{getattr(manifest, key)!r}; use another --out folder or delete {out}")
    return old.extra or {}


def preprocess_dataset(dataset: str, root: str | Path, out: str | Path, *args, **kwargs) -> PreprocessSummary:
    """Preprocess a raw dataset folder into ``out`` (resumable); returns the run's summary (arguments: see
    :func:`_preprocess_dataset`). ``out`` is locked while this runs (a second run into it refuses), and the
    temp files of a killed earlier run are cleared first (issue 17)."""
    with owned_folder(out, f"preprocessing {dataset}", clean=("clips", "subjects")):
        return _preprocess_dataset(dataset, root, out, *args, **kwargs)


def _preprocess_dataset(dataset: str, root: str | Path, out: str | Path, subjects: list[str] | None = None,
                       workers: int = 1, options: PreprocessOptions | None = None,
                       progress: bool | None = None, max_clips: int | None = None,
                       reader_options: dict | None = None) -> PreprocessSummary:
    """Preprocess a raw dataset folder into ``out`` (resumable); returns the run's summary."""
    opts = options or PreprocessOptions()
    root, out = Path(root), Path(out)
    t_start = time.perf_counter()
    if opts.features == "deepspeech" and not (opts.deepspeech_dir or opts.deepspeech_model):
        raise MissingWeightsError("--features deepspeech needs --deepspeech-model deepspeech-0_1_0-b90017e8.pb "
                                  "or --deepspeech-dir DIR with one DeepSpeech feature file per clip (or use "
                                  "--features phonemes)")
    if opts.features == "deepspeech" and opts.deepspeech_model:
        check_model_file(opts.deepspeech_model)  # fail before the first clip, with the graph's listing
    if opts.detector != "dlib":
        make_landmarker(opts.detector, weights=opts.face_alignment_weights)  # fail early on missing weights
    listing: DatasetListing = read_dataset(dataset, root, subjects, **(reader_options or {}))
    if subjects and listing.extra.get("missing_subjects"):
        raise InputError(f"subjects not found under {root}: {', '.join(listing.extra['missing_subjects'])}")
    records = sorted(listing.records, key=lambda r: (r.subject, r.clip_id))
    if max_clips is not None:
        records = records[:max_clips]
    if not records:
        raise DataError(f"no {dataset} clips found under {root}"
                        + (f" ({len(listing.rejected)} files with unusable names, e.g. "
                           f"{listing.rejected[0].path}: {listing.rejected[0].reason})" if listing.rejected else "")
                        + "; check --dataset and --root")
    info = feature_info(opts.features, opts.window, opts.fps)
    manifest = DatasetManifest(feature_kind=info.kind, feature_dim=info.dim, window=info.window, fps=opts.fps,
                               crop_size=opts.crop_size, source=listing.dataset, emotions=list(EMOTIONS),
                               intensity_levels=INTENSITY_LEVELS)
    old_extra = _check_manifest(out, manifest)
    subj_info: dict = dict(old_extra.get("subjects", {}))
    manifest.extra = {"feature_rate": info.rate, "detector": opts.detector, "face_scale": opts.face_scale,
                      "face_center": list(opts.face_center), "sample_rate": opts.sample_rate,
                      "reader": {k: v for k, v in listing.extra.items() if k != "missing_subjects"},
                      "subjects": subj_info, "root": str(root)}
    manifest.save(out)

    summary = PreprocessSummary(out=str(out), clips_total=len(records), rejected_names=len(listing.rejected))
    report = _Report(out / "report.jsonl")
    for rej in listing.rejected:
        report.write({"status": "skipped", "video": _rel(Path(rej.path), root), "reason": "bad name",
                      "message": rej.reason, "stage": "parse"})
    skipped: Counter = Counter()

    by_subject: dict[str, list[ClipRecord]] = {}
    for r in records:
        by_subject.setdefault(r.subject, []).append(r)
    todo_workers = max(1, int(workers))
    if todo_workers > 1:
        opts.decode_threads = opts.decode_threads or 1

    bar = tqdm(total=len(records), unit="clip", desc=f"preprocess {listing.dataset}",
               disable=(None if progress is None else not progress), dynamic_ncols=True)

    def handle(res: dict) -> None:
        if res["status"] == "done":
            summary.done += 1
            summary.frames += int(res.get("frames", 0))
        else:
            skipped[res["reason"]] += 1
            report.write(res)
        bar.update(1)

    # forkserver workers, one thread each (see emotalk.data.parallel)
    with WorkerPool(todo_workers) as pool:
        try:
            # ---- phase A: subjects' neutral references --------------------------------------------
            subject_tasks = []
            for subject, recs in sorted(by_subject.items()):
                neutral = [r for r in recs if r.neutral_reference]
                if subject_path(out, subject).is_file():
                    subj_info.setdefault(subject, {"mode": "neutral_clip" if neutral else "first_frame",
                                                   "source": None})
                    continue
                others = [r for r in recs if not r.neutral_reference]
                subject_tasks.append((subject, neutral, others, opts, out, root))
            tried: set[tuple[str, str]] = set()
            for res in pool.imap(_subject_task, subject_tasks, ordered=False):
                for item in res["results"]:
                    tried.add((item["subject"], item["clip_id"]))
                    handle(item)
                subj_info[res["subject"]] = {"mode": res["mode"], "source": res["source"]}
            manifest.extra["subjects"] = subj_info
            backdrop = estimate_background_from_references(out)  # the crops' backdrop, for texture checkpoints
            manifest.background_rgb = list(backdrop) if backdrop is not None else None
            manifest.save(out)

            # ---- phase B: all remaining clips -----------------------------------------------------
            clip_tasks = []
            for subject, recs in sorted(by_subject.items()):
                info_s = subj_info.get(subject, {"mode": "first_frame"})
                if info_s.get("mode") == "neutral_clip" and subject_path(out, subject).is_file():
                    ref_s = load_subject(subject_path(out, subject))
                    neutral_s, true_s = ref_s.neutral_landmarks, ref_s.true_neutral_landmarks
                    source_s = info_s.get("source") or ""
                else:
                    neutral_s, source_s, true_s = None, "", None
                for r in recs:
                    if (subject, r.clip_id) in tried or clip_path(out, subject, r.clip_id).is_file():
                        continue
                    clip_tasks.append((r, neutral_s, source_s, opts, out, root, true_s))
            done_now = summary.done + sum(skipped.values())
            summary.already_done = len(records) - done_now - len(clip_tasks)
            bar.update(max(summary.already_done, 0))
            for res in pool.imap(_clip_task, clip_tasks, ordered=False):
                handle(res)
        finally:
            bar.close()
            report.close()

    summary.skipped = dict(skipped)
    summary.subjects = subj_info
    summary.seconds = time.perf_counter() - t_start
    manifest.extra["last_run"] = {"done": summary.done, "already_done": summary.already_done,
                                  "skipped": summary.skipped, "rejected_names": summary.rejected_names,
                                  "frames": summary.frames, "seconds": round(summary.seconds, 2)}
    manifest.save(out)
    return summary
