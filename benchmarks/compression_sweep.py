"""Seed sweep of both compression families: median, worst and spread of the accuracy drop and of the
compression, per configuration (issue 14; the tables in docs/ternary.md, docs/winograd.md and the
README's accuracy figures come from it).

    python benchmarks/compression_sweep.py --out runs/sweep [--workers 2] [--ray ADDRESS]
        [--families ternary winograd] [--seeds 0 1 2 3 4]
        [--specs pe8x8 pe8x16] [--tile-sparsities 0.5 0.75 0.875]
        [--modes liu joint] [--winograd-sparsities 0.7 0.8]
        [--variants wpc] [--set KEY=VALUE ...] [--channels C1,C2,C3] [--summarize]

Every run is the full `terwin compress` flow of its family (`compress(options)`, the same code path
as the command line), single-threaded; the runs go to `terwin.parallel.Executor.choose(workers=...,
ray_address=...)` (Ray on this machine or a cluster, else a process pool; `--workers 1`: one at a time
here). Each run writes OUT/runs/<name>.json as it finishes, so an interrupted sweep keeps what it
measured and a second call with the same OUT runs only the missing cells (`--summarize`: run
nothing, summarize what is there; `--update-docs`: rewrite the tables between their markers in
docs/ternary.md, docs/winograd.md and README.md from it). At the end (and after every finished run) OUT/sweep.json (rows
and per-cell statistics), OUT/sweep.md (Markdown tables) and, with matplotlib, OUT/sweep.png.

Cells: ternary = variant × spec × tile sparsity; Winograd = mode × Winograd sparsity. Per cell over
its seeds: median and worst (largest) accuracy drop in points (float − integer, both on the test
split), spread (largest − smallest drop), median and smallest compression (ternary: weight
compression of the model file; Winograd: multiply reduction vs direct 3x3 convolution), the
exact cycles per image of the engine's cycle model (`terwin.sim.cycles`), and the reference
mismatches summed over the runs.

Variants (ternary, same net, same epochs — the baselines of docs/ternary.md):
  wpc                 the family's recipe (Weight Penalty Clipping, gradual pruning, ...)
  group-lasso         plain group lasso instead of WPC
  magnitude           one-shot magnitude tile pruning + ternary: no regularizer (λ = 0), the joint
                      stage is plain ternary training, the lowest-RMS tiles are pruned at once
  unstructured        unstructured ternary (TTQ's threshold rule Δ = 0.05·max|W|, no tile pruning, no
                      zero budget): its zeros are scattered inside the tiles, one cell per spec
--set KEY=VALUE overrides a ternary `Schedule` field in every ternary run (ablations), e.g.
`--set bn_reestimate=false checkpoint=false`, `--set ramp_masks=false`, `--set allocation=sensitivity`.
--channels C1,C2,C3 sets the widths of the ternary DigitsNet (`TernaryOptions.channels`, default
16,32,64) in every ternary run; the run and cell names then carry them (e.g. `ternary-wpc-c32x64x64-...`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

from terwin.errors import TerwinError
from terwin.parallel import Executor

VARIANTS = {
    "wpc": {},
    "group-lasso": {"regularizer": "group-lasso"},
    "magnitude": {"schedule": {"strength": 0.0, "prune_ramp": 0.0}},
    "unstructured": {"tile_sparsity": 0.0, "zero_budget": 1.0, "ternary_threshold": 0.05},
}


def _parse_set(items) -> dict:
    from terwin.algo.ternary.flow import DEFAULT_SCHEDULE
    fields = {f.name for f in dataclasses.fields(DEFAULT_SCHEDULE)}
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise TerwinError(f"--set: give KEY=VALUE with KEY a Schedule field ({', '.join(sorted(fields))}), "
                              f"not {item!r}")
        current = getattr(DEFAULT_SCHEDULE, key)
        try:
            if isinstance(current, bool):
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("1", "true", "yes")
            elif isinstance(current, tuple):
                out[key] = tuple(v for v in value.split(",") if v)
            else:
                out[key] = type(current)(value)
        except ValueError:
            raise TerwinError(f"--set {key}: {value!r} is not a {type(current).__name__}") from None
    return out


def _parse_channels(text):
    """--channels C1,C2,C3 -> [C1, C2, C3] (TerwinError if malformed); None (the default widths) for
    None or the default itself, so that such runs keep their usual names."""
    if text is None:
        return None
    from terwin.algo.ternary.flow import check_channels
    from terwin.algo.ternary.net import DEFAULT_CHANNELS
    channels = check_channels(text)
    return None if channels == DEFAULT_CHANNELS else list(channels)


def cells(args) -> list[dict]:
    """One item per run (picklable dicts), seed 0 of every cell first, then seed 1, ..."""
    items = []
    if "ternary" in args.families:
        for variant in args.variants:
            for spec in args.specs:
                for sparsity in args.tile_sparsities:
                    if variant == "unstructured" and sparsity != args.tile_sparsities[0]:
                        continue   # no tile pruning: one cell per spec
                    for seed in args.seeds:
                        items.append({"family": "ternary", "variant": variant, "spec": spec, "seed": seed,
                                      "sparsity": 0.0 if variant == "unstructured" else sparsity,
                                      "schedule": args.schedule, "epochs_scale": args.epochs_scale,
                                      "channels": getattr(args, "channels", None)})
    if "winograd" in args.families:
        for mode in args.modes:
            for sparsity in args.winograd_sparsities:
                for seed in args.seeds:
                    items.append({"family": "winograd", "variant": mode, "spec": "winograd", "seed": seed,
                                  "sparsity": sparsity, "schedule": {}, "epochs_scale": args.epochs_scale})
    # seed by seed: a sweep cut short still has every cell at its first seeds
    return sorted(items, key=lambda item: item["seed"])


def cell_name(item: dict) -> str:
    variant = item["variant"]
    if item.get("channels") is not None:   # the default widths keep the names they always had
        variant += "-c" + "x".join(map(str, item["channels"]))
    return f"{item['family']}-{variant}-{item['spec']}-{item['sparsity']:g}"


def run_name(item: dict) -> str:
    return f"{cell_name(item)}-s{item['seed']}"


def run_one(item: dict) -> dict:
    """One compress run -> a flat row; written to item['out']/runs/<name>.json. Top-level: workers
    import it by name."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from terwin.sim import cycles
    from terwin.spec import load_spec

    start = time.monotonic()
    spec = load_spec(item["spec"])
    if item["family"] == "ternary":
        from terwin.algo.ternary.flow import DEFAULT_SCHEDULE, TernaryOptions, compress
        variant = dict(VARIANTS[item["variant"]])
        schedule = dataclasses.replace(DEFAULT_SCHEDULE, **{**variant.pop("schedule", {}), **item["schedule"]})
        variant.setdefault("tile_sparsity", item["sparsity"])
        if item.get("channels") is not None:
            variant["channels"] = tuple(item["channels"])
        options = TernaryOptions(spec=spec, seed=item["seed"], quiet=True, schedule=schedule,
                                 epochs_scale=item.get("epochs_scale", 1.0), **variant)
        dep, report = compress(options)
        figures = report["ternary"]
        extra = {"channels": list(options.channels), "mac_cycle_ratio": figures["mac_cycle_ratio"],
                 "tiles_kept": {name: f["tiles_kept"] for name, f in figures["layers"].items()},
                 "tiles": {name: f["tiles"] for name, f in figures["layers"].items()},
                 "weights": report["weights"], "weight_bits_stored": report["weight_bits_stored"],
                 "validation_before_prune": figures["accuracy_before_prune"],
                 "validation_after_prune": figures["accuracy_after_prune"],
                 "zero_fraction_in_kept_tiles": figures["zero_fraction_in_kept_tiles"],
                 "validation": figures["validation"], "compression": report["compression_ratio"],
                 "weight_sparsity": 1 - report["nonzero_weights"] / report["weights"]}
    else:
        from terwin.algo.winograd.flow import WinogradOptions, compress
        options = WinogradOptions(spec=spec, seed=item["seed"], quiet=True, mode=item["variant"],
                                  winograd_sparsity=item["sparsity"], epochs_scale=item.get("epochs_scale", 1.0))
        dep, report = compress(options)
        figures = report["winograd"]
        extra = {"mult_reduction": figures["mult_reduction"], "validation": figures["validation"],
                 "compression": figures["mult_reduction"]}
    predicted = cycles.predict(dep)
    row = {
        "name": run_name(item), "cell": cell_name(item), "family": item["family"], "variant": item["variant"],
        "spec": item["spec"], "seed": item["seed"], "sparsity_target": item["sparsity"],
        "schedule_overrides": item["schedule"], "epochs_scale": item.get("epochs_scale", 1.0),
        **{k: report[k] for k in ("float_accuracy", "accuracy", "accuracy_drop_points", "fake_quant_accuracy",
                                  "sparsity", "compression_ratio", "reference_mismatches", "test_images",
                                  "train_seconds", "numerics")},
        **extra,
        "cycles": predicted["cycles"], "mac_cycles": predicted["mac_cycles"],
        "ideal_mac_cycles": predicted["ideal_mac_cycles"],
        "layer_cycles": {layer["name"]: int(layer["cycles"]) for layer in predicted["layers"]},
        "wall_seconds": time.monotonic() - start,
    }
    if item.get("out"):
        path = Path(item["out"]) / "runs" / f"{row['name']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """Per cell: seeds, median/worst/spread of the drop, median/smallest compression, cycles, mismatches."""
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["cell"], []).append(row)
    out = []
    for cell, rs in by_cell.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        drops = [r["accuracy_drop_points"] for r in rs]
        comp = [r["compression"] for r in rs]
        first = rs[0]
        out.append({
            "cell": cell, "family": first["family"], "variant": first["variant"], "spec": first["spec"],
            "sparsity_target": first["sparsity_target"], "seeds": [r["seed"] for r in rs],
            "channels": _wide(first),
            "drop_median": statistics.median(drops), "drop_worst": max(drops), "drop_best": min(drops),
            "drop_spread": max(drops) - min(drops), "drops": drops,
            "accuracy_median": statistics.median(r["accuracy"] for r in rs),
            "accuracy_worst": min(r["accuracy"] for r in rs),
            "float_accuracy_median": statistics.median(r["float_accuracy"] for r in rs),
            "compression_median": statistics.median(comp), "compression_min": min(comp),
            "cycles_median": statistics.median(r["cycles"] for r in rs),
            "mac_cycles_median": statistics.median(r["mac_cycles"] for r in rs),
            "reference_mismatches": sum(r["reference_mismatches"] for r in rs),
            "seconds_median": statistics.median(r["train_seconds"] for r in rs),
        })
    return out


def _wide(row: dict):
    """The net's widths when a ternary run used other than the default ones, else None."""
    from terwin.algo.ternary.net import DEFAULT_CHANNELS
    channels = row.get("channels")
    return None if channels is None or tuple(channels) == DEFAULT_CHANNELS else list(channels)


def _variant(s: dict) -> str:
    return s["variant"] + (f" ({','.join(map(str, s['channels']))})" if s.get("channels") else "")


def markdown(summary: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}. Accuracy on the 450 test images (1 image = 0.22 points); drop = float − "
             "integer in points over the seeds listed; compression: ternary = weight compression of the model "
             "file, Winograd = multiply reduction vs direct 3x3; cycles: compute cycles per image "
             "(`terwin.sim.cycles`), median.", ""]
    header = ("| family | variant | spec | sparsity | seeds | drop median | drop worst | spread | drops by seed | "
              "integer acc median (worst) | compression median (min) | cycles / image | ref. mismatches |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for s in summary:
        unit = "×"
        lines.append(
            f"| {s['family']} | {_variant(s)} | {s['spec']} | {s['sparsity_target']:g} | "
            f"{','.join(map(str, s['seeds']))} | {s['drop_median']:.2f} | {s['drop_worst']:.2f} | "
            f"{s['drop_spread']:.2f} | {' / '.join(f'{d:.2f}' for d in s['drops'])} | "
            f"{s['accuracy_median']:.2%} ({s['accuracy_worst']:.2%}) | "
            f"{s['compression_median']:.1f}{unit} ({s['compression_min']:.1f}{unit}) | {s['cycles_median']:,.0f} | "
            f"{s['reference_mismatches']} |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(summary) + 2), 4.5))
    for i, s in enumerate(summary):
        ds = [r["accuracy_drop_points"] for r in rows if r["cell"] == s["cell"]]
        ax.scatter([i] * len(ds), ds, color="tab:blue", alpha=0.6, s=18)
        ax.scatter([i], [s["drop_median"]], color="tab:red", marker="_", s=400)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("symlog", linthresh=2)   # linear around the 1-point budget, a collapsed run still on the page
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([f"{s['variant']}\n{s['spec']}\n{s['sparsity_target']:g}\n"
                        f"{s['compression_median']:.0f}×" for s in summary], fontsize=7)
    ax.set_ylabel("accuracy drop (points): seeds (dots), median (bar)")
    ax.set_title("compression seed sweep (dashed: 1-point budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(out: Path, machine: str) -> list[dict]:
    rows = sorted((json.loads(p.read_text()) for p in (out / "runs").glob("*.json")),
                  key=lambda r: (r["family"], r["variant"], r["spec"], r["sparsity_target"], r["seed"]))
    summary = summarize(rows)
    (out / "sweep.json").write_text(json.dumps({"machine": machine, "summary": summary, "rows": rows},
                                               indent=2, sort_keys=True) + "\n")
    (out / "sweep.md").write_text(markdown(summary, machine))
    if summary:
        plot(summary, rows, out / "sweep.png")
    return summary


ROOT = Path(__file__).resolve().parents[1]
# the documents whose tables come from the sweep: (file, family, marker name)
DOCS = (("docs/ternary.md", "ternary"), ("docs/winograd.md", "winograd"), ("README.md", None))


def _between(text: str, name: str, body: str, where: str) -> str:
    begin, end = f"<!-- compression sweep: {name} -->", f"<!-- end of compression sweep: {name} -->"
    if begin not in text or end not in text:
        raise TerwinError(f"{where}: no {begin} ... {end} markers")
    i, j = text.index(begin) + len(begin), text.index(end)
    return text[:i] + "\n" + body + text[j:]


def readme_table(summary: list[dict], machine: str) -> str:
    """The README's accuracy figures: median and worst drop (and accuracy) per cell of the recipe."""
    lines = [f"Seed sweep (`benchmarks/compression_sweep.py`, seeds listed; {machine}):", "",
             "| model | seeds | integer accuracy median (worst) | drop median (worst), points | compression |",
             "|---|---|---|---|---|"]
    for s in summary:
        if s["family"] == "ternary" and (s["variant"] != "wpc" or s.get("channels")):
            continue   # the README's figures are the recipe's, on the default net
        what = (f"ternary {s['spec']}, {s['sparsity_target']:.1%} of tiles pruned" if s["family"] == "ternary"
                else f"Winograd {s['variant']}, {s['sparsity_target']:.0%} Winograd-domain zeros")
        unit = "× weights" if s["family"] == "ternary" else "× fewer multiplies"
        lines.append(f"| {what} | {','.join(map(str, s['seeds']))} | {s['accuracy_median']:.2%} "
                     f"({s['accuracy_worst']:.2%}) | {s['drop_median']:.2f} ({s['drop_worst']:.2f}) | "
                     f"{s['compression_median']:.1f}{unit} |")
    return "\n".join(lines) + "\n"


def update_docs(summary: list[dict], machine: str, root: Path = ROOT) -> None:
    """Rewrite the sweep tables between their markers in docs/ternary.md, docs/winograd.md, README.md."""
    for rel, family in DOCS:
        path = root / rel
        text = path.read_text()
        if family is None:
            text = _between(text, "summary", readme_table(summary, machine), rel)
        else:
            text = _between(text, family, markdown([s for s in summary if s["family"] == family], machine), rel)
        path.write_text(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for runs/*.json, sweep.json, sweep.md, sweep.png")
    parser.add_argument("--families", nargs="+", choices=["ternary", "winograd"], default=["ternary", "winograd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--specs", nargs="+", default=["pe8x8", "pe8x16"])
    parser.add_argument("--tile-sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.875])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["wpc"])
    parser.add_argument("--modes", nargs="+", choices=["liu", "joint"], default=["liu", "joint"])
    parser.add_argument("--winograd-sparsities", type=float, nargs="+", default=[0.7, 0.8])
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override ternary Schedule fields (ablations)")
    parser.add_argument("--channels", metavar="C1,C2,C3", default=None,
                        help="widths of the ternary DigitsNet's conv1, conv2, conv3 (default: the net's own, 16,32,64)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="every training stage's epochs × this (tests; the tables use 1)")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run on the Ray cluster at ADDRESS")
    parser.add_argument("--backend", choices=["ray", "process", "serial"], default=None,
                        help="executor backend (default: Ray when installed, else a process pool)")
    parser.add_argument("--machine", default=None, help="what to call this machine in the tables")
    parser.add_argument("--summarize", action="store_true", help="run nothing; summarize OUT/runs")
    parser.add_argument("--update-docs", action="store_true",
                        help="rewrite the tables between their markers in docs/ternary.md, docs/winograd.md, README.md")
    args = parser.parse_args(argv)
    try:
        args.schedule = _parse_set(args.set)
        args.channels = _parse_channels(args.channels)
        out = Path(args.out)
        (out / "runs").mkdir(parents=True, exist_ok=True)
        machine = args.machine or f"{os.uname().machine}, {os.cpu_count()} cores, torch single-threaded per run"
        if not args.summarize:
            items = [{**item, "out": str(out)} for item in cells(args)]
            todo = [item for item in items if not (out / "runs" / f"{run_name(item)}.json").exists()]
            executor = Executor.choose(workers=args.workers, ray_address=args.ray, backend=args.backend)
            print(f"{len(items)} runs, {len(items) - len(todo)} already in {out / 'runs'}, "
                  f"{len(todo)} to run on {executor.describe()}", flush=True)

            def progress(done: int, total: int) -> None:
                write_outputs(out, machine)
                print(f"[sweep] {done}/{total} runs done", flush=True)

            executor.map(run_one, todo, progress=progress)
        summary = write_outputs(out, machine)
        if args.update_docs:
            update_docs(summary, machine)
    except TerwinError as error:
        print(f"compression_sweep: {error}", file=sys.stderr)
        return 2
    print((out / "sweep.md").read_text())
    worst_ok = all(s["reference_mismatches"] == 0 for s in summary)
    print(f"reference mismatches 0 in every run: {worst_ok}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
