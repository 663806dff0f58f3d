"""LZW (Welch 1984), the universal source code of Choi, El-Khamy and Lee's "Universal deep neural
network compression" (arXiv 1802.02271), as a storage codec for whole `.terwin` files
(`terwin compress --storage lzw`, `terwin.fileformat.STORAGE`). Python's standard library has the
other universal coders (lzma, bz2's BWT) but not LZW, so it is here, in NumPy-free Python.

The stored form: MAGIC, the decoded length (8 bytes, little-endian), the decoded bytes' CRC-32
(`zlib.crc32`, 4 bytes, little-endian; so a corrupt file is named as such, like xz's and bz2's own
checks do, rather than decoding to other bytes), then the codes packed
least-significant bit first. Codes 0-255 are bytes, CLEAR (256) empties the dictionary, END (257)
closes the stream; new entries are numbered from 258. The code width starts at 9 bits and grows by
one when the next entry's number needs it, up to 16 bits; when all 65,536 codes are taken the encoder
sends CLEAR and starts over (the `compress` of Unix, without its ratio check). Deterministic: the
same bytes always give the same stored bytes.

The decoder keeps each dictionary entry as a (start, length) slice of the output it has written
(an LZW entry is always the previous code's output plus the next byte, which follows it in the
output), so its memory is the output plus two integers an entry whatever the input. It refuses, with a
FormatError of one line: a foreign or truncated header, a declared length over the caller's limit
(before any decoding), a code the dictionary does not hold yet, a stream without END, bytes after
END beyond the last code's byte, output that differs in length from the declared one (checked as
it is written: a small input cannot make it write more than the declared length), and output whose
CRC-32 is not the stored one.
"""
from __future__ import annotations

import zlib

from .errors import FormatError

MAGIC = b"TWLZW\x01"
CLEAR, END, FIRST = 256, 257, 258
MIN_WIDTH, MAX_WIDTH = 9, 16


def compress(data: bytes) -> bytes:
    """`data` LZW-coded, with MAGIC and its length in front."""
    out = bytearray(MAGIC + len(data).to_bytes(8, "little") + zlib.crc32(data).to_bytes(4, "little"))
    acc, nbits = 0, 0
    width, table = MIN_WIDTH, {bytes([b]): b for b in range(256)}

    def put(code: int) -> None:
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    word = b""
    for b in data:
        longer = word + bytes((b,))
        if longer in table:
            word = longer
            continue
        put(table[word])
        nxt = len(table) + 2                          # + CLEAR and END
        if nxt == 1 << MAX_WIDTH:                     # dictionary full: start over
            put(CLEAR)
            width, table = MIN_WIDTH, {bytes([c]): c for c in range(256)}
        else:
            table[longer] = nxt
            if nxt == 1 << width:                     # the decoder widens when it adds this entry
                width += 1
        word = bytes((b,))
    if word:
        put(table[word])
    put(END)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def decompress(stored: bytes, *, max_bytes: int) -> bytes:
    """The bytes `stored` (from `compress`) decodes to; FormatError (one line) for anything else, and
    for a declared length over `max_bytes` (checked before decoding)."""
    head = len(MAGIC) + 12
    if not stored.startswith(MAGIC) or len(stored) < head:
        raise FormatError("lzw storage: the compressed file is truncated (its header)")
    size = int.from_bytes(stored[len(MAGIC):len(MAGIC) + 8], "little")
    crc = int.from_bytes(stored[len(MAGIC) + 8:head], "little")
    if size > max_bytes:
        raise FormatError(f"lzw storage: decompresses to more than the {max_bytes >> 20} MiB a model file may have "
                          f"(declares {size} bytes)")
    out = bytearray()
    starts, lengths = [0] * (1 << MAX_WIDTH), [1] * (1 << MAX_WIDTH)   # entries >= FIRST as output slices
    width, nxt, prev = MIN_WIDTH, FIRST, None          # prev: (start, length) of the previous code's output
    acc, nbits, pos, end = 0, 0, head, len(stored)
    while True:
        while nbits < width:
            if pos == end:
                raise FormatError("lzw storage: the compressed file is truncated (no end code)")
            acc |= stored[pos] << nbits
            pos += 1
            nbits += 8
        code = acc & ((1 << width) - 1)
        acc >>= width
        nbits -= width
        if code == END:
            break
        if code == CLEAR:
            width, nxt, prev = MIN_WIDTH, FIRST, None
            continue
        start = len(out)
        if code < 256:
            out.append(code)
        elif code < nxt:
            s = starts[code]
            out += out[s:s + lengths[code]]
        elif code == nxt and prev is not None:        # the entry being defined: prev's output + its first byte
            out += out[prev[0]:prev[0] + prev[1]]
            out.append(out[prev[0]])
        else:
            raise FormatError(f"lzw storage: the compressed file is corrupt (code {code} before its entry)")
        if len(out) > size:
            raise FormatError(f"lzw storage: the compressed file is corrupt (decodes past its declared {size} bytes)")
        if prev is not None and nxt < (1 << MAX_WIDTH):
            starts[nxt], lengths[nxt] = prev[0], prev[1] + 1
            nxt += 1
            if nxt == 1 << width and width < MAX_WIDTH:
                width += 1
        prev = (start, len(out) - start)
    if pos != end or acc:
        raise FormatError(f"lzw storage: {end - pos} bytes follow the compressed data")
    if len(out) != size:
        raise FormatError(f"lzw storage: the compressed file is corrupt ({len(out)} bytes decoded, {size} declared)")
    if zlib.crc32(out) != crc:
        raise FormatError("lzw storage: the compressed file is corrupt (CRC-32 mismatch)")
    return bytes(out)
