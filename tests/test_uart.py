# amaranth: UnusedElaboratable=no
"""UART receiver/transmitter, score serializer and the UART bridge, in Amaranth's simulator.

The line is driven and decoded bit by bit at `DIV` clock cycles per bit, as a host's UART would.
"""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from terwin.hw.boards import ScoreSerializer, UARTBridge, UARTRx, UARTTx, score_bytes, uart_divisor
from terwin.engines import build_top
from terwin.hw.fpga import FAMILIES
from terwin.sim import reference
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment

DIV = 5  # clock cycles per UART bit in these tests


async def line_send(ctx, line, data: bytes, *, divisor=DIV, gap=0, stop_bit=1):
    """Drive an 8N1 line with `data`, `gap` idle bit times between frames."""
    for byte in data:
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [stop_bit]
        for bit in bits:
            ctx.set(line, bit)
            await ctx.tick().repeat(divisor)
        ctx.set(line, 1)
        idle = divisor * gap + (0 if stop_bit else divisor)
        if idle:
            await ctx.tick().repeat(idle)


async def line_recv(ctx, line, count: int, *, divisor=DIV, timeout=1_000_000) -> bytes:
    """Decode `count` 8N1 frames from a line, checking start and stop bits."""
    out = bytearray()
    waited = 0
    while len(out) < count:
        while ctx.get(line) == 1:
            await ctx.tick()
            waited += 1
            assert waited < timeout, f"timed out after {len(out)} of {count} bytes"
        await ctx.tick().repeat(divisor // 2)
        assert ctx.get(line) == 0, "start bit glitch"
        byte = 0
        for i in range(8):
            await ctx.tick().repeat(divisor)
            byte |= ctx.get(line) << i
        await ctx.tick().repeat(divisor)
        assert ctx.get(line) == 1, f"stop bit of byte {len(out)} is low"
        out.append(byte)
    return bytes(out)


def run(dut, *benches, deadline_cycles=200_000):
    """Run until every testbench has returned; fail if that takes more than `deadline_cycles`."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    finished = []
    for bench in benches:
        async def wrapped(ctx, bench=bench):
            await bench(ctx)
            finished.append(bench.__name__)
        sim.add_testbench(wrapped)
    sim.run_until(deadline_cycles * 1e-6)
    assert len(finished) == len(benches), \
        f"testbenches still waiting after {deadline_cycles} cycles: only {finished} finished"


def test_divisor_rounds_and_refuses_slow_clocks():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(48e6, 115200) == 417
    with pytest.raises(ValueError, match="too slow"):
        uart_divisor(300e3, 115200)


def test_rx_receives_bytes_and_holds_them_until_taken():
    dut = UARTRx(divisor=DIV)
    sent = bytes([0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80, 0x3C])
    got = []

    async def host(ctx):
        await line_send(ctx, dut.rx, sent, gap=1)

    async def consumer(ctx):
        while len(got) < len(sent):
            # slow consumer: take each byte some cycles after it appears
            await ctx.tick().until(dut.o_stream.valid)
            await ctx.tick().repeat(3)
            assert ctx.get(dut.o_stream.valid) == 1, "a byte vanished before it was taken"
            ctx.set(dut.o_stream.ready, 1)
            got.append(ctx.get(dut.o_stream.payload))
            await ctx.tick()
            ctx.set(dut.o_stream.ready, 0)
        assert ctx.get(dut.error) == 0

    run(dut, host, consumer, deadline_cycles=20_000)
    assert bytes(got) == sent, f"expected {sent.hex()}, got {bytes(got).hex()}"


def test_rx_flags_a_framing_error_and_recovers():
    dut = UARTRx(divisor=DIV)
    got = []

    async def host(ctx):
        await line_send(ctx, dut.rx, b"\x42", stop_bit=0)   # bad stop bit: dropped, error set
        await ctx.tick().repeat(3 * DIV)
        await line_send(ctx, dut.rx, b"\x17")

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        async for clk_edge, rst, valid, payload in ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload):
            if valid:
                got.append(payload)
                break
        assert ctx.get(dut.error) == 1

    run(dut, host, consumer, deadline_cycles=20_000)
    assert got == [0x17], got


def test_rx_reports_a_break_and_recovers():
    """A line held low for longer than a frame (a break: zeros and a low stop bit) is no byte and no
    error: `brk` is high for one cycle; the next byte after the line went idle arrives as usual."""
    dut = UARTRx(divisor=DIV)
    got, pulses = [], []

    async def host(ctx):
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(25 * DIV)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * DIV)
        await line_send(ctx, dut.rx, b"\x17")

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        async for clk_edge, rst, valid, payload, brk in ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload,
                                                                         dut.brk):
            pulses.append(brk)
            if valid:
                got.append(payload)
                break
        assert ctx.get(dut.error) == 0

    run(dut, host, consumer, deadline_cycles=20_000)
    assert got == [0x17] and sum(pulses) == 1, (got, sum(pulses))


def test_bridge_resets_the_accelerator_on_a_break():
    """Half an image, a break, then a whole image: the answer is the whole image's scores (the
    accelerator forgot the half), and no error."""
    dep = random_deployment(PRESETS["pe4x4"], seed=2, input_shape=(1, 4, 4),
                            topology=(("conv2d", 4), ("linear", 3)))
    img = np.arange(16).reshape(1, 1, 4, 4) * 7
    want = reference.forward(dep, img).reshape(-1).tolist()
    dut = UARTBridge(build_top(dep), divisor=DIV)
    n = dut.score_bytes
    got = []

    async def host(ctx):
        await line_send(ctx, dut.rx, bytes(range(8)))
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(25 * DIV)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * DIV)
        await line_send(ctx, dut.rx, bytes(int(v) for v in img.reshape(-1)))
        raw = await line_recv(ctx, dut.tx, 3 * n, timeout=50_000)
        got.extend(int.from_bytes(raw[i:i + n], "little", signed=True) for i in range(0, len(raw), n))
        assert ctx.get(dut.rx_error) == 0

    run(dut, host, deadline_cycles=100_000)
    assert got == want, (got, want)


def test_rx_flags_an_overrun():
    dut = UARTRx(divisor=DIV)

    async def host(ctx):
        await line_send(ctx, dut.rx, b"\x01\x02")
        await ctx.tick().repeat(2 * DIV)
        assert ctx.get(dut.error) == 1, "second byte arrived while the first was still held, error not set"
        assert ctx.get(dut.o_stream.payload) == 0x01, "the held byte must stay the first one"

    run(dut, host, deadline_cycles=1_000)


def test_tx_sends_bytes_back_to_back():
    dut = UARTTx(divisor=DIV)
    sent = bytes(range(0, 256, 37)) + b"\xff\x00"
    got = []

    async def producer(ctx):
        for byte in sent:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, byte)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def host(ctx):
        got.extend(await line_recv(ctx, dut.tx, len(sent)))

    run(dut, producer, host, deadline_cycles=20_000)
    assert bytes(got) == sent, f"expected {sent.hex()}, got {bytes(got).hex()}"


@pytest.mark.parametrize("bits", [8, 9, 17, 24])
def test_serializer_sign_extends_little_endian(bits):
    dut = ScoreSerializer(signed(bits))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    scores = [0, 1, -1, lo, hi, 5, -77 % (hi + 1), lo + 3]
    n = score_bytes(bits)
    got = bytearray()

    async def producer(ctx):
        for s in scores:
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.i_stream.payload, s)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        toggle = 0
        while len(got) < n * len(scores):
            toggle ^= 1
            ctx.set(dut.o_stream.ready, toggle)  # back-pressure every other cycle
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid, dut.o_stream.payload)
            if valid and toggle:
                got.append(payload)

    run(dut, producer, consumer, deadline_cycles=2_000)
    expected = b"".join(s.to_bytes(n, "little", signed=True) for s in scores)
    assert bytes(got) == expected, f"expected {expected.hex()}, got {bytes(got).hex()}"


class ToyCore(wiring.Component):
    """Stands in for the accelerator's port shape: after `n_in` activations, class k scores
    `sum(x) * (k % 3 - 1) - k`, so scores are signed and several bytes wide."""

    def __init__(self, *, n_in, n_classes, act_bits=8, score_bits=12):
        self.n_in, self.n_classes = n_in, n_classes
        super().__init__({
            "i_stream": In(stream.Signature(unsigned(act_bits))),
            "o_stream": Out(stream.Signature(signed(score_bits))),
            "busy": Out(1),
        })

    def reference(self, x):
        s = sum(x)
        return [s * (k % 3 - 1) - k for k in range(self.n_classes)]

    def elaborate(self, platform):
        m = Module()
        total = Signal(signed(self.o_stream.payload.shape().width))
        count = Signal(range(self.n_in + 1))
        k = Signal(range(self.n_classes + 1))
        with m.If(count != self.n_in):
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(self.i_stream.valid):
                m.d.sync += [total.eq(total + self.i_stream.payload), count.eq(count + 1), self.busy.eq(1)]
        with m.Else():
            sel = k % 3
            m.d.comb += [self.o_stream.valid.eq(1),
                         self.o_stream.payload.eq(
                             Mux(sel == 2, total, Mux(sel == 1, 0, -total)) - k)]
            with m.If(self.o_stream.ready):
                m.d.sync += k.eq(k + 1)
                with m.If(k == self.n_classes - 1):
                    m.d.sync += [k.eq(0), count.eq(0), total.eq(0), self.busy.eq(0)]
        return m


def test_bridge_round_trip_with_clamping():
    core = ToyCore(n_in=6, n_classes=5, act_bits=5, score_bits=12)
    dut = UARTBridge(core, divisor=DIV)
    assert dut.score_bytes == 2
    images = [[1, 2, 3, 4, 5, 6], [31, 200, 0, 255, 7, 31]]   # 200 and 255 clamp to 31
    got = bytearray()

    async def host(ctx):
        for img in images:  # the protocol: send an image, wait for its scores
            await line_send(ctx, dut.rx, bytes(img))
            got.extend(await line_recv(ctx, dut.tx, 2 * 5))
        assert ctx.get(dut.rx_error) == 0

    run(dut, host, deadline_cycles=50_000)
    expected = b"".join(s.to_bytes(2, "little", signed=True)
                        for img in images for s in core.reference([min(v, 31) for v in img]))
    assert bytes(got) == expected, f"expected {expected.hex()}, got {bytes(got).hex()}"


def test_bridge_refuses_wide_activations():
    core = ToyCore(n_in=2, n_classes=2, act_bits=9)
    Fragment.get(core, None)  # elaborated, so Amaranth does not warn about an unused component
    with pytest.raises(ValueError, match="do not fit in a byte"):
        UARTBridge(core, divisor=DIV)


@pytest.mark.parametrize("target", [24e6, 40e6, 48e6, 60e6])
def test_ice40_pll_within_limits(target):
    pll = FAMILIES["ice40"].pll(12e6, target)
    p = pll.params
    pfd = 12e6 / (p["DIVR"] + 1)
    vco = pfd * (p["DIVF"] + 1)
    assert 10e6 <= pfd <= 133e6 and 533e6 <= vco <= 1066e6
    assert pll.out_hz == vco / 2 ** p["DIVQ"]
    assert abs(pll.out_hz - target) <= 0.02 * target, (pll.out_hz, target)


@pytest.mark.parametrize("target", [30e6, 50e6, 90e6, 100e6, 125e6])
def test_ecp5_pll_within_limits(target):
    pll = FAMILIES["ecp5"].pll(25e6, target)
    p = pll.params
    out = 25e6 / p["CLKI_DIV"] * p["CLKFB_DIV"]
    assert out == pll.out_hz and 400e6 <= out * p["CLKOP_DIV"] <= 800e6
    assert abs(pll.out_hz - target) <= 0.02 * target, (pll.out_hz, target)


def test_board_top_uses_the_pll_only_when_it_helps():
    from terwin.hw.boards import BoardTop

    def top(family, board_hz, hz):
        t = BoardTop(ToyCore(n_in=2, n_classes=2), family=family, board_clk_hz=board_hz, clock_hz=hz)
        Fragment.get(t.bridge, None)  # elaborated (the board part needs a platform; not built here)
        return t

    assert top("ice40", 12e6, 12e6).pll is None
    assert top("ecp5", 25e6, 24e6).pll is None                 # 25 MHz is the closest an ECP5 PLL gets
    t = top("ice40", 12e6, 40e6)
    assert t.pll is not None and t.clk_hz == 39.75e6 and t.bridge._divisor == round(39.75e6 / 115200)
