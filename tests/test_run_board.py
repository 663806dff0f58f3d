"""`terwin run` against a simulated board: the real RTL of the board's UART bridge and accelerator
(`UARTBridge(build_top(dep))`, what `BoardTop` puts on the FPGA between its PLL and its pins) in
Amaranth's simulator, wired to the host through a pseudo-terminal.

The host is the real command, `terwin.cli.main(["run", MODEL, "--port", <pty slave>])`, with pyserial
on the pty's slave side. On the master side the simulator drives the bridge's `rx` pin bit by bit
with the bytes the host writes (start bit, 8 data bits LSB first, stop bit; `DIV` clock cycles per
bit, asynchronous to the board clock as a real host is) and decodes its `tx` pin the same way (start
bit and stop bit checked, sampled mid-bit), writing each byte back. So the byte protocol, the
framing, the baud divisor and the score order are all exercised bit for bit, with no hardware.
A small divisor keeps it fast; on the board it is `uart_divisor(clock, 115200)`, with the same framing.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin import fileformat
from terwin.cli import main
from terwin.hw.boards import DEFAULT_BAUD, UARTBridge
from terwin.engines import build_top
from terwin.runtime import DEFAULT_BAUD as RUNTIME_BAUD
from terwin.runtime import Protocol, compare
from terwin.sim import reference
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment

DIV = 4          # clock cycles per UART bit in the simulated board (the smallest the bridge takes)
CLK = 1e-6       # simulated clock period, seconds
REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "bitstreams" / "icebreaker" / "ternary-50"   # the trained digits model of the reference build
SMALL = (("conv2d", 4), ("maxpool2d", 2), ("linear", 10))             # a digits-shaped model that simulates fast


class SimulatedBoard:
    """`with SimulatedBoard(dep) as board:` the bridge + accelerator for `dep` simulated in a thread,
    its UART on the pty `board.port`. `sent` / `received`: bytes that crossed the rx / tx pins."""

    def __init__(self, dep, *, divisor: int = DIV):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)            # no echo, no line editing: bytes pass as they are
        self.port = os.ttyname(self._slave)
        self.dut = UARTBridge(build_top(dep), divisor=divisor)
        self.bit = divisor * CLK           # one bit time on the line
        self.sent = self.received = 0
        self.rx_error = None
        self.error = None
        self.breaks = 0
        self._break_asked, self._break_sent = threading.Event(), threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._simulate, daemon=True)

    open_boards: dict = {}     # port name -> the board simulated on it

    def __enter__(self):
        self._thread.start()
        SimulatedBoard.open_boards[self.port] = self
        return self

    def __exit__(self, *exc):
        SimulatedBoard.open_boards.pop(self.port, None)
        self._stop.set()
        self._thread.join(timeout=60)
        os.close(self.master)
        os.close(self._slave)
        assert not self._thread.is_alive(), "the simulator did not stop"
        if self.error is not None:   # the simulator's failure explains the host's
            raise self.error
        return False

    def _simulate(self):
        try:
            sim = Simulator(self.dut)
            sim.add_clock(CLK)
            sim.add_testbench(self._line_in)
            sim.add_testbench(self._line_out, background=True)
            sim.run()
        except BaseException as e:  # re-raised by __exit__ in the test's thread
            self.error = e

    def send_break(self, duration=0.25):
        """What the host's `serial.Serial.send_break` does on this board's line (a pty cannot carry a
        break, so the tests route the call here): `rx` held low for 20 bit times, in order with the
        bytes (this returns once the break is on the line, as a real port's call does)."""
        self._break_sent.clear()
        self._break_asked.set()
        assert self._break_sent.wait(timeout=60), "the simulated board did not send the break"

    def _from_host(self, wait: float) -> bytes:
        if not select.select([self.master], [], [], wait)[0]:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:  # the host closed the port
            return b""

    async def _line_in(self, ctx):
        """Host -> board: drive `rx` with the host's bytes; the line idles high between them."""
        rx, busy = self.dut.rx, self.dut.busy
        await ctx.delay(0.37 * CLK)          # the host's bit clock is not the board's
        idle_bits, seen = 0, self.received
        while not self._stop.is_set():
            self.rx_error = ctx.get(self.dut.rx_error)
            if self._break_asked.is_set():
                ctx.set(rx, 0)
                await ctx.delay(20 * self.bit)
                ctx.set(rx, 1)
                await ctx.delay(2 * self.bit)
                self.breaks += 1
                self._break_asked.clear()
                self._break_sent.set()
                continue
            # While the board is idle (nothing in flight for 3 frames) wait for the host in wall time
            # without advancing simulated time; otherwise only peek.
            quiet = idle_bits >= 30 and not ctx.get(busy)
            data = self._from_host(0.02 if quiet else 0)
            for byte in data:
                for bit in (0, *((byte >> i) & 1 for i in range(8)), 1):   # start, data LSB first, stop
                    ctx.set(rx, bit)
                    await ctx.delay(self.bit)
                self.sent += 1
            if data:
                idle_bits = 0
                continue
            await ctx.delay(self.bit)
            idle_bits = 0 if self.received != seen else idle_bits + 1
            seen = self.received
        self.rx_error = ctx.get(self.dut.rx_error)

    async def _line_out(self, ctx):
        """Board -> host: decode `tx` frames, sampling mid-bit; each byte goes to the host."""
        tx = self.dut.tx
        while True:
            await ctx.negedge(tx)
            await ctx.delay(self.bit / 2)
            assert ctx.get(tx) == 0, f"start bit of byte {self.received} shorter than half a bit"
            byte = 0
            for i in range(8):
                await ctx.delay(self.bit)
                byte |= ctx.get(tx) << i
            await ctx.delay(self.bit)
            assert ctx.get(tx) == 1, f"stop bit of byte {self.received} is low"
            # counted before the host can have it: the test reads `received` once the host has every byte
            self.received += 1
            os.write(self.master, bytes([byte]))


def small_model(seed=0, *, classes=10):
    return random_deployment(PRESETS["pe4x4"], seed=seed, input_shape=(1, 8, 8),
                             topology=SMALL[:-1] + (("linear", classes),))


def run_cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(autouse=True)
def breaks_reach_the_board(monkeypatch):
    """A pty carries no line break: `serial.Serial.send_break` on a simulated board's port drives the
    break onto its rx pin instead (`SimulatedBoard.send_break`)."""
    import serial

    def send_break(port, duration=0.25):
        board = SimulatedBoard.open_boards.get(port.port)
        assert board is not None, f"a break on {port.port}, which is no simulated board"
        board.send_break(duration)
    monkeypatch.setattr(serial.Serial, "send_break", send_break)


def check_run(capsys, tmp_path, dep, model, *extra, images=20, board=None):
    """`terwin run` over `images` images against the simulated board of `dep` (or `board`, already
    running); every score equal."""
    out_json = tmp_path / "run.json"
    with (SimulatedBoard(dep) if board is None else contextlib.nullcontext(board)) as board:
        sent, received = board.sent, board.received
        rc, out, err = run_cli(capsys, "run", model, "--port", board.port, "--images", images,
                               "--timeout", 120, "--json", out_json, *extra)
        sent, received = board.sent - sent, board.received - received
    assert rc == 0, out + err
    assert f"OK: {images} image(s), all {images * 10} scores equal to the reference" in out
    assert "[run " in err  # progress
    result = json.loads(out_json.read_text())
    protocol = Protocol.for_model(dep)
    assert result["mismatches"] == 0 and result["scores_compared"] == images * 10
    # every byte of the weights (a design that loads them) and of the images crossed the rx pin
    assert sent == len(protocol.preamble) + images * protocol.input_bytes
    assert received == images * protocol.answer_bytes              # every score byte crossed the tx pin
    assert board.rx_error == 0                                    # no framing error, no overrun
    from terwin.algo.data import load_digits_split
    split = load_digits_split()
    expected = reference.forward(dep, reference.quantize_input(dep, split.x_test[:images]))
    assert result["predictions"] == expected.argmax(axis=1).tolist()
    assert result["accuracy"] == float(np.mean(expected.argmax(axis=1) == split.y_test[:images]))
    print(f"simulated board: {images} images, {result['images_per_s']:.2f} images/s")
    return result


def test_run_on_simulated_board(tmp_path, capsys):
    """20 digits test images through the simulated board of a small random model: 0 mismatches."""
    dep = small_model(seed=0)
    model = tmp_path / "small.terwin"
    fileformat.save(dep, model)
    check_run(capsys, tmp_path, dep, model)


def test_run_winograd_model_on_simulated_board(tmp_path, capsys):
    """The other engine, with 3-byte scores: a small random sparse-Winograd model, 4 images."""
    dep = random_deployment(PRESETS["winograd"], seed=0, input_shape=(1, 8, 8),
                            topology=(("winograd_conv2d", 4), ("maxpool2d", 2), ("linear", 10)))
    assert Protocol.for_model(dep).score_bytes == 3
    model = tmp_path / "winograd.terwin"
    fileformat.save(dep, model)
    check_run(capsys, tmp_path, dep, model, images=4)


@pytest.mark.slow
def test_run_trained_model_on_simulated_board(tmp_path, capsys):
    """The trained ternary-50 digits model of the reference iCEBreaker build, 20 test images, checked
    against its build report (model checksum, score width): 0 mismatches."""
    dep = fileformat.load(TRAINED / "model.terwin")
    result = check_run(capsys, tmp_path, dep, TRAINED / "model.terwin", "--report", TRAINED / "report.json")
    assert result["baud"] == json.loads((TRAINED / "report.json").read_text())["uart"]["baud"]
    assert result["accuracy"] >= 0.9


def test_run_model_with_loaded_weights_on_simulated_board(tmp_path, capsys):
    """A Winograd model whose weights are loaded at run time (spec.weight_memory "loaded"): `terwin run`
    sends a line break and the weights, then the images: 0 mismatches. A second run on the same board
    (its weights already loaded) and a run after a stray half image (a run killed mid-image) start
    with a break too: the board resets, takes the weights again, and every score is right."""
    spec = PRESETS["winograd"].replace(weight_memory="loaded", mult_lanes=2)
    dep = random_deployment(spec, seed=3, input_shape=(1, 8, 8), winograd_density=0.3,
                            topology=(("winograd_conv2d", 3), ("maxpool2d", 2), ("linear", 10)))
    protocol = Protocol.for_model(dep)
    assert protocol.preamble and Protocol.for_model(dep.replace(spec=spec.replace(weight_memory="rom"))).preamble == b""
    model = tmp_path / "loaded.terwin"
    fileformat.save(dep, model)
    with SimulatedBoard(dep) as board:
        check_run(capsys, tmp_path, dep, model, images=2, board=board)
        check_run(capsys, tmp_path, dep, model, images=2, board=board)
        before = board.sent
        with open(board.port, "wb", buffering=0) as f:     # half an image, then nothing
            f.write(bytes(protocol.input_bytes // 2))
        for _ in range(600):
            if board.sent == before + protocol.input_bytes // 2:
                break
            time.sleep(0.1)
        assert board.sent == before + protocol.input_bytes // 2
        check_run(capsys, tmp_path, dep, model, images=2, board=board)
        assert board.breaks == 3


def test_wrong_model_on_the_board_is_a_mismatch(tmp_path, capsys):
    board_dep, host_dep = small_model(seed=0), small_model(seed=1)
    assert Protocol.for_model(board_dep) == Protocol.for_model(host_dep)  # same bytes on the line
    model = tmp_path / "other.terwin"
    fileformat.save(host_dep, model)
    with SimulatedBoard(board_dep) as board:
        rc, out, err = run_cli(capsys, "run", model, "--port", board.port, "--images", 2, "--timeout", 60)
    assert rc == 1, out + err
    line = next(ln for ln in out.splitlines() if ln.startswith("MISMATCH"))
    assert "first: image 0, class" in line


def test_bitstream_of_a_bigger_model_is_refused(tmp_path, capsys):
    """A board that answers with more bytes than the model's scores: one line, exit 2."""
    model = tmp_path / "ten.terwin"
    fileformat.save(small_model(seed=0), model)
    with SimulatedBoard(small_model(seed=0, classes=12)) as board:
        rc, out, err = run_cli(capsys, "run", model, "--port", board.port, "--images", 2, "--timeout", 60)
    assert rc == 2, out + err
    assert "built from another model" in err and len(err.strip().splitlines()[-1:]) == 1


def test_silent_port_times_out(tmp_path, capsys):
    master, slave = os.openpty()
    tty.setraw(slave)
    model = tmp_path / "m.terwin"
    fileformat.save(small_model(), model)
    try:
        rc, out, err = run_cli(capsys, "run", model, "--port", os.ttyname(slave), "--images", 1,
                               "--timeout", 0.3, "--quiet")
        sent = os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)
    assert rc == 2
    assert err.count("\n") == 1 and "no complete answer to image 0 within 0.3 s (nothing)" in err
    assert len(sent) == 64   # the image went out


def test_missing_port(tmp_path, capsys):
    model = tmp_path / "m.terwin"
    fileformat.save(small_model(), model)
    rc, out, err = run_cli(capsys, "run", model, "--port", tmp_path / "ttyUSB9")
    assert rc == 2 and err.count("\n") == 1 and "no such serial port" in err


def test_refusals_before_the_port_is_opened(tmp_path, capsys):
    dep = small_model()
    model = tmp_path / "m.terwin"
    fileformat.save(dep, model)
    port = tmp_path / "no-port"   # never reached: each refusal comes first
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"model_checksum": "00" * 32, "uart": {"baud": 115200, "score_bytes": 2}}))
    for argv, message in [
        (("--json", model), "is an input of the command"),
        (("--images", "0"), "--images must be between 1 and 450"),
        (("--timeout", "0"), "--timeout must be a positive"),
        (("--timeout", "inf"), "--timeout must be a positive"),
        (("--baud", "-5"), "--baud must be a positive"),
        (("--report", report), "the bitstream was built for another model"),
        (("--report", tmp_path / "none.json"), "no such file"),
    ]:
        rc, out, err = run_cli(capsys, "run", model, "--port", port, *argv)
        assert rc == 2 and err.count("\n") == 1 and message in err, (argv, err)
    assert model.read_bytes() == fileformat.to_bytes(dep)


def test_help_explains_the_wiring(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "/dev/ttyUSB1" in text and "iCEBreaker" in text and "ULX3S" in text and "terwin program" in text


def test_protocol_bytes():
    p = Protocol(input_bytes=4, classes=3, score_bytes=3, act_max=255)
    assert p.encode(np.array([[[0, 1], [128, 255]]])) == bytes([0, 1, 128, 255])
    raw = b"".join(s.to_bytes(3, "little", signed=True) for s in (-1, 70000, -(1 << 23)))
    assert p.decode(raw) == [-1, 70000, -(1 << 23)]
    with pytest.raises(ValueError):
        p.encode(np.array([0, 1, 2, 256]))
    with pytest.raises(ValueError):
        p.decode(raw[:-1])
    assert RUNTIME_BAUD == DEFAULT_BAUD


def test_protocol_follows_the_bridge():
    dep = small_model()
    p = Protocol.for_model(dep)
    assert (p.input_bytes, p.classes, p.act_max) == (64, 10, 255)
    top = build_top(dep)
    bridge = UARTBridge(top, divisor=DIV)
    from amaranth.hdl import Fragment
    Fragment.get(bridge, None)
    assert p.score_bytes == bridge.score_bytes


def test_compare_names_the_first_mismatch():
    expected = np.arange(12).reshape(3, 4)
    got = expected.copy()
    got[2, 0] += 1
    got[1, 3] -= 1
    cmp = compare(got, expected)
    assert cmp.mismatches == 2 and cmp.first == {"image": 1, "class": 3, "expected": 7, "got": 6}
