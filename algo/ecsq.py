"""Entropy-constrained scalar quantization (ECSQ) of integer weights, after training.

The quantizer of Choi, El-Khamy and Lee ("Towards the limit of network quantization", arXiv
1612.01543), in the form of Chou, Lookabaugh and Gray's ECSQ, applied to weights that are already
integers (a Deployment's): each distinct value v (n_v weights) goes to the level c minimizing

    n_v · ((v − c)² + λ · (−log2 p_c))

(squared error plus λ times the level's code length), the levels move to the rounded mean of what
they hold and their probabilities to their share; repeated until nothing moves. λ = 0 keeps every
weight. Larger λ merges rare values into frequent ones: fewer bits after Huffman coding
(`terwin.codec`), more error. Zero is a fixed level and every zero weight stays zero (zeros are
pruned positions); other weights may join it, so the sparsity pattern only grows. Levels stay
integers of the layer's range: the requantization constants are unchanged.

This is post-training only (no fine-tuning, no Hessian weighting) and not yet an option of
`terwin compress`; `benchmarks/ecsq_winograd.py` measures it on the stored Winograd model
(docs/codecs.md). NumPy only.
"""
from __future__ import annotations

import numpy as np

MAX_ITERATIONS = 50


def ecsq(weights, lam: float, *, lo: int, hi: int) -> np.ndarray:
    """The weights requantized by ECSQ at Lagrange multiplier `lam` (≥ 0), levels integers in lo..hi."""
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, not {lam}")
    w = np.asarray(weights, dtype=np.int64)
    values, counts = np.unique(w, return_counts=True)
    levels = values.astype(np.float64)
    prob = counts / counts.sum()
    assign = np.arange(values.size)
    zero = np.flatnonzero(values == 0)
    for _ in range(MAX_ITERATIONS):
        cost = (values[:, None] - levels[None, :]) ** 2 + lam * -np.log2(np.maximum(prob, 1e-300))[None, :]
        cost[:, prob == 0] = np.inf
        if zero.size:                       # zero weights stay zero (others may join them)
            cost[zero, :] = np.inf
            cost[zero, zero] = 0.0
        new = np.argmin(cost, axis=1)       # the lowest level on a tie: deterministic
        mass = np.bincount(new, weights=counts, minlength=levels.size)
        total = np.bincount(new, weights=counts * values, minlength=levels.size)
        moved = np.where(mass > 0, np.clip(np.round(total / np.maximum(mass, 1)), lo, hi), levels)
        if zero.size:
            moved[zero] = 0.0
        if np.array_equal(new, assign) and np.array_equal(moved, levels):
            break
        assign, levels, prob = new, moved, mass / counts.sum()
    return levels[assign].astype(np.int64)[np.searchsorted(values, w)]
