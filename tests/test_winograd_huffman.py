"""The Winograd engine's Huffman weight path (#17): a model whose layers have codec `huffman` runs with
each lane's items decoded on chip from a value stream, a run stream and raw low value bits
(`terwin.hw.winograd.huffman_program`, `huffman_lane`). The program side gives back every lane's items
exactly; the lane alone in Amaranth's simulator gives the items of every layer, one a cycle from
FIRST_ITEM cycles after `start`, restarted as soon as its last item has left or later; the decoder
in rank mode equals the software decoder under back-pressure; the whole top equals the reference
(scores, ==) and the cycle model (per-layer cycles, ==) on synthetic models, in Amaranth's simulator
and as Verilog under cocotb; raw models keep their memories; the stored model's weight memories
shrink by 40 %."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import fileformat
from terwin.codec import with_codec
from terwin.hw.winograd.huffman_program import FIRST_ITEM, MULT_EXTRA, items_from_runs, lane_symbols, memory_bits
from terwin.hw.winograd.program import compile_program

sys.path.insert(0, str(Path(__file__).parent))
from test_winograd_hw_top import check_against_models, simulate_top, synthetic  # noqa: E402

ROOT = Path(__file__).parents[1]
WINOGRAD = ROOT / "bitstreams" / "ulx3s-85f" / "winograd" / "model.terwin"

CASES = {
    # odd map sizes, 2 input channels (C2 = 2), 8 lanes
    "lanes8": dict(seed=1, lanes=8, topology=(("winograd_conv2d", 4), ("winograd_conv2d", 4), ("maxpool2d", 2),
                                             ("linear", 3)), input_shape=(2, 5, 6)),
    # one lane, a linear layer in the middle, very sparse (long runs, empty targets)
    "sparse": dict(seed=2, lanes=1, density=0.1,
                   topology=(("winograd_conv2d", 3), ("maxpool2d", 2), ("linear", 6), ("linear", 4)),
                   input_shape=(1, 6, 6)),
    # dense, 3 input channels (C2 = 4: runs over the channels past C), 2 lanes
    "dense": dict(seed=3, lanes=2, density=1.0, topology=(("winograd_conv2d", 4), ("maxpool2d", 3), ("linear", 5)),
                  input_shape=(3, 7, 7)),
    # 8 lanes on a nearly empty model: lanes without an item in a layer (count 0)
    "empty_lanes": dict(seed=6, lanes=8, density=0.03, topology=(("winograd_conv2d", 2), ("linear", 3)),
                        input_shape=(1, 4, 4)),
    # 6-bit activations, 5-bit weights (2 high bits coded), 4 lanes
    "narrow": dict(seed=4, lanes=4, topology=(("winograd_conv2d", 5), ("winograd_conv2d", 3), ("linear", 4)),
                   input_shape=(1, 4, 5), act_bits=6, winograd_weight_bits=5),
}


def huffman(dep):
    return with_codec(dep, "huffman")


@pytest.mark.parametrize("name", list(CASES))
def test_top_from_the_huffman_streams_equals_reference_and_model(name):
    case = dict(CASES[name])
    seed = case.pop("seed")
    dep = huffman(synthetic(seed, **case))
    assert compile_program(dep).huffman
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(2, *dep.input_shape))
    check_against_models(dep, q, simulate_top(dep, q, seed=seed))


class LaneBench:
    """A lane with the shared tables beside it (as `SparseMultiplyStage` wires them)."""

    def __init__(self, program, lane):
        from amaranth.hdl import Module
        from terwin.hw.winograd.huffman_lane import HuffmanLane
        from terwin.hw.winograd.mult import SparseMultiplyStage
        item = SparseMultiplyStage(program).item
        self.m = m = Module()
        self.dut = dut = HuffmanLane(program, lane, item=item)
        m.submodules.dut = dut
        images = {image.name: image for image in program.memories()}
        for port, name in ((dut.value_read, "value_table"), (dut.run_read, "run_table")):
            m.submodules[name] = table = images[name].memory()
            rp = table.read_port()
            m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en), port.data.eq(rp.data)]
        # the low bits, read at this lane's `take` (the stage reads them at lane 0's, taken in the same cycle)
        from amaranth.hdl import Array, Const, Signal
        hw = program.huffman_items
        m.submodules.lows = lows = images["lows"].memory()
        rp = lows.read_port()
        layer, ptr = Signal.like(dut.layer), Signal(range(len(hw.lows) + 1))
        m.d.sync += layer.eq(dut.layer)
        m.d.comb += [rp.addr.eq(ptr), rp.en.eq(dut.take), dut.low.eq(rp.data.word_select(lane, hw.low_bits))]
        with m.If(dut.start):
            m.d.sync += ptr.eq(Array(Const(b, range(len(hw.lows) + 1)) for b in hw.lows_base)[layer])
        with m.Elif(dut.take):
            m.d.sync += ptr.eq(ptr + 1)


def run_lane(program, lane, plan):
    """`plan`: (layer, cycles to run after its start) in order; per start, the items with their cycle."""
    bench = LaneBench(program, lane)
    dut = bench.dut
    out = []

    async def tb(ctx):
        ctx.set(dut.layer, plan[0][0])
        await ctx.tick()
        for n, (layer, cycles) in enumerate(plan):
            ctx.set(dut.start, 1)          # cycle 0; `layer` held since the cycle before
            await ctx.tick()
            ctx.set(dut.start, 0)
            got = []
            for c in range(1, cycles + 1):   # the next start comes in cycle `cycles` (the last cycle sampled)
                valid, w, addr, last = (ctx.get(dut.o_stream.valid), ctx.get(dut.o_stream.payload.w),
                                        ctx.get(dut.o_stream.payload.addr), ctx.get(dut.o_stream.payload.last))
                if valid:
                    got.append((c, (int(w), int(addr), int(last))))
                if c == cycles - 1 and n + 1 < len(plan):
                    ctx.set(dut.layer, plan[n + 1][0])
                if c < cycles:
                    await ctx.tick()
            out.append(got)

    sim = Simulator(bench.m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_lane_gives_every_layers_items_one_a_cycle_from_first_item(name):
    case = dict(CASES[name])
    seed = case.pop("seed")
    p = compile_program(huffman(synthetic(seed, **case)))
    rng = np.random.default_rng(seed)
    for lane in range(p.lanes):
        n = len(p.weighted)
        # every layer, then layers at random, each restarted right after its last item or later (the engine
        # starts a lane again only once its items have left: a MULT step lasts issue + MULT_EXTRA)
        layers = list(range(n)) + [int(k) for k in rng.integers(0, n, size=6)]
        plan = [(k, len(p.weighted[k].lane_items[lane]) + MULT_EXTRA + int(rng.integers(0, 3))) for k in layers]
        for (layer, cycles), got in zip(plan, run_lane(p, lane, plan)):
            items = [tuple(it) for it in p.weighted[layer].lane_items[lane]]
            assert [it for _, it in got] == items
            # the first item FIRST_ITEM cycles after start (cycle 0), then one a cycle
            assert [c for c, _ in got] == list(range(FIRST_ITEM, FIRST_ITEM + len(items)))


def test_program_side_gives_back_the_items_of_the_stored_model():
    p = compile_program(huffman(fileformat.load(WINOGRAD)))
    for s in p.weighted:
        for lane in range(p.lanes):
            v, r, init = lane_symbols(s, lane)
            from terwin.hw.winograd.huffman_lane import HuffmanLane  # noqa: F401  (the lane builds from the same)
            per = s.targets_per_out
            c2 = 1 << max(0, int((s.in_shape[0] if per > 1 else int(np.prod(s.in_shape))) - 1).bit_length())
            assert items_from_runs(v, r, init, c2=c2, per_out=per) == [tuple(it) for it in s.lane_items[lane]]
    assert MULT_EXTRA == FIRST_ITEM - 1


def test_raw_models_keep_their_memories_and_cycles():
    dep = fileformat.load(WINOGRAD)
    raw, coded = compile_program(dep), compile_program(huffman(dep))
    names = [m.name for m in raw.memories()]
    assert not raw.huffman and all(f"items{lane}" in names for lane in range(raw.lanes))
    assert not any(n.startswith(("values", "runs", "lows", "value_table", "run_table")) for n in names)
    assert all(s.mult_extra == 0 for s in raw.stages)
    # the Huffman program: the same schedule but each MULT step MULT_EXTRA longer
    assert [(ph.stage, ph.mult) for ph in raw.phases] == [(ph.stage, ph.mult) for ph in coded.phases]
    for a, b in zip(raw.phases, coded.phases):
        assert b.length >= a.length and b.length - a.length <= MULT_EXTRA
    assert {m.name for m in coded.memories()}.isdisjoint({f"items{lane}" for lane in range(raw.lanes)})


def test_weight_memories_of_the_stored_model_shrink_by_40_percent():
    dep = fileformat.load(WINOGRAD)
    raw, coded = memory_bits(compile_program(dep)), memory_bits(compile_program(huffman(dep)))
    p = compile_program(dep)
    assert raw["total"] == sum(len(items) for items in p.items) * (p.weight_bits + p.addr_bits + 1)
    assert coded["total"] <= 0.6 * raw["total"]


@pytest.mark.cocotb
@pytest.mark.slow
def test_huffman_rtl_bit_exact_under_cocotb(tmp_path):
    from test_winograd_hw_top import assert_rtl_matches_model
    assert_rtl_matches_model(huffman(synthetic(1)), tmp_path)


@pytest.mark.parametrize("seed", range(3))
def test_decoder_without_symbol_memory_sends_ranks_exactly_under_backpressure(seed):
    """`HuffmanDecoder(symbol_memory=False)` (the lanes' decoders): the rank of each code in the table's
    symbols, equal to the software decoder's symbols mapped to their ranks, with random words offered and
    symbols taken at random, 8-bit codes in 8-bit words (the lanes' widths)."""
    from terwin import codec
    from terwin.hw.codec.huffman import HuffmanDecoder, words
    from test_codec_hw import coded, simulate
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 120))
    symbols = rng.choice(size, size=300, p=rng.dirichlet(np.full(size, 0.3)))
    lengths, data, nbits = coded(symbols, size, max_length=8)
    table = codec.CanonicalTable.from_lengths(lengths)
    rank = {s: k for k, s in enumerate(table.symbols)}
    expected = [rank[int(s)] for s in codec.decode(data, nbits, lengths, symbols.size)]
    dut = HuffmanDecoder(table, symbol_bits=8, word_bits=8, symbol_memory=False)
    assert dut.symbol_bits == max(1, (len(table.symbols) - 1).bit_length())
    got, _, error = simulate(dut, words(data, nbits, 8), symbols.size, p_in=0.7, p_out=0.6, seed=seed)
    assert got == expected and not error
