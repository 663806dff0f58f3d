"""FPGA families: everything the bitstream flow knows about one, in one module per family.

Each family module `hw/fpga/<name>.py` defines `FAMILY`, an `FpgaFamily` (`terwin.hw.fpga.base`):

* `synth_opts`: the options of Yosys' `synth_<name>` (iCE40: `-dsp`);
* `nextpnr`, `packer`: the place-and-route and bitstream-packing `Tool`s: the environment variable
  Amaranth's build script reads, the yowasp program terwin points it at, the PyPI package with it;
* `placed_ext`, `bitstream_ext`: the file nextpnr hands to the packer, the bitstream's extension;
* `resources`: nextpnr cell types -> the names errors give them ("block RAMs");
* `parse_utilisation(log)`: the used/available cells in a place-and-route log (nextpnr's format);
* `resource_counts(util, cells)`: the report's LUTs, logic cells, FFs, block RAMs, DSPs;
* `pll(in_hz, target_hz)`: the PLL setting closest to a target clock; `add_pll(m, setting, ...)`:
  the PLL primitive (an Amaranth `Instance`) in the board top.

Adding a family is its module and its name in `_MODULES`; a board of a known family is one line in
`terwin.build.BOARDS`. Nothing outside this package tests a family's name.
"""
from __future__ import annotations

import importlib

from terwin.errors import TerwinError

from .base import RUNTIME_RAM, YOSYS, YOSYS_AFTER_READ, FpgaFamily, PLLSetting, Tool, parse_nextpnr_utilisation

__all__ = ["FAMILIES", "FpgaFamily", "PLLSetting", "RUNTIME_RAM", "Tool", "YOSYS", "YOSYS_AFTER_READ", "get",
           "parse_nextpnr_utilisation"]

# The registry: one module per family, named after it.
_MODULES = ("ice40", "ecp5")

FAMILIES: dict[str, FpgaFamily] = {name: importlib.import_module(f"{__name__}.{name}").FAMILY for name in _MODULES}


def get(name: str) -> FpgaFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise TerwinError(f"unknown FPGA family {name!r} (known: {', '.join(FAMILIES)})") from None
