"""ffmpeg I/O: exact frame counts, audio cut/padded to the video, no half-written files."""
import numpy as np
import pytest

from emotalk.data.io.media import VideoWriter, load_audio, probe_video, read_video, write_video, write_wav
from emotalk.errors import DataError, InputError


@pytest.mark.parametrize("audio_seconds", [0.5, 1.0, 2.0])
def test_video_with_audio_has_exact_length(tmp_path, audio_seconds):
    wav = tmp_path / "a.wav"
    write_wav(wav, 0.3 * np.sin(np.arange(int(16000 * audio_seconds)) / 10))
    frames = [np.full((48, 64, 3), i * 8, np.uint8) for i in range(30)]
    out = write_video(tmp_path / "v.mp4", frames, 30, audio=wav)
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (64, 48, 30, True)
    assert len(load_audio(out)) == pytest.approx(16000, abs=400)  # padded or cut to the 1 s of video
    back = read_video(out)
    assert back.shape == (30, 48, 64, 3) and abs(int(back[20].mean()) - 160) < 4


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(target, 30) as w:
            w.write(np.zeros((32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", 30).write(np.zeros((31, 32, 3), np.uint8))


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError):
        probe_video(tmp_path / "junk.mp4")
