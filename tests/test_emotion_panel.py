"""The report's emotions panel and video posters, on stand-in frames (no model): every emotion x level gets a
tile with its still, its looping strip and its separation numbers; every <video> gets a poster that is the
clip's middle frame."""
import re

import numpy as np
import pytest
from PIL import Image

from emotalk.data.io.media import write_video
from emotalk.demo.emotion_panel import EmotionPanel, build_panel, panel_html, panels_section
from emotalk.demo.posters import poster_path, write_poster
from emotalk.demo.report import write_report
from emotalk.errors import InputError

EMOTIONS = ("happy", "sad")
LEVELS = (1.0, 2.0, 3.0)
T = 7  # frames per stand-in clip; the middle one is index 3


def clip(seed: int) -> np.ndarray:
    """T solid frames; frame i has grey level 20 * i + seed, so the middle frame's colour is known."""
    return np.stack([np.full((48, 48, 3), 20 * i + seed, np.uint8) for i in range(T)])


def separations() -> dict:
    """Known, distinct numbers per emotion x level x region; sad@2 is left out (must show as a dash)."""
    out = {}
    for k, e in enumerate(EMOTIONS):
        for lv in LEVELS:
            if (e, lv) != ("sad", 2.0):
                out.setdefault(e, {})[lv] = {"brows": 0.1 * k + 0.01 * lv, "eyes": 0.002 * lv, "mouth": 0.5 + lv}
    return out


@pytest.fixture
def panel(tmp_path) -> EmotionPanel:
    frames = {("neutral", 1.0): clip(0)}
    frames.update({(e, lv): clip(1 + int(lv)) for e in EMOTIONS for lv in LEVELS})
    return build_panel("stand-in face", frames, separations(), tmp_path / "panel", fps=10.0, tile_px=64)


def test_panel_media(panel):
    assert len(panel.tiles) == len(EMOTIONS) * len(LEVELS)
    assert panel.emotions == list(EMOTIONS) and panel.levels == list(LEVELS)
    for t in panel.tiles + [panel.neutral]:
        still = np.asarray(Image.open(t.still))
        assert still.shape == (64, 64, 3)
        seed = 0 if t.emotion == "neutral" else 1 + int(t.level)
        assert abs(float(still.mean()) - (20 * (T // 2) + seed)) < 3  # the middle frame, not the first
        strip = Image.open(t.strip)
        assert strip.format == "WEBP" and strip.n_frames == T and strip.info.get("loop") == 0
        strip.seek(1)
        strip.load()
        assert strip.info["duration"] == 100  # 10 fps
    happy3 = next(t for t in panel.tiles if (t.emotion, t.level) == ("happy", 3.0))
    assert happy3.separation == pytest.approx({"brows": 0.03, "eyes": 0.006, "mouth": 3.5})


def test_panel_html_has_a_tile_with_numbers_per_emotion_and_level(panel, tmp_path):
    page = panel_html(panel, rel=lambda p: p)
    cells = re.findall(r"<td data-emotion='(\w+)' data-level='([\d.]+)'>(.*?)</td>", page, re.S)
    assert sorted((e, float(lv)) for e, lv, _ in cells) == sorted((e, lv) for e in EMOTIONS for lv in LEVELS)
    by_key = {(e, float(lv)): body for e, lv, body in cells}
    # sad (k=1) at level 3: brows 0.1 + 0.03, eyes 0.006, mouth 3.5; the bold number is their mean
    assert "brows 0.130 · eyes 0.006 · mouth 3.500" in by_key[("sad", 3.0)]
    assert f"<b>{(0.13 + 0.006 + 3.5) / 3:.3f}</b>" in by_key[("sad", 3.0)]
    assert "brows — · eyes — · mouth —" in by_key[("sad", 2.0)]  # not measured: a dash, not a zero
    for body in by_key.values():  # each cell: the still, then the strip
        srcs = re.findall(r"<img src='([^']+)'", body)
        assert len(srcs) == 2 and srcs[0].endswith(".jpg") and srcs[1].endswith(".webp")
    assert "neutral" in page and "baseline" in page
    assert panels_section([], rel=str) == ""
    assert "id='emotions'" in panels_section([panel], rel=str)


def test_panel_json_round_trip(panel):
    again = EmotionPanel.from_json(panel.to_json())
    assert again == panel


def test_panel_needs_the_neutral_baseline(tmp_path):
    with pytest.raises(InputError, match="neutral"):
        build_panel("x", {("happy", 1.0): clip(0)}, {}, tmp_path, fps=10.0)
    with pytest.raises(InputError, match=r"\(T, H, W, 3\)"):
        build_panel("x", {("neutral", 1.0): clip(0), ("happy", 1.0): np.zeros((4, 8, 8))}, {}, tmp_path, fps=10.0)


def test_every_video_in_the_report_has_its_middle_frame_as_poster(tmp_path, panel):
    videos = []
    for k in range(2):
        frames = [np.full((64, 64, 3), 25 * i + 10 * k, np.uint8) for i in range(9)]
        videos.append((f"clip {k}", write_video(tmp_path / f"v{k}.mp4", frames, fps=10)))
    report = write_report(tmp_path / "report.html", videos=videos, images=[], tables=[], stage_seconds={"x": 1.0},
                          panels=[panel])
    page = report.read_text()
    tags = re.findall(r"<video [^>]*>", page)
    assert len(tags) == 2
    for k, tag in enumerate(tags):
        poster = re.search(r"poster='([^']+)'", tag)
        assert poster, tag
        img = np.asarray(Image.open(tmp_path / poster.group(1)))
        assert abs(float(img.mean()) - (25 * 4 + 10 * k)) < 6  # frame 4 of 9
    assert poster_path(tmp_path / "v0.mp4").is_file()
    assert page.count("data-emotion=") == len(EMOTIONS) * len(LEVELS)
    # a second report reuses the posters (they are newer than their videos)
    before = poster_path(tmp_path / "v0.mp4").stat().st_mtime_ns
    assert write_poster(tmp_path / "v0.mp4").stat().st_mtime_ns == before


def test_zoom_keeps_the_central_square(tmp_path):
    """zoom=0.5 keeps the central half: on frames that are white inside it and black outside, all white."""
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[10:30, 10:30] = 255
    frames = {("neutral", 1.0): np.stack([frame] * 3)}
    panel = build_panel("zoom", frames, {}, tmp_path, fps=5.0, tile_px=32, zoom=0.5)
    assert np.asarray(Image.open(panel.neutral.still)).min() > 200
    whole = build_panel("zoom", frames, {}, tmp_path / "whole", fps=5.0, tile_px=32, zoom=1.0)
    assert np.asarray(Image.open(whole.neutral.still)).min() < 50
