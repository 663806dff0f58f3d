"""A table-driven canonical Huffman decoder: coded words in, one symbol per cycle out.

The code is a `terwin.codec.CanonicalTable` (the lengths stored with a layer, `codec_lengths`),
built into the decoder as constants: for each length l = 1 .. L (L = the longest code), the first
code, the number of codes and the index of the first symbol of that length in the symbol memory
(the used symbols sorted by (length, symbol): `depth` = symbols used, `symbol_bits` wide).

    start     (in)   begin a stream of `count` symbols: drop the bits held (the padding after the
                     last stream's last code); the next word is the new stream's first. The
                     decoder decodes exactly `count` symbols, then waits for the next `start`
                     (the last symbol may still wait in `o_stream`)
    count     (in)   symbols of the stream, read with `start`
    i_stream  (in)   the coded stream, `word_bits` a beat, most significant bit first (`words`)
    o_stream  (out)  the symbols, in order; `valid` never waits on `ready`
    idle      (out)  every symbol of the stream has been decoded
    error     (out)  sticky: L or more bits are held and no code matches them (a corrupt stream or
                     an incomplete code); cleared by `start`

Each cycle the decoder compares the top L bits of its bit buffer with every length's range of
codes at once (L comparators; the shortest match is the code), shifts the code out and reads its
symbol from the symbol memory (synchronous: the symbol is `o_stream.payload` the next cycle). So
one symbol leaves per cycle while the buffer holds the next code, and `i_stream` refills the
buffer one word at a time whenever `word_bits` free bits are left. The buffer is 2L + word_bits - 1
bits: with word_bits >= L, a word every cycle keeps at least L bits in it, so the decoder sustains
one symbol per cycle for any mix of code lengths (tested in `tests/test_codec_hw.py`).
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from terwin.codec import CanonicalTable


def words(data: bytes, nbits: int, word_bits: int) -> list[int]:
    """A coded stream cut into `word_bits`-bit words, most significant bit first, the last word
    padded with zero bits: what `i_stream` takes, beat by beat."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits]
    bits = np.concatenate([bits, np.zeros((-nbits) % word_bits, dtype=np.uint8)]).reshape(-1, word_bits)
    weights = [1 << (word_bits - 1 - k) for k in range(word_bits)]
    return [int(sum(w for w, b in zip(weights, row) if b)) for row in bits]


class HuffmanDecoder(wiring.Component):
    """See the module docstring. `table`: the canonical code; `symbol_bits`: width of a symbol."""

    def __init__(self, table: CanonicalTable, *, symbol_bits: int, word_bits: int = 16, max_count: int = 1 << 24):
        if word_bits < 1 or symbol_bits < 1:
            raise ValueError("word_bits and symbol_bits must be positive")
        if max(table.symbols) >= 1 << symbol_bits:
            raise ValueError(f"symbol {max(table.symbols)} does not fit in {symbol_bits} bits")
        self.table = table
        self.symbol_bits = symbol_bits
        self.word_bits = word_bits
        self.buffer_bits = 2 * table.max_length + word_bits - 1
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(unsigned(symbol_bits))),
            "start": In(1),
            "count": In(range(max_count + 1)),
            "idle": Out(1),
            "error": Out(1),
        })

    @property
    def sustains_one_symbol_per_cycle(self) -> bool:
        return self.word_bits >= self.table.max_length

    def elaborate(self, platform):
        m = Module()
        t, L, W, wb = self.table, self.table.max_length, self.buffer_bits, self.word_bits
        m.submodules.symbols = mem = memory.Memory(shape=unsigned(self.symbol_bits), depth=len(t.symbols),
                                                   init=list(t.symbols))
        rd = mem.read_port()

        buf = Signal(W)                    # the held bits, left-aligned: bit W-1 is the next to decode
        held = Signal(range(W + 1))        # how many
        peek = buf[W - L:]

        # every length at once: does the top l bits' code fall in that length's range?
        found = Signal()
        length = Signal(range(L + 1))
        index = Signal(range(max(2, len(t.symbols))))
        for l_ in range(L, 0, -1):         # later statements win: the shortest match is taken
            if t.count[l_] == 0:
                continue
            code = peek[L - l_:]
            hit = (code >= t.first[l_]) & (code < t.first[l_] + t.count[l_]) & (held >= l_)
            with m.If(hit):
                m.d.comb += [found.eq(1), length.eq(l_), index.eq(code - t.first[l_] + t.base[l_])]

        o_valid = Signal()
        fire = Signal()
        remaining = Signal.like(self.count)
        m.d.comb += [
            self.idle.eq(remaining == 0),
            fire.eq(found & (remaining != 0) & ~self.error & (~o_valid | self.o_stream.ready) & ~self.start),
            rd.addr.eq(index), rd.en.eq(fire),
            self.o_stream.valid.eq(o_valid), self.o_stream.payload.eq(rd.data),
            self.i_stream.ready.eq((held <= W - wb) & ~self.start),
        ]
        with m.If(fire):
            m.d.sync += o_valid.eq(1)
        with m.Elif(self.o_stream.ready):
            m.d.sync += o_valid.eq(0)

        consume = Signal(range(L + 1))
        kept = Signal(range(W + 1))
        take = Signal()
        m.d.comb += [consume.eq(Mux(fire, length, 0)), kept.eq(held - consume),
                     take.eq(self.i_stream.valid & self.i_stream.ready)]
        shifted = Signal(W)
        m.d.comb += shifted.eq((buf << consume)[:W])
        with m.If(self.start):
            m.d.sync += [buf.eq(0), held.eq(0), self.error.eq(0), remaining.eq(self.count)]
        with m.Else():
            with m.If(fire):
                m.d.sync += remaining.eq(remaining - 1)
            with m.If(take):
                word = Signal(W)
                pos = Signal(range(W))     # the word goes right below the kept bits (kept <= W - wb when taking)
                m.d.comb += [word.eq(self.i_stream.payload), pos.eq(W - wb - kept)]
                m.d.sync += [buf.eq(shifted | (word << pos)[:W]), held.eq(kept + wb)]
            with m.Else():
                m.d.sync += [buf.eq(shifted), held.eq(kept)]
            with m.If(~found & (held >= L) & (remaining != 0)):
                m.d.sync += self.error.eq(1)
        return m
