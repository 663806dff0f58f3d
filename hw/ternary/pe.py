"""The ternary PE array: `pe_rows` rows of `pe_cols` lanes that add, subtract or skip an activation.

All rows see the same `pe_cols` activations (one tile per cycle); row r sums its lanes through a
registered adder tree. Latency: `1 + log2(pe_cols)` cycles (products, then one register per
tree level). No enable and no reset: it moves every cycle (the accelerator never stalls it; what
it holds counts only with a valid tile beside it, which is reset), so its thousands of registers
share no control net. (With a reset, Yosys merges "product = 0" into the flip-flops' synchronous
reset, and the board's power-on reset then reaches them through a LUT: the critical path of both
reference builds until these registers lost theirs.) A product is zeroed by masking its bits, not by
assigning 0: Yosys maps "p = 0 when the code is zero" to the flip-flops' synchronous reset, one
control set (reset net) per product of act_bits + 1 flip-flops; an iCE40 logic tile (8 cells) holds
one control set, so pe8x8's 64 sets of 9 filled 128 tiles half empty, and nextpnr's placer found no
legal placement of ternary-50 at 40.5 MHz (170 control sets; masked: 42, 122 fewer logic cells).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .program import pe_latency


def pe_sum_bits(spec) -> int:
    """Signed width of one row's tile sum: |sum| <= pe_cols * act_max."""
    return spec.accumulator_bits(fan_in=spec.pe_cols, weight_max=1)


class TernaryPEArray(wiring.Component):
    def __init__(self, spec):
        self._spec = spec
        self.latency = pe_latency(spec)
        super().__init__({
            "acts": In(layouts.lanes_layout(spec, spec.act_bits)),
            "codes": In(layouts.tile_codes_layout(spec)),
            "sums": Out(data.ArrayLayout(signed(pe_sum_bits(spec)), spec.pe_rows)),
        })

    def elaborate(self, platform):
        m = Module()
        spec = self._spec
        width = pe_sum_bits(spec)
        for r in range(spec.pe_rows):
            level = []
            for lane in range(spec.pe_cols):
                code = self.codes[r][lane]
                a = self.acts[lane]
                p = Signal(signed(spec.act_bits + 1), name=f"prod_r{r}_l{lane}", reset_less=True)
                # zero by masking (an AND in the LUT), not "p = 0" (a mux Yosys maps to the flip-flops'
                # synchronous reset: one control set per product, 9 flip-flops each)
                keep = code.nonzero.replicate(spec.act_bits + 1)
                m.d.sync += p.eq(Mux(code.negative, -a, a).as_unsigned() & keep)
                level.append(p)
            depth = 0
            while len(level) > 1:
                depth += 1
                nxt = []
                for i in range(0, len(level), 2):
                    s = Signal(signed(min(width, spec.act_bits + 1 + depth)), name=f"sum_r{r}_d{depth}_{i // 2}",
                               reset_less=True)
                    m.d.sync += s.eq(level[i] + level[i + 1])
                    nxt.append(s)
                level = nxt
            m.d.comb += self.sums[r].eq(level[0])
        return m
