"""The demo's ``report.html``: generated videos side by side, landmark plots, training curves, metrics."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from emotalk.demo.emotion_panel import EmotionPanel, panels_section
from emotalk.demo.posters import write_poster
from emotalk.models.face_graph import brow_height, mouth_opening
from emotalk.utils.io import atomic_write_text


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(runs: dict[str, str | Path], out: str | Path) -> Path | None:
    """One panel per run: every logged training loss against the step (validation as dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {name: read_metrics(d) for name, d in runs.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.6), squeeze=False)
    for ax, (name, rows) in zip(axes[0], series.items()):
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        keys = [k for k in (train[0] if train else {}) if k not in ("step", "split")]
        for k in keys:
            ax.plot([r["step"] for r in train], [r[k] for r in train], label=k)
        for k in sorted({k for r in val for k in r} - {"step", "split"})[:3]:
            ax.plot([r["step"] for r in val if k in r], [r[k] for r in val if k in r], "o--", label=f"val {k}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_landmarks(tracks: dict[str, np.ndarray], fps: float, out: str | Path, speech_rms: np.ndarray | None = None
                   ) -> Path:
    """Mouth opening and brow height over time for each generated clip, plus a mean face per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for name, lm in tracks.items():
        t = np.arange(len(lm)) / fps
        axes[0].plot(t, mouth_opening(lm), label=name)
        axes[1].plot(t, brow_height(lm), label=name)
        mean = lm.mean(0)
        axes[2].scatter(mean[:, 0], mean[:, 1], s=6, label=name)
    if speech_rms is not None:
        ax2 = axes[0].twinx()
        ax2.fill_between(np.arange(len(speech_rms)) / fps, speech_rms, alpha=0.15, color="gray")
        ax2.set_yticks([])
    axes[0].set_title("mouth opening (canonical units) — grey: speech energy")
    axes[1].set_title("brow height above the eyes")
    axes[2].set_title("mean face per clip")
    axes[2].invert_yaxis()
    axes[2].set_aspect("equal")
    for ax in axes[:2]:
        ax.set_xlabel("seconds")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _markdown_table_to_html(md: str) -> str:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    title = next((line[3:] for line in md.splitlines() if line.startswith("## ")), "")
    if len(lines) < 2:
        return ""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    head, body = rows[0], rows[2:]
    out = [f"<h3>{html.escape(title)}</h3>", "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
           + "</tr>"]
    for r in body:
        cls = ' class="paper"' if "(paper)" in r[0] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def write_report(out: str | Path, *, videos: Sequence[tuple[str, str | Path]], images: Sequence[tuple[str, str | Path]],
                 tables: Sequence[str], stage_seconds: dict[str, float], notes: Sequence[str] = (),
                 panels: Sequence[EmotionPanel] = (), stage_budget: dict[str, float] | None = None) -> Path:
    """Write ``report.html`` next to the artefacts it links (paths are made relative to it). Every video
    gets a poster (its middle frame), so the page shows faces before anything is clicked; ``panels``: the
    emotions x levels grids of :mod:`emotalk.demo.emotion_panel`, placed after the videos."""
    out = Path(out)
    base = out.parent

    def rel(p) -> str:
        return html.escape(os.path.relpath(Path(p), base))

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>emotalk demo</title><style>",
             "body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px}",
             ".videos{display:flex;flex-wrap:wrap;gap:12px}.videos figure{margin:0}",
             "video{width:256px;border:1px solid #ccc}figcaption{font-size:13px;text-align:center}",
             "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;",
             "font-size:13px;text-align:right}th:first-child,td:first-child{text-align:left}",
             "tr.paper{color:#777;font-style:italic}img{max-width:100%}</style></head><body>",
             "<h1>emotalk demo</h1>",
             "<p>One neutral photo + one speech clip + an emotion → a talking face. Everything below was made "
             "on this machine, offline, by <code>emotalk demo</code>.</p>",
             "<h2>Generated videos (same speech, different emotions)</h2><div class='videos'>"]
    for caption, path in videos:
        parts.append(f"<figure><video src='{rel(path)}' poster='{rel(write_poster(path))}' controls loop muted "
                     f"preload='metadata'></video>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</div>")
    parts.append(panels_section(panels, rel))
    for caption, path in images:
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='{rel(path)}'>")
    if tables:
        parts.append("<h2>Metrics on held-out subjects (ours vs. baselines, paper numbers in grey)</h2>")
        parts += [_markdown_table_to_html(t) for t in tables]
        parts.append("<p>The <em>Ground truth (real video)</em> row scores the test videos themselves: each "
                     "metric's ceiling here. A metric that fails on it says nothing about the generators — e.g. "
                     "Emo-Acc-FER, a FER-2013 classifier that mostly reads the identity of mead-mini's synthetic "
                     "faces, not their expression; for Emo-Acc train <code>emotalk train-emotion</code> on real "
                     "data.</p>")
    parts.append("<h2>Stage times (seconds)</h2><table>")
    budget = stage_budget or {}
    if budget:  # the plan beside the times: a stage over its budget is marked
        parts.append("<tr><th>stage</th><th>seconds</th><th>budget</th></tr>")
    for k, v in stage_seconds.items():
        b = budget.get(k)
        mark = " style='color:#b00;font-weight:600'" if b is not None and v > b else ""
        cell = "" if not budget else f"<td>{'' if b is None else f'{b:.0f}'}</td>"
        parts.append(f"<tr{mark}><td>{html.escape(k)}</td><td>{v:.1f}</td>{cell}</tr>")
    total_budget = f"<th>{sum(budget.get(k, 0.0) for k in stage_seconds):.0f}</th>" if budget else ""
    parts.append(f"<tr><th>total</th><th>{sum(stage_seconds.values()):.1f}</th>{total_budget}</tr></table>")
    for n in notes:
        parts.append(f"<p>{html.escape(n)}</p>")
    parts.append("</body></html>")
    atomic_write_text(out, "\n".join(parts))
    return out
