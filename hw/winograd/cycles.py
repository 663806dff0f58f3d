"""Exact cycle model of the Winograd engine (`terwin.hw.winograd.top.WinogradAccelerator`).

The engine's controller walks the schedule of fixed-length steps of the `WinogradProgram`
(`terwin.hw.winograd.program`, NumPy only); this model sums the same steps, so it needs no
per-cycle loop. A step runs IN(t), MULT(t - 1) and OUT(t - 2) side by side and lasts as long as the
longest, so per Winograd layer with T output tiles, C inputs, O outputs, L = mult_lanes,
issue = ceil(nnz(U) / L) (the largest lane's item count), P = IN_PIXELS (2):

  cycles = IN + max(IN, issue) + (T - 2) * max(IN, issue, R) + max(issue, R) + OUT
           (for T >= 2), IN = 16 C / P + 13, R = 1 + 4 O (an output tile's reads: its tail runs on
           into the next step), OUT = R + 15 (the layer's last tile waits for its tail)
           (`program.unit_lengths`);

  when the next layer is a Winograd layer whose first input window reads none of this layer's tiles
  still in flight, its IN(0) runs in this layer's last step (counted here: max(OUT, its IN) instead of
  OUT) and the next layer starts without it (`program._overlap_layers`);

* linear (sparse integer MAC on the same lanes), N inputs: (ceil(N / P) + 4) + issue + (1 + O + 10);
* max-pool: outputs * k * k + 1, or 0 when a 2x2 stride-2 pool is fused into the Winograd layer
  before it.

mac_cycles: the cycles in which the lanes issue items (a multiply a lane a cycle): `issue` per MULT
step, T * issue for a Winograd layer (0 for a layer without a nonzero weight); the products reach the
banks MULT_LATENCY cycles later, inside the next step.

ideal_mac_cycles = ceil(nonzero multiplies / L), nonzero multiplies = nnz(U) * T (Winograd) or
nnz(W) (linear). `cycles` counts compute only: loading the image (one beat per activation) comes on
top, and `busy` falls 3 cycles after the compute ends when the scores are taken at full rate (they
leave the output FIFO while the last layer still runs): io_cycles = inputs + 3.
"""
from __future__ import annotations

from terwin.deployment import MaxPool2d
from terwin.spec import ceil_div

from .program import WinogradProgram


def stage_cycles(program: WinogradProgram) -> list[dict]:
    """Per stage: cycles (its steps), mac_cycles (the lanes' issue cycles) and ideal_mac_cycles."""
    out = []
    for n, s in enumerate(program.stages):
        steps = [p for p in program.phases if p.stage == n]
        cycles = sum(p.length for p in steps)
        mac = sum(s.issue for p in steps if p.mult) if s.kind != MaxPool2d.kind and s.nonzero else 0
        ideal = ceil_div(s.nonzero_multiplies, program.lanes) if s.kind != MaxPool2d.kind else 0
        out.append({"cycles": cycles, "mac_cycles": mac, "ideal_mac_cycles": ideal})
    return out


def predict(program: WinogradProgram) -> dict:
    """{"layers": per layer {name, cycles, mac_cycles, ideal_mac_cycles}, "io_cycles"}."""
    # one beat per input activation; the scores leave the FIFO while the last layer still runs, and
    # `busy` falls 3 cycles after the last push (FIFO latency 2, then the controller sees it empty)
    return {"layers": program.per_layer(stage_cycles(program)), "io_cycles": program.n_inputs + 3}
