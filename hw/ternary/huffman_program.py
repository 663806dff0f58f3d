"""The ternary engine's weights as one canonical-Huffman stream, decoded on chip into tile rings.

A model whose weighted layers have codec `huffman` (`terwin compress --codec huffman`) compiles to
a program (`TernaryProgram.huffman`) whose weight path is:

    weight_stream0/1 ROMs -> InterleavedHuffmanDecoder -> TileCacheFiller -> tile_cache RAM -> TileDecoder
    tile_mask ROM         -> side walker (in the filler) ----------------> tile_side RAM  ->

* `weight_stream0`, `weight_stream1`: every kept tile's 2-bit codes, all stages in the order the sequencer first visits
  them (output group by output group, each group's kept tiles in TileGrid order: the raw weight
  memory's word order), cut into symbols of `terwin.codec.ternary_group(spec)` lanes (G = 4 on
  pe8x8), coded with ONE canonical code for the whole model (length-limited to `MAX_CODE_BITS`, or
  the fewest bits that fit the symbols used; 8 costs ternary-50 1.5 % more stream bits than 12, and
  halves the decoder's words and shifter); the even symbols in stream 0, the odd ones in stream 1
  (`terwin.hw.codec.interleaved`: each stream's decode loop gets two cycles, the decoder still sends
  one symbol a cycle), each `word_bits` (the next power of two of the longest code, at least 8) a
  word, followed by one zero word. One table lets one decoder with its table as constants decode
  the whole image's stream in one pass (`start` once per image): no per-group offsets, no table
  switching.
* `tile_mask`: one bit per tile position (every stage, output group, tap group, channel group),
  set where the engine visits a tile: what the raw words' lane-map row and channel offset say
  (`walk_side` counts them back from it; `huffman_memories` checks). 1 bit a position instead of
  lm_bits + coff_bits + 1 a visited tile.
* `tile_cache`, `tile_side`: `cache_depth` tiles (a power of two at least the largest output
  group), rings: tile t (its word number) in entry t % cache_depth, its codes in one, its lane-map
  row and channel offset in the other. The filler decodes ahead while the array computes over the
  current group (whole in the ring); the sequencer issues a tile only once it is in both.

NumPy only at import (the cycle model reads `symbols_per_tile`, `cache_depth`, `tile_positions`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from terwin import codec

from ..common.program import MemoryImage

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
    """The coded stream as `word_bits`-bit words, most significant bit first, zero-padded, then ONE
    zero word: the filler's feed offers the last word again once past the end, so the decoder sees
    zero words after the stream for as long as it looks (all zeros is a code: the first of the
    canonical code's shortest length), as the two zero words `terwin.hw.codec.huffman.words` adds
    give a decoder fed by a test bench."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    bits = np.concatenate([bits, np.zeros((-nbits) % word_bits + word_bits, dtype=np.int64)])
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


def tile_positions(program) -> np.ndarray:
    """The tile mask as the filler walks it: per stage, output group, tap group, channel group (the
    TileGrid order of the raw weight words), 1 where the engine visits a tile (a word), 0 where it
    skips one (pruned). An output group with every tile pruned keeps tile (0, 0), as its words do."""
    bits = []
    for s in program.stages:
        _, tgs, cgs = s.grid.shape
        group = np.zeros((tgs, cgs), dtype=np.uint8)
        for og in range(s.out_groups):
            mask = group.copy()
            for w in program.words[s.word_base + int(s.og_counts[:og].sum()):][:int(s.og_counts[og])]:
                mask[w["lm"] - s.lm_base, (w["coff"] // (s.in_shape[1] * s.in_shape[2])) if w["coff"] else 0] = 1
            bits.append(mask.reshape(-1))
    return np.concatenate(bits)


def walk_constants(program) -> dict[str, list[int]]:
    """Per stage, what the filler's side walker counts with: the last channel group, tap group and
    output group, and the channel offset between channel groups (the input plane when banked, else
    0). The lane-map row needs none: stage s's rows follow stage s - 1's."""
    return {
        "cg_last": [s.grid.channel_groups - 1 for s in program.stages],
        "tg_last": [s.grid.tap_groups - 1 for s in program.stages],
        "og_last": [s.out_groups - 1 for s in program.stages],
        "plane": [s.in_shape[1] * s.in_shape[2] if s.in_mode == "banked" else 0 for s in program.stages],
    }


def walk_side(program) -> list[tuple[int, int]]:
    """(lane-map row, channel offset) of every visited tile, counted the filler's way from
    `tile_positions` and `walk_constants` (equal to the raw words' fields: `compile_huffman` checks)."""
    k = walk_constants(program)
    mask = tile_positions(program)
    out, pos, lm = [], 0, 0
    for st in range(len(program.stages)):
        for _ in range(k["og_last"][st] + 1):
            for tg in range(k["tg_last"][st] + 1):
                for cg in range(k["cg_last"][st] + 1):
                    if mask[pos]:
                        out.append((lm + tg, cg * k["plane"][st]))
                    pos += 1
        lm += k["tg_last"][st] + 1
    return out


def huffman_memories(program) -> list:
    """The Huffman weight path's memories (`TernaryProgram.memories`): the two streams, the tile mask
    the side walker reads, and the rings it and the decoder fill (side info, codes)."""
    from amaranth.hdl import unsigned

    from . import layouts
    hw = program.huffman_weights
    mask = [int(v) for v in tile_positions(program)]
    assert walk_side(program) == [(w["lm"], w["coff"]) for w in program.words], "the walker finds every word's side"
    return [
        *(MemoryImage(f"weight_stream{i}", unsigned(hw.word_bits), len(ws), ws) for i, ws in enumerate(hw.words)),
        MemoryImage("tile_mask", unsigned(1), len(mask), mask),
        MemoryImage("tile_side", side_layout(program), hw.cache_depth),
        MemoryImage("tile_cache", layouts.tile_codes_layout(program.spec), hw.cache_depth),
    ]


def side_layout(program):
    from amaranth.hdl import unsigned
    from amaranth.lib import data
    return data.StructLayout({"lm": unsigned(max(1, program.lm_bits)), "coff": unsigned(max(1, program.coff_bits))})


WEIGHT_PATH = ("weights", "codes", "weight_stream0", "weight_stream1", "tile_mask", "tile_side", "tile_cache")


def memory_bits(program) -> dict:
    """Bits of the weight path's memories: raw (the `weights` words) or Huffman (stream, side info,
    cache, decoder table), from `program.memories()` (widths as built)."""
    mems = {m.name: m for m in program.memories()}
    out = {name: mems[name].width * mems[name].depth for name in WEIGHT_PATH if name in mems}
    if program.huffman:
        out["huffman_table"] = program.huffman_weights.table_bits
    out["total"] = sum(out.values())
    return out
