"""Seed / spec robustness sweep of the ternary family's default recipe.

    python benchmarks/ternary_seeds.py [--specs pe8x8 pe8x16] [--seeds 0 1 2] [--sparsities 0.5 0.75]
                                       [--set finetune_lr=5e-4 ...] [--json out.json]

Runs the full `terwin compress --family ternary` flow (`terwin.algo.ternary.flow.compress`, the same
code path as the CLI) once per (spec, seed, tile sparsity), one run at a time (each run is
single-threaded), and prints one line per run and a Markdown table for docs/ternary.md. The JSON file
is rewritten after every run, so an interrupted sweep keeps what it measured.

--set KEY=VALUE overrides a `Schedule` field for experiments (e.g. `--set strength=0.1`, or
`--set prune_ramp=0` for the earlier one-shot recipe); without it the default schedule
(`DEFAULT_SCHEDULE`) is measured. Accuracy is on the 450-image test split (one
image = 0.22 points); the target is a drop of at most 1.0 point vs the float model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

from terwin.algo.ternary.flow import DEFAULT_SCHEDULE, TernaryOptions, compress
from terwin.spec import load_spec

COLUMNS = [
    ("spec", "spec", "{}"),
    ("tile_sparsity_target", "target", "{:.2f}"),
    ("seed", "seed", "{}"),
    ("float_accuracy", "float acc", "{:.2%}"),
    ("accuracy_before_prune", "before prune", "{:.2%}"),
    ("accuracy_after_prune", "after prune", "{:.2%}"),
    ("accuracy", "integer acc", "{:.2%}"),
    ("accuracy_drop_points", "drop (points)", "{:.2f}"),
    ("compression_ratio", "compression", "{:.1f}x"),
    ("mac_cycle_ratio", "MAC cycles / ideal", "{:.3f}"),
    ("reference_mismatches", "ref. mismatches", "{}"),
    ("train_seconds", "seconds", "{:.0f}"),
]


def _parse_set(items) -> dict:
    fields = {f.name: f for f in dataclasses.fields(DEFAULT_SCHEDULE)}
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set: unknown Schedule field {key!r} (known: {', '.join(fields)})")
        current = getattr(DEFAULT_SCHEDULE, key)
        if isinstance(current, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            out[key] = tuple(v for v in value.split(",") if v)
        else:
            out[key] = type(current)(value)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=["pe8x8", "pe8x16"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override Schedule fields (experiments)")
    parser.add_argument("--json", help="write the rows (and the schedule) as JSON here")
    args = parser.parse_args(argv)
    schedule = dataclasses.replace(DEFAULT_SCHEDULE, **_parse_set(args.set))
    rows = []
    for spec_name in args.specs:
        spec = load_spec(spec_name)
        for sparsity in args.sparsities:
            for seed in args.seeds:
                options = TernaryOptions(spec=spec, tile_sparsity=sparsity, seed=seed, quiet=True, schedule=schedule)
                start = time.monotonic()
                _, report = compress(options)
                figures = {k: v for k, v in report.pop("ternary").items() if k != "layers"}
                options = report.pop("options")
                report.update(figures, regularizer=options["regularizer"], tile_sparsity_target=options["tile_sparsity"],
                              spec=spec.name, wall_seconds=time.monotonic() - start)
                rows.append(report)
                print(" ".join(f"{key}={fmt.format(report[key])}" for key, _, fmt in COLUMNS), flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump({"schedule": dataclasses.asdict(schedule), "rows": rows}, f, indent=2, sort_keys=True)
    print()
    print(f"schedule: {dataclasses.asdict(schedule)}")
    print()
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    drops = [r["accuracy_drop_points"] for r in rows]
    misses = sum(d > 1.0 + 1e-9 for d in drops)
    print()
    print(f"{len(rows)} runs: mean drop {statistics.mean(drops):.2f} points, worst {max(drops):.2f}, "
          f"{misses} over 1.0; mean {statistics.mean(r['train_seconds'] for r in rows):.0f} s per run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
