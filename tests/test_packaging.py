"""A regular (non-editable) ``pip install .`` works from any folder: the configs ship inside the package.

The install runs offline: a fresh virtual environment (``--without-pip``) sees this environment's
site-packages through a ``.pth`` line (so torch, setuptools and pip are not installed again), and pip
builds the project with ``--no-build-isolation --no-deps --no-index``. The source is copied first, so the
build's ``build/`` and ``*.egg-info`` folders never land in the working tree. Commands then run from an
empty folder, where a repository ``configs/`` folder cannot be found by accident.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: top-level entries of the repository that are not part of the source distribution
_NOT_SOURCE = {".git", ".venv", "venv", "build", "dist", "data", "checkpoints", "runs", ".pytest_cache",
               ".import_linter_cache", "emotalk.egg-info"}


def _copy_source(dst: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
        if Path(folder).resolve() == ROOT:
            skip |= {n for n in names if n in _NOT_SOURCE or n.endswith(".egg-info")}
        return skip

    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``SimpleNamespace``-like dict: the venv's bin folder and an empty working folder."""
    base = tmp_path_factory.mktemp("pkg")
    # this environment's pip and setuptools build the wheel (offline: no build isolation). Asked in a
    # subprocess: importing setuptools here, after other tests loaded the stdlib's distutils, trips its
    # distutils shim (an AssertionError about distutils/core.py)
    probe = _run([sys.executable, "-c", "import setuptools, importlib.util; assert importlib.util.find_spec('pip'); "
                  "v = tuple(int(x) for x in setuptools.__version__.split('.')[:2]); "
                  "print(v >= (70, 1) or importlib.util.find_spec('wheel') is not None)"], cwd=base)
    if probe.returncode != 0:
        pytest.skip(f"building offline needs pip and setuptools in this environment ({probe.stderr[-300:]})")
    if probe.stdout.strip() != "True":
        pytest.skip("setuptools < 70.1 builds wheels only with the 'wheel' package")
    src = _copy_source(base / "src")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    assert made.returncode == 0, made.stderr
    py = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=base).stdout.strip())
    host = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # paths added by a .pth line are not themselves scanned for .pth files, so this environment's
    # editable-install hook for emotalk (if any) stays inactive in the new venv
    (purelib / "host-site-packages.pth").write_text("\n".join(sorted(host)) + "\n")
    inst = _run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", src],
                cwd=base, timeout=600)
    assert inst.returncode == 0, inst.stdout[-3000:] + inst.stderr[-3000:]
    empty = base / "empty"
    empty.mkdir()
    return {"bin": py.parent, "py": py, "purelib": purelib, "empty": empty}


@pytest.mark.slow
def test_installed_package_finds_its_configs_from_an_empty_folder(installed):
    code = ("import emotalk, emotalk.config as c; from emotalk.train.tasks import load_train_config; "
            "cfg = load_train_config('landmark/tiny'); "
            "print(emotalk.__file__); print(c.resolve_config_path('landmark/tiny')); "
            "print(cfg.model.d, cfg.loss.lambda_gan)")
    res = _run([installed["py"], "-c", code], cwd=installed["empty"])
    assert res.returncode == 0, res.stderr
    pkg_file, config_file, values = res.stdout.strip().splitlines()
    purelib = installed["purelib"].resolve()
    assert Path(pkg_file).resolve().is_relative_to(purelib), "imported the source tree, not the install"
    assert Path(config_file).resolve() == purelib / "emotalk" / "configs" / "landmark" / "tiny.yaml"
    assert values == "64 0.5"  # d from tiny.yaml, lambda_gan inherited from mead.yaml through _base_
    assert sorted(p.name for p in (purelib / "emotalk" / "configs").iterdir() if p.is_dir()) == \
        sorted(p.name for p in (ROOT / "configs").iterdir() if p.is_dir())
    assert list(installed["empty"].iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("argv, expect", [
    (["train", "--config", "landmark/tiny", "--help"], "usage: emotalk train"),
    (["demo", "--help"], "usage: emotalk demo"),
    (["--help"], "generate"),
])
def test_installed_console_script_runs_from_an_empty_folder(installed, argv, expect):
    exe = installed["bin"] / ("emotalk.exe" if os.name == "nt" else "emotalk")
    res = _run([exe, *argv], cwd=installed["empty"])
    assert res.returncode == 0, res.stderr
    assert expect in res.stdout


@pytest.mark.slow
def test_installed_train_reads_the_shipped_config_and_fails_cleanly_on_missing_data(installed):
    exe = installed["bin"] / "emotalk"
    res = _run([exe, "train", "--config", "landmark/tiny", f"data.root={installed['empty'] / 'none'}",
                f"train.run_dir={installed['empty'].parent / 'run'}"], cwd=installed["empty"])
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    # one line about the data, not "config 'landmark/tiny' not found"
    assert len(err) == 1 and err[0].startswith("error: ") and "landmark/tiny" not in err[0], res.stderr
