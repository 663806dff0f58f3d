"""The dither of randomized (dithered) uniform quantization, regenerated from a seed, and its exact
decode: what a model file that stores dithered indices (format version 4, docs/deployment-format.md,
"Dithered weights") decodes on load. NumPy only (core); the quantizer itself is
`terwin.algo.quantizers.dither_encode` (Choi, El-Khamy, Lee, arXiv 1802.02271).

* `dither(seed, layer, count, step)`: a layer's dither u, `count` integers uniform on
  −⌊step/2⌋ … step − 1 − ⌊step/2⌋: u_j = (s(s(s(seed) ^ layer) + j) mod step) − ⌊step/2⌋, s =
  SplitMix64, in 64-bit wrapping arithmetic (specified bit for bit: the same seed gives the same
  dither on every machine);
* `decode(indices, step, seed, layer)`: the weights step·q − u where q ≠ 0, else 0 (never 0 where
  q ≠ 0);
* `indices(weights, step, seed, layer)`: the inverse, or ValueError when a weight is not on the
  dithered grid.
"""
from __future__ import annotations

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def check_step(step) -> int:
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 1:
        raise ValueError(f"the quantization step must be a positive integer, not {step!r}")
    return int(step)


def splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def dither(seed: int, layer: int, count: int, step: int) -> np.ndarray:
    """The dither of a layer: `count` integers uniform on −⌊step/2⌋ … step − 1 − ⌊step/2⌋.

    u_j = (s(s(s(seed) ^ layer) + j) mod step) − ⌊step/2⌋ with s = SplitMix64 (64-bit wrapping
    arithmetic); seed and layer non-negative integers below 2**63."""
    k = check_step(step)
    for name, v in (("seed", seed), ("layer", layer)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < (1 << 63):
            raise ValueError(f"the dither {name} must be an integer in [0, 2**63), not {v!r}")
    base = splitmix64(splitmix64(np.array([seed], dtype=np.uint64)) ^ np.uint64(layer))
    with np.errstate(over="ignore"):
        r = splitmix64((base + np.arange(count, dtype=np.uint64)) & _M64)
    return (r % np.uint64(k)).astype(np.int64) - k // 2


def decode(indices, step: int, seed: int, layer: int) -> np.ndarray:
    """The weights of dithered indices: step·q − u where q ≠ 0, else 0 (never 0 where q ≠ 0)."""
    k = check_step(step)
    q = np.asarray(indices, dtype=np.int64)
    u = dither(seed, layer, q.size, k).reshape(q.shape)
    return np.where(q != 0, k * q - u, 0)


def indices(weights, step: int, seed: int, layer: int) -> np.ndarray:
    """The indices q that `weights` decode from (the inverse of `decode`), or ValueError when a weight
    is not step·q − u for the regenerated dither u."""
    k = check_step(step)
    w = np.asarray(weights, dtype=np.int64)
    u = dither(seed, layer, w.size, k).reshape(w.shape)
    q = np.floor_divide(w + u, k)
    bad = (w != 0) & ((k * q - u != w) | (q == 0))
    if bad.any():
        at = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"weight {int(w[at])} at {at} is not on the dithered grid (step {k}, seed {seed})")
    return np.where(w != 0, q, 0)


__all__ = ["check_step", "splitmix64", "dither", "decode", "indices"]
