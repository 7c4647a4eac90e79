"""The inference-only G_T (emotalk.inference.fast_texture) computes what the training module computes in eval
mode, for random weights with non-trivial BatchNorm statistics, in every model variant, at batch 1 and 3
(its rewrites - folded BatchNorm, cached f_t terms, gather warps, UpConv's sub-pixel up-convolution,
RowTapConv's last layer - each covered; the layers alone: tests/test_fast_ops.py), in chunks of frames
as CPUs run a batch, and with the heatmaps' subnormal tails zeroed; the batch tuner picks the fastest
measured batch and caches it."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from emotalk.data.face.alignment import crop_template
from emotalk.errors import InputError
from emotalk.inference.fast_ops import PackedConv, bilinear_taps, gather_warp, nhwc_rows
import emotalk.inference.fast_texture as ft
import emotalk.models.texture_generator as tg
from emotalk.inference.fast_texture import (CHUNK_BYTES, BatchTuner, FastTextureGenerator, chunk_frames,
                                            fold_batchnorm, native_bf16, render_batches, resolve_precision)
from emotalk.models.texture_generator import TextureGenerator, TextureModelConfig

S = 32
VARIANTS = {
    "paper": {},
    "demo": dict(image_skip=True, prior_flow=True, prior_flow_kind="mesh", flow_stride=1),
    "concat-sigmoid": dict(flow_mode="concat", occlusion="sigmoid", prior_flow=True, flow_stride=2,
                           bottleneck_blocks=2),
}


def _generator(**kw) -> TextureGenerator:
    """Random weights, BatchNorm statistics far from (0, 1) and a non-zero flow head (else flow = 0)."""
    torch.manual_seed(0)
    kw = {"bottleneck_blocks": 1, **kw}
    G = TextureGenerator(TextureModelConfig(image_size=S, width_mult=0.125, emotion_feature_dim=16, **kw))
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.3, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
        G.motion.flow_head.weight.normal_(0, 0.02)
    return G.train()  # as it comes out of training: eval() is the fast path's (and the reference's) job


def _inputs(B: int = 3):
    g = torch.Generator().manual_seed(1)
    lm = torch.as_tensor(crop_template(S), dtype=torch.float32)[None]
    img = torch.rand(1, 3, S, S, generator=g) * 2 - 1
    driven = lm + 1.5 * torch.randn(B, 68, 2, generator=g)
    emo = torch.rand(B, 11, generator=g)
    return img, lm, driven, emo


@pytest.mark.parametrize("variant", ["paper", "demo",
                                     pytest.param("concat-sigmoid", marks=pytest.mark.slow)])  # fast tier: 2
def test_fp32_fast_path_equals_the_training_module_in_eval_mode(variant):
    G = _generator(**VARIANTS[variant])
    img, lm, driven, emo = _inputs()
    fast = FastTextureGenerator(G, precision="fp32")
    assert G.training  # the wrapped module is untouched (a deep copy was folded)
    assert fast.folded == sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.G.modules())
    with torch.no_grad():
        ref = G.eval()(img, lm, driven, emo)
    out = fast(fast.encode_identity(img), lm, driven, emo)
    for k in ("image", "flow", "occlusion"):
        assert out[k].shape == ref[k].shape and out[k].dtype == torch.float32
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=2e-5, msg=f"{variant}: {k}")
    assert ref["image"].std() > 0.01 and ref["flow"].abs().mean() > 1e-3  # not a trivially constant output
    # batch 1 (another packed weight per layer, UpConv's and RowTapConv's shapes) = the same frame in the batch
    single = fast(fast.encode_identity(img), lm, driven[1:2], emo[1:2])["image"]
    torch.testing.assert_close(single, ref["image"][1:2], rtol=1e-4, atol=2e-5)
    # one emotion row broadcast over the batch = the same row repeated
    one = fast(fast.encode_identity(img), lm, driven, emo[:1])["image"]
    rep = fast(fast.encode_identity(img), lm, driven, emo[:1].expand(3, -1))["image"]
    torch.testing.assert_close(one, rep, rtol=1e-4, atol=1e-4)


def test_bf16_fast_path_is_close_and_precision_is_checked():
    G = _generator(**VARIANTS["demo"]).eval()
    img, lm, driven, emo = _inputs()
    with torch.no_grad():
        ref = G(img, lm, driven, emo)["image"]
    fast = FastTextureGenerator(G, precision="bf16")
    assert fast.precision == "bf16" and fast.G.decoder.out.weight.dtype == torch.bfloat16
    out = fast(fast.encode_identity(img), lm, driven, emo)["image"]
    assert out.dtype == torch.float32
    assert (out - ref).abs().mean() < 0.03 and (out - ref).abs().max() < 0.25  # bf16 rounding, not a bug
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native_bf16(cpu) else torch.float32)
    with pytest.raises(InputError, match="precision must be one of"):
        FastTextureGenerator(G, precision="fp8")
    with pytest.raises(InputError, match="identity image"):
        fast.encode_identity(img.expand(2, -1, -1, -1))


def test_fold_batchnorm_is_exact_for_a_known_case():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    bn = nn.BatchNorm2d(1).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0), bn.running_var.fill_(4.0 - bn.eps), bn.weight.fill_(3.0), bn.bias.fill_(0.5)
    folded = fold_batchnorm(conv, bn)
    x = torch.tensor([[[[5.0]]]])
    # (2 * 5 - 1) / 2 * 3 + 0.5 = 14
    assert folded(x).item() == pytest.approx(14.0) == bn(conv(x)).item()


def test_batch_tuner_picks_the_fastest_batch_prefers_smaller_on_ties_and_caches(tmp_path):
    cache = tmp_path / "batch.json"
    t = BatchTuner("m", (1, 2, 4), cache)
    assert t.default == 4 and t.chosen is None
    per_frame = {1: 0.10, 2: 0.08, 4: 0.079}  # seconds per frame; 4 is within 2 % of 2
    seen = []
    while t.chosen is None:
        b = t.next_batch(100)
        seen.append(b)
        t.record(b, per_frame[b] * b * (1.5 if seen.count(b) == 1 else 1.0))  # first call: set-up cost
    assert sorted(seen) == [1, 1, 2, 2, 4, 4]
    assert t.chosen == 2 and t.default == 2
    assert 1 / per_frame[t.chosen] >= 1 / per_frame[1]  # frames/s at the chosen batch >= batch 1's
    assert json.loads(cache.read_text()) == {"m": 2}
    again = BatchTuner("m", (1, 2, 4), cache)
    assert again.chosen == 2 and again.next_batch(1) == 1 and again.next_batch(7) == 2
    assert BatchTuner("other", (1, 2, 4), cache).chosen is None
    cache.write_text("not json")
    assert BatchTuner("m", (1, 2, 4), cache).chosen is None  # a broken cache only costs a re-measurement


def test_render_batches_splits_without_changing_the_frames():
    G = _generator().eval()
    img, lm, driven, emo = _inputs(5)
    fast = FastTextureGenerator(G, precision="fp32")
    ident = fast.encode_identity(img)
    whole = fast(ident, lm, driven, emo)["image"]
    tuner = BatchTuner("k", (1, 2), None)
    parts = render_batches(fast, ident, lm, driven, emo, tuner)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    assert sum(len(v) for v in tuner.per_frame.values()) == 4  # batches 1, 1, 2, then the last frame alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it)")
def test_fast_path_on_cuda_matches_the_module_and_bf16_is_native_there():
    dev = torch.device("cuda")
    G = _generator(**VARIANTS["demo"]).eval().to(dev)
    img, lm, driven, emo = (t.to(dev) for t in _inputs())
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            ref = G(img, lm, driven, emo)["image"]
        fast = FastTextureGenerator(G, precision="fp32")
        torch.testing.assert_close(fast(fast.encode_identity(img), lm, driven, emo)["image"], ref, rtol=1e-4, atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if native_bf16(dev):
        fast = FastTextureGenerator(G, precision="auto")
        assert fast.precision == "bf16"
        assert (fast(fast.encode_identity(img), lm, driven, emo)["image"] - ref).abs().mean() < 0.03


def test_gather_warp_is_grid_sample_border_times_the_gate_and_packed_conv_is_conv2d():
    g = torch.Generator().manual_seed(3)
    feat = torch.randn(1, 5, 7, 9, generator=g)
    grid = torch.rand(2, 6, 8, 2, generator=g) * 2.6 - 1.3  # some positions outside: border padding
    gate = torch.rand(2, 1, 6, 8, generator=g)
    ref = F.grid_sample(feat.expand(2, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                        align_corners=False) * gate
    rows = nhwc_rows(feat.contiguous(memory_format=torch.channels_last))
    out = gather_warp(rows, bilinear_taps(grid, (7, 9), gate), (2, 6, 8))
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    conv = nn.Conv2d(5, 4, 3, stride=2, padding=1)
    x, add = torch.randn(3, 5, 8, 8, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(PackedConv.of(conv)(x, relu=True, add=add), torch.relu(conv(x) + add))
        rest = PackedConv.of(conv, [slice(2, 5)], bias=False)(x[:, 2:])
        split = PackedConv.of(conv, [slice(0, 2)])(x[:, :2], add=rest)
        torch.testing.assert_close(split, conv(x), rtol=1e-5, atol=1e-5)  # a conv of a concatenation = sum of parts


def test_packed_conv_packs_per_input_shape_and_stays_exact_across_batch_sizes():
    """A weight packed for one batch size is not reused at another (oneDNN's slow path); a few shapes kept."""
    g = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    pc = PackedConv.of(conv)
    with torch.no_grad():
        for b in (1, 3, 1, 2):
            x = torch.randn(b, 4, 8, 8, generator=g)
            torch.testing.assert_close(pc(x), conv(x), rtol=1e-5, atol=1e-5)
    if pc._use_onednn(x):
        assert list(pc.packed) == [(2, 4, 8, 8), (1, 4, 8, 8)]  # most recent first, PACKED_SHAPES kept


def test_chunked_passes_equal_the_whole_batch_and_the_chunk_rule_has_known_answers():
    """CPUs run a batch through the motion network and the decoder in chunks of frames (page faults of big
    activations otherwise made larger batches slower per frame); any chunking gives the same frames."""
    G = _generator(**VARIANTS["demo"]).eval()
    img, lm, driven, emo = _inputs(5)
    fast = FastTextureGenerator(G, precision="fp32")
    ident = fast.encode_identity(img)
    with torch.no_grad():
        ref = G(img, lm, driven, emo)
    for chunks in ((None, None), (2, 3)):  # whole batch; 2 + 2 + 1 motion and 3 + 2 decoder frames
        fast.motion_chunk, fast.decoder_chunk = chunks
        out = fast(ident, lm, driven, emo)
        for k in ("image", "flow", "occlusion"):
            assert out[k].shape == ref[k].shape
            torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=2e-5, msg=f"{chunks} {k}")
    # 256², c = 64: the motion decoder's [up(d1), f_h] is (512 + 69) x 64² x 4 B = 9.5 MB, D_T's [up(h), skip]
    # 384 x 128² x 4 B = 24 MB per frame
    paper = TextureModelConfig(image_size=256)
    assert CHUNK_BYTES == 16 << 20
    assert chunk_frames(paper, torch.float32) == (1, 1)
    assert chunk_frames(paper, torch.bfloat16) == (2, 1)  # 3 fit: powers of two (8 = 2 + 2 + 2 + 2)
    assert chunk_frames(TextureModelConfig(image_size=128, width_mult=0.25), torch.float32) == (16, 8)
    assert chunk_frames(paper, torch.float32, budget=100 << 20) == (8, 4)


def test_subnormal_heatmap_tails_are_zeroed_before_the_motion_encoder(monkeypatch):
    """x86 multiplies subnormal floats in microcode (the 256² heatmaps' far tails made two fp32 convolutions
    1.6-5x slower): the fast path zeroes them; the frames stay those of the training module."""
    tiny = torch.finfo(torch.float32).tiny
    real = ft.heatmap_difference

    def with_tails(*a, **kw):  # what the Gaussians' tails are at 256²: values below the smallest normal
        f = real(*a, **kw).clone()
        f.view(-1)[::7] = tiny / 8
        return f

    monkeypatch.setattr(ft, "heatmap_difference", with_tails)
    monkeypatch.setattr(tg, "heatmap_difference", with_tails)  # the reference sees the same tails
    G = _generator().eval()
    img, lm, driven, emo = _inputs()
    fast = FastTextureGenerator(G, precision="fp32")
    seen = []
    enc, forward = fast.convs["enc1_fh"], fast.convs["enc1_fh"].forward
    monkeypatch.setattr(enc, "forward", lambda x, *a, **kw: (seen.append(x.clone()), forward(x, *a, **kw))[1])
    out = fast(fast.encode_identity(img), lm, driven, emo)["image"]
    assert seen and ((seen[0] != 0) & (seen[0].abs() < tiny)).sum() == 0
    assert (with_tails(lm.expand(3, -1, -1), driven, S, G.cfg.heatmap_size, G.cfg.heatmap_sigma).abs() < tiny).any()
    with torch.no_grad():
        torch.testing.assert_close(out, G(img, lm, driven, emo)["image"], rtol=1e-4, atol=2e-5)
