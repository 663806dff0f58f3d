"""ECSQ of integer weights (`terwin.algo.ecsq`): λ = 0 keeps the weights; larger λ trades error for
entropy; zero weights stay zero; levels stay integers of the range."""
from __future__ import annotations

import numpy as np
import pytest

from terwin.algo.ecsq import ecsq


def entropy(w) -> float:
    _, c = np.unique(w, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def test_lambda_zero_keeps_every_weight():
    w = np.random.default_rng(0).integers(-128, 128, size=(16, 8, 4, 4))
    assert np.array_equal(ecsq(w, 0, lo=-128, hi=127), w)


def test_a_larger_lambda_merges_rare_values_into_frequent_ones():
    w = np.array([-1] + [0] * 100 + [5] * 60 + [6] * 5)
    assert np.array_equal(ecsq(w, 0.01, lo=-8, hi=7), w)      # a small λ moves nothing here
    # λ = 4: -1 costs 4 · 7.4 bits where it is, 1 + 4 · 0.7 at zero; 6 costs 4 · 5.1 bits, 1 + 4 · 1.5 at 5
    assert np.array_equal(ecsq(w, 4, lo=-8, hi=7), np.array([0] * 101 + [5] * 65))
    assert np.array_equal(ecsq(w, 1000, lo=-8, hi=7), np.zeros_like(w))   # everything is cheapest at zero


def test_entropy_falls_and_error_grows_with_lambda_and_zeros_stay():
    rng = np.random.default_rng(1)
    w = np.clip(np.round(rng.laplace(0, 20, size=5000)), -128, 127).astype(np.int64)
    w[rng.random(w.size) < 0.6] = 0
    previous_h, previous_err = entropy(w) + 1e-9, -1.0
    for lam in (0, 4, 16, 64, 256):
        out = ecsq(w, lam, lo=-128, hi=127)
        assert out.shape == w.shape and out.dtype.kind == "i" and out.min() >= -128 and out.max() <= 127
        assert np.all(out[w == 0] == 0)
        h, err = entropy(out), float(((out - w) ** 2).mean())
        assert h <= previous_h and err >= previous_err, (lam, h, err)
        previous_h, previous_err = h, err
    assert previous_h < entropy(w) / 2
    assert np.array_equal(ecsq(w, 64, lo=-128, hi=127), ecsq(w, 64, lo=-128, hi=127))


def test_levels_stay_in_the_range_and_lambda_is_not_negative():
    w = np.array([126, 127, 127, 127, -128, -128, -127])
    out = ecsq(w, 1000, lo=-128, hi=127)
    assert out.min() >= -128 and out.max() <= 127
    with pytest.raises(ValueError):
        ecsq(w, -1, lo=-128, hi=127)
