"""GPU readiness (issue 16 §6), checked on the CPU: device index and bf16 rules, frame reads by byte range,
log values kept on the device, one transfer for augmentation parameters, worker set-up, batch divisibility
before any model is built, G_L in fp32, VGG target features without a graph."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from emotalk.data.datasets.augment import ColorAugmentConfig, params_to, sample_params
from emotalk.data.datasets.texture import TextureFrameDataset, stored_layout
from emotalk.data.face.alignment import crop_template
from emotalk.data.io.clip import (Clip, SubjectReference, clip_path, encode_frames, load_clip, save_clip, save_subject,
                                  subject_path)
from emotalk.errors import ConfigError
from emotalk.train.landmark_task import LandmarkTask
from emotalk.train.task import StepContext, Task, TrainerConfig
from emotalk.train.trainer import Trainer, worker_init
from emotalk.utils import device as device_mod


def test_gpu_index_wraps_around_the_visible_devices_and_emulated_bf16_does_not_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU per process (CUDA_VISIBLE_DEVICES)
    assert device_mod._gpu_index(3) == 0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert device_mod._gpu_index(6) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert device_mod.cuda_bf16_native() is False  # a V100 / T4: bf16 only emulated
    assert device_mod.amp_dtype_for(torch.device("cuda", 0)) == torch.float16  # -> fp16 + GradScaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert device_mod.amp_dtype_for(torch.device("cuda", 0)) == torch.bfloat16
    assert device_mod.amp_dtype_for(torch.device("cpu")) is None


def _clips(root, n_clips=2, frames=5, size=64, compressed_last=False):
    rng = np.random.default_rng(0)
    lm = crop_template(size).astype(np.float32)
    for c in range(n_clips):
        imgs = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(frames)]
        data, offsets = encode_frames(imgs)
        clip = Clip(landmarks=np.zeros((frames, 68, 2), np.float32), neutral_landmarks=np.zeros((68, 2), np.float32),
                    audio_features=np.zeros((frames, 6, 29), np.float32), emotion="happy", intensity=2, fps=30.0,
                    subject="S01", clip_id=f"c{c}", feature_kind="deepspeech",
                    crop_landmarks=lm[None] + rng.normal(0, 1, (frames, 68, 2)).astype(np.float32),
                    frames_jpeg=data, frames_offsets=offsets)
        path = clip_path(root, "S01", clip.clip_id)
        save_clip(clip, path)
        if compressed_last and c == n_clips - 1:  # rewrite as a compressed npz (np.savez_compressed)
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            with open(path, "wb") as f:
                np.savez_compressed(f, **arrays)
    save_subject(SubjectReference("S01", imgs[0], lm, np.zeros((68, 2), np.float32)), subject_path(root, "S01"))


def test_texture_frames_are_read_by_byte_range_and_compressed_clips_fall_back(tmp_path):
    _clips(tmp_path, compressed_last=True)
    ds = TextureFrameDataset(tmp_path, image_size=64)
    assert len(ds) == 10
    for i in range(len(ds)):
        ci, t = (int(v) for v in ds.index[i])
        img, lm = ds.frame(ci, t)
        clip = load_clip(ds.clips[ci]["path"])
        np.testing.assert_array_equal(img, clip.frame(t))
        np.testing.assert_allclose(lm, clip.crop_landmarks[t], atol=1e-5)
    stored = [ci for ci, lay in ds._layouts.items() if lay is not None]
    assert stored == [0]  # the np.savez clip: byte ranges; the compressed one: None (whole arrays)
    assert list(ds._cache) == [1]  # only the compressed clip went through the whole-clip cache
    with zipfile.ZipFile(ds.clips[1]["path"]) as zf:
        assert zf.getinfo("frames_jpeg.npy").compress_type == zipfile.ZIP_DEFLATED
    assert stored_layout(tmp_path / "missing.npz", ["frames_jpeg"]) is None


def test_augmentation_parameters_move_in_one_packed_copy():
    params = sample_params(5, ColorAugmentConfig(), torch.Generator().manual_seed(0))
    moved = params_to(params, torch.device("cpu"), torch.float64)
    assert set(moved) == set(params)
    for k, v in params.items():
        assert moved[k].dtype == torch.float64 and moved[k].shape == v.shape
        torch.testing.assert_close(moved[k], v.double())
    assert len({m.untyped_storage().data_ptr() for m in moved.values()}) == 1  # one buffer, one transfer


def test_log_values_stay_tensors_in_the_trainer_and_floats_for_direct_callers():
    ctx = StepContext({}, {}, {}, torch.device("cpu"), None, None, 0.0)
    logs = {"l1": torch.tensor(0.5, requires_grad=True) * 2, "lr": 1e-4}
    assert ctx.log_values(logs) == {"l1": 1.0, "lr": 1e-4}
    ctx.keep_logs_on_device = True
    kept = ctx.log_values(logs)
    assert torch.is_tensor(kept["l1"]) and not kept["l1"].requires_grad and kept["lr"] == 1e-4


def test_g_l_trains_in_fp32_and_other_tasks_may_use_amp():
    assert LandmarkTask.use_amp is False and Task.use_amp is True


def test_worker_init_turns_opencv_threads_off():
    import cv2

    n, t = cv2.getNumThreads(), torch.get_num_threads()
    try:
        worker_init(0)
        assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
    finally:
        cv2.setNumThreads(n)
        torch.set_num_threads(t)


class _NeverBuilt(Task):
    kind = "never"

    def build_modules(self):  # pragma: no cover - the check must come first
        raise AssertionError("a model was built before the batch was checked")


def test_batch_divisibility_is_checked_before_any_model_is_built(monkeypatch, tmp_path):
    from types import SimpleNamespace

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = SimpleNamespace(train=TrainerConfig(run_dir=str(tmp_path), batch_size=4, device="cpu"))
    with pytest.raises(ConfigError, match="divisible by the number of processes \\(3\\)"):
        Trainer(_NeverBuilt(cfg)).fit()


def test_vgg_target_features_keep_no_graph():
    from emotalk.data.loading import build_perceptual_loss

    per, _ = build_perceptual_loss("vgg16-random", warn=False)
    pred = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    target = torch.rand(1, 3, 32, 32) * 2 - 1

    def saved_numel(fn) -> int:
        total = [0]

        def pack(t):
            total[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return total[0]

    with_target = saved_numel(lambda: per(pred, target))
    pred_only = saved_numel(lambda: sum(f.abs().mean() for f in per.vgg(pred)))
    assert with_target < 1.1 * pred_only  # the target's half of the activations is not kept for backward


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it)")
def test_on_cuda_local_rank_wraps_and_amp_matches_the_hardware():
    from emotalk.utils.device import select_device

    n = torch.cuda.device_count()
    assert select_device("auto", local_rank=n) == torch.device("cuda", 0)
    expected = torch.bfloat16 if torch.cuda.get_device_capability(0)[0] >= 8 else torch.float16
    assert device_mod.amp_dtype_for(torch.device("cuda", 0)) == expected
