"""The boards terwin builds for and programs: one entry each, light enough for `terwin --help`
(no Amaranth). What a board's FPGA family implies (Yosys options, nextpnr, the PLL, the bitstream's
extension) is in `terwin.hw.fpga`; `terwin.build` turns an entry into an amaranth-boards platform.

Adding a board of a known family is one `Board(...)` line in `BOARDS` (a new family: `terwin.hw.fpga`).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import TerwinError


@dataclass(frozen=True)
class Programmer:
    """A program that loads a bitstream onto a board over USB (`terwin program`)."""
    tool: str             # program name
    env_var: str          # variable naming it explicitly
    install: str          # how to get it
    flash: tuple          # arguments before the bitstream: write the configuration flash
    sram: tuple           # ... load the FPGA directly


@dataclass(frozen=True)
class Board:
    name: str
    platform: str          # "module:Class" in amaranth_boards
    family: str            # its FPGA family: a name in terwin.hw.fpga.FAMILIES
    programmers: tuple     # `Programmer`s, the preferred first
    default_mode: str      # "flash" or "sram": what `terwin program` writes unless told


ICEPROG_INSTALL = "iceprog (apt-get install fpga-icestorm)"
OFL_INSTALL = "openFPGALoader (apt-get install openfpgaloader, or https://github.com/trabucayre/openFPGALoader)"


def _open_fpga_loader(board: str) -> Programmer:
    return Programmer("openFPGALoader", "OPENFPGALOADER", OFL_INSTALL, flash=("-b", board, "-f"),
                      sram=("-b", board, "-m"))


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40",
          programmers=(Programmer("iceprog", "ICEPROG", ICEPROG_INSTALL, flash=(), sram=("-S",)),
                       _open_fpga_loader("icebreaker")),
          default_mode="flash"),   # the board as shipped configures itself from its flash
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5",
          programmers=(_open_fpga_loader("ulx3s"),), default_mode="sram"),
)}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise TerwinError(f"unknown board {name!r} (known: {', '.join(BOARDS)})") from None
