"""`terwin compress --family ternary --model FILE.py:FACTORY --data ...`: a user's network, compressed
with the family's machinery (docs/ternary.md, "A user's model").

0. capture (`terwin.algo.graph`): the model (with `--weights` loaded, strictly) is traced with torch.fx
   and lowered to the Deployment's layers; anything unsupported is refused here, before any training,
   and so is a model whose integer form would break the model file's limits;
1. float training of the captured graph (`GraphNet`, the model's own modules) — skipped when
   `--weights` gives a state_dict: compression then fine-tunes from it;
2. joint stage: activation fake quantization (an `ActQuant` after each ReLU and each residual
   addition, a signed one after a projection shortcut; `InputQuant` at the input), ternary weights
   (STE), PE-tile masks with Weight Penalty Clipping (or group lasso), gradual pruning (the tiles
   aimed at masked at every ramp epoch, `Schedule.ramp_masks`; per-layer budgets `Schedule.allocation`);
3. prune every conv / linear layer to its share of `--tile-sparsity` (the first layer dense);
4. fine-tune with the zero budget phased in (the first and the score layer exempt), distilled from the
   float model when `Schedule.distill` > 0; the state exported is the best epoch on validation or the
   mean of the last epochs (`Schedule.average`);
5. export a (format-version-2 when it has residuals or average pooling) `Deployment` and evaluate it
   like every family (`terwin.algo.results`).

Every choice made during training — the checkpoint kept from float training and from fine-tuning —
is made on a validation split carved from the training images (`terwin.algo.data.validation_split`,
stratified, seeded), never on the test images, which only the report reads.

API: `compress(GraphOptions(...), model, data, weights=None) -> (Deployment, compress.json dict)`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from terwin.deployment import INPUT, AvgPool2d, Conv2d, Deployment, Linear, MaxPool2d
from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.spec import HardwareSpec
from terwin.stats import model_stats

from ..data import VALIDATION_FRACTION, Split
from ..graph import GraphNet, capture, check_capture, load_weights
from ..options import GraphInputs, check_weight_format
from ..quant import bn_affine, fit_requant, set_quantization
from ..results import compress_report
from ..train import BestCheckpoint, Tensors, WeightAverage, accuracy, reestimate_batchnorm, reproducible, train
from .allocation import sensitivity_allocation
from .export import live_slopes, with_tile_mask
from .net import DEFAULT_CHANNELS
from .flow import WEIGHT_FORMAT, TernaryOptions, _set_budgets, average_window, kept_tile_stats, recipe_extras
from .flow import options_from_args as ternary_options_from_args
from .pruning import REGULARIZERS, TilePruner
from .ternarize import Ternarizer, prepare_ternary, ternary_codes

RESIDUAL_MULTIPLIER_MAX = (1 << 31) - 1


@dataclass(frozen=True, kw_only=True)
class GraphOptions(GraphInputs, TernaryOptions):
    """The ternary family's options for a user's model: those of `TernaryOptions`, what was
    compressed and the validation share (`terwin.algo.options.GraphInputs`), and augment: random
    ±1-pixel shifts during training. `channels` (the built-in net's widths) does not apply: the
    network is the user's, so anything but the default is refused, and compress.json leaves it out."""
    augment: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.channels != DEFAULT_CHANNELS:
            raise TerwinError("--channels sets the widths of the built-in digits net; with --model the network "
                              "is yours (change its widths in FILE.py)")

    def family_options(self) -> dict:
        return {k: v for k, v in super().family_options().items() if k != "channels"}


OPTIONS = GraphOptions  # terwin.api builds it from keywords


def options_from_args(args, spec) -> GraphOptions:
    """`terwin compress --family ternary --model ...`: the family's options plus what was compressed."""
    return GraphOptions.from_args(ternary_options_from_args(args, spec), args)


# -- training --------------------------------------------------------------------------------------


@dataclass
class Trained:
    net: GraphNet
    pruner: TilePruner
    float_accuracy: float
    accuracy_before_prune: float
    accuracy_after_prune: float
    fake_quant_accuracy: float
    validation: dict


def sync_graph_scales(net: GraphNet) -> None:
    """`sync_activation_scales` for a graph: every requantizing layer's output scale at least
    max_o |k_o|·α·s_in, so that no multiplier exceeds 1 (docs/ternary.md, activation scales)."""
    for layer in net.layers:
        op = layer.op
        if not op.weighted or layer.act is None:
            continue
        codes, alpha = ternary_codes(layer.body)
        k = live_slopes(bn_affine(layer.bn)[0], codes) if layer.bn is not None else np.ones(op.out_shape[0])
        bound = float(np.max(np.abs(k) * np.broadcast_to(alpha, k.shape))) * net.scale_of(op.source)
        layer.act.min_scale.fill_(bound)


def train_graph(options: GraphOptions, net: GraphNet, data: Split, *, pretrained: bool) -> Trained:
    """Stages 1-4 on `net` (seeded by the caller). `data`'s test images are only reported on."""
    spec, sched, quiet, threshold = options.spec, options.scaled_schedule, options.quiet, options.ternary_threshold
    gen = torch.Generator().manual_seed(options.seed)
    tensors = Tensors.from_split(data, validation=options.validation_fraction, seed=options.seed)
    x_val, y_val = tensors.validation()

    def fit(epochs: int, lr: float, label: str, **hooks) -> None:
        train(net, tensors, epochs=epochs, lr=lr, batch_size=sched.batch_size, generator=gen,
              lr_decay="cosine-annealing", augment=options.augment, progress=Progress(label, quiet=quiet), **hooks)

    def test_accuracy() -> float:
        return accuracy(net, tensors.x_test, tensors.y_test)

    validation = {"images": int(len(y_val))}
    # 1. float training (or the given weights), the checkpoint with the best validation accuracy
    if not pretrained:
        best = BestCheckpoint(net, x_val, y_val)
        fit(sched.float_epochs, sched.float_lr, "float", after_epoch=lambda e, n: best.offer(e))
        best.restore()
        validation.update(float_epoch=best.epoch + 1, float_accuracy=best.accuracy)
    else:
        validation["float_accuracy"] = accuracy(net, x_val, y_val)
    float_accuracy = test_accuracy()
    Progress("float", quiet=quiet).note(f"test accuracy {float_accuracy:.4f} (validation {validation['float_accuracy']:.4f})")
    teacher = copy.deepcopy(net).eval() if sched.distill > 0 else None   # the float model (Schedule.distill)

    # 2. quantized activations, ternary weights, tile masks, regularizer (gradual pruning)
    set_quantization(net, enabled=True, calibrating=True)
    pruner = TilePruner(spec, target=options.tile_sparsity, criterion=options.prune_criterion,
                        regularizer=REGULARIZERS[options.regularizer](strength=sched.strength))
    pruner.prepare(net.weighted_layers())
    if sched.allocation == "sensitivity":
        validation["prune_counts"] = sensitivity_allocation(net, pruner, x_val, y_val)
    prepare_ternary(net, Ternarizer(threshold=threshold))

    fit(sched.joint_epochs, sched.joint_lr, f"ternary+{options.regularizer}", penalty=pruner.penalty,
        on_epoch=pruner.gradual(sched.prune_ramp, masks=sched.ramp_masks))
    before_prune = accuracy(net, x_val, y_val)

    # 3. prune to the target, freeze the masks
    pruner.step()
    after_prune = accuracy(net, x_val, y_val)

    # 4. fine-tune, the zero budget phased in; the checkpoint kept is the best on validation among
    # the epochs that ran with the final budget (the model exported is the model validated)
    names = [name for name, _, _ in net.weighted_layers()]
    exempt = (names[0], names[-1])
    best = BestCheckpoint(net, x_val, y_val)
    window = average_window(sched, _anneal_span(sched, sched.finetune_epochs))
    averaged = WeightAverage(net)

    def anneal(epoch: int, epochs: int) -> None:
        f = min(1.0, (epoch + 1) / _anneal_span(sched, epochs))
        _set_budgets(net, threshold, 1.0 + f * (options.zero_budget - 1.0), exempt)
        sync_graph_scales(net)

    def choose(epoch: int, epochs: int) -> None:
        if window:
            if epoch >= epochs - window:
                averaged.add()
        elif epoch + 1 >= _anneal_span(sched, epochs):
            if sched.bn_reestimate:   # statistics for the ternary weights as they are (docs/ternary.md)
                reestimate_batchnorm(net, tensors.x_train)
            sync_graph_scales(net)
            best.offer(epoch)

    fit(sched.finetune_epochs, sched.finetune_lr, "fine-tune", on_epoch=anneal, after_epoch=choose, teacher=teacher,
        distill_weight=sched.distill)
    if window:   # the mean of the last `window` epochs' parameters (Schedule.average), statistics re-estimated
        averaged.apply()
        reestimate_batchnorm(net, tensors.x_train)
        validation["averaged_epochs"] = [sched.finetune_epochs - window + 1, sched.finetune_epochs]
    else:
        best.restore()
        validation["finetune_epoch"] = best.epoch + 1
    _set_budgets(net, threshold, options.zero_budget, exempt)
    set_quantization(net, enabled=True, calibrating=False)
    net.eval()
    sync_graph_scales(net)
    validation["accuracy"] = accuracy(net, x_val, y_val)
    fake_quant_accuracy = test_accuracy()
    net.eval()
    return Trained(net, pruner, float_accuracy, before_prune, after_prune, fake_quant_accuracy, validation)


def _anneal_span(sched, epochs: int) -> int:
    return max(1, round(sched.anneal_fraction * epochs))


# -- export ----------------------------------------------------------------------------------------


def _affine(layer, codes) -> tuple[np.ndarray, np.ndarray]:
    """The folded (k, c) of the layer's BN and bias: BN(conv(x) + b) = k·conv(x) + c (a dead
    channel's k tamed, `live_slopes`: its conv(x) is 0, its output c)."""
    out = layer.op.out_shape[0]
    k, c = bn_affine(layer.bn) if layer.bn is not None else (np.ones(out), np.zeros(out))
    bias = getattr(layer.body, "bias", None)
    if bias is not None:
        c = c + k * bias.detach().double().numpy()
    return live_slopes(k, codes), c


def _fit_residual(total: np.ndarray, ratio: float, mult: np.ndarray, shift: np.ndarray):
    """m_r = round(ratio · 2^s) per channel (ratio = s_r / s_out: the residual's scale on the output
    grid); where that leaves signed 32 bits, the shift (and with it m) is lowered until it fits."""
    mult, shift = mult.copy(), shift.copy()
    m_r = np.zeros_like(mult)
    for o in range(len(mult)):
        s = int(shift[o])
        while s > 1 and abs(round(ratio * (1 << s))) > RESIDUAL_MULTIPLIER_MAX:
            s -= 1
        if s != int(shift[o]):
            mult[o], shift[o] = round(float(total[o]) * (1 << s)), s
        m_r[o] = round(ratio * (1 << s))
        if abs(int(m_r[o])) > RESIDUAL_MULTIPLIER_MAX:
            raise TerwinError(f"a residual's scale is {ratio:.3g} times its layer's output scale: too large for "
                              f"a 32-bit residual multiplier")
    return mult, shift, m_r


def export_graph(net: GraphNet, spec: HardwareSpec, *, tile_masks: dict | None = None, meta: dict | None = None,
                 class_names=()) -> Deployment:
    """The integer model of a trained, ternarized GraphNet (eval-mode BN, frozen scales).

    A requantizing layer: with s_in, s_out its input and output scales, α its ternary scale and (k, c)
    its folded BN and bias, multiplier/shift = fit(k·α·s_in / s_out), bias = round(c / (k·α·s_in));
    a residual r of scale s_r adds r·m_r with m_r = round(s_r / s_out · 2^shift). A projection
    (relu false) is a signed map at its own ActQuant's scale; the score layer outputs acc + bias."""
    tile_masks = tile_masks or {}
    layers = []
    previous = INPUT
    last = len(net.layers) - 1
    for i, layer in enumerate(net.layers):
        op = layer.op
        # a plain chain keeps `source` implicit, so a model without graph features stays format version 1
        common = dict(name=op.name, in_shape=op.in_shape, source=None if op.source == previous else op.source)
        s_in = net.scale_of(op.source)
        if op.kind == "maxpool2d":
            out = MaxPool2d(**common, kernel=op.kernel, stride=op.stride)
        elif op.kind == "avgpool2d":
            out = AvgPool2d(**common, kernel=op.kernel, stride=op.stride, multiplier=op.avg[0], shift=op.avg[1])
        else:
            codes, alpha = ternary_codes(layer.body)
            k, c = _affine(layer, codes)
            alpha_ch = np.broadcast_to(alpha, k.shape)
            extra = {}
            if i == last:
                if layer.bn is not None:
                    raise TerwinError(f"{op.name}: the score layer cannot have BatchNorm")
                bias, mult, shift = fit_requant(np.ones_like(c), c, acc_scale=alpha_ch * s_in)
            else:
                s_out = layer.act.scale
                bias, mult, shift = fit_requant(k / s_out, c / s_out, acc_scale=alpha_ch * s_in)
                if op.residual is not None:
                    mult, shift, m_r = _fit_residual(k * alpha_ch * s_in / s_out, net.scale_of(op.residual) / s_out,
                                                     mult, shift)
                    extra = dict(residual=op.residual, residual_multiplier=m_r)
            weights = dict(out_channels=op.out_shape[0], weight=codes, bias=bias, multiplier=mult, shift=shift,
                           relu=op.relu, weight_scale=tuple(float(a) for a in alpha), **extra)
            if op.kind == "conv2d":
                proto = Conv2d(**common, kernel=op.kernel, stride=op.stride, padding=op.padding, **weights)
            else:
                proto = Linear(**common, **weights)
            out = with_tile_mask(proto, spec, tile_masks.get(op.name))
        layers.append(out)
        previous = op.name
    dep = Deployment(spec=spec, input_shape=tuple(net.input_shape), input_scale=float(net.input_scale),
                     layers=tuple(layers), class_names=tuple(class_names), meta={"family": "ternary", **(meta or {})})
    return dep.validate()


def check_limits(net: GraphNet, spec: HardwareSpec) -> None:
    """Refuse, before training, a graph whose model file would break the format's limits (map and
    weight counts, layers): the same validation as the export, on zero weights."""
    layers = []
    previous = INPUT
    for layer in net.layers:
        op = layer.op
        common = dict(name=op.name, in_shape=op.in_shape, source=None if op.source == previous else op.source)
        if op.kind == "maxpool2d":
            out = MaxPool2d(**common, kernel=op.kernel, stride=op.stride)
        elif op.kind == "avgpool2d":
            out = AvgPool2d(**common, kernel=op.kernel, stride=op.stride, multiplier=op.avg[0], shift=op.avg[1])
        else:
            n = op.out_shape[0]
            one = np.ones(n, dtype=np.int64)
            extra = dict(residual=op.residual, residual_multiplier=one) if op.residual else {}
            weights = dict(out_channels=n, bias=0 * one, multiplier=one, shift=one, relu=op.relu, **extra)
            if op.kind == "conv2d":
                w = np.zeros((n, op.in_shape[0], op.kernel, op.kernel), dtype=np.int8)
                out = Conv2d(**common, kernel=op.kernel, stride=op.stride, padding=op.padding, weight=w, **weights)
            else:
                out = Linear(**common, weight=np.zeros((n, int(np.prod(op.in_shape))), dtype=np.int8), **weights)
        layers.append(out)
        previous = op.name
    Deployment(spec=spec, input_shape=tuple(net.input_shape), input_scale=float(net.input_scale),
               layers=tuple(layers)).validate()


# -- the flow --------------------------------------------------------------------------------------


def prepare(model: nn.Module, data: Split, spec: HardwareSpec, *, weights=None) -> GraphNet:
    """Capture and check everything that can be refused without training: the weights (strictly),
    the graph (supported ops), that it computes what the model computes, its classes, the limits."""
    if not isinstance(model, nn.Module):
        raise TerwinError(f"the model must be a torch.nn.Module, not {type(model).__name__}")
    if weights is not None:
        model = copy.deepcopy(model)
        load_weights(model, weights)
    graph = capture(model, data.input_shape)
    net = GraphNet(graph, act_bits=spec.act_bits, input_scale=data.input_scale)
    check_capture(net, model)
    if graph.classes < data.classes:
        raise TerwinError(f"the model outputs {graph.classes} scores, but the data has {data.classes} classes")
    check_limits(net, spec)
    return net


def compress(options: GraphOptions, model: nn.Module, data: Split, *, weights=None):
    """Capture, train (unless `weights`), prune, ternarize and export a user's model; returns
    (Deployment, compress.json dict) with the same keys as the built-in flow."""
    if not isinstance(options, GraphOptions):
        raise TypeError(f"a user's model takes GraphOptions, not {type(options).__name__}")
    check_weight_format(options, WEIGHT_FORMAT)
    with reproducible():
        start = time.monotonic()
        torch.manual_seed(options.seed)
        net = prepare(model, data, options.spec, weights=weights)
        progress = Progress("capture", quiet=options.quiet)
        for line in net.graph.describe():
            progress.note(line)
        t = train_graph(options, net, data, pretrained=weights is not None)
        classes = tuple(str(i) for i in range(net.graph.classes))
        names = data.class_names if len(data.class_names) == len(classes) else classes
        dep = export_graph(t.net, options.spec, tile_masks=t.pruner.tile_masks(), class_names=names, meta={
            "model": options.model_ref, "data": options.data_ref, "weights": options.weights_ref,
            "tile_sparsity_target": options.tile_sparsity, "regularizer": options.regularizer,
            "ternary_threshold": options.ternary_threshold, "zero_budget": options.zero_budget,
            "seed": options.seed, "float_accuracy": t.float_accuracy,
            **recipe_extras(options, cli_defaults=options.augment
                            and options.validation_fraction == VALIDATION_FRACTION)})
        sched = options.scaled_schedule
        stats = model_stats(dep)["totals"]
        report = compress_report(
            options, dep, Tensors.from_split(data), float_accuracy=t.float_accuracy,
            fake_quant_accuracy=t.fake_quant_accuracy, sparsity=stats["tile_sparsity"], sparsity_measure="tile_sparsity",
            epochs={"float": 0 if weights is not None else sched.float_epochs, "joint": sched.joint_epochs,
                    "finetune": sched.finetune_epochs},
            started=start, family_figures={
                "accuracy_before_prune": t.accuracy_before_prune,
                "accuracy_after_prune": t.accuracy_after_prune,
                "tile_sparsity": stats["tile_sparsity"],
                "validation": t.validation,
                "graph": net.graph.describe(),
                **kept_tile_stats(dep),
            })
    Progress("compress", quiet=options.quiet).note(
        f"float {t.float_accuracy:.4f} -> integer {report['accuracy']:.4f}, tile sparsity {report['sparsity']:.3f}, "
        f"compression {report['compression_ratio']:.1f}x, reference mismatches {report['reference_mismatches']}")
    return dep, report


__all__ = ["GraphOptions", "OPTIONS", "options_from_args", "compress", "prepare", "train_graph", "export_graph", "check_limits",
           "sync_graph_scales"]
