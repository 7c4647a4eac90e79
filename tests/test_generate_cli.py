"""``emotalk generate``: a working run, and every bad input -> one ``error:`` line, exit 2, nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emotalk.cli.main import main
from emotalk.data.io.media import probe_video, write_wav


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A photo, a speech wav and broken variants of both."""
    import cv2
    from PIL import Image

    from emotalk.mini.tts import synthesize
    from emotalk.data.io.photos import grace_hopper_path, public_domain_photos

    d = tmp_path_factory.mktemp("inputs")
    write_wav(d / "speech.wav", synthesize("Open the crate but don't break the glass.", seed=1).audio)
    (d / "corrupt.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (d / "empty.png").write_bytes(b"")
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(d / "noface.png")
    small = cv2.resize(public_domain_photos()["astronaut"], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    Image.fromarray(small).save(d / "smallface.png")  # a face of ~52 px
    (d / "corrupt.wav").write_bytes(b"RIFF" + np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (d / "empty.wav").write_bytes(b"")
    write_wav(d / "nosamples.wav", np.zeros(0, np.float32))
    (d / "afile.txt").write_text("not a folder\n")
    (d / "photo_dir").mkdir()
    return {"image": str(grace_hopper_path()), "audio": str(d / "speech.wav"), "dir": d}


def _run(capsys, args):
    code = main(["generate", *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_neural(tiny_checkpoints, inputs, tmp_path, capsys):
    out = tmp_path / "out" / "talk.mp4"
    code, stdout, _ = _run(capsys, ["--image", inputs["image"], "--audio", inputs["audio"], "--emotion", "happy",
                                    "--intensity", "2", "--out", out, "--checkpoints", tiny_checkpoints,
                                    "--finetune-steps", "2", "--size", "192", "--device", "cpu"])
    assert code == 0
    assert f"wrote {out}" in stdout
    info = probe_video(out)
    assert (info.width, info.height) == (512, 600) and info.has_audio and info.num_frames > 30
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.mp4"]


def test_generate_warp_with_blend_and_continuous_intensity(tiny_checkpoints, inputs, tmp_path, capsys):
    out = tmp_path / "warp.mp4"
    code, _, _ = _run(capsys, ["--image", inputs["image"], "--audio", inputs["audio"], "--emotion",
                               "happy:0.7,surprised:0.3", "--intensity", "2.5", "--renderer", "warp", "--no-blink",
                               "--out", out, "--checkpoints", tiny_checkpoints, "--quiet"])
    assert code == 0 and probe_video(out).num_frames > 30


def _copy_ckpts(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tb", "*.jsonl", "log.txt"))
    return dst


def _ckpt_files(root: Path, kind: str) -> tuple[Path, Path]:
    js = sorted((root / kind / "checkpoints").glob("step_*.json"))[-1]
    return js, js.with_suffix(".safetensors")


BAD = {
    # name: (argument changes, expected message part)
    "missing image": ({"--image": "nothere.jpg"}, "not found"),
    "corrupt image": ({"--image": "{d}/corrupt.jpg"}, "not a readable image"),
    "empty image": ({"--image": "{d}/empty.png"}, "empty"),
    "image is a folder": ({"--image": "{d}/photo_dir"}, "not a file"),
    "no face": ({"--image": "{d}/noface.png"}, "no face found"),
    "face too small": ({"--image": "{d}/smallface.png"}, "at least 64 pixels"),
    "missing audio": ({"--audio": "{d}/nothere.wav"}, "not found"),
    "empty audio": ({"--audio": "{d}/empty.wav"}, "empty"),
    "corrupt audio": ({"--audio": "{d}/corrupt.wav"}, "cannot decode the audio"),
    "zero-length audio": ({"--audio": "{d}/nosamples.wav"}, "no audio samples"),
    "unknown emotion": ({"--emotion": "joyful"}, "unknown emotion 'joyful'"),
    "bad blend": ({"--emotion": "happy:lots"}, "not a number"),
    "intensity too high": ({"--intensity": "7"}, "intensity must be between 1 and 3"),
    "intensity not a number": ({"--intensity": "high"}, "intensity must be a number"),
    "checkpoints missing": ({"--checkpoints": "{d}/no_checkpoints"}, "not found"),
    "output in a file": ({"--out": "{d}/afile.txt/out.mp4"}, "is a file"),
    "output is a folder": ({"--out": "{d}"}, "is a directory"),
    "bad size": ({"--size": "99"}, "size must be an even number"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_error_line(case, tiny_checkpoints, inputs, tmp_path, capsys):
    changes, message = BAD[case]
    d = inputs["dir"]
    out_dir = tmp_path / "out"
    args = {"--image": inputs["image"], "--audio": inputs["audio"], "--out": str(out_dir / "o.mp4"),
            "--checkpoints": str(tiny_checkpoints), "--finetune-steps": "0"}
    args.update({k: v.format(d=d) for k, v in changes.items()})
    code, stdout, err = _run(capsys, [x for kv in args.items() for x in kv])
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0], lines[0]
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    assert not (Path(d) / "o.mp4").exists()


def _broken_checkpoints(kind: str, tiny_checkpoints: Path, root: Path) -> Path:
    ck = _copy_ckpts(tiny_checkpoints, root / "ck")
    js, st = _ckpt_files(ck, "landmark")
    if kind == "corrupt weights":
        st.write_bytes(st.read_bytes()[:1000])
    elif kind == "corrupt metadata":
        js.write_text("{ not json")
    elif kind == "wrong kind":
        shutil.rmtree(ck / "landmark")
        shutil.copytree(ck / "texture", ck / "landmark")
    elif kind == "missing weights":
        st.unlink()
    elif kind == "features not computable":
        meta = json.loads(js.read_text())
        meta["feature_kind"] = "toy"
        js.write_text(json.dumps(meta))
    elif kind == "empty run folder":
        shutil.rmtree(ck / "texture")
        (ck / "texture").mkdir()
    return ck


CKPT = {"corrupt weights": "corrupt weights file", "corrupt metadata": "corrupt checkpoint metadata",
        "wrong kind": "is a 'texture' checkpoint", "missing weights": "no checkpoint found",
        "features not computable": "'toy' speech features", "empty run folder": "no checkpoint found"}


@pytest.mark.parametrize("case", list(CKPT))
def test_bad_checkpoint_is_one_error_line(case, tiny_checkpoints, inputs, tmp_path, capsys):
    ck = _broken_checkpoints(case, tiny_checkpoints, tmp_path)
    out = tmp_path / "out.mp4"
    code, _, err = _run(capsys, ["--image", inputs["image"], "--audio", inputs["audio"], "--out", out,
                                 "--checkpoints", ck, "--finetune-steps", "0"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert CKPT[case] in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".mp4" or p.name.startswith(".out")]
