"""The shared trainer: checkpoints, exact resume, DDP under gloo, bad data."""
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from emotalk.cli.main import main
from emotalk.data.io.clip import load_clip
from emotalk.data.datasets.toy import make_toy_dataset
from emotalk.errors import CheckpointError, ConfigError, DataError
from emotalk.data.io import checkpoint as ckpt
from emotalk.train.tasks import build_task, load_train_config, train_from_config
from emotalk.train.trainer import StepBatchSampler, Trainer


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), subjects=3, frames=24)


def _overrides(root, run_dir, steps, **extra):
    # the paper's loss (eq. 2 + LSGAN): landmark/tiny's amplitude loss starts at a fraction of train.steps,
    # so a run extended from 5 to 10 steps would follow another schedule than a 10-step run (by design)
    o = [f"data.root={root}", f"train.run_dir={run_dir}", f"train.steps={steps}", "train.batch_size=16",
         "loss.lambda_amplitude=0",
         "train.log_every=1", "train.ckpt_every=5", "train.progress=false", "train.tensorboard=false",
         "model.d=16", "model.gcn_channels=[8, 16, 16]", "model.lstm_hidden=16", "model.lstm_layers=1"]
    return o + [f"{k}={v}" for k, v in extra.items()]


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["split"] == "train"}


def test_batch_sampler_is_a_function_of_seed_and_step():
    a = StepBatchSampler(50, 8, seed=3)
    b = StepBatchSampler(50, 8, seed=3, start_step=7)
    it_a = iter(a)
    stream = [next(it_a) for _ in range(12)]
    it_b = iter(b)
    assert [next(it_b) for _ in range(5)] == stream[7:12]
    halves = [StepBatchSampler(50, 8, seed=3, rank=r, world=2).batch_for(4) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == sorted(a.batch_for(4)) and not set(halves[0]) & set(halves[1])


@pytest.mark.slow
def test_resume_continues_the_loss_curve_exactly(toy, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train_from_config("landmark/tiny", _overrides(toy, full, 10))
    train_from_config("landmark/tiny", _overrides(toy, part, 5))
    assert (part / "checkpoints" / "step_00000005.json").is_file()
    train_from_config(None, ["train.steps=10"], resume=str(part))
    a, b = _losses(full), _losses(part)
    assert sorted(b) == list(range(1, 11))  # no duplicated or missing rows after resume
    for step in range(6, 11):
        for key in ("ver", "gan_g", "gan_d"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-6, abs=1e-9), (step, key)
    # and the final weights are the same
    wa, _ = ckpt.load_checkpoint(full, prefixes=("model/",))
    wb, _ = ckpt.load_checkpoint(part, prefixes=("model/",))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)


def test_checkpoint_is_safetensors_plus_json_with_everything_to_resume(toy, tmp_path):
    train_from_config("landmark/tiny", _overrides(toy, tmp_path / "r", 5))
    cdir = tmp_path / "r" / "checkpoints"
    # a second, fresh run into the same folder would mix its checkpoints with these and prune them: refused,
    # naming --resume, and nothing of the first run is touched
    before = sorted(p.name for p in cdir.iterdir())
    with pytest.raises(ConfigError, match="--resume"):
        train_from_config("landmark/tiny", _overrides(toy, tmp_path / "r", 5))
    assert sorted(p.name for p in cdir.iterdir()) == before
    meta = json.loads((cdir / "step_00000005.json").read_text())
    assert meta["kind"] == "landmark" and meta["step"] == 5
    assert meta["config"]["model"]["feature_dim"] == 8  # D taken from the data, not hard-coded
    assert set(meta["optimizers"]) == {"generator", "discriminator"}
    assert meta["rng"] and meta["feature_kind"] == "toy"
    tensors, _ = ckpt.load_checkpoint(cdir / "step_00000005.json")
    assert any(k.startswith("model/generator/") for k in tensors)
    assert any(k.startswith("optim/generator/") for k in tensors)
    assert "rng/rank0/torch" in tensors
    assert (tmp_path / "r" / "config.yaml").is_file()
    assert not [p for p in cdir.iterdir() if p.name.startswith(".")]  # no temp files left behind
    with pytest.raises(CheckpointError, match="'texture' checkpoint is needed"):
        ckpt.load_checkpoint(cdir, kind="texture")
    (cdir / "step_00000005.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.load_checkpoint(cdir)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, root, run_dir, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = load_train_config("landmark/tiny", _overrides(root, run_dir, 4))
    trainer = Trainer(build_task(cfg))
    trainer.fit()
    state = {k: v.detach().clone() for k, v in trainer.modules["generator"].state_dict().items()}
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    trainer.close()


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_replicas_identical(toy, tmp_path):
    port = _free_port()
    mp.spawn(_ddp_worker, args=(2, port, str(toy), str(tmp_path / "ddp"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # only rank 0 wrote checkpoints
    assert (tmp_path / "ddp" / "checkpoints" / "step_00000004.json").is_file()
    # averaged DDP gradients over 2 × 8 samples = single-process gradients over the same 16 samples
    single = tmp_path / "single"
    torch.manual_seed(0)  # the trainer seeds itself; this only builds the reference initial weights
    task = build_task(load_train_config("landmark/tiny", _overrides(toy, tmp_path / "x", 4)))
    from emotalk.train.trainer import seed_everything

    seed_everything(0)
    init_state = task.build_modules()["generator"].state_dict()
    trainer, _ = train_from_config("landmark/tiny", _overrides(toy, single, 4))
    for k, v in trainer.modules["generator"].state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-3, atol=1e-5)
    assert any(not torch.equal(r0[k], v) for k, v in init_state.items())  # training moved the weights


def test_empty_clip_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty" / "clips").mkdir(parents=True)
    code = main(["train", "--config", "landmark/tiny", f"data.root={tmp_path / 'empty'}",
                 f"train.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error:") and len(err.splitlines()) == 1
    assert str(tmp_path / "empty") in err and "preprocess" in err


@pytest.mark.parametrize("defect", ["mismatched", "nan"])
def test_bad_clip_names_the_file(toy, tmp_path, capsys, defect):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(toy, root)
    victim = sorted((root / "clips").glob("*/*.npz"))[3]
    clip = load_clip(victim)
    with np.load(victim) as z:
        data = dict(z)
    if defect == "mismatched":
        data["audio_features"] = data["audio_features"][:-3]
    else:
        data["landmarks"][2, 5, 0] = np.nan
    np.savez(victim, **data)
    with pytest.raises(DataError, match=victim.name):
        load_clip(victim)
    code = main(["train", "--config", "landmark/tiny", f"data.root={root}", f"train.run_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and victim.name in err
    assert ("mismatched" in err) if defect == "mismatched" else ("NaN" in err)
    del clip


def test_resume_restores_rng_state(tmp_path):
    from dataclasses import dataclass, field

    from torch.utils.data import TensorDataset

    from emotalk.train.trainer import OptimConfig, Task, TrainerConfig

    @dataclass
    class Cfg:
        task: str = "noisy"
        optim: OptimConfig = field(default_factory=OptimConfig)
        train: TrainerConfig = field(default_factory=TrainerConfig)

    class Noisy(Task):
        kind = "noisy"

        def build_datasets(self):
            g = torch.Generator().manual_seed(1)
            x = torch.randn(64, 3, generator=g)
            return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5])), None

        def build_modules(self):
            return {"generator": torch.nn.Linear(3, 1)}

        def train_step(self, batch, ctx):
            x, y = batch
            x = x + 0.1 * torch.randn_like(x)  # uses the global RNG
            loss = ((ctx.models["generator"](x).squeeze(1) - y) ** 2).mean()
            ctx.step("generator", loss)
            return {"loss": float(loss.detach())}

    def run(run_dir, steps, resume=None):
        cfg = Cfg(train=TrainerConfig(run_dir=str(run_dir), steps=steps, batch_size=8, log_every=1,
                                      ckpt_every=4, progress=False, tensorboard=False))
        t = Trainer(Noisy(cfg), resume=resume)
        t.fit()
        return t

    run(tmp_path / "a", 8)
    run(tmp_path / "b", 4)
    run(tmp_path / "b", 8, resume=tmp_path / "b")
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert [a[s]["loss"] for s in range(5, 9)] == [b[s]["loss"] for s in range(5, 9)]
