"""Generate mead-mini: a small talking-face dataset in MEAD's raw layout, entirely offline.

Plan (:mod:`emotalk.mini.plan`, deterministic for a seed): every photo (the built-in public-domain ones,
then the user's) yields ``variants`` subjects (:mod:`emotalk.mini.identity`); the last variant of every photo with two or
more variants is a held-out *test* subject. Each subject gets an eSpeak voice, a speaking rate, pitch and
articulation style, and speaks Harvard sentences in every (emotion, level) of the size's list.

Per clip: TTS -> phones (:mod:`tts`), phones -> visemes, emotion -> action units, blinks
(:mod:`motion`), canonical landmarks -> the subject's pixels, piecewise-affine warp + mouth interior
(:mod:`emotalk.data.face.warp`), then the files::

    <out>/mini.json                                            dataset facts: sizes, seed, subjects, splits
    <out>/<ID>/video/front/<emotion>/level_<n>/<NNN>.mp4       256x256, 30 fps, H.264, audio muxed (AAC)
    <out>/<ID>/video/front/<emotion>/level_<n>/<NNN>.landmarks.npz   ground truth (below)
    <out>/<ID>/audio/<emotion>/level_<n>/<NNN>.wav             16 kHz mono PCM, the same speech

Neutral has only ``level_1`` (as in MEAD). Subject ids are MEAD-like ``W001``, ``W002``, ... — ``W`` for
the two built-in photos (both women), and for user photos ``M`` or ``W`` as given (``photo.jpg:M``;
default ``M``). Numbers run over all subjects: the built-in photos' subjects first (alternating photos:
tiny ``W001`` astronaut, ``W002`` Grace Hopper, ``W003`` astronaut variant, held out), then the user
photos' subjects, so passing photos never renumbers the built-in ones. Voices are dealt from a seeded
order of eSpeak's female (``W``) or male (``M``) variants, so subjects sound different.

Sidecar ``<NNN>.landmarks.npz`` (``np.load(..., allow_pickle=False)``; strings are 0-d unicode arrays):

==========================  =============================================================================
``landmarks``               (T, 68, 2) float32 — per-frame ground-truth landmarks in *pixels* of the video
                            frame (x right, y down, pixel centres at integers, like dlib); iBUG 68 order
``landmarks_canonical``     (T, 68, 2) float32 — the same in canonical space (the subject's own shape)
``neutral_landmarks``       (68, 2) float32 — the subject's rest shape in pixels
``to_canonical``            (2, 3) float32 — similarity, pixels -> canonical: ``c = A @ p + t``
``visemes``                 (T, 5) float32 — jaw, width, round, closure, tuck (see :mod:`visemes`)
``blink``                   (T,) float32 — eyelid closure 0..1
``phones`` / ``phone_times``  (N,) str / (N, 2) float32 seconds — eSpeak phones, contiguous over the clip
``fps``, ``sample_rate``    float / int; frame ``t`` shows time ``(t + 0.5) / fps`` of the audio
``frame_size``              (2,) int — width, height
``subject``, ``emotion``, ``level``, ``sentence``, ``text``, ``voice`` (JSON), ``seed``, ``split``
==========================  =============================================================================
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from emotalk.data.emotions import EMOTIONS
from emotalk.data.face.warp import FaceWarper, render_frame
from emotalk.data.io.media import write_wav
from emotalk.data.parallel import WorkerPool, worker_cached, worker_state
from emotalk.data.preprocess.clip_analysis import SIDECAR_SUFFIX
from emotalk.data.preprocess.readers import MEAD_MINI_VERSION
from emotalk.errors import InputError
from emotalk.mini.encode import write_clip_video
from emotalk.mini.identity import make_subject, prepare_photo, sample_identity
from emotalk.mini.motion import clip_motion
from emotalk.mini.plan import (SIZES, ClipPlan, DatasetPlan, PhotoSpec, SizeConfig, SubjectPlan, seeded_rng,
                               builtin_photos, parse_photo_arg, plan_dataset, user_photos)
from emotalk.mini.sentences import HARVARD_SENTENCES
from emotalk.mini.tts import Voice, synthesize
from emotalk.utils.io import atomic_path, atomic_write_json
from emotalk.utils.lock import LOCK_NAME, owned_folder, remove_hidden_files

__all__ = ["FORMAT_VERSION", "SIZES", "SIDECAR_SUFFIX", "ClipPlan", "DatasetPlan", "PhotoSpec", "SizeConfig",
           "SubjectPlan", "build_subjects", "builtin_photos", "clip_landmarks", "generate_mini", "load_sidecar",
           "parse_photo_arg", "plan_dataset", "user_photos"]

log = logging.getLogger(__name__)

FPS = 30.0
SAMPLE_RATE = 16000
#: mead-mini data version, written to ``mini.json`` and every sidecar; bumped (in the reader, which refuses
#: other versions) whenever the generated content changes, so cached datasets are regenerated
#: (1: first release; 2: FACS-calibrated expression strength, see :mod:`emotalk.mini.action_units`; 3: the
#: same ground truth, pixels rendered and encoded faster: mouth supersampling 2, x264 ultrafast).
FORMAT_VERSION = MEAD_MINI_VERSION
#: anti-aliasing of the drawn mouth interior (:func:`emotalk.data.face.warp.draw_mouth_interior`): 2x2 samples
#: a pixel are within 50.6 dB of 4x4 (a 1/255 step on a few edge pixels) at 2.4x less of the mouth's time, which
#: was ~40 % of generating a clip
MOUTH_SUPERSAMPLE = 2


# ----------------------------------------------------------------------------------------------------
# per-clip work
# ----------------------------------------------------------------------------------------------------
@dataclass
class ClipResult:
    subject_id: str
    emotion: str
    level: int
    index: int
    num_frames: int
    duration: float
    sentence: int


def clip_landmarks(subject, subj_plan: SubjectPlan, clip: ClipPlan, fps: float = FPS):
    """TTS + ground-truth motion of one clip: ``(speech, motion, pixel landmarks (T, 68, 2) float32)``."""
    text = HARVARD_SENTENCES[clip.sentence]
    voice = Voice(**subj_plan.voice).with_emotion(clip.emotion, clip.level)
    speech = synthesize(text, voice, sample_rate=SAMPLE_RATE, seed=clip.seed)
    num_frames = int(np.ceil(speech.duration * fps - 1e-6))
    # pad the audio to exactly num_frames / fps so audio and video end together
    n_audio = int(round(num_frames / fps * SAMPLE_RATE))
    if len(speech.audio) < n_audio:
        speech.audio = np.concatenate([speech.audio, np.zeros(n_audio - len(speech.audio), np.float32)])
        last = speech.phones[-1]
        speech.phones[-1] = type(last)(last.symbol, last.start, n_audio / SAMPLE_RATE, last.stress)
    rng = seeded_rng(clip.seed, 7)
    motion = clip_motion(subject.neutral_canonical, speech.phones, num_frames, clip.emotion, clip.level, rng,
                         fps=fps, articulation=subj_plan.articulation)
    pixels = subject.to_pixels(motion.landmarks.reshape(-1, 2)).reshape(num_frames, 68, 2).astype(np.float32)
    return speech, motion, pixels


def _write_clip(root: Path, subject, subj_plan: SubjectPlan, clip: ClipPlan, render: bool = True) -> ClipResult:
    speech, motion, pixels = clip_landmarks(subject, subj_plan, clip)
    T = pixels.shape[0]
    wav = clip.audio_path(root)
    write_wav(wav, speech.audio, SAMPLE_RATE)
    syms, times = speech.phone_arrays()
    side = {
        "format_version": np.int64(FORMAT_VERSION),
        "landmarks": pixels,
        "landmarks_canonical": motion.landmarks.astype(np.float32),
        "neutral_landmarks": subject.landmarks.astype(np.float32),
        "to_canonical": subject.to_canonical.m.astype(np.float32),
        "visemes": motion.visemes.astype(np.float32),
        "blink": motion.blink.astype(np.float32),
        "phones": syms, "phone_times": times,
        "fps": np.float64(FPS), "sample_rate": np.int64(SAMPLE_RATE),
        "frame_size": np.array(subject.image.shape[1::-1], dtype=np.int64),
        "subject": np.array(clip.subject_id), "emotion": np.array(clip.emotion), "level": np.int64(clip.level),
        "sentence": np.int64(clip.sentence), "text": np.array(HARVARD_SENTENCES[clip.sentence]),
        "voice": np.array(json.dumps(asdict(speech.voice))), "seed": np.int64(clip.seed),
        "split": np.array(subj_plan.split),
    }
    if render:
        warper = _warper(subject)
        unit = subject.unit
        jaw_px = motion.visemes[:, 0] * unit
        # one ffmpeg run encodes the frames as they are rendered and muxes the clip's WAV (emotalk.mini.encode)
        write_clip_video(clip.video_path(root), (render_frame(warper, pixels[t], unit, float(jaw_px[t]),
                                                              supersample=MOUTH_SUPERSAMPLE)
                                                 for t in range(T)), T, FPS, wav)
    with atomic_path(clip.sidecar_path(root), suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **side)
    return ClipResult(clip.subject_id, clip.emotion, clip.level, clip.index, T, T / FPS, clip.sentence)


def _warper(subject) -> FaceWarper:
    """The subject's piecewise-affine warper, built once per worker process."""
    return worker_cached(("warper", subject.subject_id), lambda: FaceWarper(subject.image, subject.landmarks))


def _worker_clip(task: tuple[ClipPlan, object]) -> ClipResult:
    clip, subject = task
    st = worker_state()
    return _write_clip(st["root"], subject, st["plans"][clip.subject_id], clip)


def _longest_first(clips: Sequence[ClipPlan], plans: dict) -> list[ClipPlan]:
    """The clips, those expected to take longest first (text length over the voice's speaking rate), so the
    last clips to finish are short ones and no worker idles at the end while another renders a long one."""
    return sorted(clips, key=lambda c: -len(HARVARD_SENTENCES[c.sentence]) / plans[c.subject_id].voice["rate"])


# ----------------------------------------------------------------------------------------------------
def build_subjects(plan: DatasetPlan) -> dict:
    """Prepare the photos (dlib, alignment, segmentation) and make every planned subject."""
    prepared = {}
    # user photos first: a photo without a face fails before any slow work
    for p in sorted(plan.photos, key=lambda p: p.source.startswith("builtin:")):
        if any(s.photo == p.name for s in plan.subjects):
            prepared[p.name] = prepare_photo(p.image, p.name, source=p.source,
                                             size=plan.size.frame_size)
    subjects = {}
    for sn, s in enumerate(plan.subjects):
        params = sample_identity(seeded_rng(plan.seed, 4, s.photo_index, s.variant), s.variant)
        s.identity = params.to_json()
        subjects[s.subject_id] = make_subject(prepared[s.photo], s.subject_id, params)
    return subjects


#: written into --out while a generation runs (mini.json replaces it at the end): an interrupted run's folder
#: is recognised as mead-mini's own, so running the command again finishes it instead of refusing it
PARTIAL_MARK = ".mead-mini-partial"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; choose a folder")
    ours = (out / "mini.json").is_file() or (out / PARTIAL_MARK).is_file()  # finished, or interrupted: redo
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and not ours:
        raise InputError(f"--out {out} is not empty and is not a mead-mini dataset; choose an empty or new folder")


def generate_mini(out: str | Path, size: str = "tiny", seed: int = 0, photos: Sequence[str] = (),
                  workers: int = 1, progress: bool | None = None) -> dict:
    """Generate mead-mini into ``out``; returns the ``mini.json`` contents. ``out`` is locked while this runs,
    and an interrupted earlier run's folder is finished (its temp files cleared), not refused (issue 17)."""
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of: {', '.join(SIZES)}")
    out = Path(out)
    _check_out(out)
    with owned_folder(out, "make-mini"):
        for sub in out.iterdir():
            if sub.is_dir():
                remove_hidden_files(sub)
        return _generate(out, size, seed, photos, workers, progress)


def _prepare_out(out: Path, subject_ids: set[str]) -> None:
    """Create ``out`` and mark it as a generation in progress; when regenerating, drop the subjects the new
    plan no longer has."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror or e}; choose a writable folder") from None
    (out / PARTIAL_MARK).write_text("mead-mini generation in progress (or interrupted); run make-mini again\n")
    old = out / "mini.json"
    if old.is_file():
        try:
            old_ids = set(json.loads(old.read_text()).get("subject_ids", []))
        except (json.JSONDecodeError, OSError):
            old_ids = set()
        for sid in old_ids - subject_ids:
            if (out / sid).is_dir() and len(sid) == 4:
                shutil.rmtree(out / sid)
        old.unlink()


def _generate(out: Path, size: str, seed: int, photos: Sequence[str], workers: int, progress: bool | None) -> dict:
    t0 = time.time()
    photo_specs = builtin_photos() + user_photos(photos)
    plan = plan_dataset(size, seed, photo_specs)
    plans = {s.subject_id: s for s in plan.subjects}
    workers = max(1, int(workers))
    results: list[ClipResult] = []
    # forkserver workers, one thread each (emotalk.data.parallel). They start, and import their modules, while
    # this process prepares the photos and subjects; each clip task then carries its subject (a 256x256 frame
    # and its landmarks: cheap to send)
    with WorkerPool(workers, state={"root": out, "plans": plans}) as pool:
        subjects = build_subjects(plan)
        _prepare_out(out, set(subjects))
        bar = tqdm(total=len(plan.clips), desc=f"mead-mini {size}", unit="clip",
                   disable=(None if progress is None else not progress))
        try:
            tasks = [(c, subjects[c.subject_id]) for c in _longest_first(plan.clips, plans)]
            for r in pool.imap(_worker_clip, tasks, ordered=False):
                results.append(r)
                bar.update(1)
        finally:
            bar.close()
    results.sort(key=lambda r: (r.subject_id, EMOTIONS.index(r.emotion), r.level, r.index))
    sources = {p.name: p.source for p in photo_specs}
    info = {
        "dataset": "mead-mini",
        "format_version": FORMAT_VERSION,
        "size": size,
        "seed": int(seed),
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "frame_size": [plan.size.frame_size, plan.size.frame_size],
        "view": "front",
        "sidecar": "<ID>/video/front/<emotion>/level_<n>/<NNN>.landmarks.npz",
        "splits": {"train": [s.subject_id for s in plan.subjects if s.split == "train"],
                   "test": [s.subject_id for s in plan.subjects if s.split == "test"]},
        "subject_ids": [s.subject_id for s in plan.subjects],
        "subjects": {s.subject_id: {"photo": s.photo, "source": sources[s.photo], "variant": s.variant,
                                    "split": s.split, "voice": s.voice, "articulation": round(s.articulation, 4),
                                    "identity": s.identity}
                     for s in plan.subjects},
        "emotions": {e: list(levels) for e, levels in plan.size.emotions},
        "num_clips": len(results),
        "num_frames": int(sum(r.num_frames for r in results)),
        "duration_s": round(sum(r.duration for r in results), 3),
        "generation_s": round(time.time() - t0, 2),
        "workers": workers,
    }
    atomic_write_json(out / "mini.json", info)
    (out / PARTIAL_MARK).unlink(missing_ok=True)
    log.info("wrote %d clips of %d subjects to %s in %s s", len(results), len(plan.subjects), out, info["generation_s"])
    return info


def load_sidecar(path: str | Path) -> dict:
    """Read a clip's ground-truth sidecar (``.landmarks.npz`` next to its mp4) into a dict of arrays."""
    path = Path(path)
    if path.suffix == ".mp4":
        path = path.with_name(path.stem + SIDECAR_SUFFIX)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1)))
