"""The requantizer: the integer contract for one channel per cycle, with one shared multiplier.

    relu:     y = clamp(((acc + bias) * m + (1 << (s - 1))) >> s, 0, act_max)
    raw:      score = acc + bias        (the last layer's class scores)

computed as ((p >> (s - 1)) + 1) >> 1 with p = (acc + bias) * m, which equals
(p + (1 << (s - 1))) >> s for floor shifts; the rounding add and the clamp work on the low
act_bits + 1 bits and two flags, so no stage has a long carry chain. Four registered stages
(add, multiply, shift, round + clamp),
no back-pressure: `o_valid` follows `i_valid` exactly `LATENCY` cycles later. Only the valid bits and
the outputs take the domain's reset: the data registers start from their init value at configuration
and are always written before they are read (a reset net to thousands of flip-flops across the die
was the critical path of the ECP5's pe32x32 design).

Options (the hardware for each exists only when asked for):

* `logic_multiplier`: p = (acc + bias) * m without a DSP: p = acc * m + bias * m, with bias * m a
  per-channel constant the program stores (`i_bias_mult`), as a carry-save sum of the partial products
  acc * m_i * 2^i (two's complement: the top bit's row negated, ~row + 1) in 3:2 compressors (no carry
  chain), reduced to six rows in stage 1 and to two in stage 2, then added: the same four stages, the
  same latency, about 2 LUTs a bit of each compressor instead of two MULT18X18D on the ECP5;

* `residual_bits`, `res_mult_bits`: a residual connection, p = (acc + bias) * m + r * m_r: r * m_r
  is multiplied beside (acc + bias) * m and added in a stage of its own (`latency` = 5);
* `signed_out`: `i_signed` high clamps to the signed range -2^(act_bits-1) .. 2^(act_bits-1) - 1
  (a signed map), `o_act` then holding the value in act_bits two's complement.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


def param_layout(*, bias_bits: int, mult_bits: int, shift_bits: int,
                 res_mult_bits: int | None = None, bias_mult: bool = False) -> data.StructLayout:
    """Per output channel requantization constants (one word of either engine's `params` memory);
    with `res_mult_bits`, also the residual multiplier m_r (a program with residual connections);
    with `bias_mult`, also bias * m (the logic multiplier's constant term)."""
    fields = {"bias": signed(bias_bits), "mult": signed(mult_bits), "shift": unsigned(shift_bits)}
    if res_mult_bits is not None:
        fields["res_mult"] = signed(res_mult_bits)
    if bias_mult:
        fields["bias_mult"] = signed(bias_mult_bits(bias_bits=bias_bits, mult_bits=mult_bits))
    return data.StructLayout(fields)


class Requantizer(wiring.Component):
    LATENCY = 4
    RESIDUAL_LATENCY = 5

    def __init__(self, *, act_bits: int, acc_bits: int, bias_bits: int, mult_bits: int, shift_bits: int,
                 residual_bits: int | None = None, res_mult_bits: int | None = None, signed_out: bool = False,
                 logic_multiplier: bool = False):
        if logic_multiplier and residual_bits is not None:
            raise ValueError("the logic multiplier has no residual product")
        self.act_bits = act_bits
        self.mult_bits = mult_bits
        self.logic_multiplier = logic_multiplier
        self.x_bits = max(acc_bits, bias_bits) + 1
        self.p_bits = self.x_bits + mult_bits
        self.score_bits = self.x_bits
        self.residual = residual_bits is not None
        self.signed_out = signed_out
        self.latency = self.RESIDUAL_LATENCY if self.residual else self.LATENCY
        # the shifted sum: (acc + bias) * m, plus r * m_r with a residual
        self.t_bits = max(self.p_bits, residual_bits + res_mult_bits) + 1 if self.residual else self.p_bits
        ports = {
            "i_valid": In(1),
            "i_acc": In(signed(acc_bits)),
            "i_bias": In(signed(bias_bits)),
            "i_mult": In(signed(mult_bits)),
            "i_shift": In(unsigned(shift_bits)),
            "o_valid": Out(1),
            "o_act": Out(unsigned(act_bits)),
            "o_score": Out(signed(self.x_bits)),
        }
        if self.residual:
            ports.update({"i_residual": In(signed(residual_bits)), "i_res_mult": In(signed(res_mult_bits))})
        if signed_out:
            ports["i_signed"] = In(1)
        if logic_multiplier:
            ports["i_bias_mult"] = In(signed(bias_mult_bits(bias_bits=bias_bits, mult_bits=mult_bits)))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        act_max = (1 << self.act_bits) - 1
        # stage 1: x = acc + bias
        v1, x1 = Signal(), Signal(signed(self.x_bits), reset_less=True)
        m1, s1 = Signal.like(self.i_mult, reset_less=True), Signal.like(self.i_shift, reset_less=True)
        m.d.sync += [v1.eq(self.i_valid), x1.eq(self.i_acc + self.i_bias), m1.eq(self.i_mult), s1.eq(self.i_shift - 1)]  # s >= 1
        # stage 2: p = x * m (the one multiplier)
        v2, p2, x2 = Signal(), Signal(signed(self.p_bits), reset_less=True), Signal.like(x1)
        s2 = Signal.like(s1)
        m.d.sync += [v2.eq(v1), x2.eq(x1), s2.eq(s1)]
        if self.logic_multiplier:
            m.d.sync += p2.eq(self._carry_save_product(m))
        else:
            m.d.sync += p2.eq(x1 * m1)
        if self.residual:   # r * m_r beside it, then the sum in a stage of its own
            v2, p2, x2, s2 = self._residual(m, v2, p2, x2, s2)
        # stage 3: arithmetic shift by s - 1 (a barrel shifter, no carry chain)
        v3, t3, x3 = Signal(), Signal(signed(self.t_bits), reset_less=True), Signal.like(x1)
        m.d.sync += [v3.eq(v2), t3.eq(p2 >> s2), x3.eq(x2)]
        # stage 4: round half up ((t + 1) >> 1) and clamp, on the low act_bits + 1 bits only:
        # t < 0 gives q <= 0; t >= 2**(act_bits + 1) gives q > act_max; otherwise q = (low + 1) >> 1
        a = self.act_bits
        negative = t3[-1]
        big = t3[a + 1:].any() & ~negative
        low = Signal(a + 2)
        m.d.comb += low.eq(t3[:a + 1] + 1)
        m.d.sync += [self.o_valid.eq(v3), self.o_score.eq(x3)]

        def unsigned_clamp():
            with m.If(negative):
                m.d.sync += self.o_act.eq(0)
            with m.Elif(big | low[-1]):
                m.d.sync += self.o_act.eq(act_max)
            with m.Else():
                m.d.sync += self.o_act.eq(low[1:a + 1])

        if self.signed_out:
            with m.If(self._delayed_flag(m)):
                self._signed_clamp(m, t3)
            with m.Else():
                unsigned_clamp()
        else:
            unsigned_clamp()
        return m

    def _carry_save_product(self, m):
        """acc * m + bias * m (= p, exact in p_bits two's complement) from stage 1's registers: the rows
        reduced by 3:2 compressors to six in stage 1 (registered) and to two in stage 2, whose sum
        this returns (stage 2's one carry chain)."""
        width = self.p_bits
        ext, bias_mult = Signal(width), Signal(width)            # acc and bias * m, sign-extended to p_bits
        m.d.comb += [ext.eq(self.i_acc), bias_mult.eq(self.i_bias_mult)]
        mult = self.i_mult
        top = self.mult_bits - 1
        rows = [Mux(mult[i], (ext << i)[:width], 0) for i in range(top)]
        rows.append(Mux(mult[top], ~(ext << top)[:width], 0))    # -acc * 2^top = ~(acc * 2^top) + 1 ...
        rows += [mult[top], bias_mult]                            # ... the + 1, and bias * m
        rows = carry_save(rows, width, until=6)
        held = [Signal(width, name=f"csa{n}", reset_less=True) for n in range(len(rows))]
        m.d.sync += [h.eq(r) for h, r in zip(held, rows)]
        a, b = carry_save(held, width, until=2)
        return (a + b)[:width].as_signed()

    def _residual(self, m, v2, p2, x2, s2):
        """Stage 1's r and m_r registers, r * m_r in stage 2, and stage 2b: p + r * m_r."""
        r1, mr1 = Signal.like(self.i_residual, reset_less=True), Signal.like(self.i_res_mult, reset_less=True)
        m.d.sync += [r1.eq(self.i_residual), mr1.eq(self.i_res_mult)]
        q2 = Signal(signed(len(r1) + len(mr1)), reset_less=True)
        m.d.sync += q2.eq(r1 * mr1)
        vs, ps, xs, ss = Signal(), Signal(signed(self.t_bits), reset_less=True), Signal.like(x2), Signal.like(s2)
        m.d.sync += [vs.eq(v2), ps.eq(p2 + q2), xs.eq(x2), ss.eq(s2)]
        return vs, ps, xs, ss

    def _delayed_flag(self, m):
        """`i_signed`, delayed to stage 4 (it is used there)."""
        flag = self.i_signed
        for i in range(self.latency - 1):
            reg = Signal(name=f"signed{i + 1}")
            m.d.sync += reg.eq(flag)
            flag = reg
        return flag

    def _signed_clamp(self, m, t):
        """q = (t + 1) >> 1 clamped to -2^(a-1) .. 2^(a-1) - 1: t fits in a + 1 signed bits (the bits from
        a up all equal) or saturates by its sign; within, only t = 2^a - 1 rounds past the top."""
        a = self.act_bits
        high = t[a:]
        fits = high.all() | ~high.any()
        low = Signal(signed(a + 2))
        m.d.comb += low.eq(t[:a + 1].as_signed() + 1)
        with m.If(~fits & t[-1]):
            m.d.sync += self.o_act.eq(1 << (a - 1))                  # -2^(a-1)
        with m.Elif(~fits | (low[a] & ~low[a + 1])):
            m.d.sync += self.o_act.eq((1 << (a - 1)) - 1)            # 2^(a-1) - 1
        with m.Else():
            m.d.sync += self.o_act.eq(low[1:a + 1])


def bias_mult_bits(*, bias_bits: int, mult_bits: int) -> int:
    """Width of the constant bias * m the logic multiplier adds (signed)."""
    return bias_bits + mult_bits


def carry_save(rows, width: int, *, until: int) -> list:
    """Reduce `rows` (values summed modulo 2^width) with 3:2 compressors (sum a ^ b ^ c, carry
    majority(a, b, c) one place up: no carry chain) until at most `until` rows remain."""
    rows = [Value.cast(r) for r in rows]
    while len(rows) > until:
        out = []
        for i in range(0, len(rows) - 2, 3):
            a, b, c = (r.as_unsigned() for r in rows[i:i + 3])
            out.append((a ^ b ^ c)[:width])
            out.append(Cat(Const(0, 1), ((a & b) | (a & c) | (b & c)))[:width])
        out.extend(rows[len(rows) - len(rows) % 3:])
        rows = out
    return rows
