"""`terwin explore`: the fastest accelerator of a model that fits a board, found by a sweep.

    result = explore("runs/demo/ternary-50/model.terwin", board="ulx3s-85f")
    result["best"]["spec"], result["best"]["predicted"]["images_per_s"]

The sweep is the product of the `HardwareSpec` fields in `axes` (default: `default_axes`), on top of
a base spec (the model's own; pe8x8 for a network description, or the one given). Each point is
scored by

* the **exact cycle model** (`terwin.sim.cycles`: cycles per image = compute + stream cycles, the
  figure `terwin verify` checks the RTL against with ==), and
* the **resource and fmax model** (`terwin.dse.resources`: block RAMs counted from the design's
  memories, LUTs / logic cells / FFs / DSPs / fmax fitted on real builds);

images/s = predicted fmax / cycles per image. A point fits when its logic cells, block RAMs and DSPs
are within the board's device. With `min_fmax` (MHz: the clock the design must run at) a point is a
candidate only when it fits and its predicted fmax reaches `min_fmax` within the calibration builds'
range (an fmax extrapolated beyond them is no promise of a clock). The best point maximises the
objective among the candidates; the Pareto front is the set of candidates that no other candidate
beats on images/s and on every resource (logic cells — the LUTs on the ECP5 —, block RAMs, DSPs) at
once.

What a point may vary depends on the input:

* a network description (NET.json, `terwin.network`): any spec: its weights are drawn for each
  point's spec (the same seed), so `act_bits` can be swept too;
* a model file (.terwin): its integer model is fixed — the fields a trained model fixes
  (`Deployment.MODEL_FIELDS`: act_bits, the weight format and its parameters) stay as they are,
  and every other field (the PE array, multiplier lanes, any field an engine adds) is swept on the
  same weights, re-tiled for each array (`Deployment.retarget`: the tile masks are re-derived, the
  integer model — hence accuracy — is identical at every point). With `recompress` K the model's
  own compression runs again for the K best arrays (`terwin.dse.recompress`: pruned for each array,
  not re-tiled), and the best is chosen among the new models, each with its own accuracy.

Points run on `terwin.parallel.Executor` (Ray, a process pool, or serially). With `build=True` the
best point is built for real (`terwin.build`) and its generated RTL verified (`terwin.sim.rtl.verify`,
every score and cycle counter compared with ==), and the prediction is set beside the result.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from terwin import engines, fileformat, network
from terwin.deployment import Deployment
from terwin.errors import SpecError, TerwinError
from terwin.spec import HardwareSpec

from . import recompress as recompress_mod
from . import resources

OBJECTIVES = {
    "images_per_s": "images per second at the predicted fmax",
    "images_per_s_per_klut": "images per second per thousand LUTs at the predicted fmax",
}
# The fields each engine's sweep varies by default are the engine's (`Engine.explore_axes`); any
# HardwareSpec field can be given as an axis.
NETWORK_AXES = {"act_bits": (4, 6, 8)}   # a network description's weights are drawn per point
MAX_POINTS = 4096
RESOURCE_AXES = ("logic_cells", "brams", "dsps")   # logic cells: = LUTs on the ECP5, LUT+FF+carry on the iCE40


def retarget(dep: Deployment, spec: HardwareSpec) -> Deployment:
    """`dep` on the accelerator `spec` (`Deployment.retarget`)."""
    return dep.retarget(spec)


# -- the model being explored ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """What is explored: a model file or a network description (picklable: sweep tasks get it)."""
    path: str
    kind: str                 # "model" or "network"
    base: HardwareSpec        # the spec the axes vary

    @classmethod
    def open(cls, path, *, spec: HardwareSpec | None = None) -> "Source":
        path = str(path)
        try:
            is_net = network.is_network_file(path)
        except OSError as exc:
            raise SpecError(f"cannot read {path}: {exc.strerror}") from None
        if is_net:
            base = spec or HardwareSpec()
            network.load_network(path, base)   # the description is checked once, before any sweep
            return cls(path, "network", base)
        dep = fileformat.load(path)
        if spec is not None:
            dep.retarget(spec)                 # refuses a field the model fixes, in one line
        return cls(path, "model", spec or dep.spec)

    def fixed_fields(self) -> tuple[str, ...]:
        return Deployment.MODEL_FIELDS if self.kind == "model" else ()

    def deployment(self, spec: HardwareSpec) -> Deployment:
        if self.kind == "network":
            return network.load_network(self.path, spec)
        return fileformat.load(self.path).retarget(spec)


def default_axes(source: Source) -> dict:
    axes = dict(engines.for_spec(source.base).explore_axes)
    if source.kind == "network":
        axes.update(NETWORK_AXES)
    return axes


def parse_axis(text: str) -> tuple[str, tuple]:
    """`FIELD=V1,V2,...` (a --axis option) -> (field, values); values are ints, floats or strings."""
    name, sep, values = text.partition("=")
    fields = HardwareSpec.__dataclass_fields__
    if not sep or not values:
        raise TerwinError(f"--axis must be FIELD=V1,V2,... (e.g. pe_rows=4,8,16), not {text[:60]!r}")
    if name not in fields:
        raise TerwinError(f"--axis {name[:40]!r}: not a HardwareSpec field (fields: {', '.join(fields)})")
    out = []
    for v in values.split(","):
        for conv in (int, float, str):
            try:
                out.append(conv(v))
                break
            except ValueError:
                continue
    return name, tuple(dict.fromkeys(out))


def spec_points(source: Source, axes: dict) -> tuple[list[HardwareSpec], list[str]]:
    """The valid specs of the sweep (product of the axes on the base spec), and notes on what was left out."""
    notes = []
    fixed = [name for name in axes if name in source.fixed_fields()]
    if fixed:
        raise TerwinError(f"a model file fixes {', '.join(fixed)} (its integer model was compressed for it); "
                          f"explore a network description to sweep {fixed[0]}, or compress one model per value")
    names = list(axes)
    total = math.prod(len(axes[n]) for n in names)
    if total > MAX_POINTS:
        raise TerwinError(f"the sweep has {total} points, more than {MAX_POINTS}: give fewer --axis values")
    specs, invalid = [], 0
    for values in itertools.product(*(axes[n] for n in names)):
        try:
            specs.append(HardwareSpec.from_dict({**source.base.to_dict(), **dict(zip(names, values))}))
        except SpecError:
            invalid += 1
    if invalid:
        notes.append(f"{invalid} combination(s) of the axes are not valid specs and were left out")
    if not specs:
        raise TerwinError("no valid spec in the sweep: check the --axis values")
    return list(dict.fromkeys(specs)), notes


# -- one point --------------------------------------------------------------------------------------------

def score_point(item) -> dict:
    """A sweep task (top-level: workers import it by name): (source, spec dict, board) -> the point."""
    source, spec_dict, board = item
    spec = HardwareSpec.from_dict(spec_dict)
    try:
        dep = source.deployment(spec).check_fits_hardware()
        engines.compile_program(dep)
    except TerwinError as e:   # this spec cannot run the model (e.g. a map larger than the engine allows)
        return {"spec": spec.to_dict(), "error": str(e)}
    return {"spec": spec.to_dict(), "predicted": predict_point(dep, board=board)}


def predict_point(dep: Deployment, *, board: str) -> dict:
    """Cycles (exact) and resources, fmax and images/s (the calibrated model) of `dep` on `board`."""
    from terwin.build import dense_macs
    from terwin.sim import cycles

    c = cycles.predict(dep)
    res = resources.predict(dep, board=board)
    per_image = int(c["cycles"]) + int(c["io_cycles"])
    ips = res["fmax_mhz"] * 1e6 / per_image
    return {"cycles_per_image": per_image, "compute_cycles": int(c["cycles"]), "mac_cycles": int(c["mac_cycles"]),
            "ideal_mac_cycles": int(c["ideal_mac_cycles"]), **res, "images_per_s": round(ips, 1),
            "images_per_s_per_klut": round(ips / max(res["luts"], 1) * 1000, 2),
            "gops": round(2 * dense_macs(dep) * ips / 1e9, 4)}


# -- the front ------------------------------------------------------------------------------------------

def pareto_front(rows: list[dict], *, maximize=("images_per_s",), minimize=RESOURCE_AXES) -> list[bool]:
    """For each row (a dict of figures), whether no other row is at least as good on every figure and
    strictly better on one (maximize: higher is better; minimize: lower is better)."""
    def key(r):
        return [r[k] for k in maximize] + [-r[k] for k in minimize]
    keys = [np.array(key(r), dtype=float) for r in rows]
    front = []
    for i, a in enumerate(keys):
        dominated = any(j != i and (b >= a).all() and (b > a).any() for j, b in enumerate(keys))
        front.append(not dominated)
    return front


def reaches(pred: dict, min_fmax: float | None) -> bool:
    """Whether a prediction reaches the clock floor (none: always) by the fit within the calibration
    builds' range (an fmax extrapolated beyond them is no promise of a clock)."""
    return min_fmax is None or (pred["fmax_mhz"] >= min_fmax and not pred.get("fmax_extrapolated", False))


def is_candidate(point: dict, min_fmax: float | None = None) -> bool:
    """A scored point that fits the board and reaches `min_fmax` (`reaches`)."""
    pred = point.get("predicted")
    return pred is not None and pred["fits"] and reaches(pred, min_fmax)


def below_floor(point: dict) -> bool:
    """A scored point that fits the board but not the sweep's clock floor (`predicted.meets_fmax` False)."""
    pred = point.get("predicted")
    return pred is not None and pred["fits"] and pred.get("meets_fmax") is False


def ranked_candidates(points: list[dict], objective: str, min_fmax: float | None = None) -> list[dict]:
    """The candidates (`is_candidate`), the highest objective first (ties: fewer LUTs, then the earlier point)."""
    return sorted((p for p in points if is_candidate(p, min_fmax)),
                  key=lambda p: (-p["predicted"][objective], p["predicted"]["luts"]))   # stable: ties keep order


def best_point(points: list[dict], objective: str, min_fmax: float | None = None) -> dict | None:
    """The first of `ranked_candidates`, None when there is none."""
    return next(iter(ranked_candidates(points, objective, min_fmax)), None)


# -- the exploration --------------------------------------------------------------------------------------

def explore(model, *, board: str, objective: str = "images_per_s", axes: dict | None = None,
            spec: HardwareSpec | None = None, accuracy_budget: float | None = None, workers: int = 1,
            ray_address: str | None = None, backend: str | None = None, build: bool = False, out=None,
            images: int = 20, force: bool = False, quiet: bool = True, min_fmax: float | None = None,
            build_tries: int = 1, recompress: int = 0) -> dict:
    """Sweep the accelerators of `model` (a .terwin path or a network description .json) for `board`
    (see the module docstring); returns {"board", "objective", "min_fmax", "axes", "points", "front",
    "best", "notes", ...}. With `recompress` K (a model file), the model's own compression runs again
    for the K best candidates' specs into `out`/recompress/ (`terwin.dse.recompress`), each new model is
    scored ("recompressed": the points with their accuracy) and the best is chosen among them, within
    `accuracy_budget`. With `build`, the best point is built into `out`/build (asking nextpnr for
    `min_fmax`, or the calibration builds' clock) and verified on `images` images; with `min_fmax` and
    `build_tries` > 1, a build that misses the clock is followed by the next candidate's (`out`/build2,
    ...), up to `build_tries` builds (`build_candidates`)."""
    from terwin.build import get_board
    from terwin.outdir import OutputFolder, check_folder
    from terwin.parallel import Executor
    from terwin.progress import Progress

    info = get_board(board)
    if objective not in OBJECTIVES:
        raise TerwinError(f"unknown objective {objective!r} (choose {', '.join(OBJECTIVES)})")
    resources.board_capacity(board)   # a board without calibration: refused before the sweep
    if min_fmax is not None and not (isinstance(min_fmax, (int, float)) and 1 <= min_fmax <= 1000):
        raise TerwinError(f"--min-fmax must be from 1 to 1000 MHz, not {min_fmax!r}")
    if build and out is None:
        raise TerwinError("--build needs --out DIR (the bitstream, its report and the plot go there)")
    if not (isinstance(build_tries, int) and 1 <= build_tries <= 16):
        raise TerwinError(f"--build-tries must be from 1 to 16, not {build_tries!r}")
    if build_tries > 1 and min_fmax is None:
        raise TerwinError("--build-tries needs --min-fmax (a build is tried again only when it misses that clock)")
    if not (isinstance(recompress, int) and 0 <= recompress <= recompress_mod.MAX_RECOMPRESS):
        raise TerwinError(f"--recompress must be from 0 to {recompress_mod.MAX_RECOMPRESS}, not {recompress!r}")
    if recompress and out is None:
        raise TerwinError("--recompress needs --out DIR (the recompressed models go there)")
    if out is not None:
        check_folder(out, force=force)
    source = Source.open(model, spec=spec)
    resources.check_calibrated(info.family, source.base.weight_format)
    notes = []
    recipe = None
    if recompress:
        if source.kind != "model":
            raise TerwinError("--recompress needs a model file: a network description has no training recipe")
        recipe = recompress_mod.recipe(fileformat.load(source.path), source.path)   # refused before the sweep
    if accuracy_budget is not None:
        if source.kind == "network":
            raise TerwinError("--accuracy-budget needs a trained model: a network description has random "
                              "weights and no accuracy")
        notes.append(f"accuracy budget {accuracy_budget:g} points: " + (
            "a recompressed model is a candidate only when its accuracy drop is within it" if recompress else
            "every point runs the same integer model (re-tiled), so every point has the model's own accuracy "
            "and is within it"))
    axes = dict(axes) if axes else default_axes(source)
    specs, more = spec_points(source, axes)
    notes += more
    read = set(resources.spec_fields_read(source.base.weight_format))
    unread = [a for a in axes if a not in read and a != "clock_mhz"]
    if unread:
        notes.append(f"the resource model was calibrated without varying {', '.join(unread)}: its prediction "
                     f"does not change with it (recalibrate: benchmarks/calibrate_resources.py)")
    executor = Executor.choose(workers=workers, ray_address=ray_address, backend=backend)
    progress = Progress("explore", quiet=quiet)
    progress.note(f"{len(specs)} spec points of {Path(str(model)).name} for {board}, on {executor.describe()}")
    points = executor.map(score_point, [(source, s.to_dict(), board) for s in specs], progress=progress)
    scored = [p for p in points if "predicted" in p]
    if not scored:
        raise TerwinError(f"no spec of the sweep can run this model; the first refusal: {points[0]['error']}")
    candidates = [p for p in scored if is_candidate(p, min_fmax)]
    for p, on in zip(candidates, pareto_front([p["predicted"] for p in candidates])):
        p["pareto"] = on
    for p in scored:
        p.setdefault("pareto", False)
        if min_fmax is not None:
            p["predicted"]["meets_fmax"] = reaches(p["predicted"], min_fmax)
    best = best_point(points, objective, min_fmax)
    result = {"model": str(model), "input": source.kind, "board": board, "family": info.family,
              "objective": objective, "min_fmax": min_fmax, "axes": {k: list(v) for k, v in axes.items()},
              "base_spec": source.base.to_dict(), "executor": executor.describe(), "notes": notes,
              "points": points, "front": [p["spec"] for p in candidates if p["pareto"]],
              "best": None if best is None else {"spec": best["spec"], "predicted": best["predicted"]},
              "calibration": resources.summary(info.family, source.base.weight_format)}
    if best is None:
        notes.append("no point of the sweep fits the board" if min_fmax is None or not any(
            p["predicted"]["fits"] for p in scored) else
            f"no point of the sweep that fits the board is predicted to reach {min_fmax:g} MHz")
    if out is not None:
        with OutputFolder(out, force=force) as stage:
            pool = points
            if recompress and best is not None:
                pool = recompress_points(recipe, ranked_candidates(points, objective, min_fmax), recompress,
                                         stage=stage, board=board, min_fmax=min_fmax, executor=executor,
                                         progress=progress)
                result["recompressed"] = pool
                result["retiled_best"] = result["best"]
                best, pool, note = recompress_mod.choose(pool, objective=objective, min_fmax=min_fmax,
                                                         budget=accuracy_budget)
                if note:
                    notes.append(note)
                result["best"] = None if best is None else {k: best[k] for k in ("spec", "predicted", "model",
                                                                                 "accuracy")}
            if build and best is not None:
                settled, attempts = build_candidates(source, pool, objective=objective, min_fmax=min_fmax,
                                                     tries=build_tries, board=board, stage=stage, quiet=quiet)
                for attempt in attempts:   # where each build is once the folder is moved in
                    attempt["built"]["out"] = str(Path(out) / Path(attempt["built"]["out"]).name)
                built = next(a["built"] for a in attempts if a["point"] is settled)
                result["best"] = {"spec": settled["spec"], "predicted": settled["predicted"],
                                  **{k: settled[k] for k in ("model", "accuracy") if k in settled},
                                  **verify_point(source, settled, built, images=images, quiet=quiet)}
                result["build_attempts"] = [{"spec": a["point"]["spec"], "predicted_fmax_mhz":
                                             a["point"]["predicted"]["fmax_mhz"], "built": a["built"],
                                             "meets_fmax": a["met"]} for a in attempts]
                if min_fmax is not None and not any(a["met"] for a in attempts):
                    notes.append(f"no build of the {len(attempts)} tried reached {min_fmax:g} MHz: the best is "
                                 f"the predicted best, built below it")
            for p in [*result.get("recompressed", []), *([result["best"]] if result["best"] else [])]:
                if "model" in p and Path(p["model"]).is_relative_to(stage):   # where it is once moved in
                    p["model"] = str(Path(out) / Path(p["model"]).relative_to(stage))
            plot(result, stage / "pareto.png")
            (stage / "explore.json").write_text(json.dumps(result, indent=1) + "\n")
        result["plot"] = str(Path(out) / "pareto.png")
    return result


def recompress_points(recipe: dict, ranked: list[dict], k: int, *, stage: Path, board: str,
                      min_fmax: float | None, executor, progress) -> list[dict]:
    """The model compressed again (`recipe`: its `terwin.api.compress` keywords) for the first `k` distinct
    compressions among `ranked` (the candidates of the re-tiled sweep, best first; specs that differ
    only in fields the compression does not read, e.g. out_lanes, share one: `compression_key`), into
    `stage`/recompress/1, 2, ...; every candidate of `ranked` on one of those arrays is scored again
    on its new model like a sweep point, with the model's accuracy and the re-tiled figures it
    replaces ("retiled")."""
    firsts = {}
    for p in ranked:
        key = recompress_mod.compression_key(p["spec"])
        if key not in firsts and len(firsts) < k:
            firsts[key] = p
    progress.note(f"compressing the model again for {len(firsts)} spec(s): terwin compress "
                  f"{recompress_mod.describe(recipe)} --spec SPEC")
    items = [(recipe, p["spec"], str(stage / "recompress" / str(i + 1))) for i, p in enumerate(firsts.values())]
    runs = dict(zip(firsts, executor.map(recompress_mod.recompress_task, items, progress=progress)))
    out = []
    for screened in ranked:
        run = runs.get(recompress_mod.compression_key(screened["spec"]))
        if run is None:
            continue
        spec = HardwareSpec.from_dict(screened["spec"])
        point = score_point((Source(run["model"], "model", spec), screened["spec"], board))
        if "error" in point:
            raise TerwinError(f"the model recompressed for {spec.name} cannot run: {point['error']}")
        if min_fmax is not None:
            point["predicted"]["meets_fmax"] = reaches(point["predicted"], min_fmax)
        sp = screened["predicted"]
        out.append({**point, "model": run["model"], "accuracy": run["accuracy"],
                    "compression_ratio": run["compression_ratio"], "train_seconds": run["train_seconds"],
                    "retiled": {k: sp[k] for k in ("cycles_per_image", "images_per_s", "luts", "fmax_mhz")}})
    return out


def point_source(source: Source, point: dict) -> Source:
    """The model a point runs: its own (a recompressed point's file) or the sweep's."""
    if "model" in point:
        return Source(point["model"], "model", HardwareSpec.from_dict(point["spec"]))
    return source


def build_candidates(source: Source, points: list[dict], *, objective: str, min_fmax: float | None, tries: int,
                     board: str, stage: Path, quiet: bool) -> tuple[dict, list[dict]]:
    """Build the candidates in `ranked_candidates`' order (the best point first) into `stage`/build,
    `stage`/build2, ..., until one reaches `min_fmax` (always the first only without a floor), at most
    `tries`. Returns (the point settled on: the first that reached the floor, else the best; the
    attempts [{"point", "built", "met"}])."""
    ranked = ranked_candidates(points, objective, min_fmax)
    attempts = []
    for i, point in enumerate(ranked[:tries]):
        built = build_point(source, point, board=board, out_dir=stage / ("build" if i == 0 else f"build{i + 1}"),
                            clock_mhz=min_fmax, quiet=quiet)
        met = min_fmax is None or (built["fmax_mhz"] or 0) >= min_fmax
        attempts.append({"point": point, "built": built, "met": met})
        if met:
            return point, attempts
    return ranked[0], attempts


def build_point(source: Source, point: dict, *, board: str, out_dir, quiet: bool,
                clock_mhz: float | None = None) -> dict:
    """Build one point for real (nextpnr asked for `clock_mhz`, by default the clock the calibration
    builds asked for): what it took and reached."""
    from terwin.build import build_model, get_board

    dep = point_source(source, point).deployment(HardwareSpec.from_dict(point["spec"])).check_fits_hardware()
    family = get_board(board).family
    target = clock_mhz if clock_mhz is not None else resources.calibration_target(family)
    report = build_model(dep, board=board, out_dir=out_dir, clock_mhz=target, quiet=quiet)
    per_image = report["cycles_per_image"]
    return {"luts": report["luts"], "logic_cells": report["logic_cells"], "ffs": report["ffs"],
            "brams": report["brams"], "dsps": report["dsps"], "fmax_mhz": report["fmax_mhz"],
            "target_mhz": report["target_mhz"], "cycles_per_image": per_image,
            "images_per_s": round(report["fmax_mhz"] * 1e6 / per_image, 1) if report["fmax_mhz"] else None,
            "fits": report["fits"], "timing_met": report["timing_met"], "out": str(out_dir)}


def verify_point(source: Source, point: dict, built: dict, *, images: int, quiet: bool) -> dict:
    """Verify a built point's RTL on `images` images; its figures beside the prediction."""
    from terwin.sim import rtl

    dep = point_source(source, point).deployment(HardwareSpec.from_dict(point["spec"])).check_fits_hardware()
    per_image = built["cycles_per_image"]
    q = verification_images(dep, images)
    res = rtl.verify(dep, q, progress=not quiet)
    verify = {"images": res.images, "mismatches": res.mismatches, "cycles_match_model": not res.counter_errors
              and res.completed == res.images, "ok": res.ok, "simulator": res.simulator}
    pred = point["predicted"]
    error = {k: round((pred[k] - built[k]) / built[k], 4) for k in ("luts", "logic_cells", "ffs", "brams", "dsps",
                                                                     "fmax_mhz", "images_per_s")
             if built.get(k)}
    return {"built": built, "verify": verify, "prediction_error": error,
            "cycles_exact": per_image == pred["cycles_per_image"]}


def verification_images(dep: Deployment, n: int) -> np.ndarray:
    """`n` quantized images for `dep`: the test images of the built-in set of its input shape (digits,
    digits32) when there is one, else random ones (seed 0) over the whole input range — the check is
    bit-exactness, whatever the images."""
    from terwin.algo.data import builtin_for, load_data
    from terwin.sim import reference
    name = builtin_for(dep.input_shape)
    if name is not None:
        return reference.quantize_input(dep, load_data(name).x_test[:n])
    rng = np.random.default_rng(0)
    return rng.integers(0, dep.spec.act_max + 1, size=(n, *dep.input_shape), dtype=np.int64)


# -- output ---------------------------------------------------------------------------------------------

def _spec_label(spec: dict, axes) -> str:
    full = HardwareSpec.from_dict(spec)  # a field at its default is not in the dict
    return " ".join(f"{k}={getattr(full, k)}" for k in axes)


def format_table(result: dict) -> str:
    """The Pareto front (and the best point) as a text table."""
    axes = list(result["axes"])
    rows = [p for p in result["points"] if p.get("pareto")]
    rows.sort(key=lambda p: -p["predicted"]["images_per_s"])
    head = f"{'spec':<28}{'cycles':>9}{'fmax MHz':>10}{'images/s':>12}{'LUTs':>8}{'LCs':>8}{'BRAM':>6}{'DSP':>5}"
    floor = f", predicted fmax >= {result['min_fmax']:g} MHz" if result.get("min_fmax") is not None else ""
    lines = [f"Pareto front (images/s vs logic cells, BRAM, DSP) of {len(result['points'])} points on "
             f"{result['board']}{floor}, predicted:", head]
    best = result["best"]
    for p in rows:
        r = p["predicted"]
        mark = " <- best" if best is not None and "model" not in best and p["spec"] == best["spec"] else ""
        mark += " (extrapolated)" if r["extrapolated"] else ""
        lines.append(f"{_spec_label(p['spec'], axes):<28}{r['cycles_per_image']:>9}{r['fmax_mhz']:>10.1f}"
                     f"{r['images_per_s']:>12.0f}{r['luts']:>8}{r['logic_cells']:>8}{r['brams']:>6}{r['dsps']:>5}{mark}")
    over = [p for p in result["points"] if "predicted" in p and not p["predicted"]["fits"]]
    refused = [p for p in result["points"] if "error" in p]
    slow = [p for p in result["points"] if below_floor(p)]
    unsure = [p for p in slow if p["predicted"]["fmax_mhz"] >= result["min_fmax"]]
    lines.append(f"{len(over)} point(s) do not fit the board; "
                 + (f"{len(slow)} fit but are not predicted to reach {result['min_fmax']:g} MHz "
                    f"({len(unsure)} of them only by an fmax extrapolated beyond the calibration builds); "
                    if result.get("min_fmax") is not None else "")
                 + f"{len(refused)} cannot run the model")
    if any(p["predicted"]["extrapolated"] for p in rows):
        lines.append("(extrapolated): a design beyond the range of the calibration builds (a larger array, "
                     "wider sums): its prediction is an extrapolation of the fit, with a larger error likely")
    rec = result.get("recompressed")
    if rec is not None:
        arrays = len({p["model"] for p in rec})
        lines.append(f"compressed again for {arrays} array(s) (the model's own recipe), predicted on the new models "
                     f"(re-tiled figures in brackets):")
        lines.append(f"{'spec':<28}{'cycles':>16}{'fmax MHz':>10}{'images/s':>20}{'LUTs':>8}{'accuracy':>10}{'drop':>7}")
        for p in sorted(rec, key=lambda p: -p["predicted"]["images_per_s"]):
            r, t, a = p["predicted"], p["retiled"], p["accuracy"]
            mark = " <- best" if best is not None and p["spec"] == best["spec"] else ""
            mark += "" if is_candidate(p, result.get("min_fmax")) else " (not a candidate)"
            lines.append(f"{_spec_label(p['spec'], axes):<28}{r['cycles_per_image']:>7} [{t['cycles_per_image']:>6}]"
                         f"{r['fmax_mhz']:>10.1f}{r['images_per_s']:>10.0f} [{t['images_per_s']:>7.0f}]{r['luts']:>8}"
                         f"{100 * a['integer']:>9.2f}%{a['drop_points']:>7.2f}{mark}")
    if best is not None:
        r = best["predicted"]
        lines.append(f"best ({result['objective']}): {_spec_label(best['spec'], axes)}: {r['images_per_s']:.0f} "
                     f"images/s predicted ({r['cycles_per_image']} cycles at {r['fmax_mhz']:.1f} MHz), "
                     f"{r['luts']} LUTs, {r['brams']} BRAM, {r['dsps']} DSP"
                     + (f"; model {best['model']} ({100 * best['accuracy']['integer']:.2f} %, drop "
                        f"{best['accuracy']['drop_points']:.2f} points)" if "model" in best else ""))
        for i, a in enumerate(result.get("build_attempts", [])):
            if not a["meets_fmax"] or len(result["build_attempts"]) > 1:
                lines.append(f"build {i + 1}: {_spec_label(a['spec'], axes)}: {a['built']['fmax_mhz']} MHz (predicted "
                             f"{a['predicted_fmax_mhz']:.1f}){'' if a['meets_fmax'] else ', below the floor'}")
        if "built" in best:
            b, v = best["built"], best["verify"]
            lines.append(f"built: {b['images_per_s']} images/s ({b['cycles_per_image']} cycles at "
                         f"{b['fmax_mhz']} MHz), {b['luts']} LUTs, {b['logic_cells']} LCs, {b['brams']} BRAM, "
                         f"{b['dsps']} DSP, fits: {'yes' if b['fits'] else 'NO'}; verified on {v['images']} images: "
                         f"{v['mismatches']} mismatches, cycles {'==' if v['cycles_match_model'] else '!='} model")
            lines.append("prediction error: " + ", ".join(f"{k} {100 * e:+.1f} %"
                                                          for k, e in best["prediction_error"].items()))
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """images/s against LUTs, block RAMs and DSPs: every point, the front, the best, the board's limits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (the axis formatters below)

    cap = resources.board_capacity(result["board"])
    pts = [p for p in result["points"] if "predicted" in p]
    fig, axs = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, key in zip(axs, RESOURCE_AXES):
        groups = [(lambda p: not p["predicted"]["fits"], dict(c="lightgrey", marker="x", label="does not fit"))]
        if result.get("min_fmax") is not None:
            groups.append((below_floor, dict(c="tab:grey", marker="v", label=f"not predicted to reach {result['min_fmax']:g} MHz")))
        for group, style in (*groups,
                             (lambda p: p["predicted"]["fits"] and not below_floor(p) and not p["pareto"],
                              dict(c="tab:blue", marker="o", label="fits")),
                             (lambda p: p["pareto"], dict(c="tab:red", marker="o", label="Pareto front"))):
            sel = [p for p in pts if group(p)]
            ax.scatter([p["predicted"][key] for p in sel], [p["predicted"]["images_per_s"] for p in sel], s=18,
                       **style)
        rec = [p for p in result.get("recompressed", []) if p["predicted"]["fits"]]
        if rec:
            ax.scatter([p["predicted"][key] for p in rec], [p["predicted"]["images_per_s"] for p in rec], s=40,
                       marker="^", c="tab:green", edgecolors="k", label="compressed again for its array", zorder=4)
        if result["best"] is not None:
            b = result["best"]
            ax.scatter([b["predicted"][key]], [b["predicted"]["images_per_s"]], marker="*", s=200, c="gold",
                       edgecolors="k", label="best (predicted)", zorder=5)
            if "built" in b and b["built"].get(key) is not None and b["built"].get("images_per_s"):
                ax.scatter([b["built"][key]], [b["built"]["images_per_s"]], marker="D", s=60, c="k",
                           label="best (built)", zorder=6)
        ax.axvline(cap[key], color="k", ls="--", lw=0.8, label=f"{result['board']} limit")
        ax.set_xlabel({"logic_cells": "logic cells (ECP5: LUTs), predicted", "brams": "block RAMs",
                       "dsps": "DSPs"}[key])
        ax.set_ylabel("images/s (predicted fmax)")
        if key == "logic_cells":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize=7)
    fig.suptitle(f"terwin explore: {Path(result['model']).name} on {result['board']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
