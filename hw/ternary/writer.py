"""Requantize and write: a channel's sum -> its activation (or score) -> the next stage's buffer."""
from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from terwin.intmath import signed_bits, unsigned_bits

from ..common.control import delayed
from ..common.requant import Requantizer
from . import layouts
from .memories import bank_port, score_port
from .program import AVERAGE_LATENCY, PARAM_READ_LATENCY, REQUANT_LATENCY, RESIDUAL_ADD_LATENCY, RESIDUAL_READ_LATENCY

assert PARAM_READ_LATENCY == 1 and REQUANT_LATENCY == Requantizer.LATENCY and AVERAGE_LATENCY == Requantizer.LATENCY
assert RESIDUAL_READ_LATENCY == 1 and REQUANT_LATENCY + RESIDUAL_ADD_LATENCY == Requantizer.RESIDUAL_LATENCY


class RequantWriter(wiring.Component):
    """The requantizer with its constants, the fused pool and the writes of a stage's outputs.

    * `channel_index` (in): the channel `Accumulators` drains now: its constants are read
      (`params` memory, at the stage's base + channel) and arrive with `channel_*` a cycle later;
    * `channel_valid`, `channel_acc`, `channel` (in): a channel's sum and where it goes;
    * `k` (in): stage constants; `enable` (in): writes allowed (not while an image loads);
    * `residual_read[b]` (out; only in a program with residual connections): the reads of the
      residual map r at the channel's (c, y, x) of the conv output, from bank c % pe_cols (banked) or
      bank 0 (replicated); the channel's other operands wait a cycle in registers for r, which is
      sign-extended when the map is signed and enters the requantizer as r * m_r (m_r in `params`);
    * `bank_write[b]` (out): a pooled activation to the next stage's region (in the channel's bank
      when banked, in every bank when replicated); `score_write` (out): the last stage's outputs
      (raw scores acc + bias, or its activations when it ends in a ReLU);
    * `stage_done` (out): the stage's last channel is written.

    The pools: every job emits its pe_rows channels in order, so a rotating register (one entry per
    channel of the group) always has the current channel's running maximum, or sum, at its head. A
    max-pool writes the maximum at the last position of the window; an average pool sends the sum
    through a second requantizer, clamp((sum * m + 2^(s-1)) >> s, 0, act_max), and writes its output
    `AVERAGE_LATENCY` cycles later.
    """

    def __init__(self, program, *, constants):
        self._program = program
        spec = program.spec
        channel = layouts.channel_layout(program)
        ports = {
            "k": In(constants),
            "enable": In(1),
            "channel_index": In(channel["channel"].shape),
            "channel_valid": In(1),
            "channel_acc": In(signed(program.acc_bits)),
            "channel": In(channel),
            "bank_write": In(bank_port(program)).array(spec.pe_cols),
            "score_write": In(score_port(program)),
            "stage_done": Out(1),
        }
        if program.has_residual:
            ports["residual_read"] = In(bank_port(program, ReadPort)).array(spec.pe_cols)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        p, k = self._program, self.k
        spec = p.spec
        rows, cols = spec.pe_rows, spec.pe_cols
        m.submodules.params = params = p.memory("params").memory()
        param = params.read_port()
        m.d.comb += [param.addr.eq(k.param_base + self.channel_index), param.en.eq(1)]
        options = dict(residual_bits=spec.act_bits + 1, res_mult_bits=p.res_mult_bits) if p.has_residual else {}
        m.submodules.requant = rq = Requantizer(act_bits=spec.act_bits, acc_bits=p.acc_bits, bias_bits=p.bias_bits,
                                                mult_bits=p.mult_bits, shift_bits=p.shift_bits,
                                                signed_out=p.has_signed, **options)
        valid, acc, channel, constants = self.channel_valid, self.channel_acc, self.channel, param.data
        if p.has_residual:
            valid, acc, channel, constants = self._residual(m, rq, constants)
        m.d.comb += [rq.i_valid.eq(valid), rq.i_acc.eq(acc), rq.i_bias.eq(constants.bias),
                     rq.i_mult.eq(constants.mult), rq.i_shift.eq(constants.shift)]
        if p.has_signed:
            m.d.comb += rq.i_signed.eq(k.signed_out)
        out = delayed(m, channel, rq.latency, name="requant_channel")   # beside rq.o_*

        maxima = [Signal(spec.act_bits, name=f"pool_max{r}") for r in range(rows)]
        pooled = Signal(spec.act_bits)
        m.d.comb += pooled.eq(Mux(out.window_first | (rq.o_act > maxima[0]), rq.o_act, maxima[0]))
        with m.If(rq.o_valid):
            m.d.sync += [maxima[r].eq(maxima[r + 1]) for r in range(rows - 1)] + [maxima[rows - 1].eq(pooled)]
        if p.has_avgpool:
            write_valid, out, pooled, done = self._average(m, rq, out, pooled)
        else:
            write_valid = rq.o_valid & out.window_last
            done = rq.o_valid & out.stage_last
        m.d.comb += self.stage_done.eq(done)

        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.out_base + out.address + out.pixel)
        with m.If(write_valid & (out.channel < k.out_channels) & self.enable):
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

    def _residual(self, m, rq, constants):
        """Read r for the channel arriving now; its sum, constants and place wait a cycle in registers
        (they reach the requantizer with r). Returns the delayed (valid, acc, channel, constants)."""
        p, k, ch = self._program, self.k, self.channel
        cols = p.spec.pe_cols
        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.res_base + ch.res_address + ch.conv_pixel)
        for port in self.residual_read:
            m.d.comb += [port.addr.eq(address[:p.addr_bits]), port.en.eq(1)]
        valid, acc = Signal(name="res_wait_valid"), Signal.like(self.channel_acc, name="res_wait_acc")
        channel = Signal.like(ch, name="res_wait_channel")
        held = Signal.like(constants, name="res_wait_params")
        m.d.sync += [valid.eq(self.channel_valid), acc.eq(self.channel_acc), channel.eq(ch), held.eq(constants)]
        banks = Array(port.data for port in self.residual_read)
        raw = Mux(k.res_banked, banks[channel.channel[:max(1, (cols - 1).bit_length())]] if cols > 1 else banks[0],
                  self.residual_read[0].data)
        r = Signal(signed(p.spec.act_bits + 1), name="residual")
        # no residual in this stage: r = 0 (never a value read from an unwritten address)
        m.d.comb += r.eq(Mux(k.has_residual, Mux(k.res_signed, raw.as_signed(), raw), 0))
        m.d.comb += [rq.i_residual.eq(r), rq.i_res_mult.eq(held.res_mult)]
        return valid, acc, channel, held

    def _average(self, m, rq, out, pooled):
        """The average pool's window sums and its requantizer; returns what to write when (valid,
        channel, value, stage done): the average's in an average-pool stage, else the max-pool path's."""
        p, k = self._program, self.k
        spec = p.spec
        rows = spec.pe_rows
        sums = [Signal(p.avg_sum_bits, name=f"pool_sum{r}") for r in range(rows)]
        total = Signal(p.avg_sum_bits)
        m.d.comb += total.eq(Mux(out.window_first, 0, sums[0]) + rq.o_act)
        with m.If(rq.o_valid):
            m.d.sync += [sums[r].eq(sums[r + 1]) for r in range(rows - 1)] + [sums[rows - 1].eq(total)]
        avg_stages = [s for s in p.stages if s.pool_kind == "avg"]
        mults = [s.avg_mult for s in avg_stages]
        m.submodules.average = avg = Requantizer(
            act_bits=spec.act_bits, acc_bits=p.avg_sum_bits + 1, bias_bits=1,
            mult_bits=signed_bits(0, max(mults)), shift_bits=unsigned_bits(max(s.avg_shift for s in avg_stages)))
        m.d.comb += [avg.i_valid.eq(rq.o_valid & out.window_last & k.avg_pool), avg.i_acc.eq(total),
                     avg.i_bias.eq(0), avg.i_mult.eq(k.avg_mult), avg.i_shift.eq(k.avg_shift)]
        out_avg = delayed(m, out, avg.latency, name="average_channel")
        valid, channel, value, done = Signal(), Signal.like(out), Signal(spec.act_bits), Signal()
        with m.If(k.avg_pool):
            m.d.comb += [valid.eq(avg.o_valid), channel.eq(out_avg), value.eq(avg.o_act),
                         done.eq(avg.o_valid & out_avg.stage_last)]
        with m.Else():
            m.d.comb += [valid.eq(rq.o_valid & out.window_last), channel.eq(out), value.eq(pooled),
                         done.eq(rq.o_valid & out.stage_last)]
        return valid, channel, value, done
