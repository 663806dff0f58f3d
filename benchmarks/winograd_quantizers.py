"""The Winograd family's quantizers on one trained model each: bits per weight against accuracy
(docs/codecs.md, "Quantizers of the Winograd family").

    python benchmarks/winograd_quantizers.py [--seeds 0 1 2] [--epochs-scale 1]
    python benchmarks/winograd_quantizers.py --model examples/lenet5.py:lenet5 --data digits32

Per seed, the default `terwin compress --family winograd` model is trained once (`compress(...,
on_export=...)` keeps the trained net and the exported model); every quantizer of
`terwin.algo.winograd.quantize` is then applied to that same exported model, as `--quantizer`
would, and the integer model is evaluated on all digits test images (`terwin.algo.results`: the
reference simulator, with the torch integer evaluation checked against it). Columns: distinct
values (summed over layers), nonzero fraction, Huffman-coded weight streams with their tables
(`terwin.codec`) — of the weights, and of the indices a dither-aware file would hold — the weight arrays (the dithered indices for `dithered`) under lzma and bz2, in
bits per weight, and the accuracy.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from terwin.algo.data import load_data
from terwin.algo.graph import load_model
from terwin.algo.results import evaluate_deployment
from terwin.algo.winograd.graph_flow import GraphOptions
from terwin.algo.winograd.graph_flow import compress as graph_compress
from terwin.algo.winograd import quantize
from terwin.algo.winograd.flow import WinogradOptions, compress

CONFIGS = (
    ("uniform", {}),
    ("uniform", {"quant_step": 2}), ("dithered", {"quant_step": 2}),
    ("uniform", {"quant_step": 4}), ("dithered", {"quant_step": 4}),
    ("uniform", {"quant_step": 8}), ("dithered", {"quant_step": 8}),
    ("ecsq", {"ecsq_lambda": 16}), ("ecsq", {"ecsq_lambda": 64}),
    ("kmeans", {"kmeans_clusters": 16}), ("hessian-kmeans", {"kmeans_clusters": 16}),
    ("importance-kmeans", {"kmeans_clusters": 16}),
    ("kmeans", {"kmeans_clusters": 8}), ("hessian-kmeans", {"kmeans_clusters": 8}),
    ("importance-kmeans", {"kmeans_clusters": 8}),
    ("kmeans", {"kmeans_clusters": 4}), ("hessian-kmeans", {"kmeans_clusters": 4}),
    ("importance-kmeans", {"kmeans_clusters": 4}),
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--model", help="FILE.py:FACTORY, a user's model (`terwin compress --model`); default the built-in net")
    p.add_argument("--data", default="digits", help="with --model: digits, digits32 or FILE.npz")
    args = p.parse_args()
    print("| seed | quantizer | option | distinct values | nonzero | Huffman bits/weight (+ tables) | "
          "Huffman of the indices | xz bits/weight | bz2 bits/weight | accuracy | mismatches |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        kept = {}
        keep = lambda net, dep, data: kept.update(net=net, dep=dep, data=data)   # noqa: E731
        t = time.monotonic()
        if args.model is None:
            options = WinogradOptions(seed=seed, epochs_scale=args.epochs_scale, quiet=True)
            compress(options, on_export=keep)
        else:
            options = GraphOptions(seed=seed, epochs_scale=args.epochs_scale, quiet=True, model_ref=args.model,
                                   data_ref=args.data)
            data = load_data(args.data)
            graph_compress(options, load_model(args.model, seed=seed), data, on_export=keep)
        print(f"<!-- seed {seed}: trained in {time.monotonic() - t:.0f} s -->", flush=True)
        for name, extra in CONFIGS:
            o = dataclasses.replace(options, quantizer=name, **extra)
            dep, fig = quantize.apply(o, kept["dep"], kept["net"], kept["data"])
            ev = evaluate_deployment(dep, kept["data"])
            option = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in extra.items()) or "—"
            print(f"| {seed} | {name} | {option} | {fig['distinct_values']} | {fig['nonzero_fraction']:.3f} | "
                  f"{fig['huffman_bits_per_weight']:.3f} | {fig['index_huffman_bits_per_weight']:.3f} | "
                  f"{fig['xz_bits_per_weight']:.3f} | "
                  f"{fig['bz2_bits_per_weight']:.3f} | {ev['accuracy']:.4f} | {ev['reference_mismatches']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
