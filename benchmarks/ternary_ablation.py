"""Ablation: Weight Penalty Clipping vs plain group lasso, at equal tile sparsity, for the ternary family.

    python benchmarks/ternary_ablation.py [--sparsities 0.5 0.75] [--seeds 0] [--spec pe8x8] [--json out.json]

Runs the full `terwin compress --family ternary` flow (same schedule, same λ, same seed) with each
regularizer and prints a Markdown table for docs/ternary.md. Each run takes about a minute on an
idle core; timings are reported, not asserted.
"""
from __future__ import annotations

import argparse
import json
import time

from terwin.algo.ternary.flow import DEFAULT_SCHEDULE, TernaryOptions, compress
from terwin.spec import load_spec

# keys of `flat_row`: compress.json's common figures and its "ternary" figures in one row
COLUMNS = [
    ("regularizer", "regularizer", "{}"),
    ("sparsity", "tile sparsity", "{:.3f}"),
    ("seed", "seed", "{}"),
    ("float_accuracy", "float acc", "{:.2%}"),
    ("accuracy_before_prune", "before prune", "{:.2%}"),
    ("accuracy_after_prune", "right after prune", "{:.2%}"),
    ("accuracy", "integer acc (final)", "{:.2%}"),
    ("accuracy_drop_points", "drop (points)", "{:.2f}"),
    ("compression_ratio", "compression", "{:.1f}x"),
    ("zero_fraction_in_kept_tiles", "zeros in kept tiles", "{:.2%}"),
    ("mac_cycle_ratio", "MAC cycles / ideal", "{:.3f}"),
    ("reference_mismatches", "ref. mismatches", "{}"),
    ("train_seconds", "seconds", "{:.0f}"),
]


def flat_row(report: dict) -> dict:
    """compress.json's figures as one flat row: the common keys, the ternary figures (without the
    per-layer table), the regularizer and the target tile sparsity from the options."""
    figures = {k: v for k, v in report["ternary"].items() if k != "layers"}
    common = {k: v for k, v in report.items() if k not in ("ternary", "options")}
    options = report["options"]
    return {**common, **figures, "regularizer": options["regularizer"],
            "tile_sparsity_target": options["tile_sparsity"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--regularizers", nargs="+", default=["wpc", "group-lasso"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--spec", default="pe8x8")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    rows = []
    for sparsity in args.sparsities:
        for regularizer in args.regularizers:
            for seed in args.seeds:
                options = TernaryOptions(spec=spec, tile_sparsity=sparsity, regularizer=regularizer, seed=seed,
                                         quiet=True, schedule=DEFAULT_SCHEDULE)
                start = time.monotonic()
                _, report = compress(options)
                report = flat_row(report)
                report.update(wall_seconds=time.monotonic() - start)
                rows.append(report)
                print(" ".join(f"{key}={fmt.format(report[key])}" for key, _, fmt in COLUMNS), flush=True)
    print()
    print(f"spec {spec.name}, λ = {DEFAULT_SCHEDULE.strength}, epochs float/joint/fine-tune = "
          f"{DEFAULT_SCHEDULE.float_epochs}/{DEFAULT_SCHEDULE.joint_epochs}/{DEFAULT_SCHEDULE.finetune_epochs}")
    print()
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        print("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
