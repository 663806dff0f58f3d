"""`terwin compress --family ternary`: PE-aware structured-pruned ternary digits CNN.

Stages (seeded, single-threaded, deterministic):
0. a validation split carved from the training images (`Tensors.from_split(..., validation=...)`:
   stratified, seeded by `--seed`); every choice made during training is judged on it, and the test
   images are read only for the report;
1. float training of `DigitsNet` (batch norm, no quantization); the epoch with the best validation
   accuracy is kept -> `float_accuracy` (test);
2. joint stage: activation fake quantization on, ternary weights (straight-through), tile masks
   registered, loss = CE + regularizer (Weight Penalty Clipping or plain group lasso); gradual
   pruning: the number of tiles WPC pulls to zero grows to the target over the first half of the stage,
   and those tiles are masked at every epoch (`Schedule.ramp_masks`), so the network trains without
   them long before the final prune; optionally the budget is split over the layers by validation
   sensitivity (`Schedule.allocation`);
3. prune each layer's lowest-RMS tiles to its share of `--tile-sparsity`, freeze the masks;
4. fine-tune the ternary, masked model while the zero budget (at most `--zero-budget` of a layer's
   kept weights may be 0: zeros inside kept tiles cost PE cycles) is phased in; after every epoch
   with the final budget the batch-norm statistics are re-estimated for the ternary weights as they
   are, and the epoch with the best validation accuracy is kept (`Schedule.bn_reestimate`,
   `Schedule.checkpoint`) — or, by default, the parameters of the last `Schedule.average` epochs
   are averaged and the statistics re-estimated for the mean (docs/ternary.md, issue 14 third part);
5. export to a `Deployment` and evaluate the integer model (`terwin.algo.results`: the NumPy
   reference and the torch integer evaluation, compared on every test image and every score).

API: `compress(TernaryOptions(...)) -> (Deployment, compress.json dict)`; `train_ternary` for stages 1-4.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.spec import PE8X8, HardwareSpec
from terwin.stats import model_stats

from ..data import VALIDATION_FRACTION, digits_input_scale, load_digits_split
from ..options import CompressOptions, check_number, check_weight_format
from ..quant import set_quantization
from ..results import compress_report
from ..train import (BestCheckpoint, Tensors, WeightAverage, evaluate, reestimate_batchnorm, scaled_epochs,
                     reproducible, train)
from .allocation import ALLOCATIONS, sensitivity_allocation
from .export import export_ternary, sync_activation_scales
from .net import DEFAULT_CHANNELS, DigitsNet
from .pruning import CRITERIA, REGULARIZERS, TilePruner
from .ternarize import Ternarizer, TernaryWeight, prepare_ternary

WEIGHT_FORMAT = "ternary"
DEFAULT_SPEC = PE8X8
# the ternary family's accuracies are float32 means (the model file's metadata holds float_accuracy)
ACCURACY_DTYPE = torch.float32


@dataclass(frozen=True)
class Schedule:
    """Training schedule. strength: λ of the regularizer (with `ramp_masks` on, λ = 1.0 and 0.4 gave
    the same runs in every case measured: WPC's clipped penalty reaches the tiles at or below the
    target rank, which are the ones masked, whose latent weights get no other gradient, and Adam's
    step does not depend on a gradient's scale; docs/ternary.md, issue 14 fourth part). anneal_fraction: share of fine-tuning over
    which the zero budget is phased in. budget_exempt: layers the zero budget does not apply to.
    prune_ramp: gradual pruning — the number of tiles the regularizer aims at grows from 0 to the
    target along a cubic (Zhu & Gupta 2017) over this share of the joint epochs, then stays (0: the
    full target from the first step, one-shot as before).
    distill (weight of knowledge distillation from the float model during fine-tuning) and
    joint_ternary=False (float weights during the regularizer stage) are experiment knobs; neither
    helped in the runs recorded in docs/ternary.md, both are off by default.
    checkpoint: keep the float epoch and the fine-tuning epoch (among those with the final zero
    budget) with the best validation accuracy, instead of the last. bn_reestimate: before each such
    validation, and at the end, recompute the batch-norm statistics from the training images for the
    ternary weights as they are (the running averages lag the codes that flip). freeze_bn: the share
    of the last fine-tuning epochs in which batch norm runs in eval mode (its statistics frozen).
    allocation: how the tile budget is split over the layers — "uniform" (one rate for every prunable
    layer) or "sensitivity" (`allocation.sensitivity_allocation`: same total, each layer cut to one
    common validation-loss level, measured on the float model before the joint stage).
    ramp_masks: during the joint stage's ramp the tiles the regularizer aims at are also masked at
    every epoch (gradual hard pruning, Zhu & Gupta 2017), so that the final prune removes nothing
    the network still uses.
    average: when > 0 (default 20 of the 100 fine-tuning epochs), the fine-tuning state exported is the
    mean of the parameters over the last `average` epochs (stochastic weight averaging,
    `train.WeightAverage`; at most the epochs with the final zero budget), ternarized, its batch-norm
    statistics re-estimated — instead of the one epoch `checkpoint` picks on the validation images
    (0: that pick; `checkpoint` then still chooses the float epoch).
    docs/ternary.md ablates each."""
    float_epochs: int = 40
    joint_epochs: int = 60
    finetune_epochs: int = 100
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
    checkpoint: bool = True
    bn_reestimate: bool = True
    freeze_bn: float = 0.0
    allocation: str = "uniform"
    ramp_masks: bool = True
    average: int = 20

    def __post_init__(self):
        if self.allocation not in ALLOCATIONS:
            raise TerwinError(f"schedule allocation must be one of {', '.join(ALLOCATIONS)}, not {self.allocation!r}")
        if self.average < 0:
            raise TerwinError(f"schedule average must be >= 0 epochs, not {self.average!r}")

    def scaled(self, factor: float) -> "Schedule":
        return dataclasses.replace(self, float_epochs=scaled_epochs(self.float_epochs, factor),
                                   joint_epochs=scaled_epochs(self.joint_epochs, factor),
                                   finetune_epochs=scaled_epochs(self.finetune_epochs, factor),
                                   average=scaled_epochs(self.average, factor) if self.average else 0)


DEFAULT_SCHEDULE = Schedule()
DEFAULT_THRESHOLD = 0.05
DEFAULT_ZERO_BUDGET = 0.03
# per layer: (256, 256, 256) is 1.2 M weights, 2.4 Mbit at 2 bits before pruning, under the on-chip limit
# `generate` / `verify` / `build` accept (`Deployment.check_fits_hardware`, 4 Mibit)
MAX_CHANNELS = 256


def check_channels(value, flag: str = "--channels") -> tuple[int, int, int]:
    """`value` (three ints, or the text "C1,C2,C3") as a tuple of ints in [1, MAX_CHANNELS], else a
    TerwinError naming `flag`."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        items = list(items)
        ok = len(items) == 3
    except TypeError:
        ok = False
    out = []
    for item in items if ok else ():
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item.strip())
        if not isinstance(item, int) or isinstance(item, bool) or not 1 <= item <= MAX_CHANNELS:
            ok = False
            break
        out.append(item)
    if not ok:
        raise TerwinError(f"{flag} must be three integers C1,C2,C3 in [1, {MAX_CHANNELS}] (the output channels "
                          f"of conv1, conv2, conv3; default {','.join(map(str, DEFAULT_CHANNELS))}), not {value!r}")
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class TernaryOptions(CompressOptions):
    """Options of the ternary family (plus spec, seed, epochs_scale, quiet from `CompressOptions`).

    tile_sparsity: fraction of all PE tiles pruned, [0, 1). regularizer: "wpc" or "group-lasso".
    ternary_threshold: Δ = T·max|W|, [0, 1). zero_budget: after pruning at most this fraction of a
    layer's kept weights may be 0, [0, 1]. schedule: epochs, learning rates, λ (scaled by epochs_scale).
    prune_criterion: what ranks the tiles at pruning, "magnitude" or "importance" (`.pruning`).
    channels: output channels of the built-in DigitsNet's conv1, conv2, conv3 (default (16, 32, 64)); a
    wider net keeps more tiles at the same tile sparsity (docs/ternary.md, issue 14 fifth part).
    """
    spec: HardwareSpec = DEFAULT_SPEC
    tile_sparsity: float = 0.5
    regularizer: str = "wpc"
    ternary_threshold: float = DEFAULT_THRESHOLD
    zero_budget: float = DEFAULT_ZERO_BUDGET
    schedule: Schedule = DEFAULT_SCHEDULE
    prune_criterion: str = "magnitude"
    channels: tuple = DEFAULT_CHANNELS

    family: ClassVar[str] = "ternary"
    epochs_scale_flag: ClassVar[str] = "--ternary-epochs-scale"

    def __post_init__(self):
        self._set("tile_sparsity", check_number(self.tile_sparsity, "--tile-sparsity", lo=0, hi=1, hi_open=True))
        self._set("ternary_threshold", check_number(self.ternary_threshold, "--ternary-threshold", lo=0, hi=1,
                                                    hi_open=True))
        self._set("zero_budget", check_number(self.zero_budget, "--zero-budget", lo=0, hi=1))
        if self.regularizer not in REGULARIZERS:
            raise TerwinError(f"--regularizer must be one of {', '.join(sorted(REGULARIZERS))}, not {self.regularizer!r}")
        if self.prune_criterion not in CRITERIA:
            raise TerwinError(f"--prune-criterion must be one of {', '.join(CRITERIA)}, not {self.prune_criterion!r}")
        self._set("channels", check_channels(self.channels))
        super().__post_init__()

    @property
    def scaled_schedule(self) -> Schedule:
        return self.schedule.scaled(self.epochs_scale)


OPTIONS = TernaryOptions  # the family's options dataclass (terwin.api builds it from keywords)


def recipe_extras(options: TernaryOptions, *, cli_defaults: bool = True) -> dict:
    """The model file's record of the recipe settings that are not at their defaults, beside the ones it
    always records (tile sparsity, regularizer, threshold, zero budget, seed; channels when not the
    default): what `terwin explore --recompress` needs to run the same compression for another array.
    Defaults are left out, so that the default model file stays byte for byte as before. A setting with
    no command-line form (a schedule other than the default: the API's or a benchmark's `schedule=`;
    `cli_defaults` False: the caller's own such settings differ) is recorded as `"recipe": "api"`, and
    --recompress refuses the file."""
    out = {}
    if options.prune_criterion != "magnitude":
        out["prune_criterion"] = options.prune_criterion
    if options.epochs_scale != 1.0:
        out["epochs_scale"] = options.epochs_scale
    if options.schedule != DEFAULT_SCHEDULE or not cli_defaults:
        out["recipe"] = "api"
    return out


def add_arguments(group) -> None:
    group.add_argument("--tile-sparsity", type=float, default=0.5, metavar="F",
                       help="fraction of PE tiles to prune, in [0, 1) (default: 0.5)")
    group.add_argument("--regularizer", choices=sorted(REGULARIZERS), default="wpc",
                       help="group regularizer before pruning: Weight Penalty Clipping or plain group lasso (default: wpc)")
    group.add_argument("--prune-criterion", choices=CRITERIA, default="magnitude",
                       help="what ranks the PE tiles at pruning: magnitude (RMS norm), or importance "
                            "(Gao et al.: sum of E[grad^2] * w^2 over the tile); default: magnitude")
    group.add_argument("--ternary-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="T",
                       help=f"ternarizer threshold: Δ = T·max|W|, in [0, 1) (default: {DEFAULT_THRESHOLD})")
    group.add_argument("--zero-budget", type=float, default=DEFAULT_ZERO_BUDGET, metavar="Z",
                       help="after pruning, at most this fraction of each layer's kept weights may ternarize to 0 "
                            f"(zeros inside kept tiles cost PE cycles), in [0, 1] (default: {DEFAULT_ZERO_BUDGET})")
    group.add_argument("--channels", default=None, metavar="C1,C2,C3",
                       help="output channels of the built-in net's conv1, conv2, conv3, each in [1, "
                            f"{MAX_CHANNELS}] (default: {','.join(map(str, DEFAULT_CHANNELS))})")
    group.add_argument("--ternary-epochs-scale", type=float, default=1.0, metavar="X",
                       help="multiply every training stage's epochs by X (default: 1)")


def options_from_args(args, spec) -> TernaryOptions:
    """The options of `terwin compress --family ternary ...` (args from the parser `add_arguments` filled)."""
    return TernaryOptions(spec=spec, seed=args.seed, quiet=args.quiet, tile_sparsity=args.tile_sparsity,
                          regularizer=args.regularizer, ternary_threshold=args.ternary_threshold,
                          zero_budget=args.zero_budget, epochs_scale=args.ternary_epochs_scale,
                          prune_criterion=args.prune_criterion,
                          channels=DEFAULT_CHANNELS if args.channels is None else args.channels)


@dataclass
class Trained:
    """What `train_ternary` leaves: the fake-quantized ternary model (eval mode) and its pruner."""
    model: DigitsNet
    pruner: TilePruner
    float_accuracy: float
    accuracy_before_prune: float
    accuracy_after_prune: float
    fake_quant_accuracy: float
    validation: dict


def _accuracy(model, x, y) -> float:
    return evaluate(model, x, y, dtype=ACCURACY_DTYPE)


def train_ternary(options: TernaryOptions, data: Tensors) -> Trained:
    """Stages 1-4: float training, joint ternary + regularizer, pruning, fine-tuning. `data` must
    hold a validation split (`Tensors.from_split(split, validation=...)`): every choice is made on it."""
    with reproducible():
        return _train_ternary(options, data)


def _train_ternary(options: TernaryOptions, data: Tensors) -> Trained:
    spec, sched, quiet, threshold = options.spec, options.scaled_schedule, options.quiet, options.ternary_threshold
    x_val, y_val = data.validation()
    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    model = DigitsNet(channels=options.channels, act_bits=spec.act_bits, input_scale=digits_input_scale(spec.act_bits))
    validation = {"images": int(len(y_val))}

    def fit(epochs: int, lr: float, label: str, **hooks) -> None:
        train(model, data, epochs=epochs, lr=lr, batch_size=sched.batch_size, generator=gen,
              lr_decay="cosine-annealing", augment=True, progress=Progress(label, quiet=quiet), **hooks)

    def settle() -> None:  # batch-norm statistics for the weights as they are now
        if sched.bn_reestimate:
            reestimate_batchnorm(model, data.x_train)

    # 1. float baseline; the epoch kept is the best on validation
    best = BestCheckpoint(model, x_val, y_val)
    fit(sched.float_epochs, sched.float_lr, "float",
        after_epoch=(lambda e, n: best.offer(e)) if sched.checkpoint else None)
    if sched.checkpoint:
        best.restore()
        validation["float_epoch"] = best.epoch + 1
    validation["float_accuracy"] = _accuracy(model, x_val, y_val)
    float_accuracy = _accuracy(model, data.x_test, data.y_test)
    Progress("float", quiet=quiet).note(f"test accuracy {float_accuracy:.4f} "
                                        f"(validation {validation['float_accuracy']:.4f})")
    teacher = copy.deepcopy(model).eval() if sched.distill > 0 else None

    # 2. quantized activations, ternary weights, tile masks, regularizer
    set_quantization(model, enabled=True, calibrating=True)
    pruner = TilePruner(spec, target=options.tile_sparsity, criterion=options.prune_criterion,
                        regularizer=REGULARIZERS[options.regularizer](strength=sched.strength))
    pruner.prepare(model.weighted_layers())
    if sched.allocation == "sensitivity":
        validation["prune_counts"] = sensitivity_allocation(model, pruner, x_val, y_val)
    if sched.joint_ternary:
        prepare_ternary(model, Ternarizer(threshold=threshold))

    fit(sched.joint_epochs, sched.joint_lr, f"ternary+{options.regularizer}", penalty=pruner.penalty,
        on_epoch=pruner.gradual(sched.prune_ramp, masks=sched.ramp_masks))
    before_prune = _accuracy(model, x_val, y_val)

    # 3. prune to the target, freeze masks
    pruner.step()
    after_prune = _accuracy(model, x_val, y_val)
    prepare_ternary(model, Ternarizer(threshold=threshold))

    # 4. fine-tune; the zero budget falls linearly from 1 (no cap) to zero_budget over the first
    # `anneal_fraction` of the epochs, so the zeros inside kept tiles turn into +-1 gradually; the
    # epoch kept is the best on validation among those with the final budget (the model exported is
    # the model validated), each judged with its batch-norm statistics re-estimated
    span = max(1, round(sched.anneal_fraction * sched.finetune_epochs))
    frozen_from = sched.finetune_epochs - round(sched.freeze_bn * sched.finetune_epochs)
    best = BestCheckpoint(model, x_val, y_val)
    window = average_window(sched, span)
    averaged = WeightAverage(model)

    def anneal(epoch: int, epochs: int) -> None:
        f = min(1.0, (epoch + 1) / span)
        _set_budgets(model, threshold, 1.0 + f * (options.zero_budget - 1.0), sched.budget_exempt)
        sync_activation_scales(model)
        if epoch >= frozen_from:
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()

    def choose(epoch: int, epochs: int) -> None:
        if window:
            if epoch >= epochs - window:
                averaged.add()
        elif sched.checkpoint and epoch + 1 >= span:
            settle()
            sync_activation_scales(model)
            best.offer(epoch)

    fit(sched.finetune_epochs, sched.finetune_lr, "fine-tune", on_epoch=anneal, after_epoch=choose, teacher=teacher,
        distill_weight=sched.distill)
    if window:
        averaged.apply()
        reestimate_batchnorm(model, data.x_train)   # always: the running statistics belong to the last epoch
        validation["averaged_epochs"] = [sched.finetune_epochs - window + 1, sched.finetune_epochs]
    elif sched.checkpoint:
        best.restore()
        validation["finetune_epoch"] = best.epoch + 1
    else:
        settle()
    _set_budgets(model, threshold, options.zero_budget, sched.budget_exempt)
    set_quantization(model, enabled=True, calibrating=False)
    model.eval()
    sync_activation_scales(model)
    validation["accuracy"] = _accuracy(model, x_val, y_val)
    fake_quant_accuracy = _accuracy(model, data.x_test, data.y_test)
    model.eval()
    return Trained(model, pruner, float_accuracy, before_prune, after_prune, fake_quant_accuracy, validation)


def compress(options: TernaryOptions):
    """Train, prune, ternarize and export; returns (Deployment, compress.json dict)."""
    if not isinstance(options, TernaryOptions):
        raise TypeError(f"the ternary family takes TernaryOptions, not {type(options).__name__}")
    check_weight_format(options, WEIGHT_FORMAT)
    with reproducible():
        start = time.monotonic()
        data = Tensors.from_split(load_digits_split(options.spec.act_bits), validation=VALIDATION_FRACTION, seed=options.seed)
        t = train_ternary(options, data)

        # 5. export and evaluate the integer model
        dep = export_ternary(t.model, options.spec, tile_masks=t.pruner.tile_masks(), meta={
            "tile_sparsity_target": options.tile_sparsity, "regularizer": options.regularizer,
            "ternary_threshold": options.ternary_threshold, "zero_budget": options.zero_budget,
            "seed": options.seed, "float_accuracy": t.float_accuracy,
            # only when not the default, so that the default model file stays byte for byte as before
            **({} if options.channels == DEFAULT_CHANNELS else {"channels": list(options.channels)}),
            **recipe_extras(options)})
        sched = options.scaled_schedule
        stats = model_stats(dep)["totals"]
        report = compress_report(
            options, dep, data, float_accuracy=t.float_accuracy, fake_quant_accuracy=t.fake_quant_accuracy,
            sparsity=stats["tile_sparsity"], sparsity_measure="tile_sparsity",
            epochs={"float": sched.float_epochs, "joint": sched.joint_epochs, "finetune": sched.finetune_epochs},
            started=start, family_figures={
                "accuracy_before_prune": t.accuracy_before_prune,
                "accuracy_after_prune": t.accuracy_after_prune,
                "tile_sparsity": stats["tile_sparsity"],
                "validation": t.validation,
                **kept_tile_stats(dep),
            })
    figures = report["ternary"]
    Progress("compress", quiet=options.quiet).note(
        f"float {t.float_accuracy:.4f} -> integer {report['accuracy']:.4f}, tile sparsity {report['sparsity']:.3f}, "
        f"compression {report['compression_ratio']:.1f}x, MAC cycles / ideal {figures['mac_cycle_ratio']:.3f}, "
        f"reference mismatches {report['reference_mismatches']}")
    return dep, report


def average_window(sched: Schedule, span: int) -> int:
    """How many of the last fine-tuning epochs `Schedule.average` averages: at most those that ran with
    the final zero budget (from epoch `span` on), 0 when off."""
    return min(sched.average, sched.finetune_epochs - span + 1) if sched.average else 0


def _set_budgets(model, threshold: float, budget: float, exempt) -> None:
    for name, module, _ in model.weighted_layers():
        for p in module.parametrizations.weight:
            if isinstance(p, TernaryWeight):
                p.ternarizer = Ternarizer(threshold=threshold, zero_budget=1.0 if name in exempt else budget)


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


__all__ = ["WEIGHT_FORMAT", "DEFAULT_SPEC", "OPTIONS", "TernaryOptions", "check_channels", "MAX_CHANNELS", "Schedule",
           "DEFAULT_SCHEDULE", "add_arguments", "options_from_args", "compress", "train_ternary", "Trained", "kept_tile_stats"]
