"""The Winograd engine's Huffman weight path (#17): the program side (NumPy only).

A model whose weighted layers have codec `huffman` (`terwin compress --codec huffman`,
`terwin.codec.with_codec`) runs with each lane's item memory (`items{lane}`: (w, addr, last), 18 bits
an item on the default model) replaced by coded streams, decoded on chip at one item a cycle a lane
(`terwin.hw.winograd.huffman_lane`). Per item:

* a value symbol: the high bits of w + 2^(weight_bits - 1) (all but LOW_BITS = 3; 30 symbols on the
  default model, near their entropy with 8-bit codes, where whole values (222 symbols) would need
  8-bit codes for nearly all: 61,698 bits against 59,500), and its LOW_BITS low bits raw, in `lows`
  (one word per item number k of a layer holding every lane's item k: the lanes take item k in the
  same cycle);
* a run symbol: where the item sits, as a zero run. The lane's items of a layer are a contiguous
  piece of the layer's (target, channel) matrix walked in order (targets ascending, channels
  ascending within a target: `program.encode_layer`), so with the channels of a target counted up to
  C2 = the next power of two of the layer's C, item k sits at flat_k = t_k * C2 + c_k and its symbol
  is run_k = flat_k - flat_{k-1} - 1 (flat_{-1} = t_first * C2 - 1, t_first the lane's first target
  of the layer): the zero weights skipped, across targets (a run past the end of a target skips to
  the next; a target without a nonzero weight in the lane is skipped whole). The lane gets back
  addr_k = c_k * per_out + t_k mod per_out (c_k = flat_k mod C2, t_k = flat_k div C2: bit slices)
  and last_k = (t_{k+1} != t_k, or k the lane's last item of the layer): `last` needs the next item's
  run, so the decoder emits item k once item k + 1 is decoded.

One code table per kind for the whole model (every layer, every lane: the ternary path's choice),
its codes limited to MAX_CODE_BITS (8) bits so the decoders' words are 8 bits
(`terwin.hw.codec.huffman.HuffmanDecoder`: the loop is a 24-bit window, eight comparisons). A
(layer, lane) stream starts at a word boundary (`Code.base`: the word the lane's feed restarts at in
each MULT step); a lane's memory `weights{lane}` holds its value stream, its run stream and two zero
words (`lane_words`: the decoder looks at two words after a stream's last code), read through two
ports (one block RAM). Measured on the default model in docs/codecs.md ("Winograd: done").

Every lane has its own value decoder and run decoder (`HuffmanDecoder(symbol_memory=False)`: they
give the code's rank); the two symbol tables (`value_table`, `run_table`) are one memory each with a
read port per lane (as the operand memory is: `synthesis_memories` counts a copy per port).

Memory bits (`memory_bits`): width x depth of each weight-path memory as built (`memories()`: the
streams, the low bits, the two tables), plus the per-length constants of each decoder's code (first
code, count and base of each length, `CanonicalTable.bits` less the symbols), counted per decoder
(2 a lane).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from terwin import codec

MAX_CODE_BITS = 8        # what the hardware codes are limited to (raised when a table needs more symbols)
LOW_BITS = 3             # a weight's low bits, stored raw (`lows{lane}`); its high bits are the value symbol
# the cycles from the decoders' `start` (a MULT step's cycle -1) to the first item at the lane's input:
# the word feed's first word (1), the second word (2: then two are held), code (1) and rank (1) in the
# decoders, the tables' read (1), the pending item waiting for the next one's run (1), the output register
# (1) (`terwin.hw.winograd.huffman_lane`; asserted cycle by cycle by tests/test_winograd_huffman.py). A MULT step of a Huffman program lasts
# issue + FIRST_ITEM - 1 cycles where the raw one lasts issue (the raw feed's first item is at cycle 0).
FIRST_ITEM = 8
MULT_EXTRA = FIRST_ITEM - 1


def uses_huffman(dep) -> bool:
    """Whether the engine runs `dep` from the Huffman weight path (any weighted layer with codec
    huffman: then every layer's items go through it)."""
    return any(getattr(layer, "codec", "raw") == "huffman" for layer in dep.weighted_layers)


def stream_words(data: bytes, nbits: int, word_bits: int) -> list[int]:
    """A coded stream as `word_bits`-bit words, most significant bit first, the last one zero-padded."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    bits = np.concatenate([bits, np.zeros((-nbits) % word_bits, dtype=np.int64)])
    rows = bits.reshape(-1, word_bits)
    return [int(v) for v in rows @ (np.int64(1) << np.arange(word_bits - 1, -1, -1, dtype=np.int64))]


def channels_pow2(stage) -> int:
    """C2: the layer's channels a target counted to the next power of two (1 for one channel)."""
    c = stage.in_shape[0] if stage.targets_per_out > 1 else int(np.prod(stage.in_shape))
    return 1 << max(0, int(c - 1).bit_length())


def lane_symbols(stage, lane: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(value symbols, run symbols, flat_init = t_first * C2) of one lane's items of one layer, before
    the value offset (values are the weights)."""
    items, targets = stage.lane_items[lane], stage.lane_targets[lane]
    c2, per = channels_pow2(stage), stage.targets_per_out
    if not items:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    flats, k = [], 0
    for w, a, last in items:
        flats.append(targets[k] * c2 + a // per)
        k += last
    flats = np.asarray(flats, dtype=np.int64)
    init = targets[0] * c2
    runs = np.diff(np.concatenate([[init - 1], flats])) - 1
    assert (runs >= 0).all(), "a lane's items follow (target, channel) order"
    return np.asarray([w for w, _, _ in items], dtype=np.int64), runs, init


def items_from_runs(values, runs, init: int, *, c2: int, per_out: int) -> list[tuple[int, int, int]]:
    """The lane's items (w, addr, last) back from its symbols, as the decoder forms them."""
    flats = init + np.cumsum(np.asarray(runs, dtype=np.int64) + 1) - 1
    lc = c2.bit_length() - 1
    out = []
    for k, (w, f) in enumerate(zip(values, flats)):
        t, c = int(f) >> lc, int(f) & (c2 - 1)
        last = k == len(flats) - 1 or (int(flats[k + 1]) >> lc) != t
        out.append((int(w), c * per_out + (t % per_out if per_out > 1 else 0), int(last)))
    return out


@dataclass
class Code:
    """One kind's code (values or runs): the lengths over its alphabet, the symbol width, and per lane
    its stream's words and per layer the stream's first word and words."""
    lengths: np.ndarray
    symbol_bits: int
    words: list            # per lane: the layers' streams' words
    base: list             # [layer][lane]: first word
    nwords: list           # [layer][lane]: words of the stream
    nbits: int             # coded bits, all lanes and layers
    word_bits: int         # a power of two holding the longest code, at least 8 (both kinds alike: one memory)

    @cached_property
    def table(self) -> codec.CanonicalTable:
        return codec.CanonicalTable.from_lengths(self.lengths)

    @property
    def table_bits(self) -> int:
        return self.table.bits(self.symbol_bits)


@dataclass
class HuffmanItems:
    """The Huffman weight path of one Winograd program (see the module docstring)."""
    values: Code
    runs: Code
    lows: list             # per item number k of each layer: every lane's item k's low value bits (lane l at l * low_bits)
    low_bits: int
    lows_base: list        # per layer: its first word in `lows`
    counts: list           # [layer][lane]: items
    flat_init: list        # [layer][lane]: t_first * C2
    c2_log: list           # per layer: log2 C2
    per_out_log: list      # per layer: log2 targets_per_out (4: Winograd, 0: linear)
    flat_bits: int         # width of the flat position counter

    @property
    def table_copies(self) -> int:
        return len(self.values.words)


def _code(parts, symbol_bits: int, lanes: int, layers: int, min_word_bits: int = 8) -> Code:
    """parts[layer][lane]: symbols. One table over all of them; per lane the layers' streams in order."""
    allsym = np.concatenate([p for row in parts for p in row] + [np.zeros(0, np.int64)]).astype(np.int64)
    counts = np.bincount(allsym, minlength=1 << symbol_bits) if allsym.size else np.zeros(1 << symbol_bits, np.int64)
    if not counts.any():
        counts[0] = 1          # a model without a nonzero weight: a one-symbol code that codes nothing
    used = int(np.count_nonzero(counts))
    lengths = codec.code_lengths(counts, max(MAX_CODE_BITS, (used - 1).bit_length()))
    table = codec.CanonicalTable.from_lengths(lengths)
    word_bits = max(min_word_bits, 1 << (table.max_length - 1).bit_length())
    words = [[] for _ in range(lanes)]
    base = [[0] * lanes for _ in range(layers)]
    nwords = [[0] * lanes for _ in range(layers)]
    nbits = 0
    for n in range(layers):
        for lane in range(lanes):
            data, bits = codec.encode(parts[n][lane], lengths)
            ws = stream_words(data, bits, word_bits)
            base[n][lane], nwords[n][lane] = len(words[lane]), len(ws)
            words[lane] += ws
            nbits += bits
    return Code(lengths=lengths, symbol_bits=symbol_bits, words=words, base=base, nwords=nwords, nbits=nbits,
                word_bits=word_bits)


def compile_huffman(program) -> HuffmanItems:
    """The coded streams and tables of `program` (a `WinogradProgram`) from its lanes' items; checks that
    the decoder's reconstruction gives back every lane's items exactly."""
    weighted, lanes = program.weighted, program.lanes
    offset = 1 << (program.weight_bits - 1)
    low_bits = min(LOW_BITS, program.weight_bits - 1)
    vals = [[None] * lanes for _ in weighted]
    runs = [[None] * lanes for _ in weighted]
    inits = [[0] * lanes for _ in weighted]
    for n, s in enumerate(weighted):
        for lane in range(lanes):
            v, r, init = lane_symbols(s, lane)
            vals[n][lane], runs[n][lane], inits[n][lane] = v + offset, r, init
            assert items_from_runs(v, r, init, c2=channels_pow2(s), per_out=s.targets_per_out) == \
                [tuple(it) for it in s.lane_items[lane]], "the runs give back the lane's items"
    max_run = max([int(r.max()) for row in runs for r in row if r.size] + [1])
    max_flat = max([(max(t) + 1) * channels_pow2(s) for s in weighted for t in s.lane_targets if t] + [1])
    # the low bits of every lane's item k of a layer in one word (the lanes take item k in the same cycle);
    # the stage reads them as lane 0 takes its items: lane 0 has the most (the wrap-around rule fills it first)
    lows, lows_base = [], []
    for n, s in enumerate(weighted):
        assert len(s.lane_items[0]) == max(len(items) for items in s.lane_items), "lane 0 has the most items"
        lows_base.append(len(lows))
        for k in range(s.issue if any(s.lane_items) else 0):
            lows.append(sum((int(vals[n][lane][k]) & ((1 << low_bits) - 1)) << (lane * low_bits)
                            for lane in range(lanes) if k < len(vals[n][lane])))
    highs = [[v >> low_bits for v in row] for row in vals]
    high_bits, run_bits = program.weight_bits - low_bits, max(1, max_run.bit_length())
    values, runs_code = _code(highs, high_bits, lanes, len(weighted)), _code(runs, run_bits, lanes, len(weighted))
    if values.word_bits != runs_code.word_bits:     # one memory a lane holds both: one word width
        wb = max(values.word_bits, runs_code.word_bits)
        values = _code(highs, high_bits, lanes, len(weighted), wb)
        runs_code = _code(runs, run_bits, lanes, len(weighted), wb)
    return HuffmanItems(
        lows=lows, low_bits=low_bits, lows_base=lows_base, values=values, runs=runs_code,
        counts=[[len(s.lane_items[lane]) for lane in range(lanes)] for s in weighted],
        flat_init=inits, c2_log=[channels_pow2(s).bit_length() - 1 for s in weighted],
        per_out_log=[s.targets_per_out.bit_length() - 1 for s in weighted],
        flat_bits=max(1, max_flat.bit_length()))


def lane_words(hw: HuffmanItems, lane: int) -> list[int]:
    """A lane's memory: its value stream's words, its run stream's words, two zero words (the words a
    decoder looks at after a stream's last code: the run stream's first words after the values')."""
    return hw.values.words[lane] + hw.runs.words[lane] + [0, 0]


def huffman_memories(program) -> list:
    """The weight path's memories: per lane its value stream and then its run stream in one memory
    (`weights{lane}`, a read port for each decoder's feed: one block RAM with its two ports), the low
    value bits of every lane (`lows`, one word an item number), and the two symbol tables every lane's
    decoders read (one read port a lane: the decoders give ranks)."""
    from amaranth.hdl import unsigned
    from ..common.program import MemoryImage
    hw = program.huffman_items
    assert hw.values.word_bits == hw.runs.word_bits
    return [
        *(MemoryImage(f"weights{lane}", unsigned(hw.values.word_bits), len(lane_words(hw, lane)), lane_words(hw, lane))
          for lane in range(program.lanes)),
        MemoryImage("lows", unsigned(hw.low_bits * program.lanes), max(1, len(hw.lows)), hw.lows or [0]),
        *(MemoryImage(f"{kind}_table", unsigned(code.symbol_bits), len(code.table.symbols), list(code.table.symbols))
          for kind, code in (("value", hw.values), ("run", hw.runs))),
    ]


WEIGHT_PATH_PREFIXES = ("items", "weights", "lows", "value_table", "run_table")


def memory_bits(program) -> dict:
    """Bits of the weight path's memories as built: raw (the `items{lane}` memories) or Huffman (the
    value and run streams, and each lane's two decoders' tables: `table_copies` copies of each)."""
    out = {m.name: m.width * m.depth for m in program.memories() if m.name.rstrip("0123456789") in WEIGHT_PATH_PREFIXES}
    if program.huffman:
        hw = program.huffman_items
        # each lane's two decoders hold their code's per-length constants (first code, count, base)
        out["decoder_constants"] = hw.table_copies * sum(
            c.table_bits - len(c.table.symbols) * c.symbol_bits for c in (hw.values, hw.runs))
    out["total"] = sum(out.values())
    return out
