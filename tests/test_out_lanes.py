"""Output lanes (`HardwareSpec.out_lanes`, #15): the ternary engine requantizes, pools and writes
out_lanes channels per cycle, so a job costs max(tiles, pe_rows / out_lanes) cycles.

The whole top runs in Amaranth's simulator with random back-pressure against `terwin.sim.reference`
(scores, ==) and the cycle model (per-layer cycles, ==) on every storage case the lanes touch:
banked and replicated outputs (a replicated map's bank b holds channel b % C), score rows of several
lanes, max and average pools, residuals read from banked and replicated maps, signed maps; the
generated Verilog under the cocotb bench; the stored model retargeted to larger arrays."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from terwin import fileformat
from terwin.commands.simulate import retarget
from terwin.errors import SpecError
from terwin.hw.ternary.program import compile_program
from terwin.sim import cycles
from terwin.spec import PE8X8, HardwareSpec
from terwin.synthetic import random_deployment, random_graph_deployment

sys.path.insert(0, str(Path(__file__).parent))
from test_hw_graph import GRAPHS, check_regions  # noqa: E402
from test_hw_top import _networks, check_top, custom_deployment  # noqa: E402

ROOT = Path(__file__).parents[1]
TERNARY_50 = ROOT / "bitstreams" / "ulx3s-85f" / "ternary-50" / "model.terwin"


def lanes(spec, n):
    return spec.replace(out_lanes=n)


# -- the spec field ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(out_lanes=3), "out_lanes must be a power of two"),
    (dict(out_lanes=16), "no larger than pe_rows and pe_cols (8)"),
    (dict(pe_rows=2, pe_cols=8, out_lanes=4), "no larger than pe_rows and pe_cols (2)"),
    (dict(pe_rows=8, pe_cols=2, out_lanes=4), "no larger than pe_rows and pe_cols (2)"),
    (dict(weight_format="winograd", out_lanes=2), "ternary-engine field"),
])
def test_invalid_out_lanes_raise_one_line(kw, message):
    with pytest.raises(SpecError, match=None) as info:
        HardwareSpec(**kw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_default_out_lanes_keeps_files_and_digests_byte_identical(tmp_path):
    """A spec with out_lanes 1 serializes exactly as before the field existed (no key), so stored
    models re-save to the same bytes and spec digests do not move; other values round-trip."""
    assert "out_lanes" not in PE8X8.to_dict() and PE8X8.out_lanes == 1
    dep = fileformat.load(TERNARY_50)
    fileformat.save(dep, tmp_path / "again.terwin")
    assert (tmp_path / "again.terwin").read_bytes() == TERNARY_50.read_bytes()
    four = lanes(PE8X8, 4)
    assert json.loads(four.to_json())["out_lanes"] == 4 and HardwareSpec.from_json(four.to_json()) == four
    assert four.digest != PE8X8.digest and four.name.startswith("spec-")
    fileformat.save(retarget(dep, four), tmp_path / "four.terwin")
    assert fileformat.load(tmp_path / "four.terwin").spec == four


# -- the cycle model -----------------------------------------------------------------------------------

def test_a_job_costs_max_of_its_tiles_and_rows_per_lane():
    """cycles = (n_0 - 1 + A) + sum_{j>=1} max(n_j, R/L) + R/L + T, from the program's tile counts."""
    base = random_deployment(PE8X8, seed=4, tile_sparsity=0.5)
    for n in (1, 2, 4, 8):
        dep = base.replace(spec=lanes(PE8X8, n))
        program = compile_program(dep)
        assert program.drain_steps == 8 // n
        got = [l for l in cycles.predict(dep)["layers"] if l["cycles"]]
        for stage, layer in zip(program.stages, got):
            jobs = np.repeat(stage.og_counts, stage.jobs_per_og)
            d = 8 // n
            want = int(jobs[0]) - 1 + program.pipeline_depth + int(np.maximum(jobs[1:], d).sum()) + d \
                + program.requant_tail(stage)
            assert layer["cycles"] == want and layer["mac_cycles"] == int(jobs.sum())


def test_lanes_lift_the_requantizer_bound_of_the_stored_model():
    """ternary-50 on pe8x8: conv1 (1 input channel, 2 tiles per job) was requantizer-bound (8 cycles
    a job); with 4 lanes every layer is MAC-bound and the image is within 1.15x its ideal MAC cycles.
    (These figures are the RTL's: test_stored_model_retargeted_rtl_equals_the_model.)"""
    dep = fileformat.load(TERNARY_50)
    one, four = cycles.predict(dep), cycles.predict(retarget(dep, lanes(dep.spec, 4)))
    assert [l["cycles"] for l in one["layers"]] == [1039, 2325, 0, 2293, 0, 53]
    assert [l["cycles"] for l in four["layers"]] == [271, 2319, 0, 2287, 0, 47]
    assert [l["mac_cycles"] for l in four["layers"]] == [l["mac_cycles"] for l in one["layers"]]
    assert four["cycles"] == 4924 <= 1.15 * four["ideal_mac_cycles"]


# -- the top in Amaranth's simulator ---------------------------------------------------------------------

@pytest.mark.parametrize("spec,layers,shape", [
    # every output banked; scores in rows of 2; a pool fused into the first conv
    (HardwareSpec(pe_rows=4, pe_cols=4, out_lanes=2), [("conv2d", 12, 3, 1, 1), ("maxpool2d", 2, 2),
                                                       ("conv2d", 20, 3, 1, 1), ("linear", 10)], (1, 6, 6)),
    # one drain step per job (lanes = rows = cols): the stall never fires; 10 scores in 3 rows of 4
    (HardwareSpec(pe_rows=4, pe_cols=4, out_lanes=4), [("conv2d", 9, 3, 1, 1), ("linear", 10)], (3, 5, 5)),
    # replicated outputs of 3 and 5 channels on 8 banks (bank b holds channel b % C), an overlapping
    # pool, spatial scores (6 channels x 2 x 2) in rows of 2 lanes
    (HardwareSpec(pe_rows=4, pe_cols=8, out_lanes=2), [("conv2d", 3, 3, 1, 1), ("conv2d", 5, 3, 2, 0),
                                                       ("maxpool2d", 2, 1), ("conv2d", 6, 2, 1, 1)], (2, 9, 9)),
    (HardwareSpec(pe_rows=8, pe_cols=8, out_lanes=4), [("conv2d", 6, 5, 1, 2), ("maxpool2d", 2, 2),
                                                       ("conv2d", 17, 3, 1, 1), ("linear", 7)], (1, 8, 8)),
    # more rows than banks: lanes bounded by the columns
    (HardwareSpec(pe_rows=8, pe_cols=2, out_lanes=2), [("conv2d", 5, 3, 1, 0), ("linear", 3)], (1, 5, 5)),
], ids=["pe4x4-L2", "pe4x4-L4", "pe4x8-L2-replicated", "pe8x8-L4-k5", "pe8x2-L2"])
def test_whole_network_with_out_lanes(spec, layers, shape):
    dep = custom_deployment(spec, layers, input_shape=shape, seed=5)
    check_top(dep)
    slower = cycles.predict(dep.replace(spec=spec.replace(out_lanes=1)))["cycles"]
    assert cycles.predict(dep)["cycles"] < slower


@pytest.mark.parametrize("name,n", [(name, n) for name in GRAPHS for n in (2, 4)
                                    if n <= min(GRAPHS[name][0].pe_rows, GRAPHS[name][0].pe_cols)])
def test_graphs_with_out_lanes(name, n):
    """Residuals (identity, a signed projection), global and 2x2 average pools, with lanes."""
    spec, kw = GRAPHS[name]
    dep = random_graph_deployment(lanes(spec, n), seed=3, **kw)
    check_regions(compile_program(dep))
    check_top(dep)


def test_residual_read_from_a_replicated_map_with_lanes():
    """A 3-channel network input on 8 banks is replicated and is the block's residual: lane i reads
    channel c + i from bank c + i at that channel's own address (`res_bank_offset{b}`)."""
    dep = random_graph_deployment(HardwareSpec(pe_rows=4, pe_cols=8, out_lanes=4), seed=2, input_shape=(3, 5, 5),
                                  stem=0, blocks=[(3, 1, 3)], project=[False], pools=[False], final_pool="none",
                                  classes=4)
    program = compile_program(dep)
    assert any(s.residual is not None and s.res_mode == "replicated" for s in program.stages)
    assert "res_bank_offset7" in program.stage_table()
    check_top(dep)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=_networks(), seed=st.integers(0, 1000), sparsity=st.sampled_from([0.0, 0.5, 0.9]),
       log_lanes=st.integers(1, 3))
def test_random_networks_with_random_lanes(net, seed, sparsity, log_lanes):
    spec, layers, shape = net
    n = min(1 << log_lanes, spec.pe_rows, spec.pe_cols)
    check_top(custom_deployment(lanes(spec, n), layers, input_shape=shape, seed=seed, tile_sparsity=sparsity),
              images=1, pause=0.2, seed=seed)


# -- the generated Verilog ---------------------------------------------------------------------------------

def _rtl_equals_reference_and_model(dep, *, n_images, seed, jobs, build_root) -> dict:
    """Random images through the Verilog under the cocotb bench: scores == reference, every layer's
    counters and each image's total == the cycle model (returned)."""
    from terwin.sim import reference, rtl
    q = np.random.default_rng(seed).integers(0, dep.spec.act_max + 1, size=(n_images, *dep.input_shape))
    res = rtl.verify(dep, q, build_root=build_root, progress=False, jobs=jobs)
    assert res.mismatches == 0, res.first_mismatch
    assert np.array_equal(res.scores, reference.forward(dep, q))
    model = cycles.predict(dep)
    assert [(l["name"], l["cycles"], l["mac_cycles"]) for l in res.layers] == \
        [(l["name"], l["cycles"], l["mac_cycles"]) for l in model["layers"]]
    assert res.cycles == [model["cycles"]] * len(q)
    return model


@pytest.mark.cocotb
def test_out_lanes_verilog_verifies(tmp_path, rtl_build_root):
    """The Verilog (score rows with per-lane write enables, lane-wide params) under the cocotb bench."""
    dep = custom_deployment(HardwareSpec(pe_rows=4, pe_cols=8, out_lanes=4),
                            [("conv2d", 3, 3, 1, 1), ("conv2d", 9, 3, 1, 0), ("maxpool2d", 2, 2), ("linear", 6)],
                            input_shape=(1, 7, 7), seed=8)
    _rtl_equals_reference_and_model(dep, n_images=3, seed=1, jobs=1, build_root=rtl_build_root)


def test_lanes_never_write_padding_channels():
    """A drain step can straddle the last output channel (6 channels on 8 rows): its padding lanes
    must not write. (A stray write lands outside the map, where another live map may be: the whole
    network tests cannot always see it.) The writer alone, for the step of channels 4-7."""
    from amaranth.hdl import Elaboratable, Module
    from amaranth.sim import Simulator

    from terwin.hw.common.control import StageConstants
    from terwin.hw.ternary.writer import RequantWriter

    dep = custom_deployment(HardwareSpec(pe_rows=8, pe_cols=4, out_lanes=4),
                            [("conv2d", 6, 3, 1, 1), ("linear", 3)], input_shape=(1, 4, 4), seed=1)
    program = compile_program(dep)
    assert program.stages[0].out_mode == "banked" and program.stages[0].out_channels == 6

    class Bench(Elaboratable):
        def __init__(self):
            self.consts = StageConstants(program.stage_table())
            self.writer = RequantWriter(program, constants=self.consts.layout)

        def elaborate(self, platform):
            m = Module()
            m.submodules.consts, m.submodules.writer = self.consts, self.writer
            m.d.comb += self.writer.k.eq(self.consts.k)
            return m

    bench = Bench()
    w = bench.writer
    written = []

    async def testbench(ctx):
        ctx.set(bench.consts.stage, 0)
        ctx.set(w.enable, 1)
        for step in (0, 1):
            ctx.set(w.channel_valid, 1)
            ctx.set(w.channel_index, step)
            ctx.set(w.channel.channel, 4 * step)
            ctx.set(w.channel.window_first, 1)
            ctx.set(w.channel.window_last, 1)
            for i in range(4):
                ctx.set(w.channel_acc[i], 100 + i)
            await ctx.tick()
        ctx.set(w.channel_valid, 0)
        for _ in range(10):
            written.append(tuple(ctx.get(port.en) for port in w.bank_write))
            await ctx.tick()

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    writes = [en for en in written if any(en)]
    # step 0: channels 0-3 in banks 0-3; step 1: channels 4, 5 in banks 0, 1 only
    assert writes == [(1, 1, 1, 1), (1, 1, 0, 0)], writes


@pytest.mark.slow
@pytest.mark.cocotb
@pytest.mark.parametrize("rows,cols,n", [(8, 8, 4), (16, 32, 16)])
def test_stored_model_retargeted_rtl_equals_the_model(rows, cols, n, rtl_build_root):
    """ternary-50 on a larger array with lanes (docs/hardware.md's table): its Verilog under the cocotb
    bench, scores == reference, every counter == the cycle model."""
    dep = retarget(fileformat.load(TERNARY_50), HardwareSpec(pe_rows=rows, pe_cols=cols, out_lanes=n))
    model = _rtl_equals_reference_and_model(dep, n_images=4, seed=7, jobs=2, build_root=rtl_build_root)
    assert model["cycles"] == {(8, 8): 4924, (16, 32): 1340}[(rows, cols)]   # 16x32: wide (+1 a stage)
