"""The ternary engine on large arrays (#15): the pipeline never stalls, and wide arrays carry two
extra register (`terwin.hw.ternary.program.wide_pipeline`).

* No stall: the sequencer holds a job's last tile back until the requantizers will have drained the
  job before (`TileSequencer`), instead of freezing the MAC pipeline; the cycle counts stay those of
  the model (cycles = (n_0 - 1 + A) + sum max(n_j, R) + R + T), checked here where R = pe_rows /
  out_lanes exceeds the kept tiles of a job (the requantizer-bound case the stall used to handle).
* Wide arrays (pe_rows * pe_cols >= `WIDE_ARRAY`): the lane-map row is registered (+1 cycle), and
  the address part all lanes share summed beside it; the whole top in Amaranth's simulator against the
  reference (scores ==) and the cycle model (per-layer cycles ==), with lanes and with residuals.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from terwin.hw.ternary.program import WIDE_ARRAY, compile_program, pipeline_depth, wide_pipeline
from terwin.spec import PE8X8, PE8X16, HardwareSpec
from terwin.synthetic import random_deployment, random_graph_deployment

sys.path.insert(0, str(Path(__file__).parent))
from test_hw_top import check_top  # noqa: E402

PE16X16 = HardwareSpec(pe_rows=16, pe_cols=16)
TOPOLOGY = dict(topology=(("conv2d", 20), ("maxpool2d", 2), ("conv2d", 12), ("linear", 5)), input_shape=(2, 6, 6))


def test_wide_arrays_add_the_lane_map_register_small_ones_none():
    assert not wide_pipeline(PE8X8) and not wide_pipeline(PE8X16) and wide_pipeline(PE16X16)
    assert PE8X16.pe_rows * PE8X16.pe_cols < WIDE_ARRAY <= PE16X16.pe_rows * PE16X16.pe_cols
    # decoder 2 + activation read 2 (+1) + products 1 + log2(pe_cols) tree levels
    assert pipeline_depth(PE8X8) == 2 + 2 + 1 + 3
    assert pipeline_depth(PE8X16) == 2 + 2 + 1 + 4
    assert pipeline_depth(PE16X16) == 2 + 3 + 1 + 4
    dep = random_deployment(PE16X16.replace(out_lanes=4), seed=7, **TOPOLOGY)
    assert compile_program(dep).requant_latency == 1 + 4     # the parameter read is not widened


@pytest.mark.parametrize("spec", [PE8X8.replace(out_lanes=2), PE16X16, PE16X16.replace(out_lanes=4)],
                         ids=["pe8x8-L2", "pe16x16-L1", "pe16x16-L4"])
def test_no_stall_top_equals_reference_and_model(spec):
    """Jobs of fewer kept tiles than pe_rows / out_lanes (their last tile waits for the drain) and
    jobs of more, on a small and a wide array."""
    dep = random_deployment(spec, seed=7, **TOPOLOGY)
    program = compile_program(dep)
    tiles = np.concatenate([s.og_counts for s in program.stages])
    assert tiles.min() < program.drain_steps or spec.out_lanes > 1
    check_top(dep, images=2)


def test_wide_array_with_residuals_lanes_and_average_pool():
    """A residual block, a signed projection and a global average pool on a 16x16 array with 2 lanes."""
    dep = random_graph_deployment(PE16X16.replace(out_lanes=2), seed=3, input_shape=(3, 6, 6), stem=6,
                                  blocks=[(12, 2, 3)], project=[True], pools=[False], final_pool="global",
                                  classes=4)
    assert wide_pipeline(dep.spec) and compile_program(dep).has_residual
    check_top(dep, images=2)
