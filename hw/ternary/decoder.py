"""The weight decoder: reads one compressed word (one kept PE tile) per cycle and expands it.

It owns the weight memory (2-bit codes of kept tiles, see `terwin.hw.ternary.program`) and the lane map
(per tap group: the kernel tap and channel offset each lane reads). Given `addr` with `en` high, two
enabled cycles later it presents the tile's codes (as `nonzero`/`negative` per row and lane, i.e.
add, subtract or skip), its channel-group offset `coff`, its `last` flag and the lane map row.
`en` low freezes both stages (the global stall), so it keeps pace with the array exactly.

With Huffman-coded weights (`TernaryProgram.huffman`) the codes come from the tile cache (tile
`addr` in entry addr % depth, written through `cache_write` by `terwin.hw.ternary.tilecache`) and the
rest of the word from `tile_info`, read in the same cycle: the same latency.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from terwin.hw import fpga

from . import layouts
from .program import DECODER_LATENCY


class TileDecoder(wiring.Component):
    LATENCY = DECODER_LATENCY

    def __init__(self, program):
        self._huffman = program.huffman
        self._weights = program.memory("tile_info" if self._huffman else "weights")
        self._lane_map = program.memory("lane_map")
        self._spec = spec = program.spec
        self._word = self._weights.shape
        self._lanes = self._lane_map.shape
        ports = {
            "en": In(1),
            "addr": In(range(max(2, self._weights.depth))),
            "codes": Out(layouts.tile_codes_layout(spec)),
            "coff": Out(self._word["coff"].shape),
            "last": Out(1),
            "lanes": Out(self._lanes),
        }
        if self._huffman:   # the codes from the tile cache (tile `addr` in entry addr % depth), filled here
            from .tilecache import cache_write_signature
            self._cache = program.memory("tile_cache")
            ports["cache_write"] = In(cache_write_signature(program))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        wmem = self._weights.memory()
        cmem = None
        if self._huffman and not _has_distributed_ram(platform):
            cmem = self._cache.memory()
        elif self._huffman:
            # a family with distributed RAM (the ECP5): the tile cache (pe_rows * pe_cols * 2 bits wide:
            # four block RAMs however shallow on pe8x8) goes there, leaving block RAM to the Huffman streams
            cmem = memory.Memory(shape=self._cache.shape, depth=self._cache.depth, init=[],
                                 attrs={"ram_style": "distributed"})
        m.submodules.weights = wmem
        m.submodules.lane_map = lmem = self._lane_map.memory()
        wrd = wmem.read_port()
        lrd = lmem.read_port()
        m.d.comb += [wrd.addr.eq(self.addr), wrd.en.eq(self.en), lrd.addr.eq(wrd.data.lm), lrd.en.eq(self.en)]
        if self._huffman:
            m.submodules.cache = cmem
            crd, cwr = cmem.read_port(), cmem.write_port()
            m.d.comb += [crd.addr.eq(self.addr[:len(crd.addr)]), crd.en.eq(self.en),
                         cwr.en.eq(self.cache_write.en), cwr.addr.eq(self.cache_write.addr),
                         cwr.data.eq(self.cache_write.data)]
            word_codes = crd.data
        else:
            word_codes = wrd.data.codes
        codes = Signal(layouts.tile_codes_layout(self._spec))
        coff = Signal.like(self.coff)
        last = Signal()
        with m.If(self.en):
            m.d.sync += [codes.eq(word_codes), coff.eq(wrd.data.coff), last.eq(wrd.data.last)]
        m.d.comb += [self.codes.eq(codes), self.coff.eq(coff), self.last.eq(last), self.lanes.eq(lrd.data)]
        return m


def _has_distributed_ram(platform) -> bool:
    """Whether the platform's FPGA family (`terwin.hw.fpga`, asked, not named) has distributed RAM;
    False in simulation (no platform) and for a family terwin does not know."""
    family = fpga.FAMILIES.get(getattr(platform, "family", None))
    return family is not None and family.distributed_ram is not None
