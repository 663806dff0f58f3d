"""Exact cycle model of the ternary accelerator (`terwin.hw.top.TernaryAccelerator`).

It follows the controller's schedule (see `terwin.hw.memimage` and `terwin.hw.top`), in NumPy, with
no per-cycle loop. Per stage (a conv/linear layer with its fused max-pool), with R = pe_rows:

* jobs run output group by output group; group g has J = pooled pixels x pool_k**2 jobs of n_g
  tiles (its kept tiles, at least 1); the array issues one tile per cycle: mac_cycles = sum J * n_g;
* a tile reaches the accumulators A = 5 + log2(pe_cols) cycles after issue (decoder 2, activation
  read 1, activation register 1, PE products 1, adder tree log2(pe_cols));
* the sums of job j move to the shadow register at c_j = c_(j-1) + max(n_j, R): the requantizer
  drains the shadow one channel per cycle and the array stalls when a job ends before that;
* the last channel is written 6 cycles after its shadow load + R - 1 (parameter read 1, requantizer 4),
  and the next stage starts the cycle after:
  cycles = (n_0 - 1 + A) + sum_(j>=1) max(n_j, R) + R + 6.

`cycles` counts compute only: loading the image (one beat per activation) and sending the scores
(one beat per score + 2) come on top, at the rate the streams allow.
"""
from __future__ import annotations

import math

import numpy as np

REQUANT_TAIL = 6   # shadow load -> last write of a job is R + 5 cycles; +1 to count inclusive


def pipeline_depth(spec) -> int:
    return 5 + (spec.pe_cols - 1).bit_length()


def predict(dep) -> dict:
    from terwin.hw.memimage import plan  # NumPy-only module

    stages = plan(dep)
    spec = dep.spec
    rows, lanes = spec.pe_rows, spec.lanes
    a = pipeline_depth(spec)
    by_index = {}
    for s in stages:
        n = s.og_counts.astype(np.int64)
        j = s.jobs_per_og
        mac = int(j * n.sum())
        steps = int((j * np.maximum(n, rows)).sum() - max(int(n[0]), rows))
        cycles = int(n[0]) - 1 + a + steps + rows + REQUANT_TAIL
        ideal = math.ceil(s.nonzero_weights * s.conv_pixels / lanes)
        by_index[s.index] = {"cycles": cycles, "mac_cycles": mac, "ideal_mac_cycles": ideal}
        if s.pool_index is not None:
            by_index[s.pool_index] = {"cycles": 0, "mac_cycles": 0, "ideal_mac_cycles": 0,
                                      "fused_into": dep.layers[s.index].name}
    layers = [{"name": layer.name, **by_index[i]} for i, layer in enumerate(dep.layers)]
    last = stages[-1]
    io = int(np.prod(dep.input_shape)) + last.out_channels * last.out_h * last.out_w + 2
    return {"layers": layers, "io_cycles": io}
