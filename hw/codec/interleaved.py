"""A canonical Huffman decoder of two interleaved streams, one symbol a cycle, each stream's loop
closing over two cycles (for the ternary engine's weight path on the iCE40, where the one-cycle loop
of `terwin.hw.codec.huffman.HuffmanDecoder` runs at about 31 MHz).

The symbols s0 s1 s2 ... are coded as two bit streams under one canonical code: stream 0 holds the
even symbols (s0 s2 ...), stream 1 the odd ones, each `word_bits` a word, most significant bit
first, followed by two zero words (`terwin.hw.codec.huffman.words`). The decoder sends s0 s1 s2 ...
in order on `o_stream`, one a cycle.

A rigid pipeline, advancing as a whole (`go`) unless its output waits (`o_stream.valid` and not
`ready`) or the stream due lacks words (each stream must be followed by words enough to look at
after its last code: the two zero words, then its last word offered again, as the engine's feed does;
a test bench that stops offering words stops the decoder after the last symbol, harmlessly):

    A  (stream ph)      the next L bits of the stream (its three oldest words shifted by its bit
                        offset) into a register; a used-up word shifts out
    B  (stream 1 - ph)  the register against every length's limit, one-hot; the stream's offset
                        advances by the code's length
    C                   the symbol's index -> the symbol memory (synchronous read)
    out                 `o_stream`

`ph` alternates every step, so each stream's offset goes A -> B -> A: register to register in each
cycle (the shift in one, the comparisons and the offset adder in the other). `start` + `count`
begin; exactly `count` symbols are decoded (`max_count=None`: no `count`, the decoder decodes on
past the stream's end, its user taking the symbols it needs); the first is offered 3 cycles after both streams have
two words (cycle 6 after `start` with a word a cycle from the cycle after it); `error` is sticky
when no code matches.
"""
from __future__ import annotations

import functools
import operator

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from terwin.codec import CanonicalTable

from .huffman import check_widths, log2, symbol_rom


class InterleavedHuffmanDecoder(wiring.Component):
    def __init__(self, table: CanonicalTable, *, symbol_bits: int, word_bits: int = 16, max_count: int | None = 1 << 24):
        check_widths(table, symbol_bits=symbol_bits, word_bits=word_bits)
        self.table = table
        self.symbol_bits = symbol_bits
        self.word_bits = word_bits
        self._counted = max_count is not None
        super().__init__({
            "i_stream0": In(stream.Signature(unsigned(word_bits))),
            "i_stream1": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(unsigned(symbol_bits))),
            "start": In(1),
            **({"count": In(range(max_count + 1))} if max_count is not None else {}),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        t, L, wb = self.table, self.table.max_length, self.word_bits
        m.submodules.symbols = mem = symbol_rom(t, self.symbol_bits)
        rd = mem.read_port()
        ph = Signal()                      # the stream in stage A
        # symbols still to start in A, and a_left != 0 in a register (off the `go` path); without a
        # count the decoder runs on (its user takes what it needs)
        a_left = Signal.like(self.count) if self._counted else None
        more = Signal(init=int(not self._counted))
        # per stream: four word slots (slots[0] the oldest), words held, bit offset (its top bit: pop)
        slots = [[Signal(wb, name=f"s{s}_slot{i}") for i in range(4)] for s in range(2)]
        held = [Signal(range(5), name=f"s{s}_held") for s in range(2)]
        off = [Signal(range(2 * wb), name=f"s{s}_off") for s in range(2)]
        ins = [self.i_stream0, self.i_stream1]

        # stage A: the stream ph's next L bits
        win = [Cat(sl[2], sl[1], sl[0]) for sl in slots]
        window = Mux(ph, win[1], win[0])
        offset = Mux(ph, off[1], off[0])
        peek = Signal(L)
        m.d.comb += peek.eq((window << offset)[3 * wb - L:3 * wb])
        pops = [o[log2(wb)] for o in off]
        # held >= 3 and held == 2 in registers beside `held` (set from its next value): `go` fans out to
        # every register of the pipeline, and with the comparisons of `held` before it, it was the iCE40's
        # critical path (held -> enough -> go -> pop -> held)
        ge3 = [Signal(name=f"s{s}_ge3") for s in range(2)]
        eq2 = [Signal(name=f"s{s}_eq2") for s in range(2)]
        enough = [g | (e & ~p) for g, e, p in zip(ge3, eq2, pops)]
        a_enough = Mux(ph, enough[1], enough[0])
        a_fire = Signal()
        go = Signal()
        # stage B: the stream 1 - ph's code
        b_valid, b_peek = Signal(), Signal(L)
        below = [b_peek[L - l_:] < t.first[l_] + t.count[l_] for l_ in range(1, L + 1)]
        onehot = [below[0]] + [below[k] & ~below[k - 1] for k in range(1, L)]
        b_off = Mux(ph, off[0], off[1])    # the stream in B: the other one
        advanced = Signal.like(off[0])
        m.d.comb += advanced.eq(functools.reduce(operator.or_, (Mux(h, b_off + l_, 0) for l_, h in
                                                                zip(range(1, L + 1), onehot))))
        # stage C: index -> symbol memory; then the output register (the memory's)
        c_valid, c_peek, c_onehot = Signal(), Signal(L), Signal(L)
        o_valid = Signal()
        index = Signal(range(max(2, len(t.symbols))))
        m.d.comb += index.eq(functools.reduce(operator.or_, (
            Mux(c_onehot[l_ - 1], (c_peek >> (L - l_)) - t.first[l_] + t.base[l_], 0)[:len(index)]
            for l_ in range(1, L + 1) if t.count[l_])))

        m.d.comb += [
            # past the last symbol the streams' trailing zero words keep `a_enough` true
            go.eq((~o_valid | self.o_stream.ready) & a_enough & ~self.start),
            a_fire.eq(go & more),
            rd.addr.eq(index), rd.en.eq(go),
            self.o_stream.valid.eq(o_valid), self.o_stream.payload.eq(rd.data),
        ]
        with m.If(self.start):
            m.d.sync += [ph.eq(0), b_valid.eq(0), c_valid.eq(0), o_valid.eq(0), self.error.eq(0)]
            if self._counted:
                m.d.sync += [a_left.eq(self.count), more.eq(self.count != 0)]
        with m.Elif(go):
            m.d.sync += [ph.eq(~ph), b_valid.eq(a_fire), b_peek.eq(peek), c_valid.eq(b_valid),
                         c_peek.eq(b_peek), c_onehot.eq(Cat(*onehot)), o_valid.eq(c_valid)]
            if self._counted:
                with m.If(a_fire):
                    m.d.sync += [a_left.eq(a_left - 1), more.eq(a_left != 1)]
            with m.If(b_valid & ~below[-1]):
                m.d.sync += self.error.eq(1)
        with m.Elif(self.o_stream.ready):   # taken while the stream due waits for words: a bubble
            m.d.sync += o_valid.eq(0)

        # per stream: take a word whenever at most three are held; pop in its A step; advance in its B step
        for s in range(2):
            take = Signal(name=f"s{s}_take")
            m.d.comb += [ins[s].ready.eq((held[s] <= 3) & ~self.start), take.eq(ins[s].valid & ins[s].ready)]
            in_a = Signal(name=f"s{s}_in_a")
            in_b = Signal(name=f"s{s}_in_b")
            m.d.comb += [in_a.eq(go & (ph == s)), in_b.eq(go & (ph != s) & b_valid)]
            pop = in_a & pops[s]
            kept = [Mux(take & (held[s] == i), ins[s].payload, slot) for i, slot in enumerate(slots[s])]
            popped = [Mux(take & (held[s] == i + 1), ins[s].payload, slots[s][i + 1] if i + 1 < 4 else 0)
                      for i in range(4)]
            off_lo = off[s][:log2(wb)]
            held_next = held[s] - pop + take
            with m.If(self.start):
                m.d.sync += [held[s].eq(0), ge3[s].eq(0), eq2[s].eq(0), off[s].eq(0)]
            with m.Else():
                m.d.sync += [held[s].eq(held_next), ge3[s].eq(held_next >= 3), eq2[s].eq(held_next == 2)]
                for slot, k_, p_ in zip(slots[s], kept, popped):
                    m.d.sync += slot.eq(Mux(pop, p_, k_))
                with m.If(pop):
                    m.d.sync += off[s].eq(off_lo)
                with m.If(in_b):
                    m.d.sync += off[s].eq(advanced)
        return m
