"""cocotb bench for an accelerator top: a whole slice of images in one simulator run.

Engine-agnostic: the toplevel is `terwin_bench` (`terwin.sim.harness`), the Verilog half of this
bench, wrapped around the top; it talks only to the shared ports (i_stream, o_stream, busy, cycles,
layer_sel / layer_cycles / layer_mac_cycles) and does the per-cycle work — driving the images with
random gaps, taking the scores under random back-pressure, reading the counters, the protocol
checks and the watchdog — so that this Python half needs no round-trip per cycle or per beat: it
waits for `done` and then checks everything the Verilog half wrote, in bulk.

Its configuration comes from the JSON file named by TERWIN_BENCH (written by `terwin.sim.rtl`): the
results file, the expected scores (.npy, from `terwin.sim.reference`), the global index of the first
image, the cycle model's report, the layer names, the score width and the full-rate period. The
checker (`terwin.sim.harness.check`) compares every score with `==`, every layer's cycle and MAC
cycle counter and the total with the cycle model, and the protocol; the test fails on any
difference, on a watchdog timeout, or on fewer results than images.
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from terwin.sim import harness


@cocotb.test()
async def stream_images(dut):
    with open(os.environ["TERWIN_BENCH"]) as f:
        cfg = json.load(f)
    if not dut.done.value:
        await RisingEdge(dut.done)
    with open(cfg["results"]) as f:
        images, timeout = harness.parse_results(f.read(), n_layers=len(cfg["layer_names"]),
                                                score_bits=cfg["score_bits"])
    expected = np.load(cfg["expected"])
    found = harness.check(images, expected=expected, first=cfg["first"], predicted=cfg["predicted"],
                          layer_names=cfg["layer_names"], full_rate=cfg["full_rate"])
    problems = []
    if timeout is not None:
        problems.append(f"image {timeout['image']}: the watchdog stopped it after {timeout['cycles']} cycles "
                        f"({timeout['phase']})")
    elif len(images) != cfg["count"]:
        problems.append(f"{len(images)} result(s) for {cfg['count']} image(s)")
    if found["mismatches"]:
        problems.append(f"{found['mismatches']} score(s) differ from the reference")
    if found["counter_errors"]:
        problems.append(f"{len(found['counter_errors'])} counter value(s) differ from the cycle model, "
                        f"first {found['counter_errors'][0]}")
    if found["protocol_errors"]:
        problems.append(f"protocol: {found['protocol_errors'][0]}")
    assert not problems, "; ".join(problems)
