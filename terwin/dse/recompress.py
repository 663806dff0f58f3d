"""`terwin explore --recompress K`: the model's own compression, run again for the sweep's best specs.

A model file's sweep re-tiles one integer model for every array (`Deployment.retarget`): the tiles
it pruned were the tiles of the array it was compressed for, and on another array fewer whole tiles
are empty, so the re-tiled cycles are pessimistic for every array but its own. PE-aware pruning is
a choice made for an array: with `recompress=K` the explorer takes the K best candidates of the
re-tiled sweep (K distinct arrays: specs differing only in fields the compression does not
read, such as out_lanes, share a run) and compresses the model again for each — the same recipe,
which the model file records (`Deployment.meta`: family, seed, tile sparsity, regularizer, threshold, zero
budget, and the settings not at their defaults; a user's network by its `FILE.py:FACTORY`, data and
weights) — then scores each new model (its exact cycles, its resources and fmax) with its own
accuracy beside it. The best point is chosen among those, within `--accuracy-budget` (points of the
float model's accuracy) when one is given.

Each run is `terwin.api.compress` with the recorded options (what `terwin compress` with those options
and `--spec` the candidate's does), on the sweep's executor (Ray, a process pool or serially), into
OUT/recompress/<n>/ (spec.json, model/model.terwin, model/compress.json).
"""
from __future__ import annotations

import json
from pathlib import Path

from terwin.deployment import Deployment
from terwin.errors import TerwinError
from terwin.spec import HardwareSpec

MAX_RECOMPRESS = 16
# meta key -> keyword of `terwin.api.compress` (the ternary family, built-in net and a user's network)
KEYWORDS = (("seed", "seed"), ("tile_sparsity_target", "tile_sparsity"), ("regularizer", "regularizer"),
            ("ternary_threshold", "ternary_threshold"), ("zero_budget", "zero_budget"),
            ("prune_criterion", "prune_criterion"), ("epochs_scale", "epochs_scale"), ("channels", "channels"),
            ("model", "model"), ("data", "data"), ("weights", "weights"))
REQUIRED = ("seed", "tile_sparsity_target", "regularizer", "ternary_threshold", "zero_budget")


def recipe(dep: Deployment, path) -> dict:
    """The compression that made the model `dep` (read from `path`), as `terwin.api.compress` keywords,
    from what its file records; a TerwinError naming what is missing when it cannot be repeated."""
    from terwin.codec import model_codec

    meta = dep.meta or {}
    where = f"--recompress: {Path(str(path)).name}"
    if meta.get("family") != "ternary":
        raise TerwinError(f"{where} is a {meta.get('family', 'model')!r} model; only ternary models record the "
                          f"compression recipe --recompress repeats")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise TerwinError(f"{where} does not record how it was compressed ({', '.join(missing)} missing): "
                          f"compress it again with this terwin")
    if meta.get("recipe") == "api":
        raise TerwinError(f"{where} was compressed with settings the command line cannot repeat (a schedule, "
                          f"augmentation or validation share of the Python API)")
    model = meta.get("model")
    if model is not None and ":" not in str(model):
        raise TerwinError(f"{where} was compressed from a network passed to the Python API ({model!s:.60}), "
                          f"not a FILE.py:FACTORY that can be loaded again")
    out = {"family": "ternary"}
    for key, keyword in KEYWORDS:
        value = meta.get(key)
        if value is not None:
            out[keyword] = tuple(value) if isinstance(value, list) else value
    codec = model_codec(dep)
    if codec != "raw":
        out["codec"] = codec
    return out


def describe(recipe: dict) -> str:
    """The recipe as `terwin compress` options (for progress lines and notes)."""
    flags = {"tile_sparsity": "--tile-sparsity", "epochs_scale": "--ternary-epochs-scale"}
    return " ".join(f"{flags.get(k, '--' + k.replace('_', '-'))} "
                    f"{','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in recipe.items())


def recompress_task(item) -> dict:
    """A sweep task (top-level: workers import it by name): (recipe, spec dict, folder) -> the model
    compressed for that spec in folder/ (spec.json, model/model.terwin, model/compress.json) and its figures."""
    from terwin import api

    recipe, spec_dict, folder = item
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(spec_dict, indent=1) + "\n")
    keywords = dict(recipe)
    model, data = keywords.pop("model", None), keywords.pop("data", "digits")
    dep, report = api.compress(model, data, spec=HardwareSpec.from_dict(spec_dict), quiet=True, **keywords)
    model_dir = folder / "model"
    model_dir.mkdir()
    report = {**report, "checksum": api.save(dep, model_dir / "model.terwin")}
    (model_dir / "compress.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return {"spec": spec_dict, "model": str(model_dir / "model.terwin"),
            "accuracy": {"float": report["float_accuracy"], "integer": report["accuracy"],
                         "drop_points": round(report["accuracy_drop_points"], 2),
                         "validation": report.get("ternary", {}).get("validation", {}).get("accuracy"),
                         "reference_mismatches": report["reference_mismatches"]},
            "compression_ratio": report.get("compression_ratio"), "train_seconds": report.get("train_seconds")}


def compression_key(spec_dict: dict) -> tuple:
    """What a compression run depends on in a spec: the PE tile (pe_rows x pe_cols: what is pruned) and
    the fields the integer model fixes (`Deployment.MODEL_FIELDS`); specs equal in these (e.g. differing
    in out_lanes or the clock) share one compressed model."""
    spec = HardwareSpec.from_dict(spec_dict)
    return tuple(getattr(spec, f) for f in ("pe_rows", "pe_cols", *Deployment.MODEL_FIELDS))


def within_budget(point: dict, budget: float | None) -> bool:
    """A recompressed point's accuracy drop within `budget` points (none: always)."""
    return budget is None or point["accuracy"]["drop_points"] <= budget


def choose(points: list[dict], *, objective: str, min_fmax: float | None, budget: float | None):
    """The best of the recompressed `points` (`sweep.best_point` among those within the accuracy `budget`):
    (best or None, the points within the budget, a note when there is no best or None)."""
    from .sweep import best_point
    eligible = [p for p in points if within_budget(p, budget)]
    best = best_point(eligible, objective, min_fmax)
    if best is not None:
        return best, eligible, None
    why = f" within the accuracy budget of {budget:g} points" if budget is not None and len(eligible) < len(points) \
        else ""
    return None, eligible, f"no recompressed model is a candidate{why}: there is no best point"
