"""torch integer evaluation vs `terwin.intmath` and the NumPy reference (`==` on integers)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from terwin import intmath
from terwin.algo import torch_int
from terwin.algo.data import load_digits_split
from terwin.algo.ternary.flow import Schedule, TernaryOptions, compress
from terwin.sim import reference
from terwin.spec import PE4X4, PE8X8, PE8X16
from terwin.synthetic import random_deployment

TINY = Schedule(float_epochs=2, joint_epochs=2, finetune_epochs=2)


def _both(acc, bias, m, s, *, act_bits=8, relu=True):
    acc = np.asarray(acc, dtype=np.int64)
    ours = torch_int.requantize(torch.from_numpy(acc), bias, m, s, act_bits=act_bits, relu=relu).numpy()
    # intmath puts channels on axis 0; torch_int on axis 1 of [N, C, ...]
    theirs = intmath.requantize(acc.swapaxes(0, 1), bias, m, s, act_bits=act_bits, relu=relu).swapaxes(0, 1)
    return ours, theirs


def test_requantize_rounding_edge_cases_by_hand():
    # one channel, m = 1, s = 1: y = (acc + 1) >> 1, floor division by 2 after adding 1/2
    acc = np.array([[[-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5]]])
    ours, theirs = _both(acc, [0], [1], [1], relu=False)
    expected = [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]  # ties (odd acc) round up, towards +inf
    assert ours.reshape(-1).tolist() == expected, ours
    assert np.array_equal(ours, theirs)
    # ReLU clamp at 0 and at 2**act_bits - 1
    acc = np.array([[[-1000, -1, 0, 509, 510, 511, 100000]]])
    ours, theirs = _both(acc, [0], [1], [1], act_bits=8, relu=True)
    assert ours.reshape(-1).tolist() == [0, 0, 0, 255, 255, 255, 255]
    assert np.array_equal(ours, theirs)
    # negative multiplier, bias and a large shift: arithmetic (floor) shift of negatives
    acc = np.array([[[7, -7, 12345]], [[7, -7, 12345]]])  # N=2 of [C=1, 3]
    ours, theirs = _both(acc.reshape(2, 1, 3), [-3], [-20000], [12], relu=False)
    expected = (((acc.reshape(2, 1, 3) - 3) * -20000 + 2048) >> 12)
    assert np.array_equal(ours, expected) and np.array_equal(theirs, expected)
    # exact ties at a big shift: (acc * m) = k * 2**s + 2**(s-1)
    s = 20
    acc = np.array([[[3, -3]]])
    m = (1 << (s - 1))  # acc * m + 2**(s-1) = (2 acc + 1) 2**(s-1)
    ours, theirs = _both(acc, [0], [m], [s], relu=False)
    assert ours.reshape(-1).tolist() == [2, -1]  # 1.5 -> 2, -1.5 -> -1
    assert np.array_equal(ours, theirs)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_requantize_matches_intmath_random(data):
    c = data.draw(st.integers(1, 4))
    acc = np.array(data.draw(st.lists(st.integers(-(1 << 24), 1 << 24), min_size=c * 3, max_size=c * 3))).reshape(1, c, 3)
    bias = data.draw(st.lists(st.integers(-(1 << 20), 1 << 20), min_size=c, max_size=c))
    m = data.draw(st.lists(st.integers(-(1 << 15), (1 << 15) - 1), min_size=c, max_size=c))
    s = data.draw(st.lists(st.integers(1, 40), min_size=c, max_size=c))
    bits = data.draw(st.integers(2, 16))
    relu = data.draw(st.booleans())
    ours, theirs = _both(acc, bias, m, s, act_bits=bits, relu=relu)
    assert np.array_equal(ours, theirs), f"torch {ours} vs intmath {theirs}"


@pytest.mark.parametrize("spec", [PE4X4, PE8X8, PE8X16], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_deployments_equal_reference(spec, seed):
    dep = random_deployment(spec, seed=seed)
    rng = np.random.default_rng(seed)
    q = rng.integers(0, spec.act_max + 1, size=(16, *dep.input_shape))
    ours = torch_int.trace(dep, q)
    theirs = reference.trace(dep, q)
    for layer, a, b in zip(dep.layers, ours, theirs):
        assert np.array_equal(a.numpy(), b), f"{layer.name}: torch-int differs from the reference"


@pytest.fixture(scope="module")
def tiny_trained():
    return compress(TernaryOptions(spec=PE8X8, schedule=TINY, tile_sparsity=0.5, regularizer="wpc", seed=3,
                                   quiet=True))


def test_trained_tiny_model_equals_reference_on_every_test_image(tiny_trained):
    dep, report = tiny_trained
    split = load_digits_split()
    q = reference.quantize_input(dep, split.x_test)
    assert np.array_equal(torch_int.quantize_input(dep, split.x_test).numpy(), q)
    assert np.array_equal(q, np.rint(split.x_test * 16).astype(np.int64)), "input scale 1/16 must give q = pixel"
    ours = torch_int.trace(dep, q)
    theirs = reference.trace(dep, q)
    for layer, a, b in zip(dep.layers, ours, theirs):
        assert np.array_equal(a.numpy(), b), f"{layer.name}: torch-int differs from the reference"
    assert report["reference_mismatches"] == 0 and report["test_images"] == 450
    # activations really use the range (a broken requantizer would give all zeros or all 255)
    hidden = ours[0].numpy()
    assert 0 < hidden.mean() < 255 and hidden.max() > 16

