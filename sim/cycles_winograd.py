"""Exact cycle model of the Winograd engine (`terwin.hw.winograd_top.WinogradAccelerator`).

The engine's controller walks a schedule of fixed-length phases compiled from the `Deployment` by
`terwin.hw.winograd_program` (NumPy only); this model sums the same phases, so it needs no per-cycle
loop. Per layer:

* Winograd conv, T output tiles, C inputs, O outputs, nnz = nnz(U), L = mult_lanes:
  cycles = T * (16 C + 19) + T * (16 O + 12) + T * ceil(nnz / L) + 2,
  mac_cycles = T * ceil(nnz / L) + 2 (MULT phases and the final DRAIN);
* linear (sparse integer MAC on the same lanes), N inputs: (N + 1) + ceil(nnz / L) + 2 + (O + 7);
* max-pool: outputs * k * k + 1.

ideal_mac_cycles = ceil(nonzero multiplies / L), nonzero multiplies = nnz(U) * T (Winograd) or
nnz(W) (linear). `cycles` counts compute only: loading the image (one beat per activation) and
taking the scores (the output FIFO fills during the last layer) come on top.
"""
from __future__ import annotations

import numpy as np


def predict(dep) -> dict:
    from terwin.hw.winograd_program import compile_program  # NumPy-only module

    program = compile_program(dep)
    by_stage = program.stage_cycles()
    layers = [{"name": layer.name, **{k: v for k, v in by_stage[i].items() if k != "name"}}
              for i, layer in enumerate(dep.layers)]
    io = int(np.prod(dep.input_shape)) + program.n_scores + 2
    return {"layers": layers, "io_cycles": io}
