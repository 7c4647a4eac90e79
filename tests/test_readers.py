"""Dataset readers: naming schemes (table-driven), folder quirks, pairing of audio and video, splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotalk.data.emotions import EMOTIONS
from emotalk.data.preprocess.names import BadName, parse_crema_d_name, parse_mead_path, parse_ravdess_name
from emotalk.data.preprocess.readers import (MEAD_MINI_VERSION, read_crema_d, read_dataset, read_mead,
                                             read_mead_mini, read_ravdess)
from emotalk.errors import DataError, InputError


def touch(root: Path, rel: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


# ------------------------------------------------------------------------------------------------ MEAD
@pytest.mark.parametrize("path, kind, emotion, level, sentence", [
    ("video/front/angry/level_3/014.mp4", "video", "angry", 3, "014"),
    ("video/front/neutral/level_1/001.mp4", "video", "neutral", 1, "001"),
    ("video/front/contempt/level_2/030.mp4", "video", "contempt", 2, "030"),
    ("video/front/disgusted/level_1/007.mp4", "video", "disgusted", 1, "007"),
    ("video/front/surprised/level_3/022.mp4", "video", "surprised", 3, "022"),
    ("video/M030/front/fear/level_2/005.mp4", "video", "fear", 2, "005"),  # one folder deeper
    ("audio/happy/level_1/001.m4a", "audio", "happy", 1, "001"),
    ("audio/sad/level_3/029.wav", "audio", "sad", 3, "029"),  # mead-mini writes .wav
])
def test_mead_names(path, kind, emotion, level, sentence):
    info = parse_mead_path(path, kind)
    assert (info["emotion"], info["intensity"], info["sentence"]) == (emotion, level, sentence)
    if kind == "video":
        assert info["view"] == "front"


@pytest.mark.parametrize("path, kind, why", [
    ("video/front/angry/level_4/001.mp4", "video", "outside 1..3"),
    ("video/front/neutral/level_2/001.mp4", "video", "neutral has only level_1"),
    ("video/front/bored/level_1/001.mp4", "video", "unknown emotion"),
    ("video/front/angry/level_1/1.mp4", "video", "3-digit"),
    ("video/front/angry/intensity_1/001.mp4", "video", "not an intensity level"),
    ("video/sideways/angry/level_1/001.mp4", "video", "camera view"),
    ("video/front/angry/level_1/001.txt", "video", "extension"),
    ("audio/angry/level_1/001.mp4", "audio", "extension"),
    ("001.mp4", "video", "expected"),
])
def test_mead_bad_names(path, kind, why):
    with pytest.raises(BadName) as e:
        parse_mead_path(path, kind)
    assert why in e.value.reason
    assert isinstance(e.value, DataError)


def test_read_mead_tree(tmp_path):
    root = tmp_path / "MEAD"
    for s in ("001", "002", "003", "004"):
        touch(root, f"M003/video/front/angry/level_3/{s}.mp4")
        touch(root, f"M003/audio/angry/level_3/{s}.m4a")
    touch(root, "M003/video/front/neutral/level_1/001.mp4")
    touch(root, "M003/audio/neutral/level_1/001.m4a")
    touch(root, "M003/video/left_30/angry/level_3/001.mp4")  # other camera: ignored
    touch(root, "M003/video/front/angry/level_9/001.mp4")  # bad level: rejected
    # quirk: W017's videos sit one folder deeper; its audio is missing -> the video's own track
    touch(root, "W017/video/W017/front/happy/level_2/010.mp4")
    touch(root, "W017/audio/happy/level_2/011.m4a")
    listing = read_mead(root, test_last=2)
    by_id = {(r.subject, r.clip_id): r for r in listing.records}
    assert set(by_id) == {("M003", "angry_level3_001"), ("M003", "angry_level3_002"),
                          ("M003", "angry_level3_003"), ("M003", "angry_level3_004"),
                          ("M003", "neutral_level1_001"), ("W017", "happy_level2_010")}
    r = by_id[("M003", "angry_level3_002")]
    assert (r.emotion, r.intensity, r.sentence) == ("angry", 3, "002")
    assert r.video.name == "002.mp4" and r.audio.name == "002.m4a"
    assert by_id[("W017", "happy_level2_010")].audio is None
    assert by_id[("M003", "neutral_level1_001")].neutral_reference
    assert not r.neutral_reference
    # last 2 sentences of the (M003, angry, 3) group are test; a 1-clip group stays train
    assert [by_id[("M003", f"angry_level3_00{i}")].split for i in range(1, 5)] == ["train", "train", "test", "test"]
    assert by_id[("M003", "neutral_level1_001")].split == "train"
    assert any("level 9 outside" in rj.reason for rj in listing.rejected)
    assert read_mead(root, subjects=["W017"]).subjects == ["W017"]
    assert all(r.emotion in EMOTIONS for r in listing.records)


def test_read_mead_mini_splits(tmp_path):
    root = tmp_path / "mini"
    for subj in ("S01", "S02"):
        touch(root, f"{subj}/video/front/neutral/level_1/001.mp4")
        touch(root, f"{subj}/audio/neutral/level_1/001.wav")
    (root / "mini.json").write_text(json.dumps({"splits": {"train": ["S01"], "test": ["S02"]}}))
    listing = read_dataset("mead-mini", root)
    assert {r.subject: r.split for r in listing.records} == {"S01": "train", "S02": "test"}
    assert listing.records[0].audio.suffix == ".wav"
    assert listing.extra["subject_splits"] == {"train": ["S01"], "test": ["S02"]}
    (root / "mini.json").write_text("{broken")
    with pytest.raises(DataError, match="mini.json"):
        read_mead_mini(root)
    # data made by an older generator (other ground-truth motion) must be regenerated, not mixed in
    (root / "mini.json").write_text(json.dumps({"format_version": 1, "splits": {}}))
    with pytest.raises(DataError, match="make-mini"):
        read_mead_mini(root)
    # 2 -> 3 changed only the rendering (same ground truth): version 2 data is still read
    for version in (2, MEAD_MINI_VERSION):
        (root / "mini.json").write_text(json.dumps({"format_version": version, "splits": {}}))
        assert len(read_mead_mini(root).records) == 2


# ------------------------------------------------------------------------------------------------ CREMA-D
@pytest.mark.parametrize("name, subject, sentence, emotion, level", [
    ("1001_DFA_ANG_XX.flv", "1001", "DFA", "angry", 2),
    ("1091_IEO_HAP_HI.flv", "1091", "IEO", "happy", 3),
    ("1012_IEO_SAD_LO.wav", "1012", "IEO", "sad", 1),
    ("1033_IEO_FEA_MD.mp4", "1033", "IEO", "fear", 2),
    ("1050_TSI_NEU_XX.flv", "1050", "TSI", "neutral", 1),
    ("1076_WSI_DIS_XX", "1076", "WSI", "disgusted", 2),
])
def test_crema_d_names(name, subject, sentence, emotion, level):
    info = parse_crema_d_name(name)
    assert (info["subject"], info["sentence"], info["emotion"], info["intensity"]) == \
        (subject, sentence, emotion, level)


@pytest.mark.parametrize("name, why", [
    ("1001_DFA_ANG.flv", "not a CREMA-D name"),
    ("1001_XYZ_ANG_XX.flv", "sentence code"),
    ("1001_DFA_BOR_XX.flv", "emotion code"),
    ("1001_DFA_ANG_ZZ.flv", "intensity code"),
    ("0999_DFA_ANG_XX.flv", "actor id"),
    ("angry_clip.flv", "not a CREMA-D name"),
])
def test_crema_d_bad_names(name, why):
    with pytest.raises(BadName) as e:
        parse_crema_d_name(name)
    assert why in e.value.reason


def test_read_crema_d_tree(tmp_path):
    root = tmp_path / "CREMA-D"
    touch(root, "VideoFlash/1001_DFA_ANG_XX.flv")
    touch(root, "AudioWAV/1001_DFA_ANG_XX.wav")
    touch(root, "VideoFlash/1001_DFA_NEU_XX.flv")  # no wav -> video track
    touch(root, "VideoFlash/1002_IEO_HAP_HI.flv")
    touch(root, "VideoMP4/1002_IEO_HAP_HI.mp4")  # mp4 copy wins
    touch(root, "VideoFlash/README_clip.flv")
    listing = read_crema_d(root)
    recs = {r.clip_id: r for r in listing.records}
    assert set(recs) == {"1001_DFA_ANG_XX", "1001_DFA_NEU_XX", "1002_IEO_HAP_HI"}
    assert recs["1001_DFA_ANG_XX"].audio.name == "1001_DFA_ANG_XX.wav"
    assert recs["1001_DFA_NEU_XX"].audio is None and recs["1001_DFA_NEU_XX"].neutral_reference
    assert recs["1002_IEO_HAP_HI"].video.suffix == ".mp4"
    assert recs["1002_IEO_HAP_HI"].intensity == 3 and recs["1002_IEO_HAP_HI"].split == "test"
    assert [Path(rj.path).name for rj in listing.rejected] == ["README_clip.flv"]
    assert read_dataset("crema-d", root, subjects=["1002"]).subjects == ["1002"]


# ------------------------------------------------------------------------------------------------ RAVDESS
@pytest.mark.parametrize("name, emotion, level, subject, original", [
    ("01-01-06-01-02-01-12.mp4", "fear", 2, "Actor_12", "fear"),
    ("02-01-05-02-01-02-01.mp4", "angry", 3, "Actor_01", "angry"),
    ("01-01-02-02-01-01-03.mp4", "neutral", 1, "Actor_03", "calm"),
    ("01-01-01-01-01-01-01.mp4", "neutral", 1, "Actor_01", "neutral"),
    ("01-01-08-02-02-02-24.mp4", "surprised", 3, "Actor_24", "surprised"),
    ("03-01-07-01-01-01-05.wav", "disgusted", 2, "Actor_05", "disgusted"),
    ("01-02-03-01-01-01-10.mp4", "happy", 2, "Actor_10", "happy"),
    ("01-01-04-02-02-01-11.mp4", "sad", 3, "Actor_11", "sad"),
])
def test_ravdess_names(name, emotion, level, subject, original):
    n = parse_ravdess_name(name)
    assert (n.emotion, n.intensity, n.subject, n.original_emotion) == (emotion, level, subject, original)


@pytest.mark.parametrize("name, why", [
    ("01-01-09-01-01-01-01.mp4", "emotion 09"),
    ("01-01-01-02-01-01-01.mp4", "neutral has no strong"),
    ("04-01-03-01-01-01-01.mp4", "modality 04"),
    ("01-03-03-01-01-01-01.mp4", "vocal channel 03"),
    ("01-01-03-03-01-01-01.mp4", "intensity 03"),
    ("01-01-03-01-03-01-01.mp4", "statement 03"),
    ("01-01-03-01-01-03-01.mp4", "repetition 03"),
    ("01-01-03-01-01-01-25.mp4", "actor 25"),
    ("01-01-03-01-01-01.mp4", "seven 2-digit fields"),
    ("1-1-3-1-1-1-1.mp4", "seven 2-digit fields"),
])
def test_ravdess_bad_names(name, why):
    with pytest.raises(BadName) as e:
        parse_ravdess_name(name)
    assert why in e.value.reason


def test_read_ravdess_tree(tmp_path):
    root = tmp_path / "RAVDESS"
    v = "Video_Speech_Actor_01/Actor_01"
    touch(root, f"{v}/01-01-03-01-01-01-01.mp4")  # AV
    touch(root, f"{v}/02-01-03-01-01-01-01.mp4")  # video-only copy of the same take
    touch(root, "Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-01.wav")
    touch(root, f"{v}/02-01-05-02-02-02-01.mp4")  # video-only, no audio file -> audio None
    touch(root, f"{v}/01-01-02-01-01-01-01.mp4")  # calm
    touch(root, f"{v}/01-01-01-01-01-01-01.mp4")  # neutral
    touch(root, "Video_Song_Actor_01/Actor_01/01-02-03-01-01-01-01.mp4")  # song: excluded by default
    touch(root, f"{v}/01-01-03-01-01-01-01.wav")  # a wav with an AV modality: rejected
    listing = read_ravdess(root)
    recs = {r.clip_id: r for r in listing.records}
    assert set(recs) == {"01-01-03-01-01-01-01", "02-01-05-02-02-02-01", "01-01-02-01-01-01-01",
                         "01-01-01-01-01-01-01"}
    happy = recs["01-01-03-01-01-01-01"]
    assert happy.audio.name == "03-01-03-01-01-01-01.wav" and happy.emotion == "happy"
    assert recs["02-01-05-02-02-02-01"].audio is None
    calm = recs["01-01-02-01-01-01-01"]
    assert calm.emotion == "neutral" and calm.extra["original_emotion"] == "calm" and not calm.neutral_reference
    assert recs["01-01-01-01-01-01-01"].neutral_reference
    assert listing.extra["excluded"] == {"song": 1}
    assert any("does not match" in rj.reason for rj in listing.rejected)
    no_calm = read_ravdess(root, include_calm=False, include_song=True)
    ids = {r.clip_id for r in no_calm.records}
    assert "01-01-02-01-01-01-01" not in ids and "01-02-03-01-01-01-01" in ids


def test_read_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="unknown dataset"):
        read_dataset("voxceleb", tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        read_dataset("mead", tmp_path / "missing")
    touch(tmp_path / "m", "M003/video/front/angry/level_1/001.mp4")
    listing = read_dataset("mead", tmp_path / "m", subjects=["M003", "M999"])
    assert listing.extra["missing_subjects"] == ["M999"]
