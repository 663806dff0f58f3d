"""The resource and fmax model of `terwin explore`, calibrated on real Yosys/nextpnr builds.

What a design needs is predicted in two ways:

* **block RAMs: counted.** Every on-chip memory of the design is in its engine's `Program.memories()`
  (name, width, depth, ROM or RAM). Each is mapped as Yosys's memory_libmap maps it
  (`memory_mapping`): to the cheapest of block RAMs (in the best of the family's aspect ratios:
  iCE40 SB_RAM40_4K 256x16 .. 2048x2, ECP5 DP16KD 512x36 .. 16384x1), the ECP5's distributed RAM
  (RAMs only) and logic, by the costs of Yosys's memory libraries.
* **LUTs (iCE40: also logic cells), FFs, DSPs, fmax: fitted**, per FPGA family and engine, by least
  squares on a few explainable regressors of the design (`REGRESSOR_FUNCTIONS`, chosen per engine in
  `terwin.engines`: PE count times operand width,
  accumulator bits, memory bits, ...), from the calibration builds in `calibration.json`
  (`benchmarks/calibrate_resources.py`). fmax is fitted as a clock period, linear in log2 of the
  array size. The coefficients (`coefficients.json`) and each quantity's error on held-out builds
  (leave-one-out: every build predicted by the fit of the others) are committed beside them
  (docs/explore.md).

A design whose engine or family has no calibration has no prediction (`predict` raises TerwinError
naming it): the explorer never invents one. A spec field the regressors do not read (a field added
to `HardwareSpec` after the calibration) is recorded in every calibration point, so a refit can use
it once builds vary it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from terwin import engines
from terwin.hw import fpga
from terwin.errors import TerwinError

HERE = Path(__file__).resolve().parent
CALIBRATION = HERE / "calibration.json"
COEFFICIENTS = HERE / "coefficients.json"

# -- block RAMs: counted from the design's memories --------------------------------------------------

# Yosys's memory_libmap maps each memory to the cheapest of: block RAMs (in the family's aspect ratios,
# at its cost per block), the family's distributed RAM if it has one (RAMs only: ROMs are pruned from
# it), or logic (cost per bit: 1/16 for a ROM, 7/8 for a RAM). A tie of block and distributed RAM
# goes to block RAM, a tie with logic to logic. The family's figures (its memory libraries' costs) are
# in its `terwin.hw.fpga` module. The RAM's cost per bit is read off the builds, not the pass's
# documented default of 1: on the iCE40 (block 64 a block) Yosys made flip-flops of RAMs of 26 x 5 and
# 34 x 5 bits (130 and 170 bits against 2 and 3 blocks: a RAM bit costs less than 128 / 130) and block
# RAM of 17 x 10 and 12 x 10 (170 bits against 2 blocks: more than 128 / 170); 7/8 lies between.
LOGIC_COST = {True: 1 / 16, False: 7 / 8}  # per bit: ROM, RAM


def memory_mapping(family: str, width: int, depth: int, rom: bool, runtime: bool = False) -> tuple[str, int]:
    """How Yosys maps one memory of `width` x `depth` on `family`: ("block", block RAMs),
    ("distributed", distributed RAM cells), ("logic", bits) or, for a memory the design fills at run
    time (`runtime`) on a family with single-port RAM (the iCE40 UP5K's SPRAM), ("spram", SPRAMs)."""
    fam = fpga.get(family)
    if runtime and fam.spram_shape is not None:
        d, w = fam.spram_shape
        return "spram", math.ceil(width / w) * math.ceil(depth / d)
    blocks = min(math.ceil(width / w) * math.ceil(depth / d) for d, w in fam.bram_shapes)
    options = [(blocks * fam.bram_cost, 0, "block", blocks)]
    if fam.distributed_ram is not None and not rom:
        d, w, cost = fam.distributed_ram
        units = math.ceil(depth / d) * math.ceil(width / w)
        options.append((units * cost, 1, "distributed", units))
    # logic wins a tie with the cheapest library option (iCE40 pe8x8 with 2 out lanes: its 64 x 64
    # requantization ROM, 256 either way, became logic: 17 block RAMs, not 21)
    options.append((width * depth * LOGIC_COST[rom], -1, "logic", width * depth))
    _, _, kind, n = min(options)
    return kind, n


def memory_blocks(family: str, width: int, depth: int, rom: bool) -> int:
    """Block RAMs one memory of `width` x `depth` takes on `family` (0: mapped to logic or LUT RAM)."""
    kind, n = memory_mapping(family, width, depth, rom)
    return n if kind == "block" else 0


def mapped(feat: dict, family: str, kind: str) -> int:
    """The design's total of one mapping kind: block RAMs, distributed RAM cells, SPRAMs or bits in logic.
    A memory is [name, width, depth, rom] or, filled at run time, [name, width, depth, rom, True]."""
    total = 0
    for entry in feat["memories"]:
        k, n = memory_mapping(family, *entry[1:4], runtime=len(entry) > 4 and bool(entry[4]))
        total += n if k == kind else 0
    return total


# -- features: what a design is, from its program ------------------------------------------------------

# Figures a program may offer (the ternary engine's; another engine offers what it has): read by name,
# so a figure an engine adds later is recorded without a change here.
PROGRAM_FIGURES = ("acc_bits", "score_bits", "bias_bits", "mult_bits", "shift_bits", "addr_bits", "bank_depth",
                   "slots", "has_residual", "has_signed", "has_avgpool")


def features(dep) -> dict:
    """The raw figures of the accelerator of `dep` that the model reads: its spec, its engine, the
    program's widths and every memory (name, width, depth, ROM). Amaranth is loaded (memory widths)."""
    engine = engines.for_spec(dep.spec)
    program = engine.compile(dep)
    figures = {}
    for name in PROGRAM_FIGURES:
        value = getattr(program, name, None)
        if isinstance(value, (bool, int, np.integer)):
            figures[name] = int(value)
    # a program that knows its memories' copies in synthesis (one per read port) lists them
    images = getattr(program, "synthesis_memories", program.memories)()
    # a memory the host fills at run time (`MemoryImage.loaded`) carries a fifth entry, True
    memories = [[m.name, int(m.width), int(m.depth), bool(m.is_rom), *([True] if m.loaded is not None else [])]
                for m in images]
    return {"engine": engine.name, "spec": dep.spec.to_dict(), "stages": len(program.stages),
            "layers": program.n_layers, "program": figures, "memories": memories}


def measured(report: dict) -> dict:
    """What a build report says the design took (terwin.build's report.json)."""
    return {k: report.get(k) for k in ("luts", "logic_cells", "ffs", "brams", "dsps", "fmax_mhz", "target_mhz",
                                        "fits", "lut_capacity", "cycles_per_image", "images_per_s_at_fmax")} | {
        "distributed_rams": (report.get("utilization", {}).get("TRELLIS_RAMW", {}) or {}).get("used")}


def block_rams(feat: dict, family: str) -> int:
    """Block RAMs of a design (its `features`) on `family`, counted memory by memory."""
    return mapped(feat, family, "block")


# -- regressors: explainable functions of the features ---------------------------------------------------

def _spec(feat):
    return feat["spec"]


def _lanes(feat) -> int:
    s = _spec(feat)
    return s["pe_rows"] * s["pe_cols"]


# Each takes the features and the FPGA family (memories and multipliers map differently on each).
REGRESSOR_FUNCTIONS = {
    "one": lambda f, fam: 1.0,
    # the PE array: one add/subtract/skip of an (act_bits + 1)-bit operand per PE, and its adder trees
    "pe_bits": lambda f, fam: _lanes(f) * (_spec(f)["act_bits"] + 1),
    # ... and what each PE has whatever the operand width: its weight code's add/subtract/skip select
    # and the product's mask (without it the ECP5 fit over-predicted the 8-bit pe8x16 by 11.7 % and
    # under-predicted every 4-bit build: the width term carried the per-PE cost)
    "pes": lambda f, fam: _lanes(f),
    # accumulators and their shadow registers: pe_rows sums of acc_bits
    "acc_bits": lambda f, fam: _spec(f)["pe_rows"] * f["program"].get("acc_bits", 0),
    # memories in LUTs, estimated from the memory mapping: a memory mapped to logic, about a LUT4 per 16
    # bits (the lane map, the output-group table, the weight words of a small model on a wide array)...
    "logic_mem_luts": lambda f, fam: mapped(f, fam, "logic") / 16,
    # ... an ECP5 distributed RAM cell (16 x 4), 4 LUT4s in RAM mode (activation banks of 128 words or
    # fewer, 4-bit banks of 256, the score memory); its read and write multiplexers come on top
    "distributed_luts": lambda f, fam: 4 * mapped(f, fam, "distributed"),
    # the requantizers' multipliers (a second one with an average pool), one per out lane:
    # (acc_bits x mult_bits) in DSP tiles
    "dsp_tiles": lambda f, fam: (math.ceil(f["program"].get("acc_bits", 0) / fpga.get(fam).dsp_width)
                                 * math.ceil(f["program"].get("mult_bits", 0) / fpga.get(fam).dsp_width)
                                 * (1 + f["program"].get("has_avgpool", 0)) * _spec(f).get("out_lanes", 1)),
    # the requantizer lanes beyond the first (out_lanes - 1), each about acc_bits + mult_bits wide (its
    # adder, shifter and clamp; the multiplier is in DSPs), with their drain multiplexers and writes
    "requant_lanes": lambda f, fam: (_spec(f).get("out_lanes", 1) - 1) * (f["program"].get("acc_bits", 0)
                                                                         + f["program"].get("mult_bits", 0)),
    # the Winograd engine's requantizer multiplier: 1 (spec.requant "multiply"; its DSP tiles are the
    # fit's coefficient), 0 with threshold tables (no multiplier)
    "requant_mults": lambda f, fam: float(_spec(f).get("requant", "multiply") == "multiply"),
    # the Winograd engine's multipliers, each of winograd_weight_bits x (transformed) activation bits
    "mult_lanes": lambda f, fam: _spec(f)["mult_lanes"],
    # the array's depth: adder-tree levels and fan-out grow with log2 of its size
    "log2_lanes": lambda f, fam: math.log2(_lanes(f)),
    # ... of its columns: the activation lanes (a bank address adder each, the adder trees' depth); on
    # the engine without the global stall the rows barely count (ECP5: pe16x8 109.9 MHz, pe8x16 83.0)
    "log2_cols": lambda f, fam: math.log2(_spec(f)["pe_cols"]),
}

# Per engine, the regressors of each fitted quantity ("period_ns": 1000 / fmax) are the engine's own
# (`terwin.engines.Engine.resource_regressors`): a few, so that a handful of builds per family
# determines them.
def engine_regressors(engine: str) -> dict:
    return dict(engines.get(engine).resource_regressors) if engine in engines.ENGINES else {}


QUANTITIES = ("luts", "logic_cells", "ffs", "dsps", "period_ns")


def regressors(feat: dict, names, family: str) -> np.ndarray:
    return np.array([float(REGRESSOR_FUNCTIONS[n](feat, family)) for n in names])


def _target(point: dict, quantity: str) -> float | None:
    m = point["measured"]
    if quantity == "period_ns":
        return 1000.0 / m["fmax_mhz"] if m.get("fmax_mhz") else None
    return None if m.get(quantity) is None else float(m[quantity])


def _solve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0 (a resource never shrinks as a design grows), by
    active-set iteration (Lawson-Hanson), NumPy only."""
    n = x.shape[1]
    coef = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(3 * n + 10):
        grad = x.T @ (y - x @ coef)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= 1e-9 * max(1.0, np.abs(y).max()):
            break
        passive[np.argmax(np.where(passive, -np.inf, grad))] = True
        while True:
            trial = np.zeros(n)
            trial[passive] = np.linalg.lstsq(x[:, passive], y, rcond=None)[0]
            if (trial[passive] > 0).all():
                coef = trial
                break
            bad = passive & (trial <= 0)
            alpha = np.min(coef[bad] / np.maximum(coef[bad] - trial[bad], 1e-300))
            coef = coef + alpha * (trial - coef)
            passive &= coef > 1e-12
            coef[~passive] = 0.0
    return coef


def fit_one(points: list[dict], names, family: str) -> dict:
    """Coefficients for one quantity from its points [(features, value)], with the leave-one-out errors."""
    x = np.array([regressors(f, names, family) for f, _ in points])
    y = np.array([v for _, v in points])
    used = [k for k in range(len(names)) if x[:, k].any()]   # a regressor zero on every build says nothing
    if len(used) < len(names):
        result = fit_one(points, [names[k] for k in used], family)
        return {**result, "dropped": [n for k, n in enumerate(names) if k not in used]}
    coef = _solve(x, y)
    held_out = []
    for i in range(len(points)):
        keep = np.arange(len(points)) != i
        if keep.sum() < len(names):   # too few points left to determine a fit: no held-out figure
            continue
        c = _solve(x[keep], y[keep])
        held_out.append(float(x[i] @ c))
    return {"regressors": list(names), "coefficients": [float(c) for c in coef],
            "ranges": [[float(x[:, k].min()), float(x[:, k].max())] for k in range(len(names))],
            "fitted": [float(v) for v in x @ coef], "held_out": held_out if len(held_out) == len(points) else None}


def fit(points: list[dict]) -> dict:
    """The model's coefficients per family and engine, from calibration points; each quantity with its
    points' names, measured values, fitted values and leave-one-out (held-out) predictions."""
    out = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in points:
        groups.setdefault((p["family"], p["features"]["engine"]), []).append(p)
    for (family, engine), group in sorted(groups.items()):
        entry = {}
        for quantity, names in engine_regressors(engine).items():
            pts = [(p["features"], _target(p, quantity), p["name"]) for p in group]
            pts = [t for t in pts if t[1] is not None]
            if len(pts) < 2:
                continue
            result = fit_one([(f, v) for f, v, _ in pts], names, family)
            result["points"] = [n for _, _, n in pts]
            result["measured"] = [v for _, v, _ in pts]
            entry[quantity] = result
        out.setdefault(family, {})[engine] = entry
    return out


def errors(entry: dict) -> dict:
    """Relative held-out errors of one fitted quantity: {"max", "mean"} of |predicted - measured| / measured."""
    if not entry.get("held_out"):
        return {"max": None, "mean": None, "n": 0}
    e = [abs(p - m) / m for p, m in zip(entry["held_out"], entry["measured"]) if m]
    return {"max": max(e), "mean": sum(e) / len(e), "n": len(e)}


def format_fit(coeffs: dict) -> str:
    lines = [f"{'family':<7}{'engine':<10}{'quantity':<13}{'points':>7}{'held-out mean':>15}{'held-out max':>14}  coefficients"]
    for family, per_engine in sorted(coeffs.items()):
        if family.startswith("_"):
            continue
        for engine, entry in sorted(per_engine.items()):
            for q, e in entry.items():
                err = errors(e)
                fmt = (lambda v: "-" if v is None else f"{100 * v:.1f} %")
                terms = " + ".join(f"{c:.4g}*{n}" for c, n in zip(e["coefficients"], e["regressors"]))
                lines.append(f"{family:<7}{engine:<10}{q:<13}{len(e['measured']):>7}{fmt(err['mean']):>15}"
                             f"{fmt(err['max']):>14}  {terms}")
    return "\n".join(lines)


# -- prediction ----------------------------------------------------------------------------------------

_LOADED: dict = {}


def _json(path: Path) -> dict:
    if path not in _LOADED:
        _LOADED[path] = json.loads(path.read_text())
    return _LOADED[path]


def coefficients() -> dict:
    return _json(COEFFICIENTS)


def calibrated_fields(family: str, engine: str) -> set:
    """The spec fields the calibration builds of `engine` on `family` carry (a field at its default is
    left out of a spec's dict, so a field added after the calibration appears in none). Per family and
    engine: a field built only on another family's or engine's fit says nothing of its cost here."""
    return {name for point in _json(CALIBRATION)["points"]
            if point["family"] == family and point["features"]["engine"] == engine
            for name in point["features"]["spec"]}


def board_capacity(board: str) -> dict:
    """What the board's device offers ({"luts", "logic_cells", "brams", "dsps"}), as nextpnr reported it
    in the calibration builds."""
    boards = _json(CALIBRATION).get("boards", {})
    if board not in boards:
        raise TerwinError(f"no calibration for board {board!r} (calibrated: {', '.join(sorted(boards))})")
    return boards[board]


def check_calibrated(family: str, engine: str, coeffs: dict | None = None) -> dict:
    """The fitted quantities of `engine` on `family`; TerwinError when any is missing."""
    coeffs = coefficients() if coeffs is None else coeffs
    entry = coeffs.get(family, {}).get(engine)
    if not entry or any(q not in entry for q in QUANTITIES):
        raise TerwinError(f"the resource model has no calibration for the {engine} engine on {family} "
                          f"(benchmarks/calibrate_resources.py builds one)")
    return entry


def predict_features(feat: dict, *, family: str, board: str | None = None, coeffs: dict | None = None) -> dict:
    """Predicted {"luts", "logic_cells", "ffs", "brams", "dsps", "fmax_mhz"} (and "fits" with `board`)."""
    coeffs = coefficients() if coeffs is None else coeffs
    engine = feat["engine"]
    entry = check_calibrated(family, engine, coeffs)
    out, outside, fmax_outside = {}, set(), set()
    for q in QUANTITIES:
        e = entry[q]
        x = regressors(feat, e["regressors"], family)
        out[q] = float(x @ np.array(e["coefficients"]))
        # a design larger than every calibration build (by more than 1 %, in any regressor) is an
        # extrapolation: said, not hidden
        beyond = {n for n, v, (_, hi) in zip(e["regressors"], x, e.get("ranges", [])) if v > hi * 1.01}
        outside |= beyond
        if q == "period_ns":
            fmax_outside |= beyond
    # ... and so is the fmax of a design larger than every build (its LUTs, by more than 1 %): the clock
    # period was fitted on designs up to that size, and beyond it routing congestion, which no regressor
    # of the period sees, sets the clock (the 8-bit pe32x32 with 16 lanes: 33,366 LUTs predicted against
    # 27,750 for the largest build, predicted 93.5 MHz, placed at an estimated 55.9 and unrouted after
    # 25 minutes)
    if out["luts"] > max(entry["luts"]["measured"]) * 1.01:
        fmax_outside.add("luts")
    # a spec field no calibration build of this family and engine set (a field added since, e.g.
    # out_lanes > 1): the fit cannot see what it costs, so the prediction is an extrapolation too
    known = calibrated_fields(family, engine)
    uncalibrated = {f"{name} (not calibrated)" for name in feat["spec"] if name not in known}
    outside |= uncalibrated
    pred = {"luts": round(out["luts"]), "logic_cells": round(out["logic_cells"]), "ffs": round(out["ffs"]),
            "brams": block_rams(feat, family), "distributed_rams": mapped(feat, family, "distributed"),
            "sprams": mapped(feat, family, "spram"),
            "dsps": round(out["dsps"]),
            "fmax_mhz": round(1000.0 / out["period_ns"], 2), "extrapolated": sorted(outside),
            # the fmax alone: beyond the builds in a regressor of the clock period or in size, or a field
            # none set
            "fmax_extrapolated": bool(fmax_outside or uncalibrated)}
    if board is not None:
        cap = board_capacity(board)
        over = [k for k in ("logic_cells", "brams", "dsps", "sprams") if pred[k] > cap.get(k, 0)]
        pred["fits"] = not over
        pred["over"] = over
        pred["utilisation"] = {k: round(pred[k] / cap[k], 4) for k in ("logic_cells", "brams", "dsps")}
    return pred


def predict(dep, *, board: str) -> dict:
    """The resource and fmax prediction for the accelerator of `dep` on `board`."""
    from terwin.build import get_board  # flows layer, sideways: the board's FPGA family
    return predict_features(features(dep), family=get_board(board).family, board=board)


# The spec fields each regressor reads (a swept field none of an engine's regressors reads leaves the
# prediction unchanged: `terwin explore` says so).
REGRESSOR_SPEC_FIELDS = {
    "one": (), "pe_bits": ("pe_rows", "pe_cols", "act_bits"), "pes": ("pe_rows", "pe_cols"), "acc_bits": ("pe_rows", "act_bits"),
    "logic_mem_luts": ("pe_rows", "pe_cols", "act_bits"), "distributed_luts": ("pe_rows", "pe_cols", "act_bits"),
    "mult_lanes": ("mult_lanes",), "requant_lanes": ("out_lanes", "act_bits"), "log2_lanes": ("pe_rows", "pe_cols"), "log2_cols": ("pe_cols",), "dsp_tiles": ("act_bits", "out_lanes"),
    "requant_mults": ("requant",),
}


def spec_fields_read(engine: str) -> tuple[str, ...]:
    names = {n for q in engine_regressors(engine).values() for n in q}
    # the block RAM count reads the memories, which follow the array shape and the activation width
    fields = {"pe_rows", "pe_cols", "act_bits"} | {f for n in names for f in REGRESSOR_SPEC_FIELDS[n]}
    return tuple(sorted(fields))


def calibration_target(family: str) -> float:
    """The clock (MHz) the calibration builds of `family` asked for: a real build to compare with the
    model asks for the same."""
    return float(_json(CALIBRATION)["target_mhz"][family])


def summary(family: str, engine: str) -> dict:
    """The calibration behind a prediction: points and held-out (leave-one-out) errors per quantity."""
    entry = coefficients().get(family, {}).get(engine, {})
    return {q: {"points": len(e["measured"]), **{f"held_out_{k}": (None if v is None else round(v, 4))
                                                 for k, v in errors(e).items() if k != "n"}}
            for q, e in entry.items()}
