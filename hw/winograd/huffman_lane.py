"""One multiply lane's items from its Huffman-coded streams (`terwin.hw.winograd.huffman_program`).

    weights{lane} ROM port A -> word feed -> HuffmanDecoder (ranks) -+-> value_table[rank] --+
    weights{lane} ROM port B -> word feed -> HuffmanDecoder (ranks) -+-> run_table[rank]   --+-> pending item -> item
    lows ROM (every lane's low bits of item k in one word, read by the stage) ---------------+

`start` (one cycle, `layer` held since the cycle before, as `mult.WeightDecoder`): both feeds restart
at the layer's first word of the lane's streams and both decoders at the layer's symbol count; the
lane's flat position restarts at the layer's `flat_init`. A pair of symbols is taken when both
decoders offer one (`take`): their ranks go to the shared tables' read ports (`value_read`,
`run_read`, synchronous; the tables are shared by every lane, one read port each) and `take` has
the stage read the low value bits (`low`). The cycle after (`got`): w = (high << LOW_BITS | low) - offset,
flat = base + run; the item before it (pending) is complete: its `last` is whether this one's target
differs (flat | (C2 - 1) differs); after the layer's last pair the pending item leaves with last = 1.
Items leave through a register (`o_stream`; never waits: the MacLane is always ready), one a cycle
from `FIRST_ITEM` cycles after `start` (the decoders sustain a symbol a cycle with a word a cycle).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..codec.huffman import HuffmanDecoder
from .huffman_program import lane_words
from .mult import WeightDecoder


def table_read_signature(code) -> wiring.Signature:
    """A lane's read port of a shared symbol table: rank in (addr, en), symbol out the cycle after."""
    return wiring.Signature({"addr": Out(range(max(2, len(code.table.symbols)))), "en": Out(1),
                             "data": In(unsigned(code.symbol_bits))})


class HuffmanLane(wiring.Component):
    """Lane `lane` of `program` (a Huffman `WinogradProgram`): items of layout `item` on `o_stream` (see the
    module docstring); it takes `start`/`layer` as `mult.WeightDecoder` does."""

    def __init__(self, program, lane: int, *, item):
        self.program, self.lane = program, lane
        self.hw = program.huffman_items
        self._item = item
        super().__init__({
            "start": In(1),
            "layer": In(range(len(program.weighted))),
            "o_stream": Out(stream.Signature(item)),
            "value_read": Out(table_read_signature(self.hw.values)),
            "run_read": Out(table_read_signature(self.hw.runs)),
            "take": Out(1),                          # a pair of symbols taken (the low bits are read)
            "low": In(unsigned(self.hw.low_bits)),   # the item's low value bits, the cycle after `take`
        })

    def elaborate(self, platform):
        m = Module()
        hw, lane, p = self.hw, self.lane, self.program
        layers = range(len(p.weighted))
        counts = [hw.counts[n][lane] for n in layers]
        max_count = max(1, max(counts))
        # the lane's value and run streams in one memory, a read port for each feed (a block RAM's two ports)
        words = lane_words(hw, lane)
        m.submodules.weights = weights = Memory(shape=unsigned(hw.values.word_bits), depth=len(words), init=words)
        decoders = []
        for kind, code, offset in (("values", hw.values, 0), ("runs", hw.runs, len(hw.values.words[lane]))):
            feed = WeightDecoder(layout=unsigned(code.word_bits), items=weights.init, read_port=weights.read_port(),
                                 bases=[offset + code.base[n][lane] for n in layers],
                                 counts=[code.nwords[n][lane] + 2 if counts[n] else 0 for n in layers])
            dec = HuffmanDecoder(code.table, symbol_bits=code.symbol_bits, word_bits=code.word_bits,
                                 max_count=max_count, symbol_memory=False)
            m.submodules[f"{kind}_feed"] = feed
            m.submodules[f"{kind}_decoder"] = dec
            wiring.connect(m, feed.o_stream, dec.i_stream)
            m.d.comb += [feed.start.eq(self.start), feed.layer.eq(self.layer), dec.start.eq(self.start)]
            decoders.append(dec)
        vdec, rdec = decoders

        # the layer's constants, from `layer` in a register (held since the cycle before `start`)
        layer = Signal.like(self.layer)
        m.d.sync += layer.eq(self.layer)

        def per_layer(values, shape, name):
            r = Signal(shape, name=name)
            m.d.comb += r.eq(Array(Const(v, shape) for v in values)[layer])
            return r
        flat_shape = unsigned(hw.flat_bits + 1)
        count = per_layer(counts, range(max_count + 1), "count")
        init = per_layer([hw.flat_init[n][lane] for n in layers], flat_shape, "flat_init")
        mask_sel = per_layer([(1 << hw.c2_log[n]) - 1 for n in layers], flat_shape, "mask_sel")
        lc_sel = per_layer(hw.c2_log, range(max(hw.c2_log) + 1), "lc_sel")
        pl_sel = per_layer(hw.per_out_log, range(max(hw.per_out_log) + 1), "pl_sel")
        m.d.comb += [vdec.count.eq(count), rdec.count.eq(count)]
        # ... held for the layer's MULT step
        mask, lc, pl = Signal.like(mask_sel), Signal.like(lc_sel), Signal.like(pl_sel)
        with m.If(self.start):
            m.d.sync += [mask.eq(mask_sel), lc.eq(lc_sel), pl.eq(pl_sel)]

        # take a pair of symbols; the tables are read, and the low bits (`lows`, read by the stage in the
        # cycle lane 0 takes: every lane takes its item k in the same cycle)
        left = Signal(range(max_count + 1))
        take = self.take
        m.d.comb += [
            take.eq(vdec.o_stream.valid & rdec.o_stream.valid & (left != 0) & ~self.start),
            vdec.o_stream.ready.eq(take), rdec.o_stream.ready.eq(take),
            self.value_read.addr.eq(vdec.o_stream.payload), self.value_read.en.eq(take),
            self.run_read.addr.eq(rdec.o_stream.payload), self.run_read.en.eq(take),
        ]
        got = Signal()
        m.d.sync += got.eq(take)
        with m.If(take):
            m.d.sync += left.eq(left - 1)

        # the pending item and the output register
        offset = 1 << (p.weight_bits - 1)
        w_new = Signal(signed(p.weight_bits + 1))
        m.d.comb += w_new.eq(Cat(self.low, self.value_read.data).as_unsigned() - offset)
        base = Signal(flat_shape)
        flat_new = Signal(flat_shape)
        m.d.comb += flat_new.eq(base + self.run_read.data)
        p_valid, p_w, p_flat = Signal(), Signal(signed(p.weight_bits)), Signal(flat_shape)
        o = self.o_stream
        emit, last = Signal(), Signal()
        with m.If(got):
            m.d.comb += [emit.eq(p_valid), last.eq((flat_new | mask) != (p_flat | mask))]
            m.d.sync += [p_valid.eq(1), p_w.eq(w_new), p_flat.eq(flat_new), base.eq(flat_new + 1)]
        with m.Elif(p_valid & (left == 0)):
            m.d.comb += [emit.eq(1), last.eq(1)]
            m.d.sync += p_valid.eq(0)
        channel = Signal(flat_shape)
        position = Signal(flat_shape)
        m.d.comb += [channel.eq(p_flat & mask), position.eq((p_flat >> lc) & ((Const(1, 8) << pl) - 1))]
        m.d.sync += [o.valid.eq(emit), o.payload.w.eq(p_w), o.payload.last.eq(last),
                     o.payload.addr.eq((channel << pl) | position)]

        with m.If(self.start):
            m.d.sync += [left.eq(count), base.eq(init), p_valid.eq(0), got.eq(0)]
        return m
