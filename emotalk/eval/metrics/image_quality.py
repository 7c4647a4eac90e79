"""Texture quality: PSNR, SSIM (full-reference) and CPBD (no-reference sharpness).

- :func:`psnr` / :func:`ssim` are scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity``
  on the RGB uint8 frames (``data_range=255``, ``channel_axis=-1``, SSIM averaged over the channels).
  SSIM's window (:attr:`MetricOptions.ssim_window`) is by default Wang et al. 2004's, the paper's citation:
  an 11x11 Gaussian with sigma 1.5 and population (not sample) covariances, i.e. scikit-image with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``; ``uniform7`` is scikit-image's own
  default (7x7 uniform window, sample covariances), which gives different numbers. Identical frames have
  PSNR = inf (as scikit-image); :attr:`MetricOptions.psnr_cap` caps each frame's PSNR.
- :func:`cpbd` is the cumulative probability of blur detection (Narvekar & Karam 2009), equal to the
  ``cpbd-py312`` reference (``cpbd.compute``) -- same Canny / Sobel edges, Marziliano edge widths, 64x64
  blocks and just-noticeable-blur widths -- but with the per-pixel Python loops vectorised (edge widths
  come from run lengths of monotonic intensity along each row), about two orders of magnitude faster.
  Frames are converted to grey with OpenCV's BT.601 weights (``cv2.COLOR_RGB2GRAY``).

The dataset value of each metric is the mean over all frames of all videos.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from emotalk.errors import DataError
from emotalk.eval.metrics.base import MetricOptions, MetricResult, VideoSample, register_metric
from emotalk.eval.sample import per_unique_frame, repeat_sources

# --- CPBD constants (Narvekar & Karam; identical to the reference) ---
_THRESHOLD = 0.002  # fraction of edge pixels that makes a block an edge block
_BETA = 3.6
_BLOCK = 64
_WIDTH_JNB = np.concatenate([5 * np.ones(51), 3 * np.ones(205)])
_MAX_MARGIN = 100  # the reference walks at most 101 pixels to each side of an edge


def psnr(generated: np.ndarray, reference: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(reference, generated, data_range=255))


#: ``metrics.ssim_window`` -> scikit-image ``structural_similarity`` keyword arguments
SSIM_WINDOWS: dict[str, dict] = {
    "gaussian11": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},  # Wang et al. 2004
    "uniform7": {"win_size": 7},  # scikit-image's default
}


def ssim(generated: np.ndarray, reference: np.ndarray, window: str = "gaussian11") -> float:
    """Mean SSIM of two RGB uint8 frames (channels averaged); equal to scikit-image with
    ``SSIM_WINDOWS[window]`` (the Gaussian window is computed by :func:`_ssim_gaussian`)."""
    if window == "gaussian11":
        return _ssim_gaussian(generated, reference)
    from skimage.metrics import structural_similarity

    return float(structural_similarity(reference, generated, channel_axis=-1, data_range=255,
                                       **SSIM_WINDOWS[window]))


def _ssim_gaussian(generated: np.ndarray, reference: np.ndarray, sigma: float = 1.5, truncate: float = 3.5
                   ) -> float:
    """Wang et al. 2004's SSIM exactly as scikit-image computes it with ``gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255`` (same 11-tap kernel, ``reflect`` borders, float64, the
    5-pixel border cropped before the mean; equal to ~1e-15), with OpenCV's separable filter instead of
    scipy's: the evaluation scores every frame, and scipy's Gaussian made SSIM the slowest offline metric."""
    import cv2

    x, y = reference.astype(np.float64), generated.astype(np.float64)
    r = int(truncate * sigma + 0.5)
    if min(x.shape[:2]) < 2 * r + 1:
        raise DataError(f"SSIM needs frames of at least {2 * r + 1}x{2 * r + 1} pixels, got {x.shape[1]}x{x.shape[0]}")
    k = cv2.getGaussianKernel(2 * r + 1, sigma, cv2.CV_64F)

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(a, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s[r:-r, r:-r].mean())


def _octave_sobel(image: np.ndarray) -> np.ndarray:
    """Thinned vertical-edge map of Octave's ``edge(..., 'sobel')`` (as the reference computes it)."""
    from scipy.ndimage import convolve

    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)  # skimage HSOBEL_WEIGHTS
    h1 /= np.sum(np.abs(h1))
    strength = np.square(convolve(image, h1.T))
    thresh = 2 * np.sqrt(np.mean(strength))
    strength[strength <= thresh] = 0
    zc = np.zeros((strength.shape[0], 1))
    zr = np.zeros((1, strength.shape[1]))
    x = (strength > np.c_[zc, strength[:, :-1]]) & (strength > np.c_[strength[:, 1:], zc])
    y = (strength > np.r_[zr, strength[:-1, :]]) & (strength > np.r_[strength[1:, :], zr])
    return x | y


def _run_left(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True ending at each position (row-wise)."""
    n = mask.shape[1]
    idx = np.where(mask, -1, np.arange(n)[None, :])
    last_false = np.maximum.accumulate(idx, axis=1)
    # positions with no False before them: last_false = -1 -> run = j + 1
    return np.arange(n)[None, :] - last_false


def _run_right(mask: np.ndarray) -> np.ndarray:
    """Length of the run of True starting at each position (row-wise)."""
    return _run_left(mask[:, ::-1])[:, ::-1]


def _marziliano_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Edge widths at vertical edges (gradient angle 0 or 180 degrees), 0 elsewhere."""
    h, w = image.shape
    widths = np.zeros(image.shape)
    gy, gx = np.gradient(image)
    with np.errstate(invalid="ignore", divide="ignore"):
        angles = np.where(gx != 0, np.arctan2(gy, gx) * (180 / np.pi), 0.0)
    angles = np.where((gx == 0) & (gy == np.pi / 2), 90.0, angles)  # reproduces the reference's branch
    if not np.any(angles) or w < 3 or h < 3:
        return widths
    q = 45 * np.round(angles / 45)

    d = np.diff(image, axis=1)  # d[:, j] = image[:, j + 1] - image[:, j]
    neg_l, neg_r = _run_left(d < 0), _run_right(d < 0)
    pos_l, pos_r = _run_left(d > 0), _run_right(d > 0)

    rows, cols = np.nonzero(edges[1:h - 1, 1:w - 1])
    rows += 1
    cols += 1
    qa = q[rows, cols]
    cols_l, cols_r = cols - 2, cols + 1  # diff index where the left / right walk starts

    def walk(run_l, run_r):
        left = np.where(cols_l >= 0, run_l[rows, np.maximum(cols_l, 0)], 0)
        right = np.where(cols_r <= w - 2, run_r[rows, np.minimum(cols_r, w - 2)], 0)
        return np.minimum(left, _MAX_MARGIN) + 1 + np.minimum(right, _MAX_MARGIN) + 1

    horiz = (qa == 180) | (qa == -180)
    zero = qa == 0
    widths[rows[horiz], cols[horiz]] = walk(neg_l, neg_r)[horiz]
    widths[rows[zero], cols[zero]] = walk(pos_l, pos_r)[zero]
    return widths


def cpbd(gray: np.ndarray) -> float:
    """CPBD sharpness of a grey uint8 image (higher = sharper); equals ``cpbd.compute(gray)``."""
    from skimage.feature import canny

    image = np.asarray(gray).astype(np.float64)
    if image.ndim != 2:
        raise ValueError(f"cpbd expects a 2-D grey image, got shape {image.shape}")
    canny_edges = canny(image)
    widths = _marziliano_widths(_octave_sobel(image), image)

    h, w = image.shape
    nby, nbx = h // _BLOCK, w // _BLOCK
    counts = np.zeros(101)
    total = 0
    if nby and nbx:
        crop = (slice(0, nby * _BLOCK), slice(0, nbx * _BLOCK))
        blocks = lambda a: a[crop].reshape(nby, _BLOCK, nbx, _BLOCK).swapaxes(1, 2)  # noqa: E731
        edge_blocks = np.count_nonzero(blocks(canny_edges), axis=(2, 3)) > _BLOCK * _BLOCK * _THRESHOLD
        img_b = blocks(image)
        contrast = (img_b.max(axis=(2, 3)) - img_b.min(axis=(2, 3))).astype(int)
        wid_b = blocks(widths)
        for i, j in zip(*np.nonzero(edge_blocks)):
            bw = wid_b[i, j]
            bw = bw[bw != 0]
            if bw.size == 0:
                continue
            jnb = _WIDTH_JNB[contrast[i, j]]
            prob = 1 - np.exp(-abs(bw / jnb) ** _BETA)
            counts += np.bincount(np.round(prob * 100).astype(int), minlength=101)
            total += bw.size
    if total > 0:
        counts = counts / total
    return float(np.sum(counts[:64]))


def to_gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


# --- registered metrics ------------------------------------------------------------------------------

def _paired_mean(samples: Sequence[VideoSample], fn, cap: float | None = None) -> tuple[float, dict]:
    values, per_video = [], {}
    for i, s in enumerate(samples):
        g, t = s.paired_frames()
        # a pair equal to the previous pair is scored once (the static photo against a still stretch)
        v = np.array(per_unique_frame(lambda k: fn(g[k], t[k]), len(g), repeat_sources(g, t)), dtype=np.float64)
        if cap is not None:
            v = np.minimum(v, cap)
        values.append(v)
        per_video[s.name or str(i)] = float(v.mean())
    allv = np.concatenate(values)
    return float(allv.mean()), {"per_video": per_video, "frames": int(allv.size)}


@register_metric("psnr", display="PSNR", needs=("generated", "ground_truth"))
def psnr_metric(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Peak signal-to-noise ratio (dB) of generated vs ground-truth frames (scikit-image)."""
    value, details = _paired_mean(samples, psnr, opts.psnr_cap)
    return MetricResult("PSNR", value, details)


@register_metric("ssim", display="SSIM", needs=("generated", "ground_truth"))
def ssim_metric(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Structural similarity of generated vs ground-truth frames (scikit-image, RGB; window per
    ``metrics.ssim_window``, Wang et al. 2004's by default)."""
    window = opts.ssim_window
    # identical frames (the ground-truth row scores the real video against itself) have SSIM 1 by definition
    value, details = _paired_mean(samples, lambda g, t: 1.0 if np.array_equal(g, t) else ssim(g, t, window))
    return MetricResult("SSIM", value, {**details, "window": window})


@register_metric("cpbd", display="CPBD", needs=("generated",))
def cpbd_metric(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult:
    """Cumulative probability of blur detection of the generated frames (sharpness, no reference)."""
    values, per_video = [], {}
    for i, s in enumerate(samples):
        frames = s.generated  # a frame equal to the previous one is scored once (the static-photo baseline)
        v = np.array(per_unique_frame(lambda k: cpbd(to_gray(frames[k])), len(frames), repeat_sources(frames)))
        values.append(v)
        per_video[s.name or str(i)] = float(v.mean())
    allv = np.concatenate(values)
    return MetricResult("CPBD", float(allv.mean()), {"per_video": per_video, "frames": int(allv.size)})
