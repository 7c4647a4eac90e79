"""Raw dataset readers: MEAD, CREMA-D, RAVDESS and mead-mini -> clip records.

A reader walks a raw dataset folder (the root is always an argument, never hard-coded) and returns a
:class:`DatasetListing`: one :class:`ClipRecord` per usable clip (subject, emotion, intensity on one 1..3
scale, sentence, video path, audio path) and one :class:`Rejected` per file whose name does not follow
the dataset's scheme, with the reason. The name parsers live in :mod:`emotalk.data.preprocess.names`
(:func:`parse_mead_path`, :func:`parse_crema_d_name`, :func:`parse_ravdess_name`; they raise
:class:`BadName`, a ``DataError``, with the reason).

Emotions map onto :data:`emotalk.data.emotions.EMOTIONS` (MEAD's 8 classes) and intensities onto MEAD's
three levels (1 weak, 2 medium, 3 strong; neutral is always 1):

=========  ===============================================  =============================================
dataset    emotion                                          intensity
=========  ===============================================  =============================================
MEAD       folder name (angry contempt disgusted fear       ``level_1/2/3`` -> 1/2/3 (neutral: level_1 only)
           happy neutral sad surprised)
CREMA-D    ANG angry, DIS disgusted, FEA fear, HAP happy,   LO 1, MD 2, HI 3, XX (unspecified) 2;
           NEU neutral, SAD sad                             NEU -> 1
RAVDESS    01 neutral, 02 calm -> neutral (see below),      01 normal -> 2, 02 strong -> 3;
           03 happy, 04 sad, 05 angry, 06 fear,             neutral and calm -> 1
           07 disgusted, 08 surprised
=========  ===============================================  =============================================

Why these choices: CREMA-D's ``XX`` means "intensity not specified" — actors' ordinary acted emotion —
so it sits at the middle level. RAVDESS's "normal" intensity is a full acted emotion (not MEAD's
barely-visible level 1), so normal/strong become medium/strong. RAVDESS's *calm* is a low-arousal,
near-neutral expression with no MEAD counterpart; it is mapped to ``neutral`` level 1 (as
``emotions.ALIASES`` does) and marked ``extra["original_emotion"] = "calm"``; pass ``include_calm=False``
to drop it. Calm clips are never used as a subject's neutral reference (``ClipRecord.neutral_reference``).
All tables are module constants (:data:`CREMA_D_EMOTIONS`, :data:`CREMA_D_LEVELS`,
:data:`RAVDESS_EMOTIONS`, :data:`RAVDESS_LEVELS`).

Splits: the paper selects training/test *subjects* (config lists of ids). On top of that, MEAD's usual
sentence split is recorded per clip: within each (subject, emotion, level) the last ``test_last``
sentences are ``split="test"``, the rest ``"train"`` (at least one stays ``"train"``). CREMA-D and
RAVDESS are evaluation-only in the paper, so all their clips are ``"test"``. mead-mini reads its
subject split from ``<root>/mini.json`` when present (a subject's split overrides the sentence split).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from emotalk.data.preprocess.names import (AUDIO_EXTS, RAVDESS_CHANNELS, RAVDESS_MODALITIES, RAVDESS_STATEMENTS,
                                          VIDEO_EXTS, BadName, parse_crema_d_name, parse_mead_path,
                                          parse_ravdess_name)
from emotalk.errors import DataError, InputError

DEFAULT_TEST_LAST = 3
#: mead-mini data version this code reads (``format_version`` in ``mini.json``; the generator,
#: :mod:`emotalk.mini.generator`, writes it). Older datasets were made with other ground-truth motion
#: (1: expressions several times weaker than MEAD's) and must be regenerated, not silently mixed in.
MEAD_MINI_VERSION = 3
#: versions read as well: 2 has version 3's ground truth (motion, sidecars, splits) and differs only in how
#: the frames were rendered and encoded (mouth anti-aliasing, x264 preset), so its data stays usable
READABLE_MEAD_MINI_VERSIONS = frozenset({2, MEAD_MINI_VERSION})


@dataclass
class ClipRecord:
    """One raw clip, ready for preprocessing."""

    dataset: str
    subject: str
    clip_id: str  # unique within the subject; becomes the processed file name
    emotion: str  # a name from EMOTIONS
    intensity: int  # 1..3
    sentence: str
    video: Path
    audio: Path | None  # separate audio file; None = use the video's own audio track
    split: str = "train"
    neutral_reference: bool = False  # may serve as the subject's neutral reference clip
    extra: dict = field(default_factory=dict)

    def to_json(self, root: Path | None = None) -> dict:
        def rel(p):
            if p is None:
                return None
            try:
                return str(Path(p).relative_to(root)) if root is not None else str(p)
            except ValueError:
                return str(p)

        return {"dataset": self.dataset, "subject": self.subject, "clip_id": self.clip_id,
                "emotion": self.emotion, "intensity": self.intensity, "sentence": self.sentence,
                "video": rel(self.video), "audio": rel(self.audio), "split": self.split, **self.extra}


@dataclass
class Rejected:
    path: str
    reason: str


@dataclass
class DatasetListing:
    dataset: str
    root: Path
    records: list[ClipRecord] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        return sorted({r.subject for r in self.records})


def _check_root(root: str | Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} root {root} is not a folder; pass the folder that holds the raw dataset")
    return root


def _want(subjects: Iterable[str] | None) -> Callable[[str], bool]:
    wanted = {str(s) for s in subjects} if subjects else None
    return (lambda s: True) if wanted is None else (lambda s: s in wanted)


def _files(root: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()
                  and not p.name.startswith("."))


def mark_sentence_split(records: list[ClipRecord], test_last: int) -> None:
    """Within each (subject, emotion, intensity) group, the last ``test_last`` sentences (in sentence
    order) -> ``"test"``, the rest ``"train"``; a group always keeps at least one training sentence."""
    groups: dict[tuple, list[ClipRecord]] = defaultdict(list)
    for r in records:
        groups[(r.subject, r.emotion, r.intensity)].append(r)
    for group in groups.values():
        group.sort(key=lambda r: r.sentence)
        n = len(group)
        n_test = min(max(int(test_last), 0), n - 1)
        for i, r in enumerate(group):
            r.split = "test" if i >= n - n_test else "train"


def read_mead(root: str | Path, subjects: Iterable[str] | None = None, view: str = "front",
              test_last: int = DEFAULT_TEST_LAST, dataset: str = "mead") -> DatasetListing:
    """MEAD: ``<ID>/video/<view>/<emotion>/level_<n>/<NNN>.mp4`` + ``<ID>/audio/<emotion>/level_<n>/<NNN>.m4a``.

    Each top-level folder is a subject. Inside it, videos are found wherever they sit below a ``video``
    folder (tolerating the known quirk of a subject whose videos are one folder deeper, e.g.
    ``<ID>/video/<ID>/front/...`` or ``<ID>/<ID>/video/front/...``); audio likewise below ``audio``
    (``.m4a``, or ``.wav`` as mead-mini writes). A video without a separate audio file uses its own
    audio track. Only the ``view`` camera is read.
    """
    root = _check_root(root, dataset)
    want = _want(subjects)
    listing = DatasetListing(dataset=dataset, root=root)
    subject_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for sdir in subject_dirs:
        subject = sdir.name
        if not want(subject):
            continue
        audio_index: dict[tuple, Path] = {}
        for f in _files(sdir, AUDIO_EXTS):
            rel = f.relative_to(sdir)
            if "audio" not in [x.lower() for x in rel.parts[:-1]]:
                continue
            try:
                info = parse_mead_path(rel, "audio")
            except BadName as e:
                listing.rejected.append(Rejected(str(f), e.reason))
                continue
            key = (info["emotion"], info["intensity"], info["sentence"])
            # prefer .m4a (MEAD) over other copies, deterministic otherwise
            if key not in audio_index or f.suffix.lower() == ".m4a":
                audio_index[key] = f
        seen: set[tuple] = set()
        for f in _files(sdir, VIDEO_EXTS):
            rel = f.relative_to(sdir)
            if "video" not in [x.lower() for x in rel.parts[:-1]]:
                listing.rejected.append(Rejected(str(f), "video file outside the subject's video/ folder"))
                continue
            try:
                info = parse_mead_path(rel, "video")
            except BadName as e:
                listing.rejected.append(Rejected(str(f), e.reason))
                continue
            if info["view"] != view:
                continue
            key = (info["emotion"], info["intensity"], info["sentence"])
            if key in seen:
                listing.rejected.append(Rejected(str(f), "duplicate of another video with the same emotion, "
                                                         "level and sentence"))
                continue
            seen.add(key)
            emotion, level, sentence = key
            listing.records.append(ClipRecord(
                dataset=dataset, subject=subject, clip_id=f"{emotion}_level{level}_{sentence}",
                emotion=emotion, intensity=level, sentence=sentence, video=f, audio=audio_index.get(key),
                neutral_reference=emotion == "neutral", extra={"view": view}))
    mark_sentence_split(listing.records, test_last)
    listing.extra["test_last"] = test_last
    return listing


def read_mead_mini(root: str | Path, subjects: Iterable[str] | None = None, view: str = "front",
                   test_last: int = DEFAULT_TEST_LAST) -> DatasetListing:
    """mead-mini: MEAD's raw layout with ``.wav`` audio; the subject split comes from ``<root>/mini.json``
    when present (``{"splits": {"train": [...], "test": [...]}}``, ``{"subjects": {...}}`` or top-level
    ``"train"``/``"val"``/``"test"`` lists are all understood)."""
    check_mini_version(root)
    listing = read_mead(root, subjects, view=view, test_last=test_last, dataset="mead-mini")
    splits = read_mini_splits(root)
    if splits:
        listing.extra["subject_splits"] = splits
        owner = {s: name for name, subs in splits.items() for s in subs}
        for r in listing.records:
            if r.subject in owner:
                r.split = owner[r.subject]
    return listing


def check_mini_version(root: str | Path) -> None:
    """Refuse a mead-mini dataset whose ``mini.json`` records another data version (the ground truth
    changed since; see :data:`MEAD_MINI_VERSION`). A folder without ``mini.json``, or a hand-written one
    without ``format_version``, is not checked."""
    path = Path(root) / "mini.json"
    if not path.is_file():
        return
    try:
        version = json.loads(path.read_text()).get("format_version")
    except (json.JSONDecodeError, OSError, AttributeError) as e:
        raise DataError(f"{path}: unreadable ({e}); regenerate it with 'emotalk make-mini'") from None
    if version is not None and version not in READABLE_MEAD_MINI_VERSIONS:  # None: a hand-written split file
        raise DataError(f"{root} holds mead-mini data version {version}, this emotalk reads version "
                        f"{MEAD_MINI_VERSION} (the ground-truth expressions changed); regenerate it with "
                        f"'emotalk make-mini --out {root}'")


def read_mini_splits(root: str | Path) -> dict[str, list[str]]:
    path = Path(root) / "mini.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise DataError(f"{path}: unreadable ({e}); regenerate it with 'emotalk make-mini'") from None
    if not isinstance(data, dict):
        return {}
    for key in ("splits", "subject_splits", "subjects"):
        cand = data.get(key)
        if isinstance(cand, dict) and all(isinstance(v, list) for v in cand.values()):
            return {str(k): [str(s) for s in v] for k, v in cand.items()}
    top = {k: v for k, v in data.items() if k in ("train", "val", "test") and isinstance(v, list)}
    return {k: [str(s) for s in v] for k, v in top.items()}


def read_crema_d(root: str | Path, subjects: Iterable[str] | None = None) -> DatasetListing:
    """CREMA-D: ``VideoFlash/*.flv`` (or ``VideoMP4/*.mp4``) and ``AudioWAV/*.wav``, names
    ``ActorID_SEN_EMO_LV``. Videos are searched anywhere below the root; a video whose ``AudioWAV`` file
    is missing uses its own audio track. When both an .flv and an .mp4 exist for a name, the .mp4 wins."""
    root = _check_root(root, "CREMA-D")
    want = _want(subjects)
    listing = DatasetListing(dataset="crema-d", root=root)
    audio_index = {}
    for f in _files(root, (".wav",)):
        audio_index.setdefault(f.stem.upper(), f)
    chosen: dict[str, Path] = {}
    for f in _files(root, VIDEO_EXTS):
        try:
            info = parse_crema_d_name(f.name)
        except BadName as e:
            listing.rejected.append(Rejected(str(f), e.reason))
            continue
        if not want(info["subject"]):
            continue
        key = f.stem.upper()
        if key not in chosen or f.suffix.lower() == ".mp4":
            chosen[key] = f
    for key, f in sorted(chosen.items()):
        info = parse_crema_d_name(f.name)
        listing.records.append(ClipRecord(
            dataset="crema-d", subject=info["subject"], clip_id=key, emotion=info["emotion"],
            intensity=info["intensity"], sentence=info["sentence"], video=f, audio=audio_index.get(key),
            split="test", neutral_reference=info["emotion"] == "neutral",
            extra={"emotion_code": info["emotion_code"], "level_code": info["level_code"]}))
    return listing


def read_ravdess(root: str | Path, subjects: Iterable[str] | None = None, include_song: bool = False,
                 include_calm: bool = True) -> DatasetListing:
    """RAVDESS: ``MM-VC-EE-II-SS-RR-AA.mp4``/``.wav`` anywhere below the root (e.g.
    ``Video_Speech_Actor_01/Actor_01/`` and ``Audio_Speech_Actors_01-24/Actor_01/``).

    One record per take (the name minus its modality field): the audio-video file (01) is preferred,
    else the video-only file (02) paired with the audio-only ``.wav`` (03). Audio comes from the 03 wav
    when present, else from the video's own track. Song (vocal channel 02) is skipped unless
    ``include_song``; calm (02) maps to neutral level 1 unless ``include_calm=False``.
    """
    root = _check_root(root, "RAVDESS")
    want = _want(subjects)
    listing = DatasetListing(dataset="ravdess", root=root)
    videos: dict[str, dict[int, Path]] = defaultdict(dict)
    audios: dict[str, Path] = {}
    excluded = defaultdict(int)
    for f in _files(root, VIDEO_EXTS + (".wav",)):
        try:
            n = parse_ravdess_name(f.name)
        except BadName as e:
            listing.rejected.append(Rejected(str(f), e.reason))
            continue
        is_wav = f.suffix.lower() == ".wav"
        if is_wav != (n.modality == 3):
            listing.rejected.append(Rejected(str(f), f"modality {n.modality:02d} "
                                    f"({RAVDESS_MODALITIES[n.modality]}) does not match a {f.suffix} file"))
            continue
        if not want(n.subject):
            continue
        if n.channel == 2 and not include_song:
            excluded["song"] += 1
            continue
        if n.emotion_code == 2 and not include_calm:
            excluded["calm"] += 1
            continue
        if is_wav:
            audios[n.performance] = f
        else:
            videos[n.performance].setdefault(n.modality, f)
    for perf, files in sorted(videos.items()):
        video = files.get(1) or files[2]
        n = parse_ravdess_name(video.name)
        extra = {"modality": n.modality, "vocal_channel": RAVDESS_CHANNELS[n.channel],
                 "original_emotion": n.original_emotion, "intensity_code": n.intensity_code,
                 "repetition": n.repetition, "statement_text": RAVDESS_STATEMENTS[n.statement]}
        listing.records.append(ClipRecord(
            dataset="ravdess", subject=n.subject, clip_id=video.stem, emotion=n.emotion,
            intensity=n.intensity, sentence=f"{n.statement:02d}", video=video, audio=audios.get(perf),
            split="test", neutral_reference=n.original_emotion == "neutral", extra=extra))
    listing.extra["excluded"] = dict(excluded)
    return listing


READERS: dict[str, Callable[..., DatasetListing]] = {
    "mead": read_mead,
    "mead-mini": read_mead_mini,
    "crema-d": read_crema_d,
    "ravdess": read_ravdess,
}


def read_dataset(name: str, root: str | Path, subjects: Iterable[str] | None = None, **options) -> DatasetListing:
    """Dispatch to the reader for ``name`` (one of :data:`READERS`)."""
    key = name.strip().lower().replace("_", "-")
    if key == "cremad":
        key = "crema-d"
    if key not in READERS:
        raise InputError(f"unknown dataset {name!r}; choose one of: {', '.join(READERS)}")
    listing = READERS[key](root, subjects, **options)
    if subjects:
        missing = sorted(set(map(str, subjects)) - set(listing.subjects))
        if missing:
            listing.extra["missing_subjects"] = missing
    return listing
