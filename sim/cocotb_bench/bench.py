"""cocotb bench for an accelerator top: streams many images in one simulator run.

Engine-agnostic: it talks only to the shared top ports (i_stream, o_stream, busy, cycles,
layer_sel / layer_cycles / layer_mac_cycles). Its configuration comes from the JSON file named by
TERWIN_BENCH (written by `terwin.sim.rtl`): images (.npy, quantized [N, C, H, W]), expected scores
(.npy, from `terwin.sim.reference`), the number of layers, back-pressure probabilities and the
results path. Results (scores, cycles, per-layer cycles) go to a JSON file; the in-order checker
counts mismatches and fails the test if there is any.
"""
from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


class AcceleratorBench:
    """Driver (input stream, random valid pauses), monitor (output stream, random ready) and checker."""

    def __init__(self, dut, *, seed: int, pause_in: float, pause_out: float):
        self.dut = dut
        self.rng = random.Random(seed)
        self.pause_in = pause_in
        self.pause_out = pause_out

    async def reset(self):
        dut = self.dut
        dut.i_stream__valid.value = 0
        dut.i_stream__payload.value = 0
        dut.o_stream__ready.value = 0
        dut.layer_sel.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def send(self, values):
        dut = self.dut
        for v in values:
            while self.rng.random() < self.pause_in:
                dut.i_stream__valid.value = 0
                await RisingEdge(dut.clk)
            dut.i_stream__valid.value = 1
            dut.i_stream__payload.value = int(v)
            while True:
                await ReadOnly()
                accepted = dut.i_stream__ready.value == 1
                await RisingEdge(dut.clk)
                if accepted:
                    break
        dut.i_stream__valid.value = 0

    async def receive(self, n):
        dut = self.dut
        out = []
        await ReadOnly()
        if dut.o_stream__valid.value != 1:
            await RisingEdge(dut.o_stream__valid)
        while len(out) < n:
            dut.o_stream__ready.value = int(self.rng.random() >= self.pause_out)
            await ReadOnly()
            if dut.o_stream__valid.value == 1 and dut.o_stream__ready.value == 1:
                out.append(dut.o_stream__payload.value.to_signed())
            await RisingEdge(dut.clk)
        dut.o_stream__ready.value = 0
        return out

    async def counters(self, n_layers):
        dut = self.dut
        await ReadOnly()
        if dut.busy.value == 1:
            await FallingEdge(dut.busy)
        await RisingEdge(dut.clk)
        layers = []
        for i in range(n_layers):
            dut.layer_sel.value = i
            await ReadOnly()
            layers.append((int(dut.layer_cycles.value), int(dut.layer_mac_cycles.value)))
            await RisingEdge(dut.clk)
        return int(dut.cycles.value), layers


@cocotb.test()
async def stream_images(dut):
    with open(os.environ["TERWIN_BENCH"]) as f:
        cfg = json.load(f)
    images = np.load(cfg["images"])
    expected = np.load(cfg["expected"])
    Clock(dut.clk, 10, unit="ns").start()
    tb = AcceleratorBench(dut, seed=cfg.get("seed", 0), pause_in=cfg.get("pause_in", 0.0),
                          pause_out=cfg.get("pause_out", 0.0))
    await tb.reset()
    results = {"scores": [], "cycles": [], "layers": [], "mismatches": 0}
    last_print = -1e9
    n = len(images)
    for i, img in enumerate(images):
        await tb.send(img.reshape(-1))
        scores = await tb.receive(expected.shape[1])
        cycles, layers = await tb.counters(cfg["n_layers"])
        bad = int(np.count_nonzero(np.asarray(scores) != expected[i]))
        results["mismatches"] += bad
        results["scores"].append(scores)
        results["cycles"].append(cycles)
        results["layers"].append(layers)
        now = time.monotonic()
        if cfg.get("progress") and (now - last_print > 1.0 or i == n - 1):
            last_print = now
            with open(cfg["progress"], "a") as f:  # the runner prints these lines while we run
                f.write(f"{i + 1} {results['mismatches']}\n")
    with open(cfg["results"], "w") as f:
        json.dump(results, f)
    assert results["mismatches"] == 0, f"{results['mismatches']} score(s) differ from the reference"
