"""Requantizers of integer weights (`terwin.algo.quantizers`): weighted k-means, a coarser uniform
grid and dithered uniform quantization with its exact decode."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terwin.algo import quantizers as Q


def _weights(rng, shape=(6, 5, 4, 4), sparsity=0.6, hi=127):
    w = np.clip(np.round(rng.normal(0, hi / 4, size=shape)), -hi, hi).astype(np.int64)
    w[rng.random(shape) < sparsity] = 0
    return w


def test_splitmix64_is_the_published_generator():
    # SplitMix64 (Steele, Lea, Flood 2014) from state 0: its first two outputs
    first = Q._splitmix64(np.array([0], dtype=np.uint64))[0]
    second = Q._splitmix64(np.array([0x9E3779B97F4A7C15], dtype=np.uint64))[0]
    assert int(first) == 0xE220A8397B1DCDAF and int(second) == 0x6E789E6AA1B965F4


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**40), st.integers(0, 20), st.integers(1, 3000))
def test_dither_is_uniform_on_the_step_and_depends_on_seed_and_layer(step, seed, layer, count):
    u = Q.dither(seed, layer, count, step)
    assert u.dtype == np.int64 and u.shape == (count,)
    assert u.min() >= -(step // 2) and u.max() <= step - 1 - step // 2
    assert np.array_equal(u, Q.dither(seed, layer, count, step))          # regenerated: the same
    assert np.array_equal(u[:10], Q.dither(seed, layer, min(10, count), step))  # a prefix does not depend on count
    if step > 1 and count >= 64:
        assert not np.array_equal(u, Q.dither(seed + 1, layer, count, step))
        assert not np.array_equal(u, Q.dither(seed, layer + 1, count, step))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(0, 2**32), st.integers(0, 9), st.sampled_from([3, 7, 31, 127]), st.integers(0, 2**16))
def test_dithered_round_trip_is_exact_and_within_half_a_step(step, seed, layer, hi, data_seed):
    rng = np.random.default_rng(data_seed)
    w = _weights(rng, hi=hi)
    q = Q.dither_encode(w, step, seed, layer, lo=-hi, hi=hi)
    w2 = Q.dither_decode(q, step, seed, layer)
    assert w2.min() >= -hi and w2.max() <= hi                               # the integer range holds
    assert np.all(w2[w == 0] == 0)                                          # pruned stays pruned
    assert np.all((w2 != 0) == (q != 0))
    inside = (w != 0) & (np.abs(w) + step <= hi)                            # not limited by the range
    assert np.all(2 * np.abs(w2 - w)[inside & (q != 0)] <= step)
    assert np.array_equal(Q.dither_indices(w2, step, seed, layer), q)      # the indices, exactly
    assert np.array_equal(Q.dither_decode(Q.dither_indices(w2, step, seed, layer), step, seed, layer), w2)


def test_dither_indices_refuse_weights_off_the_grid_and_another_seed():
    rng = np.random.default_rng(1)
    w = _weights(rng)
    q = Q.dither_encode(w, 4, 7, 0, lo=-127, hi=127)
    w2 = Q.dither_decode(q, 4, 7, 0)
    bad = w2.copy()
    at = tuple(np.argwhere(bad != 0)[0])
    bad[at] += 1
    with pytest.raises(ValueError, match="not on the dithered grid"):
        Q.dither_indices(bad, 4, 7, 0)
    with pytest.raises(ValueError, match="not on the dithered grid"):
        Q.dither_indices(w2, 4, 8, 0)


def test_dither_error_is_the_dither_not_the_weight():
    # randomized quantization: for a constant weight the error takes every value of the step's cell
    w = np.full(4000, 50, dtype=np.int64)
    q = Q.dither_encode(w, 8, 3, 0, lo=-127, hi=127)
    err = Q.dither_decode(q, 8, 3, 0) - w
    assert set(np.unique(err).tolist()) == set(range(-4, 4)) | {4} or set(np.unique(err).tolist()) <= set(range(-4, 5))
    assert len(np.unique(err)) == 8
    # plain uniform quantization gives one error for one value
    assert len(np.unique(Q.uniform_step(w, 8, lo=-127, hi=127) - w)) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.sampled_from([7, 127]), st.integers(0, 2**16))
def test_uniform_step_gives_nearest_multiples_in_range(step, hi, data_seed):
    w = _weights(np.random.default_rng(data_seed), hi=hi)
    out = Q.uniform_step(w, step, lo=-hi, hi=hi)
    assert np.all(out % step == 0) and out.min() >= -hi and out.max() <= hi and np.all(out[w == 0] == 0)
    inside = np.abs(w) + step <= hi
    assert np.all(2 * np.abs(out - w)[inside] <= step)
    if step == 1:
        assert np.array_equal(out, w)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**16))
def test_weighted_kmeans_keeps_zeros_and_at_most_k_integer_levels(k, data_seed):
    rng = np.random.default_rng(data_seed)
    w = _weights(rng)
    h = rng.random(w.shape)
    out = Q.weighted_kmeans(w, h, k, lo=-127, hi=127)
    assert out.dtype == np.int64 and out.shape == w.shape
    assert np.all(out[w == 0] == 0) and out.min() >= -127 and out.max() <= 127
    assert len(np.unique(out[out != 0])) <= k
    # every weight sits on the level nearest to it among the levels used (up to the rounding of centres)
    assert Q.weighted_kmeans(w, h, k, lo=-127, hi=127).tolist() == out.tolist()   # deterministic


def test_importance_pulls_the_centre_to_the_important_weights():
    w = np.array([10] * 10 + [20] * 10 + [0] * 5)
    even = Q.weighted_kmeans(w, np.ones(w.shape), 1, lo=-127, hi=127)
    heavy = Q.weighted_kmeans(w, np.r_[np.full(10, 1.0), np.full(10, 9.0), np.zeros(5)], 1, lo=-127, hi=127)
    assert set(even[:20].tolist()) == {15}                       # the plain mean
    assert set(heavy[:20].tolist()) == {19}                      # (10 + 9 * 20) / 10 = 19
    assert np.all(heavy[20:] == 0) and np.all(even[20:] == 0)
    # as many clusters as values: every weight kept
    w = _weights(np.random.default_rng(3))
    assert np.array_equal(Q.weighted_kmeans(w, np.ones(w.shape), 300, lo=-127, hi=127), w)


def test_bad_arguments_are_refused():
    w = np.array([1, 2, 0])
    for call in (lambda: Q.weighted_kmeans(w, np.ones(3), 0, lo=-7, hi=7),
                 lambda: Q.weighted_kmeans(w, -np.ones(3), 2, lo=-7, hi=7),
                 lambda: Q.weighted_kmeans(w, np.ones(2), 2, lo=-7, hi=7),
                 lambda: Q.uniform_step(w, 0, lo=-7, hi=7),
                 lambda: Q.dither(-1, 0, 3, 2),
                 lambda: Q.dither_encode(w, 2, 0, 0, lo=1, hi=7)):
        with pytest.raises(ValueError):
            call()


def test_universal_sizes_are_those_of_the_standard_library():
    import bz2
    import lzma
    a, b = np.arange(-50, 50), np.zeros(300, dtype=np.int64)
    data = a.astype(np.int8).tobytes() + b.astype(np.int8).tobytes()
    assert Q.universal_sizes([a, b]) == {"raw": 400, "xz": len(lzma.compress(data, preset=9)),
                                         "bz2": len(bz2.compress(data, 9))}
