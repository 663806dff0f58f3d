"""The two-stream interleaved Huffman decoder (`terwin.hw.codec.interleaved`): symbols in order and
equal to the software decoder's under random back-pressure and starved inputs, on random codes and on
ternary-50's whole-model stream; one symbol a cycle (the first in cycle 6 after `start`) when fed."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import codec, fileformat
from terwin.hw.codec.huffman import words
from terwin.hw.codec.interleaved import InterleavedHuffmanDecoder

ROOT = Path(__file__).parents[1]


def split(symbols, lengths, word_bits):
    """The two streams' words: the even symbols, the odd ones, each coded under `lengths`."""
    out = []
    for part in (symbols[0::2], symbols[1::2]):
        data, nbits = codec.encode(part, lengths)
        out.append(words(data, nbits, word_bits))
    return out


def simulate(dut, streams, count, *, p_in=1.0, p_out=1.0, seed=0):
    """`start`, both streams' words offered (each beat with probability p_in), symbols taken (ready with
    probability p_out). Returns (symbols, [cycle after `start` of each symbol taken], error)."""
    rng = random.Random(seed)
    got, when, result = [], [], {}
    ports = [dut.i_stream0, dut.i_stream1]

    async def bench(ctx):
        ctx.set(dut.start, 1)
        ctx.set(dut.count, count)
        await ctx.tick()
        ctx.set(dut.start, 0)
        pos = [0, 0]
        cycle = 1
        while len(got) < count and cycle < 30 * count + 100:
            offer = [rng.random() < p_in for _ in range(2)]
            for s in range(2):
                ws = streams[s]
                ctx.set(ports[s].valid, offer[s])
                ctx.set(ports[s].payload, ws[min(pos[s], len(ws) - 1)])
            ready = rng.random() < p_out
            ctx.set(dut.o_stream.ready, ready)
            if ready and ctx.get(dut.o_stream.valid):
                got.append(ctx.get(dut.o_stream.payload))
                when.append(cycle)
            for s in range(2):
                if offer[s] and ctx.get(ports[s].ready):
                    pos[s] += 1
            result["error"] = result.get("error", 0) | ctx.get(dut.error)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, when, result.get("error", 0)


@pytest.mark.parametrize("p_in, p_out", [(1.0, 1.0), (0.7, 0.6), (0.15, 1.0)], ids=["fed", "backpressure", "starved"])
@pytest.mark.parametrize("seed", range(3))
def test_random_codes_decode_in_order(seed, p_in, p_out):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 300))
    symbols = rng.choice(size, size=int(rng.integers(1, 300)), p=rng.dirichlet(np.full(size, 0.3)))
    lengths = codec.code_lengths(np.bincount(symbols, minlength=size), int(rng.integers(9, 14)))
    word_bits = int(rng.choice([16, 32]))
    dut = InterleavedHuffmanDecoder(codec.CanonicalTable.from_lengths(lengths),
                                    symbol_bits=max(1, (size - 1).bit_length()), word_bits=word_bits)
    got, when, error = simulate(dut, split(symbols, lengths, word_bits), symbols.size, p_in=p_in, p_out=p_out,
                                seed=seed)
    assert got == symbols.tolist() and not error
    if p_in == p_out == 1.0:
        assert when == [6 + k for k in range(symbols.size)]


def test_ternary_50_stream_at_one_symbol_a_cycle():
    from terwin.hw.ternary.huffman_program import compile_huffman
    from terwin.hw.ternary.program import compile_program
    dep = codec.with_codec(fileformat.load(ROOT / "bitstreams" / "icebreaker" / "ternary-50" / "model.terwin"),
                           "huffman")
    hw = compile_huffman(compile_program(dep))
    dut = InterleavedHuffmanDecoder(hw.table, symbol_bits=hw.symbol_bits, word_bits=16)
    got, when, error = simulate(dut, split(hw.symbols, hw.lengths, 16), hw.count)
    assert got == hw.symbols.tolist() and not error and when == [6 + k for k in range(hw.count)]


def test_a_code_that_is_no_code_raises_error():
    lengths = np.array([1, 2, 0, 0])            # incomplete code: 0, 10; 11 is no code
    dut = InterleavedHuffmanDecoder(codec.CanonicalTable.from_lengths(lengths), symbol_bits=2, word_bits=2)
    _, _, error = simulate(dut, [[0b11, 0, 0, 0], [0, 0, 0, 0]], 4)
    assert error
