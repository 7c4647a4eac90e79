"""mead-mini: an offline, real-photo talking-face dataset in MEAD's raw layout (``emotalk make-mini``).

Modules, in pipeline order:

- :mod:`~emotalk.mini.sentences` — the Harvard sentences (public domain) the subjects speak;
- :mod:`~emotalk.mini.tts` — eSpeak NG (from the ``espeakng-loader`` wheel) -> 16 kHz speech + phone
  timings from the engine's phoneme events;
- :mod:`~emotalk.mini.visemes` — phones -> jaw/width/round/closure/tuck with coarticulation ->
  68-point displacements;
- :mod:`~emotalk.mini.action_units` — emotions as FACS action units scaled by MEAD level;
- :mod:`~emotalk.mini.blinks` — spontaneous blinks;
- :mod:`~emotalk.mini.motion` — composition of the above into per-frame canonical landmarks;
- :mod:`~emotalk.mini.identity` — photo crop/alignment, several subjects per photo;
- :mod:`~emotalk.mini.render` — piecewise-affine warp + drawn mouth interior;
- :mod:`~emotalk.mini.generator` — sizes, plan, files (layout and sidecar format documented there).
"""
__all__ = ["SIZES", "generate_mini", "load_sidecar", "plan_dataset"]


def __getattr__(name: str):
    # lazy: importing a submodule (e.g. tts) does not pull in the whole generator
    if name in __all__:
        from emotalk.mini import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
