"""The ternary engine's data memories: the activation banks and the score buffer with its output stream."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out


def bank_port(program, kind=WritePort):
    """The signature of one activation bank port (`WritePort` or `ReadPort`)."""
    return kind.Signature(addr_width=program.addr_bits, shape=unsigned(program.spec.act_bits))


def score_port(program):
    """The score memory's write port: one score, or (out_lanes > 1) a row of out_lanes scores with
    one write enable each."""
    image = program.memory("scores")
    addr_width = max(1, (image.depth - 1).bit_length())
    if program.out_lanes == 1:
        return WritePort.Signature(addr_width=addr_width, shape=signed(program.score_bits))
    return WritePort.Signature(addr_width=addr_width, shape=image.shape, granularity=1)


class ActivationBanks(wiring.Component):
    """`pe_cols` activation banks (`TernaryProgram.memories()`: `act_bank0`, ...), one read and one
    write port each.

    * `load[b]`: writes of the image loader; `write[b]`: writes of the stage writer (a bank takes
      `load` when its `en` is high, `write` otherwise: they never write in the same cycle);
    * `read[b]`: the MAC pipeline's reads (synchronous: data one cycle after the address);
    * `residual[b]` (only in a program with residual connections): the writer's reads of a residual
      map, a second read port (synchronous too).
    """

    def __init__(self, program):
        self._images = [image for image in program.memories() if image.name.startswith("act_bank")]
        cols = len(self._images)
        ports = {
            "load": Out(bank_port(program)).array(cols),
            "write": Out(bank_port(program)).array(cols),
            "read": Out(bank_port(program, ReadPort)).array(cols),
        }
        if program.has_residual:
            ports["residual"] = Out(bank_port(program, ReadPort)).array(cols)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for b, image in enumerate(self._images):
            m.submodules[image.name] = bank = image.memory()
            wp, rp = bank.write_port(), bank.read_port()
            with m.If(self.load[b].en):
                m.d.comb += [wp.en.eq(1), wp.addr.eq(self.load[b].addr), wp.data.eq(self.load[b].data)]
            with m.Else():
                m.d.comb += [wp.en.eq(self.write[b].en), wp.addr.eq(self.write[b].addr),
                             wp.data.eq(self.write[b].data)]
            m.d.comb += [rp.addr.eq(self.read[b].addr), rp.en.eq(self.read[b].en), self.read[b].data.eq(rp.data)]
            if "residual" in self.signature.members:
                res, rr = self.residual[b], bank.read_port()
                m.d.comb += [rr.addr.eq(res.addr), rr.en.eq(res.en), res.data.eq(rr.data)]
        return m


class ScoreOutput(wiring.Component):
    """The score memory (written by the last stage, `write`) and its output stream.

    * `start` (in): the scores are complete: send them, one per beat, in address (class) order;
    * `o_stream` (out): the scores (`valid` never waits on `ready`);
    * `done` (out): the cycle after the beat after the last score was taken (a register, for the same
      reason as `ImageLoader.done`): the image is finished.
    Only reads while `start`/sending; `start` must stay high until `done`, and reads nothing while
    `done` is high.
    """

    def __init__(self, program):
        self._image = program.memory("scores")
        self._n = program.n_scores
        self._lanes = program.out_lanes
        last = program.stages[-1]
        self._plane = last.out_h * last.out_w
        super().__init__({
            "write": Out(score_port(program)),
            "start": In(1),
            "o_stream": Out(stream.Signature(signed(program.score_bits))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.scores = mem = self._image.memory()
        lanes = self._lanes
        wp, rp = mem.write_port(granularity=1 if lanes > 1 else None), mem.read_port()
        m.d.comb += [wp.en.eq(self.write.en), wp.addr.eq(self.write.addr), wp.data.eq(self.write.data)]
        index = Signal(range(self._n + 1))
        valid = Signal()
        done = Signal()
        m.d.sync += done.eq(0)
        m.d.comb += self.done.eq(done)
        advance = self.start & ~done & (~valid | self.o_stream.ready)
        if lanes == 1:
            m.d.comb += [rp.addr.eq(index), rp.en.eq(advance),
                         self.o_stream.valid.eq(valid), self.o_stream.payload.eq(rp.data)]
        else:
            m.d.comb += [rp.en.eq(advance), self.o_stream.valid.eq(valid)]
            self._lane_reads(m, rp, advance, index)
        with m.If(advance):
            m.d.sync += valid.eq(index < self._n)
            with m.If(index < self._n):
                m.d.sync += index.eq(index + 1)
            with m.Else():
                m.d.sync += [done.eq(1), index.eq(0)]
        return m

    def _lane_reads(self, m, rp, advance, index):
        """out_lanes lanes: score index c * plane + pixel is lane c % L of row (c // L) * plane + pixel;
        the lane is selected a cycle after the read, with the data."""
        lanes, plane = self._lanes, self._plane
        pixel = Signal(range(plane), name="score_pixel")
        lane = Signal(range(lanes), name="score_lane")
        row = Signal(range(max(2, self._image.depth + plane)), name="score_row")
        selected = Signal.like(lane, name="score_selected")
        m.d.comb += [rp.addr.eq(row + pixel), self.o_stream.payload.eq(rp.data[selected])]
        with m.If(advance):
            m.d.sync += selected.eq(lane)
            with m.If(index < self._n):
                with m.If(pixel != plane - 1):
                    m.d.sync += pixel.eq(pixel + 1)
                with m.Else():
                    m.d.sync += [pixel.eq(0), lane.eq(lane + 1)]
                    with m.If(lane == lanes - 1):
                        m.d.sync += row.eq(row + plane)
            with m.Else():
                m.d.sync += [pixel.eq(0), lane.eq(0), row.eq(0)]
