"""Thresholds that replace the requantizer's multiply (FINN's "multi-threshold" activation), exactly.

For an unsigned (ReLU) output the integer contract (`terwin.intmath.requantize`)

    y(acc) = clamp(((acc + bias) * m + 2^(s-1)) >> s, 0, 2^b - 1)

is monotone in acc: nondecreasing for m > 0, nonincreasing for m < 0, constant (0) for m == 0. So
y = #{k in 1..2^b - 1 : a >= T_k}, where a is acc (direction 0) or ~acc = -acc - 1 (direction 1, m < 0:
a bitwise NOT, no carry chain, which maps the accumulator's range onto itself and turns a
nonincreasing y into a nondecreasing one), with the integer thresholds

    T_k = min{a in [lo, hi] : y(a) >= k}, or hi + 1 when no a reaches k,

[lo, hi] the whole two's-complement range of the `acc_bits`-bit accumulator (so the table is exact for
every value the port can carry, not only for the values a model's bound allows). In closed form, with
K = k * 2^s - 2^(s-1): y >= k  <=>  (acc + bias) * m >= K, so

    m > 0:  T_k = ceil(K / m) - bias
    m < 0:  T_k = ceil(K / |m|) + bias - 1      (a = -acc - 1: (acc + bias) * m = (a + 1 - bias) * |m|)
    m = 0:  T_k = hi + 1                        (y = 2^(s-1) >> s = 0 for every acc)

clamped to [lo, hi + 1]; `tests/test_requant_threshold.py` checks the closed form against the contract
by exhaustive evaluation over the whole range, and against a binary search on the contract.

Two levels (`split`): b = hb + lb bits, hb = b - b // 2 high bits from the *coarse* table (the
2^hb - 1 thresholds T_{j * 2^lb}, j = 1 .. 2^hb - 1: h = #{j : a >= T_{j 2^lb}} = y >> lb), then lb low
bits from the *fine* table at (channel, h) (the 2^lb - 1 thresholds T_{h 2^lb + i}, i = 1 .. 2^lb - 1:
l = #{i : a >= T_{h 2^lb + i}} = y - h 2^lb). Two more full-width comparisons, a >= T_1 (else y = 0) and
a >= T_{2^b-1} (then y = 2^b - 1), confine the fine level to a window of accumulators [L_h, U_h) that
holds every fine threshold of the segment (`windows`), so the fine table keeps only the thresholds'
low w + 1 bits (`fine_bits`: every window at most 2^w wide) and compares modulo 2^(w + 1): for
|a - T| <= 2^w the top bit of (a - T) mod 2^(w + 1) is a < T. Pure Python integers (no NumPy, no
Amaranth).
"""
from __future__ import annotations


def split(act_bits: int) -> tuple[int, int]:
    """(hb, lb): the high bits the coarse table gives, the low bits the fine table gives."""
    lb = act_bits // 2
    return act_bits - lb, lb


def threshold_bits(acc_bits: int) -> int:
    """Signed width of a threshold: the accumulator's range and one past its top (hi + 1)."""
    return acc_bits + 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def thresholds(bias: int, mult: int, shift: int, *, act_bits: int, acc_bits: int) -> tuple[int, list[int]]:
    """(direction, [T_1, ..., T_{2^b - 1}]) of one channel (module docstring), exact Python integers."""
    bias, mult, shift = int(bias), int(mult), int(shift)
    if shift < 1:
        raise ValueError(f"requantization shift must be >= 1, not {shift}")
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    direction = int(mult < 0)
    out = []
    for k in range(1, 1 << act_bits):
        big_k = (k << shift) - (1 << (shift - 1))
        if mult > 0:
            t = _ceil_div(big_k, mult) - bias
        elif mult < 0:
            t = _ceil_div(big_k, -mult) + bias - 1
        else:
            t = hi + 1
        out.append(min(max(t, lo), hi + 1))
    return direction, out


def apply(acc: int, direction: int, table: list[int], *, acc_bits: int) -> int:
    """y from the thresholds (one level: the count of thresholds a reaches)."""
    a = ~int(acc) if direction else int(acc)
    assert -(1 << (acc_bits - 1)) <= a < (1 << (acc_bits - 1)), "acc outside the accumulator's range"
    return sum(a >= t for t in table)


def coarse_fine(table: list[int], *, act_bits: int) -> tuple[list[int], list[list[int]]]:
    """The two levels of one channel's thresholds: coarse (2^hb - 1 thresholds) and fine (per h in
    0 .. 2^hb - 1: its segment's 2^lb - 1 thresholds)."""
    hb, lb = split(act_bits)
    assert len(table) == (1 << act_bits) - 1
    coarse = [table[(j << lb) - 1] for j in range(1, 1 << hb)]
    fine = [[table[(h << lb) + i - 1] for i in range(1, 1 << lb)] for h in range(1 << hb)]
    return coarse, fine


def windows(table: list[int], *, act_bits: int) -> list[tuple[int, int]]:
    """Per segment h, the accumulators [L_h, U_h) whose y the fine thresholds decide: those with
    y >= 1 (a >= T_1) and y < 2^b - 1 (a < T_{2^b-1}) in segment h (T_{h 2^lb} <= a < T_{(h+1) 2^lb});
    the others get 0 or 2^b - 1 from two more comparisons beside the coarse ones. Every fine threshold
    of segment h lies in [L_h, U_h], so |a - T| <= U_h - L_h."""
    hb, lb = split(act_bits)
    first, last = table[0], table[-1]
    out = []
    for h in range(1 << hb):
        lo_h = max(first, table[(h << lb) - 1]) if h else first
        hi_h = min(last, table[((h + 1) << lb) - 1]) if h + 1 < (1 << hb) else last
        out.append((lo_h, hi_h))
    return out


def fine_bits(tables: list[list[int]], *, act_bits: int) -> int:
    """Bits the fine table keeps of each threshold (its low bits): w + 1 with every window's span
    U_h - L_h <= 2^w, so a - T (|a - T| <= 2^w, a in the window) is exact modulo 2^(w + 1) and its
    top bit is the comparison's answer."""
    span = max([u - l for t in tables for l, u in windows(t, act_bits=act_bits)] + [1])
    return max(1, (span - 1).bit_length()) + 1


def apply_two_level(acc: int, direction: int, table: list[int], *, act_bits: int, acc_bits: int,
                    low_bits: int) -> int:
    """y as the hardware finds it: the coarse comparisons (full width) give h, a >= T_1 and
    a >= T_{2^b-1}; within the window, the fine comparisons on `low_bits` low bits (`fine_bits`)."""
    _, lb = split(act_bits)
    a = ~int(acc) if direction else int(acc)
    coarse, fine = coarse_fine(table, act_bits=act_bits)
    if a < table[0]:
        return 0
    if a >= table[-1]:
        return (1 << act_bits) - 1
    h = sum(a >= t for t in coarse)
    mask, top = (1 << low_bits) - 1, 1 << (low_bits - 1)
    low = sum(not ((a & mask) - (t & mask)) & mask & top for t in fine[h])
    return (h << lb) | low


__all__ = ["split", "threshold_bits", "thresholds", "apply", "coarse_fine", "windows", "fine_bits",
           "apply_two_level"]
