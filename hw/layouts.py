"""Bit layouts of the ternary engine, in one place.

The hardware (`amaranth.lib.data` views) and the memory-image packer (`terwin.hw.memimage`) take the
field offsets from these factories, so no module slices magic offsets by hand.

Ternary code (2 bits): bit 0 `nonzero`, bit 1 `negative`: 0b00 -> 0, 0b01 -> +1, 0b11 -> -1
(0b10 is never written and decodes as 0).
"""
from __future__ import annotations

from amaranth.hdl import Const, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

COUNTER_BITS = 32  # the cycle counters: 4.29e9 cycles, minutes at FPGA clocks


def accelerator_signature(spec, *, score_bits: int, n_layers: int) -> wiring.Signature:
    """The ports of both engines' tops (docs/hardware.md, "Ports"): image in, scores out, counters."""
    return wiring.Signature({
        "i_stream": In(stream.Signature(unsigned(spec.act_bits))),
        "o_stream": Out(stream.Signature(signed(score_bits))),
        "busy": Out(1),
        "cycles": Out(COUNTER_BITS),
        "layer_sel": In(range(max(2, n_layers))),
        "layer_cycles": Out(COUNTER_BITS),
        "layer_mac_cycles": Out(COUNTER_BITS),
    })

TERNARY_CODE = data.StructLayout({"nonzero": 1, "negative": 1})
CODE_OF = {0: 0b00, 1: 0b01, -1: 0b11}


def lanes_layout(spec, width: int, *, is_signed: bool = False) -> data.ArrayLayout:
    """`pe_cols` lanes of `width`-bit values."""
    return data.ArrayLayout(signed(width) if is_signed else unsigned(width), spec.pe_cols)


def tile_codes_layout(spec) -> data.ArrayLayout:
    """codes[row][lane] of one PE tile."""
    return data.ArrayLayout(data.ArrayLayout(TERNARY_CODE, spec.pe_cols), spec.pe_rows)


def weight_word_layout(spec, *, lm_bits: int, coff_bits: int) -> data.StructLayout:
    """One kept tile in the weight memory.

    codes: the tile's ternary codes; lm: row of the lane map (which kernel tap / channel each lane
    reads); coff: address offset of the tile's channel group; last: last kept tile of its output group.
    """
    return data.StructLayout({
        "codes": tile_codes_layout(spec),
        "lm": unsigned(max(1, lm_bits)),
        "coff": unsigned(max(1, coff_bits)),
        "last": 1,
    })


def lane_map_layout(spec, *, k_bits: int, aoff_bits: int) -> data.ArrayLayout:
    """Per lane: kernel row/col of the tap it reads and its address offset from the pixel base."""
    lane = data.StructLayout({"ky": unsigned(k_bits), "kx": unsigned(k_bits), "aoff": unsigned(aoff_bits)})
    return data.ArrayLayout(lane, spec.pe_cols)


def param_layout(*, bias_bits: int, mult_bits: int, shift_bits: int) -> data.StructLayout:
    """Per output channel requantization constants."""
    return data.StructLayout({"bias": signed(bias_bits), "mult": signed(mult_bits), "shift": unsigned(shift_bits)})


def pack(layout, value) -> int:
    """The bits of a nested Python value (dicts for structs, lists for arrays) laid out by `layout`."""
    return Const.cast(layout.const(value)).value
