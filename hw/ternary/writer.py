"""Requantize and write: a channel's sum -> its activation (or score) -> the next stage's buffer."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..common.control import delayed
from ..common.requant import Requantizer
from . import layouts
from .memories import bank_port, score_port
from .program import PARAM_READ_LATENCY, REQUANT_LATENCY

assert PARAM_READ_LATENCY == 1 and REQUANT_LATENCY == Requantizer.LATENCY


class RequantWriter(wiring.Component):
    """The requantizer with its constants, the fused max-pool and the writes of a stage's outputs.

    * `channel_index` (in): the channel `Accumulators` drains now: its constants are read
      (`params` memory, at the stage's base + channel) and arrive with `channel_*` a cycle later;
    * `channel_valid`, `channel_acc`, `channel` (in): a channel's sum and where it goes;
    * `k` (in): stage constants; `enable` (in): writes allowed (not while an image loads);
    * `bank_write[b]` (out): a pooled activation to the next stage's region (in the channel's bank
      when banked, in every bank when replicated); `score_write` (out): the last stage's outputs
      (raw scores acc + bias, or its activations when it ends in a ReLU);
    * `stage_done` (out): the stage's last channel comes out of the requantizer.

    The max-pool: every job emits its pe_rows channels in order, so a rotating register of running
    maxima (one per channel of the group) always has the current channel's at its head; the maximum
    is written at the last position of the pool window.
    """

    def __init__(self, program, *, constants):
        self._program = program
        spec = program.spec
        channel = layouts.channel_layout(program)
        super().__init__({
            "k": In(constants),
            "enable": In(1),
            "channel_index": In(channel["channel"].shape),
            "channel_valid": In(1),
            "channel_acc": In(signed(program.acc_bits)),
            "channel": In(channel),
            "bank_write": In(bank_port(program)).array(spec.pe_cols),
            "score_write": In(score_port(program)),
            "stage_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, k = self._program, self.k
        spec = p.spec
        rows, cols = spec.pe_rows, spec.pe_cols
        m.submodules.params = params = p.memory("params").memory()
        param = params.read_port()
        m.d.comb += [param.addr.eq(k.param_base + self.channel_index), param.en.eq(1)]
        m.submodules.requant = rq = Requantizer(act_bits=spec.act_bits, acc_bits=p.acc_bits, bias_bits=p.bias_bits,
                                                mult_bits=p.mult_bits, shift_bits=p.shift_bits)
        m.d.comb += [rq.i_valid.eq(self.channel_valid), rq.i_acc.eq(self.channel_acc), rq.i_bias.eq(param.data.bias),
                     rq.i_mult.eq(param.data.mult), rq.i_shift.eq(param.data.shift)]
        out = delayed(m, self.channel, Requantizer.LATENCY, name="requant_channel")   # beside rq.o_*

        maxima = [Signal(spec.act_bits, name=f"pool_max{r}") for r in range(rows)]
        pooled = Signal(spec.act_bits)
        m.d.comb += pooled.eq(Mux(out.window_first | (rq.o_act > maxima[0]), rq.o_act, maxima[0]))
        with m.If(rq.o_valid):
            m.d.sync += [maxima[r].eq(maxima[r + 1]) for r in range(rows - 1)] + [maxima[rows - 1].eq(pooled)]
        m.d.comb += self.stage_done.eq(rq.o_valid & out.stage_last)

        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.out_base + out.address + out.pixel)
        with m.If(rq.o_valid & out.window_last & (out.channel < k.out_channels) & self.enable):
            with m.If(k.to_scores):
                # raw class scores (acc + bias), or, when the last layer ends in a ReLU (and maybe a
                # pool), its requantized and pooled activations, as the reference computes them
                score = pooled if p.stages[-1].relu else rq.o_score
                w = self.score_write
                m.d.comb += [w.en.eq(1), w.addr.eq(out.address + out.pixel), w.data.eq(score)]
            with m.Else():
                for b, w in enumerate(self.bank_write):
                    m.d.comb += [w.addr.eq(address[:p.addr_bits]), w.data.eq(pooled)]
                    with m.If(~k.banked_out | ((out.channel & (cols - 1)) == b)):
                        m.d.comb += w.en.eq(1)
        return m
