"""OUT_W / OUT_L: the multiply stage's sums -> outputs -> the next buffer or the scores."""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from terwin.deployment import Linear, WinogradConv2d

from ..common.control import delayed
from ..common.requant import Requantizer
from ..common.requant_threshold import ThresholdRequantizer
from .buffers import act_addr_bits
from .layouts import write_layout
from .mult import m_read_signature
from .program import M_READ_LATENCY, MAP_WIDTH, OUT_READS_W, OUT_START, OUT_TAIL_L, OUT_TAIL_W
from .transform import OutputTransform

assert ThresholdRequantizer.LATENCY == Requantizer.LATENCY   # either requantizer: the same cycles
assert OUT_TAIL_L == M_READ_LATENCY + 1 + Requantizer.LATENCY          # M read, select register, requantizer
assert OUT_TAIL_W == M_READ_LATENCY + 1 + OutputTransform.LATENCY + 3 + Requantizer.LATENCY  # M read, window,
# transform, 3 more outputs
# a row of the 4x4 M tile a read, and the 4 outputs of a channel leave in the 4 cycles its rows take
assert MAP_WIDTH == 4 and OUT_READS_W == 16 // MAP_WIDTH


def _outputs(program) -> int:
    return max(max(s.out_channels for s in program.stages), 2)


class ResultReader(wiring.Component):
    """Reads the layer's sums M from bank half `phase.out_buf` (`m_read`: a row of 4 targets a cycle,
    two cycles later) and turns them into outputs, one a cycle, for the requantizer.

    * OUT_W (`out_window`): M of an output channel fills a 4x4 window (4 reads, one a row); the full
      window goes through the `OutputTransform` (Y = A^T M A) and its 2x2 outputs (tile `phase.out_ty`,
      `phase.out_tx`) leave one a cycle (`quad`: which), with their place in the output map (`dest`)
      and whether it is inside the map (`inside`: a partial tile's outputs beyond the map edge are
      dropped); with a fused 2x2 max-pool (`k.pool_fused`), `dest` and `inside` are those of the
      tile's one pooled output;
    * OUT_L (`out_linear`): each target is one output, `dest` its channel.

    `param_index` with `param_en` (out): the output channel whose requantization constants to read,
    two cycles before its first output (the writer registers them, and holds them while its outputs
    pass); `y_valid`, `y`, `dest`, `inside` (out): an output.
    """

    def __init__(self, program, *, phase, constants):
        self._program = program
        abits = act_addr_bits(program)
        super().__init__({
            "k": In(constants),
            "out_window": In(1),
            "out_linear": In(1),
            "phase": In(phase),
            "count": In(program.count_bits),
            "phase_end": In(1),
            "m_read": In(m_read_signature(program)),
            "param_index": Out(range(_outputs(program))),
            "param_en": Out(1),
            "y_valid": Out(1),
            "y": Out(signed(program.y_bits)),
            "quad": Out(2),
            "dest": Out(abits + 1),
            "inside": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, count, stage = self._program, self.count, self.phase.stage
        m.submodules.out_xform = xform = OutputTransform(acc_bits=p.acc_bits, y_bits=p.y_bits, m=p.spec.winograd_tile)
        # the reads start OUT_START cycles into the step (the lanes' last write of the tile lands then)
        index = Signal(len(count))
        m.d.comb += index.eq(count - OUT_START)

        def reads_at(c):
            """Whether the output side reads M in the step's cycle `c`."""
            r = Signal()
            for n, s in enumerate(p.stages):
                if s.kind == WinogradConv2d.kind:
                    with m.If(self.out_window & (stage == n)):
                        m.d.comb += r.eq((c >= OUT_START) & (c < OUT_START + OUT_READS_W * s.out_channels))
                elif s.kind == Linear.kind:
                    with m.If(self.out_linear & (stage == n)):
                        m.d.comb += r.eq((c >= OUT_START) & (c < OUT_START + s.out_channels))
            return r

        reading = reads_at(count)
        # the map address and enable leave registers (they fan out to every block of the wide target
        # map): computed a cycle ahead from the next cycle's count. A step's first cycle (count 0, the
        # cycle after `phase_end`) never reads (OUT_START >= 1), so the next step's unit constants are
        # not needed a cycle early; during a step the count rises by one a cycle (the schedule runs
        # without stalls).
        assert OUT_START >= 1
        following = Signal(len(count) + 1)
        ahead = Signal(len(count) + 1)
        m.d.comb += [following.eq(count + 1), ahead.eq(following - OUT_START)]
        read_next = reads_at(following)
        m.d.sync += [self.m_read.addr.eq(self.k.map_base + Mux(self.out_linear, ahead[2:], ahead)),
                     self.m_read.en.eq(read_next & ~self.phase_end)]
        m.d.comb += self.m_read.buf.eq(self.phase.out_buf)
        # tags along the M read: valid, the read (Winograd: channel * 4 + row; linear: target), linear
        tag = Signal(range(max(OUT_READS_W, 1) * max(s.out_channels for s in p.stages) + 1))
        m_valid, m_target, m_linear, m_ty, m_tx = (
            delayed(m, v, M_READ_LATENCY, name=f"m_{name}") for v, name in
            ((reading, "valid"), (index, "target"), (self.out_linear, "linear"),
             (self.phase.out_ty, "ty"), (self.phase.out_tx, "tx")))
        # the same a cycle earlier: a linear output's constants are read a cycle ahead (see below)
        e_valid, e_target, e_linear = (delayed(m, v, M_READ_LATENCY - 1, name=f"e_{name}") for v, name in
                                       ((reading, "valid"), (index, "target"), (self.out_linear, "linear")))
        m_val = self.m_read.data
        m.d.comb += tag.eq(m_target)
        window = [[Signal(signed(p.acc_bits), name=f"mwin{i}_{j}") for j in range(4)] for i in range(4)]
        with m.If(m_valid & ~m_linear):
            with m.Switch(tag[0:2]):
                for i in range(4):
                    with m.Case(i):
                        m.d.sync += [window[i][j].eq(m_val[j]) for j in range(4)]
        feed_window = Signal()
        channel = Signal(range(_outputs(p)))
        # the tile travels with its windows: a tile's last outputs leave during the next step (the
        # next tile's reads), so the serializer must not look at the step's tile
        w_ty, w_tx = Signal.like(m_ty), Signal.like(m_tx)
        m.d.sync += [feed_window.eq(m_valid & ~m_linear & (tag[0:2] == 3)), channel.eq(tag[2:])]
        with m.If(m_valid & ~m_linear & (tag[0:2] == 3)):
            m.d.sync += [w_ty.eq(m_ty), w_tx.eq(m_tx)]
        m.d.comb += xform.i_stream.valid.eq(feed_window)
        for i in range(4):
            for j in range(4):
                m.d.comb += xform.i_stream.payload[i][j].eq(window[i][j])
        # the constants: the writer registers them after their memory (`ResultWriter`), so they are read
        # two cycles before a channel's first output reaches the requantizer (it leaves the transform a
        # cycle after that), and held while its outputs are requantized; `held` (the output's channel
        # for `dest`) changes the cycle before the first output, as the constants' read did before
        feed_linear = m_valid & m_linear
        assert OutputTransform.LATENCY >= 2 and M_READ_LATENCY >= 1
        param_window = delayed(m, feed_window, OutputTransform.LATENCY - 1, name="param_window")
        param_channel = delayed(m, channel, OutputTransform.LATENCY - 1, name="param_channel")
        early_window = delayed(m, feed_window, OutputTransform.LATENCY - 2, name="early_window")
        early_channel = delayed(m, channel, OutputTransform.LATENCY - 2, name="early_channel")
        m.d.comb += [self.param_index.eq(Mux(early_window, early_channel, e_target)),
                     self.param_en.eq(early_window | (e_valid & e_linear))]
        held = Signal(range(_outputs(p)))
        with m.If(param_window | feed_linear):
            m.d.sync += held.eq(Mux(param_window, param_channel, tag))
        linear_val, linear_valid = Signal(signed(p.acc_bits)), Signal()
        m.d.sync += [linear_val.eq(m_val[tag[0:2]]), linear_valid.eq(feed_linear)]

        # the window's tile, as it leaves the transform (a window every 4 cycles at most, its 4
        # outputs in the 4 cycles after the transform's latency)
        ty = delayed(m, w_ty, OutputTransform.LATENCY, name="y_ty")
        tx = delayed(m, w_tx, OutputTransform.LATENCY, name="y_tx")
        # serializer over the 2x2 output tile, straight from the output transform's register
        y_idx = Signal(2)
        y_flat = Array(xform.o_stream.payload[i][j] for i in range(2) for j in range(2))
        with m.If(xform.o_stream.valid):
            m.d.comb += [self.y_valid.eq(1), self.y.eq(y_flat[y_idx]), xform.o_stream.ready.eq(y_idx == 3),
                         self.quad.eq(y_idx)]
            m.d.sync += y_idx.eq(y_idx + 1)
            for n, s in enumerate(p.stages):
                if s.kind != WinogradConv2d.kind:
                    continue
                with m.If(stage == n):
                    if s.pool_index >= 0:     # the fused pool's output (ty, tx): a whole tile inside the map
                        _, hp, wp = s.pool_shape
                        m.d.comb += [self.inside.eq((ty < hp) & (tx < wp)),
                                     self.dest.eq(held * (hp * wp) + ty * wp + tx)]
                        continue
                    _, ho, wo = s.out_shape
                    oy = Signal(range(2 * s.tiles_y + 2), name=f"oy_{s.name}")
                    ox = Signal(range(2 * s.tiles_x + 2), name=f"ox_{s.name}")
                    m.d.comb += [oy.eq(ty * 2 + y_idx[1]), ox.eq(tx * 2 + y_idx[0]),
                                 self.inside.eq((oy < ho) & (ox < wo)), self.dest.eq(held * (ho * wo) + oy * wo + ox)]
        with m.Elif(linear_valid):
            m.d.comb += [self.y_valid.eq(1), self.y.eq(linear_val), self.inside.eq(1), self.dest.eq(held)]
        return m


class ResultWriter(wiring.Component):
    """Requantizes the outputs of `ResultReader` and writes them: activations into the buffer
    `k.dst`, or (the last layer, `k.to_scores`) raw scores acc + bias to `score`. With a fused 2x2
    max-pool (`k.pool_fused`) it keeps the largest of a tile's four requantized outputs (`quad` 0..3)
    and writes it with the fourth.

    `param_index`/`param_en` (in): read constants `k.param_base + param_index` (held otherwise), which
    reach the requantizer two cycles later (the memory, then a register);
    `y_valid`, `y`, `dest`, `inside` (in): an output; `write` (out): the activation write;
    `score_valid`, `score` (out): a score for the output FIFO.
    """

    def __init__(self, program, *, constants):
        self._program = program
        abits = act_addr_bits(program)
        super().__init__({
            "k": In(constants),
            "param_index": In(range(_outputs(program))),
            "param_en": In(1),
            "y_valid": In(1),
            "y": In(signed(program.y_bits)),
            "quad": In(2),
            "dest": In(abits + 1),
            "inside": In(1),
            "write": Out(write_layout(addr_bits=abits, act_bits=program.act_bits)),
            "score_valid": Out(1),
            "score": Out(signed(program.score_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        p, k = self._program, self.k
        m.submodules.params = params = p.memory("params").memory()
        param = params.read_port()
        m.d.comb += [param.addr.eq(k.param_base + self.param_index), param.en.eq(self.param_en)]
        # the constants reach the requantizer through a register (the memory's output would otherwise
        # feed the acc + bias carry chain directly); the reader asks for them a cycle earlier
        held = Signal.like(param.data)
        m.d.sync += held.eq(param.data)
        widths = dict(act_bits=p.act_bits, acc_bits=p.y_bits, bias_bits=p.bias_bits, mult_bits=p.mult_bits,
                      shift_bits=p.shift_bits)
        if p.threshold:
            m.submodules.requant = rq = self._threshold_requantizer(m, param, widths)
        else:
            m.submodules.requant = rq = Requantizer(**widths, logic_multiplier=p.logic_multiplier)
        m.d.comb += [rq.i_valid.eq(self.y_valid), rq.i_acc.eq(self.y), rq.i_bias.eq(held.bias),
                     rq.i_mult.eq(held.mult), rq.i_shift.eq(held.shift)]
        if p.logic_multiplier:
            m.d.comb += rq.i_bias_mult.eq(held.bias_mult)
        dest = delayed(m, self.dest, Requantizer.LATENCY, name="rq_dest")
        inside = delayed(m, self.inside, Requantizer.LATENCY, name="rq_inside")
        act, last_of_tile = rq.o_act, Const(1)
        if any(s.pool_index >= 0 for s in p.stages):
            quad = delayed(m, self.quad, Requantizer.LATENCY, name="rq_quad")
            kept, best = Signal.like(rq.o_act), Signal.like(rq.o_act)
            m.d.comb += best.eq(Mux((quad == 0) | (rq.o_act > kept), rq.o_act, kept))
            with m.If(rq.o_valid):
                m.d.sync += kept.eq(best)
            act = Mux(k.pool_fused, best, rq.o_act)
            last_of_tile = ~k.pool_fused | (quad == 3)
        with m.If(rq.o_valid & inside):
            with m.If(k.to_scores):
                m.d.comb += [self.score_valid.eq(1), self.score.eq(rq.o_score)]
            with m.Elif(last_of_tile):
                m.d.comb += [self.write.en.eq(1), self.write.addr.eq(dest), self.write.data.eq(act),
                             self.write.dst.eq(k.dst)]
        return m

    def _threshold_requantizer(self, m, param, widths):
        """spec.requant "threshold": the coarse table read with the constants (same address, enable and
        timing: the memory, then a register), the channel's index beside it (the fine table's row)."""
        p = self._program
        m.submodules.thresh_coarse = coarse_mem = p.memory("thresh_coarse").memory()
        coarse = coarse_mem.read_port()
        m.d.comb += [coarse.addr.eq(param.addr), coarse.en.eq(param.en)]
        channel = Signal(p.channel_bits)
        with m.If(param.en):          # the index the memories hold, as their data: read with enable
            m.d.sync += channel.eq(param.addr)
        held_coarse, held_channel = Signal.like(coarse.data), Signal.like(channel)
        m.d.sync += [held_coarse.eq(coarse.data), held_channel.eq(channel)]
        rq = ThresholdRequantizer(**widths, channel_bits=p.channel_bits,
                                  fine=[p.memory(f"thresh_fine{part}") for part in range(p.fine_parts)])
        m.d.comb += [rq.i_coarse.eq(held_coarse), rq.i_channel.eq(held_channel)]
        return rq
