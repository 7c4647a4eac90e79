"""Video writing: frames + the speech -> an H.264 + AAC mp4 that appears only when it is complete.

Frames arrive one at a time from a generator (nothing but the current frame is held) and go straight to
:class:`emotalk.data.io.media.VideoWriter`, which writes a hidden partial file and renames it into place
at the end, so a failure anywhere leaves no file behind. The muxed audio is the decoded 16 kHz speech
padded or trimmed to exactly the video's ``T`` frames (:meth:`Speech.track`), so ffmpeg's ``-shortest``
keeps every frame.

:class:`FragmentedMP4Writer` is the streaming counterpart (``emotalk generate --out -``): a fragmented MP4
written to a pipe while the frames and the speech arrive.
"""
from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np

from emotalk.data.io import media
from emotalk.data.io.media import CommitOnSuccess, VideoWriter, write_wav
from emotalk.errors import DataError, InputError
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


class FragmentedMP4Writer(CommitOnSuccess):
    """Frames and speech as they come -> a fragmented MP4 (H.264 + AAC) on a byte stream such as stdout.

    ``-movflags frag_keyframe+empty_moov`` makes the file playable while it is written (``ffplay -`` on
    the other end of a pipe): the header carries no sample tables and each keyframe (one a second) starts
    a fragment. The video goes to ffmpeg's stdin, the 16 kHz speech (:meth:`add_audio`, fed by a thread so
    neither pipe can block the other) through a second pipe; at :meth:`close` the speech is padded with
    silence to the video's length. Nothing is held beyond the queued audio of the stream's look-ahead."""

    def __init__(self, out: BinaryIO, fps: float | None = None, sample_rate: int = 16000, crf: int = 20,
                 preset: str = "veryfast", max_queued: int = 90):
        self.out, self.fps, self.sample_rate = out, fps, int(sample_rate)
        self.crf, self.preset = crf, preset
        self.frames = 0
        self.audio_samples = 0
        self._queue: queue.Queue = queue.Queue()
        #: frames on their way to ffmpeg: ffmpeg may wait for the speech of a frame before taking the frame,
        #: and the stream pulls that speech only after handing the frame over, so a blocking write would
        #: deadlock; a few seconds of frames are allowed to queue instead
        self._frames: queue.Queue = queue.Queue(maxsize=max_queued)
        self._proc: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._err = tempfile.TemporaryFile()
        self.size: tuple[int, int] | None = None

    def add_audio(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at ``sample_rate`` (in order; before or after the frames they belong to)."""
        a = (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
        self.audio_samples += len(a)
        self._queue.put(a.tobytes())

    def _pump_audio(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "wb") as pipe:
                while True:
                    data = self._queue.get()
                    if data is None:
                        break
                    pipe.write(data)
        except BaseException as e:  # a broken pipe ends ffmpeg too; close() reports ffmpeg's message
            self._errors.append(e)

    def _pump_video(self) -> None:
        try:
            while True:
                data = self._frames.get()
                if data is None:
                    break
                self._proc.stdin.write(data)
        except BaseException as e:  # ffmpeg stopped; close() reports its message
            self._errors.append(e)
            while self._frames.get() is not None:  # keep write() from blocking on a full queue
                pass
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def _copy_out(self) -> None:
        try:
            for chunk in iter(lambda: self._proc.stdout.read(1 << 16), b""):
                self.out.write(chunk)
            self.out.flush()
        except BaseException as e:
            self._errors.append(e)

    def _start(self, w: int, h: int) -> None:
        if w % 2 or h % 2:
            raise InputError(f"video size must be even for H.264, got {w}x{h}")
        if not self.fps:
            raise InputError("the frame rate of the fragmented MP4 is not set")
        read_fd, write_fd = os.pipe()
        try:
            direct = self.out.fileno()
            self.out.flush()
        except (AttributeError, OSError, ValueError):
            direct = None  # not a real file (BytesIO): copy ffmpeg's output over in a thread
        cmd = [media.ffmpeg_exe(), "-v", "error", "-nostdin", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", f"{self.fps:g}", "-i", "pipe:0", "-f", "s16le", "-ar", str(self.sample_rate), "-ac", "1",
               "-i", f"pipe:{read_fd}", "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264", "-preset", self.preset,
               "-tune", "zerolatency", "-crf", str(self.crf), "-pix_fmt", "yuv420p", "-g", str(max(1, round(self.fps))),
               "-c:a", "aac", "-b:a", "128k", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
               "-f", "mp4", "pipe:1"]
        stdout = direct if direct is not None else subprocess.PIPE
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout, stderr=self._err, pass_fds=(read_fd,))
        os.close(read_fd)
        self._threads = [threading.Thread(target=self._pump_audio, args=(write_fd,), daemon=True),
                         threading.Thread(target=self._pump_video, daemon=True)]
        if direct is None:
            self._threads.append(threading.Thread(target=self._copy_out, daemon=True))
        for t in self._threads:
            t.start()
        self.size = (w, h)

    def write(self, frame: np.ndarray) -> None:
        frame = media.rgb_frame(frame, None if self._proc is None else self.size)
        if self._proc is None:
            self._start(frame.shape[1], frame.shape[0])
        if self._errors:
            raise DataError(f"ffmpeg stopped while streaming the video ({self._stderr()})")
        self._frames.put(frame.tobytes())
        self.frames += 1

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-300:]

    def close(self) -> None:
        """Pad the speech to the video's length, end both inputs and wait for the last fragment."""
        if self._proc is None:
            raise DataError("no frames were produced, so no video was written")
        target = int(round(self.frames / float(self.fps) * self.sample_rate))
        if target > self.audio_samples:
            self.add_audio(np.zeros(target - self.audio_samples, np.float32))
        self._queue.put(None)
        self._frames.put(None)
        code = self._proc.wait()
        for t in self._threads:
            t.join()
        self._proc = None
        message = self._stderr() if code != 0 else ""
        self._err.close()
        if code != 0:
            raise DataError(f"ffmpeg failed while streaming the video ({message})")

    def abort(self) -> None:
        if self._proc is not None:
            self._queue.put(None)
            self._proc.kill()
            try:
                self._frames.put_nowait(None)
            except queue.Full:
                pass
            self._proc.wait()
            self._proc = None

