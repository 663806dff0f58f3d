"""`terwin program`: which programmer runs, with which command line; one clear line when none is installed.

The programmers are stood in for by tiny executables on PATH that record their arguments: this tests
terwin's invocation, not the programmers (which need a board).
"""
from __future__ import annotations

import json
import stat

import pytest

from terwin.cli import main
from terwin.tools import interpreter_bin

TOOLS = ("iceprog", "openFPGALoader")


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    """An empty folder as the whole PATH, no programmer named by the environment."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    for var in ("ICEPROG", "OPENFPGALOADER"):
        monkeypatch.delenv(var, raising=False)
    for tool in TOOLS:  # next to the interpreter is looked at first
        if (interpreter_bin() / tool).exists():
            pytest.skip(f"{tool} is installed next to the interpreter; it would be found before PATH")
    return folder


def fake_tool(folder, name, *, status=0):
    """An executable `name` in `folder` that writes its argv, one per line, to `name`.argv."""
    record = folder / f"{name}.argv"
    path = folder / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{record}'\nexit {status}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return record


def bitstream(tmp_path, name="terwin.bin", board=None):
    folder = tmp_path / "build"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(b"\xff\x00\x00\xff" * 16)
    if board:
        (folder / "report.json").write_text(json.dumps({"board": board, "bitstream": name}))
    return path


def run(capsys, *argv):
    rc = main(["program", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_missing_programmer_says_what_to_install(tmp_path, bin_dir, capsys):
    rc, out, err = run(capsys, bitstream(tmp_path), "--board", "icebreaker")
    assert rc == 2 and err.count("\n") == 1
    assert "iceprog / openFPGALoader not found" in err and "fpga-icestorm" in err and "openfpgaloader" in err
    rc, out, err = run(capsys, bitstream(tmp_path, "terwin.bit"), "--board", "ulx3s-85f")
    assert rc == 2 and err.count("\n") == 1 and "openFPGALoader not found" in err and "iceprog" not in err


def test_iceprog_writes_the_icebreaker_flash(tmp_path, bin_dir, capsys):
    record = fake_tool(bin_dir, "iceprog")
    fake_tool(bin_dir, "openFPGALoader")
    bit = bitstream(tmp_path, board="icebreaker")
    rc, out, err = run(capsys, bit, "--board", "icebreaker")
    assert rc == 0, err
    assert record.read_text().splitlines() == [str(bit)]
    assert "configuration flash" in out
    rc, out, err = run(capsys, bit, "--board", "icebreaker", "--sram")
    assert rc == 0 and record.read_text().splitlines() == ["-S", str(bit)]


def test_openfpgaloader_when_iceprog_is_missing_or_chosen(tmp_path, bin_dir, capsys):
    record = fake_tool(bin_dir, "openFPGALoader")
    bit = bitstream(tmp_path)
    rc, out, err = run(capsys, bit, "--board", "icebreaker")
    assert rc == 0, err
    assert record.read_text().splitlines() == ["-b", "icebreaker", "-f", str(bit)]
    fake_tool(bin_dir, "iceprog")
    rc, out, err = run(capsys, bit, "--board", "icebreaker", "--tool", "openFPGALoader", "--sram")
    assert rc == 0 and record.read_text().splitlines() == ["-b", "icebreaker", "-m", str(bit)]


def test_ulx3s_loads_sram_by_default(tmp_path, bin_dir, capsys):
    record = fake_tool(bin_dir, "openFPGALoader")
    bit = bitstream(tmp_path, "terwin.bit", board="ulx3s-85f")
    rc, out, err = run(capsys, bit, "--board", "ulx3s-85f")
    assert rc == 0, err
    assert record.read_text().splitlines() == ["-b", "ulx3s", "-m", str(bit)]
    rc, out, err = run(capsys, bit, "--board", "ulx3s-85f", "--flash")
    assert rc == 0 and record.read_text().splitlines() == ["-b", "ulx3s", "-f", str(bit)]
    rc, out, err = run(capsys, bit, "--board", "ulx3s-85f", "--tool", "iceprog")
    assert rc == 2 and "cannot program the ulx3s-85f" in err


def test_environment_variable_names_the_programmer(tmp_path, bin_dir, capsys, monkeypatch):
    other = tmp_path / "opt"
    other.mkdir()
    record = fake_tool(other, "iceprog")
    monkeypatch.setenv("ICEPROG", str(other / "iceprog"))
    rc, out, err = run(capsys, bitstream(tmp_path), "--board", "icebreaker")
    assert rc == 0 and record.exists()
    monkeypatch.setenv("ICEPROG", str(other / "nothing"))
    rc, out, err = run(capsys, bitstream(tmp_path), "--board", "icebreaker")
    assert rc == 2 and "$ICEPROG names" in err


def test_dry_run_prints_and_runs_nothing(tmp_path, bin_dir, capsys):
    record = fake_tool(bin_dir, "iceprog")
    bit = bitstream(tmp_path)
    rc, out, err = run(capsys, bit, "--board", "icebreaker", "--dry-run")
    assert rc == 0 and not record.exists()
    assert out.strip().endswith(f"{bin_dir / 'iceprog'} {bit}")


def test_refusals(tmp_path, bin_dir, capsys):
    fake_tool(bin_dir, "iceprog", status=1)
    fake_tool(bin_dir, "openFPGALoader")
    cases = [
        ((tmp_path / "none.bin", "--board", "icebreaker"), "no such file"),
        ((bitstream(tmp_path, "terwin.bit"), "--board", "icebreaker"), "takes a .bin bitstream"),
        ((bitstream(tmp_path, "terwin.bin", board="ulx3s-85f"), "--board", "icebreaker"), "was built for the ulx3s-85f"),
    ]
    for argv, message in cases:
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and err.count("\n") == 1 and message in err, (argv, err)
    (tmp_path / "build" / "report.json").unlink()
    rc, out, err = run(capsys, bitstream(tmp_path), "--board", "icebreaker")   # the fake iceprog fails
    assert rc == 2 and "iceprog failed (exit status 1)" in err and err.count("\n") == 1
