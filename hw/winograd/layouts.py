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


def target_map_layout(*, lanes: int, k_bits: int, width: int) -> data.ArrayLayout:
    """One word of the target map with bank_layout "copies": `width` consecutive targets, each, for
    every lane, `present` and the address `k` of its partial sum in the lane's bank (each of the
    bank's `width` read ports reads one target's). M[t] is the sum of the present entries (0 when none
    is)."""
    return data.ArrayLayout(data.ArrayLayout(data.StructLayout({"present": 1, "k": unsigned(k_bits)}), lanes), width)


def quartered_map_layout(*, lanes: int, quarters: int, quarter_bits: int, quarter_addr_bits: int,
                         width: int) -> data.ArrayLayout:
    """One word of the target map with bank_layout "quarters" (`width` consecutive targets), per lane:
    `addr`, the address each of the lane's bank quarters is read at (the bank-address register takes
    it as it is), and per target `take`: `present` and `q`, the quarter holding the lane's partial sum.
    M[t] is the sum of the present entries (0 when none is)."""
    take = data.StructLayout({"present": 1, "q": unsigned(quarter_bits)})
    lane = data.StructLayout({"addr": data.ArrayLayout(unsigned(quarter_addr_bits), quarters),
                              "take": data.ArrayLayout(take, width)})
    return data.ArrayLayout(lane, lanes)


def phase_layout(*, stage_bits: int, length_bits: int, tile_bits: int) -> data.StructLayout:
    """One step of the controller's schedule (`terwin.hw.winograd.program.Phase`): the units it runs,
    their tiles and buffer halves."""
    return data.StructLayout({"stage": unsigned(stage_bits), "length": unsigned(length_bits),
                              "in_w": 1, "in_l": 1, "mult": 1, "out_w": 1, "out_l": 1, "pool": 1,
                              "in_ty": unsigned(tile_bits), "in_tx": unsigned(tile_bits),
                              "out_ty": unsigned(tile_bits), "out_tx": unsigned(tile_bits),
                              "in_buf": 1, "mult_buf": 1, "out_buf": 1, "arm": 1, "in_next": 1})


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
