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
    return WritePort.Signature(addr_width=max(1, (program.memory("scores").depth - 1).bit_length()),
                               shape=signed(program.score_bits))


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
    * `done` (out): the beat after the last score was taken: the image is finished.
    Only reads while `start`/sending; `start` must stay high until `done`.
    """

    def __init__(self, program):
        self._image = program.memory("scores")
        self._n = program.n_scores
        super().__init__({
            "write": Out(score_port(program)),
            "start": In(1),
            "o_stream": Out(stream.Signature(signed(program.score_bits))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.scores = mem = self._image.memory()
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.en.eq(self.write.en), wp.addr.eq(self.write.addr), wp.data.eq(self.write.data)]
        index = Signal(range(self._n + 1))
        valid = Signal()
        advance = self.start & (~valid | self.o_stream.ready)
        m.d.comb += [rp.addr.eq(index), rp.en.eq(advance),
                     self.o_stream.valid.eq(valid), self.o_stream.payload.eq(rp.data)]
        with m.If(advance):
            m.d.sync += valid.eq(index < self._n)
            with m.If(index < self._n):
                m.d.sync += index.eq(index + 1)
            with m.Else():
                m.d.comb += self.done.eq(1)
                m.d.sync += index.eq(0)
        return m
