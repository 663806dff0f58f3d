"""The seed sweep with per-layer tile budgets set by hand (a pilot of docs/ternary.md, issue 14
fourth part: does the classifier deserve more of the 0.875 budget?).

    python benchmarks/ternary_layer_budget.py --keep conv2=8 fc=16 -- \\
        --families ternary --specs pe8x8 --tile-sparsities 0.875 --out DIR [compression_sweep options]

`--keep NAME=N`: layer NAME keeps N tiles (the rest of it is pruned); the tiles the target still
asks for are taken from the layers not named (the first layer stays dense), split over them at one
common rate (largest remainder). Everything after `--` goes to `benchmarks/compression_sweep.py`
unchanged; the runs are that script's, with `TilePruner.prepare` wrapped to re-assign the counts.
Runs in this process: use `--backend serial` (the wrapper does not reach worker processes).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compression_sweep  # noqa: E402

from terwin.algo.ternary.pruning import TilePruner  # noqa: E402
from terwin.errors import TerwinError  # noqa: E402


def keep_counts(pruner: TilePruner, keep: dict[str, int]) -> dict[str, int]:
    """{layer: tiles to prune} with the named layers keeping `keep[name]` tiles and the same total."""
    want = sum(layer.final_count for layer in pruner.layers)
    named = {layer.name: layer.groups.count - keep[layer.name] for layer in pruner.layers if layer.name in keep}
    unknown = set(keep) - set(named)
    if unknown:
        raise TerwinError(f"--keep: no layer {', '.join(sorted(unknown))} (layers: "
                          f"{', '.join(layer.name for layer in pruner.layers)})")
    rest = [layer for i, layer in enumerate(pruner.layers) if layer.name not in keep and i not in pruner.dense]
    left = want - sum(named.values())
    capacity = sum(layer.groups.count for layer in rest)
    if not 0 <= left <= capacity:
        raise TerwinError(f"--keep: the other layers would have to prune {left} of {capacity} tiles")
    exact = {layer.name: left * layer.groups.count / capacity for layer in rest}
    counts = {name: math.floor(v) for name, v in exact.items()}
    for name in sorted(exact, key=lambda n: counts[n] - exact[n])[:left - sum(counts.values())]:
        counts[name] += 1
    return {**named, **counts}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", nargs="+", required=True, metavar="NAME=N")
    args = parser.parse_args(ours)
    keep = {}
    for item in args.keep:
        name, _, n = item.partition("=")
        if not n.isdigit():
            parser.error(f"--keep: give NAME=N, not {item!r}")
        keep[name] = int(n)
    prepare = TilePruner.prepare

    def prepare_with_budget(self, layers):
        prepare(self, layers)
        self.assign(keep_counts(self, keep))
        return self

    TilePruner.prepare = prepare_with_budget
    return compression_sweep.main(rest)


if __name__ == "__main__":
    sys.exit(main())
