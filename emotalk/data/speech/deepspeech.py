"""DeepSpeech 0.1.0 character logits in PyTorch, from the user's frozen graph, with the field's input recipe.

The paper's G_L reads DeepSpeech features. The standard recipe (VOCA's ``audio_handler``, AD-NeRF's and
osmr's ``deepspeech_features``, and the many projects copying them) runs ``deepspeech-0_1_0-b90017e8.pb``
with TensorFlow 1.x. This module runs the same network in torch, with the weights read from that file by
:mod:`emotalk.data.speech.deepspeech_graph`, and produces the same ``(T, 16, 29)`` arrays that
:func:`emotalk.data.speech.features.load_deepspeech_file` imports, so computed and imported features meet
in :func:`emotalk.data.speech.features.deepspeech_stream`.

Input pipeline (each step as in the recipe):

1. audio -> mono, 16 kHz, int16 sample values (the recipe feeds ``resampled.astype(np.int16)``);
2. 26 MFCCs with python_speech_features' conventions (25 ms frames every 10 ms, pre-emphasis 0.97,
   rectangular window, 512-point FFT power spectrum / 512, 26 triangular mel filters 0-8000 Hz with
   floor-rounded FFT bins, log, orthonormal DCT-II, sinusoidal lifter 22, c0 replaced by the log frame
   energy; the last frame zero-padded) - :func:`mfcc`;
3. every second frame (DeepSpeech's stride 2 -> one step per 20 ms = 50 Hz);
4. 9 frames of context on each side, zero frames at the ends -> 19 * 26 = 494 inputs per step;
5. normalisation by the mean and standard deviation of the whole (steps x 494) matrix (global, per clip);
6. the network (below) -> 29 logits per step at 50 Hz;
7. linear interpolation of the logits to the window step rate, zero padding of 8 steps at each end,
   16-step windows -> ``(T, 16, 29)`` (:func:`logits_to_windows`; AD-NeRF layout: 50 Hz steps, stride 2,
   one window per 40 ms).

Network (``BiRNN`` of DeepSpeech 0.1.0): three dense layers with ReLU clipped at 20
(``min(relu(x W + b), 20)``), a bidirectional LSTM (``BasicLSTMCell``, gate order i, j, f, o in the
stored kernel, forget-gate bias 1.0 added at run time - it is not in the stored bias), a fourth clipped
dense layer on the concatenated directions and a linear output layer. Sequence lengths follow
``bidirectional_dynamic_rnn(sequence_length=...)``: the backward direction starts at each clip's own end.

Differences from the recipe (numerical, documented): resampling uses soxr HQ (librosa's default) where
the recipe uses resampy's ``kaiser_best`` (only clips not already at 16 kHz are affected; both are
band-limited sinc resamplers); stereo is averaged where AD-NeRF takes the first channel; samples beyond
the int16 range are clipped where ``astype(np.int16)`` wraps around. Float arithmetic is float32 in torch
(TensorFlow: float32), MFCCs in float64 as in numpy.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalk.data.speech.deepspeech_graph import (LENGTHS_NODE, INPUT_NODE, OFFICIAL_NAME, OFFICIAL_SHA1,
                                                  DeepSpeechGraph, read_graph, weight_listing)
from emotalk.errors import DataError, InputError
from emotalk.utils.device import select_device

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_CEP, N_CONTEXT = 26, 9
N_INPUT = N_CEP * (2 * N_CONTEXT + 1)  # 494
STEP_RATE = 50.0  # logits per second (10 ms MFCC hop, every second frame)
RELU_CLIP = 20.0
FORGET_BIAS = 1.0
N_CLASSES = 29  # 28 characters + CTC blank
WINDOW = 16


# ==================================================================================================
# input pipeline
# ==================================================================================================
def pcm16_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mono 16 kHz audio as int16 sample values in float64 (step 1). Float input is taken as [-1, 1]."""
    a = np.asarray(audio)
    if a.ndim == 2:
        a = a.mean(axis=1 if a.shape[1] <= 8 else 0)
    if a.ndim != 1:
        raise InputError(f"audio must be mono (N,) or (N, channels), got shape {np.shape(audio)}")
    x = a.astype(np.float64) if a.dtype == np.int16 else a.astype(np.float64) * 32768.0
    if sr != SAMPLE_RATE:
        import soxr  # librosa's default resampler ("soxr_hq"), called directly: librosa's wrapper warms up slowly

        x = soxr.resample(x, sr, SAMPLE_RATE, quality="HQ")
    return np.clip(np.trunc(x), -32768, 32767)


def _mel_filters(nfilt: int = 26, nfft: int = 512, sr: int = SAMPLE_RATE) -> np.ndarray:
    hz2mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    mel2hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    mels = np.linspace(hz2mel(0.0), hz2mel(sr / 2.0), nfilt + 2)
    bins = np.floor((nfft + 1) * mel2hz(mels) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    k = np.arange(nfft // 2 + 1)
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        up = (k >= lo) & (k < mid)
        down = (k >= mid) & (k < hi)
        fb[j, up] = (k[up] - lo) / (mid - lo)
        fb[j, down] = (hi - k[down]) / (hi - mid)
    return fb


def mfcc(signal: np.ndarray, sr: int = SAMPLE_RATE, numcep: int = N_CEP) -> np.ndarray:
    """python_speech_features ``mfcc(signal, sr, numcep=numcep)`` with its defaults (step 2), (F, numcep)."""
    from scipy.fft import dct

    sig = np.asarray(signal, np.float64)
    sig = np.append(sig[:1], sig[1:] - 0.97 * sig[:-1])
    flen, fstep, nfft = int(round(0.025 * sr)), int(round(0.01 * sr)), 512
    n = 1 if len(sig) <= flen else 1 + int(math.ceil((len(sig) - flen) / fstep))
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    frames = sig[np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(float).eps
    energy = pspec.sum(1)
    energy = np.where(energy == 0, eps, energy)
    feat = pspec @ _mel_filters(26, nfft, sr).T
    feat = np.where(feat == 0, eps, feat)
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep *= 1.0 + 11.0 * np.sin(np.pi * np.arange(numcep) / 22.0)
    cep[:, 0] = np.log(energy)
    return cep


def input_vectors(pcm16: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Steps 2-5: (N, 494) float32 network input for 16 kHz int16-valued samples."""
    feats = mfcc(pcm16, sr)[::2]
    n = len(feats)
    padded = np.concatenate([np.zeros((N_CONTEXT, N_CEP)), feats, np.zeros((N_CONTEXT, N_CEP))])
    idx = np.arange(n)[:, None] + np.arange(2 * N_CONTEXT + 1)[None, :]
    x = padded[idx].reshape(n, N_INPUT)
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32)


def logits_to_windows(logits: np.ndarray, duration_s: float, step_fps: float = STEP_RATE,
                      group_fps: float = 25.0, window: int = WINDOW) -> np.ndarray:
    """Step 7: 50 Hz logits (N, 29) -> ``(G, window, 29)``. The stream is interpolated linearly to
    ``round(duration_s * step_fps)`` steps at ``step_fps`` (sample ``i`` at ``i / rate`` s, held after the
    last logit), padded with ``window // 2`` zero steps at each end and cut into windows every
    ``step_fps / group_fps`` steps (AD-NeRF: 50 Hz steps, stride 2, 25 windows per second)."""
    stride = step_fps / group_fps
    if abs(stride - round(stride)) > 1e-6 or round(stride) < 1:
        raise InputError(f"DeepSpeech windows: step rate {step_fps} / window rate {group_fps} must be a whole "
                         f"number >= 1")
    logits = np.asarray(logits, np.float64)
    n = max(1, int(round(duration_s * step_fps)))
    t_in = np.arange(len(logits)) / STEP_RATE
    t_out = np.arange(n) / float(step_fps)
    stream = np.stack([np.interp(t_out, t_in, logits[:, j]) for j in range(logits.shape[1])], 1)
    half = window // 2
    stream = np.concatenate([np.zeros((half, stream.shape[1])), stream, np.zeros((half, stream.shape[1]))])
    starts = np.arange(0, len(stream) - window, int(round(stride)))
    return stream[starts[:, None] + np.arange(window)[None, :]].astype(np.float32)


# ==================================================================================================
# the network
# ==================================================================================================
@dataclass
class DeepSpeechWeights:
    """Weights as stored in the graph (TensorFlow layout: dense ``x @ h + b``, LSTM kernel (in + H, 4H))."""

    dense: dict[str, tuple[np.ndarray, np.ndarray]]  # "1","2","3","5","6" -> (h, b)
    lstm: dict[str, tuple[np.ndarray, np.ndarray]]  # "fw","bw" -> (kernel, bias)

    @property
    def n_cell(self) -> int:
        return self.lstm["fw"][0].shape[1] // 4

    @property
    def sizes(self) -> dict[str, int]:
        return {"n_input": self.dense["1"][0].shape[0], "n_hidden_1": self.dense["1"][0].shape[1],
                "n_hidden_2": self.dense["2"][0].shape[1], "n_hidden_3": self.dense["3"][0].shape[1],
                "n_cell_dim": self.n_cell, "n_hidden_5": self.dense["5"][0].shape[1],
                "n_classes": self.dense["6"][0].shape[1]}


def check_graph(g: DeepSpeechGraph) -> dict:
    """Find the weight tensors and check their shapes against DeepSpeech 0.1.0 (without decoding them);
    every problem is reported at once, with the tensors that were found. Returns key -> ConstTensor."""
    found = {k: g.find(k) for k in ("h1", "b1", "h2", "b2", "h3", "b3", "fw_kernel", "fw_bias",
                                     "bw_kernel", "bw_bias", "h5", "b5", "h6", "b6")}
    problems = [f"missing {k}" for k, c in found.items() if c is None]
    if not problems:
        s = {k: c.shape for k, c in found.items()}
        n1 = s["h1"][1] if len(s["h1"]) == 2 else -1
        n2 = s["h2"][1] if len(s["h2"]) == 2 else -1
        n3 = s["h3"][1] if len(s["h3"]) == 2 else -1
        nc = s["fw_kernel"][1] // 4 if len(s["fw_kernel"]) == 2 else -1
        n5 = s["h5"][1] if len(s["h5"]) == 2 else -1
        expected = {"h1": (N_INPUT, n1), "b1": (n1,), "h2": (n1, n2), "b2": (n2,), "h3": (n2, n3), "b3": (n3,),
                    "fw_kernel": (n3 + nc, 4 * nc), "fw_bias": (4 * nc,), "bw_kernel": (n3 + nc, 4 * nc),
                    "bw_bias": (4 * nc,), "h5": (2 * nc, n5), "b5": (n5,), "h6": (n5, N_CLASSES),
                    "b6": (N_CLASSES,)}
        problems = [f"{found[k].name} has shape {s[k]}, expected {e}" for k, e in expected.items() if s[k] != e]
        if nc > 0 and n3 != 2 * nc:
            log.warning("DeepSpeech graph %s: layer 3 width %d is not 2 x the LSTM size %d as in 0.1.0 "
                        "(computing anyway)", g.path, n3, nc)
    if problems:
        raise DataError(f"{g.path} does not look like a DeepSpeech 0.1.0 graph ({OFFICIAL_NAME}): "
                        f"{'; '.join(problems)}. Found weight tensors: {weight_listing(g)}. Run "
                        f"`emotalk deepspeech-info {g.path}` for the full listing")
    if INPUT_NODE not in g.placeholders or LENGTHS_NODE not in g.placeholders:
        log.warning("DeepSpeech graph %s has no %r/%r placeholders (found %s); using its weights anyway",
                    g.path, INPUT_NODE, LENGTHS_NODE, sorted(g.placeholders) or "none")
    return found


def check_model_file(path: str | Path) -> dict[str, int]:
    """Parse and check a frozen graph without building the network (fail early, e.g. before a dataset
    run; logs whether the file is the published one); returns the layer sizes."""
    g = read_graph(path)
    found = check_graph(g)
    _log_sha1(g)
    return {"n_input": found["h1"].shape[0], "n_hidden": found["h1"].shape[1],
            "n_cell_dim": found["fw_kernel"].shape[1] // 4, "n_classes": found["h6"].shape[1]}


def _log_sha1(g: DeepSpeechGraph) -> None:
    digest = g.sha1()
    same = "matches" if digest == OFFICIAL_SHA1 else "differs from"
    log.info("%s: sha1 %s (%s the published %s)", g.path, digest, same, OFFICIAL_NAME)


def weights_from_graph(g: DeepSpeechGraph) -> DeepSpeechWeights:
    """:func:`check_graph`, then decode the weights."""
    found = check_graph(g)
    arr = {k: c.array() for k, c in found.items()}
    bad = [found[k].name for k, a in arr.items() if not np.isfinite(a).all()]
    if bad:
        raise DataError(f"{g.path}: weight tensors {bad} contain NaN or infinite values; the file is damaged")
    return DeepSpeechWeights(dense={i: (arr[f"h{i}"], arr[f"b{i}"]) for i in "12356"},
                             lstm={d: (arr[f"{d}_kernel"], arr[f"{d}_bias"]) for d in ("fw", "bw")})


class DeepSpeechExtractor:
    """The frozen graph's network in torch; ``__call__``-free API: :meth:`logits`, :meth:`logits_batch`,
    :meth:`windows`. Load once and reuse: the released model holds ~120 M weights."""

    def __init__(self, weights: DeepSpeechWeights, device="cpu", forget_bias: float = FORGET_BIAS,
                 relu_clip: float = RELU_CLIP, source: str | Path | None = None):
        import torch

        self.device = torch.device(device)
        self.source, self.sizes = source, weights.sizes
        self.relu_clip = float(relu_clip)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)  # noqa: E731
        self.dense = {k: (t(h), t(b)) for k, (h, b) in weights.dense.items()}
        nc, n3 = weights.n_cell, weights.dense["3"][0].shape[1]
        # built on the meta device and filled below: no random initialisation of 100 M weights
        self.lstm = torch.nn.LSTM(n3, nc, batch_first=True, bidirectional=True, device="meta")
        self.lstm = self.lstm.to_empty(device=self.device).eval()
        order = [0, 2, 1, 3]  # TF blocks (i, j, f, o) -> torch rows (i, f, g=j, o)
        with torch.no_grad():
            for d, suffix in (("fw", ""), ("bw", "_reverse")):
                kernel, bias = weights.lstm[d]
                k = kernel.reshape(n3 + nc, 4, nc)[:, order].reshape(n3 + nc, 4 * nc)
                b = bias.reshape(4, nc)[order].copy()
                b[1] += forget_bias  # BasicLSTMCell adds forget_bias to f at run time
                getattr(self.lstm, f"weight_ih_l0{suffix}").copy_(t(k[:n3].T))
                getattr(self.lstm, f"weight_hh_l0{suffix}").copy_(t(k[n3:].T))
                getattr(self.lstm, f"bias_ih_l0{suffix}").copy_(t(b.reshape(-1)))
                getattr(self.lstm, f"bias_hh_l0{suffix}").zero_()
        self.lstm.flatten_parameters()

    @classmethod
    def from_file(cls, path: str | Path, device="cpu", check_sha1: bool = False, **kw) -> "DeepSpeechExtractor":
        g = read_graph(path)
        if check_sha1:
            _log_sha1(g)
        ext = cls(weights_from_graph(g), device=device, source=path, **kw)
        log.info("DeepSpeech graph %s loaded on %s: %s", path, ext.device, ext.sizes)
        return ext

    def _dense(self, x, k: str, clip: bool = True):
        import torch

        h, b = self.dense[k]
        y = torch.addmm(b, x.reshape(-1, x.shape[-1]), h).reshape(*x.shape[:-1], h.shape[1])
        return y.clamp(0.0, self.relu_clip) if clip else y

    def forward(self, x, lengths):
        """x (B, N, 494) float tensor, lengths (B,) -> logits (B, N, 29); steps past a length are garbage."""
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        h = self._dense(self._dense(self._dense(x, "1"), "2"), "3")
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            if h.shape[0] == 1:
                out, _ = self.lstm(h[:, : int(lengths[0])])
            else:
                packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
                out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=h.shape[1])
        return self._dense(self._dense(out, "5"), "6", clip=False)

    def logits_batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Network on several clips at once: list of (N_i, 494) -> list of (N_i, 29) float32."""
        import torch

        if not inputs:
            return []
        lengths = [len(a) for a in inputs]
        if min(lengths) < 1:
            raise InputError("DeepSpeech: a clip is too short to give one 20 ms step")
        x = np.zeros((len(inputs), max(lengths), N_INPUT), np.float32)
        for i, a in enumerate(inputs):
            x[i, : len(a)] = a
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would cost ~1e-3 relative error
        try:
            with torch.inference_mode():
                y = self.forward(torch.from_numpy(x).to(self.device), torch.tensor(lengths))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        y = y.float().cpu().numpy()
        return [y[i, :n] for i, n in enumerate(lengths)]

    def logits(self, audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
        """(N, 29) logits at 50 Hz for mono audio (float in [-1, 1] or int16) at ``sr``."""
        return self.logits_batch([input_vectors(pcm16_16k(audio, sr))])[0]

    def windows(self, audio: np.ndarray, sr: int = SAMPLE_RATE, group_fps: float = 25.0,
                step_fps: float = STEP_RATE, window: int = WINDOW) -> np.ndarray:
        """The ``.npy`` the recipe writes: ``(G, 16, 29)`` (defaults: AD-NeRF's layout, see module doc)."""
        n = len(audio)
        if n == 0:
            raise DataError("DeepSpeech: the audio is empty")
        return logits_to_windows(self.logits(audio, sr), n / float(sr), step_fps, group_fps, window)

    def windows_batch(self, clips: list[tuple[np.ndarray, int]], group_fps: float = 25.0,
                      step_fps: float = STEP_RATE, window: int = WINDOW) -> list[np.ndarray]:
        """:meth:`windows` for several ``(audio, sr)`` clips in one batched network call."""
        logits = self.logits_batch([input_vectors(pcm16_16k(a, sr)) for a, sr in clips])
        return [logits_to_windows(lg, len(a) / float(sr), step_fps, group_fps, window)
                for lg, (a, sr) in zip(logits, clips)]


def is_model_file(source) -> bool:
    """True when a feature ``source`` names a frozen DeepSpeech graph (to run) rather than features."""
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() == ".pb"


@functools.lru_cache(maxsize=2)
def _cached_extractor(path: str, device: str) -> DeepSpeechExtractor:
    return DeepSpeechExtractor.from_file(path, device=select_device(device))


def load_extractor(path: str | Path, device: str = "auto") -> DeepSpeechExtractor:
    """The extractor for ``path`` on ``device`` ("auto": CUDA when available), loaded once per process
    (the released graph is 490 MB; preprocessing workers and inference reuse it)."""
    return _cached_extractor(str(Path(path).expanduser().resolve()), str(device))
