"""Raw datasets' file-naming schemes: MEAD paths, CREMA-D and RAVDESS file names -> emotion, intensity,
sentence (the tables of :mod:`emotalk.data.preprocess.readers`' docstring).

Kept apart from the readers (which walk folders, pair audio with video and assign splits) because the
schemes are pure string rules with their own tests. Every parser raises :class:`BadName` (a
``DataError``) with the reason.

Intensity levels are recorded as the source names them (MEAD level_1..3; CREMA-D LO/MD/HI -> 1/2/3, XX ->
2; RAVDESS normal/strong -> 2/3). Mapping them onto a model's levels -- MEAD's three onto the paper's two
(low, high) -- happens in one place, :func:`emotalk.data.emotions.control_level`, when a dataset builds its
control vectors, so one processed dataset serves both vocabularies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from emotalk.data.emotions import EMOTIONS, canonical_emotion
from emotalk.errors import DataError, InputError

VIDEO_EXTS = (".mp4", ".flv", ".avi", ".mov", ".mkv")
AUDIO_EXTS = (".m4a", ".wav", ".mp3", ".aac", ".flac")

# --- CREMA-D -----------------------------------------------------------------------------------------
CREMA_D_EMOTIONS = {"ANG": "angry", "DIS": "disgusted", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
                    "SAD": "sad"}
CREMA_D_LEVELS = {"LO": 1, "MD": 2, "HI": 3, "XX": 2}
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting", "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
_CREMA_RE = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{2})$")

# --- RAVDESS -----------------------------------------------------------------------------------------
RAVDESS_EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fear", 7: "disgusted",
                    8: "surprised"}
RAVDESS_LEVELS = {1: 2, 2: 3}  # normal -> medium, strong -> strong
RAVDESS_MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
RAVDESS_CHANNELS = {1: "speech", 2: "song"}
RAVDESS_STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")

# --- MEAD --------------------------------------------------------------------------------------------
MEAD_VIEWS = ("front", "down", "left_30", "left_60", "right_30", "right_60", "top")
_MEAD_LEVEL_RE = re.compile(r"^level_?(\d+)$", re.IGNORECASE)
_MEAD_SENTENCE_RE = re.compile(r"^(\d{3})$")


class BadName(DataError):
    """A raw file's name or location does not follow its dataset's naming scheme."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _emotion(name: str, path) -> str:
    try:
        return canonical_emotion(name)
    except InputError:
        raise BadName(path, f"unknown emotion {name!r} (expected one of {', '.join(EMOTIONS)})") from None


def parse_mead_path(path: str | Path, kind: str = "video") -> dict:
    """Parse the tail of a MEAD path: ``.../front/<emotion>/level_<n>/<NNN>.mp4`` (video) or
    ``.../<emotion>/level_<n>/<NNN>.m4a`` (audio; ``.wav`` accepted for mead-mini).

    Returns ``{"emotion", "intensity", "sentence", "view"}``; raises :class:`BadName`.
    """
    p = Path(path)
    parts = p.parts
    exts = VIDEO_EXTS if kind == "video" else AUDIO_EXTS
    if p.suffix.lower() not in exts:
        raise BadName(p, f"not a MEAD {kind} file (extension {p.suffix or 'none'}; expected "
                         f"{' or '.join(exts[:2])})")
    need = 4 if kind == "video" else 3
    if len(parts) < need:
        raise BadName(p, f"expected .../{'<view>/' if kind == 'video' else ''}<emotion>/level_<n>/<NNN>"
                         f"{p.suffix}")
    m = _MEAD_SENTENCE_RE.match(p.stem)
    if not m:
        raise BadName(p, f"sentence file name {p.name!r} is not a 3-digit number like 001{p.suffix}")
    lm = _MEAD_LEVEL_RE.match(parts[-2])
    if not lm:
        raise BadName(p, f"folder {parts[-2]!r} is not an intensity level like level_1")
    level = int(lm.group(1))
    if not 1 <= level <= 3:
        raise BadName(p, f"intensity level {level} outside 1..3")
    emotion = _emotion(parts[-3], p)
    if emotion == "neutral" and level != 1:
        raise BadName(p, f"neutral has only level_1 in MEAD (found level_{level})")
    view = parts[-4].lower() if kind == "video" else ""
    if kind == "video" and view not in MEAD_VIEWS:
        raise BadName(p, f"camera view folder {parts[-4]!r} is not one of {', '.join(MEAD_VIEWS)}")
    return {"emotion": emotion, "intensity": level, "sentence": m.group(1), "view": view}


def parse_crema_d_name(name: str | Path) -> dict:
    """``1001_DFA_ANG_XX`` -> ``{"subject", "sentence", "emotion", "intensity", "level_code", ...}``."""
    stem = Path(name).stem
    m = _CREMA_RE.match(stem)
    if not m:
        raise BadName(name, "not a CREMA-D name ActorID_SEN_EMO_LV (e.g. 1001_DFA_ANG_XX)")
    actor, sen, emo, lv = m.group(1), m.group(2).upper(), m.group(3).upper(), m.group(4).upper()
    if not 1001 <= int(actor) <= 1091:
        raise BadName(name, f"actor id {actor} outside CREMA-D's 1001..1091")
    if sen not in CREMA_D_SENTENCES:
        raise BadName(name, f"unknown sentence code {sen!r} (expected one of {', '.join(CREMA_D_SENTENCES)})")
    if emo not in CREMA_D_EMOTIONS:
        raise BadName(name, f"unknown emotion code {emo!r} (expected one of {', '.join(CREMA_D_EMOTIONS)})")
    if lv not in CREMA_D_LEVELS:
        raise BadName(name, f"unknown intensity code {lv!r} (expected one of {', '.join(CREMA_D_LEVELS)})")
    emotion = CREMA_D_EMOTIONS[emo]
    return {"subject": actor, "sentence": sen, "emotion": emotion,
            "intensity": 1 if emotion == "neutral" else CREMA_D_LEVELS[lv],
            "emotion_code": emo, "level_code": lv}


@dataclass(frozen=True)
class RavdessName:
    modality: int
    channel: int
    emotion_code: int
    intensity_code: int
    statement: int
    repetition: int
    actor: int

    @property
    def original_emotion(self) -> str:
        return RAVDESS_EMOTIONS[self.emotion_code]

    @property
    def emotion(self) -> str:
        return canonical_emotion(self.original_emotion)  # calm -> neutral

    @property
    def intensity(self) -> int:
        return 1 if self.original_emotion in ("neutral", "calm") else RAVDESS_LEVELS[self.intensity_code]

    @property
    def subject(self) -> str:
        return f"Actor_{self.actor:02d}"

    @property
    def performance(self) -> str:
        """The name without the modality field: the same take in its audio/video/AV files."""
        return (f"{self.channel:02d}-{self.emotion_code:02d}-{self.intensity_code:02d}-"
                f"{self.statement:02d}-{self.repetition:02d}-{self.actor:02d}")


def parse_ravdess_name(name: str | Path) -> RavdessName:
    """``MM-VC-EE-II-SS-RR-AA`` (e.g. ``01-01-06-01-02-01-12``) -> :class:`RavdessName`."""
    stem = Path(name).stem
    m = _RAVDESS_RE.match(stem)
    if not m:
        raise BadName(name, "not a RAVDESS name MM-VC-EE-II-SS-RR-AA of seven 2-digit fields "
                            "(e.g. 01-01-06-01-02-01-12)")
    mm, vc, ee, ii, ss, rr, aa = (int(g) for g in m.groups())
    checks = [(mm in RAVDESS_MODALITIES, f"modality {mm:02d} is not 01 (AV), 02 (video) or 03 (audio)"),
              (vc in RAVDESS_CHANNELS, f"vocal channel {vc:02d} is not 01 (speech) or 02 (song)"),
              (ee in RAVDESS_EMOTIONS, f"emotion {ee:02d} outside 01..08"),
              (ii in RAVDESS_LEVELS, f"intensity {ii:02d} is not 01 (normal) or 02 (strong)"),
              (ss in RAVDESS_STATEMENTS, f"statement {ss:02d} is not 01 or 02"),
              (rr in (1, 2), f"repetition {rr:02d} is not 01 or 02"),
              (1 <= aa <= 24, f"actor {aa:02d} outside 01..24")]
    for ok, reason in checks:
        if not ok:
            raise BadName(name, reason)
    if ee == 1 and ii == 2:
        raise BadName(name, "neutral has no strong intensity (02) in RAVDESS")
    return RavdessName(mm, vc, ee, ii, ss, rr, aa)


# ==================================================================================================
# readers
# ==================================================================================================
