"""Canonical Huffman weight codecs (`terwin.codec`) and the codec layer of the model file (format version 3).

Round trips are held with ==; the code lengths against an independent Huffman construction; the
ternary stream's tile order against the engine's own weight memory (`terwin.hw.ternary.program`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terwin import codec, engines, fileformat
from terwin.errors import FormatError
from terwin.spec import PE4X4, PE8X8, WINOGRAD
from terwin.synthetic import random_deployment

ROOT = Path(__file__).parents[1]
STORED = sorted(ROOT.glob("bitstreams/*/*/model.terwin"))
PROPS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def huffman_cost(counts) -> tuple[int, int]:
    """(total bits, longest code) of an unlimited Huffman code (the textbook merge of the two
    lightest), computed independently of `code_lengths`."""
    heap = [(int(c), 0) for c in counts if c > 0]
    if len(heap) == 1:
        return heap[0][0], 1
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        (a, da), (b, db) = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, (a + b, max(da, db) + 1))
    return total, heap[0][1]


def with_codec(dep, name="huffman"):
    return dep.replace(layers=tuple(dataclasses.replace(l, codec=name) if hasattr(l, "weight") else l for l in dep.layers))


# -- code lengths --------------------------------------------------------------------------------------


@PROPS
@given(counts=st.lists(st.integers(0, 10_000), min_size=1, max_size=300), limit=st.integers(9, 16))
def test_code_lengths_are_optimal_limited_prefix_codes(counts, limit):
    counts = np.array(counts)
    lengths = codec.code_lengths(counts, limit)
    used = counts > 0
    assert np.array_equal(lengths > 0, used)
    if used.sum() == 0:
        return
    assert lengths.max() <= limit
    assert sum(2.0 ** -int(l) for l in lengths[used]) <= 1.0
    cost, (best, longest) = int((lengths * counts).sum()), huffman_cost(counts)
    assert cost >= best
    if longest <= limit:          # the limit does not bind: package-merge finds a Huffman code's cost
        assert cost == best


def test_code_lengths_limit_binds_and_stays_optimal():
    counts = np.array([2 ** k for k in range(20)])   # unlimited Huffman: lengths 1 .. 19
    free = codec.code_lengths(counts, 20)
    assert sorted(free.tolist()) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 19]
    limited = codec.code_lengths(counts, 12)
    assert limited.max() == 12 and sum(2.0 ** -int(l) for l in limited) == 1.0
    # exhaustive check of optimality on a small alphabet: no prefix code with lengths <= 4 is cheaper
    small = np.array([1, 1, 2, 3, 5, 8, 13, 21])
    best = min(int((np.array(ls) * small).sum()) for ls in np.ndindex(*(4,) * 8)
               if sum(2.0 ** -(l + 1) for l in ls) <= 1.0) + int(small.sum())
    assert int((codec.code_lengths(small, 4) * small).sum()) == best


def test_canonical_codes_follow_the_documented_order():
    lengths = np.zeros(8, dtype=np.int64)
    lengths[[5, 1, 3, 6]] = [1, 2, 3, 3]
    code, length = codec.CanonicalTable.from_lengths(lengths).codes(8)
    assert [(int(code[s]), int(length[s])) for s in (5, 1, 3, 6)] == [(0b0, 1), (0b10, 2), (0b110, 3), (0b111, 3)]
    data, nbits = codec.encode([5, 6, 1, 5, 3], lengths)
    assert nbits == 1 + 3 + 2 + 1 + 3 and data == bytes([0b01111001, 0b10000000])


# -- the bit stream ------------------------------------------------------------------------------------


@PROPS
@given(data=st.data())
def test_encode_decode_round_trip(data):
    size = data.draw(st.integers(1, 300), label="alphabet")
    symbols = np.array(data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=500), label="symbols"))
    counts = np.bincount(symbols, minlength=size)
    lengths = codec.code_lengths(counts, max(codec.DEFAULT_MAX_LENGTH, int(np.count_nonzero(counts) - 1).bit_length()))
    stream, nbits = codec.encode(symbols, lengths)
    assert nbits == int(lengths[symbols].sum()) and len(stream) == (nbits + 7) // 8
    assert np.array_equal(codec.decode(stream, nbits, lengths, symbols.size), symbols)


def _small_stream():
    lengths = np.array([1, 2, 3, 0, 3])
    symbols = [0, 4, 2, 1, 0, 0, 4]
    data, nbits = codec.encode(symbols, lengths)
    return lengths, symbols, data, nbits


@pytest.mark.parametrize("change, message", [
    (lambda L, d, n, c: (L, d + b"\0", n, c), "bytes"),
    (lambda L, d, n, c: (L, d, n + 1, c), "end at bit"),
    (lambda L, d, n, c: (L, d, n - 1, c), "no valid code"),
    (lambda L, d, n, c: (L, d, n, c + 1), "no valid code"),
    (lambda L, d, n, c: (L, d[:-1] + bytes([d[-1] | 1]), n, c), "padding"),
    (lambda L, d, n, c: (np.array([1, 1, 1, 0, 0]), d, n, c), "Kraft"),
    (lambda L, d, n, c: (np.array([1, 2, 17, 0, 3]), d, n, c), "0 to 16"),
    (lambda L, d, n, c: (np.zeros(5, dtype=np.int64), d, n, c), "no symbol"),
    (lambda L, d, n, c: (np.array([2, 2, 0, 0, 0]), d, n, c), "no valid code"),   # incomplete code: 1x is unused
])
def test_corrupt_streams_and_tables_are_refused(change, message):
    lengths, symbols, data, nbits = _small_stream()
    args = change(lengths, data, nbits, len(symbols))
    with pytest.raises(FormatError, match=message):
        codec.decode(args[1], args[2], args[0], args[3])


# -- symbols of the engines' weight streams -----------------------------------------------------------------


@pytest.mark.parametrize("spec", [PE4X4, PE8X8])
def test_ternary_symbols_follow_the_engines_weight_memory(spec):
    """The stream's tiles and codes are the engine's weight words (codes field), in memory order."""
    from terwin.hw.ternary.program import compile_program
    dep = random_deployment(spec, seed=7, topology=(("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 10)))
    program = compile_program(dep)
    words = iter(program.words)
    g = codec.ternary_group(spec)
    for layer in dep.weighted_layers:
        symbols = codec.weight_symbols(layer, spec).reshape(-1, spec.pe_rows, spec.pe_cols // g)
        for tile in symbols:
            codes = next(words)["codes"]
            packed = [[sum((c["nonzero"] | c["negative"] << 1) << (2 * j) for j, c in enumerate(row[k * g:(k + 1) * g]))
                       for k in range(spec.pe_cols // g)] for row in codes]
            assert packed == tile.tolist()
        assert np.array_equal(codec.weights_from_symbols(layer, spec, symbols.reshape(-1)), layer.weight)
    assert next(words, None) is None


def test_a_fully_pruned_output_group_keeps_one_zero_tile():
    dep = random_deployment(PE4X4, seed=8, topology=(("conv2d", 8), ("linear", 10)))
    layer = dep.layers[0]
    weight = layer.weight.copy()
    weight[:4] = 0
    mask = layer.tile_mask.copy()
    mask[0] = 0
    layer = dataclasses.replace(layer, weight=weight, tile_mask=mask)
    grid, tiles = codec.stream_tiles(layer, PE4X4)
    assert tiles[0].tolist() == [0, 0, 0] and int((tiles[:, 0] == 0).sum()) == 1
    assert np.array_equal(codec.weights_from_symbols(layer, PE4X4, codec.weight_symbols(layer, PE4X4)), weight)


def test_winograd_symbols_are_the_offset_weights():
    dep = random_deployment(WINOGRAD, seed=9, topology=(("winograd_conv2d", 8), ("maxpool2d", 2), ("linear", 10)),
                            linear_int_bits=8)
    for layer in dep.weighted_layers:
        s = codec.weight_symbols(layer, WINOGRAD)
        assert np.array_equal(s, layer.weight.reshape(-1).astype(np.int64) + (1 << (layer.weight_bits - 1)))
        assert np.array_equal(codec.weights_from_symbols(layer, WINOGRAD, s), layer.weight)


def test_int_layers_of_a_ternary_spec_are_coded_weight_by_weight():
    """A ternary-spec model may hold `int` layers (the engine refuses them, the file does not): their
    symbols are the integer weights, and the coded file reads back."""
    dep = random_deployment(PE4X4, seed=1, linear_int_bits=8, topology=(("conv2d", 8), ("linear", 10)))
    conv, fc = dep.weighted_layers
    assert (conv.weight_code, fc.weight_code) == ("ternary", "int")
    assert codec.tile_stream(conv, PE4X4) and not codec.tile_stream(fc, PE4X4)
    assert np.array_equal(codec.weight_symbols(fc, PE4X4), fc.weight.reshape(-1).astype(np.int64) + 128)
    data = fileformat.to_bytes(with_codec(dep))
    assert fileformat.to_bytes(fileformat.from_bytes(data)) == data


def test_ternary_symbols_with_the_unused_code_or_nonzero_padding_are_refused():
    dep = random_deployment(PE4X4, seed=7, topology=(("conv2d", 6), ("linear", 10)))  # 6 outputs: rows 6, 7 pad
    layer = dep.layers[0]
    symbols = codec.weight_symbols(layer, PE4X4)
    bad = symbols.copy()
    bad[0] = 0b10
    with pytest.raises(FormatError, match="0b10"):
        codec.weights_from_symbols(layer, PE4X4, bad)
    pad = symbols.copy().reshape(-1, PE4X4.pe_rows, 1)
    _, tiles = codec.stream_tiles(layer, PE4X4)
    pad[int(np.flatnonzero(tiles[:, 0] == 1)[0]), 3, 0] = 0b01   # output group 1: outputs 4, 5 and padding rows 2, 3
    with pytest.raises(FormatError, match="padding lane"):
        codec.weights_from_symbols(layer, PE4X4, pad.reshape(-1))


# -- the file format -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STORED, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_stored_models_round_trip_byte_for_byte_and_code_exactly(path):
    raw = path.read_bytes()
    dep = fileformat.from_bytes(raw)
    assert fileformat.to_bytes(dep) == raw           # no codec: written as before, byte for byte
    coded = with_codec(dep)
    data = fileformat.to_bytes(coded)
    assert json.loads(data[16:16 + struct.unpack_from("<Q", data, 8)[0]])["format_version"] == 3
    again = fileformat.from_bytes(data)
    assert fileformat.to_bytes(again) == data
    for a, b in zip(again.weighted_layers, dep.weighted_layers):
        assert a.codec == "huffman" and np.array_equal(a.weight, b.weight)
    report = codec.stream_report(coded)
    assert report["weight_stream_bits"] == report["huffman_bits"] + report["huffman_table_bits"] < report["raw_bits"]


@pytest.mark.parametrize("spec, kw", [
    (PE4X4, {}),
    (PE8X8, dict(topology=(("conv2d", 12), ("maxpool2d", 2), ("conv2d", 20), ("linear", 10)))),
    (WINOGRAD, dict(topology=(("winograd_conv2d", 8), ("maxpool2d", 2), ("linear", 10)), linear_int_bits=8)),
])
@PROPS
@given(seed=st.integers(0, 2 ** 16), coded=st.lists(st.booleans(), min_size=4, max_size=4))
def test_random_models_round_trip_with_mixed_codecs(spec, kw, seed, coded):
    dep = random_deployment(spec, seed=seed, calibration_images=2, **kw)
    flags = iter(coded)
    dep = dep.replace(layers=tuple(dataclasses.replace(l, codec="huffman" if next(flags) else "raw")
                                   if hasattr(l, "weight") else l for l in dep.layers))
    data = fileformat.to_bytes(dep)
    again = fileformat.from_bytes(data)
    assert fileformat.to_bytes(again) == data
    assert [getattr(l, "codec", None) for l in again.layers] == [getattr(l, "codec", None) for l in dep.layers]
    for a, b in zip(again.weighted_layers, dep.weighted_layers):
        assert np.array_equal(a.weight, b.weight)


def _seal(text: bytes, blob: bytes) -> bytes:
    text += b" " * ((-(16 + len(text))) % 8)
    body = fileformat.MAGIC + struct.pack("<Q", len(text)) + text + blob
    return body + hashlib.sha256(body).digest()


@settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_every_flipped_stream_bit_is_refused(data):
    """A coded stream is held to the weights: flipping any one of its bits (re-sealed, so the checksum
    passes) decodes to other weights, an invalid code or nonzero padding, and the file is refused."""
    model = fileformat.to_bytes(with_codec(random_deployment(PE4X4, seed=3, calibration_images=2)))
    hlen = struct.unpack_from("<Q", model, 8)[0]
    header, blob = json.loads(model[16:16 + hlen]), bytearray(model[16 + hlen:-32])
    i = data.draw(st.integers(0, len(header["layers"]) - 1).filter(lambda k: "codec_stream" in header["layers"][k]["arrays"]))
    ref = header["layers"][i]["arrays"]["codec_stream"]
    bit = data.draw(st.integers(0, 8 * ref["nbytes"] - 1), label="bit")
    blob[ref["offset"] + bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(FormatError, match=r"layers\[\d+\] \(\w+\)\.codec_stream"):
        fileformat.from_bytes(_seal(json.dumps(header).encode(), bytes(blob)))


# -- terwin compress --codec --------------------------------------------------------------------------------


def test_compress_with_the_huffman_codec_writes_a_coded_model_and_its_stream_bits(tmp_path, capsys):
    from terwin.cli import main
    out = tmp_path / "run"
    assert main(["compress", "--family", "ternary", "--tile-sparsity", "0.5", "--ternary-epochs-scale", "0.02",
                 "--codec", "huffman", "--storage", "xz", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "compress.json").read_text())
    dep = fileformat.load(out / "model.terwin")
    stored = (out / "model.terwin").read_bytes()
    assert stored.startswith(fileformat.STORAGE["xz"]) and report["storage"] == "xz"
    assert report["stored_bytes"] == len(stored) < report["file_bytes"] == len(fileformat.to_bytes(dep))
    assert fileformat.file_checksum(out / "model.terwin") == report["checksum"]
    assert all(layer.codec == "huffman" for layer in dep.weighted_layers)
    assert report["codec"] == "huffman" and report["checksum"] == fileformat.checksum(dep)
    codes = [codec.encode_layer(layer, dep.spec) for layer in dep.weighted_layers]
    assert report["weight_stream"]["weight_stream_bits"] == sum(c.nbits + c.table_bits for c in codes)
    assert report["weight_stream"]["raw_bits"] == sum(codec.raw_stream_bits(l, dep.spec) for l in dep.weighted_layers)
    # weight_stream_bits: what the design's weight memories hold on chip, against the raw design's
    engine = engines.for_spec(dep.spec)
    raw = codec.with_codec(dep, "raw")
    on_chip, on_chip_raw = (engine.weight_memory_bits(engine.compile(d))["total"] for d in (dep, raw))
    assert report["weight_stream_bits"] == report["weight_memory"]["bits"] == on_chip
    assert report["weight_memory"]["raw_bits"] == on_chip_raw != on_chip
    # the raw model of the same training: the same weights, its stream bits the raw ones, written as before
    assert codec.report_fields(raw)["weight_stream_bits"] == report["weight_stream"]["raw_bits"]
    assert fileformat.from_bytes(fileformat.to_bytes(raw)).format_version == 1
    capsys.readouterr()
    assert main(["compress", "--codec", "zip", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--codec" in err and not (tmp_path / "bad").exists()


def test_the_api_applies_the_codec_after_export():
    from terwin import api
    dep = random_deployment(PE4X4, seed=4, calibration_images=2)
    coded, report = api._with_codec(dep, {"accuracy": 0.5}, "huffman")
    assert report["accuracy"] == 0.5 and report["codec"] == "huffman"
    assert report["weight_stream"]["weight_stream_bits"] == codec.stream_report(coded)["huffman_bits"] + \
        codec.stream_report(coded)["huffman_table_bits"]
    program = engines.compile_program(coded)
    assert report["weight_stream_bits"] == engines.for_spec(dep.spec).weight_memory_bits(program)["total"]
    assert all(l.codec == "huffman" and np.array_equal(l.weight, r.weight)
               for l, r in zip(coded.weighted_layers, dep.weighted_layers))
    raw, report = api._with_codec(dep, {}, "raw")
    assert report["codec"] == "raw" and report["weight_memory"]["saving"] == 0.0
    assert report["weight_stream_bits"] == report["weight_memory"]["raw_bits"] == \
        engines.for_spec(dep.spec).weight_memory_bits(engines.compile_program(raw))["total"]
    with pytest.raises(Exception, match="codec must be one of raw, huffman"):
        api._with_codec(dep, {}, "lzw")


# -- storage codecs: the whole file compressed (xz, bz2, lzw) -------------------------------------------------


@pytest.mark.parametrize("storage", ["raw", "xz", "bz2", "lzw"])
def test_stored_files_load_as_the_same_model(storage, tmp_path):
    dep = with_codec(random_deployment(WINOGRAD, seed=2, calibration_images=2, linear_int_bits=8,
                                       topology=(("winograd_conv2d", 8), ("maxpool2d", 2), ("linear", 10))))
    path = tmp_path / "m.terwin"
    checksum = fileformat.save(dep, path, storage=storage)
    data = path.read_bytes()
    assert (data == fileformat.to_bytes(dep)) == (storage == "raw")
    assert fileformat.decompress(data) == (storage, fileformat.to_bytes(dep))
    assert fileformat.to_bytes(fileformat.load(path)) == fileformat.to_bytes(dep)
    assert checksum == fileformat.checksum(dep) == fileformat.file_checksum(path)
