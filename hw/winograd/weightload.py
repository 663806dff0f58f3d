"""`WeightLoader`: fills the loaded weight memories from `i_stream` (spec.weight_memory "loaded").

After each reset a design whose weight streams live in RAM (on the iCE40 UP5K: its SPRAM, which no
bitstream can initialize) takes `WinogradProgram.preamble()` before its first image: every lane's
items in order, lane 0's first (lanes without items send none), each item's bits in
`program.item_beats` beats of act_bits bits, the lowest first. The loader assembles each item and
writes it, a cycle after its last beat, into its lane's memory at the next address; `done` is high
in the cycle of the preamble's last beat. It is ready whenever `active`.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .mult import weight_load_signature


class WeightLoader(wiring.Component):
    def __init__(self, program):
        self._beats = program.item_beats
        self._act_bits = program.act_bits
        self._lanes = [(lane, len(items)) for lane, items in enumerate(program.items) if items]
        if not self._lanes:
            raise ValueError("a model without weights has nothing to load")
        super().__init__({
            "active": In(1),
            "i_stream": In(stream.Signature(unsigned(program.act_bits))),
            "write": Out(weight_load_signature(program)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, a = self._beats, self._act_bits
        word = Signal(n * a)             # the item's beats, shifted in from the top (the first beat ends lowest)
        beat = Signal(range(n))
        index = Signal(range(len(self._lanes)))   # which of the lanes with items
        addr = Signal.like(self.write.addr)
        lane_ids = Array(Const(lane, self.write.lane.shape()) for lane, _ in self._lanes)
        last_addr = Array(Const(count - 1, addr.shape()) for _, count in self._lanes)
        i = self.i_stream
        m.d.comb += i.ready.eq(self.active)
        # the write leaves registers, a cycle after the item's last beat
        m.d.sync += self.write.en.eq(0)
        with m.If(i.valid & i.ready):
            item = Signal.like(word)
            m.d.comb += item.eq((word >> a) | (i.payload << (a * (n - 1))))
            m.d.sync += word.eq(item)
            with m.If(beat == n - 1):
                m.d.sync += [beat.eq(0), self.write.en.eq(1), self.write.lane.eq(lane_ids[index]),
                             self.write.addr.eq(addr), self.write.data.eq(item[:len(self.write.data.as_value())])]
                with m.If(addr == last_addr[index]):
                    m.d.sync += addr.eq(0)
                    with m.If(index == len(self._lanes) - 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += index.eq(0)
                    with m.Else():
                        m.d.sync += index.eq(index + 1)
                with m.Else():
                    m.d.sync += addr.eq(addr + 1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        return m
