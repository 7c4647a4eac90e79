"""Offline text-to-speech with phone timings: eSpeak NG driven through ctypes.

The engine is the ``libespeak-ng.so`` (and its ``espeak-ng-data``) shipped inside the PyPI package
``espeakng-loader``, so speech works after a plain ``pip install`` without a system espeak-ng. Synthesis
runs in eSpeak's synchronous mode with a synth callback; with ``espeakINITIALIZE_PHONEME_EVENTS`` the
engine reports an ``espeakEVENT_PHONEME`` at the first sample of every phone it generates, which gives
exact phone timings (no forced alignment needed). Phones are eSpeak's ASCII mnemonics (``p``, ``aI``,
``@``, ``tS``, ``_:`` for a pause, ...) with the stress marks split off.

Determinism: eSpeak keeps static state across utterances (pitch-flutter phase, wave phase), so in one
process the same request can come out with phone boundaries shifted by a sample. Every request is
therefore answered by a forked child of a small server process whose engine has never spoken
(:mod:`emotalk.mini._espeak_server`): same text + voice + seed -> the same samples and timings, in
any order and in any worker process. Where ``fork`` does not exist the engine runs in-process instead.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from emotalk.errors import DataError, DependencyError, InputError
from emotalk.mini import _espeak_server as srv

#: eSpeak symbols that are pauses (silence) rather than speech sounds.
PAUSE_PHONES = frozenset({"_", "_:", "_!", "_;", "_^_", "_X1", ""})
SILENCE = "_"
_EVENT_WORD, _EVENT_PHONEME = 1, 7


@dataclass(frozen=True)
class Voice:
    """eSpeak voice settings. ``name`` is ``language[+variant]`` (e.g. ``en-us+f3``); ``rate`` in words per
    minute (80–450); ``pitch`` and ``pitch_range`` 0–100 (50 = the voice's default)."""

    name: str = "en-us"
    rate: int = 170
    pitch: int = 50
    pitch_range: int = 50
    volume: int = 100

    def with_emotion(self, emotion: str, level: int = 1) -> "Voice":
        """Colour the prosody by an emotion (visual emotion comes from the label; this is only a hint)."""
        return emotion_prosody(self, emotion, level)


@dataclass(frozen=True)
class Phone:
    symbol: str  # eSpeak mnemonic without stress marks; "_" = silence/pause
    start: float  # seconds
    end: float  # seconds
    stress: int = 0  # 2 primary ('), 1 secondary (,), 0 none

    @property
    def is_pause(self) -> bool:
        return self.symbol in PAUSE_PHONES or self.symbol.startswith("_")


@dataclass
class Speech:
    """Synthesised speech: mono float32 ``audio`` at ``sample_rate`` plus phones covering ``[0, duration]``
    contiguously (pauses included), and the word onsets in seconds."""

    audio: np.ndarray
    sample_rate: int
    phones: list[Phone]
    text: str = ""
    voice: Voice = field(default_factory=Voice)
    word_starts: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)

    def phone_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(symbols (N,) unicode, times (N, 2) float32 [start, end])`` for storing without pickle."""
        syms = np.array([p.symbol for p in self.phones], dtype="U8")
        times = np.array([[p.start, p.end] for p in self.phones], dtype=np.float32).reshape(-1, 2)
        return syms, times


#: Prosody changes per emotion at intensity level 3 (scaled down for levels 1–2): relative rate,
#: pitch offset, pitch-range offset, volume factor. Rough values from the emotional-speech literature
#: (Murray & Arnott 1993): joy/surprise higher and wider, sadness slower, lower and flatter, anger faster
#: and louder.
EMOTION_PROSODY: dict[str, tuple[float, int, int, float]] = {
    "neutral": (1.00, 0, 0, 1.00),
    "happy": (1.06, 10, 20, 1.05),
    "sad": (0.82, -10, -25, 0.85),
    "angry": (1.10, 4, 18, 1.20),
    "surprised": (1.04, 16, 30, 1.05),
    "fear": (1.12, 14, -10, 0.95),
    "disgusted": (0.90, -6, 8, 1.00),
    "contempt": (0.94, -4, -10, 0.95),
}


def emotion_prosody(voice: Voice, emotion: str, level: int = 1) -> Voice:
    rate, pitch, rng, vol = EMOTION_PROSODY.get(emotion, EMOTION_PROSODY["neutral"])
    k = {1: 0.4, 2: 0.7, 3: 1.0}.get(int(level), 1.0)
    return replace(voice,
                   rate=int(round(voice.rate * (1.0 + k * (rate - 1.0)))),
                   pitch=int(np.clip(round(voice.pitch + k * pitch), 0, 100)),
                   pitch_range=int(np.clip(round(voice.pitch_range + k * rng), 0, 100)),
                   volume=int(np.clip(round(voice.volume * (1.0 + k * (vol - 1.0))), 10, 200)))


class _EspeakClient:
    """Talks to :mod:`emotalk.mini._espeak_server` (one per process, restarted after a fork)."""

    def __init__(self):
        try:
            import espeakng_loader  # noqa: F401
        except ImportError:
            raise DependencyError("speech synthesis needs eSpeak NG; run: pip install espeakng-loader") from None
        self.pid = os.getpid()
        self.lock = threading.Lock()
        # run the server script by path: it needs only the stdlib and espeakng_loader, not this package
        server = Path(__file__).with_name("_espeak_server.py")
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, str(server)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        hello = self._read_header()
        if not hello.get("ok"):
            self.close()
            raise DependencyError(f"cannot load eSpeak NG from espeakng-loader ({hello.get('error')}); "
                                  f"reinstall with: pip install --force-reinstall espeakng-loader")
        self.sample_rate = int(hello["sample_rate"])

    def _read_header(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace").strip()
            raise DataError(f"the eSpeak NG synthesis process stopped unexpectedly ({err[-300:] or 'no output'})")
        return json.loads(line)

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def synth(self, text: str, voice: Voice, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, bytes]]]:
        req = {"text": text, "voice": voice.name, "rate": int(voice.rate), "pitch": int(voice.pitch),
               "range": int(voice.pitch_range), "volume": int(voice.volume), "seed": int(seed)}
        with self.lock:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            head = self._read_header()
            if not head.get("ok"):
                msg = str(head.get("error", ""))
                if "unknown eSpeak voice" in msg:
                    raise InputError(f"unknown eSpeak voice {voice.name!r}; use e.g. 'en-us' or 'en-us+f3'")
                raise DataError(f"eSpeak NG could not synthesise {text!r} ({msg})")
            n = int(head["num_samples"])
            raw = self.proc.stdout.read(2 * n)
            if len(raw) != 2 * n:
                raise DataError("the eSpeak NG synthesis process returned truncated audio")
        audio = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        events = [(int(t), int(s), bytes.fromhex(h)) for t, s, h in head["events"]]
        return audio, events

    def close(self) -> None:
        """Stop the server (only from the process that started it; a forked child leaves it to its parent)
        and close this process's ends of the pipes. Idempotent."""
        try:
            if self.pid == os.getpid():
                try:
                    self.proc.stdin.close()
                    self.proc.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    self.proc.kill()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self._stderr):
                f.close()


class _InProcessEngine:
    """Fallback where ``fork`` is unavailable: deterministic only for the first utterance of a process."""

    def __init__(self):
        try:
            self.lib, self.sample_rate = srv.load_engine()
        except ImportError:
            raise DependencyError("speech synthesis needs eSpeak NG; run: pip install espeakng-loader") from None
        except OSError as e:
            raise DependencyError(f"cannot load eSpeak NG from espeakng-loader ({e}); reinstall with: "
                                  f"pip install --force-reinstall espeakng-loader") from None
        self._srv = srv
        self.pid = os.getpid()
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return True

    def synth(self, text: str, voice: Voice, seed: int = 0):
        req = {"text": text, "voice": voice.name, "rate": voice.rate, "pitch": voice.pitch,
               "range": voice.pitch_range, "volume": voice.volume, "seed": seed}
        with self.lock:
            try:
                raw, events = self._srv.synth(self.lib, req)
            except ValueError:
                raise InputError(f"unknown eSpeak voice {voice.name!r}; use e.g. 'en-us' or 'en-us+f3'") from None
            except RuntimeError as e:
                raise DataError(f"eSpeak NG could not synthesise {text!r} ({e})") from None
        return (np.frombuffer(raw, dtype="<i2").astype(np.int16),
                [(int(t), int(s), bytes.fromhex(h)) for t, s, h in events])

    def close(self) -> None:
        pass


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def _engine():
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None or not _ENGINE.alive():
            if _ENGINE is not None:  # inherited through a fork, or its server died: release our ends
                _ENGINE.close()
            _ENGINE = _EspeakClient() if hasattr(os, "fork") else _InProcessEngine()
            atexit.register(_ENGINE.close)
        return _ENGINE


def _decode_phone(raw: bytes) -> tuple[str, int]:
    name = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    stress = 0
    while name and name[0] in "',%=":
        stress = max(stress, 2 if name[0] == "'" else 1 if name[0] == "," else 0)
        name = name[1:]
    return name, stress


def synthesize(text: str, voice: Voice | None = None, sample_rate: int = 16000, lead: float = 0.2,
               tail: float = 0.25, seed: int = 0) -> Speech:
    """Speak ``text``; returns audio at ``sample_rate`` padded with ``lead``/``tail`` seconds of silence and
    contiguous phones covering the whole clip (the padding and pauses are ``"_"`` phones)."""
    from scipy.signal import resample_poly

    voice = voice or Voice()
    if not text.strip():
        raise InputError("cannot synthesise empty text")
    eng = _engine()
    raw, events = eng.synth(text, voice, seed=seed)
    if raw.size == 0:
        raise DataError(f"eSpeak NG produced no audio for {text!r}")
    src_sr = eng.sample_rate
    g = np.gcd(int(sample_rate), int(src_sr))
    audio = resample_poly(raw.astype(np.float64) / 32768.0, sample_rate // g, src_sr // g)
    # pad: the clip starts and ends in silence with the mouth at rest
    n_lead, n_tail = int(round(lead * sample_rate)), int(round(tail * sample_rate))
    audio = np.concatenate([np.zeros(n_lead), audio, np.zeros(n_tail)]).astype(np.float32)
    duration = len(audio) / sample_rate
    marks: list[tuple[float, str, int]] = []
    words: list[float] = []
    for kind, sample, ident in events:
        t = lead + sample / src_sr
        if kind == _EVENT_PHONEME:
            sym, stress = _decode_phone(ident)
            marks.append((t, sym, stress))
        elif kind == _EVENT_WORD:
            words.append(t)
    marks.sort(key=lambda m: m[0])
    phones: list[Phone] = []
    cursor = 0.0
    for i, (t, sym, stress) in enumerate(marks):
        t = min(max(t, cursor), duration)
        end = marks[i + 1][0] if i + 1 < len(marks) else duration
        end = min(max(end, t), duration)
        if t > cursor + 1e-6:  # uncovered stretch (the lead) -> silence
            phones.append(Phone(SILENCE, cursor, t))
        symbol = SILENCE if (sym in PAUSE_PHONES or sym.startswith("_")) else sym
        if end > t:
            if symbol == SILENCE and phones and phones[-1].symbol == SILENCE:
                phones[-1] = Phone(SILENCE, phones[-1].start, end)
            else:
                phones.append(Phone(symbol, t, end, stress))
        cursor = max(cursor, end)
    if cursor < duration - 1e-6:
        if phones and phones[-1].symbol == SILENCE:
            phones[-1] = Phone(SILENCE, phones[-1].start, duration)
        else:
            phones.append(Phone(SILENCE, cursor, duration))
    return Speech(audio=audio, sample_rate=sample_rate, phones=phones, text=text, voice=voice,
                  word_starts=words)


#: Voice pools for the subjects (eSpeak's own variants, all bundled with espeakng-loader).
FEMALE_VOICES: tuple[str, ...] = ("en-us+f1", "en-us+f2", "en-us+f3", "en-us+f4", "en-us+f5", "en+f3",
                                  "en-us+Annie", "en-us+linda")
MALE_VOICES: tuple[str, ...] = ("en-us+m1", "en-us+m2", "en-us+m3", "en-us+m4", "en-us+m5", "en+m3",
                                "en-us+m7", "en-us+david")
