"""Crash safety and a full disk (issue 17 §2, §5): SIGKILL in the middle of a command, then the same
command again, ends where an uninterrupted run ends; a lowered file-size limit ends with one "no space"
line and no partial file.

The commands run in forked children (the test process has torch imported, so a child starts in
milliseconds instead of the seconds a fresh interpreter needs). A child runs in its own process group so
that SIGKILL reaches everything it started (ffmpeg, the espeak server). Slow tier: the tiny mead-mini data
and checkpoints of tests/conftest.py are shared with the other slow tests.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _fork(fn, log: Path, fsize: int | None = None, kill_when=None, timeout: float = 120.0) -> tuple[int | None, str]:
    """Run ``fn()`` (returning an exit code) in a forked child with stdout/stderr into ``log``; optionally
    under a file-size limit (SIGXFSZ ignored, so writes fail with EFBIG as on a full disk), or SIGKILLed
    (with everything it started) as soon as ``kill_when()`` is true. Returns (exit code or None if killed,
    the child's output)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 70
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            code = fn()
        except BaseException:  # noqa: BLE001 - report anything, exit non-zero
            traceback.print_exc()
            code = 71
        finally:
            sys.stdout.flush()
            os._exit(int(code or 0))
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if (kill_when is not None and kill_when()) or time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            killed = True
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever the child left running (ffmpeg, the espeak server)
    except ProcessLookupError:
        pass
    text = log.read_text()
    if killed:
        return None, text
    return os.waitstatus_to_exitcode(status), text


def _cli(argv):
    def run():
        from emotalk.cli.main import main

        return main([str(a) for a in argv])
    return run


def _hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if p.name != ".emotalk.lock")


# --- training: SIGKILL while a checkpoint is being written -----------------------------------------
LANDMARK = ["train.steps=6", "train.ckpt_every=2", "train.log_every=1", "train.val_every=0", "train.val_batches=1",
            "train.batch_size=8", "train.progress=false", "train.tensorboard=false", "loss.lambda_gan=0",
            "model.d=16", "model.lstm_hidden=16", "model.lstm_layers=1", "model.gcn_channels=[8,16]",
            "validation.expression_every=1000"]
TEXTURE = ["train.steps=4", "train.ckpt_every=2", "train.log_every=1", "train.val_every=0", "train.val_batches=1",
           "train.batch_size=2", "train.progress=false", "train.tensorboard=false", "model.image_size=64",
           "loss.lambda_per=0", "loss.lambda_adv=0"]


def _losses(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["split"] == "train"]


def _weights(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    final = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    return {k: v for k, v in load_file(str(final)).items() if k.startswith("model/")}


@pytest.fixture(scope="module")
def references(tiny_mini_data, tmp_path_factory):
    """Uninterrupted runs of both tasks: their loss rows and final weights."""
    from emotalk.train.tasks import train_from_config

    out = {}
    for config, overrides in (("landmark/tiny", LANDMARK), ("texture/tiny", TEXTURE)):
        run = tmp_path_factory.mktemp("reference") / "run"
        train_from_config(config, [f"data.root={tiny_mini_data.processed}", f"train.run_dir={run}", *overrides])
        out[config] = run
    return out


@pytest.mark.parametrize("config, overrides, kill_at", [("landmark/tiny", LANDMARK, 4), ("texture/tiny", TEXTURE, 4)])
def test_training_killed_mid_checkpoint_resumes_bit_identically(config, overrides, kill_at, references,
                                                                 tiny_mini_data, tmp_path, caplog):
    from emotalk.data.io import checkpoint as ckpt
    from emotalk.train.tasks import train_from_config

    run = tmp_path / "run"

    def killed_while_saving():
        real = ckpt.atomic_write_json

        def json_then_die(path, obj):  # the weights of step `kill_at` are on disk, its JSON is not
            if obj.get("step") == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, obj)
        ckpt.atomic_write_json = json_then_die
        train_from_config(config, [f"data.root={tiny_mini_data.processed}", f"train.run_dir={run}", *overrides])
        return 0

    code, text = _fork(killed_while_saving, tmp_path / "child.log")
    assert code == -signal.SIGKILL, text
    assert (run / f"checkpoints/step_{kill_at:08d}.safetensors").is_file()
    assert not (run / f"checkpoints/step_{kill_at:08d}.json").exists()  # half-written: never read
    assert (run / ".emotalk.lock").is_file()  # the dead trainer's lock

    with caplog.at_level("WARNING"):
        trainer, _ = train_from_config(None, [], resume=str(run))
    assert "no longer running" in caplog.text  # the stale lock was taken over
    assert trainer.step == int(next(o for o in overrides if o.startswith("train.steps=")).split("=")[1])
    assert _losses(run) == _losses(references[config])  # bit-identical floats, every step
    ref = _weights(references[config])
    got = _weights(run)
    assert ref.keys() == got.keys() and all(np.array_equal(ref[k], got[k]) for k in ref)
    assert _hidden(run) == [] and not (run / ".emotalk.lock").exists()


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(references, tmp_path, caplog):
    from emotalk.train.tasks import train_from_config

    run = tmp_path / "run"
    shutil.copytree(references["landmark/tiny"], run)
    newest = run / "checkpoints/step_00000006.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a disk error, a bad copy
    with caplog.at_level("WARNING"):
        trainer, _ = train_from_config(None, ["train.steps=6"], resume=str(run))
    assert "step_00000006" in caplog.text and "previous checkpoint step_00000004.json" in caplog.text
    assert _losses(run) == _losses(references["landmark/tiny"])


# --- preprocess and make-mini: SIGKILL at any moment, then the same command again -----------------------
def _npz_arrays(path: Path) -> dict:
    """A clip's arrays; its free-form JSON without the stage timings (``seconds``), which differ run to run."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if "extra_json" in out:
        extra = json.loads(str(out["extra_json"]))
        extra.pop("seconds", None)
        out["extra_json"] = np.array(json.dumps(extra, sort_keys=True))
    return out


def test_preprocess_killed_then_rerun_equals_an_uninterrupted_run(tiny_mini_data, tmp_path):
    from emotalk.data.io.clip import load_clip
    from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset

    def run(out):
        def go():
            preprocess_dataset("mead-mini", tiny_mini_data.raw, out, subjects=["W001"], workers=1,
                               options=PreprocessOptions(features="mel"), progress=False)
            return 0
        return go

    ref, out = tmp_path / "reference", tmp_path / "processed"
    run(ref)()  # uninterrupted (its own, not the fixture's: a cached fixture may come from older code)
    code, text = _fork(run(out), tmp_path / "child.log",
                       kill_when=lambda: len(list(out.glob("clips/*/[!.]*.npz"))) >= 2)
    assert code is None, text
    for clip in out.glob("clips/*/[!.]*.npz"):  # whatever is visible is whole (hidden: temp files)
        load_clip(clip)
    code, text = _fork(run(out), tmp_path / "child2.log")
    assert code == 0, text
    want = sorted(str(p.relative_to(ref)) for p in ref.rglob("*.npz"))
    assert want and sorted(str(p.relative_to(out)) for p in out.rglob("*.npz")) == want
    for rel in want:
        a, b = _npz_arrays(ref / rel), _npz_arrays(out / rel)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), rel
    assert _hidden(out) == [] and not (out / ".emotalk.lock").exists()


def test_make_mini_killed_then_rerun_equals_an_uninterrupted_run(tiny_mini_data, tmp_path):
    from emotalk.mini.generator import generate_mini

    out = tmp_path / "mini"

    def run():
        generate_mini(out, "tiny", seed=0, workers=1, progress=False)
        return 0

    code, text = _fork(run, tmp_path / "child.log", kill_when=lambda: len(list(out.rglob("[!.]*.wav"))) >= 1)
    assert code is None, text
    code, text = _fork(run, tmp_path / "child2.log")
    assert code == 0, text
    assert _hidden(out) == []  # the killed run's temp files were cleared
    ref = tiny_mini_data.raw
    files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file() and p.name != "mini.json")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "mini.json") == files
    for rel in files:
        if rel.endswith(".npz"):
            a, b = _npz_arrays(ref / rel), _npz_arrays(out / rel)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), rel
        elif rel.endswith(".wav"):
            assert (ref / rel).read_bytes() == (out / rel).read_bytes(), rel


# --- a full disk ------------------------------------------------------------------------------------
def _inputs(tmp_path: Path, seconds: float = 1.0) -> tuple[Path, Path]:
    """A speech-like wav and a half-size portrait (256x300: the warp renderer's frames cost less)."""
    from PIL import Image

    from emotalk.data.io.media import write_wav
    from emotalk.data.io.photos import grace_hopper_path

    t = np.arange(int(16000 * seconds)) / 16000.0
    write_wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)))
    with Image.open(grace_hopper_path()) as im:
        im.convert("RGB").resize((im.width // 2, im.height // 2)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", tmp_path / "speech.wav"


def _one_no_space_line(code, text):
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code not in (0, None), text
    assert "Traceback" not in text, text
    assert len(errors) == 1 and "no space" in errors[0], text
    return errors[0]


def test_disk_full_while_training_leaves_nothing(tiny_mini_data, tmp_path):
    run = tmp_path / "runs" / "lm"
    code, text = _fork(_cli(["train", "--config", "landmark/tiny", f"data.root={tiny_mini_data.processed}",
                             f"train.run_dir={run}", *LANDMARK]), tmp_path / "child.log", fsize=20_000)
    line = _one_no_space_line(code, text)
    assert "step_00000002" in line
    assert not (tmp_path / "runs").exists()  # the new run folder held no checkpoint: removed


def test_disk_full_while_preprocessing_leaves_no_partial_clip(tiny_mini_data, tmp_path):
    out = tmp_path / "processed"
    code, text = _fork(_cli(["preprocess", "--dataset", "mead-mini", "--root", tiny_mini_data.raw, "--out", out,
                             "--features", "mel", "--quiet"]), tmp_path / "child.log", fsize=20_000)
    _one_no_space_line(code, text)
    assert list(out.rglob("*.npz")) == [] and _hidden(out) == []


def test_disk_full_while_generating_leaves_no_partial_video(tiny_checkpoints, tmp_path):
    photo, speech = _inputs(tmp_path, seconds=0.5)  # the temp wav (16 kB) fits under the limit, the video not
    out = tmp_path / "out" / "talk.mp4"
    code, text = _fork(_cli(["generate", "--image", photo, "--audio", speech,
                             "--renderer", "warp", "--checkpoints", tiny_checkpoints, "--out", out, "--quiet",
                             "--device", "cpu"]), tmp_path / "child.log", fsize=24_000)
    line = _one_no_space_line(code, text)
    assert "talk.mp4" in line
    assert not out.exists() and _hidden(out.parent) == []


# --- two generate calls writing the same --out --------------------------------------------------------
def test_two_generates_to_the_same_out_never_corrupt_it(tiny_checkpoints, tmp_path):
    from emotalk.data.io.media import probe_video

    photo, speech = _inputs(tmp_path)
    out = tmp_path / "same.mp4"
    argv = ["generate", "--image", photo, "--audio", speech, "--renderer", "warp",
            "--checkpoints", tiny_checkpoints, "--out", out, "--quiet", "--device", "cpu"]
    pids = []
    for i in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the children
            code = 71
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                code = _cli(argv + ["--emotion", ("happy", "sad")[i]])()
            finally:
                os._exit(int(code or 0))
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0]
    info = probe_video(out)  # one whole video: the last rename won
    assert abs(info.duration - 1.0) < 0.1 and info.num_frames > 20 and info.has_audio
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "same.mp4", "speech.wav"]  # no temp left


# --- evaluate: SIGKILL mid-run, then again -------------------------------------------------------------
def test_evaluate_killed_then_rerun_writes_the_tables_of_an_uninterrupted_run(tiny_mini_data, tmp_path):
    from emotalk.config import load_config
    from emotalk.eval.evaluate import EvalConfig, evaluate

    mini = json.loads((tiny_mini_data.raw / "mini.json").read_text())

    def config(out: Path) -> EvalConfig:  # rows that need no generator: static photo and the real video
        return load_config("eval/mead-mini", schema=EvalConfig, overrides=[
            f"data.root={tiny_mini_data.processed}", f"data.subjects=[{mini['splits']['test'][0]}]",
            "data.clips_per_subject=1", f"out_dir={out}", "progress=false", "metric_names=[psnr]",
            "grid.enabled=false", "methods=[{name: Static, renderer: static, tables: [table2]},"
                                  " {name: Ground truth, renderer: reference, tables: [table2]}]"])

    reference = evaluate(config(tmp_path / "reference"))
    out = tmp_path / "eval"
    started = []

    def kill_when():  # once the evaluation is under way (its output folder exists), a moment later
        if out.exists() and not started:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 0.1

    code, text = _fork(lambda: evaluate(config(out)) and 0, tmp_path / "child.log", kill_when=kill_when)
    assert code is None, text
    for f in out.glob("*.json"):  # whatever it wrote is whole
        json.loads(f.read_text())
    again = evaluate(config(out))
    assert again["tables"] == reference["tables"]
    assert _hidden(out) == []
