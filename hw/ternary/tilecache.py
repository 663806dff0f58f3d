"""The Huffman weight path's producer: decodes the weight stream into the tile cache, a group ahead.

See `terwin.hw.ternary.huffman_program` for the memories. `TileCacheFiller`:

* `start` (in): an image begins (the loader's last beat, with the sequencer's `start_image`): the
  decoder restarts at the stream's first word, tile 0, output group 0;
* `issue`, `first`, `last`, `group_end`, `weight_addr` (in): the sequencer's issue, its tile's
  `first`/`last` flags, whether it ends its output group, and its word: the word of a job's first
  tile is the current output group's first word (`cons_base`, a register);
* `cache_write` (out): one tile's codes a write, at entry word % cache_depth;
* `ready` (out): the tile at `weight_addr` is in the cache (`written > weight_addr`, computed a cycle
  ahead into a register): the top issues only then.

The decoder (`terwin.hw.codec.interleaved.InterleavedHuffmanDecoder`, the model's one table as
constants, its two streams the even and odd symbols) sends a symbol a cycle; the filler takes it
while its output group h may be written (`allowed`, a register): h <= 1, or the sequencer had
issued the first tile of group h - 1 by the cycle before last (so group h - 2's entries are free:
the ring holds any two consecutive groups). `symbols_per_tile` symbols make a tile (symbol k of a tile in bits
k * symbol_bits ..: the codes' row-major, lane-major order), written in the cycle its last symbol is
taken. Timing (`terwin.hw.ternary.cycles` models it exactly): the first symbol is taken
`FIRST_SYMBOL` cycles after `start`; then one a cycle while allowed; `written` and the group
registers change the cycle after a write, `cons_base` the cycle after an issue, `allowed` the cycle
after those.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from terwin.hw.codec.interleaved import InterleavedHuffmanDecoder

from . import layouts
from .huffman_program import FIRST_SYMBOL  # noqa: F401  (the timing the cycle model counts with)


def cache_write_signature(program) -> wiring.Signature:
    depth = program.huffman_weights.cache_depth
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(range(depth)),
        "data": Out(layouts.tile_codes_layout(program.spec)),
    })


class TileCacheFiller(wiring.Component):
    def __init__(self, program):
        self._program = program
        words = max(2, program.weight_word_count + 1)
        super().__init__({
            "start": In(1),
            "issue": In(1),
            "first": In(1),
            "last": In(1),
            "group_end": In(1),
            "weight_addr": In(range(max(2, program.weight_word_count))),
            "ready": Out(1),
            "cache_write": Out(cache_write_signature(program)),
            "written": Out(range(words)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._program
        hw = p.huffman_weights
        per_tile, sb = hw.symbols_per_tile, hw.symbol_bits
        wb = p.memory("weight_stream0").width
        # no symbol count in the decoder (a 12-bit counter on its enable: the iCE40's critical path): the
        # filler stops taking symbols after the last group's last tile
        m.submodules.decoder = dec = InterleavedHuffmanDecoder(hw.table, symbol_bits=sb, word_bits=wb,
                                                               max_count=None)
        m.d.comb += [dec.start.eq(self.start), self.error.eq(dec.error)]

        # each stream's words into the decoder, one a cycle: the read port holds word `faddr` (the last
        # word, a zero, again once past the end)
        for i, ws in enumerate(hw.words):
            smem = p.memory(f"weight_stream{i}").memory()
            m.submodules[f"stream{i}"] = smem
            rd = smem.read_port()
            port = dec.i_stream0 if i == 0 else dec.i_stream1
            faddr = Signal(range(len(ws)), name=f"faddr{i}")
            fvalid = Signal(name=f"fvalid{i}")
            step = Signal(name=f"step{i}")
            m.d.comb += [step.eq(port.valid & port.ready & (faddr != len(ws) - 1)),
                         port.valid.eq(fvalid), port.payload.eq(rd.data), rd.en.eq(1),
                         rd.addr.eq(Mux(self.start, 0, faddr + step))]
            with m.If(self.start):
                m.d.sync += [faddr.eq(0), fvalid.eq(1)]
            with m.Elif(step):
                m.d.sync += faddr.eq(faddr + 1)

        # the producer: tile `written` (entry written % depth), symbol `sym` of it
        written = self.written
        depth = hw.cache_depth
        n_words = p.weight_word_count
        sym = Signal(range(max(2, per_tile)))
        buf = Signal(sb * (per_tile - 1)) if per_tile > 1 else None
        allowed = Signal()
        ready = Signal()
        m.d.comb += dec.o_stream.ready.eq(allowed & ~self.start)
        accept = dec.o_stream.valid & dec.o_stream.ready
        tile_done = accept & (sym == per_tile - 1)
        # ready = written > weight_addr, in a register (off the sequencer's issue path, an iCE40 critical
        # path): next cycle's word is this one + 1 after an issue inside a job or at a group's end, the
        # group's first word (a tile already written) after a job's last tile, else this one
        # (written_next compared without its adder: the comparisons are of registers, the selects late)
        wa = self.weight_addr
        stay = Mux(tile_done, written >= wa, written > wa)                  # written_next > wa
        step = Mux(tile_done, written > wa, written > wa + 1)               # written_next > wa + 1
        on_issue = Mux(~self.last | self.group_end, step, 1)
        m.d.comb += self.ready.eq(ready)
        with m.If(self.start):
            m.d.sync += ready.eq(0)
        with m.Else():
            m.d.sync += ready.eq(Mux(self.issue, on_issue, stay))
        w = self.cache_write
        m.d.comb += [w.en.eq(tile_done), w.addr.eq(written[:len(w.addr)] if len(w.addr) else 0),
                     w.data.eq(Cat(buf, dec.o_stream.payload) if buf is not None else dec.o_stream.payload)]
        # the ring: tile t goes into entry t % depth over tile t - depth, which the sequencer never reads
        # again once its output group began after it (t - depth < cons_base: depth >= the largest group,
        # so the current group always fits). `limit` = cons_base + depth - 1, a register beside cons_base;
        # allowed (a register) = written_next - depth < cons_base, i.e. written_next <= limit
        limit = Signal(range(n_words + depth + 1))
        with m.If(self.start):
            m.d.sync += limit.eq(depth - 1)
        with m.Elif(self.issue & self.first):
            m.d.sync += limit.eq(self.weight_addr + (depth - 1))
        done = Signal()          # the last tile is written: take no more symbols
        done_next = done | (tile_done & (written == n_words - 1))
        with m.If(self.start):
            m.d.sync += [allowed.eq(1), done.eq(0)]
        with m.Else():
            m.d.sync += [allowed.eq(~done_next & Mux(tile_done, written < limit, written <= limit)),
                         done.eq(done_next)]
        with m.If(self.start):
            m.d.sync += [written.eq(0), sym.eq(0)]
        with m.Elif(accept):
            if buf is not None:
                m.d.sync += buf.eq(Cat(buf[sb:], dec.o_stream.payload))
            m.d.sync += sym.eq(Mux(sym == per_tile - 1, 0, sym + 1))
            with m.If(tile_done):
                m.d.sync += written.eq(written + 1)
        return m
