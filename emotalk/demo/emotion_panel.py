"""The report's "emotions" panel: one face and one short sentence in every emotion x intensity level.

Why a panel of its own: the report's videos show one clip per emotion at level 3, each behind a player, so
a reader cannot compare *happy* with *sad*, or level 1 with level 3, at a glance - which is the paper's
whole claim. The panel puts every emotion (rows) x level 1, 2, 3 (columns) of the same face and speech
side by side, each as a still (the clip's middle frame) and a looping strip that plays inline without a
click (animated WebP), with the measured *separation* under it: the landmark distance of that rendering
from the neutral rendering, per region (brows, eyes, mouth), in outer-eye-corner distances - the same
numbers as the ``emotion_separation`` metric (:func:`emotalk.eval.metrics.expression.separation_table`).

Rendering reuses the evaluation's emotion grid (:func:`emotalk.eval.emotion_grid.grid_samples`): G_L runs
over the whole sentence once per emotion x level, only ``frames`` evenly spaced frames are rendered, and
G_T is fine-tuned once per face (not per tile) and then driven by per-frame emotion vectors. Those frames,
played at the rate their spacing implies, are the strip; the neutral rendering is the baseline for every
tile and is shown first.

:func:`build_panel` (frames + separations -> media files + :class:`EmotionPanel`) and :func:`panel_html`
need no model, so they are tested on stand-in frames; :func:`render_panel` adds the models.
"""
from __future__ import annotations

import html
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from emotalk.errors import InputError
from emotalk.eval.emotion_grid import GridConfig, grid_samples
from emotalk.eval.evaluate import EvalMethod
from emotalk.eval.metrics.expression import REGIONS, separation_table
from emotalk.eval.sample import MetricOptions
from emotalk.utils.io import atomic_path

log = logging.getLogger(__name__)

#: a short sentence for the panel's strips (not among mead-mini's Harvard sentences): ~1.5 s keeps the
#: grid cheap while the lips still move through open and closed vowels
PANEL_SENTENCE = "Look at my face now."


@dataclass
class PanelOptions:
    """What a panel renders (the demo's defaults keep it to a few seconds of CPU per face)."""

    levels: tuple[float, ...] = (1.0, 2.0, 3.0)
    frames: int = 12  # rendered frames per tile, evenly spaced over the sentence (the strip)
    emotions: tuple[str, ...] = ()  # empty: every emotion G_L knows
    finetune_steps: int = 5  # one-shot fine-tuning of G_T on the face, once per panel
    landmark_upsample: int = 1  # dlib upsampling for the re-detection behind the separation numbers
    tile_px: int = 160  # side of the written still / strip images
    zoom: float = 0.8  # keep the central square of this side (the face; less hair, backdrop and shoulders)


@dataclass
class Tile:
    """One rendering: its still, its strip and its separation from the neutral rendering."""

    emotion: str
    level: float
    still: str  # path of the middle frame (JPEG)
    strip: str  # path of the looping strip (animated WebP)
    separation: dict[str, float] = field(default_factory=dict)  # region -> eye distances (re-detected)
    asked: dict[str, float] = field(default_factory=dict)  # the same for the driving landmarks


@dataclass
class EmotionPanel:
    """A face in every emotion x level; ``neutral`` is the baseline the separations are measured from."""

    title: str
    neutral: Tile
    tiles: list[Tile]
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "EmotionPanel":
        return cls(title=d["title"], neutral=Tile(**d["neutral"]), tiles=[Tile(**t) for t in d["tiles"]],
                   seconds=float(d.get("seconds", 0.0)))

    @property
    def emotions(self) -> list[str]:
        return list(dict.fromkeys(t.emotion for t in self.tiles))

    @property
    def levels(self) -> list[float]:
        return sorted({t.level for t in self.tiles})


# --- media ------------------------------------------------------------------------------------------------

def _resize(frame: np.ndarray, px: int, zoom: float = 1.0):
    from PIL import Image

    h, w = frame.shape[:2]
    side = max(1, int(round(min(h, w) * min(1.0, zoom))))
    y0, x0 = (h - side) // 2, (w - side) // 2
    img = Image.fromarray(np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side], np.uint8))
    return img if img.size == (px, px) else img.resize((px, px), Image.LANCZOS)


def write_still(frame: np.ndarray, out: str | Path, px: int, zoom: float = 1.0) -> Path:
    """One RGB frame (its central ``zoom`` square) as a ``px`` x ``px`` JPEG."""
    out = Path(out)
    with atomic_path(out, suffix=".jpg") as tmp:
        _resize(frame, px, zoom).save(tmp, "JPEG", quality=90)
    return out


def write_strip(frames: np.ndarray, out: str | Path, fps: float, px: int, zoom: float = 1.0) -> Path:
    """Frames as a looping animated WebP: it plays inline in every current browser without a click or a
    player, and is a few kB per frame at these sizes (a GIF's 256 colours band the skin)."""
    out = Path(out)
    imgs = [_resize(f, px, zoom) for f in frames]
    with atomic_path(out, suffix=".webp") as tmp:
        imgs[0].save(tmp, "WEBP", save_all=True, append_images=imgs[1:], duration=int(round(1000 / fps)), loop=0,
                     quality=80, method=4)
    return out


def build_panel(title: str, frames: Mapping[tuple[str, float], np.ndarray],
                separations: Mapping[str, Mapping[float, Mapping[str, float]]], out_dir: str | Path, fps: float,
                tile_px: int = 160, asked: Mapping[str, Mapping[float, Mapping[str, float]]] | None = None,
                zoom: float = 1.0) -> EmotionPanel:
    """Write a still and a strip per rendering and collect them with their separations.

    ``frames``: ``{(emotion, level): (T, H, W, 3) uint8}``, which must include ``("neutral", 1.0)`` (the
    baseline); ``separations`` / ``asked``: ``{emotion: {level: {region: value}}}`` as
    :func:`separation_table` returns them (missing entries show as '—'); ``fps``: the strips' rate;
    ``zoom``: the central square of the frames that is kept (1: all)."""
    if ("neutral", 1.0) not in frames:
        raise InputError("an emotions panel needs the neutral rendering ('neutral', 1.0) as its baseline")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    asked = asked or {}

    def tile(emotion: str, level: float, clip: np.ndarray) -> Tile:
        clip = np.asarray(clip)
        if clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0:
            raise InputError(f"{title}: frames of {emotion}@{level:g} must be (T, H, W, 3), got {clip.shape}")
        stem = f"{emotion}_{level:g}".replace(".", "p")
        sep = {r: float(v) for r, v in separations.get(emotion, {}).get(level, {}).items()}
        ask = {r: float(v) for r, v in asked.get(emotion, {}).get(level, {}).items()}
        still = write_still(clip[len(clip) // 2], out_dir / f"{stem}.jpg", tile_px, zoom)
        strip = write_strip(clip, out_dir / f"{stem}.webp", fps, tile_px, zoom)
        return Tile(emotion, float(level), str(still), str(strip), sep, ask)

    neutral = tile("neutral", 1.0, frames[("neutral", 1.0)])
    tiles = [tile(e, float(lv), f) for (e, lv), f in frames.items() if e != "neutral"]
    return EmotionPanel(title, neutral, tiles)


# --- models -----------------------------------------------------------------------------------------------

@dataclass
class _SpeechClip:
    """The few clip fields :func:`grid_samples` reads, for speech that is not a dataset clip (the panel's
    TTS sentence): the windows are the pipeline's own features, so they always match the checkpoint."""

    subject: str
    clip_id: str
    fps: float
    num_frames: int
    feature_kind: str
    audio_features: np.ndarray
    audio: np.ndarray | None = None


@dataclass
class _Reference:
    image: np.ndarray  # the face crop the grid prepares as its photo


def speech_clip(pipe, audio: np.ndarray, sample_rate: int, name: str) -> _SpeechClip:
    """``audio`` (float mono) as a stand-in clip at the pipeline's frame rate."""
    fps = float(pipe.fps)
    num_frames = int(round(len(audio) / float(sample_rate) * fps))
    feats = pipe.audio_features((np.asarray(audio, np.float32), int(sample_rate)), num_frames=num_frames, fps=fps)
    return _SpeechClip(name, "panel", fps, num_frames, pipe.feature_kind, np.asarray(feats.all(), np.float32))


def render_panel(pipe, title: str, face: np.ndarray, audio: np.ndarray, sample_rate: int, out_dir: str | Path,
                 opts: PanelOptions | None = None, name: str = "panel") -> EmotionPanel:
    """Render ``face`` (an RGB face crop, e.g. a processed subject's reference image) saying ``audio`` in
    every emotion x level with ``pipe`` (:class:`emotalk.inference.Pipeline`), measure the separations
    (dlib re-detection on the rendered frames) and write the panel's media to ``out_dir``."""
    opts = opts or PanelOptions()
    t0 = time.perf_counter()
    clip = speech_clip(pipe, audio, sample_rate, name)
    cfg = GridConfig(subjects=1, frames=int(opts.frames), intensities=[float(v) for v in opts.levels],
                     emotions=list(opts.emotions), blink=False)
    cfg.validate()
    method = EvalMethod(name="Ours", renderer="neural", finetune_steps=int(opts.finetune_steps))
    samples = grid_samples(pipe, method, clip, _Reference(np.ascontiguousarray(face)), cfg, opts.landmark_upsample)
    mopts = MetricOptions(landmark_upsample=int(opts.landmark_upsample))
    rendered = separation_table(samples, mopts)
    driving = separation_table(samples, mopts, driving=True)
    frames = {(s.emotion, float(s.intensity)): s.generated for s in samples}
    # the grid's frames are evenly spaced over the sentence: played at this rate the strip keeps real time
    spacing = max(1.0, (clip.num_frames - 1) / (len(samples[0].generated) + 1))
    panel = build_panel(title, frames, rendered, out_dir, clip.fps / spacing, opts.tile_px, driving, opts.zoom)
    panel.seconds = round(time.perf_counter() - t0, 2)
    log.info("emotions panel %r: %d tiles in %.1f s", title, len(panel.tiles) + 1, panel.seconds)
    return panel


# --- HTML -------------------------------------------------------------------------------------------------

PANEL_CSS = (".panel{border-collapse:collapse;margin:6px 0 18px}.panel td,.panel th{border:1px solid #ddd;"
             "padding:4px;text-align:center;vertical-align:top}.panel th.row{text-align:left;font-size:13px}"
             ".panel img{width:var(--tile,128px);height:var(--tile,128px);max-width:none;display:inline-block}"
             ".sep{font:11px/1.35 ui-monospace,monospace;color:#333}.sep b{font-weight:600}")


def _fmt(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _tile_cell(t: Tile, rel: Callable[[str], str], neutral: bool = False) -> str:
    alt = html.escape(f"{t.emotion} level {t.level:g}")
    imgs = (f"<img src='{rel(t.still)}' alt='{alt}, middle frame' title='middle frame'>"
            f"<img src='{rel(t.strip)}' alt='{alt}, looping strip' title='looping strip'>")
    if neutral:
        return f"<td>{imgs}<div class='sep'>baseline (separation 0)</div></td>"
    mean = np.nanmean([t.separation.get(r, np.nan) for r in REGIONS]) if t.separation else np.nan
    lines = " · ".join(f"{r} {_fmt(t.separation.get(r))}" for r in REGIONS)
    asked = " · ".join(f"{r} {_fmt(t.asked.get(r))}" for r in REGIONS) if t.asked else ""
    title = f" title='asked by the driving landmarks: {html.escape(asked)}'" if asked else ""
    return (f"<td data-emotion='{html.escape(t.emotion)}' data-level='{t.level:g}'>{imgs}"
            f"<div class='sep'{title}>Δ <b>{_fmt(mean)}</b><br>{lines}</div></td>")


def panel_html(panel: EmotionPanel, rel: Callable[[str], str], tile_px: int = 150) -> str:
    """The panel as an HTML table: a row per emotion, a column per level, the neutral baseline on top.
    ``rel`` turns a stored path into the link the page uses (relative to the report)."""
    levels = panel.levels
    cells = {(t.emotion, t.level): t for t in panel.tiles}
    out = [f"<h3>{html.escape(panel.title)}</h3>",
           f"<table class='panel' style='--tile:{int(tile_px)}px'><tr><th></th>"
           + "".join(f"<th>level {lv:g}</th>" for lv in levels) + "</tr>",
           f"<tr><th class='row'>neutral</th>{_tile_cell(panel.neutral, rel, neutral=True)}"
           + "<td></td>" * (len(levels) - 1) + "</tr>"]
    for e in panel.emotions:
        row = "".join(_tile_cell(cells[(e, lv)], rel) if (e, lv) in cells else "<td>—</td>" for lv in levels)
        out.append(f"<tr><th class='row'>{html.escape(e)}</th>{row}</tr>")
    out.append("</table>")
    return "\n".join(out)


def panels_section(panels: Sequence[EmotionPanel], rel: Callable[[str], str]) -> str:
    """The report's "emotions" section: the panels and how to read their numbers."""
    if not panels:
        return ""
    parts = ["<h2 id='emotions'>Emotions × intensity (same face, same speech)</h2>",
             "<p>Each cell: the clip's middle frame, then a looping strip of the clip. Under it, the measured "
             "separation Δ: how far dlib's landmarks re-detected on that rendering lie from those of the neutral "
             "rendering (brows, eyes, mouth; mean over frames and points, in outer-eye-corner distances; "
             "bold: the mean of the three). It should grow from level 1 to 3; hover a number to see what the "
             "driving landmarks asked for.</p>", f"<style>{PANEL_CSS}</style>"]
    parts += [panel_html(p, rel) for p in panels]
    return "\n".join(parts)
