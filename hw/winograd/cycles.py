"""Exact cycle model of the Winograd engine (`terwin.hw.winograd.top.WinogradAccelerator`).

The engine's controller walks the schedule of fixed-length phases of the `WinogradProgram`
(`terwin.hw.winograd.program`, NumPy only); this model sums the same phases, so it needs no
per-cycle loop. Per layer:

* Winograd conv, T output tiles, C inputs, O outputs, nnz = nnz(U), L = mult_lanes:
  cycles = T * (16 C + 19) + T * (16 O + 12) + T * ceil(nnz / L) + 2,
  mac_cycles = T * ceil(nnz / L) + 2 (MULT phases and the final DRAIN);
* linear (sparse integer MAC on the same lanes), N inputs: (N + 1) + ceil(nnz / L) + 2 + (O + 7);
* max-pool: outputs * k * k + 1.

ideal_mac_cycles = ceil(nonzero multiplies / L), nonzero multiplies = nnz(U) * T (Winograd) or
nnz(W) (linear). `cycles` counts compute only: loading the image (one beat per activation) comes on
top, and `busy` falls 3 cycles after the compute ends when the scores are taken at full rate (they
leave the output FIFO while the last layer still runs): io_cycles = inputs + 3.
"""
from __future__ import annotations

from terwin.deployment import MaxPool2d
from terwin.spec import ceil_div

from .program import OP, WinogradProgram


def stage_cycles(program: WinogradProgram) -> list[dict]:
    """Per stage: cycles (its phases), mac_cycles (its MULT + DRAIN phases) and ideal_mac_cycles."""
    out = []
    for n, s in enumerate(program.stages):
        ph = [p for p in program.phases if p.stage == n]
        cycles = sum(p.length for p in ph)
        mac = sum(p.length for p in ph if p.op in (OP["MULT"], OP["DRAIN"]))
        ideal = ceil_div(s.nonzero_multiplies, program.lanes) if s.kind != MaxPool2d.kind else 0
        out.append({"cycles": cycles, "mac_cycles": mac, "ideal_mac_cycles": ideal})
    return out


def predict(program: WinogradProgram) -> dict:
    """{"layers": per layer {name, cycles, mac_cycles, ideal_mac_cycles}, "io_cycles"}."""
    # one beat per input activation; the scores leave the FIFO while the last layer still runs, and
    # `busy` falls 3 cycles after the last push (FIFO latency 2, then the controller sees it empty)
    return {"layers": program.per_layer(stage_cycles(program)), "io_cycles": program.n_inputs + 3}
