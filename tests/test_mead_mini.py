"""mead-mini: the offline real-photo dataset in MEAD's layout (`emotalk make-mini`).

One session-scoped fixture (``tiny_mini_raw`` in tests/conftest.py, shared with the pipeline fixtures and the
demo test) generates the ``tiny`` size through the CLI (~10 s); the tests check the
layout, the ground-truth landmarks against dlib on the rendered frames, speech/mouth coupling, the
emotions' action units, identity variation, determinism and the TTS.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from emotalk.data.emotions import EMOTIONS
from emotalk.models.face_graph import brow_height, canonical_template, mouth_opening

EMO_RE = "|".join(EMOTIONS)
VIDEO_RE = re.compile(rf"^([MW]\d{{3}})/video/front/({EMO_RE})/level_([123])/(\d{{3}})\.mp4$")
SIDECAR_RE = re.compile(rf"^([MW]\d{{3}})/video/front/({EMO_RE})/level_([123])/(\d{{3}})\.landmarks\.npz$")
AUDIO_RE = re.compile(rf"^([MW]\d{{3}})/audio/({EMO_RE})/level_([123])/(\d{{3}})\.wav$")


@pytest.fixture(scope="session")
def tiny(tiny_mini_raw) -> Path:
    """The session's ``emotalk make-mini --size tiny --seed 0`` output (tests/conftest.py), shared with the
    pipeline fixtures and the demo test rather than generated once more here."""
    return tiny_mini_raw


def _clips(root: Path) -> list[Path]:
    return sorted(root.glob("*/video/front/*/level_*/*.mp4"))


def _audio_of(root: Path, mp4: Path) -> Path:
    rel = mp4.relative_to(root).parts  # ID, video, front, emotion, level, NNN.mp4
    return root / rel[0] / "audio" / rel[3] / rel[4] / (mp4.stem + ".wav")


def _frame_rms(audio: np.ndarray, num_frames: int, sr: int = 16000, fps: float = 30.0) -> np.ndarray:
    hop = sr / fps
    return np.array([np.sqrt(np.mean(audio[int(t * hop):int((t + 1) * hop)] ** 2) + 1e-12)
                     for t in range(num_frames)])


def _procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` similarity-aligned onto ``b``."""
    from emotalk.mini.geometry import Similarity

    return Similarity.fit(a, b).apply(a)


# ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_layout_is_exactly_meads(tiny):
    from emotalk.data.io.media import probe_video
    from emotalk.mini.generator import load_sidecar

    info = json.loads((tiny / "mini.json").read_text())
    files = sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*") if p.is_file())
    videos = [f for f in files if VIDEO_RE.match(f)]
    sidecars = [f for f in files if SIDECAR_RE.match(f)]
    audios = [f for f in files if AUDIO_RE.match(f)]
    assert set(files) == set(videos) | set(sidecars) | set(audios) | {"mini.json"}, "unexpected files"
    assert len(videos) == len(sidecars) == len(audios) == info["num_clips"] > 0
    subjects = sorted({f.split("/")[0] for f in videos})
    assert subjects == sorted(info["subject_ids"])
    # splits: held-out test subjects, disjoint from train, covering every subject
    train, test = set(info["splits"]["train"]), set(info["splits"]["test"])
    assert train and test and not (train & test) and train | test == set(subjects)
    for f in videos:
        sid, emotion, level, num = VIDEO_RE.match(f).groups()
        if emotion == "neutral":
            assert level == "1", f"neutral has only level_1 in MEAD: {f}"
        assert f"{sid}/audio/{emotion}/level_{level}/{num}.wav" in audios
        assert f.replace(".mp4", ".landmarks.npz") in sidecars
    # every emotion the size promises, for every subject
    for sid in subjects:
        for emotion, levels in info["emotions"].items():
            for lv in levels:
                assert (tiny / sid / "video" / "front" / emotion / f"level_{lv}" / "001.mp4").is_file()
    # streams: 30 fps video with an audio track; frame count == sidecar length; wav length matches
    import wave

    for f in videos[:4]:
        mp4 = tiny / f
        vi = probe_video(mp4)
        side = load_sidecar(mp4)
        T = side["landmarks"].shape[0]
        assert vi.has_audio and abs(vi.fps - 30.0) < 1e-6 and (vi.width, vi.height) == (256, 256)
        assert vi.num_frames == T
        assert side["landmarks"].dtype == np.float32 and side["landmarks"].shape == (T, 68, 2)
        with wave.open(str(_audio_of(tiny, mp4))) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1
            assert abs(w.getnframes() / 16000 - T / 30.0) < 1e-3


@pytest.mark.slow
def test_mead_reader_lists_every_clip_with_the_generated_splits(tiny):
    readers = pytest.importorskip("emotalk.data.preprocess.readers")
    listing = readers.read_mead_mini(tiny)
    info = json.loads((tiny / "mini.json").read_text())
    assert len(listing.records) == info["num_clips"] and not listing.rejected
    owner = {s: split for split, ids in info["splits"].items() for s in ids}
    for r in listing.records:
        assert r.audio is not None and r.audio.suffix == ".wav"
        assert r.split == owner[r.subject]


@pytest.mark.slow
def test_dlib_on_generated_frames_matches_the_sidecar(tiny):
    """dlib, run as preprocessing runs it (detect, then track: emotalk.data.face.track), finds the landmarks the
    sidecar says on every generated clip. Not per-frame detection: dlib's HOG box snaps between pyramid levels
    (129 or 155 px on W002's faces) and the larger box fits an expressive face 2-4 px worse, so a clip's mean over
    per-frame detections counts coin flips (W002 sad 3.8 px with one rendering, 5.3 with a 50 dB-equal one)."""
    from emotalk.data.face.track import track_landmarks
    from emotalk.data.io.media import read_video
    from emotalk.mini.generator import load_sidecar

    per_clip = {}
    for mp4 in _clips(tiny):
        frames = read_video(mp4)
        gt = load_sidecar(mp4)["landmarks"]
        assert len(frames) == len(gt)
        track = track_landmarks(frames)
        assert track.missing == 0, f"dlib lost the face in {track.missing} frames of {mp4}"
        per_clip[mp4.relative_to(tiny).as_posix()] = float(np.linalg.norm(track.landmarks - gt, axis=-1).mean())
    overall = float(np.mean(list(per_clip.values())))
    assert overall < 2.5, per_clip  # pixels, 256x256 frames, eye corners ~74 px apart (measured: 1.8)
    assert max(per_clip.values()) < 4.5, per_clip  # (measured: 2.9)


@pytest.mark.slow
def test_mouth_opening_follows_speech_energy(tiny):
    from emotalk.data.io.media import load_audio
    from emotalk.mini.generator import load_sidecar

    corrs = []
    for mp4 in _clips(tiny):
        lm = load_sidecar(mp4)["landmarks"]
        rms = _frame_rms(load_audio(_audio_of(tiny, mp4)), len(lm))
        corrs.append(np.corrcoef(mouth_opening(lm), rms)[0, 1])
    assert min(corrs) > 0.1, corrs
    assert np.mean(corrs) > 0.35, corrs


@pytest.mark.slow
def test_each_emotion_moves_the_regions_of_its_action_units(tiny):
    """Clip-mean canonical landmarks vs the same subject's neutral clip."""
    from emotalk.mini.generator import load_sidecar

    info = json.loads((tiny / "mini.json").read_text())
    for sid in info["subject_ids"]:
        def mean_shape(emotion, level):
            return load_sidecar(tiny / sid / "video/front" / emotion / f"level_{level}" / "001.mp4"
                                )["landmarks_canonical"].astype(np.float64).mean(0)

        neu = mean_shape("neutral", 1)
        corners = [48, 54]
        inner_brows = [21, 22]
        happy, sad, surprised = mean_shape("happy", 3), mean_shape("sad", 3), mean_shape("surprised", 3)
        # happy (AU6 + AU12): lip corners up and out, lower lids up
        assert (neu[corners, 1] - happy[corners, 1]).mean() > 0.04, sid
        assert (happy[54, 0] - happy[48, 0]) > (neu[54, 0] - neu[48, 0]) + 0.08, sid
        assert (neu[[40, 41, 46, 47], 1] - happy[[40, 41, 46, 47], 1]).mean() > 0.008, sid
        # surprised (AU1 + AU2 + AU5 + AU26): brows up, jaw dropped
        assert brow_height(surprised) - brow_height(neu) > 0.04, sid
        assert surprised[8, 1] - neu[8, 1] > 0.05, sid
        # sad (AU1 + AU4 + AU15): inner brows up, lip corners down
        assert (neu[inner_brows, 1] - sad[inner_brows, 1]).mean() > 0.025, sid
        assert (sad[corners, 1] - neu[corners, 1]).mean() > 0.035, sid
        # the nose (no AU here) stays put
        for shape in (happy, sad, surprised):
            assert np.abs(shape[27:31] - neu[27:31]).max() < 0.01, sid


def test_every_emotion_has_its_facs_signature_and_levels_scale_it():
    from emotalk.mini.action_units import emotion_displacement

    tpl = canonical_template().astype(np.float64)
    up = lambda d, idx: -d[list(idx), 1].mean()  # noqa: E731  (+ = moves up)
    out = lambda d, i: d[i, 0] * np.sign(tpl[i, 0])  # noqa: E731  (+ = away from the midline)
    d = {e: emotion_displacement(e, 3, tpl) for e in EMOTIONS}
    assert np.abs(d["neutral"][0]).max() == 0 and d["neutral"][1] == 0
    hap, _ = d["happy"]
    assert up(hap, [48, 54]) > 0.04 and out(hap, 48) > 0.04 and up(hap, [40, 41, 46, 47]) > 0.01
    sad, _ = d["sad"]
    assert up(sad, [21, 22]) > 0.03 and up(sad, [48, 54]) < -0.04
    ang, _ = d["angry"]
    assert up(ang, [19, 20, 21, 22, 23, 24]) < -0.02 and out(ang, 21) < -0.02  # lowered, drawn together
    assert out(ang, 48) < -0.01 and up(ang, [40, 41, 46, 47]) > 0.02  # lips tightened, lower lids tightened
    sur, sur_jaw = d["surprised"]
    assert up(sur, range(17, 27)) > 0.04 and up(sur, [37, 38, 43, 44]) > 0.02 and sur_jaw > 0.05
    fea, fea_jaw = d["fear"]
    assert up(fea, [21, 22]) > 0.02 and out(fea, 48) > 0.04 and fea_jaw > 0.02
    dis, _ = d["disgusted"]
    assert up(dis, [31, 35]) > 0.02 and up(dis, [50, 51, 52]) > 0.02 and up(dis, [56, 57, 58]) < -0.02
    con, _ = d["contempt"]
    assert abs(up(con, [54]) - up(con, [48])) > 0.03  # unilateral
    for e in EMOTIONS[1:]:
        mags = [np.abs(emotion_displacement(e, lv, tpl)[0]).sum() for lv in (1, 2, 3)]
        assert mags[0] < mags[1] < mags[2], e


#: Stated expression strength of mead-mini's ground truth at MEAD level 3, per emotion and facial region:
#: (low, high) of the region's mean landmark displacement, in canonical units (outer-eye-corner distance,
#: ~90 mm), of a clip's mean shape from the same subject's *neutral* clip of the same sentence (so the
#: speech averages out). These are the FACS "D" (severe) appearance changes of action_units.py: brows
#: ~5-11 mm, lip corners ~4-13 mm. Regions not listed must stay below QUIET at every level.
LEVEL3_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "angry": {"brows": (0.055, 0.10), "eyelids": (0.015, 0.035), "corners": (0.03, 0.07), "lips": (0.02, 0.06)},
    "contempt": {"corners": (0.035, 0.08), "lips": (0.012, 0.035)},
    "disgusted": {"brows": (0.035, 0.07), "eyelids": (0.015, 0.035), "nose": (0.02, 0.045),
                  "corners": (0.015, 0.045), "lips": (0.025, 0.05)},
    "fear": {"brows": (0.045, 0.085), "eyelids": (0.01, 0.03), "corners": (0.07, 0.13), "lips": (0.035, 0.07)},
    "happy": {"eyelids": (0.01, 0.03), "corners": (0.10, 0.18), "lips": (0.04, 0.08)},
    "sad": {"brows": (0.03, 0.06), "corners": (0.06, 0.11), "lips": (0.02, 0.05)},
    "surprised": {"brows": (0.09, 0.16), "eyelids": (0.012, 0.03), "corners": (0.035, 0.08), "lips": (0.035, 0.07)},
}
QUIET = 0.008
#: level 1 (FACS B, "slight") and level 2 (C, "marked") as fractions of level 3 (D, "severe")
LEVEL_FRACTION = {1: (0.2, 0.5), 2: (0.5, 0.8)}
REGION_POINTS = {"brows": list(range(17, 27)), "eyelids": [37, 38, 40, 41, 43, 44, 46, 47],
                 "nose": list(range(27, 36)), "corners": [48, 54, 60, 64], "lips": list(range(48, 68))}


@pytest.fixture(scope="module")
def expression_strength(tmp_path_factory):
    """{(subject, emotion, level): {region: displacement}} from the generator's own sidecars (written
    without video) for two subjects: one with a neutral face, one smiling with teeth at rest."""
    from emotalk.mini.generator import ClipPlan, _write_clip, build_subjects, load_sidecar, plan_dataset

    root = tmp_path_factory.mktemp("strength")
    plan = plan_dataset("tiny", 0)
    subjects = build_subjects(plan)
    plans = {s.subject_id: s for s in plan.subjects}
    out = {}
    for sid in ("W001", "W002"):
        ref = None
        for emotion in EMOTIONS:
            for level in ((1,) if emotion == "neutral" else (1, 2, 3)):
                clip = ClipPlan(sid, emotion, level, 1, sentence=7, seed=1007)
                _write_clip(root, subjects[sid], plans[sid], clip, render=False)
                mean = load_sidecar(clip.sidecar_path(root))["landmarks_canonical"].astype(np.float64).mean(0)
                ref = mean if emotion == "neutral" else ref
                out[sid, emotion, level] = {r: float(np.linalg.norm(mean[i] - ref[i], axis=1).mean())
                                            for r, i in REGION_POINTS.items()}
    return out


@pytest.mark.parametrize("emotion", EMOTIONS[1:])
def test_sidecar_expressions_have_the_stated_strength_and_grow_with_level(expression_strength, emotion):
    for sid in ("W001", "W002"):
        by_level = {lv: expression_strength[sid, emotion, lv] for lv in (1, 2, 3)}
        for region in REGION_POINTS:
            v1, v2, v3 = (by_level[lv][region] for lv in (1, 2, 3))
            where = f"{sid} {emotion} {region}: L1 {v1:.4f} L2 {v2:.4f} L3 {v3:.4f}"
            if region not in LEVEL3_RANGES[emotion]:
                assert max(v1, v2, v3) < QUIET, where
                continue
            lo, hi = LEVEL3_RANGES[emotion][region]
            assert lo <= v3 <= hi, where
            assert v1 < v2 < v3, where
            for lv, v in ((1, v1), (2, v2)):
                flo, fhi = LEVEL_FRACTION[lv]
                assert flo * v3 <= v <= fhi * v3, where


@pytest.mark.slow
def test_two_subjects_from_one_photo_are_different_faces(tiny):
    from emotalk.models.face_graph import MIRROR
    from emotalk.data.io.media import read_video
    from emotalk.mini.generator import load_sidecar

    info = json.loads((tiny / "mini.json").read_text())
    by_photo: dict[str, list[str]] = {}
    for sid, s in info["subjects"].items():
        by_photo.setdefault(s["photo"], []).append(sid)
    a, b = next(ids for ids in by_photo.values() if len(ids) >= 2)[:2]
    clip = "video/front/neutral/level_1/001.mp4"
    na = load_sidecar(tiny / a / clip)["neutral_landmarks"].astype(np.float64)
    nb = load_sidecar(tiny / b / clip)["neutral_landmarks"].astype(np.float64)
    tpl = canonical_template().astype(np.float64)
    ca, cb = _procrustes(na, tpl), _procrustes(nb, tpl)
    cb_mirror = _procrustes(np.stack([-nb[MIRROR, 0], nb[MIRROR, 1]], 1), tpl)
    # shape differs beyond a pure similarity (and beyond a mirror image)
    shape_diff = min(np.sqrt(((ca - cb) ** 2).sum(1).mean()), np.sqrt(((ca - cb_mirror) ** 2).sum(1).mean()))
    assert shape_diff > 0.012, shape_diff
    # and the pixels differ
    fa, fb = read_video(tiny / a / clip)[0], read_video(tiny / b / clip)[0]
    assert np.abs(fa.astype(np.float64) - fb.astype(np.float64)).mean() > 20.0


def test_plan_sizes_ids_and_splits():
    from emotalk.mini.generator import PhotoSpec, builtin_photos, plan_dataset

    photos = builtin_photos() + [PhotoSpec("me", "me.jpg", "M"), PhotoSpec("you", "you.jpg", "W")]
    small = plan_dataset("small", 0, photos)
    ids = [s.subject_id for s in small.subjects]
    assert ids[:8] == [f"W{i:03d}" for i in range(1, 9)]  # built-ins keep their numbers
    assert [s.photo for s in small.subjects[:8]] == ["astronaut", "grace_hopper"] * 4
    assert {s.subject_id[0] for s in small.subjects if s.photo == "me"} == {"M"}
    assert len(set(ids)) == len(ids) == 16
    for photo in ("astronaut", "grace_hopper", "me", "you"):  # the last variant of each photo is held out
        subs = [s for s in small.subjects if s.photo == photo]
        assert [s.split for s in subs] == ["train", "train", "train", "test"]
    assert len({s.voice["name"] for s in small.subjects[:8]}) == 8  # every built-in subject sounds different
    combos = {(c.subject_id, c.emotion, c.level) for c in small.clips}
    for sid in ids:
        assert {(e, lv) for s, e, lv in combos if s == sid} == \
            {("neutral", 1)} | {(e, lv) for e in EMOTIONS[1:] for lv in (1, 2, 3)}
    tiny = plan_dataset("tiny", 0)
    assert [s.subject_id for s in tiny.subjects] == ["W001", "W002", "W003"]
    assert [s.split for s in tiny.subjects] == ["train", "train", "test"]
    assert plan_dataset("tiny", 0).clips == tiny.clips and plan_dataset("tiny", 1).clips != tiny.clips


@pytest.mark.slow
def test_same_seed_same_landmark_bytes_other_seed_different(tiny):
    from emotalk.mini.generator import build_subjects, clip_landmarks, load_sidecar, plan_dataset

    def landmarks(seed: int, which=(0, -1)):
        plan = plan_dataset("tiny", seed)
        subjects = build_subjects(plan)
        plans = {s.subject_id: s for s in plan.subjects}
        out = []
        for i in which:
            c = plan.clips[i]
            out.append((c, clip_landmarks(subjects[c.subject_id], plans[c.subject_id], c)[2]))
        return out

    first = landmarks(0)
    for clip, lm in first:  # recomputed in this process == written by the CLI in the fixture
        side = load_sidecar(clip.video_path(tiny))["landmarks"]
        assert side.tobytes() == lm.tobytes()
    for (_, l0), (_, l1), (_, l2) in zip(first, landmarks(0), landmarks(1)):
        assert l0.tobytes() == l1.tobytes()
        assert l0.shape != l2.shape or l0.tobytes() != l2.tobytes()


def test_tts_produces_real_speech_with_monotonic_covering_phones():
    from emotalk.mini.tts import Voice, synthesize

    text = "The birch canoe slid on the smooth planks."
    sp = synthesize(text, Voice("en-us+f3", rate=170), lead=0.2, tail=0.25)
    a, sr = sp.audio, sp.sample_rate
    assert sr == 16000 and a.dtype == np.float32
    words = len(text.split())
    speech_s = sp.duration - 0.45
    assert 0.18 * words < speech_s < 0.6 * words, sp.duration
    # non-silent, with speech-like dynamics (loud voiced stretches and quiet gaps)
    env = np.sqrt(np.convolve(a ** 2, np.ones(320) / 320, mode="same"))
    assert env.max() > 0.05 and np.sqrt(np.mean(a ** 2)) > 0.02
    assert np.abs(a[: int(0.15 * sr)]).max() < 1e-3  # the lead is silent
    # phones: contiguous, monotonic, covering [0, duration]
    st = np.array([p.start for p in sp.phones])
    en = np.array([p.end for p in sp.phones])
    assert st[0] == 0.0 and abs(en[-1] - sp.duration) < 1e-6
    assert np.all(en > st) and np.allclose(st[1:], en[:-1])
    speech_phones = [p for p in sp.phones if not p.is_pause]
    assert len(speech_phones) >= 20 and {"b", "m", "p", "s"} <= {p.symbol for p in speech_phones}
    # every loud sample lies inside a speech phone (with 30 ms slack), and vowels are louder than pauses
    loud = np.nonzero(env > 0.1 * env.max())[0] / sr
    inside = np.zeros(len(loud), bool)
    for p in speech_phones:
        inside |= (loud >= p.start - 0.03) & (loud <= p.end + 0.03)
    assert inside.mean() > 0.99
    vowel_rms = np.mean([env[int(p.start * sr):int(p.end * sr)].mean() for p in speech_phones
                         if p.symbol[0] in "aeiouAEIOUV03@"])
    pause_rms = np.mean([env[int(p.start * sr):int(p.end * sr)].mean() for p in sp.phones if p.is_pause])
    assert vowel_rms > 20 * pause_rms
    # deterministic, and voices/prosody matter
    again = synthesize(text, Voice("en-us+f3", rate=170), lead=0.2, tail=0.25)
    assert np.array_equal(again.audio, a) and [(p.start, p.end) for p in again.phones] == list(zip(st, en))
    slow = synthesize(text, Voice("en-us+f3", rate=170).with_emotion("sad", 3))
    assert slow.duration > sp.duration + 0.2
    other = synthesize(text, Voice("en-us+m3", rate=170))
    assert len(other.audio) != len(a) or not np.allclose(other.audio, a)


def test_cli_rejects_a_photo_without_a_face(tmp_path, capsys):
    import cv2

    from emotalk.cli.main import main

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 200, 3), 180, np.uint8))
    code = main(["make-mini", "--out", str(tmp_path / "out"), "--size", "tiny", "--photos", str(blank), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "wall.png" in err and "no face" in err and "Traceback" not in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    code = main(["make-mini", "--out", str(full), "--size", "tiny", "--quiet"])
    assert code == 2 and "not empty" in capsys.readouterr().err and (full / "notes.txt").is_file()


def test_face_warp_only_touches_the_moving_box():
    """The per-frame warp remaps only the box the landmark triangles reach: inside it the maps equal the
    full-frame maps, outside it the frame is the photo itself, and the rest pose reproduces the photo."""
    from emotalk.data.face.warp import FaceWarper

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    tpl = canonical_template()
    neutral = (tpl - tpl.mean(0)) / np.ptp(tpl[:, 0]) * 60 + 64  # a 60-px-wide face in the middle
    warper = FaceWarper(img, neutral)
    np.testing.assert_array_equal(warper.warp(neutral), img)  # the rest pose is the identity
    moved = neutral.copy()
    moved[48:68, 1] += 3.0  # the mouth drops 3 px
    moved[17:27, 1] -= 2.0  # the brows rise 2 px
    box = warper.moving_box(moved)
    x0, y0, x1, y1 = box
    assert 0 < x0 < x1 < 128 and 0 < y0 < y1 < 128  # the border anchors' triangles stay out of it
    full_x, full_y = warper.maps(moved)
    part_x, part_y = warper.maps(moved, box)
    np.testing.assert_array_equal(part_x, full_x[y0:y1, x0:x1])
    np.testing.assert_array_equal(part_y, full_y[y0:y1, x0:x1])
    out = warper.warp(moved)
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], img[outside])
    assert np.abs(out.astype(int) - img).max() > 20  # and the face did move
