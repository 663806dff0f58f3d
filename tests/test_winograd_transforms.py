"""F(2x2,3x3) transforms: Winograd convolution equals direct convolution, exactly, for any size and padding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from terwin import winograd
from terwin.algo.winograd.transforms import input_tiles, kernel_to_winograd, transforms, winograd_conv2d
from terwin.sim import reference

SIZES = [(1, 1), (2, 2), (3, 3), (3, 5), (4, 4), (5, 7), (7, 7), (8, 8), (2, 9), (9, 1)]
# (h, w, padding) with a 3x3 output
CASES = [(h, w, p) for h, w in SIZES for p in (0, 1) if h + 2 * p >= 3 and w + 2 * p >= 3]


def _int_case(seed, *, n=2, c=3, o=4, h=5, w=7, act_max=255):
    """Integer activations and kernels g = 4 h (so U = G g G^T is integer): every float64 op is exact."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, act_max + 1, size=(n, c, h, w))
    g = 4 * rng.integers(-8, 9, size=(o, c, 3, 3))
    return x, g


def _u_of(g) -> np.ndarray:
    _, gm, _ = winograd.matrices(2, 3)
    u = np.einsum("ia,ocab,jb->ocij", gm, g.astype(np.float64), gm)
    assert np.array_equal(u, np.round(u)), "U = G g G^T must be integer for g in 4Z"
    return np.round(u).astype(np.int64)


def test_transform_matrices_are_the_lavin_gray_ones():
    bt, g, at = winograd.matrices(2, 3)
    assert set(np.unique(bt)) <= {-1, 0, 1} and set(np.unique(at)) <= {-1, 0, 1}
    # 1-D F(2,3): A^T [(G g) * (B^T d)] equals the correlation of d (4 taps) with g (3 taps)
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, k = rng.normal(size=4), rng.normal(size=3)
        direct = np.array([d[0:3] @ k, d[1:4] @ k])
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), direct, rtol=0, atol=1e-12)


def test_tile_size_is_a_parameter_and_only_f2x2_is_offered():
    with pytest.raises(ValueError, match="F\\(2x2,3x3\\)"):
        winograd.matrices(4, 3)
    bt, g, at = transforms(2, dtype=torch.float64)
    assert (bt.shape, g.shape, at.shape) == ((4, 4), (4, 3), (2, 4))


@pytest.mark.parametrize("h,w,padding", CASES)
def test_torch_winograd_equals_direct_conv_float64_exactly(h, w, padding):
    x, g = _int_case(h * 31 + w, h=h, w=w)
    xt, gt = torch.tensor(x, dtype=torch.float64), torch.tensor(g, dtype=torch.float64)
    y_wino = winograd_conv2d(xt, kernel_to_winograd(gt), padding=padding)
    y_direct = F.conv2d(xt, gt, padding=padding)
    assert y_wino.shape == y_direct.shape == (2, 4, h + 2 * padding - 2, w + 2 * padding - 2)
    diff = (y_wino != y_direct).sum().item()
    assert diff == 0, f"{diff} outputs differ; first: {y_wino.flatten()[:4]} vs {y_direct.flatten()[:4]}"


def test_torch_winograd_equals_direct_conv_on_real_valued_data():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(size=(3, 5, 9, 7)))
    g = torch.tensor(rng.normal(size=(6, 5, 3, 3)))
    y = winograd_conv2d(x, kernel_to_winograd(g), padding=1)
    torch.testing.assert_close(y, F.conv2d(x, g, padding=1), rtol=0, atol=1e-12)


def test_winograd_gradients_match_direct_conv():
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(size=(2, 3, 5, 6)), requires_grad=True)
    g = torch.tensor(rng.normal(size=(4, 3, 3, 3)), requires_grad=True)
    winograd_conv2d(x, kernel_to_winograd(g), padding=1).square().sum().backward()
    gx, gg = x.grad.clone(), g.grad.clone()
    x.grad = g.grad = None
    F.conv2d(x, g, padding=1).square().sum().backward()
    torch.testing.assert_close(gx, x.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(gg, g.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("h,w,padding", CASES)
def test_reference_integer_winograd_equals_direct_conv(h, w, padding):
    x, g = _int_case(h * 17 + w + padding, h=h, w=w)
    u = _u_of(g)
    got = reference.winograd_conv2d_acc(x, u, padding=padding)
    want = reference.conv2d_acc(x, g, stride=1, padding=padding)
    assert got.dtype == np.int64
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 11), w=st.integers(1, 11), c=st.integers(1, 4), o=st.integers(1, 3),
       padding=st.integers(0, 1), seed=st.integers(0, 2**16))
def test_integer_path_torch_equals_reference_equals_direct(h, w, c, o, padding, seed):
    assume(h + 2 * padding >= 3 and w + 2 * padding >= 3)
    x, g = _int_case(seed, n=1, c=c, o=o, h=h, w=w)
    u = _u_of(g)
    ref = reference.winograd_conv2d_acc(x, u, padding=padding)
    tor = winograd_conv2d(torch.tensor(x), torch.tensor(u), padding=padding).numpy()
    direct = reference.conv2d_acc(x, g, stride=1, padding=padding)
    assert tor.dtype == np.int64
    assert np.array_equal(ref, tor) and np.array_equal(ref, direct)


def test_input_tiles_cover_odd_sizes_with_partial_tiles():
    x = torch.arange(1 * 1 * 5 * 7, dtype=torch.float64).reshape(1, 1, 5, 7)
    d, ho, wo = input_tiles(x, padding=1)
    assert (ho, wo) == (5, 7)
    assert d.shape == (1, 1, 3, 4, 4, 4)          # ceil(5/2) x ceil(7/2) tiles of 4x4
    assert d[0, 0, 0, 0, 1, 1] == x[0, 0, 0, 0]    # first tile starts in the padding
    assert d[0, 0, 2, 3, 3, 3] == 0                # last tile reads past the padded input: zeros
    assert d[0, 0, 2, 3, 1, 1] == x[0, 0, 4, 6]    # ...but covers the last real pixel


def test_input_without_a_3x3_output_is_rejected():
    with pytest.raises(ValueError, match="no 3x3 output"):
        winograd_conv2d(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4), padding=0)
