"""Weight codecs: canonical, length-limited Huffman codes over each engine's weight stream.

A weighted layer's `codec` is `raw` (the weights as they are) or `huffman`: its weights are also
held as a canonical Huffman-coded bit stream, the form an on-chip weight memory would hold for a
hardware decoder (`terwin.hw.codec.huffman`). docs/codecs.md has the measured bits per weight;
docs/deployment-format.md ("Weight codecs") the file fields.

Symbols (what one code stands for) follow the engine's weight stream:

* ternary engine (a layer of ternary codes for `spec.weight_format` "ternary": `tile_stream`): the
  stream of PE tiles the engine visits, in its order (`stream_tiles`: the kept tiles of each output group in TileGrid order, an output
  group with none keeping its tile (og, 0, 0), all zero), each tile row-major (row, then lane).
  A symbol is a group of `ternary_group(spec)` = min(4, pe_cols) consecutive lanes of one row:
  their 2-bit codes packed as the hardware holds them, lane j at bits 2j..2j+1, a code being
  bit 0 `nonzero`, bit 1 `negative` (0 -> 0b00, +1 -> 0b01, -1 -> 0b11; 0b10 is no symbol).
  Alphabet: 4^G values (256 for G = 4), at most 3^G used. Groups of 4 measure 1.21 bits a code
  of entropy on the ternary-50 stream against 1.36 for single codes (docs/codecs.md).
* Winograd engine (and any layer of `int` weights): every weight of the layer, C order, the symbol
  being the signed value plus 2^(weight_bits - 1) (alphabet 2^weight_bits).

A code: `lengths[s]` bits for symbol s (0: s does not occur), at most `MAX_CODE_BITS`, with
Kraft sum at most 1. Canonical codes are assigned in order of (length, symbol): the first code
of the shortest length is all zeros, each next code is the previous plus one, shifted left when
the length grows. The stream is the codes one after the other, most significant bit first,
packed into bytes from the most significant bit down; the last byte is padded with zero bits.

NumPy and the standard library only (the core layer).
"""
from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass

import numpy as np

from .deployment import CODECS  # noqa: F401  (the codec names, re-exported)
from .errors import FormatError
from .tiling import TileGrid

MAX_CODE_BITS = 16            # longest code a file may hold (a hardware table of 16 lengths)
DEFAULT_MAX_LENGTH = 12       # what terwin writes, raised to ceil(log2(symbols used)) when that is more
TERNARY_GROUP = 4             # lanes per ternary symbol (fewer when pe_cols is smaller)
_CHUNK = 1 << 20              # symbols encoded at once (bounded temporary memory)


# -- length-limited code lengths (package-merge) ---------------------------------------------------


def code_lengths(counts, max_length: int = DEFAULT_MAX_LENGTH) -> np.ndarray:
    """Optimal code lengths, each at most `max_length`, for symbol frequencies `counts`
    (package-merge: the minimum total length among prefix codes with that limit). Symbols of
    count 0 get length 0; a single used symbol gets length 1. Deterministic: ties are broken by
    symbol number."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts > 0)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > (1 << max_length):
        raise ValueError(f"{used.size} symbols need codes longer than {max_length} bits")
    order = used[np.lexsort((used, counts[used]))]          # by count, then symbol
    leaves = [(int(counts[s]), 0, i) for i, s in enumerate(order)]   # (weight, kind 0 = leaf, index)
    # lists[k]: the items of round k, sorted; a package (kind 1) remembers its two children in lists[k-1]
    lists = [leaves]
    for _ in range(max_length - 1):
        prev = lists[-1]
        packages = [(prev[j][0] + prev[j + 1][0], 1, j) for j in range(0, len(prev) - 1, 2)]
        merged = list(heapq.merge(leaves, packages))      # stable: a leaf before a package of equal weight
        lists.append(merged)
    # select the first 2n - 2 items of the last list; a selected package selects both its children
    n = len(leaves)
    depth = np.zeros(n, dtype=np.int64)
    selected = range(2 * n - 2)
    for k in range(len(lists) - 1, -1, -1):
        items = lists[k]
        below = []
        for j in selected:
            _, kind, idx = items[j]
            if kind == 0:
                depth[idx] += 1
            else:
                below += [idx, idx + 1]
        selected = below
    lengths[order] = depth
    return lengths


def check_lengths(lengths, where: str = "codec_lengths") -> np.ndarray:
    """Refuse (FormatError, one line) a code that is not a prefix code terwin can decode: a length
    above MAX_CODE_BITS, no symbol at all, or a Kraft sum above 1 (oversubscribed)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise FormatError(f"{where}: must be a one-dimensional integer array")
    if lengths.size and (int(lengths.min()) < 0 or int(lengths.max()) > MAX_CODE_BITS):
        raise FormatError(f"{where}: code lengths must be 0 to {MAX_CODE_BITS} bits")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size == 0:
        raise FormatError(f"{where}: no symbol has a code")
    kraft = int(np.sum(np.int64(1) << (MAX_CODE_BITS - used)))
    if kraft > (1 << MAX_CODE_BITS):
        raise FormatError(f"{where}: the lengths are not a prefix code (Kraft sum {kraft / (1 << MAX_CODE_BITS):.4g} > 1)")
    return lengths.astype(np.int64)


@dataclass(frozen=True)
class CanonicalTable:
    """A canonical code as a decoder holds it: for each length l = 1..max_length, the first code
    `first[l]`, the number of codes `count[l]` and the index `base[l]` of its first symbol in
    `symbols` (the used symbols sorted by (length, symbol)). Index 0 of the lists is unused."""
    max_length: int
    first: tuple[int, ...]
    count: tuple[int, ...]
    base: tuple[int, ...]
    symbols: tuple[int, ...]

    @classmethod
    def from_lengths(cls, lengths) -> "CanonicalTable":
        lengths = check_lengths(lengths)
        max_length = int(lengths.max())
        used = np.flatnonzero(lengths)
        order = used[np.lexsort((used, lengths[used]))]
        count = [0] * (max_length + 1)
        for l_ in lengths[order]:
            count[int(l_)] += 1
        first, base, code, index = [0] * (max_length + 1), [0] * (max_length + 1), 0, 0
        for l_ in range(1, max_length + 1):
            first[l_], base[l_] = code, index
            code = (code + count[l_]) << 1
            index += count[l_]
        return cls(max_length, tuple(first), tuple(count), tuple(base), tuple(int(s) for s in order))

    def codes(self, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
        """(code, length) of every symbol of an `alphabet`-sized alphabet (length 0: no code)."""
        code = np.zeros(alphabet, dtype=np.int64)
        length = np.zeros(alphabet, dtype=np.int64)
        for l_ in range(1, self.max_length + 1):
            for k in range(self.count[l_]):
                s = self.symbols[self.base[l_] + k]
                code[s], length[s] = self.first[l_] + k, l_
        return code, length

    def bits(self, symbol_bits: int) -> int:
        """Bits of the table in a decoder: the symbol memory, and per length its first code
        (max_length bits), its count and its base (each wide enough for the number of symbols)."""
        n = len(self.symbols)
        index_bits = max(1, n.bit_length())
        return n * symbol_bits + self.max_length * (self.max_length + 2 * index_bits)


# -- the bit stream -------------------------------------------------------------------------------


def encode(symbols, lengths) -> tuple[bytes, int]:
    """(stream bytes, length in bits) of `symbols` under the canonical code of `lengths`."""
    table = CanonicalTable.from_lengths(lengths)
    code, length = table.codes(len(lengths))
    symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= len(lengths) or np.any(length[symbols] == 0)):
        raise ValueError("a symbol to encode has no code")
    L = table.max_length
    shifts = np.arange(L - 1, -1, -1, dtype=np.int64)
    out, carry, nbits = [], np.zeros(0, dtype=np.uint8), 0
    for start in range(0, symbols.size, _CHUNK):
        s = symbols[start:start + _CHUNK]
        ln, cd = length[s], code[s]
        # the codes right-aligned in L bits, MSB first; keep the last `length` bits of each
        bits = ((cd[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
        keep = np.arange(L)[None, :] >= (L - ln)[:, None]
        flat = np.concatenate([carry, bits[keep]])
        whole = flat.size - flat.size % 8
        out.append(np.packbits(flat[:whole]).tobytes())
        carry = flat[whole:]
        nbits += int(ln.sum())
    if carry.size:
        out.append(np.packbits(carry).tobytes())   # zero-padded on the right
    return b"".join(out), nbits


def decode(data: bytes, nbits: int, lengths, count: int, where: str = "codec_stream") -> np.ndarray:
    """The `count` symbols of a stream; FormatError (one line naming `where`) unless the stream is
    exactly `nbits` bits in ceil(nbits / 8) bytes, holds only valid codes, decodes to exactly `count`
    symbols in exactly `nbits` bits, and pads the last byte with zeros."""
    table = CanonicalTable.from_lengths(lengths)
    if len(data) != (nbits + 7) // 8:
        raise FormatError(f"{where}: {len(data)} bytes, but codec_bits {nbits} needs {(nbits + 7) // 8}")
    if nbits > count * table.max_length or (count and nbits < count):
        raise FormatError(f"{where}: {nbits} bits cannot hold {count} codes of 1 to {table.max_length} bits")
    L = table.max_length
    code, length = table.codes(len(lengths))
    # lookup on the next L bits: symbol and its length (length 0: no code starts with these bits)
    lut_sym = np.zeros(1 << L, dtype=np.int64)
    lut_len = np.zeros(1 << L, dtype=np.int64)
    for s in table.symbols:
        lo = int(code[s]) << (L - int(length[s]))
        hi = lo + (1 << (L - int(length[s])))
        lut_sym[lo:hi], lut_len[lo:hi] = s, length[s]
    lut_s, lut_l = lut_sym.tolist(), lut_len.tolist()
    out = np.empty(count, dtype=np.int64)
    buf, avail, pos, byte = 0, 0, 0, 0      # `avail` bits in `buf` (LSB-aligned), bits consumed, next byte
    n = len(data)
    mask = (1 << L) - 1
    for k in range(count):
        while avail < L and byte < n:
            buf = ((buf << 8) | data[byte]) & ((1 << (L + 8)) - 1)
            avail += 8
            byte += 1
        peek = (buf << (L - avail)) & mask if avail <= L else (buf >> (avail - L)) & mask
        ln = lut_l[peek]
        if ln == 0 or ln > avail or pos + ln > nbits:
            raise FormatError(f"{where}: no valid code at bit {pos} (symbol {k} of {count})")
        out[k] = lut_s[peek]
        avail -= ln
        pos += ln
    if pos != nbits:
        raise FormatError(f"{where}: {count} symbols end at bit {pos}, not at codec_bits {nbits}")
    if nbits % 8 and data[-1] & ((1 << (8 - nbits % 8)) - 1):
        raise FormatError(f"{where}: the padding bits after the last code are not zero")
    return out


# -- symbols of each engine's weight stream ----------------------------------------------------------


def tile_stream(layer, spec) -> bool:
    """Whether a layer's symbols are groups of the ternary codes of its PE tiles (a ternary layer for
    the ternary engine), or else its integer weights one by one."""
    return spec.weight_format == "ternary" and getattr(layer, "weight_code", None) == "ternary"


def ternary_group(spec) -> int:
    return min(TERNARY_GROUP, spec.pe_cols)


def stream_tiles(layer, spec) -> tuple[TileGrid, np.ndarray]:
    """(grid, [k, 3] array of (og, tg, cg)): the PE tiles the ternary engine visits, in order: per
    output group its kept tiles (the tile mask; without one, the tiles holding a nonzero weight) in
    (tg, cg) order, and tile (og, 0, 0) for an output group with none."""
    grid = layer.tile_grid(spec)
    mask = np.asarray(layer.tile_mask).astype(bool) if layer.tile_mask is not None else grid.occupied(layer.weight)
    mask = mask.copy()
    empty = ~mask.any(axis=(1, 2))
    mask[empty, 0, 0] = True
    return grid, np.argwhere(mask)


def alphabet(layer, spec) -> tuple[int, int]:
    """(alphabet size, bits of one symbol) of a layer's weight stream."""
    if tile_stream(layer, spec):
        g = ternary_group(spec)
        return 1 << (2 * g), 2 * g
    return 1 << layer.weight_bits, layer.weight_bits


def weight_symbols(layer, spec) -> np.ndarray:
    """The symbols of a layer's weight stream (see the module docstring)."""
    if tile_stream(layer, spec):
        grid, tiles = stream_tiles(layer, spec)
        g = ternary_group(spec)
        t = grid.tiles(layer.weight)[tiles[:, 0], tiles[:, 1], tiles[:, 2]].astype(np.int64)  # [k, rows, cols]
        codes = np.where(t < 0, 3, t)                    # 0 -> 0b00, +1 -> 0b01, -1 -> 0b11
        groups = codes.reshape(-1, g)
        return (groups << (2 * np.arange(g, dtype=np.int64))[None, :]).sum(axis=1)
    return np.asarray(layer.weight, dtype=np.int64).reshape(-1) + (1 << (layer.weight_bits - 1))


def symbol_count(layer, spec) -> int:
    if tile_stream(layer, spec):
        _, tiles = stream_tiles(layer, spec)
        return len(tiles) * spec.pe_rows * spec.pe_cols // ternary_group(spec)
    return int(np.asarray(layer.weight).size)


def check_symbols_valid(layer, lengths, spec, where: str = "codec_lengths") -> None:
    """Refuse codes for symbols that stand for no weights: a ternary group with a 0b10 code."""
    if not tile_stream(layer, spec):
        return
    used = np.flatnonzero(np.asarray(lengths) > 0)
    fields = (used[:, None] >> (2 * np.arange(ternary_group(spec)))[None, :]) & 3
    bad = used[(fields == 2).any(axis=1)]
    if bad.size:
        raise FormatError(f"{where}: symbol 0x{int(bad[0]):02x} has a code but holds the ternary code 0b10, "
                          f"which stands for no weight")


def weights_from_symbols(layer, spec, symbols) -> np.ndarray:
    """Inverse of `weight_symbols`: the weight array (the layer's shape) the symbols stand for.
    Ternary: tiles outside the stream are zero; FormatError if a padding lane (past the layer's
    outputs, taps or channels) holds a nonzero code."""
    symbols = np.asarray(symbols, dtype=np.int64)
    shape = np.asarray(layer.weight).shape
    if not tile_stream(layer, spec):
        return (symbols - (1 << (layer.weight_bits - 1))).reshape(shape)
    grid, tiles = stream_tiles(layer, spec)
    g = ternary_group(spec)
    fields = (symbols[:, None] >> (2 * np.arange(g, dtype=np.int64))[None, :]) & 3
    if (fields == 2).any():
        raise FormatError("codec_stream: decodes to the ternary code 0b10, which stands for no weight")
    values = np.where(fields == 3, -1, fields).reshape(len(tiles), grid.rows, grid.cols)
    idx = grid.index[tiles[:, 0], tiles[:, 1], tiles[:, 2]]       # [k, rows, cols] flat weight index or -1
    if np.any(values[idx < 0] != 0):
        raise FormatError("codec_stream: a padding lane of a tile holds a nonzero weight")
    flat = np.zeros(int(np.prod(shape)), dtype=np.int64)
    flat[idx[idx >= 0]] = values[idx >= 0]
    return flat.reshape(shape)


# -- one layer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerCode:
    """A layer's Huffman-coded weight stream: the code lengths per symbol, the stream and its bits."""
    lengths: np.ndarray     # uint8 [alphabet]
    data: bytes
    nbits: int
    symbol_bits: int
    count: int              # symbols in the stream

    @property
    def table(self) -> CanonicalTable:
        return CanonicalTable.from_lengths(self.lengths)

    @property
    def table_bits(self) -> int:
        return self.table.bits(self.symbol_bits)


def encode_layer(layer, spec, *, max_length: int = DEFAULT_MAX_LENGTH) -> LayerCode:
    """The canonical Huffman code of a layer's weight stream: lengths from the symbols' own
    frequencies, limited to `max_length` bits (raised to the fewest bits that fit the symbols used)."""
    size, symbol_bits = alphabet(layer, spec)
    symbols = weight_symbols(layer, spec)
    counts = np.bincount(symbols, minlength=size)
    used = int(np.count_nonzero(counts))
    limit = max(max_length, (used - 1).bit_length())
    lengths = code_lengths(counts, limit)
    data, nbits = encode(symbols, lengths)
    return LayerCode(lengths.astype(np.uint8), data, nbits, symbol_bits, int(symbols.size))


def decode_layer(layer, spec, lengths, data: bytes, nbits: int) -> np.ndarray:
    """The weights a layer's coded stream stands for (FormatError on a corrupt table or stream)."""
    size, _ = alphabet(layer, spec)
    lengths = np.asarray(lengths)
    if lengths.shape != (size,):
        raise FormatError(f"codec_lengths: shape {lengths.shape} is not ({size},), one length per symbol")
    check_lengths(lengths)
    check_symbols_valid(layer, lengths, spec)
    symbols = decode(data, nbits, lengths, symbol_count(layer, spec))
    return weights_from_symbols(layer, spec, symbols)


def raw_stream_bits(layer, spec) -> int:
    """Bits of the layer's weight stream without a codec: the ternary engine's 2-bit codes of every
    tile it visits (padding lanes included), or every weight at weight_bits."""
    if tile_stream(layer, spec):
        _, tiles = stream_tiles(layer, spec)
        return len(tiles) * spec.pe_rows * spec.pe_cols * 2
    return int(np.asarray(layer.weight).size) * layer.weight_bits


def stream_report(dep) -> dict:
    """Per weighted layer and in all: the raw stream's bits, and the Huffman stream's bits with its
    decoder table; `weight_stream_bits` is the total for each layer's own codec."""
    rows, totals = [], {"raw_bits": 0, "huffman_bits": 0, "huffman_table_bits": 0, "weight_stream_bits": 0}
    for layer in dep.weighted_layers:
        code = encode_layer(layer, dep.spec)
        raw = raw_stream_bits(layer, dep.spec)
        chosen = raw if getattr(layer, "codec", "raw") == "raw" else code.nbits + code.table_bits
        row = {"name": layer.name, "codec": getattr(layer, "codec", "raw"), "weights": int(np.asarray(layer.weight).size),
               "symbols": code.count, "raw_bits": raw, "huffman_bits": code.nbits,
               "huffman_table_bits": code.table_bits, "max_code_bits": code.table.max_length,
               "weight_stream_bits": chosen}
        rows.append(row)
        for k in totals:
            totals[k] += row[k]
    return {"layers": rows, **totals}


# -- choosing a codec for a whole model (`terwin compress --codec`) ------------------------------------


def with_codec(dep, name: str):
    """The model with every weighted layer's codec set to `name` (weights unchanged)."""
    if name not in CODECS:
        raise FormatError(f"codec: must be one of {', '.join(CODECS)}, not {name!r}")
    return dep.replace(layers=tuple(dataclasses.replace(layer, codec=name) if hasattr(layer, "weight") else layer
                                    for layer in dep.layers))


def report_fields(dep) -> dict:
    """What compress.json says about the weight stream: `codec` (the layers' codec, or "mixed"),
    `weight_stream_bits` (the weight memories' bits for that codec, decoder tables included) and
    `weight_stream` (per layer and in all: raw, Huffman stream and table bits)."""
    rep = stream_report(dep)
    return {"codec": model_codec(dep), "weight_stream_bits": rep["weight_stream_bits"], "weight_stream": rep}


def model_codec(dep) -> str:
    """The codec of `dep`'s weighted layers: their one codec name, or "mixed"."""
    names = {getattr(layer, "codec", "raw") for layer in dep.weighted_layers}
    return names.pop() if len(names) == 1 else "mixed"
