"""Landmark backends behind one interface (``detect_faces(image) -> [Face]``, ``fit(image, box) -> Face``):
dlib (:class:`emotalk.data.face.detect.DlibLandmarker`, the default) and the FAN network of the
``face-alignment`` package (Bulat & Tzimiropoulos 2017), chosen by :func:`make_landmarker`.

FAN is used only from a *local* weights file, never downloaded: ``2DFAN4-11f355bf06.pth.tar`` given by
``--face-alignment-weights`` / ``EMOTALK_FACE_ALIGNMENT_WEIGHTS``, or already in torch hub's checkpoint
folder (``~/.cache/torch/hub/checkpoints/``). Face boxes come from dlib's HOG detector, so no second
(S3FD) weights file is needed. The tracker that runs a backend over a clip is
:mod:`emotalk.data.face.track`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from emotalk.data.face.detect import DlibLandmarker, Face
from emotalk.errors import DependencyError, InputError, MissingWeightsError, NoFaceError
from emotalk.utils.weights import load_state_strict

FAN_WEIGHTS_FILE = "2DFAN4-11f355bf06.pth.tar"
FAN_WEIGHTS_ENV = "EMOTALK_FACE_ALIGNMENT_WEIGHTS"


def fan_weights_candidates(weights: str | Path | None = None) -> list[Path]:
    out = []
    if weights:
        p = Path(weights).expanduser()
        out.append(p / FAN_WEIGHTS_FILE if p.is_dir() else p)
        return out
    env = os.environ.get(FAN_WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        out.append(p / FAN_WEIGHTS_FILE if p.is_dir() else p)
    try:
        import torch.hub

        out.append(Path(torch.hub.get_dir()) / "checkpoints" / FAN_WEIGHTS_FILE)
    except Exception:  # pragma: no cover - torch always importable here
        pass
    return out


def find_fan_weights(weights: str | Path | None = None) -> Path:
    """The local FAN weights file, or :class:`MissingWeightsError` naming it and how to supply it."""
    cands = fan_weights_candidates(weights)
    for c in cands:
        if c.is_file():
            return c
    looked = ", ".join(str(c) for c in cands) or "(nowhere)"
    raise MissingWeightsError(
        f"the face_alignment landmark backend needs the FAN weights file {FAN_WEIGHTS_FILE} "
        f"(2D-FAN-4, from https://www.adrianbulat.com/downloads/python-fan/{FAN_WEIGHTS_FILE}), which is "
        f"not downloaded at run time; looked in: {looked}. Copy it there, or pass "
        f"--face-alignment-weights PATH (or set {FAN_WEIGHTS_ENV}=PATH), or use --detector dlib")


class FaceAlignmentLandmarker:
    """FAN 68-point landmarks (``face-alignment`` package) inside dlib HOG face boxes; CPU or CUDA."""

    name = "face_alignment"

    def __init__(self, weights: str | Path | None = None, device: str | None = None, upsample: int = 1,
                 flip_input: bool = True):
        self.flip_input = flip_input
        path = find_fan_weights(weights)
        try:
            import torch
            from face_alignment.models import FAN
            from face_alignment import utils as fa_utils
        except ImportError as e:
            raise DependencyError(f"the face_alignment backend needs the face-alignment package ({e}); "
                                  f"run: pip install face-alignment") from None
        self._torch, self._fa = torch, fa_utils
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:
            raise MissingWeightsError(f"{path}: not a readable FAN weights file ({type(e).__name__}: {e}); "
                                      f"supply {FAN_WEIGHTS_FILE}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        modules = sorted({int(k.split(".")[0][1:]) for k in state if k.startswith("m") and k.split(".")[0][1:].isdigit()})
        net = FAN(len(modules) or 4)
        load_state_strict(net, state, f"{path}: weights do not fit the FAN network", f"supply {FAN_WEIGHTS_FILE}",
                          error=MissingWeightsError)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.net = net.to(self.device).eval()
        self.weights_path = path
        self._dlib = DlibLandmarker(upsample=upsample)

    def detect_boxes(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        return [f.box for f in self._dlib.detect_faces(image)]

    def detect_faces(self, image: np.ndarray) -> list[Face]:
        return [self.fit(image, b) for b in self.detect_boxes(image)]

    def fit(self, image: np.ndarray, box) -> Face:
        torch, U = self._torch, self._fa
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        l, t, r, b = [float(v) for v in box]
        center = np.array([(l + r) / 2.0, (t + b) / 2.0])
        center[1] -= (b - t) * U.CENTER_Y_OFFSET
        scale = ((r - l) + (b - t)) / U.REFERENCE_SCALE
        crop = U.crop(np.ascontiguousarray(img[..., :3], dtype=np.uint8), center, scale)
        inp = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(self.device)
        with torch.no_grad():
            out = self.net(inp)
            if isinstance(out, (list, tuple)):
                out = out[-1]
            if self.flip_input:
                flipped = self.net(U.flip(inp))
                if isinstance(flipped, (list, tuple)):
                    flipped = flipped[-1]
                out = out + U.flip(flipped, is_label=True)
        pts = decode_heatmaps(out[0].float().cpu().numpy(), center, scale)
        return Face((l, t, r, b), pts)

    def largest_face(self, image: np.ndarray) -> Face:
        faces = self.detect_faces(image)
        if not faces:
            raise NoFaceError("no face found in the image; use a frontal photo where the face is clearly visible")
        return max(faces, key=lambda f: f.size)


def decode_heatmaps(hm: np.ndarray, center: np.ndarray, scale: float, reference: float = 200.0) -> np.ndarray:
    """FAN heatmaps ``(68, H, W)`` -> image points ``(68, 2)``: arg-max with face_alignment's quarter-pixel
    refinement towards the higher neighbour, mapped back through the crop's centre/scale (kept sub-pixel;
    plain numpy, so no numba compilation)."""
    n, h, w = hm.shape
    flat = hm.reshape(n, -1).argmax(1)
    py, px = flat // w, flat % w
    x, y = px.astype(np.float64), py.astype(np.float64)
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    i = np.flatnonzero(inner)
    x[i] += 0.25 * np.sign(hm[i, py[i], px[i] + 1] - hm[i, py[i], px[i] - 1])
    y[i] += 0.25 * np.sign(hm[i, py[i] + 1, px[i]] - hm[i, py[i] - 1, px[i]])
    x, y = x + 0.5, y + 0.5  # face_alignment: 1-based peak - 0.5
    size = reference * scale
    return np.stack([x * size / w + center[0] - size / 2, y * size / h + center[1] - size / 2], 1).astype(np.float32)


LANDMARKERS = ("dlib", "face_alignment")


def make_landmarker(name: str = "dlib", weights: str | Path | None = None, device: str | None = None,
                    upsample: int = 1):
    """``dlib`` or ``face_alignment`` (local FAN weights only; see module docstring)."""
    key = name.strip().lower().replace("-", "_")
    if key == "dlib":
        return DlibLandmarker(upsample=upsample)
    if key in ("face_alignment", "fan"):
        return FaceAlignmentLandmarker(weights=weights, device=device, upsample=upsample)
    raise InputError(f"unknown landmark detector {name!r}; choose one of: {', '.join(LANDMARKERS)}")
