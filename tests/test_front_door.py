"""The front door (issue 15 §0): after ``emotalk demo``, ``emotalk generate`` finds the trained models without
flags, says which it used, and when there are none says which command makes them.

Every test isolates the user-level record with a temporary ``HOME`` / ``XDG_CACHE_HOME`` / ``EMOTALK_HOME``
and a temporary working directory, so the real ``~/.cache/emotalk`` is never read or written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotalk.cli.main import main
from emotalk.errors import CheckpointError
from emotalk.inference.checkpoints import find_checkpoints, latest_record, remember_checkpoints, user_dir


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A clean user environment: empty HOME, no EMOTALK_HOME / XDG_CACHE_HOME, cwd = an empty folder."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("EMOTALK_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return h


def _models(folder: Path, texture: bool = True) -> Path:
    (folder / "landmark").mkdir(parents=True)
    if texture:
        (folder / "texture").mkdir()
    return folder


def test_user_dir_honours_emotalk_home_then_xdg_then_home(home, tmp_path, monkeypatch):
    assert user_dir() == home / ".cache" / "emotalk"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_dir() == tmp_path / "xdg" / "emotalk"
    monkeypatch.setenv("EMOTALK_HOME", str(tmp_path / "eh"))
    assert user_dir() == tmp_path / "eh"
    assert latest_record() == tmp_path / "eh" / "latest"


def test_search_order(home, tmp_path):
    cwd = Path.cwd()
    with pytest.raises(CheckpointError) as e:
        find_checkpoints()
    assert "emotalk demo" in str(e.value) and "\n" not in str(e.value)
    # the demo's default output is the last resort
    demo = _models(cwd / "runs" / "demo" / "checkpoints")
    assert find_checkpoints().path == demo
    # a demo run elsewhere, recorded in the user-level file, comes before it
    recorded = _models(tmp_path / "elsewhere" / "checkpoints")
    record = remember_checkpoints(recorded)
    assert record == home / ".cache" / "emotalk" / "latest" and record.read_text().strip() == str(recorded)
    found = find_checkpoints()
    assert found.path == recorded and found.source == str(record)
    # ./checkpoints with only the shipped README does not count; with models it wins
    (cwd / "checkpoints").mkdir()
    (cwd / "checkpoints" / "README.md").write_text("put checkpoints here\n")
    assert find_checkpoints().path == recorded
    local = _models(cwd / "checkpoints", texture=False)
    assert find_checkpoints().path == recorded  # no texture/: not enough for the neural renderer
    assert find_checkpoints(texture=False).path == local  # enough for the warp renderer
    (local / "texture").mkdir()
    assert find_checkpoints().path == local and find_checkpoints().source == "./checkpoints"
    # an explicit folder is used as given, even one that does not exist (loading reports it)
    assert find_checkpoints(tmp_path / "nope").path == tmp_path / "nope"


def test_stale_record_is_skipped(home, tmp_path):
    gone = _models(tmp_path / "gone")
    remember_checkpoints(gone)
    (gone / "landmark").rmdir()
    (gone / "texture").rmdir()
    with pytest.raises(CheckpointError, match="emotalk demo"):
        find_checkpoints()


def test_unwritable_record_only_warns(home, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("EMOTALK_HOME", str(blocker / "sub"))  # a folder under a file: cannot be created
    assert remember_checkpoints(tmp_path) is None
    assert "--checkpoints" in caplog.text


def test_generate_without_models_says_which_command(home, capsys):
    """Valid inputs (they are checked first, in a second), no models anywhere: the one line names the command."""
    from emotalk.data.io.media import write_wav
    from emotalk.data.io.photos import grace_hopper_path

    write_wav("me.wav", (0.1 * np.sin(np.linspace(0, 400 * np.pi, 16000))).astype(np.float32))
    Path("me.jpg").write_bytes(Path(grace_hopper_path()).read_bytes())
    code = main(["generate", "--image", "me.jpg", "--audio", "me.wav", "--emotion", "happy"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: no trained models found"), err
    assert "'emotalk demo'" in err[0] and "emotalk train" in err[0]


def test_generate_after_demo_needs_no_flags(home, tiny_checkpoints, tmp_path, capsys, monkeypatch):
    """What the demo does (records its checkpoints folder), then the README's next step, verbatim."""
    from emotalk.data.io.media import probe_video, write_wav
    from emotalk.data.io.photos import grace_hopper_path
    from emotalk.mini.tts import synthesize

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    remember_checkpoints(tiny_checkpoints)
    assert (tmp_path / "xdg" / "emotalk" / "latest").read_text().strip() == str(Path(tiny_checkpoints).resolve())
    write_wav("me.wav", synthesize("Open the crate.", seed=2).audio)
    Path("me.jpg").write_bytes(Path(grace_hopper_path()).read_bytes())
    code = main(["generate", "--image", "me.jpg", "--audio", "me.wav", "--emotion", "happy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"using the models in {Path(tiny_checkpoints).resolve()}" in out  # says which models
    assert "G_L from" in out and "G_T from" in out
    assert probe_video(Path("out.mp4")).num_frames > 10
    # the Python front door searches the same way
    from emotalk.inference import Pipeline

    pipe = Pipeline.from_checkpoints(device="cpu")
    assert pipe.landmark.meta.path.is_relative_to(Path(tiny_checkpoints).resolve())
