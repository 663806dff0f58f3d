"""Requantizers of integer weights after training: weighted k-means, a coarser uniform grid, dithered
uniform quantization. NumPy only; the Winograd family applies them to its exported layers
(`terwin.algo.winograd.quantize`, `terwin compress --quantizer ...`; docs/codecs.md has the measured
bits and accuracies). ECSQ is `terwin.algo.ecsq`.

Every function takes a layer's integer weights and its range lo..hi and returns integers in that
range (the engines multiply integers: a requantized model keeps the integer contract, its
requantization constants unchanged). Zero weights are pruned positions: they stay zero, and other
weights may join them, so the sparsity pattern only grows.

* `weighted_kmeans` — Choi, El-Khamy, Lee, "Towards the limit of network quantization" (arXiv
  1612.01543): k-means of the nonzero weights where each weight counts with its weight h_i (their
  Hessian-weighted k-means with h_i a Hessian-diagonal estimate; with h_i = 1 plain k-means; with
  h_i = E[(∂ℓ/∂w_i)²] Gao et al.'s importance-weighted k-means). The centres are then rounded onto
  the integer grid.
* `uniform_step` — every nonzero weight to the nearest multiple of an integer step k (k = 1: unchanged).
* `dither_encode` / `dither_decode` — randomized uniform quantization (Choi, El-Khamy, Lee,
  "Universal deep neural network compression", arXiv 1802.02271) on the integer grid: a dither
  u_i, an integer uniform on the k values −⌊k/2⌋ … k − 1 − ⌊k/2⌋, is generated from a seed
  (`dither`: SplitMix64 of (seed, layer, position), specified bit for bit in the core module
  `terwin.dither`, which the model file's loader decodes with, so the same seed
  gives the same dither on every machine); the index q_i = round((w_i + u_i) / k) is what is stored
  (and coded by a universal lossless coder), and the decoder returns w_i' = k·q_i − u_i (0 where
  q_i = 0): an integer within one half step of w_i, with an error independent of w_i.
"""
from __future__ import annotations

import bz2
import lzma

import numpy as np

from terwin.dither import check_step as _check_step
from terwin.dither import splitmix64 as _splitmix64  # noqa: F401 (the generator, as the tests name it)
from terwin.dither import decode as dither_decode
from terwin.dither import dither
from terwin.dither import indices as dither_indices

MAX_ITERATIONS = 100


def _check_range(lo: int, hi: int) -> None:
    if not lo < 0 < hi:
        raise ValueError(f"the weight range must hold zero inside it, not {lo}..{hi}")


def weighted_kmeans(weights, importance, clusters: int, *, lo: int, hi: int) -> np.ndarray:
    """The nonzero `weights` (integers) clustered into at most `clusters` levels by k-means where
    weight i counts `importance[i]` (≥ 0; same shape), the centres rounded to integers in lo..hi.

    Deterministic: the centres start at the importance-weighted quantiles of the nonzero values (at
    every value when there are at most `clusters`)
    (k-means on the distinct values with their summed importance, Lloyd's iterations until nothing
    moves); a weight goes to the nearest centre (the lower on a tie). A weight whose centre rounds
    to 0 becomes 0. With all importances zero the weights count equally."""
    _check_range(lo, hi)
    if not isinstance(clusters, int) or clusters < 1:
        raise ValueError(f"clusters must be a positive integer, not {clusters!r}")
    w = np.asarray(weights, dtype=np.int64)
    h = np.asarray(importance, dtype=np.float64)
    if h.shape != w.shape:
        raise ValueError(f"importance has shape {h.shape}, the weights {w.shape}")
    if not np.all(np.isfinite(h)) or (h.size and h.min() < 0):
        raise ValueError("importance must be finite and non-negative")
    out = np.zeros_like(w)
    nz = w != 0
    if not nz.any():
        return out
    values, inverse = np.unique(w[nz], return_inverse=True)
    mass = np.bincount(inverse, weights=h[nz], minlength=values.size)
    if mass.sum() <= 0:
        mass = np.bincount(inverse, minlength=values.size).astype(np.float64)
    # a value with zero importance still needs a centre: a tiny share keeps the means defined
    mass = mass + mass.sum() * 1e-12
    x = values.astype(np.float64)
    k = min(clusters, values.size)
    cdf = np.cumsum(mass) / mass.sum()
    if k == values.size:        # a level for every value: nothing to merge
        centres = x.copy()
    else:
        centres = np.unique(x[np.minimum(np.searchsorted(cdf, (np.arange(k) + 0.5) / k), values.size - 1)])
    assign = None
    for _ in range(MAX_ITERATIONS):
        new = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
        m = np.bincount(new, weights=mass, minlength=centres.size)
        t = np.bincount(new, weights=mass * x, minlength=centres.size)
        moved = np.where(m > 0, t / np.where(m > 0, m, 1), centres)
        if assign is not None and np.array_equal(new, assign) and np.array_equal(moved, centres):
            break
        assign, centres = new, moved
    assign = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
    levels = np.clip(np.floor(centres + 0.5), lo, hi).astype(np.int64)   # onto the integer grid (half up)
    out[nz] = levels[assign][inverse]
    return out


def uniform_step(weights, step: int, *, lo: int, hi: int) -> np.ndarray:
    """Every nonzero weight to the nearest multiple of `step` (half up) within lo..hi; zeros stay."""
    _check_range(lo, hi)
    k = _check_step(step)
    w = np.asarray(weights, dtype=np.int64)
    q = np.floor_divide(2 * w + k, 2 * k)
    q = np.clip(q, -((-lo) // k), hi // k)
    return np.where(w != 0, k * q, 0)


def dither_encode(weights, step: int, seed: int, layer: int, *, lo: int, hi: int) -> np.ndarray:
    """The indices q of dithered uniform quantization of the integer `weights` (same shape): 0 where
    the weight is 0, else round((w + u) / step) (half up), limited so that step·q − u lies in lo..hi
    (0 where no nonzero q does)."""
    _check_range(lo, hi)
    k = _check_step(step)
    w = np.asarray(weights, dtype=np.int64)
    u = dither(seed, layer, w.size, k).reshape(w.shape)
    q = np.floor_divide(2 * (w + u) + k, 2 * k)
    low, high = -np.floor_divide(-(lo + u), k), np.floor_divide(hi + u, k)   # ceil((lo+u)/k) .. floor((hi+u)/k)
    q = np.where(low <= high, np.clip(q, low, high), 0)    # a step wider than the range: only 0 fits
    return np.where(w != 0, q, 0)


def universal_sizes(arrays) -> dict:
    """Bytes of the integer arrays (each as int8 if it fits, else int16, C order, concatenated) raw
    and under the standard library's universal lossless coders: lzma (xz container, preset 9) and
    bz2 (level 9, Burrows–Wheeler)."""
    parts = []
    for a in arrays:
        a = np.asarray(a, dtype=np.int64)
        dtype = np.int8 if a.size == 0 or (a.min() >= -128 and a.max() <= 127) else np.int16
        parts.append(a.astype(dtype).tobytes())
    data = b"".join(parts)
    return {"raw": len(data), "xz": len(lzma.compress(data, preset=9)), "bz2": len(bz2.compress(data, 9))}


__all__ = ["weighted_kmeans", "uniform_step", "dither", "dither_encode", "dither_decode", "dither_indices",
           "universal_sizes"]
