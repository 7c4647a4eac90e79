"""mead-mini: an offline, real-photo talking-face dataset in MEAD's raw layout (``emotalk make-mini``).

Modules, in pipeline order:

- :mod:`~emotalk.mini.sentences` — the Harvard sentences (public domain) the subjects speak;
- :mod:`~emotalk.mini.tts` — eSpeak NG (from the ``espeakng-loader`` wheel) -> 16 kHz speech + phone
  timings from the engine's phoneme events;
- :mod:`~emotalk.mini.visemes` — phones -> jaw/width/round/closure/tuck with coarticulation ->
  68-point displacements;
- :mod:`~emotalk.mini.action_units` — emotions as FACS action units scaled by MEAD level;
- :mod:`~emotalk.mini.motion` — composition of the above and spontaneous blinks
  (:mod:`emotalk.data.face.blinks`, shared with inference) into per-frame canonical landmarks;
- :mod:`~emotalk.mini.identity` — photo crop/alignment, several subjects per photo;
- :mod:`~emotalk.mini.plan` — sizes, subjects, voices and clips, decided from the seed;
- :mod:`~emotalk.mini.generator` — executes a plan and writes the files (layout and sidecar format documented there);
  frames are rendered with :mod:`emotalk.data.face.warp` (piecewise-affine warp + drawn mouth
  interior, shared with inference).
"""
from emotalk.mini.generator import SIZES, generate_mini, load_sidecar, plan_dataset

__all__ = ["SIZES", "generate_mini", "load_sidecar", "plan_dataset"]
