"""Calibration builds for the resource and fmax model of `terwin explore` (terwin.dse).

    python benchmarks/calibrate_resources.py [--workers 2] [--only NAME ...] [--refeature] [--fit] [--markdown]
                                             [--engine winograd]

Builds each point below with the real flow (`terwin.build.build_model`: yowasp Yosys + nextpnr) through
`terwin.parallel` (a process pool), and records what nextpnr and Yosys report — LUTs, logic cells,
FFs, block RAMs, DSPs, fmax — with the model's features (`terwin.dse.resources.features`) in
`terwin/dse/calibration.json` (package data). Each finished build is saved at once in
runs/calibration/<name>.json, so an interrupted run loses nothing; a point already there is not built
again. The committed reference builds (bitstreams/*/*/report.json) are calibration points too.
`--refeature` recomputes the features of every recorded point (no build) after a change to
`features`; `--engine NAME` refreshes only that engine's points (the others are kept as recorded in
calibration.json, e.g. when runs/ holds only this engine's builds); `--fit` refits the coefficients (terwin/dse/coefficients.json) from the recorded
points, with the held-out (leave-one-out) errors; `--markdown` rewrites the tables of docs/explore.md.

Models: "synthetic" is `terwin.synthetic.random_deployment(spec, seed=0)` (the digits topology:
conv 16, conv 32, pool, conv 32, pool, linear 10 on 1x8x8, 50 % of PE tiles pruned): any spec works;
"ternary-50" is the trained reference model (bitstreams/ulx3s-85f/ternary-50/model.terwin) re-tiled
for the point's PE array (`terwin.dse.sweep.retarget`). Targets: 40.5 MHz on the iCE40, 90 MHz on
the ECP5 (the reference builds'); nextpnr seed 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "calibration"
REFERENCE_MODEL = ROOT / "bitstreams" / "ulx3s-85f" / "ternary-50" / "model.terwin"

# (name, board, spec fields over the defaults, model)
POINTS = [
    # the ternary engine as it is since its control went register to register (registered done and
    # stage events, stage constants and loader writes; a registered board reset reaching control
    # registers only; no enable over the MAC pipeline, masked PE products): every point rebuilt on it.
    # Cheapest first, so an interrupted run has the most points.
    ("ice40-syn-pe2x8", "icebreaker", dict(pe_rows=2, pe_cols=8), "synthetic"),
    ("ecp5-syn-pe4x4", "ulx3s-85f", dict(pe_rows=4, pe_cols=4), "synthetic"),
    ("ice40-syn-pe4x4", "icebreaker", dict(pe_rows=4, pe_cols=4), "synthetic"),
    ("ecp5-syn-pe8x4", "ulx3s-85f", dict(pe_rows=8, pe_cols=4), "synthetic"),
    ("ice40-t50-pe4x8", "icebreaker", dict(pe_rows=4, pe_cols=8), "ternary-50"),
    ("ecp5-syn-pe4x8-l2", "ulx3s-85f", dict(pe_rows=4, pe_cols=8, out_lanes=2), "synthetic"),
    ("ice40-syn-pe8x4", "icebreaker", dict(pe_rows=8, pe_cols=4), "synthetic"),
    ("ecp5-syn-pe8x8-a4", "ulx3s-85f", dict(pe_rows=8, pe_cols=8, act_bits=4), "synthetic"),
    ("ice40-syn-pe8x8-a4", "icebreaker", dict(pe_rows=8, pe_cols=8, act_bits=4), "synthetic"),
    ("ecp5-syn-pe8x8-l2", "ulx3s-85f", dict(pe_rows=8, pe_cols=8, out_lanes=2), "synthetic"),
    ("ice40-syn-pe4x8-l2", "icebreaker", dict(pe_rows=4, pe_cols=8, out_lanes=2), "synthetic"),
    ("ecp5-syn-pe16x8", "ulx3s-85f", dict(pe_rows=16, pe_cols=8), "synthetic"),
    ("ice40-syn-pe4x8", "icebreaker", dict(pe_rows=4, pe_cols=8), "synthetic"),
    ("ice40-syn-pe8x8", "icebreaker", dict(pe_rows=8, pe_cols=8), "synthetic"),
    ("ecp5-syn-pe8x16", "ulx3s-85f", dict(pe_rows=8, pe_cols=16), "synthetic"),
    ("ice40-t50-pe8x8-l2", "icebreaker", dict(pe_rows=8, pe_cols=8, out_lanes=2), "ternary-50"),
    ("ecp5-syn-pe4x8-a4", "ulx3s-85f", dict(pe_rows=4, pe_cols=8, act_bits=4), "synthetic"),
    # the trained model on the ECP5 too (the iCE40 has two such points): with only its reference among
    # synthetic models, the held-out fit of the reference was the ECP5 LUT fit's largest error
    ("ecp5-t50-pe4x8", "ulx3s-85f", dict(pe_rows=4, pe_cols=8), "ternary-50"),
    ("ecp5-t50-pe8x8-l2", "ulx3s-85f", dict(pe_rows=8, pe_cols=8, out_lanes=2), "ternary-50"),
    ("ecp5-t50-pe16x8", "ulx3s-85f", dict(pe_rows=16, pe_cols=8), "ternary-50"),
    # and the synthetic model at the arrays the iCE40 has and the ECP5 had not
    ("ecp5-syn-pe8x8", "ulx3s-85f", dict(pe_rows=8, pe_cols=8), "synthetic"),
    ("ecp5-syn-pe4x8", "ulx3s-85f", dict(pe_rows=4, pe_cols=8), "synthetic"),
    ("ecp5-syn-pe2x8", "ulx3s-85f", dict(pe_rows=2, pe_cols=8), "synthetic"),
    # weight memories in logic (a small model on a wide tile): only pe16x8 and pe8x16 had them
    ("ecp5-syn-pe16x4", "ulx3s-85f", dict(pe_rows=16, pe_cols=4), "synthetic"),
    ("ecp5-syn-pe16x8-l2", "ulx3s-85f", dict(pe_rows=16, pe_cols=8, out_lanes=2), "synthetic"),
    # between the 128-PE points and the 1,024-PE references: 256 PEs, 4-bit, 8 requantizer lanes
    ("ecp5-syn-pe16x16-a4-l8", "ulx3s-85f", dict(pe_rows=16, pe_cols=16, act_bits=4, out_lanes=8), "synthetic"),
    # a second 32-lane build beside the pe32x32 reference's (32 lanes' requantizer operands across the die)
    ("ecp5-syn-pe32x32-a4-l32", "ulx3s-85f", dict(pe_rows=32, pe_cols=32, act_bits=4, out_lanes=32), "synthetic"),
    # the Winograd engine's (its own calibration)
    ("ecp5-wino-l2", "ulx3s-85f", dict(weight_format="winograd", mult_lanes=2), "synthetic"),
    ("ecp5-wino-l1", "ulx3s-85f", dict(weight_format="winograd", mult_lanes=1), "synthetic"),
    ("ecp5-wino-l4", "ulx3s-85f", dict(weight_format="winograd", mult_lanes=4), "synthetic"),
]
# Not built on the current engine (a 2-core machine shared with other work: the old engine's builds of
# 16x32 took 36 and 56 minutes): 16x32, 32x16 and the 64-column arrays; the sweep flags predictions
# beyond the built range as extrapolated. The
# Winograd engine at 8 and 16 lanes: the default model's reference builds (bitstreams/ulx3s-85f/
# winograd-8lanes, winograd-16lanes) are its points there.
TARGET_MHZ = {"ice40": 40.5, "ecp5": 90.0}
DOC_BEGIN, DOC_END = "<!-- calibration tables: benchmarks/calibrate_resources.py --markdown -->", \
    "<!-- end of calibration tables -->"
BOARDS_BEGIN, BOARDS_END = "<!-- held-out summary: benchmarks/calibrate_resources.py --markdown -->", \
    "<!-- end of held-out summary -->"
SYNTHETIC_TOPOLOGY = (("conv2d", 16), ("conv2d", 32), ("maxpool2d", 2), ("conv2d", 32), ("maxpool2d", 2),
                      ("linear", 10))
WINOGRAD_TOPOLOGY = (("winograd_conv2d", 16), ("winograd_conv2d", 32), ("maxpool2d", 2),
                     ("winograd_conv2d", 32), ("maxpool2d", 2), ("linear", 10))


def make_model(spec_fields: dict, model: str):
    from terwin import fileformat
    from terwin.dse.sweep import retarget
    from terwin.spec import HardwareSpec
    from terwin.synthetic import random_deployment

    spec = HardwareSpec(**spec_fields)
    if model == "synthetic":
        topology = WINOGRAD_TOPOLOGY if spec.weight_format == "winograd" else SYNTHETIC_TOPOLOGY
        return random_deployment(spec, seed=0, topology=topology, linear_int_bits=8
                                 if spec.weight_format == "winograd" else None)
    if model == "ternary-50":
        return retarget(fileformat.load(REFERENCE_MODEL), spec)
    raise ValueError(f"unknown model {model!r}")


def build_point(point) -> dict:
    """One calibration build (a task for terwin.parallel): the record, also saved in RUNS."""
    from terwin.build import get_board
    from terwin.build import build_model
    from terwin.dse.resources import features, measured

    name, board, spec_fields, model = point
    dep = make_model(spec_fields, model)
    family = get_board(board).family
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="terwin-calib-") as tmp:
        report = build_model(dep, board=board, out_dir=Path(tmp) / "out", clock_mhz=TARGET_MHZ[family],
                             quiet=True)
    record = {"name": name, "board": board, "family": family, "model": model, "spec": dep.spec.to_dict(),
              "features": features(dep), "measured": measured(report),
              "build_seconds": round(time.monotonic() - started, 1)}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def reference_points() -> list[dict]:
    """The committed reference builds made at the calibration's target clock as calibration points
    (nextpnr's fmax follows the target it is given: resnet8's 70 MHz reference is no point of a fit
    made at 90 MHz), raw weights and a DSP or threshold requantizer only (`features` has no term for a
    Huffman weight path or a requantizer multiply in logic)."""
    from terwin import fileformat
    from terwin.dse.resources import features, measured

    out = []
    for path in sorted((ROOT / "bitstreams").glob("*/*/report.json")):
        report = json.loads(path.read_text())
        if report.get("target_mhz") != TARGET_MHZ[report["family"]]:
            continue
        dep = fileformat.load(path.parent / "model.terwin")
        if any(getattr(layer, "codec", "raw") != "raw" for layer in dep.layers):
            continue   # a Huffman weight path (stream decoders, tile cache): the features model the raw one
        if dep.spec.requant == "logic":
            continue   # the requantizer's multiply in LUTs (about 1,100 more): no regressor models it
        out.append({"name": f"ref-{report['board']}-{path.parent.name}", "board": report["board"],
                    "family": report["family"], "model": path.parent.name, "spec": dep.spec.to_dict(),
                    "features": features(dep), "measured": measured(report),
                    "build_seconds": report.get("build_seconds")})
    return out


def board_capacities() -> dict:
    """What each board's device offers, from nextpnr's utilisation in the reference builds (its
    "available" counts, read by the family's own `resource_counts`)."""
    from terwin.build import family_of, get_board

    out = {}
    for path in sorted((ROOT / "bitstreams").glob("*/*/report.json")):
        report = json.loads(path.read_text())
        util = {cell: (v["available"], v["available"]) for cell, v in report["utilization"].items()}
        caps = family_of(get_board(report["board"])).resource_counts(util, {})
        out[report["board"]] = {"device": report["device"], "luts": max(caps["luts"], caps["logic_cells"]),
                                "logic_cells": caps["logic_cells"], "brams": caps["brams"], "dsps": caps["dsps"],
                                **({"sprams": caps["sprams"]} if caps.get("sprams") else {})}
    return out


def markdown(data: dict, coeffs: dict) -> str:
    """The tables of docs/explore.md: the builds, and the fit with its held-out errors."""
    from terwin.dse import resources

    def spec_label(spec):
        if spec["weight_format"] == "winograd":
            return f"winograd, {spec['mult_lanes']} lanes"
        return f"{spec['pe_rows']}x{spec['pe_cols']}, {spec['act_bits']}-bit"

    held = {}   # (point, quantity) -> held-out prediction
    for per_engine in coeffs.values():
        for entry in per_engine.values():
            for q, e in entry.items():
                for name, v in zip(e["points"], e["held_out"] or []):
                    held[name, q] = v
    lines = ["| point | board | model | array | LUTs | LCs | FFs | BRAM (counted) | DSP | fmax (MHz) | "
             "held-out LUTs (LCs) | held-out fmax | build (s) |", "|" + "---|" * 13]
    for p in data["points"]:
        m, f = p["measured"], p["features"]
        key = "logic_cells" if p["family"] == "ice40" else "luts"
        pred = held.get((p["name"], key))
        period = held.get((p["name"], "period_ns"))
        lut_err = "-" if pred is None else f"{pred:,.0f} ({100 * (pred - m[key]) / m[key]:+.1f} %)"
        fmax_err = "-" if period is None else f"{1000 / period:.1f} ({100 * (1000 / period - m['fmax_mhz']) / m['fmax_mhz']:+.1f} %)"
        lines.append(f"| {p['name']} | {p['board']} | {p['model']} | {spec_label(p['spec'])} | {m['luts']:,} | "
                     f"{m['logic_cells']:,} | {m['ffs']:,} | {m['brams']} ({resources.block_rams(f, p['family'])}) | "
                     f"{m['dsps']} | {m['fmax_mhz']:.1f} | {lut_err} | {fmax_err} | {p['build_seconds'] or 0:.0f} |")
    lines += ["", "| family | engine | quantity | builds | held-out error: mean | max | fit |", "|" + "---|" * 7]
    for family, per_engine in sorted(coeffs.items()):
        for engine, entry in sorted(per_engine.items()):
            for q, e in entry.items():
                err = resources.errors(e)
                fmt = (lambda v: "-" if v is None else f"{100 * v:.1f} %")
                terms = " + ".join(f"{c:.4g}·{n}" for c, n in zip(e["coefficients"], e["regressors"]) if c)
                lines.append(f"| {family} | {engine} | {q} | {len(e['measured'])} | {fmt(err['mean'])} | "
                             f"{fmt(err['max'])} | {terms or '0'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="build only these points (by name)")
    parser.add_argument("--refeature", action="store_true", help="recompute the recorded points' features")
    parser.add_argument("--fit", action="store_true", help="refit the coefficients from the recorded points")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the tables of docs/explore.md")
    parser.add_argument("--engine", help="refresh only this engine's points (the builds in runs/calibration and "
                                         "the reference builds); the other engines' points stay as recorded")
    args = parser.parse_args()

    from terwin.dse import resources
    from terwin.parallel import Executor
    from terwin.progress import Progress

    if not args.no_build and not args.refeature:
        todo = [p for p in POINTS if (args.only is None or p[0] in args.only) and not (RUNS / f"{p[0]}.json").exists()]
        if todo:
            ex = Executor(backend="process" if args.workers > 1 else "serial", workers=args.workers)
            print(f"{len(todo)} builds on {ex.describe()}", file=sys.stderr)
            ex.map(build_point, todo, progress=Progress("calibration builds"))
    records = {r["name"]: r for r in reference_points()}
    for path in sorted(RUNS.glob("*.json")):
        r = json.loads(path.read_text())
        if args.refeature:
            p = next(p for p in POINTS if p[0] == r["name"])
            r["features"] = resources.features(make_model(p[2], p[3]))
            path.write_text(json.dumps(r, indent=2, sort_keys=True) + "\n")
        records[r["name"]] = r
    if args.engine:
        kept = [p for p in json.loads(resources.CALIBRATION.read_text())["points"]
                if p["features"]["engine"] != args.engine]
        records = {**{p["name"]: p for p in kept},
                   **{k: r for k, r in records.items() if r["features"]["engine"] == args.engine}}
    data = {"about": "terwin explore's calibration builds: benchmarks/calibrate_resources.py",
            "machine": "shared 2-core x86-64, 24 GiB, no GPU",
            "boards": board_capacities(), "target_mhz": TARGET_MHZ,
            "points": [records[k] for k in sorted(records)]}
    resources.CALIBRATION.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{len(records)} points -> {resources.CALIBRATION.relative_to(ROOT)}", file=sys.stderr)
    if args.fit:
        coeffs = resources.fit(data["points"])
        resources.COEFFICIENTS.write_text(json.dumps(coeffs, indent=1, sort_keys=True) + "\n")
        print(resources.format_fit(coeffs))
    if args.markdown:
        tables = markdown(data, json.loads(resources.COEFFICIENTS.read_text()))
        doc = ROOT / "docs" / "explore.md"
        text = doc.read_text()
        begin, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
        doc.write_text(text[:begin] + "\n" + tables + "\n" + text[end:])
        summary = tables[tables.index("| family | engine |"):]   # the fit table, also in docs/boards.md
        doc = ROOT / "docs" / "boards.md"
        text = doc.read_text()
        begin, end = text.index(BOARDS_BEGIN) + len(BOARDS_BEGIN), text.index(BOARDS_END)
        doc.write_text(text[:begin] + "\n" + summary + "\n" + text[end:])
        print(tables)


if __name__ == "__main__":
    main()
