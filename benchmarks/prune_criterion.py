"""PE-tile pruning by magnitude against Gao et al.'s importance, ternary family (docs/codecs.md).

    python benchmarks/prune_criterion.py [--seeds 0 1 2] [--sparsity 0.5 0.75] [--criteria ...] [--epochs-scale 1]

For each seed and tile sparsity, `terwin compress --family ternary` twice on the digits: with
`--prune-criterion magnitude` and `importance`, the same seed (same float model and training up to
the pruning step), so the rows differ only in which tiles are pruned. Prints a Markdown row per
run: the tiles the importance run prunes that the magnitude run keeps (as many the other way), the
accuracy right before and right after the pruning step, the final integer accuracy, the
compression ratio, the Huffman-coded weight stream's bits per weight (`terwin.codec`) and seconds on
one core.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from terwin import codec
from terwin.algo.ternary.flow import TernaryOptions, compress


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--regularizer", default="wpc", choices=["wpc", "group-lasso"])
    p.add_argument("--criteria", nargs="+", default=["magnitude", "importance"], choices=["magnitude", "importance"])
    args = p.parse_args()
    print("| regularizer | tile sparsity | seed | criterion | tiles pruned unlike magnitude | before prune | "
          "right after prune | integer acc (final) | compression | Huffman bits/weight | mismatches | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sparsity in args.sparsity:
        for seed in args.seeds:
            masks = {}
            for criterion in args.criteria:
                t = time.monotonic()
                dep, rep = compress(TernaryOptions(seed=seed, tile_sparsity=sparsity, prune_criterion=criterion,
                                                   regularizer=args.regularizer, epochs_scale=args.epochs_scale,
                                                   quiet=True))
                masks[criterion] = [np.asarray(layer.tile_mask) for layer in dep.weighted_layers
                                    if getattr(layer, "tile_mask", None) is not None]
                differ = "—" if "magnitude" not in masks or criterion == "magnitude" else \
                    sum(int((a != b).sum()) for a, b in zip(masks["magnitude"], masks[criterion])) // 2
                s = codec.stream_report(codec.with_codec(dep, "huffman"))
                bits = (s["huffman_bits"] + s["huffman_table_bits"]) / rep["weights"]
                t_ = rep["ternary"]
                print(f"| {args.regularizer} | {sparsity} | {seed} | {criterion} | {differ} | "
                      f"{t_['accuracy_before_prune']:.4f} | "
                      f"{t_['accuracy_after_prune']:.4f} | {rep['accuracy']:.4f} | {rep['compression_ratio']:.1f}x | "
                      f"{bits:.3f} | {rep['reference_mismatches']} | {time.monotonic() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
