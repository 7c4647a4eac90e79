"""Audio/video I/O through the ffmpeg binary bundled with ``imageio-ffmpeg`` (no system ffmpeg needed).

- :func:`load_audio`: any audio/video file -> float32 mono at ``sr`` Hz.
- :func:`read_video`: frames (RGB uint8) resampled to ``fps`` (streamed with :func:`iter_video_frames`).
- :func:`probe_video`: size, fps, frame count, duration, whether there is an audio stream.
- :class:`VideoWriter`: stream RGB frames into an H.264 mp4, optionally muxed with an audio track (AAC);
  the file appears under its final name only after ``close()`` succeeds.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from emotalk.errors import DataError, DependencyError, InputError
from emotalk.utils.io import atomic_path


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DependencyError("imageio-ffmpeg is not installed; run: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(cmd: list[str], what: str, path: str | Path) -> bytes:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = tail[-1] if tail else f"ffmpeg exit code {proc.returncode}"
        raise DataError(f"{path}: cannot {what} ({reason})")
    return proc.stdout


def load_audio(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to float32 mono in [-1, 1] at ``sr`` Hz."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} not found")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {path} is empty (0 bytes)")
    raw = _run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sr),
                "-f", "s16le", "-acodec", "pcm_s16le", "-"], "decode the audio", path)
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    if audio.size == 0:
        raise InputError(f"audio file {path} has no audio samples")
    return audio


def write_wav(path: str | Path, audio: np.ndarray, sr: int = 16000) -> None:
    """Write float [-1, 1] or int16 mono audio as 16-bit PCM WAV (atomically)."""
    import wave

    a = np.asarray(audio)
    if a.dtype != np.int16:
        a = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic_path(path, suffix=".wav") as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes(a.tobytes())


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool


def probe_video(path: str | Path) -> VideoInfo:
    """Read stream information by asking ffmpeg to decode the headers (no ffprobe needed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file {path} not found")
    proc = subprocess.run([ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                           "-f", "null", "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = proc.stderr.decode(errors="replace")
    m = re.search(r"Stream #\S+.*Video: .*?(\d{2,5})x(\d{2,5})", err)
    if proc.returncode != 0 or m is None:
        raise DataError(f"{path}: not a readable video")
    fps_m = re.search(r"(\d+(?:\.\d+)?) fps", err) or re.search(r"(\d+(?:\.\d+)?) tbr", err)
    frames = re.findall(r"frame=\s*(\d+)", err)
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", err)
    duration = (int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))) if dur else 0.0
    return VideoInfo(width=int(m.group(1)), height=int(m.group(2)),
                     fps=float(fps_m.group(1)) if fps_m else 0.0,
                     num_frames=int(frames[-1]) if frames else 0, duration=duration,
                     has_audio=bool(re.search(r"Stream #\S+.*Audio:", err)))


def iter_video_frames(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
                      gray: bool = False, crop: tuple[int, int, int, int] | None = None, threads: int = 0,
                      info: VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Stream frames through the bundled ffmpeg: resampled to ``fps``, optionally cropped to
    ``(x, y, w, h)`` and scaled to ``size = (w, h)``, as grey ``(H, W)`` or RGB ``(H, W, 3)`` uint8."""
    info = info or probe_video(path)
    w, h = info.width, info.height
    filters = [f"fps={fps}"] if fps else []
    if crop is not None:
        x, y, w, h = crop
        filters.append(f"crop={w}:{h}:{x}:{y}")
    if size is not None:
        w, h = size
        filters.append(f"scale={w}:{h}:flags=area")
    cmd = [ffmpeg_exe(), "-v", "error", "-nostdin"]
    if threads:
        cmd += ["-threads", str(threads)]
    cmd += ["-i", str(path), "-an"]
    if filters:
        cmd += ["-vf", ",".join(filters)]
    if threads:
        cmd += ["-filter_threads", str(threads)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "gray" if gray else "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    shape = (h, w) if gray else (h, w, 3)
    frame_bytes = int(np.prod(shape))
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, dtype=np.uint8).reshape(shape)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit code {code}"
        raise DataError(f"{path}: video decoding failed ({last})")


def read_video(path: str | Path, fps: float | None = None) -> np.ndarray:
    frames = list(iter_video_frames(path, fps=fps))
    if not frames:
        raise DataError(f"{path}: video has no frames")
    return np.stack(frames)


class VideoWriter:
    """Stream RGB frames to an H.264 (yuv420p) mp4; ``audio`` (a file path) is muxed as AAC, padded with
    silence or cut to the video's exact length (frames / fps).

    Memory stays flat: frames go straight into ffmpeg's stdin. The output is written to a temp file
    beside ``path`` and renamed into place by :meth:`close`; :meth:`abort` (or an exception inside a
    ``with`` block) removes it, so a half-written video never appears.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int] | None = None,
                 audio: str | Path | None = None, crf: int = 18, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = fps
        self.audio = Path(audio) if audio is not None else None
        self.crf, self.preset = crf, preset
        self.size = size
        self._proc: subprocess.Popen | None = None
        self.frames_written = 0
        parent = self.path.parent if str(self.path.parent) else Path(".")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
        if not os.access(parent, os.W_OK):
            raise InputError(f"cannot write {self.path}: directory {parent} is not writable")
        self._tmp = parent / f".{self.path.stem}.partial{os.getpid()}.mp4"
        self._video_tmp = parent / f".{self.path.stem}.video{os.getpid()}.mp4"

    def _start(self, w: int, h: int) -> None:
        if w % 2 or h % 2:
            raise InputError(f"video size must be even for H.264, got {w}x{h}")
        # video only here; the audio is muxed in close(), cut to exactly the video's length
        target = self._video_tmp if self.audio is not None else self._tmp
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", str(self.fps), "-i", "-", "-an",
               "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(target)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.size = (w, h)

    def _mux_audio(self) -> None:
        """Add the audio track (AAC), padded with silence or cut so it lasts exactly as long as the video."""
        duration = self.frames_written / float(self.fps)
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(self._video_tmp), "-i", str(self.audio),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", "apad", "-c:a", "aac", "-b:a", "128k",
               "-t", f"{duration:.6f}", "-movflags", "+faststart", str(self._tmp)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._video_tmp.unlink(missing_ok=True)
        if proc.returncode != 0:
            self._tmp.unlink(missing_ok=True)
            err = proc.stderr.decode(errors="replace").strip()
            raise DataError(f"{self.path}: cannot add the audio track from {self.audio} ({err[-300:]})")

    def write(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an RGB frame (H, W, 3), got {frame.shape}")
        h, w = frame.shape[:2]
        if self._proc is None:
            self._start(w, h)
        elif (w, h) != self.size:
            raise ValueError(f"frame size {w}x{h} differs from the video's {self.size[0]}x{self.size[1]}")
        try:
            self._proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            err = self._proc.stderr.read().decode(errors="replace")
            self.abort()
            raise DataError(f"{self.path}: ffmpeg stopped while encoding ({err.strip()[-300:]})") from None
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> "VideoWriter":
        for f in frames:
            self.write(f)
        return self

    def close(self) -> Path:
        if self._proc is None:
            raise DataError(f"{self.path}: no frames were written")
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        code = self._proc.wait()
        self._proc = None
        if code != 0:
            self._tmp.unlink(missing_ok=True)
            self._video_tmp.unlink(missing_ok=True)
            raise DataError(f"{self.path}: ffmpeg failed ({err.strip()[-300:]})")
        if self.audio is not None:
            self._mux_audio()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        self._tmp.unlink(missing_ok=True)
        self._video_tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                audio: str | Path | None = None, **kw) -> Path:
    with VideoWriter(path, fps, audio=audio, **kw) as w:
        w.write_all(frames)
    return Path(path)
