"""terwin.lzw: LZW as a storage codec for model files (`terwin compress --storage lzw`).

Round trips on random and structured bytes (dictionary resets included), the code sequence of a
textbook example, and every way a stored stream can be wrong refused in one line."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from terwin import lzw
from terwin.errors import FormatError

ROOT = Path(__file__).resolve().parents[1]
HEAD = len(lzw.MAGIC) + 12


def codes_of(stored: bytes) -> list[int]:
    """The codes of a stored stream, read independently of the decoder (widths as LZW defines them)."""
    bits = int.from_bytes(stored[HEAD:], "little")
    codes, width, nxt, pos = [], lzw.MIN_WIDTH, lzw.FIRST, 0
    while True:
        code = (bits >> pos) & ((1 << width) - 1)
        pos += width
        codes.append(code)
        if code == lzw.END:
            return codes
        if code == lzw.CLEAR:
            width, nxt = lzw.MIN_WIDTH, lzw.FIRST
            continue
        if len(codes) > 1 and codes[-2] != lzw.CLEAR:
            nxt += 1
            if nxt == 1 << width and width < lzw.MAX_WIDTH:
                width += 1


def stored_from(codes: list[int], data_len: int, crc: int = 0) -> bytes:
    """A stream of the given 9-bit codes (the tests' hostile inputs stay below 512 entries)."""
    acc = sum(code << (9 * i) for i, code in enumerate(codes))
    nbytes = (9 * len(codes) + 7) // 8
    return lzw.MAGIC + data_len.to_bytes(8, "little") + crc.to_bytes(4, "little") + acc.to_bytes(nbytes, "little")


def test_the_textbook_example_gives_the_textbook_codes():
    # ABABABA: A, B, then AB (258), then ABA (260, the entry being defined: the KwKwK case), END
    stored = lzw.compress(b"ABABABA")
    assert codes_of(stored) == [65, 66, 258, 260, lzw.END]
    assert lzw.decompress(stored, max_bytes=100) == b"ABABABA"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000) | st.lists(st.sampled_from(b"\x00\x01ab"), max_size=6000).map(bytes))
def test_round_trip(data):
    stored = lzw.compress(data)
    assert lzw.decompress(stored, max_bytes=len(data)) == data
    assert lzw.compress(data) == stored                       # deterministic


def test_round_trip_through_dictionary_resets():
    data = os.urandom(200_000) + bytes(100_000) + os.urandom(50_000)
    stored = lzw.compress(data)
    codes = codes_of(stored)
    assert codes.count(lzw.CLEAR) >= 1 and max(codes) >= 1 << (lzw.MAX_WIDTH - 1)   # 16-bit codes, table refilled
    assert lzw.decompress(stored, max_bytes=len(data)) == data


def test_the_stored_models_shrink_and_come_back():
    for path in sorted((ROOT / "bitstreams").glob("*/*/model.terwin")):
        data = path.read_bytes()
        stored = lzw.compress(data)
        assert len(stored) < len(data) and lzw.decompress(stored, max_bytes=len(data)) == data


@pytest.mark.parametrize("stored, message", [
    (lzw.MAGIC + bytes(5), "truncated"),                                        # header cut
    (stored_from([65, 300, lzw.END], 2), "code 300 before its entry"),
    (stored_from([259, lzw.END], 2), "code 259 before its entry"),              # KwKwK with no previous code
    (stored_from([65, 66], 2, zlib.crc32(b"AB"))[:-1], "truncated"),           # no END
    (stored_from([65, 66, lzw.END], 3, zlib.crc32(b"AB")), "2 bytes decoded, 3 declared"),
    (stored_from([65, 66, 258, lzw.END], 2, zlib.crc32(b"AB")), "decodes past its declared 2 bytes"),
    (stored_from([65, 66, lzw.END], 2, 12345), "CRC-32 mismatch"),
    (stored_from([65, 66, lzw.END], 2, zlib.crc32(b"AB")) + b"x", "1 bytes follow"),
    (stored_from([65, 66, lzw.END], 1 << 40), "decompresses to more than"),    # before any decoding
])
def test_corrupt_streams_are_refused_in_one_line(stored, message):
    with pytest.raises(FormatError, match=message) as e:
        lzw.decompress(stored, max_bytes=1 << 20)
    assert "\n" not in str(e.value) and str(e.value).startswith("lzw storage: ")


def test_a_stream_that_lies_about_its_length_writes_no_more_than_it_declares():
    # a run of zeros codes to ~sqrt(2n) codes: a small file whose output grows quadratically
    stored = bytearray(lzw.compress(bytes(1 << 20)))
    stored[len(lzw.MAGIC):len(lzw.MAGIC) + 8] = (1000).to_bytes(8, "little")
    with pytest.raises(FormatError, match="decodes past its declared 1000 bytes"):
        lzw.decompress(bytes(stored), max_bytes=1 << 30)
