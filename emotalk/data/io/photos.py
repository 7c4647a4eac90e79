"""Real public-domain face photos that are available offline (no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def public_domain_photos() -> dict[str, np.ndarray]:
    """``{name: RGB uint8 image}``: Eileen Collins (skimage astronaut) and Grace Hopper."""
    import cv2
    from skimage import data

    hopper = cv2.cvtColor(cv2.imread(str(grace_hopper_path())), cv2.COLOR_BGR2RGB)
    return {"astronaut": np.ascontiguousarray(data.astronaut()), "grace_hopper": hopper}
