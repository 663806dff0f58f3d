"""The weight decoder: reads one compressed word (one kept PE tile) per cycle and expands it.

It owns the weight memory (2-bit codes of kept tiles, see `terwin.hw.memimage`) and the lane map
(per tap group: the kernel tap and channel offset each lane reads). Given `addr` with `en` high, two
enabled cycles later it presents the tile's codes (as `nonzero`/`negative` per row and lane, i.e.
add, subtract or skip), its channel-group offset `coff`, its `last` flag and the lane map row.
`en` low freezes both stages (the global stall), so it keeps pace with the array exactly.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from . import layouts


class TileDecoder(wiring.Component):
    LATENCY = 2

    def __init__(self, program):
        self._program = program
        spec = program.spec
        self._word = layouts.weight_word_layout(spec, lm_bits=program.lm_bits, coff_bits=program.coff_bits)
        self._lanes = layouts.lane_map_layout(spec, k_bits=program.k_bits, aoff_bits=program.aoff_bits)
        depth = max(1, program.weight_word_count)
        super().__init__({
            "en": In(1),
            "addr": In(range(max(2, depth))),
            "codes": Out(layouts.tile_codes_layout(spec)),
            "coff": Out(self._word["coff"].shape),
            "last": Out(1),
            "lanes": Out(self._lanes),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._program
        m.submodules.weights = wmem = memory.Memory(shape=self._word, depth=max(1, p.weight_word_count),
                                                    init=p.words)
        m.submodules.lane_map = lmem = memory.Memory(shape=self._lanes, depth=max(1, len(p.lane_map)),
                                                     init=p.lane_map)
        wrd = wmem.read_port()
        lrd = lmem.read_port()
        m.d.comb += [wrd.addr.eq(self.addr), wrd.en.eq(self.en), lrd.addr.eq(wrd.data.lm), lrd.en.eq(self.en)]
        codes = Signal(self._word["codes"].shape)
        coff = Signal.like(self.coff)
        last = Signal()
        with m.If(self.en):
            m.d.sync += [codes.eq(wrd.data.codes), coff.eq(wrd.data.coff), last.eq(wrd.data.last)]
        m.d.comb += [self.codes.eq(codes), self.coff.eq(coff), self.last.eq(last), self.lanes.eq(lrd.data)]
        return m
