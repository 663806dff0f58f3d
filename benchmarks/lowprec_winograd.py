"""The learnable low-precision regularizer (arXiv 1809.00095) against none, Winograd family at low
weight or activation precision (docs/codecs.md).

    python benchmarks/lowprec_winograd.py [--bits 4 3] [--lambdas 0 0.01 0.1] [--seeds 0]
    python benchmarks/lowprec_winograd.py --bits 8 --act-bits 4 --lambdas 0 --act-lambdas 0 0.01 0.1

`terwin compress --family winograd --weight-bits B --lowprec-lambda λ --lowprec-act-lambda λa` on the
digits, with a spec whose act_bits is A (`--act-bits`; default the spec's 8); λ = λa = 0 is the
regularizer off, the baseline (same seed, so the float model is the same). Prints a Markdown row per
run: float, fake-quantized and integer accuracy, each regularizer's final e^α, the grid errors of the
trained net (weights, and activations over the training images; measured on every run, the
regularizers' own measure, so the baseline's are there to compare), the Huffman-coded weight streams'
bits per weight (`terwin.codec`), mismatches of the integer model against the reference and seconds
on one core.
"""
from __future__ import annotations

import argparse
import sys
import time

from terwin.algo.winograd.flow import WinogradOptions, compress
from terwin.algo.winograd.lowprec import ActivationRegularizer, LowPrecisionRegularizer
from terwin.spec import WINOGRAD


def _fig(reg: dict, key: str, fmt: str) -> str:
    return format(reg[key], fmt) if key in reg else "—"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bits", type=int, nargs="+", default=[4, 3], help="Winograd-domain weight bits")
    p.add_argument("--act-bits", type=int, nargs="+", default=[WINOGRAD.act_bits], help="activation bits")
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.01, 0.1], help="weights' λ")
    p.add_argument("--act-lambdas", type=float, nargs="+", default=[0.0], help="activations' λ")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    args = p.parse_args()
    print("| weight bits | act bits | λ | act λ | seed | float acc | fake-quant acc | integer acc | e^α (final) | "
          "grid error (steps²) | act e^α (final) | act grid error (steps²) | Huffman bits/weight | mismatches | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bits in args.bits:
        for act_bits in args.act_bits:
            spec = WINOGRAD.replace(act_bits=act_bits)
            for seed in args.seeds:
                for lam in args.lambdas:
                    for act_lam in args.act_lambdas:
                        t = time.monotonic()
                        grid = {}

                        def measure(net, dep, data):
                            grid["w"] = LowPrecisionRegularizer(net, bits=bits, lam=1.0).final_error()
                            grid["a"] = ActivationRegularizer(net, lam=1.0).measure(data.x_train)
                        _, rep = compress(WinogradOptions(spec=spec, seed=seed, weight_bits=bits, lowprec_lambda=lam,
                                                          lowprec_act_lambda=act_lam, epochs_scale=args.epochs_scale,
                                                          quiet=True), on_export=measure)
                        w = rep["winograd"]
                        reg, act = w.get("lowprec_regularizer", {}), w.get("lowprec_act_regularizer", {})
                        print(f"| {bits} | {act_bits} | {lam:g} | {act_lam:g} | {seed} | {rep['float_accuracy']:.4f} | "
                              f"{rep['fake_quant_accuracy']:.4f} | {rep['accuracy']:.4f} | {_fig(reg, 'exp_alpha', '.3g')} | "
                              f"{grid['w']:.4f} | {_fig(act, 'exp_alpha', '.3g')} | {grid['a']:.4f} | {w['quantizer']['huffman_bits_per_weight']:.3f} | "
                              f"{rep['reference_mismatches']} | {time.monotonic() - t:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
