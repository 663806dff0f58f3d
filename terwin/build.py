"""Bitstreams with the open flow from PyPI: yowasp Yosys and nextpnr, through amaranth-boards platforms.

`build_model(dep, board=..., out_dir=...)` puts the accelerator of a `Deployment` on a board
(`terwin.hw.boards.BoardTop`: PLL to the target clock, UART in and out, LEDs), runs
Yosys -> nextpnr -> pack, and writes into `out_dir`:

* `terwin.bin` (iCE40) or `terwin.bit` (ECP5): the bitstream;
* `report.json`: board, device, resources (logic cells / LUTs, FFs, block RAMs, DSPs), fmax from
  nextpnr, target clock, whether it fits and meets timing, the model checksum, the UART protocol;
* `build/`: the tools' inputs, logs and netlists.

What depends on the FPGA family (Yosys options, the nextpnr and packer tools, cell types, the PLL)
is asked of its `terwin.hw.fpga` family; a board is one line in `terwin.boards.BOARDS`, naming its family.

A design that does not fit raises `TerwinError` naming the resource that overflowed.
Builds are deterministic: a fixed nextpnr seed, no source locations in the netlist.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from terwin.engines import build_top
from terwin.hw import fpga
from terwin.hw.boards import BoardTop
from terwin.sim import cycles

from . import fileformat
from .boards import BOARDS, Board, get_board  # noqa: F401  (re-exported: the flows' board table)
from .errors import TerwinError
from .outdir import OutputFolder
from .progress import Progress
from .tools import find_tool

DESIGN_NAME = "terwin"
DEFAULT_SEED = 1



def family_of(board: Board) -> fpga.FpgaFamily:
    """The `terwin.hw.fpga` family of a board (`terwin.boards`)."""
    return fpga.get(board.family)


def make_platform(board: Board):
    """The board's amaranth-boards platform; its module is imported by name, only that of the board built."""
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


def tool_environment(board: Board) -> dict:
    """os.environ plus the family's tool variables (Amaranth finds each tool through one), each set to
    the yowasp tool's full path (found next to the running interpreter, then on PATH; a variable the
    user already set names the tool to use)."""
    env = dict(os.environ)
    for tool in family_of(board).tools:
        env[tool.var] = find_tool(tool.program, env_var=tool.var, install=f"pip install {tool.package}",
                                  needed_for=board.name)
    return env


def build_model(dep, *, board: str, out_dir, clock_mhz: float | None = None, seed: int = DEFAULT_SEED,
                quiet: bool = False, force: bool = False) -> dict:
    """Build the accelerator of `dep` for `board`; return (and write) the report."""
    if dep.spec.act_bits > 8:
        raise TerwinError(f"the board top sends one byte per activation: act_bits {dep.spec.act_bits} > 8")
    target = float(clock_mhz if clock_mhz is not None else dep.spec.clock_mhz)
    core = build_top(dep)
    cycles = _cycle_figures(dep)
    meta = {
        **cycles,
        "model_checksum": fileformat.checksum(dep),
        "spec": dep.spec.to_dict(),
        "spec_name": dep.spec.name,
        "model_family": dep.meta.get("family"),
        "input_shape": list(dep.input_shape),
        "classes": int(dep.output_shape[0]),
    }
    return build_design(core, board=board, out_dir=out_dir, clock_mhz=target, seed=seed, quiet=quiet,
                        extra=meta, force=force)


def dense_macs(dep) -> int:
    """MACs of one image through the dense (unpruned) network: the work an image represents."""
    total = 0
    for layer in dep.weighted_layers:
        _, h, w = layer.out_shape
        per_pixel = int(np.prod(layer.weight.shape[1:]))
        if getattr(layer, "kind", "") == "winograd_conv2d":
            per_pixel = layer.in_shape[0] * 9   # the 3x3 convolution it computes
        total += layer.out_channels * per_pixel * (h * w if layer.kind != "linear" else 1)
    return total


def _cycle_figures(dep) -> dict:
    """Cycles per image from the exact cycle model (compute + input/output stream cycles)."""
    pred = cycles.predict(dep)
    return {"cycles_per_image": int(pred["cycles"]) + int(pred["io_cycles"]), "compute_cycles": int(pred["cycles"]),
            "mac_cycles": int(pred["mac_cycles"]), "ideal_mac_cycles": int(pred["ideal_mac_cycles"]),
            "dense_macs_per_image": dense_macs(dep)}


def build_design(core, *, board: str, out_dir, clock_mhz: float, seed: int = DEFAULT_SEED,
                 quiet: bool = False, extra: dict | None = None, synth_opts: list[str] | None = None,
                 force: bool = False) -> dict:
    """Build any component with the accelerator's ports (`i_stream`, `o_stream`, `busy`) for `board`.

    `out_dir` is written through `terwin.outdir.OutputFolder`: a failed build leaves it as it was;
    the logs of a failure other than a design that does not fit are moved to a fresh folder in the
    system's temporary folder, which the error names."""
    info = get_board(board)
    env = tool_environment(info)
    progress = Progress(f"build {info.name}", quiet=quiet)
    out = Path(out_dir)
    with OutputFolder(out, force=force) as stage:
        report = _build_in(stage, core, info=info, env=env, clock_mhz=clock_mhz, seed=seed, extra=extra,
                           synth_opts=synth_opts, progress=progress)
    progress.note(f"done: {report['luts']} LUTs, {report['ffs']} FFs, {report['brams']} BRAMs, {report['dsps']} DSPs, "
                  f"fmax {report['fmax_mhz']} MHz (target {report['target_mhz']:g}) -> {out / report['bitstream']}")
    return report


def _build_in(out: Path, core, *, info: Board, env: dict, clock_mhz: float, seed: int, extra: dict | None,
              synth_opts: list[str] | None, progress: Progress) -> dict:
    """The build itself, in the staging folder `out`: the tools in out/build/, bitstream and report.json."""
    family = family_of(info)
    build_dir = out / "build"
    build_dir.mkdir()
    platform = make_platform(info)
    board_clk_hz = platform.default_clk_frequency
    try:
        top = BoardTop(core, family=family, board_clk_hz=board_clk_hz, clock_hz=clock_mhz * 1e6)
    except ValueError as e:
        raise TerwinError(f"{info.name}: {e}") from None

    started = time.monotonic()
    progress.note(f"elaborating for {platform.device} at {top.clk_hz / 1e6:.3f} MHz "
                  f"(board clock {board_clk_hz / 1e6:g} MHz, target {clock_mhz:g} MHz)")
    name = DESIGN_NAME
    if synth_opts is None:
        synth_opts = list(family.synth_opts)
    nextpnr_opts = ["--seed", str(seed), "--report", f"{name}.nextpnr.json", "--timing-allow-fail"]
    plan = platform.prepare(
        top, name=name, emit_src=False,
        synth_opts=synth_opts, nextpnr_opts=nextpnr_opts,
        script_after_read=fpga.YOSYS_AFTER_READ,
        script_after_synth=f"tee -q -o {name}.stat.json stat -json",
    )
    plan.extract(build_dir)
    try:
        _run_script(build_dir, plan.script, env, name=name, family=family, progress=progress)
    except DoesNotFitError:
        raise  # nothing is left of a build that cannot succeed
    except TerwinError as e:  # keep the logs the message points to, outside the staging folder
        kept = Path(tempfile.mkdtemp(prefix="terwin-failed-build-"))
        shutil.move(str(build_dir), kept / "build")
        raise TerwinError(str(e).replace(str(build_dir), str(kept / "build"))) from None

    bitstream = build_dir / f"{name}{family.bitstream_ext}"
    report = parse_results(build_dir, name=name, family=family)
    dest = out / bitstream.name
    shutil.copyfile(bitstream, dest)
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    bridge = top.bridge
    report = {
        "board": info.name,
        "device": platform.device,
        "package": platform.package,
        "family": family.name,
        "bitstream": dest.name,
        "bitstream_sha256": digest,
        **report,
        "target_mhz": round(top.clk_hz / 1e6, 4),
        "requested_mhz": clock_mhz,
        "board_clock_mhz": board_clk_hz / 1e6,
        "pll": None if top.pll is None else top.pll.params,
        "uart": {"baud": top.baud, "format": "8N1", "bytes_per_activation": 1,
                 "score_bytes": bridge.score_bytes, "score_bits": bridge.score_shape.width,
                 "score_encoding": "signed, sign-extended, little-endian"},
        "seed": seed,
        "synth_opts": synth_opts,
        "toolchain": tool_versions(env, info),
        "build_seconds": round(time.monotonic() - started, 1),
        **(extra or {}),
    }
    report["timing_met"] = report["fmax_mhz"] is not None and report["fmax_mhz"] >= report["target_mhz"]
    if report.get("cycles_per_image") and report["fmax_mhz"]:
        ips = report["fmax_mhz"] * 1e6 / report["cycles_per_image"]
        report["images_per_s_at_fmax"] = round(ips, 1)
        report["gops_at_fmax"] = round(2 * report["dense_macs_per_image"] * ips / 1e9, 4)
        report["gops_per_klut"] = round(report["gops_at_fmax"] / (report["luts"] / 1000), 4) if report["luts"] else None
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def _run_script(build_dir: Path, script: str, env: dict, *, name: str, family: fpga.FpgaFamily,
                progress: Progress):
    """Run the platform's build script, printing a stage line as each tool starts."""
    stages = [(f"{name}.rpt", "synthesis (yosys)"), (f"{name}.tim", "place and route (nextpnr)"),
              (f"{name}{family.placed_ext}", "bitstream packing")]
    log_path = build_dir / "build.log"
    with open(log_path, "wb") as log:
        # the tools in a process group of their own: an interrupted or terminated build stops them (they
        # would otherwise run on, writing into the staging folder as it is removed)
        proc = subprocess.Popen(["sh", f"{script}.sh"], cwd=build_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            seen = 0
            while proc.poll() is None:
                while seen < len(stages) and (build_dir / stages[seen][0]).exists():
                    progress.note(stages[seen][1])
                    seen += 1
                time.sleep(0.5)
        except BaseException:
            _stop_group(proc)
            raise
    if proc.returncode != 0:
        raise build_failure(build_dir, name=name, family=family)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a tool's process group: SIGTERM, then SIGKILL if it has not exited within 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class DoesNotFitError(TerwinError):
    """The design needs more of a resource than the device has."""


def build_failure(build_dir: Path, *, name: str, family: fpga.FpgaFamily) -> TerwinError:
    """The one-line error for a failed build: a resource overflow if the log shows one."""
    pnr_log = build_dir / f"{name}.tim"
    text = pnr_log.read_text(errors="replace") if pnr_log.exists() else ""
    for cell, (used, avail) in family.parse_utilisation(text).items():
        if used > avail:
            what = family.resources.get(cell, cell)
            return DoesNotFitError(f"the design does not fit: it needs {used} {what} ({cell}) but the device has {avail}")
    for path in (pnr_log, build_dir / f"{name}.rpt", build_dir / "build.log"):
        if path.exists():
            errors = [line.strip() for line in path.read_text(errors="replace").splitlines()
                      if line.lstrip().startswith("ERROR")]
            if errors:
                return TerwinError(f"{path.name}: {errors[0]} (log: {path})")
    return TerwinError(f"the build failed; see {build_dir / 'build.log'}")


def parse_results(build_dir: Path, *, name: str, family: fpga.FpgaFamily) -> dict:
    """Resources and fmax from nextpnr's JSON report and Yosys' cell statistics."""
    pnr = json.loads((build_dir / f"{name}.nextpnr.json").read_text())
    util = {cell: (v["used"], v["available"]) for cell, v in pnr["utilization"].items()}
    cells = _yosys_cells(build_dir / f"{name}.stat.json")
    fmax = {net: v for net, v in pnr.get("fmax", {}).items()}
    achieved = [v["achieved"] for v in fmax.values()]
    return {
        **family.resource_counts(util, cells),  # luts, logic_cells, ffs, brams, dsps, lut_capacity
        "fmax_mhz": round(min(achieved), 2) if achieved else None,
        "fmax_by_clock": {net: {"achieved_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 2)}
                          for net, v in sorted(fmax.items())},
        "utilization": {cell: {"used": u, "available": a} for cell, (u, a) in sorted(util.items())},
        "fits": all(u <= a for u, a in util.values()),
        "critical_path": _critical_path(pnr),
        "yosys_cells": dict(sorted(cells.items())),
    }


def _critical_path(pnr: dict) -> dict | None:
    """The slowest register-to-register path within one clock, from nextpnr's JSON report."""
    best = None
    for cp in pnr.get("critical_paths", []):
        if cp.get("from") != cp.get("to") or not cp.get("path") or not str(cp.get("from", "")).startswith("posedge"):
            continue
        delay = sum(step.get("delay", 0.0) for step in cp["path"])
        if best is None or delay > best["delay_ns"]:
            best = {"clock": cp["from"], "delay_ns": round(delay, 2), "from": cp["path"][0]["from"]["cell"],
                    "to": cp["path"][-1]["to"]["cell"], "steps": len(cp["path"])}
    return best


def _yosys_cells(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    text = path.read_text()
    data = json.loads(text[text.index("{"):])
    design = data.get("design", {})
    cells = design.get("num_cells_by_type")
    if cells is None:  # one module per entry, flattened top first
        modules = data.get("modules", {})
        cells = next(iter(modules.values()), {}).get("num_cells_by_type", {}) if modules else {}
    return {str(k): int(v) for k, v in cells.items()}


def tool_versions(env: dict, board: Board) -> dict:
    """The synthesis and place-and-route tools' versions (the packers have no --version)."""
    versions = {}
    for var in (fpga.YOSYS.var, family_of(board).nextpnr.var):
        try:
            res = subprocess.run([env[var], "--version"], capture_output=True, text=True, env=env, timeout=120)
            versions[Path(env[var]).name] = (res.stdout or res.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[Path(env[var]).name] = "unknown"
    return versions
