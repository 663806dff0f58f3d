"""The learnable low-precision regularizer (arXiv 1809.00095) against none, Winograd family at low
weight precision (docs/codecs.md).

    python benchmarks/lowprec_winograd.py [--bits 4 3] [--lambdas 0 0.01 0.1] [--seeds 0]

`terwin compress --family winograd --weight-bits B --lowprec-lambda λ` on the digits (λ = 0: the
regularizer off, the baseline; same seed, so the float model is the same). Prints a Markdown row per
run: float, fake-quantized and integer accuracy, the regularizer's final e^α and grid error, the
Huffman-coded weight streams' bits per weight (`terwin.codec`) and seconds on one core.
"""
from __future__ import annotations

import argparse
import sys
import time

from terwin.algo.winograd.flow import WinogradOptions, compress


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.01, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    args = p.parse_args()
    print("| weight bits | λ | seed | float acc | fake-quant acc | integer acc | e^α (final) | grid error (steps²) | "
          "Huffman bits/weight | mismatches | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for bits in args.bits:
        for seed in args.seeds:
            for lam in args.lambdas:
                t = time.monotonic()
                _, rep = compress(WinogradOptions(seed=seed, weight_bits=bits, lowprec_lambda=lam,
                                                  epochs_scale=args.epochs_scale, quiet=True))
                w = rep["winograd"]
                reg = w.get("lowprec_regularizer", {})
                print(f"| {bits} | {lam:g} | {seed} | {rep['float_accuracy']:.4f} | {rep['fake_quant_accuracy']:.4f} | "
                      f"{rep['accuracy']:.4f} | {reg.get('exp_alpha', float('nan')):.3g} | "
                      f"{reg.get('grid_error', float('nan')):.4f} | {w['quantizer']['huffman_bits_per_weight']:.3f} | "
                      f"{rep['reference_mismatches']} | {time.monotonic() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
