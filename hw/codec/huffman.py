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
    i_stream  (in)   the coded stream, `word_bits` a beat, most significant bit first, followed by
                     two zero words (`words`)
    o_stream  (out)  the symbols, in order; `valid` never waits on `ready`
    idle      (out)  every symbol of the stream has been decoded
    error     (out)  sticky: no code matches the next L bits (a corrupt stream or an incomplete
                     code); cleared by `start`

Each cycle the decoder looks at the next L bits of the stream (the three oldest held words shifted
by the bit offset `off`, 0 .. 2·word_bits − 1) and compares them with every length's limit at once
(canonical codes of length l are exactly the values whose top l bits lie below first[l] + count[l]
and not below the limit of l − 1): the shortest length below its limit is the code's, one-hot. The
one-hot picks the next offset among off + l for every l, computed beside the comparisons; an offset
past the first word (its top bit, a register) shifts that word out the next cycle. The code goes to
stage B, which forms the symbol's index (base[l] + code − first[l]) and reads the symbol memory
(synchronous: the symbol is `o_stream.payload` the cycle after). A code is decoded only while the
words it may span are held (3, or 2 while off < word_bits), so a stream ends with two zero words and
the loop needs no bit count. The four word slots take a word whenever at most three are full: with a
word offered every cycle the decoder sends one symbol per cycle for any mix of code lengths
(`tests/test_codec_hw.py` counts the cycles). `word_bits` is a power of two of at least L. The loop
closing in one cycle is offset -> shift -> comparisons with constants -> one-hot -> offset mux; the
index and the memory read are pipelined after it (two cycles of latency, no loss of rate).
"""
from __future__ import annotations

import functools
import operator
from math import log2 as _log2

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from terwin.codec import CanonicalTable


def words(data: bytes, nbits: int, word_bits: int) -> list[int]:
    """A coded stream cut into `word_bits`-bit words, most significant bit first, the last word
    padded with zero bits, then two more zero words (the decoder decodes a code only while the words
    after it are held): what `i_stream` takes, beat by beat."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits]
    bits = np.concatenate([bits, np.zeros((-nbits) % word_bits + 2 * word_bits, dtype=np.uint8)]).reshape(-1, word_bits)
    weights = [1 << (word_bits - 1 - k) for k in range(word_bits)]
    return [int(sum(w for w, b in zip(weights, row) if b)) for row in bits]


def log2(n: int) -> int:
    return int(_log2(n))


def check_widths(table: CanonicalTable, *, symbol_bits: int, word_bits: int) -> None:
    """A decoder's widths for `table` (ValueError if not): words a power of two holding the longest
    code, every symbol in `symbol_bits`."""
    if word_bits < table.max_length or word_bits & (word_bits - 1) or symbol_bits < 1:
        raise ValueError(f"word_bits must be a power of two of at least the longest code ({table.max_length} "
                         f"bits), symbol_bits positive")
    if max(table.symbols) >= 1 << symbol_bits:
        raise ValueError(f"symbol {max(table.symbols)} does not fit in {symbol_bits} bits")


def symbol_rom(table: CanonicalTable, symbol_bits: int) -> memory.Memory:
    """The canonical code's symbols in code order: index = a code's rank, as the decoders compute it."""
    return memory.Memory(shape=unsigned(symbol_bits), depth=len(table.symbols), init=list(table.symbols))


class HuffmanDecoder(wiring.Component):
    """See the module docstring. `table`: the canonical code; `symbol_bits`: width of a symbol."""

    def __init__(self, table: CanonicalTable, *, symbol_bits: int, word_bits: int = 16, max_count: int = 1 << 24,
                 symbol_memory: bool = True):
        check_widths(table, symbol_bits=symbol_bits, word_bits=word_bits)
        self.table = table
        # symbol_memory=False: `o_stream` gives the code's rank (its symbol's index in `table.symbols`, a
        # register in place of the symbol memory, the same latency), for decoders that share one symbol memory
        self.symbol_memory = symbol_memory
        if not symbol_memory:
            symbol_bits = max(1, (len(table.symbols) - 1).bit_length())
        self.symbol_bits = symbol_bits
        self.word_bits = word_bits
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(word_bits))),
            "o_stream": Out(stream.Signature(unsigned(symbol_bits))),
            "start": In(1),
            "count": In(range(max_count + 1)),
            "idle": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        t, L, wb = self.table, self.table.max_length, self.word_bits
        if self.symbol_memory:
            m.submodules.symbols = mem = symbol_rom(t, self.symbol_bits)
            rd = mem.read_port()

        # the held words: slots[0] the oldest, bit `off` of slots[0..2] (from the most significant) the next
        # to decode; off < 2 wb: when it reaches wb, slots[0] is used up and shifted out the next cycle
        slots = [Signal(wb, name=f"slot{i}") for i in range(4)]
        held = Signal(range(5))            # words in the slots
        off = Signal(range(2 * wb))
        off_lo, pop = off[:log2(wb)], off[log2(wb)]
        window = Cat(slots[2], slots[1], slots[0])   # slots[0] in the top bits
        peek = Signal(L)                   # the next L bits, the first in the top bit
        m.d.comb += peek.eq((window << off)[3 * wb - L:3 * wb])

        # the code's length: the shortest l whose limit first[l] + count[l] lies above the top l of the next
        # L bits (canonical codes: each length's codes follow the shorter ones), all lengths at once
        below = [peek[L - l_:] < t.first[l_] + t.count[l_] for l_ in range(1, L + 1)]
        onehot = [below[0]] + [below[k] & ~below[k - 1] for k in range(1, L)]
        # the offset after the code: off_lo + l for every l computed beside the comparisons, the one-hot picks
        advanced = Signal.like(off)
        m.d.comb += advanced.eq(functools.reduce(operator.or_, (Mux(h, off_lo + l_, 0) for l_, h in zip(range(1, L + 1), onehot))))
        # enough bits for any code: 3 words, or 2 while off < wb (registers only: not in the loop)
        enough = (held >= 3) | ((held == 2) & ~pop)
        found = Signal()
        m.d.comb += found.eq(below[-1] & enough)

        # stage B: the decoded code (its bits and its length, one-hot) waits here for the symbol memory;
        # stage C: the symbol memory's read, `o_stream`. Each stage takes when it is empty or empties.
        b_valid, b_peek, b_onehot = Signal(), Signal(L), Signal(L)
        o_valid = Signal()
        c_free = ~o_valid | self.o_stream.ready
        b_free = ~b_valid | c_free
        fire = Signal()
        remaining = Signal.like(self.count)
        index = Signal(range(max(2, len(t.symbols))))
        m.d.comb += index.eq(functools.reduce(operator.or_, (
            Mux(b_onehot[l_ - 1], (b_peek >> (L - l_)) - t.first[l_] + t.base[l_], 0)[:len(index)]
            for l_ in range(1, L + 1) if t.count[l_])))
        m.d.comb += [
            self.idle.eq(remaining == 0),
            fire.eq(found & (remaining != 0) & ~self.error & b_free & ~self.start),
            self.o_stream.valid.eq(o_valid),
            self.i_stream.ready.eq((held <= 3) & ~self.start),
        ]
        if self.symbol_memory:
            m.d.comb += [rd.addr.eq(index), rd.en.eq(b_valid & c_free), self.o_stream.payload.eq(rd.data)]
        else:
            with m.If(b_valid & c_free):
                m.d.sync += self.o_stream.payload.eq(index)
        with m.If(fire):
            m.d.sync += [b_valid.eq(1), b_peek.eq(peek), b_onehot.eq(Cat(*onehot))]
        with m.Elif(c_free):
            m.d.sync += b_valid.eq(0)
        with m.If(b_valid & c_free):
            m.d.sync += o_valid.eq(1)
        with m.Elif(self.o_stream.ready):
            m.d.sync += o_valid.eq(0)

        # consume the code; a used-up oldest word (pop, a register bit) shifts out whatever else happens
        take = Signal()
        m.d.comb += take.eq(self.i_stream.valid & self.i_stream.ready)
        kept = [Mux(take & (held == i), self.i_stream.payload, slot) for i, slot in enumerate(slots)]
        popped = [Mux(take & (held == i + 1), self.i_stream.payload, slots[i + 1] if i + 1 < len(slots) else 0)
                  for i in range(len(slots))]
        with m.If(self.start):
            m.d.sync += [held.eq(0), off.eq(0), self.error.eq(0), remaining.eq(self.count)]
        with m.Else():
            m.d.sync += [off.eq(Mux(fire, advanced, off_lo)), held.eq(held - pop + take)]
            for slot, k, p_ in zip(slots, kept, popped):
                m.d.sync += slot.eq(Mux(pop, p_, k))
            with m.If(fire):
                m.d.sync += remaining.eq(remaining - 1)
            with m.If(~below[-1] & enough & (remaining != 0)):
                m.d.sync += self.error.eq(1)
        return m
