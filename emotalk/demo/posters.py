"""Poster frames for the report's ``<video>`` tiles.

Without a ``poster=`` attribute a browser shows an empty (black or white) player until the video is clicked
or has buffered - in a headless or print rendering of the report, and on a slow disk, every tile looked
empty. A poster is the clip's middle frame written once as a JPEG beside the video: mid-sentence the mouth
is open and the emotion is fully on, so the still already says what the clip shows.
"""
from __future__ import annotations

import subprocess
from contextlib import closing
from pathlib import Path

from emotalk.data.io.media import ffmpeg_exe, iter_video_frames, probe_video
from emotalk.errors import DataError
from emotalk.utils.io import atomic_path


def poster_path(video: str | Path) -> Path:
    """Where the poster of ``video`` goes: ``name.mp4`` -> ``name.poster.jpg`` beside it."""
    video = Path(video)
    return video.with_name(f"{video.stem}.poster.jpg")


def write_poster(video: str | Path, out: str | Path | None = None) -> Path:
    """Write the middle frame of ``video`` as a JPEG (reused while it is newer than the video)."""
    from PIL import Image

    video = Path(video)
    out = Path(out) if out is not None else poster_path(video)
    if out.is_file() and video.is_file() and out.stat().st_mtime >= video.stat().st_mtime:
        return out
    info = probe_video(video)
    middle = max(0, info.num_frames // 2)
    if info.fps > 0:  # seek (fast: no decoding of the first half); ffmpeg takes the first frame whose
        # timestamp is >= the seek time, so aim half a frame early to land on the middle frame itself
        seek = max(0.0, (middle - 0.5) / info.fps)
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-ss", f"{seek:.4f}", "-i", str(video),
               "-frames:v", "1", "-q:v", "3", "-y"]
        with atomic_path(out, suffix=".jpg") as tmp:
            proc = subprocess.run(cmd + [str(tmp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
                raise DataError(f"{video}: its poster frame could not be extracted (ffmpeg: "
                                f"{proc.stderr.decode(errors='replace').strip()[-200:] or 'no frame'}); "
                                f"regenerate the video")
        return out
    frame = None  # no frame rate in the header: decode up to the middle frame
    with closing(iter_video_frames(video, info=info)) as frames:
        for i, f in enumerate(frames):
            frame = f
            if i >= middle:
                break
    if frame is None:
        raise DataError(f"{video}: no frame could be decoded for its poster; regenerate the video")
    with atomic_path(out, suffix=".jpg") as tmp:
        Image.fromarray(frame).save(tmp, "JPEG", quality=88)
    return out
