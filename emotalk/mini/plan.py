"""mead-mini's plan: sizes, subjects (photo, variant, split, voice) and clips (emotion, level, sentence,
seed) — everything decided before any heavy work, deterministically from the seed. The layout, the
subject-id rules and the sidecar format are described in :mod:`emotalk.mini.generator`, which executes a
plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.data.io.photos import public_domain_photos
from emotalk.data.preprocess.clip_analysis import SIDECAR_SUFFIX
from emotalk.mini.identity import read_photo
from emotalk.mini.sentences import HARVARD_SENTENCES
from emotalk.mini.tts import FEMALE_VOICES, MALE_VOICES


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
    # small's 8 subjects and every emotion x level with one clip each (25 clips a subject instead of 48):
    # 'emotalk demo --size quick' takes 332 s instead of 450 s (both data stages scale with the frame count),
    # but G_L learns the emotions less well from half the data (demo, W007/W008: Emo-Acc-LM of G_L's
    # renderings 50 % vs 100 %, mouth amplitude 0.88 vs 1.03 of the ground truth), so it is not the default
    "quick": SizeConfig("quick", {"astronaut": 4, "grace_hopper": 4}, 4, ALL_LEVELS,
                        clips_per_level=1, neutral_clips=4),
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


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream per ``key`` (e.g. (subject, clip)), so adding clips or subjects never
    changes the random draws of the others."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) for k in key]]))


def parse_photo_arg(spec: str) -> tuple[str, str]:
    """``path`` or ``path:M`` / ``path:W`` -> (path, letter)."""
    path, letter = spec, "M"
    if len(spec) > 2 and spec[-2] == ":" and spec[-1].upper() in "MW":
        path, letter = spec[:-2], spec[-1].upper()
    return path, letter


def builtin_photos() -> list[PhotoSpec]:
    return [PhotoSpec(name, f"builtin:{name}", "W", img) for name, img in public_domain_photos().items()]


def user_photos(specs: Sequence[str]) -> list[PhotoSpec]:
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
    cfg = SIZES[size] if isinstance(size, str) else size
    photos = list(photos) if photos is not None else builtin_photos()
    variants = [cfg.builtin_variants.get(p.name, cfg.user_variants) if p.source.startswith("builtin:")
                else cfg.user_variants for p in photos]
    subjects: list[SubjectPlan] = []
    voice_order = {letter: seeded_rng(seed, 5, ord(letter)).permutation(
        len(FEMALE_VOICES if letter == "W" else MALE_VOICES)) for letter in "MW"}
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
                rng = seeded_rng(seed, 1, pi, v)
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
        order = seeded_rng(seed, 3, sn).permutation(pool)
        k = 0
        for emotion, levels in cfg.emotions:
            emo = canonical_emotion(emotion)
            ei = EMOTIONS.index(emo)
            for level in levels:
                n_clips = cfg.neutral_clips if emo == "neutral" else cfg.clips_per_level
                for c in range(n_clips):
                    clip_seed = int(seeded_rng(seed, 2, sn, ei, level, c).integers(2 ** 31))
                    clips.append(ClipPlan(subj.subject_id, emo, int(level), c + 1, int(order[k % len(order)]),
                                          clip_seed))
                    k += 1
    return DatasetPlan(size=cfg, seed=int(seed), photos=photos, subjects=subjects, clips=clips)
