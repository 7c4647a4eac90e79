"""Audio/video I/O through the ffmpeg binary bundled with ``imageio-ffmpeg`` (no system ffmpeg needed).

- :func:`load_audio`: any audio/video file -> float32 mono at ``sr`` Hz.
- :func:`read_video`: frames (RGB uint8) resampled to ``fps`` (streamed with :func:`iter_video_frames`).
- :func:`probe_video`: size, fps, frame count, duration, whether there is an audio stream.
- :func:`decode_small_video`: a small video already at the wanted rate, decoded in-process (no ffmpeg run).
- :class:`VideoWriter`: stream RGB frames into a video, optionally muxed with an audio track; the
  container follows the file's extension (:data:`VIDEO_CONTAINERS`: H.264 + AAC in mp4/mov/mkv, VP9 + Opus
  in webm) and the file appears under its final name only after ``close()`` succeeds.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from emotalk.errors import DataError, DependencyError, InputError, NoSpaceError
from emotalk.utils.io import atomic_path, reserve_temp

#: output extension -> (ffmpeg muxer, video encoder args, audio encoder args). Anything else is refused:
#: a video written under a name such as ``result.txt`` would open nowhere.
VIDEO_CONTAINERS: dict[str, tuple[str, list[str], list[str]]] = {
    ".mp4": ("mp4", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "128k"]),
    ".mov": ("mov", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "128k"]),
    ".mkv": ("matroska", ["-c:v", "libx264"], ["-c:a", "aac", "-b:a", "128k"]),
    ".webm": ("webm", ["-c:v", "libvpx-vp9", "-b:v", "0", "-deadline", "realtime", "-cpu-used", "8"],
              ["-c:a", "libopus", "-b:a", "96k"]),
}


def video_container(path: str | Path) -> str:
    """The lower-case extension of ``path`` if it names a video container emotalk writes, else InputError."""
    ext = Path(path).suffix.lower()
    if ext not in VIDEO_CONTAINERS:
        raise InputError(f"output {path}: {ext or 'no extension'} is not a video container emotalk writes; "
                         f"end the name in {', '.join(VIDEO_CONTAINERS)} (e.g. {Path(path).with_suffix('.mp4').name})")
    return ext


def _hit_size_limit(path: Path) -> bool:
    """Whether ``path`` stopped growing at the disk's end or the file-size limit (ffmpeg does not always
    say why a write failed)."""
    import resource

    try:
        size = path.stat().st_size
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        disk = os.statvfs(path.parent)
    except (OSError, ValueError):
        return False
    return (limit != resource.RLIM_INFINITY and size >= limit) or disk.f_bavail * disk.f_frsize < (1 << 20)


def _no_space(message: str) -> bool:
    """Whether an ffmpeg error text says the disk (or the file-size limit) ran out."""
    return any(t in message for t in ("No space left", "File too large", "Disk quota"))


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


def _pcm16_wav(path: Path, sr: int) -> np.ndarray | None:
    """The samples of a 16-bit PCM mono WAV already at ``sr`` Hz, read without starting ffmpeg (bit for bit
    what ffmpeg's decode gives: int16 / 32768); ``None`` for any other file, which ffmpeg then decodes.
    Preprocessing reads one such WAV per mead-mini clip, and a process start costs more than the read."""
    import wave

    if path.suffix.lower() != ".wav":
        return None
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype()) != (1, 2, sr, "NONE"):
                return None
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError):
        return None
    audio = np.frombuffer(raw, dtype="<i2")
    return audio.astype(np.float32) / np.float32(32768.0) if audio.size else None


def load_audio(path: str | Path, sr: int = 16000) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to float32 mono in [-1, 1] at ``sr`` Hz."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} not found")
    if path.stat().st_size == 0:
        raise InputError(f"audio file {path} is empty (0 bytes)")
    direct = _pcm16_wav(path, sr)
    if direct is not None:
        return direct
    # decoded as float so that NaN/inf samples (float WAVs) survive to be refused; int16 would turn them
    # into full-scale clicks and the file would "work"
    raw = _run([ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sr),
                "-f", "f32le", "-acodec", "pcm_f32le", "-"], "decode the audio", path)
    audio = np.frombuffer(raw, dtype=np.float32)
    if audio.size == 0:
        raise InputError(f"audio file {path} has no audio samples")
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise InputError(f"audio file {path}: {bad} of {audio.size} samples are NaN or infinite (a damaged float "
                         f"WAV); export the speech again, e.g. as 16-bit PCM WAV")
    # on the 16-bit grid, as the samples always were (int16 sources are unchanged, louder-than-full-scale
    # float samples are clipped)
    return (np.clip(np.rint(audio * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


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


def decode_small_video(path: str | Path, fps: float, max_bytes: int) -> tuple[VideoInfo, list[np.ndarray]] | None:
    """All frames (RGB uint8) of a video that is already at ``fps`` and whose frames fit in ``max_bytes``,
    decoded in this process by OpenCV's FFmpeg — ``(info, frames)``, or ``None`` whenever that might not
    give what :func:`probe_video` + :func:`iter_video_frames` give (another frame rate, which ffmpeg's ``fps``
    filter would resample; too large; a decoded frame count other than the container's; anything unreadable):
    the caller then takes that path.

    Why: preprocessing mead-mini decodes 384 small clips, and the two ffmpeg process starts per clip (probe,
    decode) cost ~3x the decoding itself; the frames are the same bytes (both are FFmpeg's H.264 decoder and
    its yuv420p -> RGB conversion; checked over a whole mead-mini in the tests and on the demo's data).
    ``info.has_audio`` is not probed here (False): call this only when the audio comes from another file."""
    import cv2

    path = Path(path)
    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        if not cap.isOpened():
            return None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        rate, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if abs(rate - fps) > 1e-3 or count < 1 or w < 2 or h < 2 or w * h * 3 * count > max_bytes:
            return None
        frames = []
        while len(frames) <= count:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if len(frames) != count or frames[0].shape != (h, w, 3):
        return None
    return VideoInfo(width=w, height=h, fps=rate, num_frames=count, duration=count / rate, has_audio=False), frames


def read_video(path: str | Path, fps: float | None = None) -> np.ndarray:
    frames = list(iter_video_frames(path, fps=fps))
    if not frames:
        raise DataError(f"{path}: video has no frames")
    return np.stack(frames)



def rgb_frame(frame: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A frame as contiguous (H, W, 3) uint8 for ffmpeg's rawvideo pipe; ``size`` (w, h): the video's size
    once its first frame fixed it (every video writer checks frames the same way)."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got {frame.shape}")
    h, w = frame.shape[:2]
    if size is not None and (w, h) != tuple(size):
        raise ValueError(f"frame size {w}x{h} differs from the video's {size[0]}x{size[1]}")
    return frame


class CommitOnSuccess:
    """A writer as a context manager: ``close()`` (finish and publish the output) when the block ends
    normally, ``abort()`` (kill the encoder, leave no file) when it raises."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(CommitOnSuccess):
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
        self._ext = video_container(self.path)
        # unique hidden temp names beside the output (same file system, so the final rename is atomic): two
        # processes (or threads) writing the same name never share a temp file, the last rename wins whole
        self._tmp = self._reserve(parent, "partial")
        self._video_tmp = self._reserve(parent, "video")

    def _reserve(self, parent: Path, what: str) -> Path:
        try:
            return reserve_temp(self.path, what, self._ext)
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}; choose another location") from None

    def _ffmpeg_failed(self, what: str, err: str) -> Exception:
        full = _no_space(err) or any(_hit_size_limit(t) for t in (self._tmp, self._video_tmp))
        self._tmp.unlink(missing_ok=True)
        self._video_tmp.unlink(missing_ok=True)
        if full:
            return NoSpaceError(f"no space left while writing {self.path} (disk full or file-size limit); free "
                                f"some space or write somewhere else (no partial video was kept)")
        return DataError(f"{self.path}: {what} ({err.strip()[-300:]})")

    def _start(self, w: int, h: int) -> None:
        if w % 2 or h % 2:
            raise InputError(f"video size must be even for H.264, got {w}x{h}")
        # video only here; the audio is muxed in close(), cut to exactly the video's length
        target = self._video_tmp if self.audio is not None else self._tmp
        muxer, vcodec, _ = VIDEO_CONTAINERS[self._ext]
        quality = ["-preset", self.preset, "-crf", str(self.crf)] if "libx264" in vcodec else ["-crf", "32"]
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", str(self.fps), "-i", "-", "-an",
               *vcodec, *quality, "-pix_fmt", "yuv420p", *self._faststart(), "-f", muxer, str(target)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.size = (w, h)

    def _mux_audio(self) -> None:
        """Add the audio track (AAC), padded with silence or cut so it lasts exactly as long as the video."""
        duration = self.frames_written / float(self.fps)
        muxer, _, acodec = VIDEO_CONTAINERS[self._ext]
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-i", str(self._video_tmp), "-i", str(self.audio),
               "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-af", "apad", *acodec,
               "-t", f"{duration:.6f}", *self._faststart(), "-f", muxer, str(self._tmp)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._video_tmp.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise self._ffmpeg_failed(f"cannot add the audio track from {self.audio}",
                                      proc.stderr.decode(errors="replace"))

    def _faststart(self) -> list[str]:
        """mp4/mov: the index at the front, so players start before the whole file is read."""
        return ["-movflags", "+faststart"] if self._ext in (".mp4", ".mov") else []

    def write(self, frame: np.ndarray) -> None:
        frame = rgb_frame(frame, None if self._proc is None else self.size)
        if self._proc is None:
            self._start(frame.shape[1], frame.shape[0])
        try:
            self._proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            err = self._proc.stderr.read().decode(errors="replace")
            self.abort()
            raise self._ffmpeg_failed("ffmpeg stopped while encoding", err) from None
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> "VideoWriter":
        for f in frames:
            self.write(f)
        return self

    def close(self) -> Path:
        if self._proc is None:
            self.abort()
            raise DataError(f"{self.path}: no frames were written")
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        code = self._proc.wait()
        self._proc = None
        if code != 0:
            raise self._ffmpeg_failed("ffmpeg failed", err)
        if self.audio is not None:
            self._mux_audio()
        else:
            self._video_tmp.unlink(missing_ok=True)
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



def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float,
                audio: str | Path | None = None, **kw) -> Path:
    with VideoWriter(path, fps, audio=audio, **kw) as w:
        w.write_all(frames)
    return Path(path)
