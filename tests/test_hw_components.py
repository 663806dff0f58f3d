"""Component tests of the ternary accelerator in Amaranth's simulator, against the reference."""
from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import intmath
from terwin.deployment import Conv2d, Linear, MaxPool2d
from terwin.errors import TerwinError
from terwin.hw.common.requant import Requantizer
from terwin.hw.ternary import program as ternary_program
from terwin.hw.ternary.decoder import TileDecoder
from terwin.hw.ternary.pe import TernaryPEArray
from terwin.spec import PE4X4, PE8X8, PE8X16
from terwin.synthetic import random_deployment

SMALL = (("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 7))


def _run(dut, *benches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("spec,codes_delay", [(PE4X4, 0), (PE8X8, 2), (PE8X16, 3)],
                         ids=lambda v: getattr(v, "name", f"codes+{v}"))
def test_decoder_expands_every_kept_tile_in_order_under_stalls(spec, codes_delay):
    """Header (lane-map row, channel offset, last) LATENCY enabled cycles after the address, codes
    codes_delay enabled cycles after that (read from the delayed address), whatever the stalls."""
    dep = random_deployment(spec, seed=11, topology=SMALL, input_shape=(3, 6, 6), tile_sparsity=0.5)
    program = ternary_program.compile_program(dep)
    # expected stream, straight from the TileGrid: kept tiles of each layer in (og, tg, cg) order
    expected = []
    for stage in program.stages:
        layer = dep.layers[stage.index]
        grid = layer.tile_grid(spec)
        tiles = grid.tiles(layer.weight)
        c, h, w = layer.in_shape
        for og in range(grid.out_groups):
            kept = [(tg, cg) for tg in range(grid.tap_groups) for cg in range(grid.channel_groups)
                    if layer.tile_mask[og, tg, cg]]
            for j, (tg, cg) in enumerate(kept):
                taps = []
                for lane in range(spec.pe_cols):
                    src = grid.lane_source(tg, cg, lane)
                    taps.append(None if src is None else divmod(src[0], stage.kw))
                expected.append((tiles[og, tg, cg], cg * h * w if c >= spec.pe_cols else 0, j == len(kept) - 1, taps))
    dut = TileDecoder(program, codes_delay=codes_delay)
    assert dut.codes_latency == TileDecoder.LATENCY + codes_delay
    rng = random.Random(1)
    headers, codes_got = [], []

    async def bench(ctx):
        enabled = 0   # enabled cycles so far (= addresses issued)
        ctx.set(dut.en, 1)
        while len(codes_got) < len(expected):
            en = rng.random() < 0.7
            ctx.set(dut.en, en)
            if en:
                ctx.set(dut.addr, min(enabled, len(expected) - 1))
            await ctx.delay(1e-9)
            if en:
                # the header of the word issued LATENCY enabled cycles ago, the codes of codes_latency ago
                if TileDecoder.LATENCY <= enabled < len(expected) + TileDecoder.LATENCY:
                    lanes = [(ctx.get(dut.lanes[l].ky), ctx.get(dut.lanes[l].kx)) for l in range(spec.pe_cols)]
                    headers.append((ctx.get(dut.coff), bool(ctx.get(dut.last)), lanes))
                if enabled >= dut.codes_latency:
                    codes_got.append(np.array([[(-1 if ctx.get(dut.codes[r][l].negative) else 1)
                                                * ctx.get(dut.codes[r][l].nonzero)
                                                for l in range(spec.pe_cols)] for r in range(spec.pe_rows)]))
                enabled += 1
            await ctx.tick()

    _run(dut, bench)
    got = [(c, *h) for c, h in zip(codes_got, headers)]
    assert len(got) == len(expected)
    for i, ((codes, coff, last, lanes), (etiles, ecoff, elast, etaps)) in enumerate(zip(got, expected)):
        assert np.array_equal(codes, etiles), f"word {i}: codes {codes.tolist()} != {etiles.tolist()}"
        assert (coff, last) == (ecoff, elast), f"word {i}: coff/last {(coff, last)} != {(ecoff, elast)}"
        for lane, tap in enumerate(etaps):
            if tap is not None:
                assert lanes[lane] == tap, f"word {i} lane {lane}: tap {lanes[lane]} != {tap}"


@pytest.mark.parametrize("spec", [PE4X4, PE8X16], ids=lambda s: s.name)
def test_pe_array_rows_add_subtract_or_skip(spec):
    dut = TernaryPEArray(spec)
    rng = np.random.default_rng(2)
    n = 60
    acts = rng.integers(0, spec.act_max + 1, size=(n, spec.pe_cols))
    acts[0] = spec.act_max  # worst case for the sum width
    weights = rng.integers(-1, 2, size=(n, spec.pe_rows, spec.pe_cols))
    weights[0] = -1
    expected = np.einsum("nrc,nc->nr", weights, acts)
    got = []

    async def bench(ctx):   # one tile a cycle: the array has no enable (the accelerator never stalls it)
        fed = 0
        while len(got) < n:
            k = min(fed, n - 1)
            for lane in range(spec.pe_cols):
                ctx.set(dut.acts[lane], int(acts[k, lane]))
                for r in range(spec.pe_rows):
                    w = int(weights[k, r, lane])
                    ctx.set(dut.codes[r][lane].nonzero, w != 0)
                    ctx.set(dut.codes[r][lane].negative, w < 0)
            await ctx.delay(1e-9)
            if fed >= dut.latency:
                got.append([ctx.get(dut.sums[r]) for r in range(spec.pe_rows)])
            fed += 1
            await ctx.tick()

    _run(dut, bench)
    assert np.array_equal(np.array(got), expected), f"{np.array(got)[:3]} != {expected[:3]}"


def _requantize_stream(dut, inputs: list) -> tuple[list, list]:
    """Feed a `Requantizer` one value of each input port ([(port, values), ...]) a cycle, valid
    throughout; the (o_act, o_score) of every valid output, in order."""
    n = len(inputs[0][1])
    acts, scores = [], []

    async def bench(ctx):
        for i in range(n + dut.latency):
            if i < n:
                for port, values in inputs:
                    ctx.set(port, int(values[i]))
            ctx.set(dut.i_valid, int(i < n))
            await ctx.tick()
            if ctx.get(dut.o_valid):
                acts.append(ctx.get(dut.o_act))
                scores.append(ctx.get(dut.o_score))

    _run(dut, bench)
    return acts, scores


def test_requantizer_matches_the_integer_contract():
    rng = np.random.default_rng(4)
    act_bits, acc_bits, bias_bits, mult_bits, shift_bits = 8, 16, 12, 16, 6
    n = 400
    acc = rng.integers(-(1 << 15), 1 << 15, size=n)
    bias = rng.integers(-(1 << 11), 1 << 11, size=n)
    mult = rng.integers(-(1 << 15), 1 << 15, size=n)
    shift = rng.integers(1, 40, size=n)
    acc[:4] = [-(1 << 15), (1 << 15) - 1, 0, 1]
    mult[:4] = [-(1 << 15), (1 << 15) - 1, 1, 1]
    shift[:4] = [1, 39, 1, 1]
    dut = Requantizer(act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits, mult_bits=mult_bits,
                      shift_bits=shift_bits)
    want = np.array([intmath.requantize(np.array([a]), np.array([b]), np.array([m]), np.array([s]),
                                        act_bits=act_bits, relu=True)[0] for a, b, m, s in zip(acc, bias, mult, shift)])
    got_act, got_score = _requantize_stream(dut, [(dut.i_acc, acc), (dut.i_bias, bias), (dut.i_mult, mult),
                                                  (dut.i_shift, shift)])
    assert got_act == want.tolist()
    assert got_score == (acc + bias).tolist()


@pytest.mark.parametrize("acc_bits, bias_bits, mult_bits", [(16, 12, 16), (22, 9, 16), (7, 18, 5)])
def test_logic_multiplier_requantizer_matches_the_integer_contract(acc_bits, bias_bits, mult_bits):
    """`logic_multiplier`: (acc + bias) * m as carry-save adders (acc * m + the program's bias * m), the
    same outputs and latency as the DSP multiply, on the extremes of every width (both signs of m's top
    bit, the most negative products) and on shifts that land in the activation range (rounding and
    both clamps)."""
    rng = np.random.default_rng(acc_bits)
    act_bits, shift_bits, n = 8, 6, 500
    lo = lambda bits: -(1 << (bits - 1))
    hi = lambda bits: (1 << (bits - 1)) - 1
    acc = rng.integers(lo(acc_bits), hi(acc_bits) + 1, size=n)
    bias = rng.integers(lo(bias_bits), hi(bias_bits) + 1, size=n)
    mult = rng.integers(lo(mult_bits), hi(mult_bits) + 1, size=n)
    corners = [(a, b, m) for a in (lo(acc_bits), hi(acc_bits), 0, -1) for b in (lo(bias_bits), hi(bias_bits))
               for m in (lo(mult_bits), hi(mult_bits), -1, 1)]
    for i, (a, b, m) in enumerate(corners):
        acc[i], bias[i], mult[i] = a, b, m
    pre = (acc + bias) * mult
    shift = np.clip([max(1, int(abs(v)).bit_length() - act_bits) + int(rng.integers(-2, 3)) for v in pre], 1, 40)
    dut = Requantizer(act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits, mult_bits=mult_bits,
                      shift_bits=shift_bits, logic_multiplier=True)
    want = [int(intmath.requantize(np.array([a]), np.array([b]), np.array([m]), np.array([s]), act_bits=act_bits,
                                   relu=True)[0]) for a, b, m, s in zip(acc, bias, mult, shift)]
    got_act, got_score = _requantize_stream(dut, [(dut.i_acc, acc), (dut.i_bias, bias), (dut.i_mult, mult),
                                                  (dut.i_shift, shift), (dut.i_bias_mult, bias * mult)])
    assert got_act == want
    assert got_score == (acc + bias).tolist()
    assert 0 < sum(0 < v < (1 << act_bits) - 1 for v in want) < n     # rounding inside the range, and clamps


@pytest.mark.parametrize("act_bits", [4, 8])
def test_requantizer_with_residual_and_signed_clamp_matches_the_integer_contract(act_bits):
    """The graph options: r * m_r added before the shift (latency 5), and the signed clamp of a
    projection shortcut's map (o_act in act_bits two's complement), per value against intmath."""
    rng = np.random.default_rng(act_bits)
    acc_bits, bias_bits, mult_bits, shift_bits, res_mult_bits = 16, 12, 16, 6, 24
    n = 500
    acc = rng.integers(-(1 << 15), 1 << 15, size=n)
    bias = rng.integers(-(1 << 11), 1 << 11, size=n)
    mult = rng.integers(-(1 << 15), 1 << 15, size=n)
    res = rng.integers(-(1 << act_bits), 1 << act_bits, size=n)        # act_bits + 1 signed: either kind of map
    res_mult = rng.integers(-(1 << 23), 1 << 23, size=n)
    signed = rng.random(n) < 0.5
    pre = (acc + bias) * mult + res * res_mult
    # shifts around the one that lands in the activation range, so rounding and both clamps are hit
    shift = np.clip([max(1, int(abs(v)).bit_length() - act_bits) + int(rng.integers(-2, 3)) for v in pre], 1, 40)
    acc[:6] = [-(1 << 15), (1 << 15) - 1, 0, 0, 0, 0]
    res[:6] = [-(1 << act_bits), (1 << act_bits) - 1, 0, 0, 0, 0]
    # exactly the signed clamp's edges: (t + 1) >> 1 at -2^(a-1) - 1, -2^(a-1), 2^(a-1) - 1, 2^(a-1)
    bias[2:6] = [-(1 << act_bits) - 2, -(1 << act_bits), (1 << act_bits) - 2, 1 << act_bits]
    mult[2:6], shift[2:6], res_mult[2:6], signed[2:6] = 1, 1, 0, True
    dut = Requantizer(act_bits=act_bits, acc_bits=acc_bits, bias_bits=bias_bits, mult_bits=mult_bits,
                      shift_bits=shift_bits, residual_bits=act_bits + 1, res_mult_bits=res_mult_bits, signed_out=True)
    assert dut.latency == Requantizer.RESIDUAL_LATENCY == Requantizer.LATENCY + 1
    want = [int(intmath.requantize(np.array([a]), np.array([b]), np.array([m]), np.array([s]), act_bits=act_bits,
                                   relu=not sg, signed=bool(sg), residual=np.array([r]),
                                   residual_multiplier=np.array([rm]))[0])
            for a, b, m, s, r, rm, sg in zip(acc, bias, mult, shift, res, res_mult, signed)]
    want = [v & ((1 << act_bits) - 1) for v in want]   # two's complement on the port
    got, _ = _requantize_stream(dut, [(dut.i_acc, acc), (dut.i_bias, bias), (dut.i_mult, mult), (dut.i_shift, shift),
                                      (dut.i_residual, res), (dut.i_res_mult, res_mult), (dut.i_signed, signed)])
    assert got == want
    signed_values = {v for v, sg in zip(want, signed) if sg}
    assert len(signed_values) > 12 and {1 << (act_bits - 1), (1 << (act_bits - 1)) - 1} <= signed_values


def test_compile_rejects_what_the_engine_cannot_run():
    spec = PE4X4
    dep = random_deployment(spec, seed=1, topology=(("conv2d", 4), ("linear", 3)), input_shape=(1, 4, 4))
    conv = dep.layers[0]
    pool_first = dep.replace(layers=(MaxPool2d(name="p", in_shape=(1, 4, 4)),) + dep.layers)
    with pytest.raises(TerwinError, match="max-pool"):
        ternary_program.compile_program(pool_first)
    import dataclasses
    ints = dep.replace(layers=(dataclasses.replace(conv, weight_code="int", weight_bits=4),) + dep.layers[1:])
    with pytest.raises(TerwinError, match="ternary weight codes"):
        ternary_program.compile_program(ints)
    with pytest.raises(TerwinError, match="winograd"):
        ternary_program.compile_program(dep.replace(spec=spec.replace(weight_format="winograd")))


def test_kept_tiles_without_mask_equals_occupancy():
    for spec in (PE4X4, PE8X16):
        for cin in (1, 3, 12, 20):
            w = np.random.default_rng(cin).integers(-1, 2, size=(10, cin, 3, 3))
            w[:, :, 1] = 0
            layer = Conv2d(name="c", in_shape=(cin, 5, 5), out_channels=10, kernel=3, padding=1, weight=w,
                           bias=np.zeros(10, dtype=np.int64), multiplier=np.ones(10, dtype=np.int64),
                           shift=np.ones(10, dtype=np.int64))
            grid = layer.tile_grid(spec)
            assert np.array_equal(ternary_program.kept_tiles(layer, grid), grid.occupied(w))
    lin = Linear(name="l", in_shape=(3, 2, 2), out_channels=5, weight=np.eye(5, 12, dtype=np.int8),
                 bias=np.zeros(5, dtype=np.int64), multiplier=np.ones(5, dtype=np.int64), shift=np.ones(5, dtype=np.int64))
    grid = lin.tile_grid(PE8X8)
    assert np.array_equal(ternary_program.kept_tiles(lin, grid), grid.occupied(lin.weight.reshape(5, 3, 2, 2)))


@pytest.mark.parametrize("source_reset_less", [False, True])
@pytest.mark.parametrize("reset_less", [None, False, True])
def test_delayed_registers_inherit_or_take_the_reset_asked_for(source_reset_less, reset_less):
    """`delayed`'s chain is like its value unless told otherwise: a reset-less value (a decoder's codes
    address, a tile record) stays off the reset net, which a large array spreads over the die."""
    from amaranth.hdl import Module, Signal

    from terwin.hw.common.control import delayed
    m = Module()
    value = Signal(5, reset_less=source_reset_less)
    out = delayed(m, value, 3, name="chain", reset_less=reset_less)
    expected = source_reset_less if reset_less is None else reset_less
    assert out is not value and out.reset_less == expected and len(out) == 5


def test_delayed_values_arrive_the_asked_cycles_later():
    from amaranth.hdl import Module, Signal

    from terwin.hw.common.control import delayed
    m = Module()
    value = Signal(8)
    out = delayed(m, value, 3, name="chain")
    seen = []

    async def bench(ctx):
        for t in range(12):
            ctx.set(value, (t * 37) & 0xFF)
            seen.append(ctx.get(out))
            await ctx.tick()
    _run(m, bench)
    assert seen[3:] == [((t - 3) * 37) & 0xFF for t in range(3, 12)]
    assert seen[:3] == [0, 0, 0]
