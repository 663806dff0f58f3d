"""The cocotb half of the Huffman decoder's bench (`terwin.sim.codec_rtl`): drives the coded words,
takes the symbols and writes what came out.

The configuration (JSON, path in $TERWIN_HUFFMAN_BENCH): `words` (the coded stream, one beat each),
`count` (symbols of the stream), `p_in` / `p_out` (probability that a word is offered / a symbol is
taken in a cycle), `seed`, `limit` (cycles before giving up) and `out` (where the results go:
`symbols`, `cycles` from `start` to the last symbol taken, `error` seen). Inputs change at the
falling edge; a transfer is counted when valid and ready are both high just before the rising edge.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer


@cocotb.test()
async def decode(dut):
    cfg = json.loads(Path(os.environ["TERWIN_HUFFMAN_BENCH"]).read_text())
    rng = random.Random(cfg["seed"])
    words, count = cfg["words"], cfg["count"]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for name in ("i_stream__valid", "i_stream__payload", "o_stream__ready", "start", "count"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    dut.start.value = 1
    dut.count.value = count
    await FallingEdge(dut.clk)
    dut.start.value = 0
    symbols, cycles, error, sent = [], 1, 0, 0
    offer = False
    while len(symbols) < count and cycles < cfg["limit"]:
        if sent < len(words) and not offer:
            offer = rng.random() < cfg["p_in"]
        dut.i_stream__valid.value = int(offer)
        dut.i_stream__payload.value = words[sent] if offer else 0
        ready = rng.random() < cfg["p_out"]
        dut.o_stream__ready.value = int(ready)
        await Timer(1, unit="ns")          # the combinational outputs settle
        if ready and int(dut.o_stream__valid.value):
            symbols.append(int(dut.o_stream__payload.value))
        if offer and int(dut.i_stream__ready.value):
            sent += 1
            offer = False
        error |= int(dut.error.value)
        await FallingEdge(dut.clk)
        cycles += 1
    Path(cfg["out"]).write_text(json.dumps({"symbols": symbols, "cycles": cycles, "error": error}))
