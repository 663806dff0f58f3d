"""Bit layouts of the Winograd engine, in one place (the ternary engine's are in `terwin.hw.ternary.layouts`).

The hardware views memory words through these layouts and the memory images are built from the
same definitions (`WinogradProgram.memories()`: Amaranth packs its dicts into them), so no
module slices offsets by hand. The requantization constants use the shared
`terwin.hw.common.requant.param_layout`.
"""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data


def item_layout(*, weight_bits: int, addr_bits: int) -> data.StructLayout:
    """One nonzero weight of the compressed stream: value, operand address, last of its target."""
    return data.StructLayout({"w": signed(weight_bits), "addr": unsigned(addr_bits), "last": 1})


def target_map_layout(*, lanes: int, k_bits: int) -> data.ArrayLayout:
    """Where a target's partial sums live: for every lane, `present` and the address `k` in its bank.
    M[t] is the sum of the present entries (0 when none is)."""
    return data.ArrayLayout(data.StructLayout({"present": 1, "k": unsigned(k_bits)}), lanes)


def phase_layout(*, op_bits: int, stage_bits: int, length_bits: int, tile_bits: int) -> data.StructLayout:
    """One entry of the controller's schedule (see `terwin.hw.winograd.program`)."""
    return data.StructLayout({"op": unsigned(op_bits), "stage": unsigned(stage_bits), "length": unsigned(length_bits),
                              "ty": unsigned(tile_bits), "tx": unsigned(tile_bits), "arm": 1})


def tile_layout(shape, n: int) -> data.ArrayLayout:
    """An n x n tile, row-major: tile[i][j]."""
    return data.ArrayLayout(data.ArrayLayout(shape, n), n)


def read_layout(*, addr_bits: int) -> data.StructLayout:
    """A read of the activation buffers: en, the address, and whether the pixel is inside the map
    (outside: the read gives 0, the zero padding)."""
    return data.StructLayout({"en": 1, "addr": unsigned(addr_bits), "inside": 1})


def write_layout(*, addr_bits: int, act_bits: int) -> data.StructLayout:
    """A write of the activation buffers: en, address, the activation, and which buffer (`dst`)."""
    return data.StructLayout({"en": 1, "addr": unsigned(addr_bits), "data": unsigned(act_bits), "dst": 1})
