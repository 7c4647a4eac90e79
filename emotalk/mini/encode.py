"""mead-mini's video files: rendered frames + the clip's speech -> one H.264/AAC mp4, in ONE ffmpeg run.

Why not :class:`emotalk.data.io.media.VideoWriter`: it encodes the video into a temp file and then runs ffmpeg a
second time to mux the audio (it does not know the video's length in advance). mead-mini knows every clip's
frame count before the first frame is rendered, so the audio can be muxed while the video is encoded: one
process start and one file write per clip instead of two, and no padded copy of the WAV (``apad`` pads the
speech with silence and ``-t`` cuts it at the video's end, exactly what the two-step writer does). x264 runs
``ultrafast`` at CRF 18 (yuv420p, AAC 128k, faststart): measured on a 256x256 clip it costs 0.63x the writer's
``veryfast`` and comes out *closer* to the rendered frames (39.9 dB PSNR against 37.9), in files ~3x larger
(~130 KB a clip) — for a dataset that is generated to be read once, encoder time is what matters. x264 runs one
thread: the generator already runs one clip per core, so encoder threads would only compete with the
renderers.

The file appears under its final name only once ffmpeg succeeded (a temp file beside it is renamed).
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterable

import numpy as np

from emotalk.data.io.media import ffmpeg_exe, rgb_frame
from emotalk.errors import DataError, NoSpaceError
from emotalk.utils.io import atomic_path

#: x264 settings of mead-mini's videos (the module docstring says why not the writer's ``veryfast``)
PRESET, CRF = "ultrafast", 18


def _full_disk(message: str) -> bool:
    return any(t in message for t in ("No space left", "File too large", "Disk quota"))


def write_clip_video(path: str | Path, frames: Iterable[np.ndarray], num_frames: int, fps: float,
                     audio: str | Path) -> Path:
    """Encode ``num_frames`` RGB frames (H, W, 3 uint8, even sizes) at ``fps`` with the WAV ``audio`` muxed as
    AAC (padded with silence or cut to ``num_frames / fps`` seconds) into the mp4 ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    it = iter(frames)
    first = rgb_frame(next(it))
    h, w = first.shape[:2]
    duration = num_frames / float(fps)
    with atomic_path(path, suffix=".mp4") as tmp:
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
               "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
               "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-threads", "1", "-pix_fmt", "yuv420p",
               "-af", "apad", "-c:a", "aac", "-b:a", "128k", "-t", f"{duration:.6f}",
               "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        written = 0
        try:
            frame = first
            while True:
                proc.stdin.write(rgb_frame(frame, (w, h)).tobytes())
                written += 1
                frame = next(it, None)
                if frame is None:
                    break
            proc.stdin.close()
        except BrokenPipeError:  # ffmpeg stopped: its message is read below
            try:
                proc.stdin.close()
            except OSError:
                pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait()
        if code != 0 or written != num_frames:
            if _full_disk(err):
                raise NoSpaceError(f"no space left while writing {path}; free some space or write somewhere else")
            raise DataError(f"{path}: ffmpeg could not encode the clip ({err.strip()[-300:] or f'exit code {code}'}"
                            f"{'' if written == num_frames else f'; {written} of {num_frames} frames'})")
    return path
