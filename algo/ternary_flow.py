"""`terwin compress --family ternary`: PE-aware structured-pruned ternary digits CNN.

Stages (seeded, single-threaded, deterministic):
1. float training of `DigitsNet` (batch norm, no quantization) -> `float_accuracy`;
2. joint stage: activation fake quantization on, ternary weights (straight-through), tile masks
   registered, loss = CE + regularizer (Weight Penalty Clipping or plain group lasso); gradual
   pruning: the number of tiles WPC pulls to zero grows to the target over the first half of the stage;
3. prune each layer's lowest-RMS tiles to its share of `--tile-sparsity`, freeze the masks;
4. fine-tune the ternary, masked model while the zero budget (at most `--zero-budget` of a layer's
   kept weights may be 0: zeros inside kept tiles cost PE cycles) is phased in;
5. export to a `Deployment` and evaluate the integer model (torch integer evaluation and the NumPy
   reference, compared on every test image and every score).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.sim import reference
from terwin.spec import HardwareSpec
from terwin.stats import model_stats

from . import torch_int
from .data import load_digits_split
from .export import export_ternary, sync_activation_scales
from .nets import DigitsNet, Tensors, evaluate, train
from .pruning import REGULARIZERS, TilePruner
from .quant import set_quantization
from .ternary import Ternarizer, TernaryWeight, prepare_ternary


@dataclass(frozen=True)
class Schedule:
    """Training schedule. strength: λ of the regularizer. anneal_fraction: share of fine-tuning over
    which the zero budget is phased in. budget_exempt: layers the zero budget does not apply to.
    prune_ramp: gradual pruning — the number of tiles the regularizer aims at grows from 0 to the
    target along a cubic (Zhu & Gupta 2017) over this share of the joint epochs, then stays (0: the
    full target from the first step, one-shot as before).
    distill (weight of knowledge distillation from the float model during fine-tuning) and
    joint_ternary=False (float weights during the regularizer stage) are experiment knobs; neither
    helped in the runs recorded in docs/ternary.md, both are off by default."""
    float_epochs: int = 40
    joint_epochs: int = 30
    finetune_epochs: int = 50
    float_lr: float = 3e-3
    joint_lr: float = 1e-3
    finetune_lr: float = 1e-3
    batch_size: int = 64
    strength: float = 0.4
    anneal_fraction: float = 0.3
    distill: float = 0.0
    budget_exempt: tuple = ("conv1", "fc")  # dense first layer and the 1-pixel classifier
    joint_ternary: bool = True
    prune_ramp: float = 0.5  # WPC aims at a target that grows (cubic) over this share of the joint epochs

    def scaled(self, factor: float) -> "Schedule":
        def n(e):
            return max(1, round(e * factor))
        return dataclasses.replace(self, float_epochs=n(self.float_epochs), joint_epochs=n(self.joint_epochs),
                                   finetune_epochs=n(self.finetune_epochs))


DEFAULT_SCHEDULE = Schedule()
DEFAULT_THRESHOLD = 0.05
DEFAULT_ZERO_BUDGET = 0.03


def add_arguments(group) -> None:
    group.add_argument("--tile-sparsity", type=float, default=0.5, metavar="F",
                       help="fraction of PE tiles to prune, in [0, 1) (default: 0.5)")
    group.add_argument("--regularizer", choices=sorted(REGULARIZERS), default="wpc",
                       help="group regularizer before pruning: Weight Penalty Clipping or plain group lasso (default: wpc)")
    group.add_argument("--ternary-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T",
                       help=f"ternarizer threshold: Δ = T·max|W|, in [0, 1) (default: {DEFAULT_THRESHOLD})")
    group.add_argument("--zero-budget", type=float, default=DEFAULT_ZERO_BUDGET, metavar="Z",
                       help="after pruning, at most this fraction of each layer's kept weights may ternarize to 0 "
                            f"(zeros inside kept tiles cost PE cycles), in [0, 1] (default: {DEFAULT_ZERO_BUDGET})")
    group.add_argument("--ternary-epochs-scale", type=float, default=1.0, metavar="X",
                       help="multiply every training stage's epochs by X (default: 1)")


def _options(args) -> dict:
    sparsity = getattr(args, "tile_sparsity", 0.5)
    threshold = getattr(args, "ternary_threshold", DEFAULT_THRESHOLD)
    zero_budget = getattr(args, "zero_budget", DEFAULT_ZERO_BUDGET)
    scale = getattr(args, "ternary_epochs_scale", 1.0)
    regularizer = getattr(args, "regularizer", "wpc")
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise TerwinError(f"--tile-sparsity must lie in [0, 1), not {sparsity!r}")
    if not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise TerwinError(f"--ternary-threshold must lie in [0, 1), not {threshold!r}")
    if not isinstance(zero_budget, (int, float)) or not 0 <= zero_budget <= 1:
        raise TerwinError(f"--zero-budget must lie in [0, 1], not {zero_budget!r}")
    if not isinstance(scale, (int, float)) or not 0 < scale <= 100:
        raise TerwinError(f"--ternary-epochs-scale must be a number in (0, 100], not {scale!r}")
    if regularizer not in REGULARIZERS:
        raise TerwinError(f"--regularizer must be one of {', '.join(sorted(REGULARIZERS))}, not {regularizer!r}")
    return dict(sparsity=float(sparsity), threshold=float(threshold), zero_budget=float(zero_budget), scale=float(scale), regularizer=regularizer,
                seed=int(getattr(args, "seed", 0)), quiet=bool(getattr(args, "quiet", False)))


def compress(spec: HardwareSpec, args: argparse.Namespace, *, schedule: Schedule = DEFAULT_SCHEDULE):
    """Train, prune, ternarize and export; returns (Deployment, report dict)."""
    opts = _options(args)
    if spec.weight_format != "ternary":
        raise TerwinError(f"the ternary family needs a spec with weight_format 'ternary', not {spec.weight_format!r}")
    with _single_thread():
        return _compress(spec, schedule.scaled(opts["scale"]), **opts)


@contextlib.contextmanager
def _single_thread():
    """One intra-op thread: deterministic, and no oversubscription on shared machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Trained:
    """What `train_ternary` leaves: the fake-quantized ternary model (eval mode) and its pruner."""
    model: DigitsNet
    pruner: TilePruner
    float_accuracy: float
    accuracy_before_prune: float
    accuracy_after_prune: float
    fake_quant_accuracy: float


def train_ternary(spec: HardwareSpec, sched: Schedule, *, data: Tensors, sparsity: float, threshold: float,
                  zero_budget: float, regularizer: str, seed: int, quiet: bool = True) -> Trained:
    """Stages 1-4: float training, joint ternary + regularizer, pruning, fine-tuning."""
    with _single_thread():
        return _train_ternary(spec, sched, data=data, sparsity=sparsity, threshold=threshold,
                              zero_budget=zero_budget, regularizer=regularizer, seed=seed, quiet=quiet)


def _train_ternary(spec: HardwareSpec, sched: Schedule, *, data: Tensors, sparsity: float, threshold: float,
                   zero_budget: float, regularizer: str, seed: int, quiet: bool) -> Trained:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitsNet(act_bits=spec.act_bits)

    # 1. float baseline
    train(model, data, epochs=sched.float_epochs, lr=sched.float_lr, batch_size=sched.batch_size,
          generator=gen, progress=Progress("float", quiet=quiet))
    float_accuracy = evaluate(model, data.x_test, data.y_test)
    Progress("float", quiet=quiet).note(f"test accuracy {float_accuracy:.4f}")
    teacher = copy.deepcopy(model).eval() if sched.distill > 0 else None

    # 2. quantized activations, ternary weights, tile masks, regularizer
    set_quantization(model, enabled=True, calibrating=True)
    pruner = TilePruner(spec, target=sparsity, regularizer=REGULARIZERS[regularizer](strength=sched.strength))
    pruner.prepare(model.weighted_layers())
    if sched.joint_ternary:
        prepare_ternary(model, Ternarizer(threshold=threshold))

    def ramp(epoch: int, epochs: int) -> None:  # gradual pruning: WPC's target count, per epoch
        if sched.prune_ramp > 0:
            span = max(1, round(sched.prune_ramp * epochs))
            pruner.ramp(1 - (1 - min(1.0, (epoch + 1) / span)) ** 3)

    train(model, data, epochs=sched.joint_epochs, lr=sched.joint_lr, batch_size=sched.batch_size,
          penalty=pruner.penalty, generator=gen, on_epoch=ramp, progress=Progress(f"ternary+{regularizer}", quiet=quiet))
    before_prune = evaluate(model, data.x_test, data.y_test)

    # 3. prune to the target, freeze masks
    pruner.step()
    after_prune = evaluate(model, data.x_test, data.y_test)
    prepare_ternary(model, Ternarizer(threshold=threshold))

    # 4. fine-tune; the zero budget falls linearly from 1 (no cap) to zero_budget over the first
    # `anneal_fraction` of the epochs, so the zeros inside kept tiles turn into +-1 gradually
    def anneal(epoch: int, epochs: int) -> None:
        span = max(1, round(sched.anneal_fraction * epochs))
        f = min(1.0, (epoch + 1) / span)
        _set_budgets(model, threshold, 1.0 + f * (zero_budget - 1.0), sched.budget_exempt)
        sync_activation_scales(model)

    train(model, data, epochs=sched.finetune_epochs, lr=sched.finetune_lr, batch_size=sched.batch_size,
          generator=gen, progress=Progress("fine-tune", quiet=quiet), on_epoch=anneal,
          teacher=teacher, distill_weight=sched.distill)
    _set_budgets(model, threshold, zero_budget, sched.budget_exempt)
    set_quantization(model, enabled=True, calibrating=False)
    model.eval()
    sync_activation_scales(model)
    fake_quant_accuracy = evaluate(model, data.x_test, data.y_test)
    model.eval()
    return Trained(model, pruner, float_accuracy, before_prune, after_prune, fake_quant_accuracy)


def _compress(spec: HardwareSpec, sched: Schedule, *, sparsity: float, threshold: float, zero_budget: float,
              scale: float, regularizer: str, seed: int, quiet: bool):
    start = time.monotonic()
    data = Tensors.from_split(load_digits_split())
    t = train_ternary(spec, sched, data=data, sparsity=sparsity, threshold=threshold, zero_budget=zero_budget,
                      regularizer=regularizer, seed=seed, quiet=quiet)

    # 5. export and evaluate the integer model
    dep = export_ternary(t.model, spec, tile_masks=t.pruner.tile_masks(), meta={
        "tile_sparsity_target": sparsity, "regularizer": regularizer, "ternary_threshold": threshold,
        "zero_budget": zero_budget, "seed": seed, "float_accuracy": t.float_accuracy})
    report = evaluate_deployment(dep, data)
    report.update({
        "float_accuracy": t.float_accuracy,
        "accuracy_drop_points": 100 * (t.float_accuracy - report["accuracy"]),
        "fake_quant_accuracy": t.fake_quant_accuracy,
        "accuracy_before_prune": t.accuracy_before_prune,
        "accuracy_after_prune": t.accuracy_after_prune,
        "tile_sparsity_target": sparsity,
        "regularizer": regularizer,
        "ternary_threshold": threshold,
        "zero_budget": zero_budget,
        "epochs": {"float": sched.float_epochs, "joint": sched.joint_epochs, "finetune": sched.finetune_epochs},
        "train_seconds": time.monotonic() - start,
    })
    Progress("compress", quiet=quiet).note(
        f"float {t.float_accuracy:.4f} -> integer {report['accuracy']:.4f}, tile sparsity {report['tile_sparsity']:.3f}, "
        f"compression {report['compression_ratio']:.1f}x, MAC cycles / ideal {report['mac_cycle_ratio']:.3f}, "
        f"reference mismatches {report['reference_mismatches']}")
    return dep, report


def _set_budgets(model, threshold: float, budget: float, exempt) -> None:
    for name, module, _ in model.weighted_layers():
        for p in module.parametrizations.weight:
            if isinstance(p, TernaryWeight):
                p.ternarizer = Ternarizer(threshold=threshold, zero_budget=1.0 if name in exempt else budget)


def evaluate_deployment(dep, data: Tensors) -> dict:
    """Integer accuracy (torch integer evaluation), reference agreement and hardware-facing statistics."""
    x = data.x_test.numpy()
    y = data.y_test.numpy()
    q = reference.quantize_input(dep, x)
    if not np.array_equal(torch_int.quantize_input(dep, x).numpy(), q):
        raise AssertionError("torch and NumPy input quantization disagree")
    scores_torch = torch_int.forward(dep, q).numpy()
    scores_ref = reference.forward(dep, q)
    mismatches = int(np.any(scores_torch != scores_ref, axis=1).sum())
    stats = model_stats(dep)
    totals = stats["totals"]
    return {
        "accuracy": float((scores_torch.argmax(axis=1) == y).mean()),
        "test_images": int(len(y)),
        "reference_mismatches": mismatches,
        "tile_sparsity": totals["tile_sparsity"],
        "compression_ratio": totals["compression_ratio"],
        "weight_bits_stored": totals["weight_bits_stored"],
        "requant_bits": totals["requant_bits"],
        "weights": totals["weights"],
        "nonzero_weights": totals["nonzero"],
        **kept_tile_stats(dep),
    }


def kept_tile_stats(dep) -> dict:
    """Zeros inside kept tiles and the resulting MAC-cycle ratio (hardware processes a whole tile per cycle).

    zero_fraction_in_kept_tiles: zero (non-padding) weights in kept tiles / real weights in kept tiles,
    each layer weighted by its output pixels. mac_cycle_ratio:
    Σ kept_tiles · rows · cols · pixels / Σ nonzero · pixels (1.0 = ideal; padding lanes count as waste).
    """
    spec = dep.spec
    layers = {}
    zeros_w = real_w = slots = nonzero_w = 0
    for layer in dep.weighted_layers:
        grid = layer.tile_grid(spec)
        mask = layer.tile_mask.astype(bool)
        tiles = grid.tiles(layer.weight)[mask]
        real = (grid.index >= 0)[mask]
        _, h, w = layer.out_shape
        pixels = h * w
        z = int(((tiles == 0) & real).sum())
        n_real = int(real.sum())
        nz = int(np.count_nonzero(layer.weight))
        layers[layer.name] = {
            "tiles": int(mask.size), "tiles_kept": int(mask.sum()), "tile_sparsity": 1 - float(mask.mean()),
            "weight_sparsity": 1 - nz / layer.weight.size,
            "zero_fraction_in_kept_tiles": z / n_real if n_real else 0.0,
            "output_pixels": pixels,
        }
        zeros_w += z * pixels
        real_w += n_real * pixels
        slots += int(mask.sum()) * spec.lanes * pixels
        nonzero_w += nz * pixels
    return {
        "layers": layers,
        "zero_fraction_in_kept_tiles": zeros_w / real_w if real_w else 0.0,
        "mac_cycle_ratio": slots / nonzero_w if nonzero_w else float("inf"),
    }


__all__ = ["add_arguments", "compress", "train_ternary", "Trained", "evaluate_deployment", "kept_tile_stats", "Schedule", "DEFAULT_SCHEDULE"]
