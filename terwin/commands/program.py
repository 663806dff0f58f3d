"""`terwin program BITSTREAM --board icebreaker|ulx3s-85f [--flash|--sram] [--tool NAME] [--dry-run]`:
load a bitstream `terwin build` made onto a board over USB.

iCEBreaker: `iceprog` (Project IceStorm), else `openFPGALoader -b icebreaker`; ULX3S: `openFPGALoader
-b ulx3s`. A programmer is looked up next to the running Python first, then on PATH; `$ICEPROG` /
`$OPENFPGALOADER` name one explicitly (as amaranth-boards reads them). By default the iCEBreaker's
configuration flash is written (the board as shipped is configured from its flash) and the ULX3S's
FPGA is loaded directly (SRAM: gone at power-off); `--flash` / `--sram` choose.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from terwin.boards import BOARDS, Programmer
from terwin.errors import TerwinError


def add_arguments(parser):
    parser.epilog = ("iCEBreaker: iceprog or openFPGALoader over the USB port (the FTDI's first interface); "
                     "ULX3S: openFPGALoader over the US1 USB port. Then: terwin run MODEL --port PORT.")
    parser.add_argument("bitstream", help="DIR/terwin.bin (iCEBreaker) or DIR/terwin.bit (ULX3S) from terwin build")
    parser.add_argument("--board", required=True, choices=sorted(BOARDS), help="the board to program")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--flash", dest="mode", action="store_const", const="flash",
                      help="write the configuration flash: the design stays after power-off "
                           "(default on the iCEBreaker)")
    mode.add_argument("--sram", dest="mode", action="store_const", const="sram",
                      help="load the FPGA directly: gone at power-off (default on the ULX3S; on the iCEBreaker "
                           "it needs the board's SRAM-programming jumpers)")
    parser.add_argument("--tool", choices=sorted({p.tool for b in BOARDS.values() for p in b.programmers}),
                        help="the programmer to use (default: the first found, iceprog before openFPGALoader)")
    parser.add_argument("--dry-run", action="store_true", help="print the command that would run, run nothing")


def find_programmer(board: str, tool: str | None = None) -> tuple[Programmer, str]:
    """The programmer for `board` (`tool` if given) and its path; a one-line TerwinError when none is installed."""
    from terwin.tools import interpreter_bin, which

    candidates = [p for p in BOARDS[board].programmers if tool is None or p.tool == tool]
    if not candidates:
        raise TerwinError(f"--tool {tool} cannot program the {board} (use "
                          f"{' or '.join(p.tool for p in BOARDS[board].programmers)})")
    for p in candidates:
        explicit = os.environ.get(p.env_var)
        found = which(explicit) if explicit else which(p.tool)
        if found:
            return p, found
        if explicit:
            raise TerwinError(f"${p.env_var} names {explicit}, which is not an executable program")
    need = " or ".join(p.install for p in candidates)
    names = " / ".join(p.tool for p in candidates)
    raise TerwinError(f"{names} not found in {interpreter_bin()} or on PATH: install {need}")


def command_line(board: str, bitstream, *, mode: str | None = None, tool: str | None = None) -> list[str]:
    """The programmer's command line for `bitstream` on `board`."""
    p, path = find_programmer(board, tool)
    mode = mode or BOARDS[board].default_mode
    return [path, *(p.flash if mode == "flash" else p.sram), str(bitstream)]


def check_bitstream(path, board: str) -> Path:
    from terwin.hw import fpga

    bit = Path(path)
    if not bit.is_file():
        raise TerwinError(f"{path}: no such file" if not bit.exists() else f"{path}: not a file")
    ext = fpga.get(BOARDS[board].family).bitstream_ext
    if bit.suffix != ext:
        raise TerwinError(f"{path}: the {board} takes a {ext} bitstream (terwin build writes DIR/terwin{ext}), "
                          f"not a {bit.suffix or 'file without extension'}")
    report = bit.parent / "report.json"   # terwin build's, beside the bitstream
    try:
        built = json.loads(report.read_text())
    except (OSError, ValueError):
        built = None
    if isinstance(built, dict) and built.get("bitstream") == bit.name and built.get("board") not in (None, board):
        raise TerwinError(f"{path} was built for the {built['board']} ({report}), not the {board}")
    return bit


def run(args) -> int:
    bit = check_bitstream(args.bitstream, args.board)
    mode = args.mode or BOARDS[args.board].default_mode
    cmd = command_line(args.board, bit, mode=mode, tool=args.tool)
    where = "configuration flash" if mode == "flash" else "FPGA (SRAM, until power-off)"
    print(f"programming the {args.board}'s {where}: {shlex.join(cmd)}", flush=True)
    if args.dry_run:
        return 0
    try:
        rc = subprocess.run(cmd).returncode
    except OSError as e:
        raise TerwinError(f"cannot run {cmd[0]}: {e.strerror}") from None
    if rc != 0:
        raise TerwinError(f"{Path(cmd[0]).name} failed (exit status {rc}): is the board plugged in, and may this "
                          f"user open its USB device (udev rules)?")
    print(f"done: the {args.board} runs {bit}")
    return 0
