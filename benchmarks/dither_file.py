"""The model file of a dithered model: its weights (format version 3 and before) against its indices
and seed (version 4), in bytes, stored raw, xz, bz2 and lzw (docs/codecs.md).

    python benchmarks/dither_file.py

bitstreams/ulx3s-85f/winograd/model.terwin requantized by `--quantizer dithered` (the quantizer of
`terwin compress`, `terwin.algo.winograd.quantize.apply`: after training, no fine-tuning) at each
step, dither seed 0, and written both ways (`terwin.fileformat.to_bytes(..., store_indices=)`); the
version-4 file is loaded back and checked to give the same weights (==). Sizes do not depend on the
machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from terwin import fileformat
from terwin.algo.winograd import quantize

ROOT = Path(__file__).resolve().parents[1]
STEPS = (2, 4, 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "bitstreams/ulx3s-85f/winograd/model.terwin"))
    parser.add_argument("--dither-seed", type=int, default=0)
    args = parser.parse_args()
    dep = fileformat.load(args.model)
    n = sum(int(layer.weight.size) for layer in dep.weighted_layers)
    shown = Path(args.model).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    print(f"{shown}: {n:,} weights; bytes (bits per weight)")
    print("| step | form | raw | xz | bz2 | lzw |")
    print("|---|---|---|---|---|---|")
    for step in STEPS:
        options = argparse.Namespace(quantizer="dithered", quant_step=step, dither_seed=args.dither_seed)
        model, _ = quantize.apply(options, dep)
        forms = {"weights (v3)": fileformat.to_bytes(model, store_indices=False),
                 "indices + seed (v4)": fileformat.to_bytes(model)}
        back = fileformat.from_bytes(forms["indices + seed (v4)"])
        assert all(np.array_equal(a.weight, b.weight) for a, b in zip(model.weighted_layers, back.weighted_layers))
        for form, data in forms.items():
            sizes = [len(data)] + [len(fileformat.compress(data, s)) for s in ("xz", "bz2", "lzw")]
            print(f"| {step} | {form} | " + " | ".join(f"{b:,} ({8 * b / n:.2f})" for b in sizes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
