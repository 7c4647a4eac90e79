"""One clip of a raw dataset -> a processed clip (the format of :mod:`emotalk.data.io.clip`).

Per clip (:func:`analyze_clip` then :func:`build_clip`):

1. probe the video; audio from the dataset's separate file (MEAD ``.m4a``/``.wav``, CREMA-D ``AudioWAV``,
   RAVDESS audio-only ``.wav``) or else the video's own track, decoded to 16 kHz mono;
2. pass 1: decode greyscale frames at ``fps`` (30; ffmpeg's fps filter resamples other rates) and track
   68 landmarks (:mod:`emotalk.data.face.track`: detect once, fit per frame, re-detect when lost,
   temporal smoothing) — or, with ``landmark_source="sidecar"``, read mead-mini's ground-truth
   ``<NNN>.landmarks.npz`` beside the video (clips without one are tracked as usual). When tracking, a clip
   with such a sidecar also gets the optional *true track* (``Clip.true_landmarks``): the sidecar's
   landmarks aligned and retargeted exactly like the detected ones, with a neutral face chosen by the same
   rule (below), and the sidecar's landmarks in crop pixels (``true_crop_landmarks``, the same crop) — for G_L
   and G_T with ``data.track: exact``; no detection: ~9 ms of CPU a clip (reading the
   sidecar, aligning; measured on a loaded machine): 3.4 s of CPU for the demo's 384 clips, over 2 workers;
3. similarity-align every frame to the canonical template (:mod:`emotalk.data.face.alignment`) and retarget
   onto it with the subject's neutral face: ``landmarks = template + (aligned - aligned_neutral)``;
4. one fixed face crop per clip (the similarity that puts the clip's *median* face upright at the
   standard place of an ``S x S`` crop, so the crop does not jitter), pass 2 decodes only that region in
   colour and warps it to ``S x S``; landmarks are also stored in crop pixels;
5. speech features (:mod:`emotalk.data.speech.features`) with one window per frame; audio trimmed/padded to
   the ``T`` frames and stored as int16.

Per subject: the *neutral reference* comes from the subject's first usable neutral clip (MEAD
``neutral/level_1``, CREMA-D ``NEU``, RAVDESS ``01`` — never RAVDESS calm): ``neutral_landmarks`` is the
median aligned face over that clip's closed-mouth frames (the lowest ``closed_fraction`` of mouth
openings), and the reference image (:class:`SubjectReference`) is the closed-mouth frame closest to that
median. A subject without any usable neutral clip falls back to *each clip's own first frame* as its
neutral face (``extra["neutral"] = "first_frame"``), with the reference image taken from the first frame
of its first clip.

The true track's neutral comes from the same neutral clip by the same rule, applied to its true landmarks
(:func:`true_neutral_from_analysis`; the subject reference carries it). Why not the generator's rest face
(the sidecar's ``neutral_landmarks``): the closed-mouth frames of neutral *speech* are not the rest face —
mead-mini's lips "relax shut" in pauses whatever gap the photo shows, so for the astronaut subjects (parted
lips at rest) the two differ by up to 0.085 eye distances on the inner lips (brows and eyes: identical).
With the rest face, speech displacements depend on the identity's lip gap: G_L trained so (demo data, 800
steps) carried 0.80-0.86 of the held-out mouth amplitude in contempt, happy and neutral against >= 0.88 with
this rule, and every other track (G_T's, the classifier's) uses this rule.

The dataset-level run (subjects' neutral references first, then every clip, in parallel workers,
resumable) is :mod:`emotalk.data.preprocess.pipeline`.

(Over 400 lines on purpose: one clip's whole path, sidecars included, reads in order in one module.)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from emotalk.data.io import media
from emotalk.data.face.alignment import (DEFAULT_FACE_CENTER, DEFAULT_FACE_SCALE, align_to_template,
                                    apply_similarity, crop_transform, invert_similarity, retarget,
                                    similarity_params)
from emotalk.data.io.clip import Clip, SubjectReference, encode_frames
from emotalk.data.speech.features import find_deepspeech_file, get_feature_backend
from emotalk.data.face.landmarkers import make_landmarker
from emotalk.data.face.track import LandmarkTracker, TrackerOptions
from emotalk.models.face_graph import mouth_opening
from emotalk.data.preprocess.readers import ClipRecord
from emotalk.data.parallel import worker_cached
from emotalk.errors import DataError, EmotalkError, InputError, MissingWeightsError, NoFaceError

logger = logging.getLogger(__name__)

#: Skip reasons written to report.jsonl and counted in the summary.
REASONS = ("bad name", "corrupt video", "missing audio", "no face", "too short", "missing features",
           "error")


class ClipFailure(DataError):
    """A clip cannot be processed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


@dataclass
class PreprocessOptions:
    fps: float = 30.0
    sample_rate: int = 16000
    crop_size: int = 256
    face_scale: float = DEFAULT_FACE_SCALE
    face_center: tuple[float, float] = DEFAULT_FACE_CENTER
    features: str = "phonemes"
    window: int | None = None  # default: the backend's (deepspeech 6, phonemes 20, mel 20)
    deepspeech_dir: str | None = None
    deepspeech_group_fps: float = 25.0
    deepspeech_model: str | None = None  # frozen DeepSpeech 0.1.0 graph: features computed from the audio
    detector: str = "dlib"
    face_alignment_weights: str | None = None
    min_frames: int = 8  # shorter clips are skipped as "too short"
    min_audio_fraction: float = 0.5  # audio shorter than this fraction of the video: "missing audio"
    jpeg_quality: int = 92
    closed_fraction: float = 0.3
    neutral_candidates: int = 3  # neutral clips tried per subject before falling back
    decode_threads: int = 0  # ffmpeg -threads (0 = ffmpeg's choice; 1 in parallel workers)
    landmark_source: str = "detect"  # detect | sidecar (ground-truth <NNN>.landmarks.npz of mead-mini)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)


# ==================================================================================================
# decoding
# ==================================================================================================
def decode_frames(path: str | Path, fps: float | None, gray: bool = False,
                  crop: tuple[int, int, int, int] | None = None, scale: tuple[int, int] | None = None,
                  threads: int = 0, info: media.VideoInfo | None = None) -> Iterator[np.ndarray]:
    """Frames resampled to ``fps``, optionally cropped to ``(x, y, w, h)`` and scaled to ``(w, h)``."""
    return media.iter_video_frames(path, fps, size=scale, gray=gray, crop=crop, threads=threads, info=info)


# ==================================================================================================
# ground-truth landmark sidecars (mead-mini)
# ==================================================================================================
SIDECAR_SUFFIX = ".landmarks.npz"


def sidecar_path(video: str | Path) -> Path:
    """``.../001.mp4`` -> ``.../001.landmarks.npz`` (mead-mini's ground-truth landmarks)."""
    v = Path(video)
    return v.with_name(v.stem + SIDECAR_SUFFIX)


def load_sidecar_landmarks(path: Path, fps: float) -> np.ndarray:
    """Per-frame pixel landmarks ``(T, 68, 2)`` from a sidecar written at ``fps``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            lm = np.asarray(z["landmarks"], np.float32)
            src_fps = float(z["fps"]) if "fps" in z.files else fps
    except Exception as e:
        raise ClipFailure("corrupt video", f"{path}: unreadable landmark sidecar ({type(e).__name__}: {e})") from None
    if lm.ndim != 3 or lm.shape[1:] != (68, 2) or not np.isfinite(lm).all():
        raise ClipFailure("corrupt video", f"{path}: sidecar landmarks must be finite (T, 68, 2), got {lm.shape}")
    if abs(src_fps - fps) > 1e-3:
        raise ClipFailure("error", f"{path}: sidecar landmarks are at {src_fps:g} fps, not {fps:g}; "
                                   f"use --landmarks detect")
    return lm


def _true_track_source(video: Path, fps: float) -> tuple[np.ndarray | None, str]:
    """``(pixel landmarks, note)`` of a tracked clip's sidecar for its true track, or ``(None, why not)``: a
    clip without a usable sidecar simply has no true track (G_L with ``data.track: exact`` then names it),
    it is not a failed clip."""
    path = sidecar_path(video)
    if not path.is_file():
        return None, "no sidecar"
    try:
        return load_sidecar_landmarks(path, fps), "sidecar"
    except ClipFailure as e:
        logger.warning("%s; the clip gets no true landmark track", e)
        return None, f"unusable sidecar: {e}"


# ==================================================================================================
# one clip
# ==================================================================================================
@dataclass
class ClipAnalysis:
    record: ClipRecord
    num_frames: int
    image_landmarks: np.ndarray  # (T, 68, 2) image pixels (smoothed)
    aligned: np.ndarray  # (T, 68, 2) canonical space, similarity-aligned
    crop_matrix: np.ndarray  # (2, 3) image -> crop
    crop_landmarks: np.ndarray  # (T, 68, 2) crop pixels
    frames_jpeg: np.ndarray
    frames_offsets: np.ndarray
    audio: np.ndarray  # (S,) int16
    features: np.ndarray  # (T, W, D)
    stats: dict
    true_aligned: np.ndarray | None = None  # (T, 68, 2) the sidecar's landmarks, similarity-aligned
    true_crop_landmarks: np.ndarray | None = None  # (T, 68, 2) the sidecar's landmarks in crop pixels (m_crop)


def _landmarker(opts: PreprocessOptions):
    return worker_cached(("lm", opts.detector, opts.face_alignment_weights),
                         lambda: make_landmarker(opts.detector, weights=opts.face_alignment_weights))


def _backend(opts: PreprocessOptions):
    kw = {"group_fps": opts.deepspeech_group_fps} if opts.features == "deepspeech" else {}
    return worker_cached(("feat", opts.features, opts.deepspeech_group_fps),
                         lambda: get_feature_backend(opts.features, **kw))


def _rel(path: Path | None, root: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _crop_region(m: np.ndarray, size: int, width: int, height: int,
                 margin: int = 2) -> tuple[tuple[int, int, int, int], float]:
    """Image rectangle (x, y, w, h; even sizes, inside the frame) covering the crop, and the downscale
    factor (<= 1) that brings it to about the crop's resolution."""
    inv = invert_similarity(m)
    corners = apply_similarity(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64))
    x0 = int(np.floor(max(corners[:, 0].min() - margin, 0)))
    y0 = int(np.floor(max(corners[:, 1].min() - margin, 0)))
    x1 = int(np.ceil(min(corners[:, 0].max() + margin, width)))
    y1 = int(np.ceil(min(corners[:, 1].max() + margin, height)))
    w, h = max(x1 - x0, 2), max(y1 - y0, 2)
    w -= w % 2
    h -= h % 2
    x0, y0 = min(x0, width - w), min(y0, height - h)
    scale = min(1.0, similarity_params(m)[0])
    return (max(x0, 0), max(y0, 0), w, h), scale


#: a clip whose colour frames (at the processing fps) fit in this many bytes is decoded ONCE: the tracker reads
#: grey copies of the colour frames, which are kept for the crops. mead-mini's 256x256 clips take ~16 MB, and a
#: second ffmpeg run per clip (process start + decode) was a tenth of preprocessing's time; larger videos (MEAD's
#: 1920x1080: ~6 MB a frame) keep the two passes, the second decoding only the crop region.
DECODE_ONCE_BYTES = 128 << 20


def _decode_once(info: media.VideoInfo, fps: float) -> bool:
    frames = max(info.num_frames, int(np.ceil(info.duration * fps)) + 1)
    return 0 < info.width * info.height * 3 * frames <= DECODE_ONCE_BYTES


def analyze_clip(record: ClipRecord, opts: PreprocessOptions, root: Path | None = None) -> ClipAnalysis:
    """Decode, track, align and crop one clip and compute its features (no neutral face needed yet).
    Raises :class:`ClipFailure` with a reason from :data:`REASONS`."""
    import cv2

    t0 = time.perf_counter()
    # ---- video and audio sources ---------------------------------------------------------------
    audio_src = record.audio if record.audio is not None and Path(record.audio).is_file() else None
    # a small video at the processing rate whose audio is another file (mead-mini): decoded in this process, no
    # ffmpeg runs (media.decode_small_video gives the same frames or None); others: probed and piped from ffmpeg
    direct = (media.decode_small_video(record.video, opts.fps, DECODE_ONCE_BYTES)
              if audio_src is not None else None)
    try:
        info = direct[0] if direct is not None else media.probe_video(record.video)
    except EmotalkError as e:
        raise ClipFailure("corrupt video", str(e)) from None
    if info.width < 2 or info.height < 2:
        raise ClipFailure("corrupt video", f"{record.video}: no video stream")
    if audio_src is None:
        if not info.has_audio:
            raise ClipFailure("missing audio", f"{record.video}: no audio file "
                              f"{'(' + str(record.audio) + ' missing) ' if record.audio else ''}and no audio track")
        audio_src = record.video
    try:
        audio = media.load_audio(audio_src, sr=opts.sample_rate)
    except EmotalkError as e:
        raise ClipFailure("missing audio", str(e)) from None

    # ---- pass 1: landmarks ------------------------------------------------------------------------
    sidecar = sidecar_path(record.video) if opts.landmark_source == "sidecar" else None
    # small videos (mead-mini's 256x256) are decoded once and their colour frames kept for pass 2
    held: list[np.ndarray] | None = [] if _decode_once(info, opts.fps) else None
    if sidecar is not None and sidecar.is_file():
        landmarks = load_sidecar_landmarks(sidecar, opts.fps)
        T = len(landmarks)
        if held is not None and direct is not None:  # the frames are decoded already: crops from them
            held.extend(direct[1])
        direct = None
        track_stats = {"landmarks_source": "sidecar", "detections": 0, "redetections": 0, "missing_frames": 0}
    else:
        tracker = LandmarkTracker(_landmarker(opts), opts.tracker, fps=opts.fps)
        try:
            if held is not None:  # one colour decode; the tracker gets each frame's grey version
                frames = direct[1] if direct is not None else decode_frames(
                    record.video, opts.fps, gray=False, threads=opts.decode_threads, info=info)
                for frame in frames:
                    held.append(frame)
                    tracker.update(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
                direct = frames = None  # ``held`` alone keeps the frames (cleared after pass 2)
            else:
                for frame in decode_frames(record.video, opts.fps, gray=True, threads=opts.decode_threads,
                                           info=info):
                    tracker.update(frame)
        except DataError as e:
            raise ClipFailure("corrupt video", str(e)) from None
        T = tracker.num_frames
        if T == 0:
            raise ClipFailure("corrupt video", f"{record.video}: no decodable frames")
        if T >= opts.min_frames:
            try:
                track = tracker.finish()
            except NoFaceError as e:
                raise ClipFailure("no face", f"{record.video}: {e}") from None
            landmarks = track.landmarks
            track_stats = {"landmarks_source": opts.detector, "detections": track.detections,
                           "redetections": len(track.redetect_frames), "missing_frames": track.missing}
    if T < opts.min_frames:
        raise ClipFailure("too short", f"{record.video}: {T} frames at {opts.fps:g} fps "
                                       f"(fewer than {opts.min_frames})")
    true_px = None
    if opts.landmark_source != "sidecar":  # sidecar mode: the main track is the exact one already
        true_px, true_note = _true_track_source(Path(record.video), opts.fps)
        if true_px is not None and abs(len(true_px) - T) > 2:
            true_note = f"the sidecar has {len(true_px)} frames, the video {T}"
            logger.warning("%s: %s; the clip gets no true landmark track", record.video, true_note)
            true_px = None
        track_stats["true_track"] = true_note
    t1 = time.perf_counter()

    # ---- alignment and the fixed crop -----------------------------------------------------------
    aligned, _ = align_to_template(landmarks)
    m_crop = crop_transform(np.median(landmarks, axis=0), opts.crop_size, opts.face_scale, opts.face_center)
    crop_landmarks = apply_similarity(m_crop, landmarks).astype(np.float32)

    # ---- pass 2: colour crops ---------------------------------------------------------------------
    region, k = _crop_region(m_crop, opts.crop_size, info.width, info.height)
    x0, y0, rw, rh = region
    sw, sh = max(2, int(round(rw * k / 2)) * 2), max(2, int(round(rh * k / 2)) * 2)
    sx, sy = sw / rw, sh / rh
    # crop pixels <- region pixels: p_img = (p_region / (sx, sy)) + (x0, y0)
    to_img = np.array([[1 / sx, 0, x0], [0, 1 / sy, y0]], np.float64)
    m_region = m_crop.copy()
    m_region[:, :2] = m_crop[:, :2] @ to_img[:, :2]
    m_region[:, 2] = m_crop[:, :2] @ to_img[:, 2] + m_crop[:, 2]
    crops = []
    if held:  # the frames of pass 1: cut the region and scale it here, as ffmpeg's crop + area scale would
        for frame in held:
            part = frame[y0:y0 + rh, x0:x0 + rw]
            if (sw, sh) != (rw, rh):
                part = cv2.resize(part, (sw, sh), interpolation=cv2.INTER_AREA)
            crops.append(cv2.warpAffine(part, m_region, (opts.crop_size, opts.crop_size),
                                        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        held.clear()
    else:
        try:
            for frame in decode_frames(record.video, opts.fps, gray=False, crop=region,
                                       scale=None if (sw, sh) == (rw, rh) else (sw, sh),
                                       threads=opts.decode_threads, info=info):
                crops.append(cv2.warpAffine(frame, m_region, (opts.crop_size, opts.crop_size),
                                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        except DataError as e:
            raise ClipFailure("corrupt video", str(e)) from None
    if abs(len(crops) - T) > 2 or not crops:
        raise ClipFailure("corrupt video", f"{record.video}: {T} frames in the first decode but {len(crops)} "
                                           f"in the second")
    T = min(T, len(crops), len(true_px) if true_px is not None else T)
    crops = crops[:T]
    landmarks, aligned, crop_landmarks = landmarks[:T], aligned[:T], crop_landmarks[:T]
    jpeg, offsets = encode_frames(crops, quality=opts.jpeg_quality)
    del crops
    t2 = time.perf_counter()

    # ---- audio and features -----------------------------------------------------------------------
    n_samples = int(round(T / opts.fps * opts.sample_rate))
    audio_dur = len(audio) / opts.sample_rate
    if audio_dur < opts.min_audio_fraction * T / opts.fps:
        raise ClipFailure("missing audio", f"{audio_src}: the audio lasts {audio_dur:.2f} s but the video "
                                           f"{T / opts.fps:.2f} s (truncated audio?)")
    a = np.zeros(n_samples, np.float32)
    a[:min(n_samples, len(audio))] = audio[:n_samples]
    backend = _backend(opts)
    source = None
    if opts.features == "deepspeech" and opts.deepspeech_model:
        source = opts.deepspeech_model  # the frozen graph, run on this clip's audio
    elif opts.features == "deepspeech":
        if not opts.deepspeech_dir:
            raise MissingWeightsError("--features deepspeech needs --deepspeech-dir DIR with one DeepSpeech "
                                      "feature file per clip (or use --features phonemes)")
        try:
            source = find_deepspeech_file(opts.deepspeech_dir, record.subject, record.clip_id,
                                          _rel(Path(audio_src), root / record.subject if root else None))
        except DataError as e:
            raise ClipFailure("missing features", str(e)) from None
    try:
        feats = backend.windows(a if opts.features != "deepspeech" or opts.deepspeech_model else None,
                                opts.sample_rate, num_frames=T,
                                fps=opts.fps, window=opts.window, source=source)
    except (DataError, InputError) as e:
        raise ClipFailure("missing features", str(e)) from None
    audio16 = (np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    t3 = time.perf_counter()
    stats = {"source_fps": info.fps, "source_size": [info.width, info.height],
             "audio_source": "video track" if audio_src == record.video else _rel(audio_src, root),
             "audio_seconds": round(audio_dur, 3), "video_seconds": round(T / opts.fps, 3), **track_stats,
             "seconds": {"landmarks": round(t1 - t0, 3), "crops": round(t2 - t1, 3),
                         "features": round(t3 - t2, 3)}}
    an = ClipAnalysis(record, T, landmarks, aligned, m_crop, crop_landmarks, jpeg, offsets, audio16, feats, stats)
    if true_px is not None:  # aligned exactly like the detected track (same template, same stable points)
        an.true_aligned = align_to_template(true_px[:T])[0]
        an.true_crop_landmarks = apply_similarity(m_crop, true_px[:T]).astype(np.float32)  # the same crop
    return an


def _closed_mouth_neutral(aligned: np.ndarray, closed_fraction: float) -> tuple[np.ndarray, int]:
    mouth = mouth_opening(aligned)
    thr = np.quantile(mouth, min(max(closed_fraction, 0.0), 1.0))
    closed = np.flatnonzero(mouth <= thr + 1e-9)
    neutral = np.median(aligned[closed], axis=0).astype(np.float32)
    dist = np.sqrt(((aligned[closed] - neutral) ** 2).sum(-1).mean(-1))
    return neutral, int(closed[int(np.argmin(dist))])


def neutral_from_analysis(an: ClipAnalysis, closed_fraction: float = 0.3) -> tuple[np.ndarray, int]:
    """``(neutral (68, 2), reference frame index)`` of a neutral clip: the median aligned face over its
    closed-mouth frames and the closed-mouth frame closest to that median."""
    return _closed_mouth_neutral(an.aligned, closed_fraction)


def true_neutral_from_analysis(an: ClipAnalysis, closed_fraction: float = 0.3) -> np.ndarray | None:
    """The same rule on the clip's true track (closed-mouth frames by the true mouth opening); None
    without one."""
    return None if an.true_aligned is None else _closed_mouth_neutral(an.true_aligned, closed_fraction)[0]


def subject_reference(an: ClipAnalysis, neutral: np.ndarray, frame: int,
                      closed_fraction: float | None = 0.3) -> SubjectReference:
    """The subject's reference from its neutral clip (``closed_fraction``: the neutral rule's, for the true
    track's neutral; None = the first-frame fallback, whose true neutral is the true first frame)."""
    import cv2

    a, b = int(an.frames_offsets[frame]), int(an.frames_offsets[frame + 1])
    image = cv2.imdecode(an.frames_jpeg[a:b], cv2.IMREAD_COLOR)[..., ::-1].copy()
    true = (true_neutral_from_analysis(an, closed_fraction) if closed_fraction is not None
            else an.true_aligned[0] if an.true_aligned is not None else None)
    true_crop = None if an.true_crop_landmarks is None else an.true_crop_landmarks[frame].astype(np.float32)
    return SubjectReference(subject=an.record.subject, image=image,
                            crop_landmarks=an.crop_landmarks[frame].astype(np.float32),
                            neutral_landmarks=np.asarray(neutral, np.float32), true_neutral_landmarks=true,
                            true_crop_landmarks=true_crop)


def _true_track(an: ClipAnalysis, true_neutral: np.ndarray | None, first_frame: bool) -> tuple[dict, str]:
    """``Clip`` keyword arguments of the true track (``{}`` without one) and a note for ``extra``."""
    if an.true_aligned is None:
        return {}, an.stats.get("true_track", "")
    if first_frame:  # the fallback of subjects without a neutral clip, as for the detected track
        true_neutral = an.true_aligned[0]
    if true_neutral is None:
        return {}, ("no true neutral face: the subject reference predates the true track; preprocess into a "
                    "new folder")
    return {"true_landmarks": retarget(an.true_aligned, true_neutral),
            "true_neutral_landmarks": np.asarray(true_neutral, np.float32)}, "sidecar"


def build_clip(an: ClipAnalysis, neutral: np.ndarray | None, opts: PreprocessOptions,
               root: Path | None = None, neutral_source: str = "", true_neutral: np.ndarray | None = None) -> Clip:
    """The processed :class:`Clip`; ``neutral=None`` uses the clip's own first frame (fallback) for both
    tracks; ``true_neutral``: the subject's neutral face on the true track (its reference's)."""
    r = an.record
    if neutral is None:
        neutral = an.aligned[0]
        mode = "first_frame"
    else:
        mode = "neutral_clip"
    true, note = _true_track(an, true_neutral, mode == "first_frame")
    extra = {"sentence": r.sentence, "split": r.split, "video": _rel(r.video, root),
             "neutral": mode, "neutral_source": neutral_source or (r.clip_id if mode == "first_frame" else ""),
             "crop_matrix": np.round(an.crop_matrix, 6).tolist(), **r.extra, **an.stats}
    if "true_track" in extra:
        extra["true_track"] = note
    return Clip(landmarks=retarget(an.aligned, neutral), neutral_landmarks=np.asarray(neutral, np.float32),
                audio_features=an.features.astype(np.float32), emotion=r.emotion, intensity=int(r.intensity),
                fps=float(opts.fps), subject=r.subject, clip_id=r.clip_id, feature_kind=opts.features,
                dataset=r.dataset, crop_landmarks=an.crop_landmarks, frames_jpeg=an.frames_jpeg,
                frames_offsets=an.frames_offsets, audio=an.audio, sample_rate=opts.sample_rate, extra=extra,
                true_crop_landmarks=an.true_crop_landmarks, **true)
