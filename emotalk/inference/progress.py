"""Progress bars for the long inference stages (G_L over a clip, rendering), silent when not wanted."""
from __future__ import annotations


def progress_bar(total: int, progress: bool, desc: str):
    """A tqdm bar over ``total`` frames; off when ``progress`` is False, and (tqdm's ``disable=None``)
    when stderr is not a terminal, so logs and CI output stay clean."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=None if progress else True, leave=False, desc=desc, unit="frame")
