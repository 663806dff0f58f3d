"""The requantizer: the integer contract for one channel per cycle, with one shared multiplier.

    relu:     y = clamp(((acc + bias) * m + (1 << (s - 1))) >> s, 0, act_max)
    raw:      score = acc + bias        (the last layer's class scores)

computed as ((p >> (s - 1)) + 1) >> 1 with p = (acc + bias) * m, which equals
(p + (1 << (s - 1))) >> s for floor shifts; the rounding add and the clamp work on the low
act_bits + 1 bits and two flags, so no stage has a long carry chain. Four registered stages
(add, multiply, shift, round + clamp),
no back-pressure: `o_valid` follows `i_valid` exactly `LATENCY` cycles later.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


def param_layout(*, bias_bits: int, mult_bits: int, shift_bits: int) -> data.StructLayout:
    """Per output channel requantization constants (one word of either engine's `params` memory)."""
    return data.StructLayout({"bias": signed(bias_bits), "mult": signed(mult_bits), "shift": unsigned(shift_bits)})


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
        # stage 3: arithmetic shift by s - 1 (a barrel shifter, no carry chain)
        v3, t3, x3 = Signal(), Signal(signed(self.p_bits)), Signal.like(x1)
        m.d.sync += [v3.eq(v2), t3.eq(p2 >> s2), x3.eq(x2)]
        # stage 4: round half up ((t + 1) >> 1) and clamp, on the low act_bits + 1 bits only:
        # t < 0 gives q <= 0; t >= 2**(act_bits + 1) gives q > act_max; otherwise q = (low + 1) >> 1
        a = self.act_bits
        negative = t3[-1]
        big = t3[a + 1:].any() & ~negative
        low = Signal(a + 2)
        m.d.comb += low.eq(t3[:a + 1] + 1)
        m.d.sync += [self.o_valid.eq(v3), self.o_score.eq(x3)]
        with m.If(negative):
            m.d.sync += self.o_act.eq(0)
        with m.Elif(big | low[-1]):
            m.d.sync += self.o_act.eq(act_max)
        with m.Else():
            m.d.sync += self.o_act.eq(low[1:a + 1])
        return m
