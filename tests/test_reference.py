"""The NumPy reference against an independent oracle: torch's float64 ops on integer tensors are exact here."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from terwin import winograd
from terwin.sim import reference
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 6), o=st.integers(1, 6), h=st.integers(3, 9), w=st.integers(3, 9),
       k=st.sampled_from([1, 3]), stride=st.sampled_from([1, 2]), pad=st.sampled_from([0, 1]), seed=st.integers(0, 99))
def test_conv2d_acc_equals_torch_float64(c, o, h, w, k, stride, pad, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(2, c, h, w))
    wt = rng.integers(-1, 2, size=(o, c, k, k))
    got = reference.conv2d_acc(x, wt, stride=stride, padding=pad)
    want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(wt).double(), stride=stride, padding=pad)
    assert got.dtype == np.int64
    assert np.array_equal(got, want.numpy().astype(np.int64))


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 4), o=st.integers(1, 4), h=st.integers(3, 9), w=st.integers(3, 9),
       pad=st.sampled_from([0, 1]), seed=st.integers(0, 99))
def test_integer_winograd_equals_direct_conv(c, o, h, w, pad, seed):
    """With U = G g G^T exactly (g multiples of 4 make U integer), F(2x2,3x3) equals direct 3x3 conv,
    including odd output sizes (partial tiles) and no padding."""
    rng = np.random.default_rng(seed)
    _, g_mat, _ = winograd.matrices()
    g = 4 * rng.integers(-3, 4, size=(o, c, 3, 3))
    u = np.einsum("ij,ocjk,lk->ocil", g_mat, g, g_mat)
    assert np.array_equal(u, np.round(u))
    x = rng.integers(0, 256, size=(2, c, h, w))
    got = reference.winograd_conv2d_acc(x, u.astype(np.int64), padding=pad)
    want = reference.conv2d_acc(x, g, stride=1, padding=pad)
    assert got.shape == want.shape == (2, o, h + 2 * pad - 2, w + 2 * pad - 2)
    assert np.array_equal(got, want)


def test_whole_network_equals_torch_oracle():
    dep = random_deployment(PRESETS["pe8x8"], seed=5)
    q = np.random.default_rng(1).integers(0, 256, size=(6, *dep.input_shape))
    x = torch.from_numpy(q).double()
    for layer, got in zip(dep.layers, reference.trace(dep, q)):
        if layer.kind == "maxpool2d":
            x = F.max_pool2d(x, layer.kernel, layer.stride)
        else:
            w = torch.from_numpy(layer.weight.astype(np.int64)).double()
            if layer.kind == "conv2d":
                acc = F.conv2d(x, w, stride=layer.stride, padding=layer.padding)
            else:
                acc = (x.flatten(1) @ w.T)[:, :, None, None]
            acc = acc.long() + torch.from_numpy(layer.bias).view(1, -1, 1, 1)
            if layer.relu:
                m = torch.from_numpy(layer.multiplier).view(1, -1, 1, 1)
                s = torch.from_numpy(layer.shift).view(1, -1, 1, 1)
                acc = ((acc * m + (1 << (s - 1))) >> s).clamp(0, 255)
            x = acc.double()
        assert np.array_equal(got, x.long().numpy()), layer.name
    assert reference.forward(dep, q).shape == (6, 10)


def test_input_shape_mismatch_is_reported():
    dep = random_deployment(PRESETS["pe4x4"], seed=0)
    with pytest.raises(ValueError, match="does not match the model's"):
        reference.forward(dep, np.zeros((1, 2, 8, 8), dtype=np.int64))
