"""The Winograd engine's sequencer: walks the program's schedule of fixed-length steps."""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out



class PhaseSequencer(wiring.Component):
    """The schedule memory (`WinogradProgram.phases`: the steps, each with the units it runs, their
    tiles and buffer halves, its length) and the position in it.

    * `start` (in): back to the first step (an image has come in); `run` (in): the schedule runs;
    * `phase` (out): the current entry (`layouts.phase_layout`); `count` (out): its cycle, from 0
      (every unit of the step counts its own work from it);
    * `phase_end` (out): the step's last cycle; `done` (out): ... of the last step;
    * `arm_next` (out): `phase_end & phase.arm` of the next cycle, given that the schedule runs from
      `start` until `done` (so the decoders' start can leave a register: it fans out to every lane).
    """

    def __init__(self, program):
        self._image = program.memory("schedule")
        self._n = len(program.phases)
        super().__init__({
            "start": In(1),
            "run": In(1),
            "phase": Out(self._image.shape),
            "count": Out(program.count_bits),
            "phase_end": Out(1),
            "done": Out(1),
            "arm_next": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.schedule = mem = self._image.memory()
        entry = mem.read_port()
        index = Signal(range(self._n + 1))
        count = self.count
        # the current entry lives in fabric registers (`phase`), not on the memory's output: the memory
        # reads the next entry ahead (index + 1, or index + 2 in a step's last cycle, when index moves on),
        # so every unit's decoding starts from a flip-flop; entry 0 is a constant, loaded on `start`.
        # The step's last cycle is a flag computed a cycle ahead (a down-counter `left`), not a compare.
        first = self._image.shape.const(self._image.init[0])
        first_length = self._image.init[0]["length"]
        current = Signal(self._image.shape, init=self._image.init[0])
        left = Signal(len(count), init=first_length - 1)     # cycles of the step after this one
        last = Signal(init=first_length == 1)                # this is the step's last cycle
        m.d.comb += [self.phase.eq(current), entry.en.eq(1), self.phase_end.eq(self.run & last)]
        with m.If(self.phase_end):
            m.d.comb += entry.addr.eq(index + 2)
            # the next step's first cycle is its last when it is one cycle long
            m.d.comb += self.arm_next.eq((index != self._n - 1) & entry.data.arm & (entry.data.length == 1))
            m.d.sync += [index.eq(index + 1), count.eq(0), current.eq(entry.data),
                         left.eq(entry.data.length - 1), last.eq(entry.data.length == 1)]
            with m.If(index == self._n - 1):
                m.d.comb += self.done.eq(1)
        with m.Elif(self.run):
            m.d.comb += entry.addr.eq(index + 1)
            m.d.comb += self.arm_next.eq(current.arm & (left == 1))
            m.d.sync += [count.eq(count + 1), left.eq(left - 1), last.eq(left == 1)]
        with m.Else():
            m.d.comb += entry.addr.eq(1)
        with m.If(self.start):
            m.d.comb += self.arm_next.eq(first.arm & (first_length == 1))
            m.d.sync += [index.eq(0), count.eq(0), current.eq(first), left.eq(first_length - 1),
                         last.eq(first_length == 1)]
        return m
