"""`terwin compress --family winograd`: train, sparsify (Winograd domain), quantize and export the digits CNN.

Two modes (docs/winograd.md has the method, the choices and the measured numbers):

* ``liu`` (default) — Liu, Pool, Han, Dally (ICLR 2018): after float pretraining, the Winograd-domain
  weights U = G g G^T become the parameters (16 per 3x3 kernel); iterative magnitude pruning of U
  with masked fine-tuning reaches the target Winograd sparsity. It is the default because it prunes
  exactly the weights the hardware multiplies and keeps 16 free values per kernel, so it holds the
  accuracy at the highest Winograd sparsity.
* ``joint`` — Choi, El-Khamy, Lee (2018/2019): the spatial weights g stay the parameters, trained with
  partial L2 regularisers on g (below the spatial-sparsity percentile) and on G g G^T (below the
  Winograd-sparsity percentile) with learnable coefficients (e^a R - lam a); then both domains are pruned
  and the model is fine-tuned with U = mask_W * G (g * mask_S) G^T. The same g * mask_S is a sparse
  spatial model too.

Both then calibrate the 8-bit activation scales, fine-tune with fake-quantized Winograd-domain
weights (per channel, `--weight-bits`) and activations, and export the integer model
(`terwin.algo.winograd.export`), evaluated by `terwin.algo.results` like every family's.

Every choice made during training — the pretraining epoch kept and the quantization-aware epoch kept
(each the best on validation) — is judged on a validation split carved from the training images
(`Tensors.from_split(..., validation=...)`, stratified, seeded by `--seed`); the test images are read
only for the report.

API: `compress(WinogradOptions(...)) -> (Deployment, compress.json dict)`.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from terwin import winograd
from terwin.deployment import Conv2d, Linear, MaxPool2d, WinogradConv2d
from terwin.errors import TerwinError
from terwin.progress import Progress
from terwin.spec import WINOGRAD, HardwareSpec

from ..data import VALIDATION_FRACTION, load_digits_split
from ..options import CompressOptions, check_number, check_weight_format
from ..quant import InputQuant, PerChannelQuant, calibrate_activations
from ..results import compress_report
from ..train import BestCheckpoint, Tensors, evaluate, scaled_epochs, reproducible, train
from .export import accumulator_bits, export
from .masks import JointPruner, JointRegularizer, WinogradMagnitudePruner, linear_prune
from .lowprec import ActivationRegularizer, LowPrecisionRegularizer, combined
from .nn import WinogradNet
from .quantize import QUANTIZERS
from . import quantize

WEIGHT_FORMAT = "winograd"
DEFAULT_SPEC = WINOGRAD
MODES = ("liu", "joint")
# epochs of each stage at --winograd-epochs-scale 1
EPOCHS = {"pretrain": 80, "prune_step": 6, "regularize": 30, "finetune": 15, "qat": 10}
PRUNE_STEPS = (0.5, 0.75, 0.9, 1.0)  # fractions of the target sparsity, Liu mode (iterative pruning)
BATCH = 64
MAX_ACCUMULATOR_BITS = 48


@dataclass(frozen=True, kw_only=True)
class WinogradOptions(CompressOptions):
    """Options of the Winograd family (plus spec, seed, epochs_scale, quiet from `CompressOptions`).

    mode: "liu" or "joint". winograd_sparsity: fraction of Winograd-domain weights pruned per 3x3 layer.
    spatial_sparsity: fraction of spatial 3x3 weights pruned (joint mode). classifier_sparsity:
    magnitude-pruned fraction of the int8 classifier. weight_bits: signed bits of the Winograd-domain
    weights (None: the spec's winograd_weight_bits). joint_lambda: λ of the learnable regularisers.
    """
    spec: HardwareSpec = DEFAULT_SPEC
    mode: str = "liu"
    winograd_sparsity: float = 0.7
    spatial_sparsity: float = 0.5
    classifier_sparsity: float = 0.5
    weight_bits: int | None = None
    joint_lambda: float = 1e-2
    quantizer: str = "uniform"
    ecsq_lambda: float = 16.0
    kmeans_clusters: int = 16
    quant_step: int = 1
    dither_seed: int = 0
    lowprec_lambda: float = 0.0
    lowprec_act_lambda: float = 0.0

    family: ClassVar[str] = "winograd"
    epochs_scale_flag: ClassVar[str] = "--winograd-epochs-scale"

    def __post_init__(self):
        if self.mode not in MODES:
            raise TerwinError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for name in ("winograd_sparsity", "spatial_sparsity", "classifier_sparsity"):
            self._set(name, check_number(getattr(self, name), "--" + name.replace("_", "-"), lo=0, hi=1, hi_open=True))
        if self.weight_bits is not None and (not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 16):
            raise TerwinError(f"--weight-bits must be an integer from 2 to 16, not {self.weight_bits!r}")
        self._set("joint_lambda", check_number(self.joint_lambda, "--joint-lambda", lo=0, hi=math.inf, lo_open=True))
        if self.quantizer not in QUANTIZERS:
            raise TerwinError(f"--quantizer must be one of {', '.join(QUANTIZERS)}, not {self.quantizer!r}")
        self._set("ecsq_lambda", check_number(self.ecsq_lambda, "--ecsq-lambda", lo=0, hi=1e9))
        self._set("lowprec_lambda", check_number(self.lowprec_lambda, "--lowprec-lambda", lo=0, hi=1e6))
        self._set("lowprec_act_lambda", check_number(self.lowprec_act_lambda, "--lowprec-act-lambda", lo=0, hi=1e6))
        for name, lo, hi in (("kmeans_clusters", 1, 1 << 16), ("quant_step", 1, 1 << 15), ("dither_seed", 0, (1 << 63) - 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise TerwinError(f"--{name.replace('_', '-')} must be an integer from {lo} to {hi}, not {value!r}")
        super().__post_init__()

    @property
    def model_spec(self) -> HardwareSpec:
        """The spec the model is exported for: `spec` with winograd_weight_bits = weight_bits."""
        if self.weight_bits is None or self.weight_bits == self.spec.winograd_weight_bits:
            return self.spec
        return self.spec.replace(winograd_weight_bits=self.weight_bits)

    def epochs(self, stage: str) -> int:
        return scaled_epochs(EPOCHS[stage], self.epochs_scale)


OPTIONS = WinogradOptions  # the family's options dataclass (terwin.api builds it from keywords)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), not {text}")
    return v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return v


def _nonnegative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text}")
    return v


def _integer(text: str, lo: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < lo:
        raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, not {text}")
    return v


_count = functools.partial(_integer, lo=1)
_count0 = functools.partial(_integer, lo=0)


def add_arguments(group) -> None:
    d = WinogradOptions
    group.add_argument("--mode", choices=MODES, default=d.mode,
                       help="winograd: liu = Winograd-domain weights pruned and retrained (default: prunes exactly the "
                            "weights the hardware multiplies); joint = spatial weights regularised and pruned in both domains")
    group.add_argument("--winograd-sparsity", type=_fraction, default=d.winograd_sparsity, metavar="F",
                       help=f"winograd: fraction of Winograd-domain weights pruned per 3x3 layer (default {d.winograd_sparsity})")
    group.add_argument("--spatial-sparsity", type=_fraction, default=d.spatial_sparsity, metavar="F",
                       help=f"winograd --mode joint: fraction of spatial 3x3 weights pruned (default {d.spatial_sparsity})")
    group.add_argument("--weight-bits", type=int, default=None, metavar="N",
                       help="winograd: signed bits of the Winograd-domain weights (default: the spec's winograd_weight_bits, 8)")
    group.add_argument("--classifier-sparsity", type=_fraction, default=d.classifier_sparsity, metavar="F",
                       help=f"winograd: magnitude-pruned fraction of the int8 classifier (default {d.classifier_sparsity})")
    group.add_argument("--joint-lambda", type=_positive, default=d.joint_lambda, metavar="F",
                       help=f"winograd --mode joint: lambda of the learnable regularisers (default {d.joint_lambda:g})")
    group.add_argument("--quantizer", choices=QUANTIZERS, default=d.quantizer,
                       help="winograd: requantize the exported integer weights (docs/codecs.md): uniform (default: the "
                            "export's grid, or multiples of --quant-step), ecsq, kmeans, hessian-kmeans, "
                            "importance-kmeans, dithered")
    group.add_argument("--ecsq-lambda", type=_nonnegative, default=d.ecsq_lambda, metavar="F",
                       help=f"winograd --quantizer ecsq: the rate weight lambda (default {d.ecsq_lambda:g})")
    group.add_argument("--kmeans-clusters", type=_count, default=d.kmeans_clusters, metavar="K",
                       help=f"winograd --quantizer *kmeans: nonzero levels per layer (default {d.kmeans_clusters})")
    group.add_argument("--quant-step", type=_count, default=d.quant_step, metavar="K",
                       help="winograd --quantizer uniform|dithered: the step in units of the export's grid (default 1)")
    group.add_argument("--dither-seed", type=_count0, default=d.dither_seed, metavar="N",
                       help="winograd --quantizer dithered: the dither's seed, stored in the model file (default 0)")
    group.add_argument("--lowprec-lambda", type=_nonnegative, default=d.lowprec_lambda, metavar="F",
                       help="winograd: lambda of the learnable low-precision regularizer (arXiv 1809.00095) in the "
                            "last fine-tuning and quantization-aware stages (default 0: off)")
    group.add_argument("--lowprec-act-lambda", type=_nonnegative, default=d.lowprec_act_lambda, metavar="F",
                       help="winograd: lambda of the same regularizer on the activations (their distance to the "
                            "calibrated act_bits grid) in the quantization-aware stage (default 0: off)")
    group.add_argument("--winograd-epochs-scale", type=_positive, default=1.0, metavar="F",
                       help="winograd: multiply every training stage's epochs by F (at least 1 each; default 1)")


def options_from_args(args, spec) -> WinogradOptions:
    """The options of `terwin compress --family winograd ...` (args from the parser `add_arguments` filled)."""
    return WinogradOptions(spec=spec, seed=args.seed, quiet=args.quiet, mode=args.mode,
                           winograd_sparsity=args.winograd_sparsity, spatial_sparsity=args.spatial_sparsity,
                           classifier_sparsity=args.classifier_sparsity, weight_bits=args.weight_bits,
                           joint_lambda=args.joint_lambda, epochs_scale=args.winograd_epochs_scale,
                           quantizer=args.quantizer, ecsq_lambda=args.ecsq_lambda, kmeans_clusters=args.kmeans_clusters,
                           quant_step=args.quant_step, dither_seed=args.dither_seed, lowprec_lambda=args.lowprec_lambda,
                           lowprec_act_lambda=args.lowprec_act_lambda)


# -- statistics ----------------------------------------------------------------------------------

def winograd_stats(dep) -> dict:
    """Winograd sparsity and multiply counts over the Winograd layers of a Deployment.

    Direct 3x3 conv: 9 * Cin * Cout multiplies per output pixel. F(m x m, 3x3): for every real tile
    (partial tiles at odd edges included), one multiply per nonzero U[o, c, i, j].
    """
    direct = wino = dense = zeros = total = 0
    layers = []
    for layer in dep.layers:
        if not isinstance(layer, WinogradConv2d):
            continue
        c_out, ho, wo = layer.out_shape
        c_in = layer.in_shape[0]
        tiles = winograd.tiles_per_side(ho, layer.tile) * winograd.tiles_per_side(wo, layer.tile)
        nnz = int(np.count_nonzero(layer.weight))
        d = 9 * c_in * c_out * ho * wo
        direct += d
        wino += nnz * tiles
        dense += layer.weight.size * tiles
        zeros += layer.weight.size - nnz
        total += layer.weight.size
        layers.append({"name": layer.name, "winograd_sparsity": 1 - nnz / layer.weight.size,
                       "direct_mults": d, "winograd_mults": nnz * tiles,
                       "mult_reduction": d / nnz / tiles if nnz else math.inf})
    return {"winograd_sparsity": zeros / total if total else 0.0,
            "direct_mults": direct, "winograd_mults": wino, "dense_winograd_mults": dense,
            "mult_reduction": direct / wino if wino else math.inf, "layers": layers}


def placement(dep) -> list[dict]:
    """Which engine runs each layer (for the report and docs)."""
    rows = []
    for layer in dep.layers:
        if isinstance(layer, WinogradConv2d):
            where = f"Winograd engine: F({layer.tile}x{layer.tile},3x3), sparse Winograd-domain multiplies, int{layer.weight_bits}"
        elif isinstance(layer, Linear):
            where = f"Winograd engine's multipliers as a sparse int{layer.weight_bits} MAC (integer contract, raw scores)" \
                if not layer.relu else f"sparse int{layer.weight_bits} MAC"
        elif isinstance(layer, Conv2d):
            where = f"sparse int{layer.weight_bits} MAC (direct {layer.kernel}x{layer.kernel} conv, integer contract)"
        elif isinstance(layer, MaxPool2d):
            where = "max-pool on integers"
        else:
            where = "?"
        rows.append({"name": layer.name, "kind": layer.kind, "runs_on": where})
    return rows


# -- the flow ------------------------------------------------------------------------------------

def compress(options: WinogradOptions, *, on_export=None):
    """Train, sparsify, quantize and export; returns (Deployment, compress.json dict). `on_export`:
    see `sparsify`."""
    if not isinstance(options, WinogradOptions):
        raise TypeError(f"the Winograd family takes WinogradOptions, not {type(options).__name__}")
    check_weight_format(options, WEIGHT_FORMAT)
    with reproducible():
        return _compress(options, on_export=on_export)


def _compress(options: WinogradOptions, on_export=None):
    t0 = time.monotonic()
    spec = options.model_spec
    torch.manual_seed(options.seed)
    gen = torch.Generator().manual_seed(options.seed)
    split = load_digits_split(spec.act_bits)
    data = Tensors.from_split(split, validation=VALIDATION_FRACTION, seed=options.seed)
    progress = Progress(f"winograd-{options.mode}", quiet=options.quiet)
    net = WinogradNet(m=spec.winograd_tile, act_bits=spec.act_bits, input_scale=split.input_scale)

    # 1. float spatial pretraining; the epoch kept is the best on validation
    best = BestCheckpoint(net, *data.validation())
    _fit(net, data, options, gen, progress, "pretrain", 3e-3, "pretrain", after_epoch=lambda e, n: best.offer(e))
    best.restore()
    float_acc = evaluate(net, data.x_test, data.y_test)
    progress.note(f"float accuracy {float_acc:.4f} (validation {best.accuracy:.4f})")
    return sparsify(options, net, data, gen=gen, progress=progress, float_accuracy=float_acc, started=t0,
                    input_scale=split.input_scale, class_names=tuple(str(i) for i in range(10)),
                    meta={"family": "winograd", "mode": options.mode},
                    figures={"validation": {"images": int(len(data.y_val)), "float_epoch": best.epoch + 1,
                                            "float_accuracy": best.accuracy}}, on_export=on_export)


def _fit(net: WinogradNet, data: Tensors, options: WinogradOptions, gen, progress, stage: str, lr: float, label: str,
         **extra) -> None:
    train(net, data, epochs=options.epochs(stage), lr=lr, batch_size=BATCH, generator=gen, lr_decay="cosine",
          after_step=net.apply_masks, progress=functools.partial(progress, stage=label), **extra)


def sparsify(options: WinogradOptions, net: WinogradNet, data: Tensors, *, gen: torch.Generator, progress,
             float_accuracy: float, started: float, input_scale: float, class_names, meta: dict,
             epochs: dict | None = None, figures: dict | None = None, on_export=None):
    """Stages 2-5 on a float-trained `net` (spatial mode): Winograd-domain sparsity (Liu) or joint
    regularisation and pruning, quantization-aware fine-tuning (the epoch kept is the best on
    `data`'s validation split, which it must hold), export, the quantizer (`options.quantizer`) and
    evaluation on `data`'s test split. `on_export(net, dep, data)`, when given, is called with the
    trained net and the exported model before the quantizer (`benchmarks/winograd_quantizers.py`
    applies every quantizer to one trained model). Returns (Deployment, compress.json dict)."""
    spec = options.model_spec
    t0, float_acc = started, float_accuracy
    figures = {"mode": options.mode, **(figures or {})}

    def fit(stage: str, lr: float, label: str, **extra) -> None:
        _fit(net, data, options, gen, progress, stage, lr, label, **extra)

    def accuracy() -> float:
        return evaluate(net, data.x_test, data.y_test)

    s_w, s_s = options.winograd_sparsity, options.spatial_sparsity
    lowprec = LowPrecisionRegularizer(net, bits=spec.winograd_weight_bits, lam=options.lowprec_lambda) \
        if options.lowprec_lambda > 0 else None
    # the activations' regularizer needs the calibrated scales: quantization-aware stage only
    lowprec_act = ActivationRegularizer(net, lam=options.lowprec_act_lambda) if options.lowprec_act_lambda > 0 else None

    def regularized(stage: str, lr: float, label: str, **extra) -> None:
        """A fit with the low-precision regularizers that are on (activations: in the "qat" stage)."""
        act = lowprec_act if stage == "qat" else None
        penalty, params = combined([lowprec, act])
        if penalty is not None:
            extra.update(penalty=penalty, penalty_params=params, penalty_lr=0.05)
        with act.recording() if act is not None else contextlib.nullcontext():
            fit(stage, lr, label, **extra)

    if options.mode == "liu":
        # 2. Winograd-domain parameters, iterative magnitude pruning + masked retraining
        net.set_mode("winograd")
        prune = WinogradMagnitudePruner()
        figures["winograd_domain_accuracy"] = accuracy()
        for frac in PRUNE_STEPS:
            prune(net, s_w * frac)
            linear_prune(net, options.classifier_sparsity * frac)
            (fit if frac < 1 else regularized)("prune_step" if frac < 1 else "finetune", 1e-3, f"prune {s_w * frac:.2f}")
        spatial_sparsity = None
    else:
        # 2. spatial weights with both partial-L2 regularisers and learnable coefficients
        reg = JointRegularizer(spatial_sparsity=s_s, winograd_sparsity=s_w, lam=options.joint_lambda)
        fit("regularize", 1e-3, "regularize", penalty=functools.partial(reg, net),
            penalty_params=reg.parameters(), penalty_lr=0.05)
        figures["regularized_accuracy"] = accuracy()
        figures["joint_coefficients"] = {"exp_alpha": float(reg.alpha.detach().exp()),
                                         "exp_beta": float(reg.beta.detach().exp())}
        # 3. prune both domains; the Winograd model is U = mask_W * G (g * mask_S) G^T
        JointPruner()(net, spatial_sparsity=s_s, winograd_sparsity=s_w)
        linear_prune(net, options.classifier_sparsity)
        figures["pruned_accuracy_before_finetune"] = accuracy()
        regularized("finetune", 1e-3, "finetune")
        # the spatial model g * mask_S on its own (a direct-conv deployment of the same weights)
        for conv in net.convs():
            conv.mode = "spatial"
        figures["spatial_model_accuracy"] = accuracy()
        for conv in net.convs():
            conv.mode = "joint"
        zeros = sum(int((c.spatial_weight() == 0).sum()) for c in net.convs())
        spatial_sparsity = zeros / sum(c.weight.numel() for c in net.convs())
    figures["pruned_float_accuracy"] = accuracy()

    # 4. quantization-aware fine-tuning: 8-bit activations, weight_bits Winograd-domain weights, int8 classifier
    figures["activation_scales"] = calibrate_activations(net, data.x_train)
    for q in net.modules():   # the network input on the integer model's grid (exact for 8-bit digits)
        if isinstance(q, InputQuant):
            if q.scale != input_scale:
                raise ValueError(f"the net quantizes its input at scale {q.scale}, the model at {input_scale}")
            q.enabled = True
    for conv in net.convs():
        conv.weight_quant = PerChannelQuant(spec.winograd_weight_bits)
    for fc in net.linears():
        fc.weight_quant = PerChannelQuant(8)
    best = BestCheckpoint(net, *data.validation())
    regularized("qat", 3e-4, "qat", after_epoch=lambda e, n: best.offer(e))
    best.restore()
    figures.setdefault("validation", {}).update(qat_epoch=best.epoch + 1, accuracy=best.accuracy)
    fake_quant_acc = accuracy()

    # 5. export and check the integer model
    dep = export(net, spec, input_scale=input_scale, class_names=tuple(class_names), meta=meta)
    if lowprec is not None:
        figures["lowprec_regularizer"] = lowprec.figures()
    if lowprec_act is not None:
        lowprec_act.measure(data.x_train)  # R on the training images, as the exported model sees them
        figures["lowprec_act_regularizer"] = {**lowprec_act.figures(), "act_bits": spec.act_bits}
    if on_export is not None:
        on_export(net, dep, data)
    dep, figures["quantizer"] = quantize.apply(options, dep, net, data)
    acc_bits = {layer.name: accumulator_bits(layer, spec) for layer in dep.layers if isinstance(layer, WinogradConv2d)}
    for name, bits in acc_bits.items():
        if bits > MAX_ACCUMULATOR_BITS:
            raise TerwinError(f"{name}: accumulators need {bits} bits, more than {MAX_ACCUMULATOR_BITS}")
    stats = winograd_stats(dep)
    lin = [layer for layer in dep.layers if isinstance(layer, Linear)]
    figures.update({
        "spatial_sparsity": spatial_sparsity,
        "mult_reduction": stats["mult_reduction"],
        "direct_mults": stats["direct_mults"],
        "winograd_mults": stats["winograd_mults"],
        "dense_winograd_mults": stats["dense_winograd_mults"],
        "layers": stats["layers"],
        "classifier_sparsity": float(np.mean([1 - np.count_nonzero(l.weight) / l.weight.size for l in lin])),
        "weight_bits": spec.winograd_weight_bits,
        "act_bits": spec.act_bits,
        "placement": placement(dep),
        "accumulator_bits": acc_bits,
    })
    report = compress_report(options, dep, data, float_accuracy=float_acc, fake_quant_accuracy=fake_quant_acc,
                             sparsity=stats["winograd_sparsity"], sparsity_measure="winograd_sparsity",
                             epochs=epochs or {k: options.epochs(k) for k in EPOCHS}, started=t0,
                             family_figures=figures)
    progress.note(f"accuracy {report['accuracy']:.4f} (float {float_acc:.4f}), winograd sparsity "
                  f"{stats['winograd_sparsity']:.3f}, mult reduction {stats['mult_reduction']:.2f}x, "
                  f"mismatches {report['reference_mismatches']}")
    return dep, report


__all__ = ["WEIGHT_FORMAT", "DEFAULT_SPEC", "OPTIONS", "MODES", "EPOCHS", "WinogradOptions", "add_arguments",
           "options_from_args", "compress", "sparsify", "winograd_stats", "placement", "BATCH"]
