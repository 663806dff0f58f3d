"""The host side of the board's UART bridge (`terwin.hw.boards.UARTBridge`, on every bitstream
`terwin build` makes): images out, class scores back.

Protocol (8N1, `DEFAULT_BAUD` unless built otherwise; docs/boards.md, "Running on the board"):

* per image the host sends `Protocol.input_bytes` bytes: one byte per quantized input activation,
  (C, H, W) raster order (`terwin.sim.reference.quantize_input`; values 0..2**act_bits - 1);
* the board answers with every class score, in class order, each `score_bytes` bytes: the score
  sign-extended to `8 * score_bytes` bits, little-endian;
* only then does the host send the next image (the accelerator takes no input while it computes);
* a design that loads its weights at run time (`Protocol.preamble`: the Winograd engine's
  weight_memory "loaded") takes them after each reset: the host sends a line break (the bridge
  resets the accelerator on it) and then the preamble, one byte per beat, before its first image
  (`BoardSession.start`).

The protocol has no command to ask the board which model it carries: `Protocol.for_model` gives the
byte counts this model's bitstream uses, a build's `report.json` carries the model checksum
(`check_report`), and the scores themselves, compared with the reference, tell the rest.

`BoardSession` speaks the protocol over any pyserial-like port (`write(bytes)`, `read(n)` that
returns what arrived within the port's read timeout); `open_port` opens a real one.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import serial
from amaranth.hdl import Fragment

from terwin import fileformat, safeio
from terwin.engines import build_top
from terwin.errors import TerwinError
from terwin.hw.boards import UARTBridge

DEFAULT_BAUD = 115_200      # = terwin.hw.boards.DEFAULT_BAUD (tests/test_run_board.py checks they agree)
DEFAULT_TIMEOUT = 2.0       # seconds for one image's answer; a board takes ~10 ms at 115200 baud
BREAK_SECONDS = 0.01        # a line break: ~115 frames at 115200 baud (the bridge needs one)
QUIET_WINDOW = 0.1          # seconds to listen for bytes past the first answer (a bitstream of another model)

WIRING = ("iCEBreaker: the USB port's FTDI FT2232H, second interface (Linux: /dev/ttyUSB1; the first is the "
          "flash programmer); ULX3S: the US1 USB port's FTDI FT231X (Linux: /dev/ttyUSB0 when it is the only "
          "FTDI). The bitstream's UART pins are wired to these on the board: no cables besides USB.")


@dataclass(frozen=True)
class Protocol:
    """Byte counts of the UART bridge for one model."""
    input_bytes: int     # bytes sent per image: one per input activation
    classes: int         # scores per image
    score_bytes: int     # bytes per score
    act_max: int         # largest activation; the board clamps a larger byte to it
    preamble: bytes = b""  # sent after a break, before the first image (weights loaded at run time)

    @property
    def answer_bytes(self) -> int:
        return self.classes * self.score_bytes

    @classmethod
    def for_model(cls, dep) -> "Protocol":
        """The protocol of the bitstream `terwin build` makes for `dep`: the score width is the
        accelerator's own, read from the same bridge the build puts on the board."""
        try:
            top = build_top(dep)
            bridge = UARTBridge(top, divisor=4)  # the divisor does not change the byte protocol
        except ValueError as e:
            raise TerwinError(f"this model cannot go on a board: {e}") from None
        Fragment.get(bridge, None)  # elaborated, so Amaranth does not warn about an unused design
        return cls(input_bytes=int(np.prod(dep.input_shape)), classes=int(np.prod(dep.output_shape)),
                   score_bytes=bridge.score_bytes, act_max=(1 << dep.spec.act_bits) - 1,
                   preamble=bytes(top.program.preamble()))

    def encode(self, q) -> bytes:
        """One quantized image (any shape with `input_bytes` elements, (C, H, W) order) -> the bytes to send."""
        flat = np.asarray(q).reshape(-1)
        if flat.size != self.input_bytes:
            raise ValueError(f"an image has {self.input_bytes} activations, not {flat.size}")
        if flat.size and (flat.min() < 0 or flat.max() > self.act_max):
            raise ValueError(f"activations must be in 0..{self.act_max}, not {int(flat.min())}..{int(flat.max())}")
        return flat.astype(np.uint8).tobytes()

    def decode(self, raw: bytes) -> list[int]:
        """One answer -> the class scores (signed integers, class order)."""
        if len(raw) != self.answer_bytes:
            raise ValueError(f"an answer has {self.answer_bytes} bytes, not {len(raw)}")
        n = self.score_bytes
        return [int.from_bytes(raw[i:i + n], "little", signed=True) for i in range(0, len(raw), n)]


class BoardSession:
    """The protocol over a pyserial-like `port`; `name` says which port in messages.

    `timeout`: seconds from sending an image to its complete answer. The port's own read timeout
    should be shorter (`open_port` sets it), so a silent board is noticed on time.
    """

    def __init__(self, port, protocol: Protocol, *, timeout: float = DEFAULT_TIMEOUT, name: str = "the port"):
        self.port = port
        self.protocol = protocol
        self.timeout = timeout
        self.name = name

    def discard_input(self) -> None:
        """Drop bytes that arrived before this session (noise at power-up, a previous run's answer)."""
        reset = getattr(self.port, "reset_input_buffer", None)
        if reset is not None:
            self._io(reset)

    def start(self, *, break_seconds: float = BREAK_SECONDS) -> None:
        """Before the first image: a design that loads its weights at run time gets a line break
        (which resets it) and its preamble. Nothing for any other design."""
        if not self.protocol.preamble:
            return
        send_break = getattr(self.port, "send_break", None)
        if send_break is None:
            raise TerwinError(f"{self.name}: this model's bitstream loads its weights after a line break, "
                              f"and this port cannot send one")
        self._io(send_break, break_seconds)
        time.sleep(break_seconds)   # the line idle again before the first byte
        self._send(self.protocol.preamble)

    def classify(self, q, *, index: int = 0) -> list[int]:
        """Send image `index` (quantized) and return its class scores as the board computed them."""
        self._send(self.protocol.encode(q))
        raw = self._read(self.protocol.answer_bytes, index)
        return self.protocol.decode(raw)

    def extra_bytes(self, wait: float = QUIET_WINDOW) -> bytes:
        """Whatever arrives within `wait` seconds when the board should be silent."""
        got = bytearray()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            chunk = self._io(self.port.read, 64)
            if chunk:
                got += chunk
        return bytes(got)

    def _read(self, n: int, index: int) -> bytes:
        buf = bytearray()
        deadline = time.monotonic() + self.timeout
        while len(buf) < n:
            chunk = self._io(self.port.read, n - len(buf))
            if chunk:
                buf += chunk
            elif time.monotonic() >= deadline:
                got = f"{len(buf)} of {n} bytes" if buf else "nothing"
                raise TerwinError(
                    f"{self.name}: no complete answer to image {index} within {self.timeout:g} s ({got}): is the "
                    f"board on this port, programmed with this model's bitstream (terwin program), at this baud?")
        return bytes(buf)

    def _send(self, data: bytes) -> None:
        """Write `data` and flush it onto the line (a port without `flush` writes through)."""
        self._io(self.port.write, data)
        flush = getattr(self.port, "flush", None)
        if flush is not None:
            self._io(flush)

    def _io(self, fn, *args):
        try:
            return fn(*args)
        except (OSError, ValueError) as e:  # serial.SerialException is an OSError
            raise TerwinError(f"{self.name}: {e}") from None


def open_port(name: str, *, baud: int = DEFAULT_BAUD, read_timeout: float = 0.05):
    """A pyserial port, 8N1 at `baud`, no flow control; `name` is a device path or a pyserial URL."""
    if "://" not in name and not os.path.exists(name):
        raise TerwinError(f"--port {name}: no such serial port (is the board plugged in? see terwin run --help)")
    try:
        return serial.serial_for_url(name, baudrate=baud, bytesize=8, parity="N", stopbits=1, timeout=read_timeout,
                                     write_timeout=10.0, xonxoff=False, rtscts=False, dsrdtr=False)
    except (OSError, ValueError) as e:
        raise TerwinError(f"--port {name}: cannot open it: {e}") from None


def check_report(report_path, dep, protocol: Protocol) -> dict:
    """A build's report.json: refuse it unless it was built for `dep` with this protocol; return its `uart`."""
    path = Path(report_path)
    try:
        report = safeio.load_json(path, what="build report (report.json)")
    except TerwinError as e:
        raise TerwinError(f"--report {e}") from None
    if not isinstance(report, dict) or not isinstance(report.get("uart"), dict) or "model_checksum" not in report:
        raise TerwinError(f"--report {path}: not a terwin build report (no model_checksum and uart fields)")
    want = fileformat.checksum(dep)
    if report["model_checksum"] != want:
        raise TerwinError(f"--report {path}: the bitstream was built for another model "
                          f"(checksum {str(report['model_checksum'])[:16]}..., this model's is {want[:16]}...)")
    uart = report["uart"]
    if uart.get("score_bytes") != protocol.score_bytes:
        raise TerwinError(f"--report {path}: the bitstream sends {uart.get('score_bytes')} byte(s) per score, "
                          f"this model {protocol.score_bytes}")
    return uart


@dataclass
class Comparison:
    mismatches: int
    first: dict | None   # {"image", "class", "expected", "got"}


def compare(scores: np.ndarray, expected: np.ndarray) -> Comparison:
    """Every score with `==`; the first mismatch in image order, then class order."""
    diff = np.asarray(scores) != np.asarray(expected)
    if not diff.any():
        return Comparison(0, None)
    img, cls = (int(v) for v in np.argwhere(diff)[0])
    return Comparison(int(diff.sum()), {"image": img, "class": cls, "expected": int(expected[img, cls]),
                                        "got": int(scores[img, cls])})
