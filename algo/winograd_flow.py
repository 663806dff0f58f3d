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
(`terwin.algo.winograd_export`). The reported `accuracy` is the NumPy reference's on the test split;
`reference_mismatches` counts test images whose logits from `sim.reference` and from the torch integer
evaluation (`terwin.algo.winograd_int`) differ in any entry.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from terwin.errors import TerwinError

MODES = ("liu", "joint")
DEFAULTS = {
    "mode": "liu",
    "winograd_sparsity": 0.7,
    "spatial_sparsity": 0.5,
    "classifier_sparsity": 0.5,
    "joint_lambda": 1e-2,
    "winograd_epochs_scale": 1.0,
}
# epochs of each stage at --winograd-epochs-scale 1
EPOCHS = {"pretrain": 80, "prune_step": 6, "regularize": 30, "finetune": 15, "qat": 10}
PRUNE_STEPS = (0.5, 0.75, 0.9, 1.0)  # fractions of the target sparsity, Liu mode (iterative pruning)
BATCH = 64


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


def add_arguments(group) -> None:
    group.add_argument("--mode", choices=MODES, default=DEFAULTS["mode"],
                       help="winograd: liu = Winograd-domain weights pruned and retrained (default: prunes exactly the "
                            "weights the hardware multiplies); joint = spatial weights regularised and pruned in both domains")
    group.add_argument("--winograd-sparsity", type=_fraction, default=DEFAULTS["winograd_sparsity"], metavar="F",
                       help=f"winograd: fraction of Winograd-domain weights pruned per 3x3 layer (default {DEFAULTS['winograd_sparsity']})")
    group.add_argument("--spatial-sparsity", type=_fraction, default=DEFAULTS["spatial_sparsity"], metavar="F",
                       help=f"winograd --mode joint: fraction of spatial 3x3 weights pruned (default {DEFAULTS['spatial_sparsity']})")
    group.add_argument("--weight-bits", type=int, default=None, metavar="N",
                       help="winograd: signed bits of the Winograd-domain weights (default: the spec's winograd_weight_bits, 8)")
    group.add_argument("--classifier-sparsity", type=_fraction, default=DEFAULTS["classifier_sparsity"], metavar="F",
                       help=f"winograd: magnitude-pruned fraction of the int8 classifier (default {DEFAULTS['classifier_sparsity']})")
    group.add_argument("--joint-lambda", type=_positive, default=DEFAULTS["joint_lambda"], metavar="F",
                       help=f"winograd --mode joint: lambda of the learnable regularisers (default {DEFAULTS['joint_lambda']:g})")
    group.add_argument("--winograd-epochs-scale", type=_positive, default=DEFAULTS["winograd_epochs_scale"], metavar="F",
                       help="winograd: multiply every training stage's epochs by F (at least 1 each; default 1)")


def options(**overrides) -> argparse.Namespace:
    """An args namespace with this family's defaults (plus seed/quiet), for scripts and tests."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    args.seed, args.quiet = 0, True
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def _check_args(spec, args):
    bits = spec.winograd_weight_bits if args.weight_bits is None else args.weight_bits
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise TerwinError(f"--weight-bits must be an integer from 2 to 16, not {bits!r}")
    for name in ("winograd_sparsity", "spatial_sparsity", "classifier_sparsity"):
        v = getattr(args, name)
        if not 0.0 <= v < 1.0:
            raise TerwinError(f"--{name.replace('_', '-')} must be a fraction in [0, 1), not {v}")
    if args.mode not in MODES:
        raise TerwinError(f"--mode must be one of {', '.join(MODES)}, not {args.mode!r}")
    if spec.weight_format != "winograd":
        raise TerwinError(f"spec {spec.name} has weight_format {spec.weight_format!r}; the Winograd family needs 'winograd'")
    return spec.replace(winograd_weight_bits=bits) if bits != spec.winograd_weight_bits else spec


# -- training helpers ----------------------------------------------------------------------------

def _epochs(stage: str, scale: float) -> int:
    return max(1, int(round(EPOCHS[stage] * scale)))


def _train(net, data, *, epochs: int, lr: float, gen, progress, extra=None, extra_lr: float = 0.05,
           label: str = "train"):
    """Adam with cosine decay; `extra` is a regulariser module added to the loss (its parameters
    get their own learning rate). Masks are re-applied after every step."""
    import torch
    import torch.nn.functional as F

    x, y = data
    params = [p for p in net.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": lr}]
    if extra is not None:
        groups.append({"params": list(extra.parameters()), "lr": extra_lr})
    opt = torch.optim.Adam(groups)
    steps = epochs * math.ceil(len(x) / BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            total += float(loss.detach()) * len(idx)
            if extra is not None:
                loss = loss + extra(net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            net.apply_masks()
        progress(epoch + 1, epochs, stage=label, loss=total / len(x))
    net.eval()


def _accuracy(net, x, y) -> float:
    import torch
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(1) == y).double().mean())


def _calibrate(net, x) -> list[float]:
    import torch
    acts = net.act_quants()
    for a in acts:
        a.enabled, a.observe, a.observed = False, True, []
    net.eval()
    with torch.no_grad():
        net(x)
    scales = []
    for a in acts:
        a.observe = False
        scales.append(a.calibrate())
    return scales


# -- statistics ----------------------------------------------------------------------------------

def winograd_stats(dep) -> dict:
    """Winograd sparsity and multiply counts over the Winograd layers of a Deployment.

    Direct 3x3 conv: 9 * Cin * Cout multiplies per output pixel. F(m x m, 3x3): for every real tile
    (partial tiles at odd edges included), one multiply per nonzero U[o, c, i, j].
    """
    from terwin import winograd
    from terwin.deployment import WinogradConv2d

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
    from terwin.deployment import Conv2d, Linear, MaxPool2d, WinogradConv2d
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

def compress(spec, args):
    """Train, sparsify, quantize and export; returns (Deployment, report dict)."""
    spec = _check_args(spec, args)
    import torch

    from terwin.progress import Progress
    from terwin.sim import reference

    from . import winograd_int
    from .data import INPUT_SCALE, load_digits_split
    from .winograd_export import accumulator_bound, export
    from .winograd_nn import JointPruner, JointRegularizer, PerChannelQuant, WinogradMagnitudePruner, \
        WinogradNet, linear_prune

    t0 = time.monotonic()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    quiet = getattr(args, "quiet", False)
    scale = args.winograd_epochs_scale
    split = load_digits_split()
    xtr, ytr = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    xte, yte = torch.from_numpy(split.x_test), torch.from_numpy(split.y_test)
    data = (xtr, ytr)
    progress = Progress(f"winograd-{args.mode}", quiet=quiet)

    net = WinogradNet(m=spec.winograd_tile, act_bits=spec.act_bits)
    # 1. float spatial pretraining
    _train(net, data, epochs=_epochs("pretrain", scale), lr=3e-3, gen=gen, progress=progress, label="pretrain")
    float_acc = _accuracy(net, xte, yte)
    progress.note(f"float accuracy {float_acc:.4f}")
    s_w, s_s = args.winograd_sparsity, args.spatial_sparsity
    report = {"mode": args.mode, "float_accuracy": float_acc}

    if args.mode == "liu":
        # 2. Winograd-domain parameters, iterative magnitude pruning + masked retraining
        net.set_mode("winograd")
        prune = WinogradMagnitudePruner()
        report["winograd_domain_accuracy"] = _accuracy(net, xte, yte)
        for k, frac in enumerate(PRUNE_STEPS):
            prune(net, s_w * frac)
            linear_prune(net, args.classifier_sparsity * frac)
            _train(net, data, epochs=_epochs("prune_step", scale) if frac < 1 else _epochs("finetune", scale),
                   lr=1e-3, gen=gen, progress=progress, label=f"prune {s_w * frac:.2f}")
        spatial_sparsity = None
    else:
        # 2. spatial weights with both partial-L2 regularisers and learnable coefficients
        reg = JointRegularizer(spatial_sparsity=s_s, winograd_sparsity=s_w, lam=args.joint_lambda)
        _train(net, data, epochs=_epochs("regularize", scale), lr=1e-3, gen=gen, progress=progress,
               extra=reg, label="regularize")
        report["regularized_accuracy"] = _accuracy(net, xte, yte)
        report["joint_coefficients"] = {"exp_alpha": float(reg.alpha.detach().exp()), "exp_beta": float(reg.beta.detach().exp())}
        # 3. prune both domains; the Winograd model is U = mask_W * G (g * mask_S) G^T
        JointPruner()(net, spatial_sparsity=s_s, winograd_sparsity=s_w)
        linear_prune(net, args.classifier_sparsity)
        report["pruned_accuracy_before_finetune"] = _accuracy(net, xte, yte)
        _train(net, data, epochs=_epochs("finetune", scale), lr=1e-3, gen=gen, progress=progress, label="finetune")
        # the spatial model g * mask_S on its own (a direct-conv deployment of the same weights)
        for conv in net.convs():
            conv.mode = "spatial"
        report["spatial_model_accuracy"] = _accuracy(net, xte, yte)
        for conv in net.convs():
            conv.mode = "joint"
        zeros = sum(int((c.spatial_weight() == 0).sum()) for c in net.convs())
        spatial_sparsity = zeros / sum(c.weight.numel() for c in net.convs())
    report["pruned_float_accuracy"] = _accuracy(net, xte, yte)

    # 4. quantization-aware fine-tuning: 8-bit activations, weight_bits Winograd-domain weights, int8 classifier
    report["activation_scales"] = _calibrate(net, xtr)
    for conv in net.convs():
        conv.weight_quant = PerChannelQuant(spec.winograd_weight_bits)
    for fc in net.linears():
        fc.weight_quant = PerChannelQuant(8)
    _train(net, data, epochs=_epochs("qat", scale), lr=3e-4, gen=gen, progress=progress, label="qat")
    report["fake_quant_accuracy"] = _accuracy(net, xte, yte)

    # 5. export and check the integer model
    dep = export(net, spec, input_scale=INPUT_SCALE, class_names=tuple(str(i) for i in range(10)),
                 meta={"family": "winograd", "mode": args.mode})
    from terwin.deployment import WinogradConv2d
    for layer in dep.layers:
        if isinstance(layer, WinogradConv2d):
            bound = accumulator_bound(layer, spec)
            if bound.bit_length() + 1 > 48:
                raise TerwinError(f"{layer.name}: accumulator bound {bound} needs more than 48 bits")
    q = reference.quantize_input(dep, split.x_test)
    ref_logits = reference.forward(dep, q)
    torch_logits = winograd_int.forward(dep, q)
    mismatches = int((ref_logits != torch_logits).any(axis=1).sum())
    accuracy = float((ref_logits.argmax(1) == split.y_test).mean())
    stats = winograd_stats(dep)
    lin = [layer for layer in dep.layers if layer.kind == "linear"]
    report.update({
        "accuracy": accuracy,
        "accuracy_drop_points": 100 * (float_acc - accuracy),
        "winograd_sparsity": stats["winograd_sparsity"],
        "spatial_sparsity": spatial_sparsity,
        "mult_reduction": stats["mult_reduction"],
        "direct_mults": stats["direct_mults"],
        "winograd_mults": stats["winograd_mults"],
        "dense_winograd_mults": stats["dense_winograd_mults"],
        "winograd_layers": stats["layers"],
        "classifier_sparsity": float(np.mean([1 - np.count_nonzero(l.weight) / l.weight.size for l in lin])),
        "target_winograd_sparsity": s_w,
        "target_spatial_sparsity": s_s if args.mode == "joint" else None,
        "weight_bits": spec.winograd_weight_bits,
        "act_bits": spec.act_bits,
        "placement": placement(dep),
        "accumulator_bits": {layer.name: accumulator_bound(layer, spec).bit_length() + 1
                             for layer in dep.layers if isinstance(layer, WinogradConv2d)},
        "reference_mismatches": mismatches,
        "test_images": int(len(split.y_test)),
        "epochs": {k: _epochs(k, scale) for k in EPOCHS},
        "train_seconds": time.monotonic() - t0,
    })
    progress.note(f"accuracy {accuracy:.4f} (float {float_acc:.4f}), winograd sparsity "
                  f"{stats['winograd_sparsity']:.3f}, mult reduction {stats['mult_reduction']:.2f}x, "
                  f"mismatches {mismatches}")
    return dep, report
