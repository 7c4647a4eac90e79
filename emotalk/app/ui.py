"""The page of ``emotalk app``: a Gradio form in front of :class:`emotalk.app.service.Studio`.

Left: the photo (upload or paste), the speech (upload or microphone), the emotion - one emotion with an
intensity, or a timeline table of keyframes (the same keyframes as ``emotalk generate --emotion
"0:neutral, 1.5:happy@3"``) - the renderer and the one-shot steps. Right: the video, the landmark
animation and a status line, which shows the same one-line ``error: ...`` message as the CLI when an input
cannot be used. Below: examples ready to click (public-domain photos and a sentence spoken by eSpeak NG).

Gradio is an optional dependency (``pip install -e ".[app]"``), imported only when a page is built so the
rest of emotalk (and ``emotalk --help``) works without it. Elements the browser tests look for carry
``elem_id``s: ``photo``, ``speech``, ``emotion``, ``generate``, ``video``, ``landmarks``, ``status``,
``models``.
"""
from __future__ import annotations

import html
import logging
import os
from pathlib import Path

from emotalk.errors import DependencyError
from emotalk.app.service import AppLimits, Studio, example_inputs

__all__ = ["build_app", "launch", "MODES"]

log = logging.getLogger(__name__)

#: the two ways of giving the emotion
MODES = ("one emotion", "timeline")
_TIMELINE_HEADERS = ["time (s)", "emotion", "intensity"]


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio
    except ImportError:
        raise DependencyError("the web app needs Gradio: pip install -e \".[app]\" (or pip install gradio)") from None
    return gradio


def _status(text: str) -> str:
    """The status line as HTML: errors in red, text escaped (messages quote user file names)."""
    if not text:
        return "<div id='status-text'></div>"
    colour = "#b00020" if text.startswith("error:") else "inherit"
    return f"<div id='status-text' style='color:{colour};white-space:pre-wrap'>{html.escape(text)}</div>"


def build_app(checkpoints: str | Path | None = None, *, studio: Studio | None = None, examples: bool = True,
              limits: AppLimits | None = None, concurrency: int = 2):
    """The page as a ``gr.Blocks`` (queue enabled, ``concurrency`` requests at once). ``checkpoints``: as for
    ``emotalk generate --checkpoints`` (None searches the usual places); without models the page says how
    to get them and every request answers with that message. ``studio``: an already built back end (tests).
    The back end is also reachable as ``blocks.studio``."""
    gr = _gradio()
    studio = studio or Studio(checkpoints, limits)
    samples = example_inputs() if examples else {}
    emotions = studio.emotions
    default_emotion = "happy" if "happy" in emotions else emotions[0]
    levels = studio.intensity_levels

    def run(photo, audio, mode, emotion, intensity, table, renderer, steps, progress=gr.Progress(track_tqdm=True)):
        def report(fraction: float, desc: str) -> None:
            progress(fraction, desc=desc)

        timeline = table if mode == MODES[1] else None
        rows = timeline.values.tolist() if hasattr(timeline, "values") else timeline  # pandas or lists
        out = studio.generate(photo, audio, emotion, intensity, rows, renderer, steps, report)
        return (str(out.video) if out.video else None, str(out.landmarks) if out.landmarks else None,
                _status(out.message))

    with gr.Blocks(title="emotalk", analytics_enabled=False, delete_cache=(1800, 3600)) as blocks:
        gr.Markdown("# emotalk\nOne photo + speech + an emotion → a talking face. "
                    "The emotion can change within the clip (timeline).")
        gr.HTML(f"<div class='{'ok' if studio.ready else 'missing'}'>{html.escape(studio.hint())}</div>",
                elem_id="models")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Photo (one face)",
                                 elem_id="photo", height=240)
                audio = gr.Audio(type="filepath", sources=["upload", "microphone"], label="Speech",
                                 elem_id="speech")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Emotion control", elem_id="mode")
                with gr.Group(visible=True) as single:
                    emotion = gr.Dropdown(emotions, value=default_emotion, label="Emotion", elem_id="emotion")
                    intensity = gr.Slider(1, levels, value=min(2, levels), step=0.5, label="Intensity",
                                          elem_id="intensity")
                with gr.Group(visible=False) as timed:
                    table = gr.Dataframe(value=[[0, "neutral", 1], [1.0, default_emotion, levels]],
                                         headers=_TIMELINE_HEADERS, datatype=["number", "str", "number"],
                                         type="array", label="Timeline keyframes (blend: happy:0.6+surprised:0.4)",
                                         elem_id="timeline", interactive=True)
                renderer = gr.Radio(studio.renderers, value=studio.renderers[0], label="Renderer (warp: fast "
                                    "preview)", elem_id="renderer")
                steps = gr.Slider(0, studio.limits.max_finetune_steps, value=5, step=1,
                                  label="One-shot fine-tuning steps", elem_id="steps")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Video", elem_id="video", interactive=False)
                landmarks = gr.Image(type="filepath", label="Landmarks (G_L's output)", elem_id="landmarks",
                                     height=180, interactive=False)
                status = gr.HTML(_status(""), elem_id="status")
        if samples:
            gr.Examples([[str(samples[name]), str(samples["speech"])] for name in ("astronaut", "grace_hopper")],
                        inputs=[photo, audio], cache_examples=False, elem_id="examples",
                        example_labels=["Eileen Collins + a sentence", "Grace Hopper + a sentence"],
                        label="Examples (public-domain photos, a sentence spoken offline by eSpeak NG)")

        mode.change(lambda m: (gr.update(visible=m == MODES[0]), gr.update(visible=m == MODES[1])),
                    inputs=mode, outputs=[single, timed], queue=False, api_visibility="private")
        button.click(run, inputs=[photo, audio, mode, emotion, intensity, table, renderer, steps],
                     outputs=[video, landmarks, status], api_name="generate", concurrency_limit=concurrency)
    blocks.queue(default_concurrency_limit=concurrency)
    blocks.studio = studio
    return blocks


def launch(blocks, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float | None = None,
           block: bool = True):
    """Serve ``blocks`` on ``host:port``. Uploads above ``max_upload_mb`` (default: twice the Studio's limits,
    which answer moderately large files with their own message) are refused by the server itself.
    ``block=False`` returns at once (tests)."""
    limit = max_upload_mb or 2 * max(blocks.studio.limits.max_photo_mb, blocks.studio.limits.max_audio_mb)
    return blocks.launch(server_name=host, server_port=port, max_file_size=f"{limit:g}mb", ssr_mode=False,
                         prevent_thread_lock=not block, quiet=not block, footer_links=[],
                         allowed_paths=[str(blocks.studio.work_dir)])
