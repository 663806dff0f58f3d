"""The ternary engine's Huffman weight path (#17): a model whose layers have codec `huffman` runs from
one canonical-Huffman stream, decoded on chip a group ahead into a tile cache
(`terwin.hw.ternary.huffman_program`, `tilecache`). The filler alone in Amaranth's simulator
(tiles == the raw words' codes, entries, one symbol a cycle, the group-ahead rule), and the whole
top against the reference (scores, ==) and the cycle model (per-layer cycles, ==, decode waits
included) on synthetic models of every array shape the tests use, graphs and out lanes included,
and on the stored ternary-50 re-encoded; raw models keep their memories."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Const
from amaranth.sim import Simulator

from terwin import fileformat
from terwin.codec import with_codec
from terwin.hw.ternary.huffman_program import FIRST_SYMBOL, WEIGHT_PATH, memory_bits, tile_positions, walk_side
from terwin.hw.ternary.program import compile_program, kept_tiles
from terwin.hw.ternary.tilecache import TileCacheFiller
from terwin.sim import cycles
from terwin.spec import PE4X4, PE8X8, PE8X16, HardwareSpec
from terwin.synthetic import random_deployment, random_graph_deployment

sys.path.insert(0, str(Path(__file__).parent))
from test_hw_graph import GRAPHS  # noqa: E402
from test_hw_top import check_top, custom_deployment  # noqa: E402

ROOT = Path(__file__).parents[1]
TERNARY_50 = ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin"

NETWORKS = {
    "pe4x4": (PE4X4, dict(seed=1, topology=(("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 10)),
                          input_shape=(1, 6, 6))),
    "pe8x8": (PE8X8, dict(seed=2, topology=(("conv2d", 12), ("conv2d", 20), ("maxpool2d", 2), ("linear", 7)),
                          input_shape=(3, 6, 6))),
    "pe8x16": (PE8X16, dict(seed=3, topology=(("conv2d", 20), ("maxpool2d", 2), ("conv2d", 12), ("linear", 5)),
                            input_shape=(2, 6, 6))),
    # one symbol a tile (G = 4 lanes, one row)
    "pe1x4": (HardwareSpec(pe_rows=1, pe_cols=4), dict(seed=5, topology=(("conv2d", 3), ("maxpool2d", 2),
                                                                         ("conv2d", 5), ("linear", 4)),
                                                       input_shape=(2, 6, 6))),
    # one lane a symbol (G = 1)
    "pe2x1": (HardwareSpec(pe_rows=2, pe_cols=1), dict(seed=6, topology=(("conv2d", 3), ("conv2d", 2), ("linear", 3)),
                                                       input_shape=(1, 5, 5))),
    # several out lanes: jobs of fewer cycles, decode waits more often
    "pe8x8_lanes4": (PE8X8.replace(out_lanes=4), dict(seed=7, topology=(("conv2d", 12), ("maxpool2d", 2),
                                                                        ("linear", 10)), input_shape=(2, 6, 6))),
}


def huffman(dep):
    return with_codec(dep, "huffman")


@pytest.mark.parametrize("name", list(NETWORKS))
def test_whole_network_from_the_huffman_stream_equals_reference_and_model(name):
    spec, kw = NETWORKS[name]
    raw = random_deployment(spec, **kw)
    dep = huffman(raw)
    check_top(dep)
    # the same tiles are issued; the decode can only add cycles
    model, base = cycles.predict(dep), cycles.predict(raw)
    assert [l["mac_cycles"] for l in model["layers"]] == [l["mac_cycles"] for l in base["layers"]]
    assert model["cycles"] >= base["cycles"]


def test_strides_padding_and_overlapping_pool():
    dep = custom_deployment(PE8X8, [("conv2d", 9, 3, 2, 0), ("conv2d", 10, 1, 1, 0), ("maxpool2d", 3, 2),
                                    ("conv2d", 6, 2, 1, 1)], input_shape=(5, 11, 11), seed=5)
    check_top(huffman(dep))


@pytest.mark.parametrize("name", ["projection", "global_avgpool"])
def test_residual_graphs(name):
    spec, kw = GRAPHS[name]
    check_top(huffman(random_graph_deployment(spec, seed=3, **kw)))


def test_one_fc_layer_waits_for_its_decode_exactly():
    """A linear layer computes each output group in fewer cycles than its tiles take to decode:
    the model's extra cycles over the raw engine are the decode waits, and the RTL counts the same."""
    raw = custom_deployment(PE4X4, [("linear", 12)], input_shape=(8, 3, 3), seed=9, tile_sparsity=0.0)
    dep = huffman(raw)
    counts = check_top(dep, images=2)
    assert counts[0]["cycles"] == counts[1]["cycles"] > cycles.predict(raw)["cycles"]


def test_raw_models_keep_their_memories():
    dep = random_deployment(*NETWORKS["pe4x4"][0:1], **NETWORKS["pe4x4"][1])
    raw, coded = compile_program(dep), compile_program(huffman(dep))
    names = [m.name for m in raw.memories()]
    raw_path = {"weights", "codes"}   # a kept tile's header and its codes
    path = set(WEIGHT_PATH) - raw_path
    assert raw_path <= set(names) and not path & set(names)
    assert not raw.huffman and coded.huffman
    coded_names = [m.name for m in coded.memories()]
    assert not raw_path & set(coded_names) and path <= set(coded_names)
    assert [m.name for m in coded.memories() if m.name not in path] == \
        [n for n in names if n not in raw_path]


def _run_filler(program, *, releases=((1, None),), cycles_=None, hold=1):
    """The filler alone: `hold` for `hold` cycles (the image loading; the sequencer's inputs toggling
    meanwhile, which the hold must ignore), then from each cycle of `releases` on (counted from
    the last cycle of the hold) the sequencer's last tile of the output group before that word
    issued every cycle (None: the last group's, so every tile may be written).
    Returns [(cycle, entry, codes value)] of its code writes; its side writes [(entry, lm, coff)]
    in `_run_filler.side`."""
    dut = TileCacheFiller(program)
    hw = program.huffman_weights
    words = len(program.words)
    writes, side, tile = [], [], []
    total = cycles_ or FIRST_SYMBOL + hw.count + len(tile_positions(program)) + 20

    async def bench(ctx):
        ctx.set(dut.hold, 1)
        for k in range(hold):      # a group's end issued in the hold's last cycle too
            ctx.set(dut.issue, 1 if k == hold - 1 else k % 2)
            ctx.set(dut.last, 1)
            ctx.set(dut.group_end, 1)
            ctx.set(dut.weight_addr, words - 1)
            assert not ctx.get(dut.cache_write.en) and not ctx.get(dut.cache_write.side_en)
            await ctx.tick()
        for port in (dut.issue, dut.last, dut.group_end, dut.weight_addr):
            ctx.set(port, 0)
        ctx.set(dut.hold, 0)
        for cycle in range(1, total):
            for at, word in releases:
                if cycle >= at:     # the sequencer ends the output group before `word`
                    ctx.set(dut.issue, 1)
                    ctx.set(dut.last, 1)
                    ctx.set(dut.group_end, 1)
                    ctx.set(dut.weight_addr, (words if word is None else word) - 1)
            en = ctx.get(dut.cache_write.en)
            if en:     # one symbol a write, in order into its place in the entry: the tile is whole with its last
                assert en & (en - 1) == 0 and en.bit_length() - 1 == len(tile)
                entry = ctx.get(dut.cache_write.addr)
                assert not tile or entry == tile[0][0]
                tile.append((entry, ctx.get(dut.cache_write.data)))
                if len(tile) == hw.symbols_per_tile:
                    writes.append((cycle, entry, sum(v << (i * hw.symbol_bits) for i, (_, v) in enumerate(tile))))
                    tile.clear()
            if ctx.get(dut.cache_write.side_en):
                data = ctx.get(dut.cache_write.side_data)
                side.append((ctx.get(dut.cache_write.side_addr), int(data.lm), int(data.coff)))
            assert not ctx.get(dut.error)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    _run_filler.side = side
    return writes


def _codes(program):
    from terwin.hw.ternary import layouts
    layout = layouts.tile_codes_layout(program.spec)
    return [Const.cast(layout.const(w["codes"])).value for w in program.words]


@pytest.mark.parametrize("spec,kw", [NETWORKS["pe4x4"], NETWORKS["pe2x1"], NETWORKS["pe1x4"]],
                         ids=["pe4x4", "pe2x1", "pe1x4"])
def test_filler_writes_every_tile_one_symbol_a_cycle(spec, kw):
    program = compile_program(huffman(random_deployment(spec, **kw)))
    hw = program.huffman_weights
    s = hw.symbols_per_tile
    writes = _run_filler(program)
    assert [w[2] for w in writes] == _codes(program)
    assert [w[1] for w in writes] == [t % hw.cache_depth for t in range(len(writes))]
    # tile t's last symbol is the decoder's symbol (t + 1) * s - 1, taken in cycle FIRST_SYMBOL + that
    assert [w[0] for w in writes] == [FIRST_SYMBOL + (t + 1) * s - 1 for t in range(len(writes))]
    # the side walker: every visited tile's lane-map row and channel offset, into the same entries
    assert _run_filler.side == [(t % hw.cache_depth, w["lm"], w["coff"]) for t, w in enumerate(program.words)]


def test_filler_held_while_the_image_loads_starts_as_after_one_cycle():
    """The top holds the filler for the whole load (a register): whatever came before or arrives
    meanwhile, it starts from its start values when the hold falls: the same writes in the same
    cycles, and none during the hold."""
    spec, kw = NETWORKS["pe4x4"]
    program = compile_program(huffman(random_deployment(spec, **kw, tile_sparsity=0.0)))
    hw = program.huffman_weights
    phase = FIRST_SYMBOL + hw.count + 50
    starts = np.concatenate([[0], np.cumsum(program.og_counts)[:-1]])
    group = next(int(w) for w in starts if 0 < w and w + hw.cache_depth < len(program.words))
    kw_ = dict(releases=((phase, group), (2 * phase, None)), cycles_=3 * phase)
    once = _run_filler(program, **kw_)
    side = _run_filler.side
    assert _run_filler(program, hold=7, **kw_) == once and _run_filler.side == side


def test_filler_writes_at_most_the_ring_ahead_of_the_sequencer():
    """Tile t overwrites tile t - depth: only once the sequencer has finished that tile's output group
    (the issue of a group's last tile at word w - 1 frees every tile before w)."""
    spec, kw = NETWORKS["pe4x4"]
    program = compile_program(huffman(random_deployment(spec, **kw, tile_sparsity=0.0)))
    hw = program.huffman_weights
    depth, words = hw.cache_depth, len(program.words)
    starts = np.concatenate([[0], np.cumsum(program.og_counts)[:-1]])
    group = next(int(w) for w in starts if 0 < w and w + depth < words)   # a group that frees some tiles
    assert words > depth
    phase = FIRST_SYMBOL + hw.count + 50
    releases = ((phase, group), (2 * phase, None))
    writes = _run_filler(program, releases=releases, cycles_=3 * phase)
    assert len([w for w in writes if w[0] < phase]) == depth                 # a full ring, then it waits
    assert len([w for w in writes if w[0] < 2 * phase]) == group + depth     # the tiles before `group` freed
    assert writes[depth][0] > phase and writes[group + depth][0] > 2 * phase
    assert [w[2] for w in writes] == _codes(program)
    assert [w[1] for w in writes] == [t % depth for t in range(words)]
    assert _run_filler.side == [(t % depth, w["lm"], w["coff"]) for t, w in enumerate(program.words)]


def test_the_side_walker_finds_every_word_from_the_tile_mask():
    """`tile_positions` (a bit per tile position) and the per-stage constants give each visited tile's
    lane-map row and channel offset, as the raw words hold them; fully pruned output groups (one
    all-zero tile kept) included. The whole top on such a model: reference and model (==)."""
    dep = custom_deployment(PE4X4, [("conv2d", 12, 3, 1, 1), ("conv2d", 8, 3, 1, 0), ("linear", 6)],
                            input_shape=(6, 6, 6), seed=2, tile_sparsity=0.9)
    program = compile_program(huffman(dep))
    mask = tile_positions(program)
    assert mask.size == sum(s.out_groups * s.grid.tap_groups * s.grid.channel_groups for s in program.stages)
    assert mask.sum() == len(program.words) < mask.size
    pruned = [kept_tiles(dep.layers[s.index], s.grid).sum(axis=(1, 2)) for s in program.stages]
    assert any((p == 0).any() for p in pruned)                   # an output group with every tile pruned
    assert walk_side(program) == [(w["lm"], w["coff"]) for w in program.words]
    check_top(huffman(dep), images=1)


def test_ternary_50_huffman_runs_and_shrinks_the_weight_memories():
    """The stored ternary-50 with codec huffman: one image in Amaranth's simulator equals the
    reference and the model; its weight-path memories (stream, side info, cache, table) hold fewer
    bits than the raw weight words. (`terwin verify` runs all test images under Verilator.)"""
    raw = fileformat.load(TERNARY_50)
    dep = huffman(raw)
    check_top(dep, images=1, pause=0.0)
    bits_raw, bits_huff = memory_bits(compile_program(raw)), memory_bits(compile_program(dep))
    assert bits_raw["total"] == 214 * 141
    assert bits_huff["total"] <= 0.75 * bits_raw["total"]     # #17: at least 25 % fewer bits
