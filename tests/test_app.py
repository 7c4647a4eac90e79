"""``emotalk app`` without a browser: the page without models, the handler's error mapping, private outputs.

The back end (:class:`emotalk.app.Studio`) is exercised with a stand-in pipeline that writes a marker file
instead of rendering, so these tests take milliseconds; tests/test_app_browser.py runs the real models in
a real browser.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emotalk.app import AppLimits, Studio, timeline_text
from emotalk.app.landmark_gif import draw_landmarks, write_landmark_gif
from emotalk.app.ui import MODES, _status
from emotalk.data.io.media import write_wav
from emotalk.errors import EmotalkError, NoFaceError
from emotalk.data.emotions import emotion_vector
from emotalk.inference.timeline import is_timeline, parse_timeline

try:  # optional extra "app"; imported here (collection) because it takes seconds, not in a test's timing
    import gradio
except ImportError:  # pragma: no cover - the Studio tests below still run
    gradio = None


class FakePipeline:
    """Enough of :class:`emotalk.inference.Pipeline` for the Studio: a vocabulary, the early checks, and a
    ``generate`` that writes the request's emotion into ``out`` after ``delay`` seconds (or raises ``fail``)."""

    emotions = ["neutral", "happy", "sad"]
    intensity_levels = 3
    texture = object()

    def __init__(self, delay: float = 0.0, fail: Exception | None = None):
        self.delay, self.fail = delay, fail
        self.calls = 0

    def controls(self, emotion, intensity, renderer, **kw):
        """The real vocabulary checks (names, blends, timelines, intensity levels)."""
        if is_timeline(emotion):
            parse_timeline(emotion).keyframe_vectors(self.emotions, self.intensity_levels, intensity)
        else:
            emotion_vector(emotion, intensity, self.emotions, self.intensity_levels)

    def generate(self, image, audio, opts, out):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        time.sleep(self.delay)
        Path(out).write_text(f"{opts.emotion}\n")
        lm = np.random.default_rng(0).normal(size=(6, 68, 2)).astype(np.float32)
        return SimpleNamespace(path=Path(out), frames=6, fps=25.0, duration=0.24, size=(64, 64), renderer=opts.renderer,
                               landmarks=lm, warnings=[])


@pytest.fixture
def files(tmp_path):
    """A (not really) photo file and a real 0.5 s WAV."""
    photo = tmp_path / "face.png"
    photo.write_bytes(b"\x89PNG not decoded by the fake pipeline")
    wav = tmp_path / "speech.wav"
    write_wav(wav, (0.1 * np.sin(np.arange(8000) / 10)).astype(np.float32), 16000)
    return SimpleNamespace(photo=str(photo), audio=str(wav))


def _studio(tmp_path, **kw) -> Studio:
    return Studio(pipeline=FakePipeline(**kw), work_dir=tmp_path / "work")


# --- no models: the page says how to get them -------------------------------------------------------------
@pytest.mark.skipif(gradio is None, reason="Gradio is not installed: pip install -e '.[app]'")
def test_build_app_without_checkpoints_shows_the_hint(tmp_path, monkeypatch, files):
    from emotalk.app import build_app

    monkeypatch.chdir(tmp_path)  # no ./checkpoints; EMOTALK_HOME is an empty tmp folder (conftest)
    blocks = build_app(examples=False)
    assert isinstance(blocks, gradio.Blocks)
    assert not blocks.studio.ready
    hint = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "models"]
    assert len(hint) == 1 and "No trained models yet" in hint[0].value and "emotalk demo" in hint[0].value
    # the form is there and answers with the same advice instead of failing
    out = blocks.studio.generate(files.photo, files.audio, "happy")
    assert out.video is None and out.message.startswith("error: no trained models") and "emotalk demo" in out.message


@pytest.mark.skipif(gradio is None, reason="Gradio is not installed: pip install -e '.[app]'")
def test_page_handler_passes_the_form_through(tmp_path, files):
    """The function behind the Generate button: single emotion or the timeline table, errors as the
    status line (outside a request, Gradio's progress tracker is a no-op)."""
    from emotalk.app import build_app

    studio = _studio(tmp_path)
    blocks = build_app(studio=studio, examples=False)
    run = next(f.fn for f in blocks.fns.values() if f.api_name == "generate")
    video, gif, status = run(files.photo, files.audio, MODES[0], "sad", 2, [[0, "happy", 1]], "neural", 0)
    assert Path(video).read_text().strip() == "sad" and Path(gif).is_file() and "6 frames" in status
    video, gif, status = run(files.photo, files.audio, MODES[1], "sad", 2, [[0, "happy", 1], [0.3, "sad", 3]],
                             "warp", 0)
    assert Path(video).read_text().strip() == "0:happy@1, 0.3:sad@3"
    video, gif, status = run(files.photo, files.audio, MODES[1], "sad", 2, [[0, "happy", 1], [0.3, "bored", 3]],
                             "warp", 0)
    assert video is None and gif is None
    assert "error: timeline keyframe 2 (&#x27;0.3:bored@3&#x27;): unknown emotion" in status, status


def test_explicit_missing_folder_names_it_and_the_demo(tmp_path):
    studio = Studio(tmp_path / "nowhere", work_dir=tmp_path / "work")
    assert not studio.ready
    assert "nowhere" in studio.hint() and "emotalk demo" in studio.hint()


# --- the handler: EmotalkError -> the CLI's one line on the page -------------------------------------------
def test_handler_maps_emotalk_errors_to_one_line(tmp_path, files):
    upload = tmp_path / "gradio" / "3f9a" / "wall.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    studio = _studio(tmp_path, fail=NoFaceError(f"no face found in {upload};\n   use a frontal photo"))
    out = studio.generate(str(upload), files.audio, "happy")
    assert not out.ok and out.video is None
    # one line, "error: " as the CLI prints it, the upload named as the user knows it
    assert out.message == "error: no face found in wall.png; use a frontal photo"
    assert _status(out.message).count("color:#b00020") == 1


@pytest.mark.parametrize("kwargs, expected", [
    (dict(photo=None), "error: no photo given"),
    (dict(emotion="hungry"), "error: unknown emotion 'hungry'"),
    (dict(renderer="oil-paint"), "error: unknown renderer 'oil-paint'"),
    (dict(finetune_steps=999), "error: one-shot steps must be at most 20"),
    (dict(timeline=[[None, "happy", 2]]), "error: timeline row 1: give a time"),
    (dict(intensity="strong"), "error: intensity must be a number"),
    (dict(finetune_steps="many"), "error: one-shot steps must be a whole number"),
])
def test_bad_inputs_fail_before_any_work(tmp_path, files, kwargs, expected):
    studio = _studio(tmp_path)
    args = dict(photo=files.photo, audio=files.audio, emotion="happy") | kwargs
    out = studio.generate(**args)
    assert out.message.startswith(expected), out.message
    assert studio.pipeline.calls == 0


def test_corrupt_audio_and_huge_files(tmp_path, files):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00 definitely not audio")
    out = _studio(tmp_path).generate(files.photo, str(bad), "happy")
    assert out.message.startswith("error: ") and "broken.wav" in out.message and "\n" not in out.message
    small = Studio(pipeline=FakePipeline(), work_dir=tmp_path / "w2", limits=AppLimits(max_photo_mb=1e-6))
    assert small.generate(files.photo, files.audio).message.startswith("error: the photo file is")
    short = Studio(pipeline=FakePipeline(), work_dir=tmp_path / "w3", limits=AppLimits(max_seconds=0.25))
    assert short.generate(files.photo, files.audio).message.startswith("error: the speech is")


def test_other_exceptions_are_not_swallowed(tmp_path, files):
    with pytest.raises(ZeroDivisionError):
        _studio(tmp_path, fail=ZeroDivisionError("bug")).generate(files.photo, files.audio, "happy")


# --- concurrent users: each gets their own output ----------------------------------------------------------
def test_two_concurrent_requests_get_their_own_files(tmp_path, files):
    studio = _studio(tmp_path, delay=0.2)
    results = {}

    def request(emotion):
        results[emotion] = studio.generate(files.photo, files.audio, emotion, renderer="warp")

    threads = [threading.Thread(target=request, args=(e,)) for e in ("happy", "sad")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(results) == {"happy", "sad"}
    happy, sad = results["happy"], results["sad"]
    assert happy.ok and sad.ok, (happy.message, sad.message)
    assert happy.video != sad.video and happy.video.parent != sad.video.parent
    assert happy.video.read_text().strip() == "happy" and sad.video.read_text().strip() == "sad"
    assert happy.landmarks.is_file() and sad.landmarks.is_file()
    for out in (happy, sad):
        assert out.video.parent.parent == studio.work_dir


# --- pieces -------------------------------------------------------------------------------------------------
def test_timeline_table_known_answer():
    rows = [[0, "neutral", 1], [1.5, "happy", 3], ["", "", ""], [4.0, "sad", None],
            [6, "surprised:0.6+happy:0.4", 2.5]]
    text = timeline_text(rows)
    assert text == "0:neutral@1, 1.5:happy@3, 4.0:sad, 6:surprised:0.6+happy:0.4@2.5"
    tl = parse_timeline(text)
    assert [k.time for k in tl.keyframes] == [0, 1.5, 4.0, 6]
    with pytest.raises(EmotalkError, match="table is empty"):
        timeline_text([["", "", ""]])


def test_timeline_mode_reaches_the_pipeline(tmp_path, files):
    studio = _studio(tmp_path)
    out = studio.generate(files.photo, files.audio, "happy", timeline=[[0, "neutral", 1], [0.2, "sad", 3]])
    assert out.ok, out.message
    assert out.video.read_text().strip() == "0:neutral@1, 0.2:sad@3"
    assert MODES == ("one emotion", "timeline")


def test_landmark_animation(tmp_path):
    lm = np.zeros((50, 68, 2), np.float32)
    lm[:, :, 0] = np.arange(68) % 17
    lm[:, :, 1] = np.arange(68) // 17
    lm[:, 66, 1] += np.linspace(0, 3, 50)  # the lower lip drops over the clip
    drawn = draw_landmarks(lm, size=96)
    assert drawn.shape == (50, 96, 96, 3) and drawn.dtype == np.uint8
    assert (drawn[0] != 255).any() and (drawn[0] != drawn[-1]).any()
    assert (drawn[0][:40] == drawn[-1][:40]).all()  # only the mouth (bottom rows) moves
    from PIL import Image

    gif = write_landmark_gif(lm, tmp_path / "lm.gif", fps=25, max_fps=12.5, size=96)
    with Image.open(gif) as im:
        assert im.n_frames == 25 and im.size == (96, 96)  # every 2nd frame of 25 fps
        assert im.info["duration"] == 80
