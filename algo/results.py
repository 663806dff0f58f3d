"""The figures every compression family reports (compress.json), computed one way.

Common keys (identical for every family):

    family, spec, seed, options          what was run (`options`: the family's own options)
    accuracy                             integer model (`sim.reference`) on the test split
    float_accuracy, accuracy_drop_points the float model before compression; 100 · (float − integer)
    fake_quant_accuracy                  the fake-quantized torch model just before export
    test_images, reference_mismatches    test images whose scores from `sim.reference` and from the
                                         torch integer evaluation differ in any entry
    sparsity, sparsity_measure           the family's headline sparsity and what it counts
                                         ("tile_sparsity": PE tiles pruned; "winograd_sparsity":
                                         Winograd-domain zeros)
    compression_ratio, weight_bits_stored, requant_bits, weights, nonzero_weights
                                         `terwin.stats.model_stats` totals of the model file
    epochs, train_seconds                epochs per stage; seconds of the whole run
    numerics                             `algo.numerics.report()`: whether the float training ran on
                                         the pinned kernels (the same model on every x86-64 machine)
    checksum                             added by `terwin compress`: the model file's checksum

Family-specific figures go under one key named after the family (`"ternary": {...}`,
`"winograd": {...}`).
"""
from __future__ import annotations

import time

import numpy as np

from terwin.deployment import Deployment
from terwin.sim import reference
from terwin.stats import model_stats

from . import numerics, torch_int
from .options import CompressOptions
from .train import Tensors


def evaluate_deployment(dep: Deployment, data: Tensors, *, batch: int = 128) -> dict:
    """Accuracy of the integer model on the test split, agreement of the torch integer evaluation with
    `sim.reference` on every score, and the model file's size figures."""
    x = data.x_test.numpy()
    y = data.y_test.numpy()
    q = reference.quantize_input(dep, x)
    if not np.array_equal(torch_int.quantize_input(dep, x).numpy(), q):
        raise AssertionError("torch and NumPy input quantization disagree")
    # the reference `batch` images at a time: its im2col of a 32x32 model's whole test split is gigabytes
    scores_ref = np.concatenate([reference.forward(dep, q[i:i + batch]) for i in range(0, len(q), batch)])
    scores_torch = torch_int.forward(dep, q).numpy()
    totals = model_stats(dep)["totals"]
    return {
        "accuracy": float((scores_ref.argmax(axis=1) == y).mean()),
        "test_images": int(len(y)),
        "reference_mismatches": int(np.any(scores_torch != scores_ref, axis=1).sum()),
        "compression_ratio": totals["compression_ratio"],
        "weight_bits_stored": totals["weight_bits_stored"],
        "requant_bits": totals["requant_bits"],
        "weights": totals["weights"],
        "nonzero_weights": totals["nonzero"],
    }


def compress_report(options: CompressOptions, dep: Deployment, data: Tensors, *, float_accuracy: float,
                    fake_quant_accuracy: float, sparsity: float, sparsity_measure: str, epochs: dict,
                    started: float, family_figures: dict) -> dict:
    """compress.json's contents (all but `checksum`): the common keys, and `family_figures` under the
    family's name. `started`: `time.monotonic()` at the start of the run."""
    report = evaluate_deployment(dep, data)
    report.update({
        "family": options.family,
        "spec": dep.spec.to_dict(),
        "seed": options.seed,
        "options": options.family_options(),
        "float_accuracy": float_accuracy,
        "accuracy_drop_points": 100 * (float_accuracy - report["accuracy"]),
        "fake_quant_accuracy": fake_quant_accuracy,
        "sparsity": sparsity,
        "sparsity_measure": sparsity_measure,
        "epochs": epochs,
        options.family: family_figures,
        "train_seconds": time.monotonic() - started,
        "numerics": numerics.report(),
    })
    return report


__all__ = ["evaluate_deployment", "compress_report"]
