"""ECSQ after training on the stored Winograd model: bits per weight against accuracy (docs/codecs.md).

    python benchmarks/ecsq_winograd.py

Every weighted layer of bitstreams/ulx3s-85f/winograd/model.terwin requantized by `terwin.algo.ecsq`
at each λ (no fine-tuning), then: the Huffman-coded weight streams' bits per weight with their tables
(`terwin.codec`), the nonzero fraction, and the accuracy of the integer model (`terwin.sim.reference`)
on all digits test images. Seconds on one core.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from terwin import codec, fileformat
from terwin.algo.data import load_digits_split
from terwin.algo.ecsq import ecsq
from terwin.sim import reference

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = (0, 1, 4, 16, 64, 256, 1024)


def main() -> int:
    dep = fileformat.load(ROOT / "bitstreams/ulx3s-85f/winograd/model.terwin")
    split = load_digits_split()
    q, y = reference.quantize_input(dep, split.x_test), split.y_test
    n = sum(l.weight.size for l in dep.weighted_layers)
    print(f"{len(y)} test images, {n:,} weights")
    print("| λ | distinct values (all layers) | nonzero | Huffman bits/weight (+ tables) | accuracy |")
    print("|---|---|---|---|---|")
    for lam in LAMBDAS:
        layers = []
        for layer in dep.layers:
            if hasattr(layer, "weight"):
                half = 1 << (layer.weight_bits - 1)
                layer = dataclasses.replace(layer, weight=ecsq(layer.weight, lam, lo=-half, hi=half - 1).astype(np.int16))
            layers.append(layer)
        coded = codec.with_codec(dep.replace(layers=tuple(layers)), "huffman").validate()
        rep = codec.stream_report(coded)
        acc = float(np.mean(reference.predict(coded, q) == y))
        distinct = sum(len(np.unique(l.weight)) for l in coded.weighted_layers)
        nonzero = sum(int(np.count_nonzero(l.weight)) for l in coded.weighted_layers) / n
        print(f"| {lam} | {distinct} | {nonzero:.3f} | {(rep['huffman_bits'] + rep['huffman_table_bits']) / n:.3f} | "
              f"{acc:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
