"""Generate mead-mini: a small talking-face dataset in MEAD's raw layout, entirely offline.

Plan (deterministic for a seed): every photo (the built-in public-domain ones, then the user's) yields
``variants`` subjects (:mod:`emotalk.mini.identity`); the last variant of every photo with two or
more variants is a held-out *test* subject. Each subject gets an eSpeak voice, a speaking rate, pitch and
articulation style, and speaks Harvard sentences in every (emotion, level) of the size's list.

Per clip: TTS -> phones (:mod:`tts`), phones -> visemes, emotion -> action units, blinks
(:mod:`motion`), canonical landmarks -> the subject's pixels, piecewise-affine warp + mouth interior
(:mod:`render`), then the files::

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
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.errors import InputError

FPS = 30.0
SAMPLE_RATE = 16000
SIDECAR_SUFFIX = ".landmarks.npz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SizeConfig:
    name: str
    builtin_variants: dict[str, int]  # built-in photo name -> subjects made from it
    user_variants: int  # subjects per user photo
    emotions: tuple[tuple[str, tuple[int, ...]], ...]  # (emotion, levels)
    clips_per_level: int
    neutral_clips: int
    max_words: int | None = None  # only sentences this short (quick clips)
    frame_size: int = 256


ALL_LEVELS = tuple((e, (1,) if e == "neutral" else (1, 2, 3)) for e in EMOTIONS)
SIZES: dict[str, SizeConfig] = {
    # a few seconds: tests and smoke runs
    "tiny": SizeConfig("tiny", {"astronaut": 2, "grace_hopper": 1}, 1,
                       (("neutral", (1,)), ("happy", (3,)), ("sad", (3,)), ("surprised", (3,))),
                       clips_per_level=1, neutral_clips=1, max_words=6),
    # a few minutes on two cores: enough to train the tiny configs
    "small": SizeConfig("small", {"astronaut": 4, "grace_hopper": 4}, 4, ALL_LEVELS,
                        clips_per_level=2, neutral_clips=6),
}


@dataclass
class SubjectPlan:
    subject_id: str
    photo: str  # photo name
    photo_index: int
    variant: int
    split: str  # train | test
    voice: dict  # tts.Voice fields
    articulation: float
    identity: dict = field(default_factory=dict)  # IdentityParams (filled after sampling)


@dataclass
class ClipPlan:
    subject_id: str
    emotion: str
    level: int
    index: int  # 1-based NNN
    sentence: int  # index into HARVARD_SENTENCES
    seed: int

    @property
    def name(self) -> str:
        return f"{self.index:03d}"

    def video_path(self, root: Path) -> Path:
        return root / self.subject_id / "video" / "front" / self.emotion / f"level_{self.level}" / f"{self.name}.mp4"

    def audio_path(self, root: Path) -> Path:
        return root / self.subject_id / "audio" / self.emotion / f"level_{self.level}" / f"{self.name}.wav"

    def sidecar_path(self, root: Path) -> Path:
        return self.video_path(root).with_name(self.name + SIDECAR_SUFFIX)


@dataclass
class PhotoSpec:
    name: str
    source: str  # "builtin:<name>" or a file path
    letter: str  # M or W
    image: np.ndarray | None = None


@dataclass
class DatasetPlan:
    size: SizeConfig
    seed: int
    photos: list[PhotoSpec]
    subjects: list[SubjectPlan]
    clips: list[ClipPlan]


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) for k in key]]))


def parse_photo_arg(spec: str) -> tuple[str, str]:
    """``path`` or ``path:M`` / ``path:W`` -> (path, letter)."""
    path, letter = spec, "M"
    if len(spec) > 2 and spec[-2] == ":" and spec[-1].upper() in "MW":
        path, letter = spec[:-2], spec[-1].upper()
    return path, letter


def builtin_photos() -> list[PhotoSpec]:
    from emotalk.data.io.photos import public_domain_photos

    return [PhotoSpec(name, f"builtin:{name}", "W", img) for name, img in public_domain_photos().items()]


def user_photos(specs: Sequence[str]) -> list[PhotoSpec]:
    from emotalk.mini.identity import read_photo

    out = []
    used: set[str] = set()
    for spec in specs:
        path, letter = parse_photo_arg(spec)
        img = read_photo(path)
        stem = Path(path).stem or "photo"
        name, k = stem, 2
        while name in used or name in ("astronaut", "grace_hopper"):
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        out.append(PhotoSpec(name, str(path), letter, img))
    return out


def plan_dataset(size: str | SizeConfig, seed: int = 0, photos: Sequence[PhotoSpec] | None = None) -> DatasetPlan:
    """Subjects, voices and clips for ``size`` (no heavy work; deterministic for ``seed``)."""
    from emotalk.mini.sentences import HARVARD_SENTENCES
    from emotalk.mini.tts import FEMALE_VOICES, MALE_VOICES

    cfg = SIZES[size] if isinstance(size, str) else size
    photos = list(photos) if photos is not None else builtin_photos()
    variants = [cfg.builtin_variants.get(p.name, cfg.user_variants) if p.source.startswith("builtin:")
                else cfg.user_variants for p in photos]
    subjects: list[SubjectPlan] = []
    voice_order = {letter: _rng(seed, 5, ord(letter)).permutation(len(FEMALE_VOICES if letter == "W" else MALE_VOICES))
                   for letter in "MW"}
    voices_used = {"M": 0, "W": 0}
    # built-in photos first, then the user's (so adding photos never renumbers the built-in subjects);
    # within each group variant-major, so small sizes still mix photos
    groups = [[i for i, p in enumerate(photos) if p.source.startswith("builtin:")],
              [i for i, p in enumerate(photos) if not p.source.startswith("builtin:")]]
    for group in groups:
        for v in range(max((variants[i] for i in group), default=0)):
            for pi in group:
                photo, n = photos[pi], variants[pi]
                if v >= n:
                    continue
                number = len(subjects) + 1
                rng = _rng(seed, 1, pi, v)
                pool = FEMALE_VOICES if photo.letter == "W" else MALE_VOICES
                name = pool[int(voice_order[photo.letter][voices_used[photo.letter] % len(pool)])]
                voices_used[photo.letter] += 1
                voice = {"name": name, "rate": int(rng.integers(150, 186)), "pitch": int(rng.integers(35, 66)),
                         "pitch_range": int(rng.integers(40, 71)), "volume": 100}
                subjects.append(SubjectPlan(
                    subject_id=f"{photo.letter}{number:03d}", photo=photo.name, photo_index=pi, variant=v,
                    split="test" if (n >= 2 and v == n - 1) else "train", voice=voice,
                    articulation=float(rng.uniform(0.85, 1.15))))
    pool = [i for i, s in enumerate(HARVARD_SENTENCES) if cfg.max_words is None or len(s.split()) <= cfg.max_words]
    clips: list[ClipPlan] = []
    for sn, subj in enumerate(subjects):
        order = _rng(seed, 3, sn).permutation(pool)
        k = 0
        for emotion, levels in cfg.emotions:
            emo = canonical_emotion(emotion)
            ei = EMOTIONS.index(emo)
            for level in levels:
                n_clips = cfg.neutral_clips if emo == "neutral" else cfg.clips_per_level
                for c in range(n_clips):
                    clip_seed = int(_rng(seed, 2, sn, ei, level, c).integers(2 ** 31))
                    clips.append(ClipPlan(subj.subject_id, emo, int(level), c + 1, int(order[k % len(order)]),
                                          clip_seed))
                    k += 1
    return DatasetPlan(size=cfg, seed=int(seed), photos=photos, subjects=subjects, clips=clips)


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
    from emotalk.mini.motion import clip_motion
    from emotalk.mini.sentences import HARVARD_SENTENCES
    from emotalk.mini.tts import Voice, synthesize

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
    rng = _rng(clip.seed, 7)
    motion = clip_motion(subject.neutral_canonical, speech.phones, num_frames, clip.emotion, clip.level, rng,
                         fps=fps, articulation=subj_plan.articulation)
    pixels = subject.to_pixels(motion.landmarks.reshape(-1, 2)).reshape(num_frames, 68, 2).astype(np.float32)
    return speech, motion, pixels


def _write_clip(root: Path, subject, subj_plan: SubjectPlan, clip: ClipPlan, render: bool = True) -> ClipResult:
    from emotalk.data.io.media import VideoWriter, write_wav
    from emotalk.mini.render import render_frame
    from emotalk.mini.sentences import HARVARD_SENTENCES
    from emotalk.utils.io import atomic_path

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
        # the muxer stops at the shorter stream; give it a little more audio than video so no frame is
        # dropped (the AAC track is cut at the video's end)
        mux = wav.with_name(f".{wav.stem}.mux{os.getpid()}.wav")
        write_wav(mux, np.concatenate([speech.audio, np.zeros(SAMPLE_RATE // 4, np.float32)]), SAMPLE_RATE)
        try:
            with VideoWriter(clip.video_path(root), FPS, audio=mux) as vw:
                for t in range(T):
                    vw.write(render_frame(warper, pixels[t], unit, float(jaw_px[t])))
        finally:
            mux.unlink(missing_ok=True)
    with atomic_path(clip.sidecar_path(root), suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **side)
    return ClipResult(clip.subject_id, clip.emotion, clip.level, clip.index, T, T / FPS, clip.sentence)


_WORKER_STATE: dict = {}


def _warper(subject):
    from emotalk.mini.render import FaceWarper

    cache = _WORKER_STATE.setdefault("warpers", {})
    if subject.subject_id not in cache:
        cache[subject.subject_id] = FaceWarper(subject.image, subject.landmarks)
    return cache[subject.subject_id]


def _init_worker(root: str, subjects: dict, plans: dict) -> None:
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_STATE.clear()
    _WORKER_STATE.update(root=Path(root), subjects=subjects, plans=plans)


def _worker_clip(clip: ClipPlan) -> ClipResult:
    st = _WORKER_STATE
    return _write_clip(st["root"], st["subjects"][clip.subject_id], st["plans"][clip.subject_id], clip)


# ----------------------------------------------------------------------------------------------------
def build_subjects(plan: DatasetPlan) -> dict:
    """Prepare the photos (dlib, alignment, segmentation) and make every planned subject."""
    from emotalk.mini.identity import make_subject, prepare_photo, sample_identity

    prepared = {}
    # user photos first: a photo without a face fails before any slow work
    for p in sorted(plan.photos, key=lambda p: p.source.startswith("builtin:")):
        if any(s.photo == p.name for s in plan.subjects):
            prepared[p.name] = prepare_photo(p.image, p.name, source=p.source,
                                             size=plan.size.frame_size)
    subjects = {}
    for sn, s in enumerate(plan.subjects):
        params = sample_identity(_rng(plan.seed, 4, s.photo_index, s.variant), s.variant)
        s.identity = params.to_json()
        subjects[s.subject_id] = make_subject(prepared[s.photo], s.subject_id, params)
    return subjects


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "mini.json").is_file():
        raise InputError(f"--out {out} is not empty and is not a mead-mini dataset; choose an empty or new folder")


def generate_mini(out: str | Path, size: str = "tiny", seed: int = 0, photos: Sequence[str] = (),
                  workers: int = 1, progress: bool | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Generate mead-mini into ``out``; returns the ``mini.json`` contents."""
    from tqdm import tqdm

    from emotalk.utils.io import atomic_write_json

    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of: {', '.join(SIZES)}")
    out = Path(out)
    _check_out(out)
    t0 = time.time()
    photo_specs = builtin_photos() + user_photos(photos)
    plan = plan_dataset(size, seed, photo_specs)
    subjects = build_subjects(plan)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create --out {out}: {e.strerror or e}; choose a writable folder") from None
    old = out / "mini.json"
    if old.is_file():  # regenerating: drop subjects the new plan no longer has
        try:
            old_ids = set(json.loads(old.read_text()).get("subject_ids", []))
        except (json.JSONDecodeError, OSError):
            old_ids = set()
        for sid in old_ids - set(subjects):
            if (out / sid).is_dir() and len(sid) == 4:
                shutil.rmtree(out / sid)
        old.unlink()
    plans = {s.subject_id: s for s in plan.subjects}
    workers = max(1, int(workers))
    results: list[ClipResult] = []
    bar = tqdm(total=len(plan.clips), desc=f"mead-mini {size}", unit="clip",
               disable=(None if progress is None else not progress))
    try:
        if workers == 1:
            _init_worker(str(out), subjects, plans)
            for clip in plan.clips:
                results.append(_worker_clip(clip))
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # not "fork": forking a process that has imported torch (the demo, the tests) can deadlock
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(out), subjects, plans)) as ex:
                for r in ex.map(_worker_clip, plan.clips, chunksize=1):
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
    if log:
        log(f"wrote {len(results)} clips of {len(plan.subjects)} subjects to {out} in {info['generation_s']} s")
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
