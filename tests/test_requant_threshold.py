"""The threshold requantizer (no multiplier): its tables equal the integer contract bit for bit over the
whole accumulator range, and the component in Amaranth's simulator gives `intmath.requantize`'s every
output; the spec field and the explorer's DSP count that select it."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from terwin import intmath
from terwin.errors import SpecError
from terwin.hw.common.program import MemoryImage
from terwin.hw.common.requant_tables import (apply, apply_two_level, coarse_fine, fine_bits, split, thresholds,
                                             windows)
from terwin.hw.common.requant_threshold import ThresholdRequantizer, fine_layout, thermometer
from terwin.spec import PRESETS, HardwareSpec


def _contract(acc, bias, mult, shift, act_bits):
    return intmath.requantize(acc, np.array([bias]), np.array([mult]), np.array([shift]), act_bits=act_bits)


def _by_thresholds(acc, direction, table):
    """y = #{k : a >= T_k} for every acc at once (a = acc or ~acc)."""
    a = ~acc if direction else acc
    return np.searchsorted(np.asarray(table, dtype=np.int64), a, side="right")


def _by_two_levels(acc, direction, table, act_bits):
    """The hardware's form for every acc at once: full-width coarse comparisons (h, a >= T_1,
    a >= T_{2^b-1}), then the fine comparisons on the thresholds' low `fine_bits` bits only."""
    _, lb = split(act_bits)
    coarse, fine = coarse_fine(table, act_bits=act_bits)
    low = fine_bits([table], act_bits=act_bits)
    mask, top = (1 << low) - 1, 1 << (low - 1)
    a = ~acc if direction else acc
    h = np.searchsorted(np.asarray(coarse, dtype=np.int64), a, side="right")
    rows = np.asarray(fine, dtype=np.int64)[h] & mask                # each acc's segment, low bits
    fine_y = (h << lb) | ((((a & mask)[:, None] - rows) & top) == 0).sum(axis=1)
    return np.where(a < table[0], 0, np.where(a >= table[-1], (1 << act_bits) - 1, fine_y))


def _cases(rng, acc_bits, n):
    """Random (bias, m, s, b), the special ones first: m < 0, m == 0, the extreme m and shifts, biases
    past either end of the range, and scales that put the range's edges on output steps."""
    hi = (1 << (acc_bits - 1)) - 1
    special = [(0, 1, 1, 8), (0, -1, 1, 8), (5, 0, 1, 8), (-7, 0, 40, 4), (0, (1 << 15) - 1, 40, 8),
               (0, -(1 << 15), 1, 8), (hi, 1, 1, 2), (-hi - 1, -1, 1, 3), (3 * hi, 20000, 12, 8),
               (-3 * hi, -20000, 12, 8), (1, 255 << 4, 4 + acc_bits - 1, 8), (0, 1 << 14, 14, 16)]
    yield from special
    for _ in range(n):
        act_bits = int(rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 12, 16]))
        mult = int(rng.integers(-(1 << 15), 1 << 15))
        if rng.random() < 0.1:
            mult = int(rng.choice([0, 1, -1, (1 << 15) - 1, -(1 << 15)]))
        # a shift that spreads the range over about the output's steps, or any shift 1..40
        spread = max(1, acc_bits + max(abs(mult), 1).bit_length() - act_bits - 1)
        shift = int(rng.integers(1, 41)) if rng.random() < 0.3 else int(np.clip(spread + rng.integers(-3, 4), 1, 40))
        bias = int(rng.integers(-2 * hi, 2 * hi + 1)) if rng.random() < 0.3 else int(rng.integers(-hi // 4, hi // 4 + 1))
        yield bias, mult, shift, act_bits


@pytest.mark.parametrize("acc_bits", [2, 5, 12, 17])
def test_thresholds_equal_the_contract_over_the_whole_accumulator_range(acc_bits):
    """Exhaustive: every acc of the signed acc_bits range, for random and extreme (bias, m, s, b), gives
    the same y from the thresholds (one level and the hardware's two levels) as intmath.requantize."""
    rng = np.random.default_rng(acc_bits)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = np.arange(lo, hi + 1, dtype=np.int64)
    n = {2: 300, 5: 300, 12: 120, 17: 12}[acc_bits]
    seen = {"neg": 0, "zero": 0, "pos": 0, "varies": 0}
    for bias, mult, shift, act_bits in _cases(rng, acc_bits, n):
        want = _contract(acc, bias, mult, shift, act_bits)
        direction, table = thresholds(bias, mult, shift, act_bits=act_bits, acc_bits=acc_bits)
        assert len(table) == (1 << act_bits) - 1 and all(lo <= t <= hi + 1 for t in table)
        assert direction == int(mult < 0)
        got = _by_thresholds(acc, direction, table)
        assert np.array_equal(got, want), (bias, mult, shift, act_bits)
        assert np.array_equal(_by_two_levels(acc, direction, table, act_bits), want)
        # every fine threshold of a segment lies in its window (what makes the low bits enough)
        _, fine = coarse_fine(table, act_bits=act_bits)
        for (lo_h, hi_h), row in zip(windows(table, act_bits=act_bits), fine):
            if lo_h < hi_h:
                assert all(lo_h <= t <= hi_h for t in row)
        seen["neg" if mult < 0 else "zero" if mult == 0 else "pos"] += 1
        seen["varies"] += int(want.min() < want.max())
    # the cases did exercise both directions, m == 0, and tables that cut the range
    assert min(seen.values()) >= 2, seen


def test_thresholds_are_the_least_acc_reaching_each_output():
    """The closed form against its definition, by binary search on the contract (monotone: checked
    exhaustively above), on wide accumulators (25 and 33 bits) where no exhaustive check is practical;
    plus the one-level and two-level forms on the range edges and around every threshold."""
    rng = np.random.default_rng(7)
    for acc_bits in (25, 33):
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        for bias, mult, shift, act_bits in list(_cases(rng, acc_bits, 8))[:16]:
            direction, table = thresholds(bias, mult, shift, act_bits=act_bits, acc_bits=acc_bits)

            def y(a):      # the contract at a (a = acc, or ~acc with the direction bit)
                acc = ~a if direction else a
                return int(_contract(np.array([acc]), bias, mult, shift, act_bits)[0])

            for k in range(1, 1 << act_bits, max(1, (1 << act_bits) // 17)):
                left, right = lo, hi + 1           # the least a in [lo, hi + 1] with y(a) >= k (hi + 1: none)
                while left < right:
                    mid = (left + right) // 2
                    if y(mid) >= k:
                        right = mid
                    else:
                        left = mid + 1
                assert table[k - 1] == left, (bias, mult, shift, act_bits, k)
            low = fine_bits([table], act_bits=act_bits)
            probes = {lo, hi, 0, -1} | {t + d for t in table[::max(1, len(table) // 40)] + [table[-1]]
                                        for d in (-1, 0) if lo <= t + d <= hi}
            for a in probes:
                acc = ~a if direction else a
                want = y(a)
                assert apply(acc, direction, table, acc_bits=acc_bits) == want
                assert apply_two_level(acc, direction, table, act_bits=act_bits, acc_bits=acc_bits,
                                       low_bits=low) == want


def _simulate(dut, feed):
    """Drive one (acc, bias, channel, coarse word) a cycle; collect (act, score) LATENCY cycles later."""
    got = []

    async def bench(ctx):
        for i in range(len(feed) + dut.LATENCY):
            if i < len(feed):
                acc, bias, channel, direction, coarse = feed[i]
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_acc, acc)
                ctx.set(dut.i_bias, bias)
                ctx.set(dut.i_channel, channel)
                ctx.set(dut.i_coarse, coarse)
                ctx.set(dut.i_mult, 12345)         # unused: the thresholds hold m and s
                ctx.set(dut.i_shift, 3)
            else:
                ctx.set(dut.i_valid, 0)
            await ctx.tick()
            if ctx.get(dut.o_valid):
                got.append((ctx.get(dut.o_act), ctx.get(dut.o_score)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("act_bits,acc_bits,parts", [(8, 16, 1), (8, 16, 4), (5, 13, 2), (2, 7, 1), (2, 7, 2),
                                                    (7, 25, 8)])
def test_threshold_requantizer_matches_the_integer_contract(act_bits, acc_bits, parts):
    """The component in Amaranth's simulator, random channels' constants (m < 0, m == 0 among them) and
    random accumulators (the range's edges too), a different channel every cycle, the fine table whole
    or in parts by h's top bits: every o_act equals intmath.requantize, every o_score acc + bias."""
    rng = np.random.default_rng(act_bits * 100 + acc_bits + parts)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    bias_bits, mult_bits, shift_bits = 14, 16, 6
    cases = list(_cases(rng, acc_bits, 12))[:16]
    channels = [(int(np.clip(b, -(1 << 13), (1 << 13) - 1)), m, s) for b, m, s, _ in cases]
    hb, lb = split(act_bits)
    tables = [thresholds(b, m, s, act_bits=act_bits, acc_bits=acc_bits) for b, m, s in channels]
    low = fine_bits([t for _, t in tables], act_bits=act_bits)
    coarse_rows, fine_rows = [], []
    for d, table in tables:
        c, f = coarse_fine(table, act_bits=act_bits)
        coarse_rows.append({"dir": d, "t": c, "first": table[0], "last": table[-1]})
        fine_rows.extend([t & ((1 << low) - 1) for t in row] for row in f)
    layout = fine_layout(act_bits=act_bits, low_bits=low)
    per = (1 << hb) // parts          # part p: rows (channel, p * per + low), at channel * per + low
    fine = [MemoryImage(f"thresh_fine{p}", layout, len(channels) * per,
                        [fine_rows[(c << hb) + p * per + j] for c in range(len(channels)) for j in range(per)])
            for p in range(parts)]
    dut = ThresholdRequantizer(act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits, mult_bits=mult_bits,
                               shift_bits=shift_bits, channel_bits=4, fine=fine if parts > 1 else fine[0])
    n = 400
    which = rng.integers(0, len(channels), size=n)
    acc = rng.integers(lo, hi + 1, size=n)
    # accumulators at and just below the channel's thresholds (where a comparison could be off by one,
    # coarse or fine), and the range's edges
    for i in range(0, n, 2):
        d, table = tables[which[i]]
        t = int(rng.choice(table)) + int(rng.integers(-1, 1))
        acc[i] = np.clip(~t if d else t, lo, hi)
    acc[:4] = [lo, hi, 0, -1]
    feed = [(int(a), channels[w][0], int(w), None, coarse_rows[w]) for a, w in zip(acc, which)]
    want = [int(_contract(np.array([a]), *channels[w], act_bits)[0]) for a, w in zip(acc, which)]
    got = _simulate(dut, feed)
    assert [g[0] for g in got] == want
    assert [g[1] for g in got] == [int(a) + channels[w][0] for a, w in zip(acc, which)]
    assert 0 < sum(w > 0 for w in want) < n     # outputs above 0 and at 0 both occur


def test_thermometer_code_to_binary():
    """`thermometer` of 2^k - 1 flags (a prefix of ones) is the number of ones, for k = 1 .. 4."""
    for k in range(1, 5):
        n = (1 << k) - 1
        m = Module()
        flags = Signal(n)
        out = Signal(k)
        m.d.comb += out.eq(thermometer([flags[i] for i in range(n)]))
        got = []

        async def bench(ctx, flags=flags, out=out, n=n, got=got):
            for ones in range(n + 1):
                ctx.set(flags, (1 << ones) - 1)
                await ctx.delay(1e-9)
                got.append(ctx.get(out))

        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()
        assert got == list(range(n + 1)), k


def test_spec_requant_field():
    """Optional: a spec without it serializes and hashes as before; "threshold" round-trips; a ternary
    spec or an unknown mode is a one-line SpecError."""
    w = PRESETS["winograd"]
    assert w.requant == "multiply" and "requant" not in w.to_dict()
    t = w.replace(requant="threshold")
    assert HardwareSpec.from_json(t.to_json()) == t and t.to_dict()["requant"] == "threshold"
    assert t.digest != w.digest
    with pytest.raises(SpecError, match="Winograd-engine option") as e:
        PRESETS["pe8x8"].replace(requant="threshold")
    assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match="requant must be one of"):
        w.replace(requant="lut")


def test_explorer_counts_no_requantizer_dsps_with_thresholds():
    """`terwin explore`'s Winograd DSPs: lanes + 2 with the multiply, lanes with thresholds; the
    threshold tables are in the block-RAM count."""
    from terwin.dse import resources
    from terwin.synthetic import random_deployment
    spec = PRESETS["winograd"].replace(mult_lanes=8)
    topo = (("winograd_conv2d", 8), ("maxpool2d", 2), ("linear", 10))
    mult = random_deployment(spec, seed=0, topology=topo, input_shape=(1, 8, 8), linear_int_bits=8)
    thr = mult.replace(spec=spec.replace(requant="threshold"))
    pm = resources.predict_features(resources.features(mult), family="ecp5")
    pt = resources.predict_features(resources.features(thr), family="ecp5")
    assert (pm["dsps"], pt["dsps"]) == (10, 8)
    names = {m[0] for m in resources.features(thr)["memories"]}
    assert {"thresh_coarse", "thresh_fine0"} <= names
    assert not any(m[0].startswith("thresh") for m in resources.features(mult)["memories"])
    assert "requant (not calibrated)" in pt["extrapolated"]
