"""A tiny eSpeak NG synthesis server that answers every request from a *pristine* engine state.

eSpeak NG keeps static state across utterances (the pitch-flutter phase, the wave phase, ...), so the same
text spoken twice in one process comes out with phone boundaries shifted by a sample or two — enough to
change landmark bytes. A freshly initialised engine is fully deterministic, so this server initialises
the engine once and ``fork()``\\ s a child per request: each child synthesises from the same pristine state
and exits. Stdlib + ctypes only (fast to start, nothing heavy to fork).

Protocol (stdin/stdout of ``python .../emotalk/mini/_espeak_server.py``; the client runs it by path):
request: one JSON line ``{"text", "voice", "rate", "pitch", "range", "volume", "seed"}``;
reply: one JSON line ``{"ok": true, "sample_rate", "num_samples", "events": [[type, sample, hex_id], ...]}``
followed by ``num_samples`` little-endian int16 samples, or ``{"ok": false, "error": "..."}``.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_PHONEME = 7
CHARS_UTF8 = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_ubyte * 8)]


SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.POINTER(Event))


def load_engine():
    """Load and initialise libespeak-ng from espeakng-loader; returns ``(lib, sample_rate)``."""
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                               INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
    return lib, sr


def synth(lib, req: dict) -> tuple[bytes, list]:
    """Synthesise one request in this process; returns (int16 audio bytes, events)."""
    chunks: list[bytes] = []
    events: list = []

    def on_synth(wav, n, evs):
        if wav and n > 0:
            chunks.append(ctypes.string_at(wav, n * 2))
        i = 0
        while evs[i].type != EVENT_LIST_TERMINATED:
            ev = evs[i]
            if ev.type in (EVENT_PHONEME, EVENT_WORD):
                events.append([int(ev.type), int(ev.sample), bytes(ev.id).hex()])
            i += 1
        return 0

    cb = SynthCallback(on_synth)
    lib.espeak_SetSynthCallback(cb)
    if lib.espeak_SetVoiceByName(str(req["voice"]).encode()) != 0:
        raise ValueError(f"unknown eSpeak voice {req['voice']!r}")
    lib.espeak_SetParameter(PARAM_RATE, int(req.get("rate", 175)), 0)
    lib.espeak_SetParameter(PARAM_PITCH, int(req.get("pitch", 50)), 0)
    lib.espeak_SetParameter(PARAM_RANGE, int(req.get("range", 50)), 0)
    lib.espeak_SetParameter(PARAM_VOLUME, int(req.get("volume", 100)), 0)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(int(req.get("seed", 0))))
    data = str(req["text"]).encode("utf-8") + b"\0"
    err = lib.espeak_Synth(data, len(data), 0, 0, 0, CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed with error {err}")
    return b"".join(chunks), events


def _reply(out, header: dict, payload: bytes = b"") -> None:
    out.write(json.dumps(header).encode() + b"\n")
    out.write(payload)
    out.flush()


def main() -> int:
    out = sys.stdout.buffer
    try:
        lib, sr = load_engine()
    except Exception as e:  # reported to the client, which raises a DependencyError
        _reply(out, {"ok": False, "fatal": True, "error": f"{type(e).__name__}: {e}"})
        return 1
    if sr <= 0:
        _reply(out, {"ok": False, "fatal": True, "error": "espeak_Initialize failed"})
        return 1
    _reply(out, {"ok": True, "ready": True, "sample_rate": sr})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        pid = os.fork()
        if pid == 0:  # child: pristine engine state, synthesise once, answer, exit
            code = 0
            try:
                req = json.loads(line)
                audio, events = synth(lib, req)
                _reply(out, {"ok": True, "sample_rate": sr, "num_samples": len(audio) // 2,
                             "events": events}, audio)
            except BaseException as e:  # noqa: BLE001 - everything goes back to the client
                try:
                    _reply(out, {"ok": False, "error": f"{type(e).__name__}: {e}"})
                except BaseException:
                    code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            _reply(out, {"ok": False, "error": f"synthesis process died (status {status})"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
