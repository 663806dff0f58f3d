import numpy as np
import pytest
from hypothesis import given, strategies as st

from terwin import intmath


def test_requantize_rounds_half_up_and_floors_negative_values():
    # (acc + bias) * m with m = 1: y = (v + 2^(s-1)) >> s, i.e. round half up, flooring shift.
    acc = np.array([[-3, -2, -1, 0, 1, 2, 3, 6]])
    y = intmath.requantize(acc, [0], [1], [2], act_bits=8, relu=False)
    # v/4 = -0.75 -0.5 -0.25 0 0.25 0.5 0.75 1.5 -> floor(v/4 + 1/2)
    assert y.tolist() == [[-1, 0, 0, 0, 0, 1, 1, 2]]


def test_requantize_clamps_to_the_activation_range():
    y = intmath.requantize(np.array([[-1000, 0, 1000, 10**6]]), [0], [3], [1], act_bits=8)
    assert y.tolist() == [[0, 0, 255, 255]]


def test_requantize_is_per_channel():
    acc = np.full((2, 3), 10)
    y = intmath.requantize(acc, [0, 6], [1, 1], [1, 2], act_bits=8)
    assert y.tolist() == [[5, 5, 5], [4, 4, 4]]


@given(st.floats(min_value=1e-6, max_value=1000.0) | st.floats(min_value=-1000.0, max_value=-1e-6))
def test_fit_multiplier_is_accurate(scale):
    m, s = intmath.fit_multiplier(scale)
    assert 1 <= s <= intmath.MAX_SHIFT
    assert abs(m) < 1 << (intmath.MULTIPLIER_BITS - 1)
    assert np.sign(m) == np.sign(scale)
    assert abs(m / 2**s - scale) <= 2.0 ** -(s + 1) + 1e-15


def test_fit_multiplier_rejects_unrepresentable_scales():
    with pytest.raises(ValueError, match="too large"):
        intmath.fit_multiplier(1e9)
    assert intmath.fit_multiplier(0.0) == (0, 1)


def test_quantize_input_rounds_and_clamps():
    q = intmath.quantize_input([-0.1, 0.0, 0.49, 0.5, 1.0, 99.0], scale=1.0, act_bits=4)
    assert q.tolist() == [0, 0, 0, 1, 1, 15]


def test_signed_bits():
    assert intmath.signed_bits(-128, 127) == 8
    assert intmath.signed_bits(-129, 0) == 9
    assert intmath.signed_bits(0, 1) == 2
