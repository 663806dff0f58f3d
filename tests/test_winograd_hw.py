"""Winograd engine components in Amaranth's simulator, against NumPy.

Input transform, output transform, the weight-stream encoder/decoder and the sparse multiply
stage; streams are driven with random valid/ready pauses.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import winograd
from terwin.hw.winograd.mult import SparseMultiplyStage, WeightDecoder
from terwin.hw.winograd.program import MAP_WIDTH, MULT_LATENCY, compile_program, decode_lane_items, encode_layer
from terwin.hw.winograd.transform import InputTransform, OutputTransform
from terwin.spec import PRESETS, ceil_div
from terwin.synthetic import random_deployment

TOPOLOGY = (("winograd_conv2d", 16), ("winograd_conv2d", 16), ("maxpool2d", 2), ("linear", 10))


def small_dep(seed=0, *, density=0.4, spec=PRESETS["winograd"], topology=TOPOLOGY, input_shape=(1, 8, 8)):
    return random_deployment(spec, seed=seed, topology=topology, winograd_density=density,
                             linear_int_bits=8, input_shape=input_shape)


async def stream_put(ctx, port, payloads, rng, *, pause=0.3):
    """Offer `payloads` on a stream, pausing `valid` at random."""
    for payload in payloads:
        while rng.random() < pause:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, payload)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, count, rng, *, pause=0.3, out=None):
    """Take `count` payloads from a stream, pausing `ready` at random."""
    out = [] if out is None else out
    while len(out) < count:
        ready = int(rng.random() >= pause)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if ready and valid:
            out.append(payload)
    ctx.set(port.ready, 0)
    return out


def run_sim(dut, *benches, deadline=100_000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    done = []
    for bench in benches:
        async def wrapped(ctx, bench=bench):
            await bench(ctx)
            done.append(bench)
        sim.add_testbench(wrapped)

    async def watchdog(ctx):
        for _ in range(deadline):
            if len(done) == len(benches):
                return
            await ctx.tick()
        raise AssertionError(f"simulation did not finish in {deadline} cycles")
    sim.add_testbench(watchdog, background=True)
    sim.run()


def tile_value(view, n):
    return np.array([[int(view[i][j]) for j in range(n)] for i in range(n)], dtype=np.int64)


# -- transforms ------------------------------------------------------------------------------------

@pytest.mark.parametrize("act_bits", [8, 4])
def test_input_transform_matches_numpy(act_bits):
    bt, _, _ = winograd.matrices()
    rng = np.random.default_rng(act_bits)
    act_max = (1 << act_bits) - 1
    tiles = [rng.integers(0, act_max + 1, size=(4, 4)) for _ in range(40)]
    tiles += [np.full((4, 4), act_max), np.zeros((4, 4), dtype=np.int64),
              np.array([[act_max * ((i + j) % 2) for j in range(4)] for i in range(4)])]
    dut = InputTransform(act_bits=act_bits)
    got = []

    async def producer(ctx):
        await stream_put(ctx, dut.i_stream, [t.tolist() for t in tiles], np.random.default_rng(1))

    async def consumer(ctx):
        await stream_get(ctx, dut.o_stream, len(tiles), np.random.default_rng(2), out=got)

    run_sim(dut, producer, consumer)
    for n, (d, v) in enumerate(zip(tiles, got)):
        expected = bt @ d @ bt.T
        assert (tile_value(v, 4) == expected).all(), f"tile {n}: expected\n{expected}\ngot\n{tile_value(v, 4)}"
    # the width is enough for the extreme tiles (a truncation would have failed above)
    assert dut.v_bits == 11 if act_bits == 8 else dut.v_bits == 7


def test_output_transform_matches_numpy():
    _, _, at = winograd.matrices()
    acc_bits = 20
    rng = np.random.default_rng(3)
    lim = 1 << (acc_bits - 1)
    tiles = [rng.integers(-lim, lim, size=(4, 4)) for _ in range(40)]
    tiles += [np.full((4, 4), lim - 1), np.full((4, 4), -lim), np.array([[(-1) ** (i + j) * (lim - 1)
                                                                          for j in range(4)] for i in range(4)])]
    dut = OutputTransform(acc_bits=acc_bits)
    got = []

    async def producer(ctx):
        await stream_put(ctx, dut.i_stream, [t.tolist() for t in tiles], np.random.default_rng(4))

    async def consumer(ctx):
        await stream_get(ctx, dut.o_stream, len(tiles), np.random.default_rng(5), out=got)

    run_sim(dut, producer, consumer)
    for n, (mm, y) in enumerate(zip(tiles, got)):
        expected = at @ mm @ at.T
        assert (tile_value(y, 2) == expected).all(), f"tile {n}: expected\n{expected}\ngot\n{tile_value(y, 2)}"


def test_transform_full_throughput():
    """With ready held high, one tile enters and one leaves every cycle (latency 2: one pass a stage)."""
    dut = InputTransform(act_bits=8)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for n in range(6):
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, [[n] * 4] * 4)
            _, _, ready, valid, out = await ctx.tick().sample(dut.i_stream.ready, dut.o_stream.valid,
                                                               dut.o_stream.payload)
            assert ready == 1
            seen.append((valid, int(out[1][1])))
    run_sim(dut, bench)
    # B^T d B of a constant tile n has V[1][1] = 4n; it leaves two cycles after it enters
    assert InputTransform.LATENCY == 2
    assert seen == [(0, 0)] * 2 + [(1, 4 * n) for n in range(4)]


# -- weight stream -----------------------------------------------------------------------------------

def dense_targets(layer):
    """[target, operand address] matrix of a Winograd or linear layer, as the encoder defines it."""
    w = np.asarray(layer.weight, dtype=np.int64)
    if w.ndim == 4:
        o, c = w.shape[:2]
        dense = np.zeros((o * 16, c * 16), dtype=np.int64)
        for oo in range(o):
            for pos in range(16):
                dense[oo * 16 + pos, np.arange(c) * 16 + pos] = w[oo, :, pos // 4, pos % 4]
        return dense
    return w


@pytest.mark.parametrize("lanes", [1, 2, 4, 8])
@pytest.mark.parametrize("density", [0.05, 0.4, 1.0])
def test_encoder_round_trip_and_balance(lanes, density):
    dep = small_dep(seed=7, density=density)
    for layer in dep.weighted_layers:
        items, targets, _ = encode_layer(layer, lanes)
        dense = dense_targets(layer)
        back = decode_lane_items(items, targets, n_targets=dense.shape[0], n_operands=dense.shape[1])
        assert (back == dense).all(), f"{layer.name}: decoded stream differs from the weights"
        nnz = int(np.count_nonzero(layer.weight))
        assert sum(len(i) for i in items) == nnz  # zeros are never stored
        assert max(len(i) for i in items) == max(1, ceil_div(nnz, lanes)) or nnz == 0
        for lane_targets in targets:  # at most one piece of a target per lane
            assert len(lane_targets) == len(set(lane_targets))


@pytest.mark.parametrize("layer_no", [0, 1])
def test_decoder_streams_layer_items_under_back_pressure(layer_no):
    dep = small_dep(seed=2)
    program = compile_program(dep)
    from terwin.hw.winograd.layouts import item_layout
    layout = item_layout(weight_bits=program.weight_bits, addr_bits=program.addr_bits)
    weighted = [s for s in program.stages if s.kind != "maxpool2d"]
    lane = 1
    dut = WeightDecoder(layout=layout, items=[{"w": w, "addr": a, "last": l} for w, a, l in program.items[lane]],
                        bases=[s.item_base[lane] for s in weighted],
                        counts=[len(s.lane_items[lane]) for s in weighted])
    expected = weighted[layer_no].lane_items[lane]
    got = []

    async def bench(ctx):
        ctx.set(dut.layer, layer_no)    # held a cycle before start (the decoder registers its base)
        await ctx.tick()
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await stream_get(ctx, dut.o_stream, len(expected), np.random.default_rng(9), out=got)
        for _ in range(3):
            assert ctx.get(dut.o_stream.valid) == 0 and ctx.get(dut.busy) == 0, "decoder emitted past the layer"
            await ctx.tick()
    run_sim(dut, bench)
    assert [(int(v.w), int(v.addr), int(v.last)) for v in got] == expected


def test_decoder_issues_one_item_per_cycle():
    dep = small_dep(seed=2)
    program = compile_program(dep)
    from terwin.hw.winograd.layouts import item_layout
    layout = item_layout(weight_bits=program.weight_bits, addr_bits=program.addr_bits)
    weighted = [s for s in program.stages if s.kind != "maxpool2d"]
    dut = WeightDecoder(layout=layout, items=[{"w": w, "addr": a, "last": l} for w, a, l in program.items[0]],
                        bases=[s.item_base[0] for s in weighted], counts=[len(s.lane_items[0]) for s in weighted])
    n = len(weighted[1].lane_items[0])
    valid_cycles = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.layer, 1)
        await ctx.tick()
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for cycle in range(n + 5):
            valid_cycles.append(ctx.get(dut.o_stream.valid))
            await ctx.tick()
    run_sim(dut, bench)
    # the first item is offered the cycle after start, then one a cycle with no gap
    assert valid_cycles == [1] * n + [0] * 5


# -- sparse multiply stage ---------------------------------------------------------------------------

@pytest.mark.parametrize("lanes", [1, 4])
def test_sparse_multiply_stage_matches_numpy(lanes):
    """Two tiles of every layer back to back, as a multiply-bound schedule runs them: operands in both
    halves, the second `start` in the cycle of the first tile's last item; the lanes issue for
    2 * issue cycles without a gap, and each bank half holds its tile's sums."""
    for layout in ("copies", "quarters"):    # a bank with a read port per target, or 4 quarter memories
        spec = PRESETS["winograd"].replace(mult_lanes=lanes, bank_layout=layout)
        check_multiply_stage(small_dep(seed=5, spec=spec))


# (lanes, topology, density, seed) of small models whose largest lane holds 1, 2, 3 and 5 pieces a layer
TINY_BANKS = {1: (8, (("winograd_conv2d", 1), ("linear", 2)), 0.3, 2),
              2: (4, (("winograd_conv2d", 1), ("linear", 2)), 0.3, 0),
              3: (4, (("winograd_conv2d", 1), ("linear", 2)), 0.6, 1),
              5: (4, (("winograd_conv2d", 2), ("linear", 3)), 0.6, 1)}


@pytest.mark.parametrize("bank_depth", sorted(TINY_BANKS))
def test_sparse_multiply_stage_with_tiny_banks(bank_depth):
    """Banks of 1, 2 or 3 sums have 1, 2 or 3 quarters (interleaved by 1, 2 and 4), with no address
    bits but the half; 5 sums: 4 quarters of 2 a half. The stage still gives `dense @ operands`."""
    lanes, topology, density, seed = TINY_BANKS[bank_depth]
    dep = small_dep(seed=seed, density=density,
                    spec=PRESETS["winograd"].replace(mult_lanes=lanes, bank_layout="quarters"),
                    topology=topology, input_shape=(1, 4, 4))
    program = compile_program(dep)
    assert program.bank_depth == bank_depth
    assert (program.quarters, program.quarter_bits, program.quarter_addr_bits) == \
        {1: (1, 0, 0), 2: (2, 1, 0), 3: (3, 2, 0), 5: (4, 2, 1)}[bank_depth]
    check_multiply_stage(dep)


def check_multiply_stage(dep):
    """Two tiles of every layer of `dep` through `SparseMultiplyStage` (see the test above)."""
    program = compile_program(dep)
    dut = SparseMultiplyStage(program)
    weighted = [s for s in program.stages if s.kind != "maxpool2d"]
    rng = np.random.default_rng(11)
    lim = (1 << (program.operand_bits - 1)) - 1
    half = 1 << program.word_bits
    per_word = program.in_pixels
    results = {}

    async def bench(ctx):
        for n, s in enumerate(weighted):
            layer = dep.layers[s.index]
            dense = dense_targets(layer)
            operands = [rng.integers(-lim if s.kind == "winograd_conv2d" else 0, lim + 1, size=dense.shape[1])
                        for _ in range(2)]
            for buf in range(2):
                # a word holds in_pixels operands: operand a is value a % in_pixels of word a // in_pixels
                values = np.concatenate([operands[buf], np.zeros(-len(operands[buf]) % per_word, dtype=np.int64)])
                for word in range(len(values) // per_word):
                    ctx.set(dut.v_write.en, 1)
                    ctx.set(dut.v_write.addr, buf * half + word)
                    ctx.set(dut.v_write.data, [int(v) for v in values[word * per_word:(word + 1) * per_word]])
                    await ctx.tick()
            ctx.set(dut.v_write.en, 0)
            ctx.set(dut.layer, n)    # a cycle before the first start
            await ctx.tick()
            busy = []
            for buf in range(2):
                ctx.set(dut.start, 1)     # with the previous tile's last item (and its half) on offer
                await ctx.tick()
                ctx.set(dut.start, 0)
                ctx.set(dut.buf, buf)
                for _ in range(s.issue - 1):     # the tile's items; the next start comes with its last
                    busy.append(ctx.get(dut.busy))
                    await ctx.tick()
            for _ in range(MULT_LATENCY + 3):
                busy.append(ctx.get(dut.busy))
                await ctx.tick()
            busy.append(ctx.get(dut.busy))
            # sampled from the first item on, except the cycle of the second start (the first tile's last
            # item): no gap, then idle
            assert busy == [1] * (2 * s.issue - 1) + [0] * (MULT_LATENCY + 3), f"{s.name}: busy {busy}"
            # the words of both halves back to back, a read a cycle (as the output side reads): the sums
            # of read n come READ_LATENCY cycles after it
            words = ceil_div(dense.shape[0], MAP_WIDTH)
            reads = [(buf, word) for buf in range(2) for word in range(words)]
            got = []
            for cycle in range(len(reads) + SparseMultiplyStage.READ_LATENCY):
                if cycle >= SparseMultiplyStage.READ_LATENCY:
                    got.extend(int(v) for v in ctx.get(dut.m_read.data))
                ctx.set(dut.m_read.en, cycle < len(reads))
                if cycle < len(reads):
                    ctx.set(dut.m_read.addr, s.map_base + reads[cycle][1])
                    ctx.set(dut.m_read.buf, reads[cycle][0])
                await ctx.tick()
            for buf in range(2):
                sums = got[buf * words * MAP_WIDTH:][:dense.shape[0]]
                results[s.name, buf] = (np.array(sums, dtype=np.int64), dense @ operands[buf])

    run_sim(dut, bench, deadline=200_000)
    assert len(results) == 2 * len(weighted)
    for name, (got, expected) in results.items():
        bad = np.flatnonzero(got != expected)
        assert bad.size == 0, (f"{name}: {bad.size} wrong sums {bad.tolist()}, first target {bad[:1]}: "
                               f"{got[bad[:1]]} vs {expected[bad[:1]]}")


# -- sequencer -----------------------------------------------------------------------------------------

def test_sequencer_walks_steps_of_any_length_and_restarts():
    """The step entry lives in registers, read ahead from the schedule memory, and the step's last cycle
    is flagged a cycle ahead: steps of 1, 2 and 3 cycles in any order, twice (a second `start`), each
    entry shown for exactly its length, `done` in the last step's last cycle; `arm_next` (from the
    `start` cycle on) is `phase_end & arm` of the cycle after it, so the decoders' start can come out of
    a register."""
    import dataclasses as dc

    from terwin.hw.winograd.program import Phase
    from terwin.hw.winograd.schedule import PhaseSequencer
    program = compile_program(small_dep(seed=3, input_shape=(1, 16, 16)))
    lengths = [1, 1, 3, 1, 2, 1, 1, 2, 3, 1]
    arms = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]
    program = dc.replace(program, phases=[Phase(0, n, in_tx=i, arm=a) for i, (n, a) in enumerate(zip(lengths, arms))])
    dut = PhaseSequencer(program)
    seen, ahead = [], []

    async def bench(ctx):
        for _ in range(2):
            ctx.set(dut.start, 1)
            nxt = [ctx.get(dut.arm_next)]
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.run, 1)
            run = []
            while True:
                run.append((ctx.get(dut.phase.in_tx), ctx.get(dut.count), ctx.get(dut.phase_end), ctx.get(dut.done)))
                nxt.append(ctx.get(dut.arm_next))
                done = ctx.get(dut.done)
                await ctx.tick()
                if done:
                    break
            ctx.set(dut.run, 0)
            await ctx.tick().repeat(3)
            seen.append(run)
            ahead.append(nxt)

    run_sim(dut, bench)
    expected = [(i, c, int(c == n - 1), int(i == len(lengths) - 1 and c == n - 1))
                for i, n in enumerate(lengths) for c in range(n)]
    assert seen == [expected, expected]
    armed = [int(c == n - 1 and a) for n, a in zip(lengths, arms) for c in range(n)] + [0]
    assert ahead == [armed, armed]


def test_synthesis_memories_count_each_read_port_and_the_block_rams_of_the_references():
    """`synthesis_memories` lists a memory once per read port (Yosys copies it for each): the operand
    memory once per lane, each bank MAP_WIDTH times (bank_layout "quarters": each quarter once), each
    activation buffer IN_PIXELS times; the explorer's block-RAM count over them gives what the
    committed ECP5 reference builds measured."""
    import json
    from pathlib import Path

    from terwin import fileformat
    from terwin.dse import resources
    from terwin.hw.winograd.program import IN_PIXELS

    program = compile_program(small_dep(spec=PRESETS["winograd"]))
    names = [m.name for m in program.synthesis_memories()]
    assert len(names) == len(set(names))
    assert sum(n.startswith("operands.") for n in names) == program.lanes
    assert sum(n.startswith("bank0.") for n in names) == MAP_WIDTH
    # bank_layout "quarters": 4 quarters with one read port each, every quarter once, no read copies
    quartered = compile_program(small_dep(spec=PRESETS["winograd"].replace(bank_layout="quarters")))
    qnames = [m.name for m in quartered.synthesis_memories()]
    assert quartered.quarters == MAP_WIDTH and program.quarters == 1
    assert sorted(n for n in qnames if n.startswith("bank0")) == [f"bank0q{q}" for q in range(MAP_WIDTH)]
    assert sum(n.startswith("bank") for n in qnames) == quartered.lanes * MAP_WIDTH
    assert sum(n.startswith("act.") for n in names) == IN_PIXELS
    assert "target_map" in names and "schedule" in names
    refs = sorted((Path(__file__).resolve().parents[1] / "bitstreams" / "ulx3s-85f").glob("winograd*/report.json"))
    assert refs
    for path in refs:
        report = json.loads(path.read_text())
        counted = resources.block_rams(resources.features(fileformat.load(path.parent / "model.terwin")), "ecp5")
        assert abs(counted - report["brams"]) <= 1, (path.parent.name, counted, report["brams"])


@pytest.mark.parametrize("lanes", [1, 2, 3, 4, 8, 12])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_target_map_reads_distinct_quarters_within_every_word(lanes, seed):
    """A lane's pieces in one target-map word have consecutive ranks, so the word reads each of the
    lane's quarters at most once; the stored word gives back every rank (quarter q at address a: rank
    a * 2^quarter_bits + q). Random densities and map sizes, lane counts with and without a power of two."""
    rng = np.random.default_rng(100 * lanes + seed)
    density = float(rng.choice([0.05, 0.2, 0.5, 1.0]))
    spec = PRESETS["winograd"].replace(mult_lanes=lanes, bank_layout="quarters")
    shape = (1, int(rng.integers(4, 11)), int(rng.integers(4, 11)))
    program = compile_program(small_dep(seed=seed, density=density, spec=spec, input_shape=shape))
    assert program.quarters == min(MAP_WIDTH, program.bank_depth)
    maps = [(program.target_map, program.map_words, program.quarter_bits)]
    for words, stored, qb in maps:
        assert len(words) == len(stored)
        for word, hw in zip(words, stored):
            for lane in range(len(word[0])):
                ranks = [entry[lane][1] for entry in word if entry[lane][0]]
                assert ranks == list(range(ranks[0], ranks[0] + len(ranks))) if ranks else True
                quarters = [t["q"] for t in hw[lane]["take"] if t["present"]]
                assert len(quarters) == len(set(quarters)), (lane, word, hw[lane])
                back = [(hw[lane]["addr"][t["q"]] << qb) | t["q"] for t in hw[lane]["take"] if t["present"]]
                assert back == ranks


def test_target_map_word_with_two_reads_in_one_quarter_is_an_internal_error():
    """The compiler checks the quarters rather than assume them: ranks 0 and 4 of a lane in one word
    (both in quarter 0) are refused."""
    from terwin.hw.winograd.program import _map_word
    word = [[(1, 0)], [(0, 0)], [(1, 4)], [(0, 0)]]
    with pytest.raises(RuntimeError, match="internal error: target-map word 7, lane 0: .* quarter 0"):
        _map_word(word, 7, quarter_bits=2, quarters=4)
    assert _map_word([[(1, 3)], [(1, 4)], [(1, 5)], [(0, 0)]], 0, quarter_bits=2, quarters=4) == \
        [{"addr": [1, 1, 0, 0], "take": [{"present": 1, "q": 3}, {"present": 1, "q": 0}, {"present": 1, "q": 1},
                                         {"present": 0, "q": 0}]}]
