"""``emotalk app``: a local web page (Gradio) for photo + speech + emotion -> talking-face video.

=============  ==========================================================================================
``service``    :class:`Studio`, the back end without any web code: models loaded once, one form
               submission -> video + landmark animation, or the CLI's one-line error message
``ui``         :func:`build_app`: the Gradio page around a Studio; :func:`launch` serves it
``landmark_gif`` the landmark animation shown beside the video
=============  ==========================================================================================

Gradio is optional (``pip install -e ".[app]"``); importing this package does not import it.
"""
from emotalk.app.service import AppLimits, Outcome, Studio, example_inputs, timeline_text
from emotalk.app.ui import build_app, launch

__all__ = ["AppLimits", "Outcome", "Studio", "build_app", "example_inputs", "launch", "timeline_text"]
