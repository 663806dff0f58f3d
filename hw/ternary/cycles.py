"""Exact cycle model of the ternary accelerator (`terwin.hw.ternary.top.TernaryAccelerator`).

It reads the same `TernaryProgram` as the top (`terwin.hw.ternary.program`: the stages, their kept
tiles per output group, the pipeline latencies), in NumPy, with no per-cycle loop. Per stage (a
conv/linear layer with its fused pool; a graph runs its stages one at a time, in layer order), with
R = pe_rows / out_lanes (the writer's cycles per job: `TernaryProgram.drain_steps`; pe_rows with one
out lane):

* jobs run output group by output group; group g has J = pooled pixels x pool_k**2 jobs of n_g
  tiles (its kept tiles, at least 1); the array issues one tile per cycle: mac_cycles = sum J * n_g;
* a tile reaches the accumulators A = `pipeline_depth` = 5 + log2(pe_cols) cycles after issue
  (decoder 2, activation read 1, activation register 1, PE products 1, adder tree log2(pe_cols));
* the sums of job j move to the shadow register at c_j = c_(j-1) + max(n_j, R): the requantizers
  drain the shadow out_lanes channels per cycle and the array stalls when a job ends before that;
* the last channel is written T cycles after its shadow load + R - 1, and the next stage starts the
  cycle after (`TernaryProgram.requant_tail`): T = 6 (drain register 1, parameter read 1,
  requantizer 4), + 2 in a program with residual connections (the residual read, the residual add),
  + 4 in a stage with a fused average pool (its requantizer):
  cycles = (n_0 - 1 + A) + sum_(j>=1) max(n_j, R) + R + T.

`cycles` counts compute only: loading the image (one beat per activation, + 1: the loader's `done`
is a register) and sending the scores (one beat per score, + 1: the score memory's read latency,
+ 1: the score output's `done` is a register) come on top, at the rate the streams allow.
io_cycles = inputs + scores + 3 is, at full stream rate, the cycles from the first input beat to
`busy` falling less the compute cycles: the period of back-to-back images.
NumPy only (no Amaranth): `terwin simulate` imports nothing else.
"""
from __future__ import annotations

import math

import numpy as np

from .program import TernaryProgram


def stage_cycles(program: TernaryProgram) -> list[dict]:
    """Per stage: cycles, mac_cycles (tiles issued) and ideal_mac_cycles."""
    spec = program.spec
    rows, lanes = program.drain_steps, spec.lanes
    a = program.pipeline_depth
    huffman = None
    if program.huffman:   # the Huffman weight path: decode waits (`terwin.hw.ternary.huffman_cycles`)
        from .huffman_cycles import huffman_stage_cycles
        huffman = huffman_stage_cycles(program)
    out = []
    for i, s in enumerate(program.stages):
        n = s.og_counts.astype(np.int64)
        j = s.jobs_per_og
        mac = int(j * n.sum())
        steps = int((j * np.maximum(n, rows)).sum() - max(int(n[0]), rows))
        cycles = int(n[0]) - 1 + a + steps + rows + program.requant_tail(s)
        if huffman is not None:
            cycles = huffman[i]
        ideal = math.ceil(s.nonzero_weights * s.conv_pixels / lanes)
        out.append({"cycles": cycles, "mac_cycles": mac, "ideal_mac_cycles": ideal})
    return out


def predict(program: TernaryProgram) -> dict:
    """{"layers": per layer {name, cycles, mac_cycles, ideal_mac_cycles}, "io_cycles"}."""
    io = program.n_inputs + program.n_scores + 3
    return {"layers": program.per_layer(stage_cycles(program)), "io_cycles": io}
