"""Lip-sync metrics: SyncNet (LSE-C / LSE-D) machinery and the offline audio-visual sync score, each
checked against a reference implementation or a known answer (a known shift must be found)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from emotalk.errors import MissingWeightsError
from emotalk.eval import audio as eval_audio
from emotalk.eval.feature_store import Feature, Side
from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metric
from emotalk.eval.metrics import av_sync, lse
from emotalk.models.syncnet import SyncNet


def well_scaled_(module: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel()))
                m.bias.zero_()
            elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return module


# --- audio features ----------------------------------------------------------------------------------

def test_mfcc_equals_python_speech_features():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    sig = np.round(rng.normal(size=16000) * 3000)
    sig[4000:5000] = 0  # silence: the eps branches
    ours = eval_audio.mfcc(sig, 16000)
    ref = psf.mfcc(sig, 16000)
    assert ours.shape == ref.shape == (99, 13)  # 1 + ceil((16000 - 400) / 160)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


# --- offset search -----------------------------------------------------------------------------------

def _reference_calc_pdist(feat1, feat2, vshift):
    """syncnet_python's calc_pdist, literally."""
    win_size = vshift * 2 + 1
    feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
    return [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(win_size, 1), feat2p[i:i + win_size, :])
            for i in range(len(feat1))]


def test_calc_pdist_equals_syncnet_python_and_the_offset_sign():
    torch.manual_seed(0)
    T, D, k, V = 40, 16, 3, 6
    audio = torch.randn(T + k, D)
    video = audio[:T] + 0.01 * torch.randn(T, D)  # video frame i shows audio frame i - k ...
    audio = audio[k:]  # ... after dropping the first k audio frames: the video lags by k
    dists = lse.calc_pdist(video, audio, V)
    ref = torch.stack(_reference_calc_pdist(video, audio, V))
    torch.testing.assert_close(dists, ref, rtol=0, atol=1e-6)
    offset, conf, min_dist = lse.sync_from_dists(dists, V)
    assert offset == k  # positive: video lags audio
    mdist = ref.mean(0)
    assert min_dist == pytest.approx(float(mdist.min()), rel=1e-6)
    assert conf == pytest.approx(float(torch.median(mdist) - mdist.min()), rel=1e-6)
    assert lse.sync_from_dists(lse.calc_pdist(audio[:T - k], audio[:T - k], V), V)[0] == 0


# --- offline AV sync ---------------------------------------------------------------------------------

def _talking(k: int, T: int = 90, fps: float = 30.0, sr: int = 16000, seed: int = 0):
    """Speech-like audio whose per-frame envelope drives the mouth opening ``k`` frames later."""
    from emotalk.models.face_graph import INNER_LIP_PAIRS, canonical_template

    rng = np.random.default_rng(seed)
    raw = rng.uniform(size=T + 40)
    env = np.convolve(raw, np.ones(3) / 3, mode="same")
    env = np.clip(env * 1.8 - 0.6, 0, 1)
    env[rng.uniform(size=env.size) < 0.15] = 0
    spf = int(sr / fps)
    audio = np.concatenate([rng.normal(size=spf) * (0.01 + 0.5 * e) for e in env[20:20 + T]])
    opening = env[20 - k:20 - k + T]  # mouth at frame t follows the sound of frame t - k
    pts = np.repeat(canonical_template()[None].astype(np.float64) * 80 + 100, T, 0)
    for up, lo in INNER_LIP_PAIRS:
        pts[:, lo, 1] += 12 * opening
    return audio.astype(np.float32), pts


@pytest.mark.parametrize("k", [0, 4, -3])
def test_av_sync_finds_a_known_shift(k):
    audio, pts = _talking(k)
    r = av_sync.av_sync(pts, audio, 16000, 30.0, vshift=15)
    assert r["offset"] == k
    assert r["conf"] > 0.5
    s = VideoSample(generated=np.zeros((len(pts), 8, 8, 3), np.uint8), audio=audio, sample_rate=16000, fps=30.0,
                    generated_landmarks=pts)
    assert compute_metric("av_sync_offset", [s]).value == k
    assert compute_metric("av_sync_conf", [s]).value == pytest.approx(r["conf"])


def test_av_sync_confidence_drops_for_unrelated_audio():
    audio, pts = _talking(0, seed=0)
    other, _ = _talking(0, seed=5)
    good = av_sync.av_sync(pts, audio, 16000, 30.0)["conf"]
    bad = av_sync.av_sync(pts, other, 16000, 30.0)["conf"]
    assert bad < good - 0.3


# --- SyncNet -------------------------------------------------------------------------------------------

def test_syncnet_architecture_embeddings_are_1024d():
    net = well_scaled_(SyncNet()).eval()
    with torch.no_grad():
        a = net.forward_aud(torch.randn(3, 1, 13, 20))
        v = net.forward_lip(torch.rand(2, 3, 5, 224, 224) * 255)
    assert a.shape == (3, 1024) and v.shape == (2, 1024)
    assert sum(p.numel() for p in net.parameters()) > 10_000_000
    keys = set(net.state_dict())
    assert {"netcnnaud.0.weight", "netfcaud.3.weight", "netcnnlip.0.weight", "netfclip.3.weight"} <= keys


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script / save are deprecated
def test_syncnet_weights_missing_then_loaded_from_a_user_path(tmp_path):
    s = VideoSample(generated=np.zeros((10, 32, 32, 3), np.uint8), audio=np.zeros(6400, np.float32), fps=25.0)
    with pytest.raises(MissingWeightsError, match=r"syncnet_v2\.model.*metrics\.syncnet_weights"):
        compute_metric("lse_c", [s])
    net = well_scaled_(SyncNet()).eval()
    # syncnet_python's file is a plain state dict; also accept TorchScript archives
    plain = tmp_path / "syncnet_v2.model"
    torch.save(net.state_dict(), plain)
    scripted = tmp_path / "syncnet_v2.pt"
    torch.jit.save(torch.jit.script(net), scripted)
    for path in (plain, scripted):
        loaded = lse.load_syncnet(MetricOptions(syncnet_weights=str(path)))
        for k, v in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (path.name, k)


def test_lse_plumbing_with_stand_in_weights(tmp_path):
    """The real network with stand-in weights: window count, crop format, and both metrics read one result."""
    from skimage import data

    face = cv2.resize(data.astronaut()[20:260, 120:360], (160, 160), interpolation=cv2.INTER_AREA)
    T, fps = 12, 25.0
    frames = np.stack([np.roll(face, d, axis=0) for d in np.arange(T) % 3])
    audio = (np.random.default_rng(0).normal(size=int(T / fps * 16000)) * 0.1).astype(np.float32)
    path = tmp_path / "syncnet_v2.model"
    torch.save(well_scaled_(SyncNet()).state_dict(), path)
    opts = MetricOptions(syncnet_weights=str(path), sync_vshift=3)
    s = VideoSample(generated=frames, audio=audio, sample_rate=16000, fps=fps, name="v")
    c = compute_metric("lse_c", [s], opts)
    d = compute_metric("lse_d", [s], opts)
    res = s.features.get(Side.GENERATED, Feature.SYNCNET, params=(3, str(path)))
    assert res["windows"] == T - 5  # 25 fps, 640 samples per frame, 5-frame windows
    assert (c.value, d.value) == (res["lse_c"], res["lse_d"]) and c.details["offsets"] == d.details["offsets"]
    crops = lse.syncnet_crops(frames, s.features.get(Side.GENERATED, Feature.BOXES))
    assert crops.shape == (T, 224, 224, 3) and crops.dtype == np.uint8


class _CodeNet(torch.nn.Module):
    """A stand-in SyncNet whose embeddings are one bit: is the first frame of the lip window bright, is the
    first 10-25 ms of the matching audio loud. In sync, the bits agree at every window."""

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 5, 224, 224) BGR, 0..255
        return (x[:, :, 0, 100:124, 100:124].mean(dim=(1, 2, 3)) > 120).double()[:, None]

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, 13, 20) MFCC; row 0 = log energy
        return (x[:, 0, 0, 1] > 0).double()[:, None]  # column 1 (10-35 ms) lies inside the video frame


@pytest.mark.parametrize("k", [0, 3, -2])
def test_lse_finds_a_known_shift_end_to_end(monkeypatch, k):
    """Video frame t shows the sound of frame t - k: the metric must report offset k (video lags audio),
    LSE-D ~ 0 (codes agree at that shift) and a clear LSE-C -- through crops, MFCC and the offset search."""
    from emotalk.models.face_graph import canonical_template

    T, K, fps, spf = 60, 5, 25.0, 640
    u = np.random.default_rng(1).uniform(size=T + 2 * K) < 0.5
    sound, shown = u[K:K + T], u[K - k:K - k + T]
    audio = np.concatenate([(np.random.default_rng(t).normal(size=spf) * 0.3 if on else np.zeros(spf))
                            for t, on in enumerate(sound)]).astype(np.float32)
    frames = np.where(shown[:, None, None, None], 200, 40).astype(np.uint8) * np.ones((T, 256, 256, 3), np.uint8)
    pts = np.repeat((canonical_template() * 80 + 128)[None].astype(np.float64), T, 0)
    monkeypatch.setattr(lse, "load_syncnet", lambda opts: _CodeNet())
    s = VideoSample(generated=frames, audio=audio, sample_rate=16000, fps=fps, name="v", generated_landmarks=pts)
    opts = MetricOptions(sync_vshift=K)
    c, d = compute_metric("lse_c", [s], opts), compute_metric("lse_d", [s], opts)
    assert c.details["offsets"]["v"] == k
    assert d.value < 0.1 and c.value > 0.3  # ~half the wrong shifts disagree; the right one almost never


def test_resampling_to_25_fps_keeps_duration():
    idx = lse.resample_indices(60, 30.0)
    assert len(idx) == 50 and idx[0] == 0 and idx[-1] <= 59
    assert list(lse.resample_indices(7, 25.0)) == list(range(7))


def test_resampling_to_25_fps_picks_the_frames_ffmpeg_r25_keeps():
    """syncnet_python converts every video with ``ffmpeg ... -r 25``; our frame choice is ffmpeg's."""
    import subprocess

    from emotalk.data.io.media import ffmpeg_exe

    n = 45
    frames = np.repeat((np.arange(n) * 5).astype(np.uint8)[:, None, None], 8 * 8, 1).reshape(n, 8, 8)
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "8x8", "-r", "30",
                          "-i", "-", "-r", "25", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         input=frames.tobytes(), capture_output=True, check=True).stdout
    kept = np.frombuffer(out, np.uint8).reshape(-1, 8, 8)[:, 0, 0] // 5
    assert list(lse.ffmpeg_indices(n, 30.0)) == list(kept)
    assert 12 not in kept and len(kept) >= n * 25 // 30  # ffmpeg drops frames (here every 6th after the start)
