"""The ports every accelerator top has (docs/hardware.md, "Ports"), whatever its engine."""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

COUNTER_BITS = 32  # the cycle counters: 4.29e9 cycles, minutes at FPGA clocks


def accelerator_signature(spec, *, score_bits: int, n_layers: int) -> wiring.Signature:
    """Image in, scores out, cycle counters.

    * `i_stream`: the quantized image, one unsigned activation per beat in (C, H, W) raster order;
    * `o_stream`: the class scores (signed), one per beat in class order;
    * `busy`: high from the cycle after the last input beat until the last score is taken;
    * `cycles`: compute cycles of the current/last image (the sum of the per-layer counts);
    * `layer_sel` -> `layer_cycles`, `layer_mac_cycles`: the counts of `dep.layers[layer_sel]`.
    """
    return wiring.Signature({
        "i_stream": In(stream.Signature(unsigned(spec.act_bits))),
        "o_stream": Out(stream.Signature(signed(score_bits))),
        "busy": Out(1),
        "cycles": Out(COUNTER_BITS),
        "layer_sel": In(range(max(2, n_layers))),
        "layer_cycles": Out(COUNTER_BITS),
        "layer_mac_cycles": Out(COUNTER_BITS),
    })
