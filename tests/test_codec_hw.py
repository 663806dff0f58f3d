"""The Amaranth canonical Huffman decoder (`terwin.hw.codec.huffman`) against the software decoder
(`terwin.codec.decode`), symbol for symbol, on random codes and streams and on the stored models' real
layer streams; its rate (one symbol per cycle) without back-pressure; its `error` and `start`."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import codec, fileformat
from terwin.hw.codec.huffman import HuffmanDecoder, words

ROOT = Path(__file__).parents[1]
STORED = sorted({p.read_bytes(): p for p in ROOT.glob("bitstreams/*/*/model.terwin")}.values())


def simulate(dut: HuffmanDecoder, stream_words, count: int, *, p_in=1.0, p_out=1.0, seed=0, then=None,
             limit=None):
    """Start a stream of `count` symbols, feed its words (a beat offered with probability p_in per
    cycle), take symbols (ready with probability p_out); return (symbols, cycles from `start` to
    the last symbol taken, error seen). `then`: (more words, more count): a second
    stream, started once the decoder is idle (the first stream's symbols all decoded)."""
    rng = random.Random(seed)
    got, result = [], {}
    streams = [(list(stream_words), count)] + ([then] if then else [])

    async def feed(ctx):
        for k, (ws, n) in enumerate(streams):
            if result.get("done"):
                return
            if k:
                while not ctx.get(dut.idle) and not result.get("done"):
                    await ctx.tick()
            ctx.set(dut.start, 1)
            ctx.set(dut.count, n)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for w in ws:
                while rng.random() >= p_in:
                    ctx.set(dut.i_stream.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload, w)
                await ctx.tick()
                while not ctx.get(dut.i_stream.ready) and not result.get("done"):
                    await ctx.tick()
            ctx.set(dut.i_stream.valid, 0)

    total = sum(c for _, c in streams)
    limit = limit or 20 * (total + sum(len(ws) for ws, _ in streams)) + 100   # a lost symbol fails, never hangs

    async def drain(ctx):
        cycles = 0
        while len(got) < total and cycles < limit:
            ready = rng.random() < p_out
            ctx.set(dut.o_stream.ready, ready)
            await ctx.delay(1e-9)   # let the combinational outputs settle after the inputs changed
            if ready and ctx.get(dut.o_stream.valid):
                got.append(ctx.get(dut.o_stream.payload))
            result["error"] = result.get("error", 0) | ctx.get(dut.error)
            await ctx.tick()
            cycles += 1
        result["cycles"] = cycles
        result["done"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    return got, result["cycles"], result["error"]


def coded(symbols, size, max_length=codec.DEFAULT_MAX_LENGTH):
    counts = np.bincount(symbols, minlength=size)
    lengths = codec.code_lengths(counts, max_length)
    data, nbits = codec.encode(symbols, lengths)
    return lengths, data, nbits


@pytest.mark.parametrize("p_in, p_out", [(0.7, 0.6), (0.15, 1.0)], ids=["backpressure", "starved"])
@pytest.mark.parametrize("seed", range(4))
def test_random_codes_and_streams_decode_exactly_under_backpressure(seed, p_in, p_out):
    """Random codes (up to 13-bit codes) and streams, words offered and symbols taken at random; "starved":
    words come seldom, so codes are often decoded with the fewest words held (straddling words)."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 300))
    skew = rng.dirichlet(np.full(size, 0.3))
    symbols = rng.choice(size, size=400, p=skew)
    lengths, data, nbits = coded(symbols, size, max_length=int(rng.integers(9, 14)))
    table = codec.CanonicalTable.from_lengths(lengths)
    expected = codec.decode(data, nbits, lengths, symbols.size).tolist()
    assert expected == symbols.tolist()
    word_bits = int(rng.choice([16, 32]))
    dut = HuffmanDecoder(table, symbol_bits=max(1, (size - 1).bit_length()), word_bits=word_bits)
    got, _, error = simulate(dut, words(data, nbits, word_bits), symbols.size, p_in=p_in, p_out=p_out, seed=seed)
    assert got == expected and not error


@pytest.mark.parametrize("p_in", [0.2, 1.0], ids=["starved", "fed"])
def test_codes_as_long_as_a_word_decode_exactly_across_words(p_in):
    """200 near-uniform symbols: 7- and 8-bit codes in 8-bit words, so most codes straddle two words and
    the decoder often holds only the fewest words it may decode with."""
    rng = np.random.default_rng(5)
    symbols = rng.choice(200, size=300)
    lengths, data, nbits = coded(symbols, 200, max_length=8)
    dut = HuffmanDecoder(codec.CanonicalTable.from_lengths(lengths), symbol_bits=8, word_bits=8)
    got, cycles, error = simulate(dut, words(data, nbits, 8), symbols.size, p_in=p_in, seed=5)
    assert got == symbols.tolist() and not error
    if p_in == 1.0:
        assert cycles == symbols.size + 5


@pytest.mark.parametrize("path", STORED, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_real_layer_streams_decode_exactly_at_one_symbol_per_cycle(path):
    """Every weighted layer of a stored model: the decoder's symbols equal the software decoder's, and
    with a word offered every cycle and no back-pressure it sustains one symbol per cycle (the only
    extra cycles are the pipeline's start: `start`, the first two words, the decode, the index stage, the symbol
    memory's read)."""
    dep = fileformat.load(path)
    for layer in dep.weighted_layers:
        code = codec.encode_layer(dataclasses.replace(layer, codec="huffman"), dep.spec)
        expected = codec.decode(code.data, code.nbits, code.lengths, code.count).tolist()
        assert expected == codec.weight_symbols(layer, dep.spec).tolist()
        dut = HuffmanDecoder(code.table, symbol_bits=code.symbol_bits, word_bits=16)
        got, cycles, error = simulate(dut, words(code.data, code.nbits, 16), code.count)
        assert got == expected and not error
        assert cycles == code.count + 5, (layer.name, cycles, code.count)


def test_a_corrupt_stream_raises_error_and_start_begins_a_new_stream():
    lengths = np.array([1, 2, 0, 0])            # incomplete code: 0, 10; 11 is no code
    table = codec.CanonicalTable.from_lengths(lengths)
    dut = HuffmanDecoder(table, symbol_bits=2, word_bits=2)
    got, _, error = simulate(dut, [0b01, 0b00, 0b11, 0b00, 0b00, 0b00], 10, limit=40)
    assert got == [0, 1, 0] and error
    # the decoder stops after `count` symbols (the padding zeros would decode as symbol 0); `start`
    # drops them and clears the error; the second stream decodes from its first bit
    first, n1 = codec.encode([1, 0, 1], lengths)
    second, n2 = codec.encode([0, 0, 1, 1, 0], lengths)
    got, _, error = simulate(dut, words(first, n1, 2), 3, then=(words(second, n2, 2), 5))
    assert got == [1, 0, 1, 0, 0, 1, 1, 0] and not error


def test_words_are_msb_first_and_zero_padded():
    assert words(bytes([0b10110011, 0b01000000]), 10, 8) == [0b10110011, 0b01000000, 0, 0]
    assert words(bytes([0xAB, 0xCD, 0xE0]), 19, 16) == [0xABCD, 0xE000, 0, 0]


# -- the decoder's Verilog under the cocotb bench (Verilator or Icarus Verilog) ------------------------


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_verilog_decoder_under_cocotb_on_a_real_stream(simulator, rtl_build_root):
    """The stored ternary-50 model's largest layer (conv3, 2,272 symbols): bit-exact with the software
    decoder under random back-pressure, and one symbol per cycle without it."""
    from terwin.sim import codec_rtl
    dep = fileformat.load(ROOT / "bitstreams/icebreaker/ternary-50/model.terwin")
    layer = next(l for l in dep.weighted_layers if l.name == "conv3")
    code = codec.encode_layer(layer, dep.spec)
    expected = codec.decode(code.data, code.nbits, code.lengths, code.count).tolist()
    dut = HuffmanDecoder(code.table, symbol_bits=code.symbol_bits, word_bits=16, max_count=code.count)
    stream_words = words(code.data, code.nbits, 16)
    res = codec_rtl.run_decoder(dut, stream_words, code.count, build_root=rtl_build_root, simulator=simulator,
                                p_in=0.8, p_out=0.7, seed=3)
    assert res["symbols"] == expected and not res["error"]
    res = codec_rtl.run_decoder(dut, stream_words, code.count, build_root=rtl_build_root, simulator=simulator)
    assert res["symbols"] == expected and res["cycles"] == code.count + 5
