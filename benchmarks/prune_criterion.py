"""PE-tile pruning by magnitude against Gao et al.'s importance, ternary family (docs/codecs.md).

    python benchmarks/prune_criterion.py [--seeds 0 1 2] [--sparsity 0.5 0.75] [--criteria ...] [--epochs-scale 1]

For each seed and tile sparsity, `terwin compress --family ternary` twice on the digits: with
`--prune-criterion magnitude` and `importance`, the same seed (same float model and training up to
the pruning step), so the rows differ only in which tiles are pruned. Prints a Markdown row per
run: accuracy right before and right after the pruning step, the final integer accuracy, the
compression ratio, the Huffman-coded weight stream's bits per weight (`terwin.codec`) and seconds on
one core.
"""
from __future__ import annotations

import argparse
import sys
import time

from terwin import codec
from terwin.algo.ternary.flow import TernaryOptions, compress


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--criteria", nargs="+", default=["magnitude", "importance"], choices=["magnitude", "importance"])
    args = p.parse_args()
    print("| tile sparsity | seed | criterion | before prune | right after prune | integer acc (final) | compression | "
          "Huffman bits/weight | mismatches | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sparsity in args.sparsity:
        for seed in args.seeds:
            for criterion in args.criteria:
                t = time.monotonic()
                dep, rep = compress(TernaryOptions(seed=seed, tile_sparsity=sparsity, prune_criterion=criterion,
                                                   epochs_scale=args.epochs_scale, quiet=True))
                s = codec.stream_report(codec.with_codec(dep, "huffman"))
                bits = (s["huffman_bits"] + s["huffman_table_bits"]) / rep["weights"]
                t_ = rep["ternary"]
                print(f"| {sparsity} | {seed} | {criterion} | {t_['accuracy_before_prune']:.4f} | "
                      f"{t_['accuracy_after_prune']:.4f} | {rep['accuracy']:.4f} | {rep['compression_ratio']:.1f}x | "
                      f"{bits:.3f} | {rep['reference_mismatches']} | {time.monotonic() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
