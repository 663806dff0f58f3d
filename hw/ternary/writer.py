"""Requantize and write: a channel's sum -> its activation (or score) -> the next stage's buffer."""
from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
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
    * `stage_done` (out): the stage's last channel is written, from a register (it starts the next
      stage in the sequencer, across the die: on the iCE40 the path requantizer valid -> stage_last
      -> sequencer was the critical one); the register is set a cycle ahead, from the requantizer's
      valid and the channel record one stage before its output (the requantizers never stall).

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
            "channel_acc": In(layouts.lane_sums_layout(program)),
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
        rows, lanes = spec.pe_rows, p.out_lanes
        m.submodules.params = params = p.memory("params").memory()
        param = params.read_port()
        m.d.comb += [param.addr.eq(k.param_base + self.channel_index), param.en.eq(1)]
        options = dict(residual_bits=spec.act_bits + 1, res_mult_bits=p.res_mult_bits) if p.has_residual else {}
        rqs = []
        for i in range(lanes):
            rq = Requantizer(act_bits=spec.act_bits, acc_bits=p.acc_bits, bias_bits=p.bias_bits,
                             mult_bits=p.mult_bits, shift_bits=p.shift_bits, signed_out=p.has_signed, **options)
            m.submodules["requant" if lanes == 1 else f"requant{i}"] = rq
            rqs.append(rq)
        valid, acc, channel, constants = self.channel_valid, self.channel_acc, self.channel, param.data
        if p.has_residual:
            valid, acc, channel, constants = self._residual(m, rqs, valid, acc, channel, constants)
        for i, rq in enumerate(rqs):
            lane_acc, lane_constants = (acc, constants) if lanes == 1 else (acc[i], constants[i])
            m.d.comb += [rq.i_valid.eq(valid), rq.i_acc.eq(lane_acc), rq.i_bias.eq(lane_constants.bias),
                         rq.i_mult.eq(lane_constants.mult), rq.i_shift.eq(lane_constants.shift)]
            if p.has_signed:
                m.d.comb += rq.i_signed.eq(k.signed_out)
        rq = rqs[0]
        # the channel record beside rq.o_*, and a stage before it with the valid bit (for `stage_done`)
        early = delayed(m, channel, rq.latency - 1, name="requant_channel", reset_less=True)
        early_valid = delayed(m, valid, rq.latency - 1, name="requant_valid")
        out = delayed(m, early, 1, name="requant_out", reset_less=True)

        # the max-pool: a rotating register of the group's pe_rows running maxima, out_lanes at its head
        maxima = [Signal(spec.act_bits, name=f"pool_max{r}", reset_less=True) for r in range(rows)]
        pooled = [Signal(spec.act_bits, name="pooled" if lanes == 1 else f"pooled{i}") for i in range(lanes)]
        for i, lane in enumerate(rqs):
            m.d.comb += pooled[i].eq(Mux(out.window_first | (lane.o_act > maxima[i]), lane.o_act, maxima[i]))
        with m.If(rq.o_valid):
            m.d.sync += ([maxima[r].eq(maxima[r + lanes]) for r in range(rows - lanes)] +
                         [maxima[rows - lanes + i].eq(pooled[i]) for i in range(lanes)])
        done_next = early_valid & early.stage_last    # rq.o_valid & out.stage_last, a cycle ahead
        if p.has_avgpool:
            write_valid, out, pooled, done_next = self._average(m, rqs, out, pooled, done_next)
        else:
            write_valid = rq.o_valid & out.window_last
        done = Signal(name="stage_done")
        m.d.sync += done.eq(done_next)
        m.d.comb += self.stage_done.eq(done)
        scores = pooled if p.stages[-1].relu else [lane.o_score for lane in rqs]
        if lanes == 1:
            self._write(m, write_valid, out, pooled[0], scores[0])
        else:
            self._write_lanes(m, write_valid, out, pooled, scores)
        return m

    def _write(self, m, write_valid, out, pooled, score):
        """One lane: channel `out.channel` to its bank (banked) or every bank (replicated), or a score."""
        p, k = self._program, self.k
        cols = p.spec.pe_cols
        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.out_base + out.address + out.pixel)
        with m.If(write_valid & (out.channel < k.out_channels) & self.enable):
            with m.If(k.to_scores):
                # raw class scores (acc + bias), or, when the last layer ends in a ReLU (and maybe a
                # pool), its requantized and pooled activations, as the reference computes them
                w = self.score_write
                m.d.comb += [w.en.eq(1), w.addr.eq(out.address + out.pixel), w.data.eq(score)]
            with m.Else():
                for b, w in enumerate(self.bank_write):
                    m.d.comb += [w.addr.eq(address[:p.addr_bits]), w.data.eq(pooled)]
                    with m.If(~k.banked_out | ((out.channel & (cols - 1)) == b)):
                        m.d.comb += w.en.eq(1)

    def _write_lanes(self, m, write_valid, out, pooled, scores):
        """out_lanes lanes: lane i holds channel c + i (c = `out.channel`, a multiple of out_lanes).

        * scores: one score-memory row holds out_lanes channels side by side (row (c // L) * plane +
          pixel), each lane with its own write enable;
        * banked: the lanes' channels lie in distinct banks at one address: bank b takes lane b % L
          when c's bank group is b's;
        * replicated: bank b holds channel b % C only (the one its MAC lane reads), at its usual
          address: it takes lane (b % C) % L when c // L == (b % C) // L (`bank_channel{b}`,
          `bank_offset{b}` of the stage table)."""
        p, k = self._program, self.k
        cols, lanes = p.spec.pe_cols, p.out_lanes
        log_lanes, log_cols = (lanes - 1).bit_length(), (cols - 1).bit_length()
        valid = write_valid & self.enable
        lane_ok = [out.channel + i < k.out_channels for i in range(lanes)]
        w = self.score_write
        m.d.comb += [w.addr.eq(out.address + out.pixel), *(w.data[i].eq(score) for i, score in enumerate(scores))]
        m.d.comb += w.en.eq(Cat(*(valid & k.to_scores & ok for ok in lane_ok)))
        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.out_base + out.address + out.pixel)
        group = out.channel[log_lanes:log_cols] if log_cols > log_lanes else C(0, 1)
        replicated = "bank_channel0" in k.shape().members
        for b, port in enumerate(self.bank_write):
            banked_hit = (group == b >> log_lanes) & lane_ok[b % lanes]
            if replicated:
                ch = getattr(k, f"bank_channel{b}")
                rep_address = Signal(p.addr_bits + 2, name=f"rep_address{b}")
                m.d.comb += rep_address.eq(k.out_base + getattr(k, f"bank_offset{b}") + out.pixel)
                rep_hit = out.channel[log_lanes:] == (ch >> log_lanes)
                m.d.comb += [port.addr.eq(Mux(k.banked_out, address, rep_address)[:p.addr_bits]),
                             port.data.eq(Mux(k.banked_out, pooled[b % lanes], Array(pooled)[ch[:log_lanes]])),
                             port.en.eq(valid & ~k.to_scores & Mux(k.banked_out, banked_hit, rep_hit))]
            else:
                m.d.comb += [port.addr.eq(address[:p.addr_bits]), port.data.eq(pooled[b % lanes]),
                             port.en.eq(valid & ~k.to_scores & banked_hit)]

    def _residual(self, m, rqs, ch_valid, ch_acc, ch, constants):
        """Read r for the channels arriving now; their sums, constants and place wait a cycle in
        registers (they reach the requantizers with r). Returns the delayed (valid, acc, channel,
        constants)."""
        p, k = self._program, self.k
        cols, lanes = p.spec.pe_cols, p.out_lanes
        address = Signal(p.addr_bits + 2)
        m.d.comb += address.eq(k.res_base + ch.res_address + ch.conv_pixel)
        if lanes == 1:
            for port in self.residual_read:
                m.d.comb += [port.addr.eq(address[:p.addr_bits]), port.en.eq(1)]
        else:
            self._residual_addresses(m, address, ch)
        valid, acc = Signal(name="res_wait_valid"), Signal.like(ch_acc, name="res_wait_acc")
        channel = Signal.like(ch, name="res_wait_channel")
        held = Signal.like(constants, name="res_wait_params")
        m.d.sync += [valid.eq(ch_valid), acc.eq(ch_acc), channel.eq(ch), held.eq(constants)]
        if lanes == 1:
            banks = Array(port.data for port in self.residual_read)
            raw = [Mux(k.res_banked, banks[channel.channel[:max(1, (cols - 1).bit_length())]] if cols > 1 else banks[0],
                       self.residual_read[0].data)]
            mults = [held.res_mult]
        else:
            raw, mults = self._residual_lanes(channel), [held[i].res_mult for i in range(lanes)]
        for i, (rq, value, mult) in enumerate(zip(rqs, raw, mults)):
            r = Signal(signed(p.spec.act_bits + 1), name="residual" if lanes == 1 else f"residual{i}")
            # no residual in this stage: r = 0 (never a value read from an unwritten address)
            m.d.comb += r.eq(Mux(k.has_residual, Mux(k.res_signed, value.as_signed(), value), 0))
            m.d.comb += [rq.i_residual.eq(r), rq.i_res_mult.eq(mult)]
        return valid, acc, channel, held

    def _residual_addresses(self, m, address, ch):
        """out_lanes lanes: lane i wants r of channel c + i (c a multiple of out_lanes), which lies in
        bank (c + i) % pe_cols whether the map is banked (one address for all) or replicated (bank b
        holds channel b there, at its own address: `res_bank_offset{b}`); bank b serves lane b % L."""
        p, k = self._program, self.k
        replicated = "res_bank_offset0" in k.shape().members
        for b, port in enumerate(self.residual_read):
            addr = address
            if replicated:
                addr = Signal(p.addr_bits + 2, name=f"res_address{b}")
                m.d.comb += addr.eq(k.res_base + Mux(k.res_banked, ch.res_address, getattr(k, f"res_bank_offset{b}"))
                                    + ch.conv_pixel)
            m.d.comb += [port.addr.eq(addr[:p.addr_bits]), port.en.eq(1)]

    def _residual_lanes(self, channel):
        """r of each lane, from bank (c + i) % pe_cols: among the banks b = i (mod L), by c's bank group."""
        p = self._program
        cols, lanes = p.spec.pe_cols, p.out_lanes
        log_lanes, log_cols = (lanes - 1).bit_length(), (cols - 1).bit_length()
        group = channel.channel[log_lanes:log_cols] if log_cols > log_lanes else C(0, 1)
        return [Array(self.residual_read[j * lanes + i].data for j in range(cols // lanes))[group]
                for i in range(lanes)]

    def _average(self, m, rqs, out, pooled, done_next):
        """The average pool's window sums and its requantizers (one per lane); returns what to write
        when (valid, channel, values per lane) and the stage's end a cycle ahead: the average's in an
        average-pool stage, else the max-pool path's (`done_next`)."""
        p, k = self._program, self.k
        spec = p.spec
        rows, lanes = spec.pe_rows, p.out_lanes
        rq = rqs[0]
        sums = [Signal(p.avg_sum_bits, name=f"pool_sum{r}") for r in range(rows)]
        totals = [Signal(p.avg_sum_bits, name="total" if lanes == 1 else f"total{i}") for i in range(lanes)]
        for i, lane in enumerate(rqs):
            m.d.comb += totals[i].eq(Mux(out.window_first, 0, sums[i]) + lane.o_act)
        with m.If(rq.o_valid):
            m.d.sync += ([sums[r].eq(sums[r + lanes]) for r in range(rows - lanes)] +
                         [sums[rows - lanes + i].eq(totals[i]) for i in range(lanes)])
        avg_stages = [s for s in p.stages if s.pool_kind == "avg"]
        mults = [s.avg_mult for s in avg_stages]
        avgs = []
        for i in range(lanes):
            avg = Requantizer(act_bits=spec.act_bits, acc_bits=p.avg_sum_bits + 1, bias_bits=1,
                              mult_bits=signed_bits(0, max(mults)),
                              shift_bits=unsigned_bits(max(s.avg_shift for s in avg_stages)))
            m.submodules["average" if lanes == 1 else f"average{i}"] = avg
            avgs.append(avg)
        avg_in = Signal(name="average_in")
        m.d.comb += avg_in.eq(rq.o_valid & out.window_last & k.avg_pool)
        for i, avg in enumerate(avgs):
            m.d.comb += [avg.i_valid.eq(avg_in), avg.i_acc.eq(totals[i]),
                         avg.i_bias.eq(0), avg.i_mult.eq(k.avg_mult), avg.i_shift.eq(k.avg_shift)]
        out_early = delayed(m, out, avgs[0].latency - 1, name="average_channel")
        avg_early_valid = delayed(m, avg_in, avgs[0].latency - 1, name="average_valid")
        out_avg = delayed(m, out_early, 1, name="average_out")
        if lanes == 1:
            valid, channel, value, done = Signal(), Signal.like(out), Signal(spec.act_bits), Signal()
            values = [value]
        else:
            valid, channel, done = Signal(name="valid"), Signal.like(out, name="channel"), Signal(name="done")
            values = [Signal(spec.act_bits, name=f"value{i}") for i in range(lanes)]
        with m.If(k.avg_pool):   # k holds until the stage's end: the same a cycle ahead
            m.d.comb += [valid.eq(avgs[0].o_valid), channel.eq(out_avg),
                         *(value.eq(avg.o_act) for value, avg in zip(values, avgs)),
                         done.eq(avg_early_valid & out_early.stage_last)]
        with m.Else():
            m.d.comb += [valid.eq(rq.o_valid & out.window_last), channel.eq(out),
                         *(value.eq(max_) for value, max_ in zip(values, pooled)),
                         done.eq(done_next)]
        return valid, channel, values, done
