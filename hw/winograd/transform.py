"""Winograd F(2x2,3x3) transforms as adder networks: V = B^T d B (input) and Y = A^T M A (output).

B^T and A^T hold only 0 and +-1 (`terwin.winograd.matrices`), so each output is a sum and difference
of inputs: the networks below are generated from the matrices, with no multiplier. Each unit is a
stream pipeline of two registered stages, one per pass of the sandwich (the first pass `mat @ tile`
is registered, then the second `... @ mat.T`), so no path holds more than one pass of adders
(`i_stream` -> `o_stream`, one tile per beat, `LATENCY` 2, full throughput): a stage takes a beat
when it is empty or its beat moves on in the same cycle.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Shape, Signal, signed, unsigned
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


def _check(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat)
    if not np.isin(mat, (-1, 0, 1)).all():
        raise ValueError("a transform matrix for an adder network must hold only 0 and +-1")
    return mat


def first_pass(mat: np.ndarray, tile) -> list[list]:
    """T = mat @ tile (rows x n) with adders only: tile is an indexable n x n of Amaranth values."""
    mat = _check(mat)
    rows, n = mat.shape
    return [[_signed_sum([(mat[i, k], tile[k][j]) for k in range(n) if mat[i, k]]) for j in range(n)]
            for i in range(rows)]


def second_pass(mat: np.ndarray, t) -> list[list]:
    """T @ mat.T (rows x rows) with adders only."""
    mat = _check(mat)
    rows, n = mat.shape
    return [[_signed_sum([(mat[l, k], t[i][k]) for k in range(n) if mat[l, k]]) for l in range(rows)]
            for i in range(rows)]


def sandwich(mat: np.ndarray, tile) -> list[list]:
    """mat @ tile @ mat.T with adders only: tile is an indexable n x n of Amaranth values."""
    return second_pass(mat, first_pass(mat, tile))


def transform_gain(mat: np.ndarray) -> int:
    """max |(mat X mat^T)_il| / max |X|: the growth of the sandwich transform."""
    return int(np.abs(np.asarray(mat)).sum(axis=1).max()) ** 2


class _SandwichStage(wiring.Component):
    LATENCY = 2

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
        mat = self._mat
        rows, n = mat.shape
        # stage 1: the first pass, T = mat @ tile, with a width that holds its extremes
        gain = int(np.abs(mat).sum(axis=1).max())
        lo, hi = _shape_range(self.in_shape)
        t_shape = signed(signed_bits(-gain * max(abs(lo), abs(hi)), gain * max(abs(lo), abs(hi))))
        t = [[Signal(t_shape, name=f"t{i}_{j}") for j in range(n)] for i in range(rows)]
        t_valid = Signal()
        o = self.o_stream
        move = t_valid & (~o.valid | o.ready)          # stage 1's beat moves into the output register
        m.d.comb += self.i_stream.ready.eq(~t_valid | move)
        with m.If(move):
            m.d.sync += o.valid.eq(1)
            out = second_pass(mat, t)
            for i in range(rows):
                for j in range(rows):
                    m.d.sync += o.payload[i][j].eq(out[i][j])
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += t_valid.eq(1)
            first = first_pass(mat, self.i_stream.payload)
            for i in range(rows):
                for j in range(n):
                    m.d.sync += t[i][j].eq(first[i][j])
        with m.Elif(move):
            m.d.sync += t_valid.eq(0)
        return m


def _shape_range(shape) -> tuple[int, int]:
    shape = Shape.cast(shape)
    if shape.signed:
        return -(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1
    return 0, (1 << shape.width) - 1


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
