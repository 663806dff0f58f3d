"""Winograd F(2x2,3x3) transforms as adder networks: V = B^T d B (input) and Y = A^T M A (output).

B^T and A^T hold only 0 and +-1 (`terwin.winograd.matrices`), so each output is a sum and difference
of inputs: the networks below are generated from the matrices, with no multiplier. Each unit is one
registered stream stage (`i_stream` -> `o_stream`, one tile per beat, latency 1, full throughput):
`valid` never waits on `ready`, and a beat is taken when the output register is empty or being read.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from terwin import winograd
from terwin.intmath import signed_bits

from .layouts import tile_layout


def _signed_sum(terms):
    """Sum of (coefficient, value) pairs with coefficients in {-1, +1}, as adders/subtractors."""
    acc = None
    for coef, value in terms:
        if acc is None:
            acc = value if coef > 0 else -value
        else:
            acc = acc + value if coef > 0 else acc - value
    return acc


def sandwich(mat: np.ndarray, tile) -> list[list]:
    """mat @ tile @ mat.T with adders only: tile is an indexable n x n of Amaranth values."""
    mat = np.asarray(mat)
    if not np.isin(mat, (-1, 0, 1)).all():
        raise ValueError("a transform matrix for an adder network must hold only 0 and +-1")
    rows, n = mat.shape
    # first pass: T = mat @ tile   (rows x n)
    t = [[_signed_sum([(mat[i, k], tile[k][j]) for k in range(n) if mat[i, k]]) for j in range(n)]
         for i in range(rows)]
    # second pass: out = T @ mat.T  (rows x rows)
    return [[_signed_sum([(mat[l, k], t[i][k]) for k in range(n) if mat[l, k]]) for l in range(rows)]
            for i in range(rows)]


def transform_gain(mat: np.ndarray) -> int:
    """max |(mat X mat^T)_il| / max |X|: the growth of the sandwich transform."""
    return int(np.abs(np.asarray(mat)).sum(axis=1).max()) ** 2


class _SandwichStage(wiring.Component):
    def __init__(self, mat, *, in_shape, out_shape):
        self._mat = np.asarray(mat)
        rows, n = self._mat.shape
        self.in_shape, self.out_shape = in_shape, out_shape
        super().__init__({
            "i_stream": In(stream.Signature(tile_layout(in_shape, n))),
            "o_stream": Out(stream.Signature(tile_layout(out_shape, rows))),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self._mat.shape[0]
        take = self.i_stream.valid & self.i_stream.ready
        m.d.comb += self.i_stream.ready.eq(~self.o_stream.valid | self.o_stream.ready)
        result = sandwich(self._mat, self.i_stream.payload)
        with m.If(take):
            m.d.sync += self.o_stream.valid.eq(1)
            for i in range(rows):
                for j in range(rows):
                    m.d.sync += self.o_stream.payload[i][j].eq(result[i][j])
        with m.Elif(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        return m


class InputTransform(_SandwichStage):
    """V = B^T d B on a 4x4 tile of unsigned `act_bits` activations; V is signed `v_bits`."""

    def __init__(self, *, act_bits: int, m: int = 2):
        bt, _, _ = winograd.matrices(m, 3)
        bound = transform_gain(bt) * ((1 << act_bits) - 1)
        self.v_bits = signed_bits(-bound, bound)
        super().__init__(bt, in_shape=unsigned(act_bits), out_shape=signed(self.v_bits))


class OutputTransform(_SandwichStage):
    """Y = A^T M A: a 4x4 tile of signed `acc_bits` sums -> the 2x2 output tile, signed `y_bits`."""

    def __init__(self, *, acc_bits: int, y_bits: int | None = None, m: int = 2):
        _, _, at = winograd.matrices(m, 3)
        if y_bits is None:
            bound = transform_gain(at) * (1 << (acc_bits - 1))
            y_bits = signed_bits(-bound, bound)
        self.y_bits = y_bits
        super().__init__(at, in_shape=signed(acc_bits), out_shape=signed(y_bits))
