import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


#: session fixtures that generate data and train models (1-2 minutes): a test using one is in the slow tier
SLOW_FIXTURES = ("tiny_mini_raw", "tiny_mini_data", "tiny_checkpoints")


def pytest_collection_modifyitems(config, items):
    """Two tiers (README "Tests"): ``pytest -m "not slow"`` is the fast tier. Tests that train, preprocess
    or run end to end carry ``@pytest.mark.slow``; a test that needs the trained tiny checkpoints (or the
    preprocessed mini dataset) is slow whatever it asserts, so it is marked here rather than by hand."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on shared cores: one intra-op thread is many times faster than two (no spinning)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _user_home(tmp_path_factory, monkeypatch):
    """Keep the user-level record of the demo's models (``$EMOTALK_HOME/latest``) out of the real home."""
    monkeypatch.setenv("EMOTALK_HOME", str(tmp_path_factory.mktemp("emotalk_home")))


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)
    yield


# ------------------------------------------------------------------------------------------------------
# Tiny trained checkpoints, built once per test session (shared by the pipeline, CLI, evaluation and
# demo tests). Set EMOTALK_TINY_CACHE=/some/dir to build them there once and reuse them across sessions.
# ------------------------------------------------------------------------------------------------------
TINY_LANDMARK_OVERRIDES = ["train.steps=400", "loss.lambda_gan=0", "train.ckpt_every=400", "train.val_every=400",
                           "train.val_batches=2", "train.progress=false", "train.tensorboard=false"]
TINY_TEXTURE_OVERRIDES = ["model.image_size=64", "train.steps=150", "optim.lr=1e-3", "loss.lambda_per=0", "loss.lambda_adv=0",
                          "train.ckpt_every=150", "train.val_every=150", "train.val_batches=2",
                          "train.progress=false", "train.tensorboard=false"]


def _tiny_base(tmp_path_factory):
    from pathlib import Path

    cache = os.environ.get("EMOTALK_TINY_CACHE")
    if cache:
        base = Path(cache)
        base.mkdir(parents=True, exist_ok=True)
        return base
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_mini_raw(tmp_path_factory):
    """mead-mini ``tiny`` (3 subjects, 12 clips of a few words, seed 0), made once per session by the CLI
    (``emotalk make-mini --size tiny --seed 0``) and shared: tests/test_mead_mini.py checks it, the
    ``tiny_mini_data`` fixture preprocesses it, tests/test_demo.py runs the demo on it (``--mini``). Read
    only: a test that writes copies it first."""
    from emotalk.cli.main import main

    raw = _tiny_base(tmp_path_factory) / "mead-mini"
    done = raw.with_name("mead-mini.DONE")  # beside it: the layout test wants MEAD's files only inside
    if not done.is_file():
        if raw.exists():  # an interrupted earlier build (only with EMOTALK_TINY_CACHE)
            import shutil

            shutil.rmtree(raw)
        # two forkserver workers (emotalk.data.parallel): the same bytes as one worker, less wall time
        assert main(["make-mini", "--out", str(raw), "--size", "tiny", "--seed", "0", "--workers", "2",
                     "--quiet"]) == 0
        done.write_text("ok\n")
    return raw


@pytest.fixture(scope="session")
def tiny_mini_data(tiny_mini_raw, tmp_path_factory):
    """:func:`tiny_mini_raw` preprocessed with the ``mel`` speech features:
    ``SimpleNamespace(raw=Path, processed=Path)``."""
    from types import SimpleNamespace

    from emotalk.data.preprocess.pipeline import PreprocessOptions, preprocess_dataset

    processed = _tiny_base(tmp_path_factory) / "processed"
    if not (processed / "DONE").is_file():
        preprocess_dataset("mead-mini", tiny_mini_raw, processed, workers=2,
                           options=PreprocessOptions(features="mel"), progress=False)
        (processed / "DONE").write_text("ok\n")
    return SimpleNamespace(raw=tiny_mini_raw, processed=processed)


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_mini_data, tmp_path_factory):
    """A ``checkpoints/`` folder with ``landmark/`` (G_L, configs/landmark/tiny.yaml, 400 steps, no GAN) and
    ``texture/`` (G_T, configs/texture/tiny.yaml: 64x64, 150 steps, L1 only) run folders trained on
    :func:`tiny_mini_data` - the layout ``emotalk generate --checkpoints`` expects. About 1-2 minutes on
    2 CPU cores including the data. The models are tiny: mechanics, not quality."""
    from emotalk.train.tasks import train_from_config

    ckpts = _tiny_base(tmp_path_factory) / "checkpoints"
    if not (ckpts / "DONE").is_file():
        import shutil

        if ckpts.is_dir():  # an interrupted earlier build (only with EMOTALK_TINY_CACHE)
            shutil.rmtree(ckpts)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small models: one thread avoids oversubscription on shared cores
        try:
            root = f"data.root={tiny_mini_data.processed}"
            train_from_config("landmark/tiny", [root, f"train.run_dir={ckpts / 'landmark'}",
                                                *TINY_LANDMARK_OVERRIDES])
            train_from_config("texture/tiny", [root, f"train.run_dir={ckpts / 'texture'}",
                                               *TINY_TEXTURE_OVERRIDES])
        finally:
            torch.set_num_threads(threads)
        (ckpts / "DONE").write_text("ok\n")
    return ckpts
