"""Every command against bad input (issue 17 §1, §4): one table of cases, each run through the real CLI.

Each case must end with a non-zero exit code, exactly one ``error:`` line on stderr that names the bad
input and says what to do, no traceback, no new file or folder left behind and nothing of the user's
deleted or changed. The cases run the CLI in-process (``emotalk.cli.main.main``, like tests/test_cli.py)
so the whole table costs seconds; a few run as real subprocesses to prove that what a user sees has no
traceback either. No case needs a trained model: the checks run before any model is built.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emotalk.cli.main import main

REPO = Path(__file__).resolve().parents[1]


# --- the world the cases run in: a user's folder with good and bad files --------------------------------
def _write_float_wav(path: Path, samples: np.ndarray, sr: int = 16000) -> None:
    """A 32-bit float WAV (format 3): the only common kind of audio file that can hold NaN or inf."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE"
                     + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


def _checkpoint(run: Path, kind: str, config: dict, tensors: dict | None = None, raw_weights: bytes | None = None):
    """A small checkpoint in ``run/checkpoints`` (kind and config as given, a few weights)."""
    from safetensors.numpy import save_file

    d = run / "checkpoints"
    d.mkdir(parents=True)
    st = d / "step_00000001.safetensors"
    if raw_weights is not None:
        st.write_bytes(raw_weights)
    else:
        save_file(tensors or {"model/generator/w": np.zeros((4, 4), np.float32)}, str(st))
    (d / "step_00000001.json").write_text(json.dumps({"format_version": 1, "weights": st.name, "kind": kind,
                                                      "step": 1, "config": {"task": kind, **config}}))
    (run / "config.yaml").write_text(f"task: {kind}\n")
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from emotalk.data.datasets.toy import make_toy_dataset
    from emotalk.data.io.media import write_video, write_wav
    from emotalk.data.io.photos import grace_hopper_path

    w = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    shutil.copy(grace_hopper_path(), w / "photo.jpg")
    t = np.arange(16000) / 16000.0
    speech = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    write_wav(w / "speech.wav", speech)
    bad = speech.astype(np.float32).copy()
    bad[4000:4100] = np.nan
    _write_float_wav(w / "nan.wav", bad)
    bad = speech.astype(np.float32).copy()
    bad[123] = np.inf
    _write_float_wav(w / "inf.wav", bad)
    write_wav(w / "clipped.wav", np.full(16000, 32767, np.int16))  # pinned at full scale: loud-looking silence
    write_video(w / "clip.mp4", [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)], 25)
    shutil.copy(w / "clip.mp4", w / "video_named.jpg")
    (w / "notes.txt").write_text("my notes\n")
    (w / "empty_root").mkdir()
    (w / "a_file").write_text("not a folder\n")
    broken = w / "broken_root" / "clips" / "M001"
    broken.mkdir(parents=True)
    (broken / "neutral_level1_001.npz").write_bytes(b"PK\x03\x04 not really a zip")
    make_toy_dataset(w / "toy12", subjects=2, frames=20, feature_dim=12, window=6, seed=0)
    # a G_L run trained on 8-dim features (its checkpoint: the saved config; weights never get read)
    from emotalk.config import dump_config, plain
    from emotalk.train.tasks import load_train_config

    cfg = load_train_config("landmark/tiny", [f"train.run_dir={w / 'run8'}", f"data.root={w / 'toy12'}",
                                              "model.feature_dim=8", "model.window=6"])
    cfg_dict = plain(dataclasses.asdict(cfg))
    _checkpoint(w / "run8", "landmark", {k: v for k, v in cfg_dict.items() if k != "task"})
    (w / "run8" / "config.yaml").write_text(dump_config(cfg))
    _checkpoint(w / "texture_run", "texture", {"model": {"image_size": 64}})
    _checkpoint(w / "landmark_run", "landmark", {"model": {"d": 64}})
    _checkpoint(w / "absurd_config", "landmark", {"model": {"d": 10**9, "lstm_hidden": 10**9}})
    header = json.dumps({"model/generator/w": {"dtype": "F32", "shape": [100000, 100000],
                                               "data_offsets": [0, 40_000_000_000]}}).encode()
    _checkpoint(w / "absurd_header", "landmark", {"model": {}}, raw_weights=struct.pack("<Q", len(header)) + header
                + b"\0" * 16)
    # hostile and broken configs
    laughs = "task: landmark\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    (w / "laughs.yaml").write_text(laughs)
    with open(w / "huge.yaml", "w") as f:
        f.write("task: landmark\nx: [" + "1, " * 600_000 + "1]\n")
    (w / "broken.yaml").write_text("task: landmark\ntrain: {steps: [1, 2\n")
    return w


def _snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots`` -> content hash ('' for folders)."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = ""
            for f in filenames:
                p = os.path.join(dirpath, f)
                out[p] = hashlib.sha1(Path(p).read_bytes()).hexdigest()
    return out


# --- the table: name -> (argv with {w} for the user folder, words the error line must contain) ----------
G = ["generate", "--image", "{w}/photo.jpg", "--audio", "{w}/speech.wav", "--renderer", "warp",
     "--landmark-checkpoint", "{w}/landmark_run", "--device", "cpu", "--quiet"]
TRAIN = ["train", "--config", "landmark/tiny", "train.run_dir=runs/x", "data.root={w}/toy12", "train.progress=false"]
EVAL = ["evaluate", "--config", "eval/mead-mini", "data.root={w}/toy12", "out_dir=evalout", "progress=false"]
PRE = ["preprocess", "--dataset", "mead-mini", "--out", "processed", "--quiet"]


def _gen(**changes):
    argv = list(G)
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


CASES = {
    # generate: audio
    "generate: NaN audio": (_gen(audio="{w}/nan.wav"), ["nan.wav", "NaN or infinite", "export"]),
    "generate: inf audio": (_gen(audio="{w}/inf.wav"), ["inf.wav", "NaN or infinite"]),
    "generate: audio clipped to a flat line": (_gen(audio="{w}/clipped.wav"), ["clipped.wav", "clipped", "again"]),
    "generate: audio is a text file": (_gen(audio="{w}/notes.txt"), ["notes.txt", "WAV"]),
    "generate: audio missing": (_gen(audio="{w}/nothere.wav"), ["nothere.wav", "not found"]),
    # generate: output name
    "generate: --out .txt": (_gen(out="result.txt"), ["result.txt", ".txt", ".mp4"]),
    "generate: --out .avi": (_gen(out="result.avi"), ["result.avi", ".webm"]),
    "generate: --out without extension": (_gen(out="result"), ["result", "no extension", ".mp4"]),
    "generate: --out inside a file": (_gen(out="{w}/a_file/out.mp4"), ["a_file", "not a directory"]),
    "generate: --out is a folder": (_gen(out="{w}/empty_root"), ["empty_root", "directory"]),
    # generate: photo
    "generate: photo is a video file": (_gen(image="{w}/clip.mp4"), ["clip.mp4", "image"]),
    "generate: video named .jpg": (_gen(image="{w}/video_named.jpg"), ["video_named.jpg", "image"]),
    "generate: photo is a folder": (_gen(image="{w}/empty_root"), ["empty_root", "not a file"]),
    # generate: options and checkpoints
    "generate: intensity NaN": (_gen(intensity="nan"), ["intensity"]),
    "generate: finetune steps negative": (_gen(finetune_steps="-1"), ["finetune_steps"]),
    "generate: size 0": (_gen(size="0"), ["size"]),
    "generate: G_T checkpoint as G_L": (_gen(landmark_checkpoint="{w}/texture_run"),
                                        ["texture_run", "'texture' checkpoint", "landmark"]),
    "generate: checkpoint config with absurd sizes": (_gen(landmark_checkpoint="{w}/absurd_config"),
                                                      ["absurd_config", "far larger", "another checkpoint"]),
    "generate: safetensors header with absurd shapes": (_gen(landmark_checkpoint="{w}/absurd_header"),
                                                        ["absurd_header", "corrupt weights", "another checkpoint"]),
    "generate: checkpoint missing": (_gen(landmark_checkpoint="{w}/nothere"), ["nothere", "not found"]),
    # train: config values
    "train: lr 0": (TRAIN + ["optim.lr=0"], ["optim.lr", "positive"]),
    "train: lr negative": (TRAIN + ["optim.lr=-1e-3"], ["optim.lr", "positive"]),
    "train: lr not a number": (TRAIN + ["optim.lr=fast"], ["optim.lr", "number"]),
    "train: batch 0": (TRAIN + ["train.batch_size=0"], ["batch_size", ">= 1"]),
    "train: steps 0": (TRAIN + ["train.steps=0"], ["train.steps", ">= 1"]),
    "train: steps not an integer": (TRAIN + ["train.steps=many"], ["train.steps", "integer"]),
    "train: bool of the wrong type": (TRAIN + ["model.use_skip=maybe"], ["model.use_skip", "true/false"]),
    "train: unknown vertex norm": (TRAIN + ["loss.vertex_norm=l3"], ["loss.vertex_norm", "l2"]),
    "train: unknown device": (TRAIN + ["train.device=tpu"], ["tpu", "cpu"]),
    "train: unknown key": (TRAIN + ["optim.learning_rate=1"], ["optim.learning_rate", "lr"]),
    "train: betas out of range": (TRAIN + ["optim.betas=[0.5,1.5]"], ["optim.betas", "[0, 1)"]),
    # train: config files
    "train: config not found": (["train", "--config", "{w}/nothere.yaml"], ["nothere.yaml", "not found"]),
    "train: broken YAML": (["train", "--config", "{w}/broken.yaml"], ["broken.yaml", "YAML"]),
    "train: billion-laughs YAML": (["train", "--config", "{w}/laughs.yaml"], ["laughs.yaml", "aliases"]),
    "train: huge YAML": (["train", "--config", "{w}/huge.yaml"], ["huge.yaml", "too large"]),
    "train: config is a video": (["train", "--config", "{w}/clip.mp4"], ["clip.mp4", "not a text file"]),
    # train: data
    "train: data root empty": (TRAIN[:4] + ["data.root={w}/empty_root"], ["empty_root", "preprocess"]),
    "train: data root missing": (TRAIN[:4] + ["data.root={w}/nothere"], ["nothere", "preprocess"]),
    "train: data root is a file": (TRAIN[:4] + ["data.root={w}/a_file"], ["a_file", "preprocess"]),
    "train: clip unreadable": (TRAIN[:4] + ["data.root={w}/broken_root"], ["neutral_level1_001.npz"]),
    "train: resume with other feature size": (["train", "--resume", "{w}/run8", "data.root={w}/toy12"],
                                               ["feature_dim is 8", "12", "toy12", "new run"]),
    "train: resume a G_T run as G_L": (["train", "--config", "landmark/tiny", "--resume", "{w}/texture_run",
                                        "data.root={w}/toy12", "train.run_dir=runs/x"],
                                       ["texture_run", "'texture' checkpoint", "landmark"]),
    "train: resume from nothing": (["train", "--resume", "{w}/empty_root"], ["empty_root", "config"]),
    # train-emotion
    "train-emotion: G_L config": (["train-emotion", "--config", "landmark/tiny"], ["landmark/tiny", "train-emotion"]),
    "train-emotion: lr 0": (["train-emotion", "optim.lr=0"], ["optim.lr", "positive"]),
    "train-emotion: data root empty": (["train-emotion", "data.root={w}/empty_root", "train.run_dir=runs/e",
                                        "train.progress=false"], ["empty_root", "preprocess"]),
    # preprocess
    "preprocess: root missing": (PRE + ["--root", "{w}/nothere"], ["nothere"]),
    "preprocess: root empty": (PRE + ["--root", "{w}/empty_root"], ["empty_root"]),
    "preprocess: root is a file": (PRE + ["--root", "{w}/a_file"], ["a_file"]),
    "preprocess: out is a file": (["preprocess", "--dataset", "mead-mini", "--root", "{w}/empty_root", "--out",
                                   "{w}/notes.txt"], ["notes.txt"]),
    "preprocess: workers 0": (PRE + ["--root", "{w}/empty_root", "--workers", "0"], ["--workers"]),
    "preprocess: fps 0": (PRE + ["--root", "{w}/empty_root", "--fps", "0"], ["--fps"]),
    # make-mini
    "make-mini: out is a file": (["make-mini", "--out", "{w}/notes.txt", "--quiet"], ["notes.txt"]),
    "make-mini: out holds other data": (["make-mini", "--out", "{w}/toy12", "--quiet"], ["toy12"]),
    "make-mini: workers 0": (["make-mini", "--out", "mini", "--workers", "0"], ["--workers"]),
    "make-mini: photo missing": (["make-mini", "--out", "mini", "--photos", "{w}/nothere.jpg", "--quiet"],
                                 ["nothere.jpg"]),
    "make-mini: photo is a video": (["make-mini", "--out", "mini", "--photos", "{w}/clip.mp4", "--quiet"],
                                    ["clip.mp4"]),
    # finetune
    "finetune: G_L checkpoint": (["finetune", "--checkpoint", "{w}/landmark_run", "--image", "{w}/photo.jpg",
                                  "--out", "adapted", "--device", "cpu"], ["landmark_run", "'landmark' checkpoint"]),
    "finetune: steps negative": (["finetune", "--checkpoint", "{w}/texture_run", "--image", "{w}/photo.jpg",
                                  "--out", "adapted", "--steps", "-1"], ["--steps"]),
    "finetune: lr 0": (["finetune", "--checkpoint", "{w}/texture_run", "--image", "{w}/photo.jpg",
                        "--out", "adapted", "--lr", "0"], ["--lr", "positive"]),
    "finetune: photo is a video": (["finetune", "--checkpoint", "{w}/texture_run", "--image", "{w}/clip.mp4",
                                    "--out", "adapted", "--device", "cpu"], ["clip.mp4", "image"]),
    # evaluate
    "evaluate: subject that does not exist": (EVAL + ["data.subjects=[NOBODY]"], ["NOBODY", "T000"]),
    "evaluate: metric that does not exist": (EVAL + ["metric_names=[psnr,nope]"], ["nope"]),
    "evaluate: renderer that does not exist": (EVAL + ["methods=[{name: X, renderer: nope}]"], ["nope", "neural"]),
    "evaluate: data root empty": (EVAL[:3] + ["data.root={w}/empty_root", "out_dir=evalout"], ["empty_root"]),
    "evaluate: G_T checkpoint as G_L": (EVAL + ["data.subjects=[T000]", "metric_names=[psnr]", "save_videos=0",
                                               "allow_seen_subjects=true",
                                               "grid.enabled=false",
                                               "methods=[{name: W, renderer: warp, landmark: {w}/texture_run}]"],
                                        ["texture_run", "'texture' checkpoint"]),
    # demo
    "demo: out is a file": (["demo", "--out", "{w}/notes.txt", "--quiet"], ["notes.txt"]),
    "demo: workers 0": (["demo", "--out", "d", "--workers", "0", "--quiet"], ["--workers"]),
    "demo: finetune steps negative": (["demo", "--out", "d", "--finetune-steps", "-1", "--quiet"],
                                      ["--finetune-steps"]),
    "demo: landmark steps 0": (["demo", "--out", "d", "--landmark-steps", "0", "--quiet"], ["--landmark-steps"]),
    # app (refused before the page is built or a port is opened)
    "app: port out of range": (["app", "--port", "70000", "--no-examples"], ["--port", "65535"]),
    "app: concurrency 0": (["app", "--concurrency", "0", "--no-examples"], ["--concurrency"]),
    "app: max seconds NaN": (["app", "--max-seconds", "nan", "--no-examples"], ["--max-seconds"]),
}


def _argv(template: list[str], w: Path) -> list[str]:
    return [a.replace("{w}", str(w)) for a in template]


def _check(code: int, err: str, words: list[str], w: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    for word in words:
        assert word.replace("{w}", str(w)) in errors[0], (word, errors[0])


def _too_slow(signum, frame):
    raise AssertionError("the command started working instead of refusing its input")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, world, tmp_path, monkeypatch, capsys):
    template, words = CASES[name]
    if name.startswith("app:"):
        pytest.importorskip("gradio")  # the optional [app] extra
    monkeypatch.chdir(tmp_path)  # default outputs (runs/, out.mp4, ...) land here
    before = _snapshot(world, tmp_path)
    signal.signal(signal.SIGALRM, _too_slow)
    signal.alarm(60)  # a refusal takes a second: a case that starts real work fails instead of running on
    try:
        code = main(_argv(template, world))
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    finally:
        signal.alarm(0)
    err = capsys.readouterr().err
    _check(code, err, words, world)
    after = _snapshot(world, tmp_path)
    assert sorted(set(after) - set(before)) == [], "left behind"
    assert sorted(set(before) - set(after)) == [], "deleted"
    assert {k: after[k] for k in before} == before, "changed"


def test_the_table_covers_every_command_and_is_large():
    from emotalk.cli.main import COMMANDS

    commands = {name.split(":")[0] for name in CASES}
    assert len(CASES) >= 40
    assert commands >= {c for c in COMMANDS if c not in ("deepspeech-info", "app")}


@pytest.mark.slow  # a fresh interpreter importing torch: seconds each
@pytest.mark.parametrize("name", ["generate: NaN audio", "train: billion-laughs YAML"])
def test_a_user_sees_one_line_and_no_traceback(name, world, tmp_path):
    """The same refusals through a real process (what a shell user sees)."""
    template, words = CASES[name]
    proc = subprocess.run([sys.executable, "-m", "emotalk", *_argv(template, world)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    _check(proc.returncode, proc.stderr, words, world)
    assert list(tmp_path.iterdir()) == []


# --- hostile files (§4) -------------------------------------------------------------------------------
def test_billion_laughs_is_refused_fast_with_bounded_memory(world):
    import resource
    import time

    from emotalk.config import load_config
    from emotalk.errors import ConfigError
    from emotalk.train.tasks import TRAIN_CONFIGS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_config(world / "laughs.yaml", schema=TRAIN_CONFIGS)
    assert time.perf_counter() - t < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 50_000  # kB: nothing expanded


def test_yaml_aliases_within_reason_still_work(tmp_path):
    from emotalk.config import safe_yaml

    assert safe_yaml("a: &x {b: 1}\nc: *x\n", "t") == {"a": {"b": 1}, "c": {"b": 1}}
    from emotalk.errors import ConfigError

    with pytest.raises(ConfigError, match="itself"):
        safe_yaml("a: &x [1, *x]\n", "t")


@functools.lru_cache(maxsize=1)
def _package_trees() -> tuple:
    """The syntax trees of the package's modules that can load or unpickle anything (the text filter only
    saves parsing time: a module without these words calls neither)."""
    out = []
    for path in sorted((REPO / "emotalk").rglob("*.py")):
        text = path.read_text()
        if ".load" in text or "pickle" in text:
            out.append((path, ast.parse(text)))
    return tuple(out)


def _calls(name: str):
    """Every call of ``*.load`` on module ``name`` (np / numpy / torch) in the package, with its keywords."""
    for path, tree in _package_trees():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in name.split("|")):
                yield f"{path.relative_to(REPO)}:{node.lineno}", {k.arg: k.value for k in node.keywords}


def test_torch_load_is_always_weights_only():
    calls = list(_calls("torch"))
    assert calls, "expected the package to read some .pth weights"
    for where, kw in calls:
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where


def test_npz_is_never_loaded_with_pickle():
    calls = list(_calls("np|numpy"))
    assert calls
    for where, kw in calls:
        assert isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False, where
    for path, tree in _package_trees():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle"} & set(names), path


# --- concurrency (§3): the run-folder lock -----------------------------------------------------------
def test_a_second_trainer_into_a_live_run_folder_refuses(tmp_path, capsys, monkeypatch):
    from emotalk.utils.lock import FolderLock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/x").mkdir(parents=True)
    holder = ("import fcntl, os, sys, time\n"
              f"fd = os.open({str(tmp_path / 'runs/x/.emotalk.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
              "os.write(fd, ('{\"pid\": %d, \"purpose\": \"training landmark\"}' % os.getpid()).encode())\n"
              "print('locked', flush=True)\n"
              "time.sleep(60)\n")
    owner = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "locked"
        code = main(["train", "--config", "landmark/tiny", "train.run_dir=runs/x", "data.root=nowhere"])
        err = capsys.readouterr().err
        _check(code, err, [f"process {owner.pid}", "runs/x", "wait"], tmp_path)
        assert (tmp_path / "runs/x/.emotalk.lock").is_file()  # the owner's lock is left alone
    finally:
        owner.kill()
        owner.wait()
    # the owner is gone: its lock is stale and taken over (then released)
    with FolderLock(tmp_path / "runs/x", "test") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "runs/x/.emotalk.lock").exists()
