"""The integer contract (docs/architecture.md), in NumPy, in one place.

Every implementation (torch integer evaluation, `sim.reference`, the RTL) computes exactly this:

    y = clamp(((acc + bias) * m + r * m_r + (1 << (s - 1))) >> s, 0, 2**act_bits - 1)

with `>>` an arithmetic shift (floor), `m` a signed integer multiplier, `s >= 1` a shift, and
`r * m_r` the residual term (a residual connection's map r at the same position, times its own
signed multiplier; 0 without one). A signed map (a projection shortcut, relu false inside the
network) clamps to -2**(act_bits-1) .. 2**(act_bits-1) - 1 instead. Average pooling:
y = clamp((sum * m + (1 << (s - 1))) >> s, 0, 2**act_bits - 1).
"""
from __future__ import annotations

import math

import numpy as np

MULTIPLIER_BITS = 16  # signed width of the requantization multiplier
MAX_SHIFT = 40


def requantize(acc, bias, multiplier, shift, *, act_bits: int, relu: bool = True, signed: bool = False,
               residual=None, residual_multiplier=None):
    """Per-channel requantization of int64 accumulators; channel axis is 0 (or the last for 1-D).

    relu: clamp to the unsigned range; signed (relu False): clamp to the signed range; neither:
    no clamp. `residual` (the shape of `acc`) times the per-channel `residual_multiplier` is added
    before the shift."""
    acc = np.asarray(acc, dtype=np.int64)
    extra = (1,) * (acc.ndim - 1)
    b = np.asarray(bias, dtype=np.int64).reshape(-1, *extra)
    m = np.asarray(multiplier, dtype=np.int64).reshape(-1, *extra)
    s = np.asarray(shift, dtype=np.int64).reshape(-1, *extra)
    pre = (acc + b) * m
    if residual is not None:
        pre = pre + np.asarray(residual, dtype=np.int64) * np.asarray(residual_multiplier, dtype=np.int64).reshape(-1, *extra)
    y = (pre + (np.int64(1) << (s - 1))) >> s
    if relu:
        y = np.clip(y, 0, (1 << act_bits) - 1)
    elif signed:
        y = np.clip(y, -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)
    return y


def average(total, multiplier: int, shift: int, *, act_bits: int):
    """Average pooling's output from a window's sum: clamp((sum * m + 2^(s-1)) >> s, 0, 2^act_bits - 1)."""
    total = np.asarray(total, dtype=np.int64)
    y = (total * np.int64(multiplier) + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    return np.clip(y, 0, (1 << act_bits) - 1)


def fit_multiplier(scale: float, *, bits: int = MULTIPLIER_BITS) -> tuple[int, int]:
    """Integers (m, s) with m / 2**s as close to `scale` as `bits`-bit signed m allows, s in [1, MAX_SHIFT].

    m is normalised so |m| lies in [2**(bits-2), 2**(bits-1)) whenever the shift range allows it.
    """
    if not math.isfinite(scale):
        raise ValueError(f"requantization scale must be finite, not {scale}")
    if scale == 0:
        return 0, 1
    mag = abs(scale)
    # mag = f * 2**e with f in [0.5, 1): m = f * 2**(bits-1), s = bits - 1 - e
    _, e = math.frexp(mag)
    s = bits - 1 - e
    s = min(max(s, 1), MAX_SHIFT)
    m = round(mag * (1 << s))
    limit = (1 << (bits - 1)) - 1
    if m > limit:  # rounding reached 2**(bits-1), or the scale is too large for s >= 1
        if s > 1 and round(mag * (1 << (s - 1))) <= limit:
            s -= 1
            m = round(mag * (1 << s))
        else:
            raise ValueError(f"requantization scale {scale} is too large for a {bits}-bit multiplier")
    return (m if scale > 0 else -m), s


def quantize_input(x, *, scale: float, act_bits: int):
    """Float input -> unsigned act_bits integers: clamp(floor(x / scale + 1/2), 0, 2**act_bits - 1)."""
    q = np.floor(np.asarray(x, dtype=np.float64) / scale + 0.5)
    return np.clip(q, 0, (1 << act_bits) - 1).astype(np.int64)


def unsigned_bits(n: int) -> int:
    """Smallest unsigned width holding every integer in [0, n] (at least 1)."""
    return max(1, int(n).bit_length())


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n
