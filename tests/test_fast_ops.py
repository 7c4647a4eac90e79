"""The exact rewrites of emotalk.inference.fast_ops equal the eager layers they replace: the sub-pixel
up-convolution (UpConv: bilinear x2 upsample + concatenation + 3x3 convolution without the upsampled
tensor), its plain form (UpCatConv), its weight-split form without the concatenation (UpSplitConv),
the row-tap form of a narrow k x k convolution (RowTapConv) and the share of per-frame constant channels
(BroadcastConv), at several batch sizes and map sizes including the 1 x 1 and border-only cases."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from emotalk.inference.fast_ops import BroadcastConv, RowTapConv, UpCatConv, UpConv, UpSplitConv


def _reference(conv: nn.Conv2d, x, skip, add, relu: bool):
    up = F.interpolate(x, size=tuple(skip.shape[-2:]), mode="bilinear", align_corners=False)
    y = conv(torch.cat([up, skip], dim=1))
    y = y + add if add is not None else y
    return torch.relu(y) if relu else y


@pytest.mark.parametrize("batch,h,with_add,relu", [(1, 1, False, True), (2, 2, True, True), (3, 5, True, False),
                                                   (1, 8, False, False)])
def test_up_conv_equals_upsample_concat_conv(batch, h, with_add, relu):
    g = torch.Generator().manual_seed(h)
    cu, cs, co = 6, 3, 5
    conv = nn.Conv2d(cu + cs, co, 3, padding=1)
    x, skip = torch.randn(batch, cu, h, h, generator=g), torch.randn(batch, cs, 2 * h, 2 * h, generator=g)
    add = torch.randn(1, co, 2 * h, 2 * h, generator=g) if with_add else None  # a per-identity term: broadcast
    with torch.no_grad():
        ref = _reference(conv, x, skip, add, relu)
        for layer in (UpConv(conv, slice(0, cu), [slice(cu, cu + cs)]),
                      UpCatConv(conv, slice(0, cu), [slice(cu, cu + cs)]),
                      UpSplitConv(conv, slice(0, cu), [slice(cu, cu + cs)])):
            out = layer(x, skip, relu=relu, add=add)
            assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=type(layer).__name__)
    assert ref.std() > 0.1  # the border correction matters: without it the outer rows differ
    if h > 1:
        with torch.no_grad():
            wrong = UpConv(conv, slice(0, cu), [slice(cu, cu + cs)])
            wrong.edges.weight.zero_(), wrong.edges.packed.clear()
            diff = (wrong(x, skip, relu=False, add=add) - _reference(conv, x, skip, add, False)).abs()
        assert diff[..., 1:-1, 1:-1].max() < 1e-5 < diff[..., 0, :].max()  # interior exact, border not


def test_up_conv_uses_a_subset_of_input_channels_and_checks_shapes():
    """G_T's motion decoder reads [up(d1), f_t, f_h] with f_t's share cached: the skip is a channel slice."""
    g = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(4 + 2 + 3, 4, 3, padding=1)
    x, f_h = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    f_t = torch.randn(1, 2, 6, 6, generator=g)
    with torch.no_grad():
        ref = _reference(conv, x, torch.cat([f_t.expand(2, -1, -1, -1), f_h], 1), None, True)
        ft_term = F.conv2d(f_t, conv.weight[:, 4:6], None, padding=1)
        out = UpConv(conv, slice(0, 4), [slice(6, 9)])(x, f_h, relu=True, add=ft_term)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="upsamples by 2"):
            UpConv(conv, slice(0, 4), [slice(6, 9)])(x, f_h[..., :5, :5])
    with pytest.raises(ValueError, match="3x3, stride 1"):
        UpConv(nn.Conv2d(4, 4, 5, padding=2), slice(0, 2), [slice(2, 4)])


def test_up_conv_in_bf16_is_close_to_fp32():
    g = torch.Generator().manual_seed(2)
    conv = nn.Conv2d(32 + 16, 16, 3, padding=1)
    x, skip = torch.randn(2, 32, 8, 8, generator=g), torch.randn(2, 16, 16, 16, generator=g)
    with torch.no_grad():
        ref = _reference(conv, x, skip, None, True)
        out = UpConv(conv.to(torch.bfloat16), slice(0, 32), [slice(32, 48)])(
            x.to(torch.bfloat16), skip.to(torch.bfloat16), relu=True)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().mean() < 0.02 * ref.abs().mean() + 1e-3  # bf16 rounding only


@pytest.mark.parametrize("batch,k,co", [(1, 7, 3), (2, 7, 4), (3, 3, 2)])
def test_row_tap_conv_equals_the_convolution(batch, k, co):
    g = torch.Generator().manual_seed(k + co)
    conv = nn.Conv2d(5, co, k, padding=k // 2)
    x = torch.randn(batch, 5, 9, 9, generator=g)
    with torch.no_grad():
        out = RowTapConv(conv)(x)
        torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="odd, stride 1"):
        RowTapConv(nn.Conv2d(5, 3, 4, padding=2))


@pytest.mark.parametrize("h,w,k", [(1, 1, 3), (2, 3, 3), (6, 5, 5)])
def test_broadcast_conv_equals_the_convolution_of_the_broadcast_map(h, w, k):
    """fuse([f_m, f_e broadcast]) = fuse's f_m share + BroadcastConv(f_e): exact at the zero-padded border."""
    g = torch.Generator().manual_seed(h * w + k)
    conv = nn.Conv2d(4 + 6, 5, k, padding=k // 2)
    fm, fe = torch.randn(2, 4, h, w, generator=g), torch.randn(2, 6, generator=g)
    with torch.no_grad():
        ref = conv(torch.cat([fm, fe[:, :, None, None].expand(-1, -1, h, w)], dim=1))
        share = BroadcastConv(conv, slice(4, 10))(fe, (h, w))
        rest = F.conv2d(fm, conv.weight[:, :4], conv.bias, padding=k // 2)
    assert share.shape == (2, 5, h, w) and share.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(rest + share, ref, rtol=1e-5, atol=1e-5)
    if h > 2:  # the border differs from the interior (a plain W_sum @ f_e would be wrong there)
        assert (share[..., 0, 0] - share[..., h // 2, w // 2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="odd, stride 1"):
        BroadcastConv(nn.Conv2d(10, 5, 3, stride=2, padding=1), slice(4, 10))
