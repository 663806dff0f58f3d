"""`ThresholdRequantizer`: the requantizer without a multiplier (a two-level threshold search).

The same contract, ports and latency as `Requantizer` (unsigned ReLU outputs and raw scores
acc + bias), so a writer swaps one for the other: y = #{k : a >= T_k}, a = acc or ~acc (the channel's
direction bit), with the exact integer thresholds of `requant_tables`. Two more inputs carry the
channel's tables: `i_coarse` (its direction bit, its 2^hb - 1 coarse thresholds, T_1 and T_{2^b-1},
read with the channel's constants, like `i_bias`) and `i_channel` (its index: the fine table's row is
(channel, h)); the fine table (`MemoryImage` `fine`: a word per (channel, h), the segment's 2^lb - 1
thresholds' low bits, or a list of its parts by h's top bits, each read at (channel, h's low bits))
is a ROM inside the component. `i_mult` and `i_shift` are accepted and unused
(the thresholds hold them). Four registered stages, no back-pressure, no multiplier:

1. a = acc or ~acc (a NOT: no carry chain); the coarse comparisons a >= T, and a >= T_1,
   a >= T_{2^b-1}, in parallel -> flags; acc + bias (the score) beside them;
2. h = the number of coarse flags set (a thermometer code: the thresholds rise) -> the fine table's
   address {channel, h} (a concatenation, no adder);
3. the fine table's word (each part's) -> a register (a memory output straight into a register);
4. the part h's top bits select; the fine comparisons on the low bits (the top bit of (a - T) mod 2^(w + 1), exact in the window
   `requant_tables.windows` guarantees) -> l; y = 0 below T_1, 2^b - 1 from T_{2^b-1}, else
   h * 2^lb + l -> `o_act`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .requant_tables import split, threshold_bits


def coarse_layout(*, act_bits: int, acc_bits: int) -> data.StructLayout:
    """One word of the coarse table: the channel's direction (1: compare ~acc, m < 0), its 2^hb - 1
    coarse thresholds, T_1 (`first`) and T_{2^b-1} (`last`), full width."""
    hb, _ = split(act_bits)
    t = signed(threshold_bits(acc_bits))
    return data.StructLayout({"dir": unsigned(1), "t": data.ArrayLayout(t, (1 << hb) - 1), "first": t, "last": t})


def fine_layout(*, act_bits: int, low_bits: int) -> data.ArrayLayout:
    """One word of the fine table: the low `low_bits` bits of the 2^lb - 1 thresholds of one segment h
    of one channel."""
    _, lb = split(act_bits)
    return data.ArrayLayout(unsigned(low_bits), (1 << lb) - 1)


def thermometer(flags: list):
    """The number of set flags of a thermometer code of 2^k - 1 flags (flags[i] implies flags[j] for
    j < i), as k bits: the middle flag is the top bit, then the same on the half it selects (k levels
    of 2:1 multiplexers, no adder)."""
    n = len(flags)
    assert (n + 1) & n == 0, "2^k - 1 flags"
    if n == 0:
        return Cat()
    mid = n // 2
    top = flags[mid]
    rest = [Mux(top, hi, lo) for lo, hi in zip(flags[:mid], flags[mid + 1:])]
    return Cat(thermometer(rest), top)


class ThresholdRequantizer(wiring.Component):
    LATENCY = 4

    def __init__(self, *, act_bits: int, acc_bits: int, bias_bits: int, mult_bits: int, shift_bits: int,
                 channel_bits: int, fine):
        self.act_bits, self.acc_bits = act_bits, acc_bits
        self.hb, self.lb = split(act_bits)
        self.x_bits = max(acc_bits, bias_bits) + 1
        self.score_bits = self.x_bits
        self.latency = self.LATENCY
        # the fine table: one MemoryImage, or its parts by h's top bits (a power of two of them)
        self._fine = list(fine) if isinstance(fine, (list, tuple)) else [fine]
        parts = len(self._fine)
        assert parts & (parts - 1) == 0 and parts <= (1 << self.hb)
        self.part_bits = parts.bit_length() - 1
        assert all(f.depth <= (1 << (channel_bits + self.hb - self.part_bits)) for f in self._fine), \
            "a part's rows are (channel, h's low bits)"
        super().__init__({
            "i_valid": In(1),
            "i_acc": In(signed(acc_bits)),
            "i_bias": In(signed(bias_bits)),
            "i_mult": In(signed(mult_bits)),
            "i_shift": In(unsigned(shift_bits)),
            "i_coarse": In(coarse_layout(act_bits=act_bits, acc_bits=acc_bits)),
            "i_channel": In(unsigned(channel_bits)),
            "o_valid": Out(1),
            "o_act": Out(unsigned(act_bits)),
            "o_score": Out(signed(self.x_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        hb, lb = self.hb, self.lb
        low_bits = Shape.cast(self._fine[0].shape.elem_shape).width     # the fine thresholds' low bits
        ports = []
        for n, image in enumerate(self._fine):
            m.submodules[f"fine{n}"] = fine = image.memory()
            ports.append(fine.read_port())
        in_part = hb - self.part_bits         # h's low bits: the row within a part
        coarse = self.i_coarse
        # stage 1: a = acc or ~acc, the full-width comparisons; the score's adder beside them
        a = Signal(signed(self.acc_bits))
        m.d.comb += a.eq(self.i_acc ^ coarse.dir.replicate(self.acc_bits))
        # a's low bits (sign-extended when the fine thresholds keep more bits than a has)
        v1, a1, c1, z1, u1 = Signal(), Signal(low_bits), Signal((1 << hb) - 1), Signal(), Signal()
        ch1, x1 = Signal.like(self.i_channel), Signal(signed(self.x_bits))
        m.d.sync += [v1.eq(self.i_valid), a1.eq(a), ch1.eq(self.i_channel),
                     x1.eq(self.i_acc + self.i_bias),
                     c1.eq(Cat(a >= coarse.t[j] for j in range((1 << hb) - 1))),
                     z1.eq(a >= coarse.first), u1.eq(a >= coarse.last)]
        # stage 2: h from the coarse flags -> the fine table's address {channel, h}
        h = Signal(hb)
        m.d.comb += h.eq(thermometer([c1[j] for j in range(len(c1))]))
        for port in ports:
            m.d.comb += [port.addr.eq(Cat(h[:in_part], ch1)), port.en.eq(1)]
        v2, a2, h2, z2, u2, x2 = Signal(), Signal.like(a1), Signal(hb), Signal(), Signal(), Signal.like(x1)
        m.d.sync += [v2.eq(v1), a2.eq(a1), h2.eq(h), z2.eq(z1), u2.eq(u1), x2.eq(x1)]
        # stage 3: each part's word into a register (block RAM -> flip-flops, no logic between)
        rows = [Signal.like(port.data, name=f"row{n}") for n, port in enumerate(ports)]
        v3, a3, h3, z3, u3, x3 = Signal(), Signal.like(a1), Signal(hb), Signal(), Signal(), Signal.like(x1)
        m.d.sync += [*(r.eq(port.data) for r, port in zip(rows, ports)),
                     v3.eq(v2), a3.eq(a2), h3.eq(h2), z3.eq(z2), u3.eq(u2), x3.eq(x2)]
        row = rows[0]
        if len(rows) > 1:                     # the part of h's top bits
            row = Signal.like(rows[0], name="row")
            with m.Switch(h3[in_part:]):
                for n, r in enumerate(rows):
                    with m.Case(n):
                        m.d.comb += row.eq(r)
        # stage 4: the fine comparisons modulo 2^low_bits (a >= T: the difference's top bit clear), y
        flags = []
        for i in range((1 << lb) - 1):
            d = Signal(low_bits, name=f"fine_diff{i}")
            m.d.comb += d.eq(a3 - row[i])
            flags.append(~d[-1])
        y = Signal(self.act_bits)
        with m.If(~z3):
            m.d.comb += y.eq(0)
        with m.Elif(u3):
            m.d.comb += y.eq((1 << self.act_bits) - 1)
        with m.Else():
            m.d.comb += y.eq(Cat(thermometer(flags), h3))
        m.d.sync += [self.o_valid.eq(v3), self.o_act.eq(y), self.o_score.eq(x3)]
        return m


__all__ = ["ThresholdRequantizer", "coarse_layout", "fine_layout", "thermometer"]
