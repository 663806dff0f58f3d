"""The ternary engine's weights as one canonical-Huffman stream, decoded on chip into a tile cache.

A model whose weighted layers have codec `huffman` (`terwin compress --codec huffman`) compiles to
a program (`TernaryProgram.huffman`) whose weight path is:

    weight_stream0/1 ROMs -> InterleavedHuffmanDecoder -> TileCacheFiller -> tile_cache RAM -> TileDecoder
                                                                           tile_info ROM ->

* `weight_stream0`, `weight_stream1`: every kept tile's 2-bit codes, all stages in the order the sequencer first visits
  them (output group by output group, each group's kept tiles in TileGrid order: the raw weight
  memory's word order), cut into symbols of `terwin.codec.ternary_group(spec)` lanes (G = 4 on
  pe8x8), coded with ONE canonical code for the whole model (length-limited to 12 bits, or the
  fewest bits that fit the symbols used; 8 costs ternary-50 1.5 % more stream bits than 12, and
  halves the decoder's words and shifter); the even symbols in stream 0, the odd ones in stream 1
  (`terwin.hw.codec.interleaved`: each stream's decode loop gets two cycles, the decoder still sends
  one symbol a cycle), each `word_bits` (the next power of two of the longest code, at least 8) a
  word, followed by two zero words. One table lets one
  decoder with its table as constants decode the whole image's stream in one pass (`start` once per
  image): no per-group offsets, no table switching.
* `tile_info`: per kept tile the raw word's side fields (lane-map row, channel offset, `last`).
* `tile_cache`: `cache_depth` tiles of codes (a power of two at least the largest sum of two
  consecutive output groups' tiles), a ring: tile t (its word number) in entry t % cache_depth.
  The filler decodes an output group while the array computes over the group before it; the
  sequencer issues a tile only once it is in the cache.

NumPy only (the cycle model reads `symbols_per_tile` and `cache_depth`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from terwin import codec

# start -> the streams' first words read (1) -> two words taken (2) -> shift (1) -> decode (1) -> index
# and symbol memory (1): the decoder offers its first symbol in cycle start + 6 (`terwin.hw.ternary.tilecache`)
FIRST_SYMBOL = 6
MAX_CODE_BITS = 8        # what the hardware code is limited to (raised only when the symbols need more: never
                         # for G = 4, at most 81 symbols); short codes keep the decoder small (iCE40)


def uses_huffman(dep) -> bool:
    """Whether the engine runs `dep` from the Huffman-coded weight path (any layer with codec huffman:
    then every layer's tiles go through it, one stream)."""
    return any(getattr(layer, "codec", "raw") == "huffman" for layer in dep.weighted_layers)


def stream_words(data: bytes, nbits: int, word_bits: int) -> list[int]:
    """The coded stream as `word_bits`-bit words, most significant bit first, zero-padded, then two
    zero words (what `terwin.hw.codec.huffman.HuffmanDecoder` takes)."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    bits = np.concatenate([bits, np.zeros((-nbits) % word_bits + 2 * word_bits, dtype=np.int64)])
    rows = bits.reshape(-1, word_bits)
    return [int(v) for v in rows @ (np.int64(1) << np.arange(word_bits - 1, -1, -1, dtype=np.int64))]


@dataclass
class HuffmanWeights:
    """The Huffman weight path of one program (see the module docstring)."""
    lengths: np.ndarray          # code length per symbol of the alphabet (0: unused)
    symbol_bits: int             # 2 * G
    symbols_per_tile: int        # pe_rows * pe_cols / G
    symbols: np.ndarray          # the whole stream's symbols
    streams: tuple            # ((data, nbits) of the even symbols, (data, nbits) of the odd ones)
    cache_depth: int

    @cached_property
    def table(self) -> codec.CanonicalTable:
        return codec.CanonicalTable.from_lengths(self.lengths)

    @property
    def word_bits(self) -> int:
        return max(8, 1 << (self.table.max_length - 1).bit_length())

    @cached_property
    def words(self) -> tuple[list[int], list[int]]:
        return tuple(stream_words(data, nbits, self.word_bits) for data, nbits in self.streams)

    @property
    def nbits(self) -> int:
        return sum(nbits for _, nbits in self.streams)

    @property
    def count(self) -> int:
        return int(self.symbols.size)

    @property
    def table_bits(self) -> int:
        return self.table.bits(self.symbol_bits)


def compile_huffman(program) -> HuffmanWeights:
    """The stream, code and cache of `program` (a `TernaryProgram`), from its layers' weights: the
    symbols of each stage's tiles (`terwin.codec.weight_symbols`, the same tiles as the raw words)."""
    dep, spec = program.dep, program.spec
    g = codec.ternary_group(spec)
    per_tile = spec.pe_rows * spec.pe_cols // g
    parts = []
    for s in program.stages:
        layer = dep.layers[s.index]
        sym = codec.weight_symbols(layer, spec)
        assert sym.size == int(s.og_counts.sum()) * per_tile, "the stream's tiles are the engine's kept tiles"
        parts.append(sym)
    symbols = np.concatenate(parts).astype(np.int64)
    size = 1 << (2 * g)
    counts = np.bincount(symbols, minlength=size)
    used = int(np.count_nonzero(counts))
    lengths = codec.code_lengths(counts, max(MAX_CODE_BITS, (used - 1).bit_length()))
    streams = tuple(codec.encode(part, lengths) for part in (symbols[0::2], symbols[1::2]))
    # a ring of tiles at least the largest output group (the group the sequencer is on stays whole while
    # the filler writes ahead into the rest), a power of two (entry = word % depth: the word's low bits)
    depth = 1 << max(1, int(program.og_counts.max()) - 1).bit_length()
    return HuffmanWeights(lengths=lengths, symbol_bits=2 * g, symbols_per_tile=per_tile, symbols=symbols,
                          streams=streams, cache_depth=depth)


WEIGHT_PATH = ("weights", "tile_info", "weight_stream0", "weight_stream1", "tile_cache")


def memory_bits(program) -> dict:
    """Bits of the weight path's memories: raw (the `weights` words) or Huffman (stream, side info,
    cache, decoder table), from `program.memories()` (widths as built)."""
    mems = {m.name: m for m in program.memories()}
    out = {name: mems[name].width * mems[name].depth for name in WEIGHT_PATH if name in mems}
    if program.huffman:
        out["huffman_table"] = program.huffman_weights.table_bits
    out["total"] = sum(out.values())
    return out
