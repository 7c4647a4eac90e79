"""Video writing: frames + the speech -> an H.264 + AAC mp4 that appears only when it is complete.

Frames arrive one at a time from a generator (nothing but the current frame is held) and go straight to
:class:`emotalk.data.io.media.VideoWriter`, which writes a hidden partial file and renames it into place
at the end, so a failure anywhere leaves no file behind. The muxed audio is the decoded 16 kHz speech
padded or trimmed to exactly the video's ``T`` frames (:meth:`Speech.track`), so ffmpeg's ``-shortest``
keeps every frame.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from emotalk.data.io.media import VideoWriter, write_wav
from emotalk.inference.progress import progress_bar
from emotalk.inference.speech import Speech


def write_video(frames: Iterable[np.ndarray], out: str | Path, fps: float, speech: Speech, num_frames: int,
                progress: bool = False) -> Path:
    """Write ``frames`` (RGB uint8, all one size; ``num_frames`` of them) with ``speech`` as the sound
    track to ``out``; returns ``out``. A generator passed as ``frames`` is closed at the end either way."""
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="emotalk-") as tmp:
        audio_path = Path(tmp) / "speech.wav"
        write_wav(audio_path, speech.track(num_frames, fps), speech.sample_rate)
        bar = progress_bar(num_frames, progress, "render")
        try:
            with VideoWriter(out, fps, audio=audio_path) as writer:
                for frame in frames:
                    writer.write(frame)
                    bar.update(1)
        finally:
            bar.close()
            close = getattr(frames, "close", None)
            if close is not None:
                close()
    return out
