"""Board-level hardware: an 8N1 UART and the top that puts an accelerator on a real board.

The accelerator (`terwin.engines.build_top(dep)`, or any component with the same ports) takes
activations on `i_stream` and gives class scores on `o_stream`. On a board it is wrapped so that
nothing can be optimised away: its input comes from a UART, its output goes back over the UART.

Host protocol (8N1, `DEFAULT_BAUD` by default):

* the host sends one byte per input activation, (C, H, W) raster order; a byte above the
  accelerator's `2**act_bits - 1` is clamped to it (the integer contract's input clamp);
* the board answers with every class score, in class order, as `score_bytes` bytes each:
  the score sign-extended to `8 * score_bytes` bits, little-endian;
* a line break (the line held low for a whole frame or more) resets the accelerator: a design that
  loads its weights at run time (`Program.preamble`, e.g. the Winograd engine's weight_memory
  "loaded") takes its preamble after each reset, one byte per beat, so the host sends a break and
  then the preamble before its first image (`terwin.runtime.BoardSession.start`).

`UARTBridge` is that wiring alone (simulation-friendly: no clocks, no pins); `BoardTop` adds the
board's clock (the FPGA family's PLL to the target frequency, `terwin.hw.fpga`), reset, the UART
pins and LEDs, for `platform.build`.
"""

from amaranth.hdl import Cat, ClockDomain, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from . import fpga

DEFAULT_BAUD = 115_200


def uart_divisor(clk_hz: float, baud: int) -> int:
    """Clock cycles per UART bit, rounded to the nearest integer."""
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"a {clk_hz / 1e6:g} MHz clock is too slow for {baud} baud (fewer than 4 cycles per bit)")
    return divisor


def score_bytes(score_bits: int) -> int:
    """Bytes per class score on the UART."""
    return -(-score_bits // 8)


def _check_divisor(divisor) -> int:
    """Clock cycles per UART bit: at least 4, so the receiver can sample mid-bit."""
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an integer of at least 4, not {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver. `rx` idles high; each byte is sampled mid-bit, `divisor` cycles per bit.

    A received byte is offered on `o_stream` until taken. `error` goes high (and stays high until
    reset) on a framing error (stop bit low) or an overrun (a byte arrived before the last one
    was taken; the new byte is dropped). A break (a frame of zeros whose stop bit is low too: the
    line held low) is no error: `brk` is high for one cycle instead.
    """

    o_stream: Out(stream.Signature(8))
    rx: In(1, init=1)
    error: Out(1)
    brk: Out(1)

    def __init__(self, *, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        rx = Signal(init=1)
        m.submodules.rx_sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(div))
        bits = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):  # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(div - 1), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(~rx):
                    with m.If(shreg == 0):
                        m.d.comb += self.brk.eq(1)
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                    m.next = "BREAK"
                with m.Else():
                    with m.If(self.o_stream.valid & ~self.o_stream.ready):
                        m.d.sync += self.error.eq(1)
                    with m.Else():
                        m.d.sync += [self.o_stream.payload.eq(shreg), self.o_stream.valid.eq(1)]
                    m.next = "IDLE"
            with m.State("BREAK"):  # wait for the line to go idle after a framing error
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: takes a byte from `i_stream` whenever idle; `tx` idles high."""

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, *, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        frame = Signal(10, init=(1 << 10) - 1)  # stop bit, 8 data bits LSB first, start bit
        left = Signal(range(11))
        timer = Signal(range(div))
        m.d.comb += self.tx.eq(frame[0])

        with m.If(left == 0):
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(self.i_stream.valid):
                m.d.sync += [frame.eq(Cat(Const(0, 1), self.i_stream.payload, Const(1, 1))),
                             left.eq(10), timer.eq(div - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), left.eq(left - 1), timer.eq(div - 1)]
        return m


class ScoreSerializer(wiring.Component):
    """Signed scores in, bytes out: each score sign-extended to `score_bytes(width)` bytes, LSB first."""

    def __init__(self, score_shape):
        self._shape = score_shape
        self._bytes = score_bytes(score_shape.width)
        super().__init__({
            "i_stream": In(stream.Signature(score_shape)),
            "o_stream": Out(stream.Signature(8)),
        })

    def elaborate(self, platform):
        m = Module()
        word = Signal(8 * self._bytes)
        left = Signal(range(self._bytes + 1))
        m.d.comb += [self.o_stream.payload.eq(word[:8]), self.o_stream.valid.eq(left != 0)]
        with m.If(left == 0):
            m.d.comb += self.i_stream.ready.eq(1)
            with m.If(self.i_stream.valid):
                m.d.sync += [word.eq(self.i_stream.payload), left.eq(self._bytes)]  # signed: sign-extends
        with m.Elif(self.o_stream.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        return m


class UARTBridge(wiring.Component):
    """The accelerator `core` between a UART receiver and transmitter (see the module docstring).

    `core` must have `i_stream` (unsigned activations, at most 8 bits), `o_stream` (signed scores)
    and `busy` ports, as `terwin.engines.build_top` gives.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    rx_error: Out(1)

    def __init__(self, core: wiring.Component, *, divisor: int):
        members = core.signature.members
        for port in ("i_stream", "o_stream", "busy"):
            if port not in members:
                raise TypeError(f"the accelerator has no {port!r} port")
        self.act_shape = members["i_stream"].signature.members["payload"].shape
        self.score_shape = members["o_stream"].signature.members["payload"].shape
        if self.act_shape.signed or self.act_shape.width > 8:
            raise ValueError(f"the UART bridge sends one byte per activation; activations of shape "
                             f"{self.act_shape!r} do not fit in a byte")
        if not self.score_shape.signed:
            raise ValueError(f"class scores must be signed, not {self.score_shape!r}")
        self.core = core
        self._divisor = divisor
        super().__init__()

    @property
    def score_bytes(self) -> int:
        return score_bytes(self.score_shape.width)

    def elaborate(self, platform):
        m = Module()
        core = self.core
        m.submodules.uart_rx = rx = UARTRx(divisor=self._divisor)
        m.submodules.uart_tx = tx = UARTTx(divisor=self._divisor)
        ser = ScoreSerializer(self.score_shape)
        # a line break resets the accelerator and the scores it was sending (not the UART), from a
        # flip-flop: the reset fans out over the whole accelerator
        brk = Signal()
        m.d.sync += brk.eq(rx.brk)
        m.submodules.core = ResetInserter(brk)(core)
        m.submodules.serializer = ResetInserter(brk)(ser)

        act_max = (1 << self.act_shape.width) - 1
        byte = rx.o_stream.payload
        m.d.comb += [
            rx.rx.eq(self.rx),
            self.tx.eq(tx.tx),
            self.busy.eq(core.busy),
            self.rx_error.eq(rx.error),
            core.i_stream.valid.eq(rx.o_stream.valid),
            core.i_stream.payload.eq(Mux(byte > act_max, act_max, byte)),
            rx.o_stream.ready.eq(core.i_stream.ready),
        ]
        wiring.connect(m, core.o_stream, ser.i_stream)
        wiring.connect(m, ser.o_stream, tx.i_stream)
        return m


class BoardTop(wiring.Component):
    """What goes on the board: clock and reset, the UART pins, the bridge, and LEDs.

    `core` is the accelerator; `family` the FPGA family (`terwin.hw.fpga`, or its name); `clock_hz`
    the frequency the accelerator should run at: the board clock goes through the family's PLL to
    the closest frequency the PLL makes (`self.pll.out_hz`), or is used as it is when that is the
    board clock itself. LED 0 lights while the accelerator is busy, LED 1 on a
    UART receive error.
    """

    def __init__(self, core: wiring.Component, *, family: fpga.FpgaFamily | str, board_clk_hz: float,
                 clock_hz: float, baud: int = DEFAULT_BAUD):
        self.family = fpga.get(family) if isinstance(family, str) else family
        pll = None
        if abs(clock_hz - board_clk_hz) >= 1:
            pll = self.family.pll(board_clk_hz, clock_hz)
            if abs(pll.out_hz - board_clk_hz) < 1:  # the board clock is as close as the PLL gets
                pll = None
        self.pll = pll
        self.clk_hz = board_clk_hz if pll is None else pll.out_hz
        self.baud = baud
        self.bridge = UARTBridge(core, divisor=uart_divisor(self.clk_hz, baud))
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        clk_pin = platform.request(platform.default_clk, dir="-")
        locked = Signal()
        if self.pll is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            m.d.comb += [cd_sync.clk.eq(clk_buf.i), locked.eq(1)]
        else:
            self.family.add_pll(m, self.pll, clk_pin=clk_pin, clk=cd_sync.clk, locked=locked)
        # nextpnr derives the PLL output's clock constraint from the board clock's.

        # Hold reset until the clock is stable and ~20 us more: iCE40 block RAMs read as zero for
        # a few microseconds after configuration.
        por_cycles = max(16, int(20e-6 * self.clk_hz))
        m.domains.por = cd_por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += cd_por.clk.eq(cd_sync.clk)
        # The reset comes from a flip-flop, not from the counter's comparator: it fans out over the whole
        # die, and from the comparator it took two cross-die hops, counter -> comparator LUT (placed
        # amid its 4,049 flip-flops) -> a flip-flop's reset pin (the ECP5 pe32x32's critical path, 12.7 ns)
        timer = Signal(range(por_cycles + 1))
        reset = Signal(init=1)
        with m.If(~locked):
            m.d.por += timer.eq(0)
        with m.Elif(timer != por_cycles):
            m.d.por += timer.eq(timer + 1)
        m.d.por += reset.eq(timer != por_cycles)
        m.d.comb += cd_sync.rst.eq(reset)

        m.submodules.bridge = bridge = self.bridge
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.led_busy = led_busy = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led_err = led_err = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [bridge.rx.eq(rx_buf.i), tx_buf.o.eq(bridge.tx),
                     led_busy.o.eq(bridge.busy), led_err.o.eq(bridge.rx_error)]
        return m
