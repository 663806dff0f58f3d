"""The Huffman weight path's producer: decodes the weight stream into the tile rings, ahead of the sequencer.

See `terwin.hw.ternary.huffman_program` for the memories. `TileCacheFiller`:

* `hold` (in, a register: high while the image loads, falling with its last beat, the sequencer's
  `start_image`): every register of the filler and its decoder at its start value (the decoder at
  the stream's first word, tile 0; the side walker at the tile mask's first bit), running from the
  cycle after. Not the loader's `done` itself: that is combinational from the input stream's
  handshake, and as the filler's reset it was the iCE40's critical path (into every register of the
  walker and the decoder); a register that falls in the same cycle leaves every cycle as it was;
* `issue`, `last`, `group_end`, `weight_addr` (in): the sequencer's issue, its tile's `last` flag,
  whether it ends its output group (the group's last job's last tile), and its word: the word
  after a group's end is the first the sequencer may still read (`cons_base`; `limit` =
  cons_base + depth - 1, the filler's, as a register would hold it: the ended group's limit of the
  cycle before or the one held, so the late `issue` and `group_end` enter one flip-flop);
* `cache_write` (out): one tile's codes a write, at entry word % depth (`tile_cache`); beside it
  (`side_*`) one tile's lane-map row and channel offset a write, at the same entry (`tile_side`);
* `ready` (out): the tile at `weight_addr` is in both rings (`written > weight_addr`, computed a
  cycle ahead into a register, and `side > weight_addr` with the side count of the cycle before):
  the top issues only then.

Both rings hold `depth` tiles (a power of two at least the largest output group): tile t overwrites
tile t - depth, so it may be written once the sequencer has finished the output group of tile
t - depth (t <= limit, as the filler had it the cycle before: `allowed`, a register).

The decoder (`terwin.hw.codec.interleaved.InterleavedHuffmanDecoder`, the model's one table as
constants, its two streams the even and odd symbols) sends a symbol a cycle; the filler takes it
while allowed. `symbols_per_tile` symbols make a tile (symbol k of a tile in bits k * symbol_bits ..:
the codes' row-major, lane-major order), each written into the tile's entry in the cycle it is
taken (a write port of symbol granularity), the tile complete with its last. The side
walker reads the tile mask (`tile_positions`: a bit per tile position of every output group, in the
raw words' order) one position a cycle (the bit at its position in a register, `cur`, the memory
reading the next position's ahead: the memory's output feeds nothing else), counting each position's
tap group and channel group from
the stage's constants (`walk_constants`); at a visited tile it writes its side entry (waiting
while not allowed), a pruned one it passes. Timing (`terwin.hw.ternary.huffman_cycles` models it
exactly): the first symbol is taken `FIRST_SYMBOL` cycles after `hold`'s last cycle (`start`), the first
mask bit seen the cycle after it; `written`, `side` and `limit` change the cycle after a write or an issue,
`allowed` and `ready` the cycle after those.
"""
from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from terwin.hw.codec.interleaved import InterleavedHuffmanDecoder

from . import layouts
from .huffman_program import FIRST_SYMBOL, side_layout, tile_positions, walk_constants  # noqa: F401


def cache_write_signature(program) -> wiring.Signature:
    hw = program.huffman_weights
    depth = hw.cache_depth
    return wiring.Signature({
        # one symbol a write: `en` one-hot, symbol k of the tile in entry addr's bits k * symbol_bits ..
        "en": Out(hw.symbols_per_tile),
        "addr": Out(range(depth)),
        "data": Out(hw.symbol_bits),
        # the side walker's writes: a tile's lane-map row and channel offset into `tile_side`
        "side_en": Out(1),
        "side_addr": Out(range(depth)),
        "side_data": Out(side_layout(program)),
    })


class TileCacheFiller(wiring.Component):
    def __init__(self, program):
        self._program = program
        words = max(2, program.weight_word_count + 1)
        super().__init__({
            "hold": In(1),
            "issue": In(1),
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
        m.d.comb += [dec.start.eq(self.hold), self.error.eq(dec.error)]

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
                         rd.addr.eq(Mux(self.hold, 0, faddr + step))]
            with m.If(self.hold):
                m.d.sync += [faddr.eq(0), fvalid.eq(1)]
            with m.Elif(step):
                m.d.sync += faddr.eq(faddr + 1)

        # the producer: tile `written` (entry written % depth), symbol `sym` of it
        written = self.written
        depth = hw.cache_depth
        n_words = p.weight_word_count
        sym = Signal(range(max(2, per_tile)))
        allowed = Signal()
        ready = Signal()
        m.d.comb += dec.o_stream.ready.eq(allowed & ~self.hold)
        accept = dec.o_stream.valid & dec.o_stream.ready
        tile_done = accept & (sym == per_tile - 1)
        # ready = written > weight_addr and side > weight_addr, in a register (off the sequencer's issue
        # path, an iCE40 critical path): next cycle's word is this one + 1 after an issue inside a job or
        # at a group's end, the group's first word (a tile already written) after a job's last tile, else
        # this one (count_next compared without its adder: the comparisons are of registers, the selects
        # late)
        wa = self.weight_addr
        side = Signal.like(written)
        side_write = Signal()

        def ready_next(count, inc):
            stay = Mux(inc, count >= wa, count > wa)                  # count_next > wa
            step = Mux(inc, count > wa, count > wa + 1)               # count_next > wa + 1
            return Mux(self.issue, Mux(~self.last | self.group_end, step, 1), stay)
        m.d.comb += self.ready.eq(ready)
        with m.If(self.hold):
            m.d.sync += ready.eq(0)
        with m.Else():
            # the side count as it was (not side_next): the tile mask's read stays off this path (a side
            # entry is seen a cycle later; the walker runs ahead of the decoder but at the image's start)
            m.d.sync += ready.eq(ready_next(written, tile_done) & ready_next(side, 0))
        w = self.cache_write
        # each symbol straight into its place in the tile's entry (byte enables: no tile assembly register);
        # the entry's old tile is free before the tile's first symbol (`allowed` holds for every symbol)
        m.d.comb += [w.en.eq(Mux(accept, 1 << sym, 0)), w.addr.eq(written[:len(w.addr)] if len(w.addr) else 0),
                     w.data.eq(dec.o_stream.payload)]
        # the ring: tile t goes into entry t % depth over tile t - depth, which the sequencer never reads
        # again once it has issued the last tile of that tile's output group (t - depth < cons_base, the
        # word after the last group it finished: depth >= the largest group, so the group it is on
        # always fits, and the next group's tiles can be written before its first issue). `limit` =
        # cons_base + depth - 1, as a register would hold it; allowed (a register) = written_next <= limit.
        # The sequencer's issue and group_end (late: its counters' comparisons) go into one flip-flop
        # (`ended`, the word's limit beside it), not the enable of every bit of `limit`: limit = the limit
        # of a group ended the cycle before, else the one held (the same value, a cycle for the late
        # signals instead of a fan-out)
        width = range(n_words + depth + 1)
        limit, held_limit, ended_limit = Signal(width), Signal(width), Signal(width)
        ended = Signal()
        m.d.comb += limit.eq(Mux(ended, ended_limit, held_limit))
        m.d.sync += ended_limit.eq(self.weight_addr + depth)
        with m.If(self.hold):
            m.d.sync += [held_limit.eq(depth - 1), ended.eq(0)]
        with m.Else():
            m.d.sync += [held_limit.eq(limit), ended.eq(self.issue & self.group_end)]
        done = Signal()          # the last tile is written: take no more symbols
        done_next = done | (tile_done & (written == n_words - 1))
        with m.If(self.hold):
            m.d.sync += [allowed.eq(1), done.eq(0)]
        with m.Else():
            m.d.sync += [allowed.eq(~done_next & Mux(tile_done, written < limit, written <= limit)),
                         done.eq(done_next)]
        with m.If(self.hold):
            m.d.sync += [written.eq(0), sym.eq(0)]
        with m.Elif(accept):
            m.d.sync += sym.eq(Mux(sym == per_tile - 1, 0, sym + 1))
            with m.If(tile_done):
                m.d.sync += written.eq(written + 1)
        self._side_walker(m, side, side_write, limit)
        return m

    def _side_walker(self, m, side, side_write, limit):
        """The side walker: the tile mask (`tile_positions`), one position a cycle, in the raw words'
        order; at a visited tile it writes its lane-map row and channel offset into `tile_side` (entry
        side % depth, the same ring rule as the codes), counted from the stage's constants
        (`walk_constants`)."""
        p = self._program
        w = self.cache_write
        positions = len(tile_positions(p))
        k = walk_constants(p)
        image = p.memory("tile_mask")      # in block RAM, asked for (Yosys would make the small ROM of logic)
        m.submodules.tile_mask = mmem = memory.Memory(shape=image.shape, depth=image.depth, init=image.init,
                                                      attrs={"ram_style": "block", "rom_style": "block"})
        mrd = mmem.read_port()
        pos = Signal(range(positions))
        # the bit at `pos` in a register, the memory reading the next position's ahead (its output, slow
        # out of a block RAM, goes only into `cur`; the ECP5's critical path went from it through the
        # walker's step into the memory's next address)
        mask0 = int(image.init[0]) if len(image.init) else 0
        cur = Signal(init=mask0)
        wdone = Signal()
        side_allowed = Signal()
        n_st = len(p.stages)
        stage = Signal(range(max(2, n_st)))
        og = Signal(range(max(2, max(k["og_last"]) + 1)))
        tg = Signal(range(max(2, max(k["tg_last"]) + 1)))
        cg = Signal(range(max(2, max(k["cg_last"]) + 1)))
        sl = side_layout(p)
        lm = Signal(sl["lm"].shape)
        lm_group = Signal.like(lm)
        coff = Signal(sl["coff"].shape)

        def const(name):
            return Array(C(v, max(1, max(k[name]).bit_length())) for v in k[name])[stage] if n_st > 1 else \
                C(k[name][0], max(1, k[name][0].bit_length()))
        cg_end, tg_end, og_end = cg == const("cg_last"), tg == const("tg_last"), og == const("og_last")
        adv = ~wdone & (~cur | side_allowed)
        last = positions - 1
        ahead1 = Mux(pos >= last, last, pos + 1)          # the memory holds position pos + 1 ...
        ahead2 = Mux(pos + 1 >= last, last, pos + 2)      # ... or pos + 2 after a step (past the end: the last)
        m.d.comb += [side_write.eq(adv & cur), mrd.en.eq(1),
                     mrd.addr.eq(Mux(self.hold, min(1, last), Mux(adv, ahead2, ahead1))),
                     w.side_en.eq(side_write & ~self.hold), w.side_addr.eq(side[:len(w.side_addr)] if len(w.side_addr) else 0),
                     w.side_data.lm.eq(lm), w.side_data.coff.eq(coff)]
        with m.If(self.hold):
            m.d.sync += side_allowed.eq(1)
        with m.Else():
            m.d.sync += side_allowed.eq(Mux(side_write, side < limit, side <= limit))
        with m.If(self.hold):
            m.d.sync += [pos.eq(0), cur.eq(mask0), wdone.eq(0), side.eq(0), stage.eq(0), og.eq(0), tg.eq(0),
                         cg.eq(0), lm.eq(0), lm_group.eq(0), coff.eq(0)]
        with m.Elif(adv):
            m.d.sync += [side.eq(side + side_write), wdone.eq(pos == positions - 1), cur.eq(mrd.data)]
            with m.If(pos != positions - 1):
                m.d.sync += pos.eq(pos + 1)
            with m.If(~cg_end):
                m.d.sync += [cg.eq(cg + 1), coff.eq(coff + const("plane"))]
            with m.Else():
                m.d.sync += [cg.eq(0), coff.eq(0)]
                with m.If(~tg_end):
                    m.d.sync += [tg.eq(tg + 1), lm.eq(lm + 1)]
                with m.Else():
                    m.d.sync += tg.eq(0)
                    with m.If(~og_end):
                        m.d.sync += [og.eq(og + 1), lm.eq(lm_group)]
                    with m.Else():   # the next stage: its lane-map rows follow this one's
                        m.d.sync += [og.eq(0), stage.eq(stage + 1), lm.eq(lm + 1), lm_group.eq(lm + 1)]
