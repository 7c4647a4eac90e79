"""Speech content features, one window per video frame: ``(T, W, D)`` aligned to ``T`` frames at ``fps``.

Backends (registry :data:`FEATURE_BACKENDS`, ``get_feature_backend(kind)``, ``extract_features(kind, ...)``):

``deepspeech`` (D = 29)
    Imports DeepSpeech character logits that researchers already have, as written by the common
    DeepSpeech-0.1.0 extractors (VOCA's ``audio_handler``, AD-NeRF / ER-NeRF
    ``data_util/deepspeech_features``, files usually ``*.npy`` or ``*.ds.npy``): the network gives 29
    logits every 20 ms (50 Hz); the extractor cuts that stream into 16-step windows with stride 2 after
    zero-padding 8 steps on each side, i.e. an array ``(T25, 16, 29)`` with one window per 40 ms (25 fps),
    window ``i`` covering 50 Hz steps ``2i-8 .. 2i+7``. We rebuild the 50 Hz stream exactly
    (``stream[j] = windows[j // 2, 8 + j % 2]``), resample it linearly to the video rate (the
    extractors' ``interpolate_features``: sample ``j`` at ``j / 50`` s, frame ``t`` at ``t / fps`` s) and
    cut ``W``-frame windows (paper: W = 6) centred on each frame, zero-padded at the ends like the
    extractors. A plain 50 Hz logit stream ``(N, 29)`` is accepted too, and other layouts through
    ``group_fps`` / ``step_fps``. Features are found per clip with ``--deepspeech-dir``, or computed
    from the audio when the ``source`` is the frozen graph ``deepspeech-0_1_0-b90017e8.pb`` itself
    (``--deepspeech-model``): :mod:`emotalk.data.speech.deepspeech` runs it in torch and returns the same
    ``(T25, 16, 29)`` array, which then takes the very path of an imported file.

``phonemes`` (D = 40)
    Offline phone recognition with pocketsphinx (CMU's en-us acoustic model and the phone language
    model ``en-us-phone.lm.bin`` shipped with the ``pocketsphinx`` package): per 10 ms frame a one-hot
    over the 39 ARPAbet phones + ``SIL`` (fillers such as ``+NSN+`` count as ``SIL``). Windows of ``W``
    (default 20 = 200 ms) 10-ms frames centred on each video frame, padded with ``SIL``. Like DeepSpeech's
    character logits this is emotion-independent speech content.

``mel`` (D = 80)
    Log-mel spectrogram (librosa; 25 ms window, 10 ms hop, 80 bands, 55-7600 Hz), windows of ``W``
    (default 20) frames centred on each video frame, padded with the log floor (silence).

Timing convention everywhere: video frame ``t`` is at ``t / fps`` seconds; a stream sample ``i`` at rate
``r`` is at ``i / r`` seconds; the window of frame ``t`` holds samples ``c - W//2 .. c - W//2 + W - 1``
with ``c = round(t * r / fps)`` (for ``deepspeech``, ``r = fps`` after resampling).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalk.data.speech.deepspeech import is_model_file, load_extractor
from emotalk.errors import DataError, DependencyError, InputError, MissingWeightsError

SAMPLE_RATE = 16000

#: The 39 ARPAbet phones of CMU's en-us model, then silence (feature index = position here).
ARPABET: tuple[str, ...] = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F",
                            "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S",
                            "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH")
PHONES: tuple[str, ...] = ARPABET + ("SIL",)
SIL_INDEX = len(ARPABET)


@dataclass(frozen=True)
class FeatureInfo:
    kind: str
    dim: int  # D
    window: int  # W
    rate: float  # rate of the window's steps in Hz (the video fps for deepspeech)


# ==================================================================================================
# windowing
# ==================================================================================================
def frame_windows(stream: np.ndarray, rate: float, num_frames: int, fps: float, window: int,
                  pad: np.ndarray | float = 0.0, *, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Cut ``stream`` (N, D) sampled at ``rate`` Hz into per-frame windows ``(stop - start, window, D)``
    for video frames ``start .. stop - 1`` (default: all ``num_frames``), one window centred on each
    frame (see the module docstring); outside the stream the ``pad`` vector is used.

    This is the ONE windowing rule of emotalk: preprocessing / the datasets call it through
    :meth:`FeatureBackend.windows`, inference calls it batch by batch (``start`` / ``stop``) on a stream
    it computed once, so training and inference cannot drift apart. The stream is never copied whole
    (a batch costs only its own windows), which keeps batch-by-batch use cheap on long audio."""
    stream = np.asarray(stream, dtype=np.float32)
    if stream.ndim != 2:
        raise ValueError(f"stream must be (N, D), got {stream.shape}")
    if num_frames < 1:
        raise DataError("cannot compute features for a clip with no video frames")
    if window < 1:
        raise InputError(f"feature window must be >= 1, got {window}")
    stop = num_frames if stop is None else int(stop)
    if not 0 <= start <= stop:
        raise ValueError(f"frame range {start}..{stop} is not a valid range")
    n, d = stream.shape
    padv = np.broadcast_to(np.asarray(pad, dtype=np.float32), (d,))
    centres = np.rint(np.arange(start, stop) * (rate / fps)).astype(np.int64)
    idx = centres[:, None] - window // 2 + np.arange(window)[None, :]
    if n == 0:
        return np.array(np.broadcast_to(padv, idx.shape + (d,)))
    out = stream[np.clip(idx, 0, n - 1)]
    out[(idx < 0) | (idx >= n)] = padv
    return out


def resample_stream(stream: np.ndarray, in_rate: float, out_rate: float, out_len: int) -> np.ndarray:
    """Linear interpolation of ``stream`` (N, D) from ``in_rate`` to ``out_len`` samples at ``out_rate``
    (sample ``i`` at ``i / rate`` s; held constant beyond the last input sample)."""
    stream = np.asarray(stream, dtype=np.float64)
    if len(stream) == 0:
        return np.zeros((out_len, stream.shape[1]), np.float32)
    t_in = np.arange(len(stream)) / float(in_rate)
    t_out = np.arange(out_len) / float(out_rate)
    out = np.empty((out_len, stream.shape[1]))
    for j in range(stream.shape[1]):
        out[:, j] = np.interp(t_out, t_in, stream[:, j])
    return out.astype(np.float32)


def num_video_frames(num_samples: int, sr: int, fps: float) -> int:
    return max(1, int(round(num_samples / float(sr) * fps)))


def _mono16k(audio: np.ndarray, sr: int) -> np.ndarray:
    a = np.asarray(audio)
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1 if a.shape[1] <= 8 else 0)
    if sr != SAMPLE_RATE:
        import librosa

        a = librosa.resample(a, orig_sr=sr, target_sr=SAMPLE_RATE).astype(np.float32)
    return a


# ==================================================================================================
# backends
# ==================================================================================================
class FeatureBackend:
    """Base class. Subclasses implement :meth:`stream` and set ``kind``, ``dim``, ``default_window``."""

    kind = ""
    dim = 0
    default_window = 1
    rate = 100.0  # Hz of the stream's steps
    video_rate = False  # True: the stream is resampled to the video rate before windowing

    def stream(self, audio: np.ndarray | None, sr: int = SAMPLE_RATE, source=None) -> tuple[np.ndarray, float]:
        """``(stream (N, D) float32, rate Hz)``."""
        raise NotImplementedError

    def pad_vector(self) -> np.ndarray:
        return np.zeros(self.dim, np.float32)

    def info(self, window: int | None = None, fps: float = 30.0) -> FeatureInfo:
        w = int(window or self.default_window)
        return FeatureInfo(self.kind, self.dim, w, float(fps) if self.video_rate else float(self.rate))

    def windows(self, audio: np.ndarray | None, sr: int = SAMPLE_RATE, num_frames: int | None = None,
                fps: float = 30.0, window: int | None = None, source=None) -> np.ndarray:
        """``(T, W, D)`` float32 with ``T = num_frames`` (default: the audio's duration at ``fps``)."""
        w = int(window or self.default_window)
        stream, rate = self.stream(audio, sr, source=source)
        if num_frames is None:
            if audio is not None:
                num_frames = num_video_frames(len(audio), sr, fps)
            else:
                num_frames = num_video_frames(len(stream), int(round(rate)), fps)
        if self.video_rate:
            stream = resample_stream(stream, rate, fps, num_frames)
            rate = fps
        out = frame_windows(stream, rate, num_frames, fps, w, self.pad_vector())
        if not np.isfinite(out).all():
            raise DataError(f"{self.kind} features contain NaN or infinite values")
        return out


FEATURE_BACKENDS: dict[str, type[FeatureBackend]] = {}


def register_backend(cls: type[FeatureBackend]) -> type[FeatureBackend]:
    FEATURE_BACKENDS[cls.kind] = cls
    return cls


def get_feature_backend(kind: str, **options) -> FeatureBackend:
    key = kind.strip().lower()
    if key not in FEATURE_BACKENDS:
        raise InputError(f"unknown feature kind {kind!r}; choose one of: {', '.join(FEATURE_BACKENDS)}")
    return FEATURE_BACKENDS[key](**options)


def feature_info(kind: str, window: int | None = None, fps: float = 30.0) -> FeatureInfo:
    """D, W and the step rate of a backend without computing anything."""
    cls = FEATURE_BACKENDS.get(kind.strip().lower())
    if cls is None:
        raise InputError(f"unknown feature kind {kind!r}; choose one of: {', '.join(FEATURE_BACKENDS)}")
    w = int(window or cls.default_window)
    return FeatureInfo(cls.kind, cls.dim, w, float(fps) if cls.video_rate else float(cls.rate))


def extract_features(kind: str, audio: np.ndarray | None = None, sr: int = SAMPLE_RATE,
                     num_frames: int | None = None, fps: float = 30.0, window: int | None = None,
                     source=None, **options) -> np.ndarray:
    """One call for inference and preprocessing: ``(T, W, D)`` features of ``kind`` for ``audio``
    (float mono at ``sr``). ``deepspeech`` takes its precomputed file or array as ``source``."""
    return get_feature_backend(kind, **options).windows(audio, sr, num_frames, fps, window, source=source)


# --------------------------------------------------------------------------------------------------
# deepspeech (imported files)
# --------------------------------------------------------------------------------------------------
DEEPSPEECH_HINT = ("pass the frozen DeepSpeech 0.1.0 graph with --deepspeech-model deepspeech-0_1_0-b90017e8.pb "
                   "(computed here in torch), or a folder of (T25, 16, 29) .npy files made by a DeepSpeech-0.1.0 "
                   "extractor (e.g. AD-NeRF's data_util/deepspeech_features) with --deepspeech-dir, or use "
                   "--features phonemes (offline)")


def load_deepspeech_file(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DeepSpeech feature file not found. {DEEPSPEECH_HINT}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = "ds" if "ds" in z.files else z.files[0]
                arr = z[key]
        else:
            arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable DeepSpeech feature file ({type(e).__name__}: {e})") from None
    return np.asarray(arr, dtype=np.float32)


def deepspeech_stream(arr: np.ndarray, group_fps: float = 25.0, step_fps: float = 50.0) -> np.ndarray:
    """Rebuild the per-step logit stream (at ``step_fps``) from extractor windows ``(G, W, 29)`` taken
    every ``step_fps / group_fps`` steps with W/2 steps of zero padding in front (see module docstring);
    a 2-D ``(N, 29)`` array is already a stream."""
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        stream = a
    elif a.ndim == 3:
        g, w, _ = a.shape
        stride = int(round(step_fps / group_fps))
        if stride < 1 or stride > w or abs(stride - step_fps / group_fps) > 1e-6:
            raise DataError(f"DeepSpeech windows: step rate {step_fps} / group rate {group_fps} must be a "
                            f"whole stride between 1 and the window length {w}")
        j = np.arange(g * stride)
        stream = a[j // stride, w // 2 + j % stride]
    else:
        raise DataError(f"DeepSpeech features must be (T, 16, 29) windows or an (N, 29) stream, got {a.shape}")
    if stream.shape[-1] != 29:
        raise DataError(f"DeepSpeech features must have 29 logits per step, got {stream.shape[-1]}")
    return stream


@register_backend
class DeepSpeechFeatures(FeatureBackend):
    kind = "deepspeech"
    dim = 29
    default_window = 6  # paper: W = 6 video frames
    rate = 50.0
    video_rate = True

    def __init__(self, group_fps: float = 25.0, step_fps: float = 50.0, device: str = "auto"):
        self.group_fps, self.step_fps = float(group_fps), float(step_fps)
        self.rate = self.step_fps
        self.device = device  # where a frozen graph given as ``source`` runs

    def stream(self, audio=None, sr: int = SAMPLE_RATE, source=None):
        if is_model_file(source):  # the frozen graph: compute the extractor's windows from the audio
            if audio is None:
                raise InputError(f"computing DeepSpeech features with {source} needs the audio samples")
            source = load_extractor(source, self.device).windows(audio, sr, group_fps=self.group_fps,
                                                                 step_fps=self.step_fps)
        if source is None:
            raise MissingWeightsError(f"the deepspeech feature backend needs a precomputed feature file for "
                                      f"this audio. {DEEPSPEECH_HINT}")
        arr = load_deepspeech_file(source) if isinstance(source, (str, Path)) else np.asarray(source)
        return deepspeech_stream(arr, self.group_fps, self.step_fps), self.step_fps


DEEPSPEECH_SUFFIXES = (".npy", ".ds.npy", "_ds.npy", ".npz")


def find_deepspeech_file(ds_dir: str | Path, subject: str, clip_id: str,
                         rel_audio: str | Path | None = None) -> Path:
    """Locate a clip's DeepSpeech file under ``ds_dir``: ``<subject>/<clip_id>{.npy,.ds.npy,...}``,
    ``<clip_id>...``, ``<subject>_<clip_id>...``, or the raw audio's relative path with the suffix
    replaced (``M003/audio/angry/level_1/001.npy``)."""
    d = Path(ds_dir)
    stems = [d / subject / clip_id, d / clip_id, d / f"{subject}_{clip_id}"]
    if rel_audio is not None:
        rel = Path(rel_audio)
        stems += [d / rel.with_suffix(""), d / subject / rel.with_suffix("")]
    tried = []
    for s in stems:
        for suf in DEEPSPEECH_SUFFIXES:
            p = s.parent / (s.name + suf)
            tried.append(p)
            if p.is_file():
                return p
    raise DataError(f"no DeepSpeech features for {subject}/{clip_id} in {d} (looked for "
                    f"{subject}/{clip_id}.npy, {clip_id}.npy and {len(tried) - 2} other names). {DEEPSPEECH_HINT}")


# --------------------------------------------------------------------------------------------------
# phonemes (pocketsphinx)
# --------------------------------------------------------------------------------------------------
def _phone_decoder(lw: float, beam: float, pbeam: float):
    """A fresh decoder per utterance (~20 ms): a cached one carries its live cepstral-mean estimate from one
    clip into the next, so the same audio decoded after different clips gave different phones (97 % equal),
    and preprocessing with several workers depended on clip order."""
    try:
        import pocketsphinx as ps
    except ImportError:
        raise DependencyError("pocketsphinx is not installed; run: pip install pocketsphinx") from None
    model = Path(ps.get_model_path()) / "en-us"
    hmm, phone_lm = model / "en-us", model / "en-us-phone.lm.bin"
    for p in (hmm, phone_lm):
        if not p.exists():
            raise DependencyError(f"pocketsphinx's en-us model is incomplete ({p} missing); reinstall with: "
                                  f"pip install --force-reinstall pocketsphinx")
    try:
        ps.set_loglevel("FATAL")
    except Exception:  # pragma: no cover
        pass
    cfg = ps.Config(hmm=str(hmm), allphone=str(phone_lm), lm=None, dict=None, lw=lw, beam=beam,
                    pbeam=pbeam, backtrace=False, samprate=SAMPLE_RATE)
    return ps.Decoder(cfg)


def phone_segments(audio: np.ndarray, sr: int = SAMPLE_RATE, lw: float = 2.0, beam: float = 1e-20,
                   pbeam: float = 1e-20, dither: float = 1e-3) -> list[tuple[str, int, int]]:
    """pocketsphinx allphone decoding: ``[(phone, start_frame, end_frame_inclusive)]`` at 100 Hz."""
    a = _mono16k(audio, sr)
    # Exact digital silence (TTS, padded clips) derails pocketsphinx's front end (log of zero energy,
    # live cepstral mean normalisation), so a fixed, seeded -60 dBFS dither is added: real recordings
    # carry that much noise anyway, and the result stays deterministic.
    a = a + np.random.default_rng(0).normal(0.0, dither, a.shape).astype(np.float32)
    pcm = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    dec = _phone_decoder(float(lw), float(beam), float(pbeam))
    dec.start_utt()
    dec.process_raw(pcm.tobytes(), full_utt=True)
    dec.end_utt()
    return [(s.word, int(s.start_frame), int(s.end_frame)) for s in dec.seg()]


def phone_index(label: str) -> int:
    """ARPAbet label (stress digits allowed) -> feature index; fillers and unknowns -> SIL."""
    base = label.strip().upper().rstrip("012")
    try:
        return ARPABET.index(base)
    except ValueError:
        return SIL_INDEX


@register_backend
class PhonemeFeatures(FeatureBackend):
    kind = "phonemes"
    dim = len(PHONES)
    default_window = 20  # 200 ms of 10-ms frames
    rate = 100.0

    def __init__(self, lw: float = 2.0, beam: float = 1e-20, pbeam: float = 1e-20):
        self.lw, self.beam, self.pbeam = lw, beam, pbeam

    def pad_vector(self) -> np.ndarray:
        v = np.zeros(self.dim, np.float32)
        v[SIL_INDEX] = 1.0
        return v

    def stream(self, audio, sr: int = SAMPLE_RATE, source=None):
        if audio is None:
            raise InputError("the phonemes feature backend needs the audio samples")
        n = int(np.ceil(len(audio) / float(sr) * self.rate))
        labels = np.full(n, SIL_INDEX, dtype=np.int64)
        for label, start, end in phone_segments(audio, sr, self.lw, self.beam, self.pbeam):
            labels[max(start, 0):min(end + 1, n)] = phone_index(label)
        return np.eye(self.dim, dtype=np.float32)[labels], self.rate


# --------------------------------------------------------------------------------------------------
# log-mel (librosa)
# --------------------------------------------------------------------------------------------------
@register_backend
class MelFeatures(FeatureBackend):
    kind = "mel"
    dim = 80
    default_window = 20
    rate = 100.0
    floor = 1e-5

    def __init__(self, n_mels: int = 80, fmin: float = 55.0, fmax: float = 7600.0):
        self.n_mels, self.fmin, self.fmax = int(n_mels), fmin, fmax
        self.dim = self.n_mels

    def pad_vector(self) -> np.ndarray:
        return np.full(self.dim, np.log(self.floor), np.float32)

    def stream(self, audio, sr: int = SAMPLE_RATE, source=None):
        if audio is None:
            raise InputError("the mel feature backend needs the audio samples")
        import librosa

        a = _mono16k(audio, sr)
        if a.size == 0:
            return np.zeros((0, self.dim), np.float32), self.rate
        mel = librosa.feature.melspectrogram(y=a, sr=SAMPLE_RATE, n_fft=512, win_length=400,
                                             hop_length=SAMPLE_RATE // 100, n_mels=self.n_mels,
                                             fmin=self.fmin, fmax=self.fmax, center=True, power=2.0)
        return np.log(np.maximum(mel, self.floor)).T.astype(np.float32), self.rate
