"""The weight decoder: reads one compressed word (one kept PE tile) per cycle and expands it.

It owns the weight memories (see `terwin.hw.ternary.program`: `weights`, a kept tile's lane-map row,
channel offset and `last` flag; `codes`, its 2-bit codes) and the lane map (per tap group: the kernel
tap and channel offset each lane reads). Given `addr` with `en` high, `LATENCY` (two) enabled cycles
later it presents the tile's channel-group offset `coff`, its `last` flag and the lane map row, and
`codes_latency` enabled cycles later (`LATENCY + codes_delay`) the tile's codes (as
`nonzero`/`negative` per row and lane, i.e. add, subtract or skip). `en` low freezes every stage.

The codes are the widest thing a tile carries (pe_rows * pe_cols * 2 bits) and the PE array needs them
last, after the lane addresses and the activation reads: so the codes memory is read with the tile's
address delayed by `codes_delay` cycles (a few address bits in flip-flops) rather than its output
delayed (pe_rows * pe_cols * 2 flip-flops a cycle of delay: on pe16x8, 768 flip-flops and as many
iCE40 logic cells). One register stays between the memory and the output, so a block-RAM output
never drives the PE array's product logic directly.

With Huffman-coded weights (`TernaryProgram.huffman`) the codes come from the tile cache and the
lane-map row and channel offset from the side ring (tile `addr` in entry addr % depth of both,
written through `cache_write` by `terwin.hw.ternary.tilecache`), read in the same cycle: the same
latency; the codes (written to the cache well ahead of their reading) then go through `codes_delay`
registers. (`last` is then 0: nothing downstream reads it; the sequencer has its own.)
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from terwin.hw import fpga

from ..common.control import delayed
from . import layouts
from .program import DECODER_LATENCY


class TileDecoder(wiring.Component):
    LATENCY = DECODER_LATENCY

    def __init__(self, program, *, codes_delay: int = 0):
        assert codes_delay >= 0
        self.codes_delay = codes_delay
        self.codes_latency = self.LATENCY + codes_delay
        self._huffman = program.huffman
        self._lane_map = program.memory("lane_map")
        self._spec = spec = program.spec
        self._lanes = self._lane_map.shape
        if self._huffman:   # codes and side info from the rings the filler writes (tile `addr` in entry addr % depth)
            from .tilecache import cache_write_signature
            self._cache = program.memory("tile_cache")
            self._side = program.memory("tile_side")
            coff_shape = self._side.shape["coff"].shape
            words = program.weight_word_count
        else:
            self._weights = program.memory("weights")
            self._codes = program.memory("codes")
            coff_shape = self._weights.shape["coff"].shape
            words = self._weights.depth
        ports = {
            "en": In(1),
            "addr": In(range(max(2, words))),
            "codes": Out(layouts.tile_codes_layout(spec)),
            "coff": Out(coff_shape),
            "last": Out(1),
            "lanes": Out(self._lanes),
        }
        if self._huffman:
            ports["cache_write"] = In(cache_write_signature(program))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.lane_map = lmem = self._lane_map.memory()
        lrd = lmem.read_port()
        codes = Signal(layouts.tile_codes_layout(self._spec), reset_less=True)   # datapath: no reset (see pe.py)
        coff = Signal.like(self.coff)
        last = Signal()
        if self._huffman:
            # a family with distributed RAM (the ECP5): both rings there (the tile cache is pe_rows * pe_cols
            # * 2 bits wide: four block RAMs however shallow on pe8x8), leaving block RAM to the streams;
            # else block RAM, asked for: Yosys would build the shallow side ring of flip-flops (iCE40)
            style = "distributed" if _has_distributed_ram(platform) else "block"
            cmem, smem = (memory.Memory(shape=shape, depth=image.depth, init=[], attrs={"ram_style": style})
                          for shape, image in ((unsigned(self._cache.width), self._cache), (self._side.shape, self._side)))
            m.submodules.cache = cmem
            m.submodules.side = smem
            w = self.cache_write
            sb = len(w.data)      # the filler writes a symbol at a time
            crd, cwr = cmem.read_port(), cmem.write_port(granularity=sb)
            srd, swr = smem.read_port(), smem.write_port()
            entry = self.addr[:len(crd.addr)]
            m.d.comb += [crd.addr.eq(entry), crd.en.eq(self.en), srd.addr.eq(entry), srd.en.eq(self.en),
                         cwr.en.eq(w.en), cwr.addr.eq(w.addr), cwr.data.eq(Cat(*[w.data] * len(w.en))),
                         swr.en.eq(w.side_en), swr.addr.eq(w.side_addr), swr.data.eq(w.side_data),
                         lrd.addr.eq(srd.data.lm), lrd.en.eq(self.en)]
            word_codes, word_coff, word_last = crd.data, srd.data.coff, 0   # `last`: not used downstream
        else:
            m.submodules.weights = wmem = self._weights.memory()
            m.submodules.codes = cmem = self._codes.memory()
            wrd, crd = wmem.read_port(), cmem.read_port()
            m.d.comb += [wrd.addr.eq(self.addr), wrd.en.eq(self.en), lrd.addr.eq(wrd.data.lm), lrd.en.eq(self.en)]
            # the codes word: read codes_delay enabled cycles after the header, from the delayed address
            addr = Signal.like(self.addr, reset_less=True)   # its delay registers too: no reset
            m.d.comb += addr.eq(self.addr)
            caddr = delayed(m, addr, self.codes_delay, en=self.en, name="codes_addr")
            m.d.comb += [crd.addr.eq(caddr), crd.en.eq(self.en)]
            word_codes, word_coff, word_last = crd.data, wrd.data.coff, wrd.data.last
        with m.If(self.en):
            m.d.sync += [codes.eq(word_codes), coff.eq(word_coff), last.eq(word_last)]
        if self._huffman:   # the cache's codes word was read with the header: delay it to codes_latency
            codes = delayed(m, codes, self.codes_delay, en=self.en, name="codes_delay")   # reset-less, as `codes`
        m.d.comb += [self.codes.eq(codes), self.coff.eq(coff), self.last.eq(last), self.lanes.eq(lrd.data)]
        return m


def _has_distributed_ram(platform) -> bool:
    """Whether the platform's FPGA family (`terwin.hw.fpga`, asked, not named) has distributed RAM;
    False in simulation (no platform) and for a family terwin does not know."""
    family = fpga.FAMILIES.get(getattr(platform, "family", None))
    return family is not None and family.distributed_ram is not None
