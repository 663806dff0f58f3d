"""The requantizer: the integer contract for one channel per cycle, with one shared multiplier.

    relu:     y = clamp(((acc + bias) * m + (1 << (s - 1))) >> s, 0, act_max)
    raw:      score = acc + bias        (the last layer's class scores)

computed as ((p >> (s - 1)) + 1) >> 1 with p = (acc + bias) * m, which equals
(p + (1 << (s - 1))) >> s for floor shifts. Four registered stages (add, multiply, shift, clamp),
no back-pressure: `o_valid` follows `i_valid` exactly `LATENCY` cycles later.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


class Requantizer(wiring.Component):
    LATENCY = 4

    def __init__(self, *, act_bits: int, acc_bits: int, bias_bits: int, mult_bits: int, shift_bits: int):
        self.act_bits = act_bits
        self.x_bits = max(acc_bits, bias_bits) + 1
        self.p_bits = self.x_bits + mult_bits
        self.score_bits = self.x_bits
        super().__init__({
            "i_valid": In(1),
            "i_acc": In(signed(acc_bits)),
            "i_bias": In(signed(bias_bits)),
            "i_mult": In(signed(mult_bits)),
            "i_shift": In(unsigned(shift_bits)),
            "o_valid": Out(1),
            "o_act": Out(unsigned(act_bits)),
            "o_score": Out(signed(self.x_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        act_max = (1 << self.act_bits) - 1
        # stage 1: x = acc + bias
        v1, x1 = Signal(), Signal(signed(self.x_bits))
        m1, s1 = Signal.like(self.i_mult), Signal.like(self.i_shift)
        m.d.sync += [v1.eq(self.i_valid), x1.eq(self.i_acc + self.i_bias), m1.eq(self.i_mult), s1.eq(self.i_shift - 1)]  # s >= 1
        # stage 2: p = x * m (the one multiplier)
        v2, p2, x2 = Signal(), Signal(signed(self.p_bits)), Signal.like(x1)
        s2 = Signal.like(s1)
        m.d.sync += [v2.eq(v1), p2.eq(x1 * m1), x2.eq(x1), s2.eq(s1)]
        # stage 3: round half up and arithmetic shift
        v3, q3, x3 = Signal(), Signal(signed(self.p_bits + 1)), Signal.like(x1)
        half = Signal(signed(self.p_bits + 1))
        m.d.comb += half.eq((p2 >> s2) + 1)
        m.d.sync += [v3.eq(v2), q3.eq(half >> 1), x3.eq(x2)]
        # stage 4: clamp
        m.d.sync += [self.o_valid.eq(v3), self.o_score.eq(x3)]
        with m.If(q3 < 0):
            m.d.sync += self.o_act.eq(0)
        with m.Elif(q3 > act_max):
            m.d.sync += self.o_act.eq(act_max)
        with m.Else():
            m.d.sync += self.o_act.eq(q3)
        return m
