"""`terwin compress --family winograd --model FILE.py:FACTORY --data ...`: a user's *plain* network
through the Winograd family (docs/winograd.md, "A user's model").

The Winograd engine runs chains of 3x3, stride-1, padding-1 convolutions with ReLU, max-pools whose
kernel equals their stride, and one linear score layer at the end — the shape of the family's own
`WinogradNet`. A captured graph of that shape (`terwin.algo.graph`; batch norm and conv biases
allowed) is compressed like the built-in net; anything else (a residual connection, a projection,
another kernel or stride, average pooling, a hidden linear layer) is refused before any training in
one line naming the layer, with `--family ternary` as the way to compress it.

1. float training of the captured graph (its own modules, batch norm included; the checkpoint with
   the best accuracy on a validation split of the training images) — skipped with `--weights`;
2. batch norm and biases folded into the convolutions (`fold_bn`), loaded into a `WinogradNet` of
   the same topology, which must compute what the graph computes;
3. the family's stages from there (`terwin.algo.winograd.flow.sparsify`): Winograd-domain sparsity,
   quantization-aware fine-tuning, export, evaluation.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from terwin.deployment import Linear, MaxPool2d, WinogradConv2d
from terwin.errors import TerwinError
from terwin.progress import Progress

from ..data import Split
from ..graph import GraphNet, capture, check_capture, load_weights
from ..options import GraphInputs, check_weight_format
from ..quant import fold_bn
from ..train import BestCheckpoint, Tensors, evaluate, reproducible, train
from .flow import BATCH, EPOCHS, WEIGHT_FORMAT, WinogradOptions, sparsify
from .flow import options_from_args as winograd_options_from_args
from .nn import WinogradNet

ADVICE = "the Winograd engine runs plain chains of 3x3 stride-1 padding-1 convs, max-pools and a last linear; " \
         "compress this model with --family ternary"


@dataclass(frozen=True, kw_only=True)
class GraphOptions(GraphInputs, WinogradOptions):
    """The Winograd family's options for a user's model: those of `WinogradOptions`, what was
    compressed and the validation share (`terwin.algo.options.GraphInputs`)."""


OPTIONS = GraphOptions  # terwin.api builds it from keywords


def options_from_args(args, spec) -> GraphOptions:
    return GraphOptions.from_args(winograd_options_from_args(args, spec), args)


def topology(net: GraphNet) -> tuple:
    """The `WinogradNet` topology of a plain captured graph; a TerwinError naming the first layer the
    Winograd engine cannot run."""
    ops = net.ops
    out = []
    for i, op in enumerate(ops):
        last = i == len(ops) - 1
        if op.residual is not None:
            why = "adds a residual connection"
        elif op.kind == "conv2d" and not op.relu:
            why = "is a projection shortcut (a conv without ReLU)" if not last else "is a conv score layer"
        elif op.kind == "conv2d" and (op.kernel, op.stride, op.padding) != (3, 1, 1):
            why = f"is a {op.kernel}x{op.kernel} stride-{op.stride} padding-{op.padding} conv"
        elif op.kind == "avgpool2d":
            why = "is average pooling"
        elif op.kind == "maxpool2d" and op.kernel != op.stride:
            why = f"is a max-pool of kernel {op.kernel} and stride {op.stride}"
        elif op.kind == "linear" and not last:
            why = "is a linear layer before the last"
        elif last and op.kind != "linear":
            why = "is the last layer, which must be a linear score layer"
        elif op.source != (ops[i - 1].name if i else "@input"):
            why = "reads a map other than the previous layer's"
        else:
            kind = {"conv2d": WinogradConv2d.kind, "maxpool2d": MaxPool2d.kind, "linear": Linear.kind}[op.kind]
            size = op.kernel if op.kind == "maxpool2d" else op.out_shape[0]
            out.append((op.name, kind, size))
            continue
        raise TerwinError(f"{op.name}: {why}; {ADVICE}")
    return tuple(out)


@torch.no_grad()
def to_winograd_net(net: GraphNet, spec) -> WinogradNet:
    """A WinogradNet (spatial mode) holding the float graph's weights, batch norm and biases folded in."""
    wnet = WinogradNet(topology=topology(net), input_shape=net.input_shape, m=spec.winograd_tile,
                       act_bits=spec.act_bits)
    for layer, target in zip(net.layers, wnet.layers):
        op = layer.op
        if op.kind == "conv2d":
            if layer.bn is not None:
                w, b = fold_bn(layer.body.weight, layer.body.bias, layer.bn)
            else:
                w = layer.body.weight.detach().double().numpy()
                b = np.zeros(w.shape[0]) if layer.body.bias is None else layer.body.bias.detach().double().numpy()
            target.weight.copy_(torch.from_numpy(np.asarray(w)))
            target.bias.copy_(torch.from_numpy(np.asarray(b)))
        elif op.kind == "linear":
            target.weight.copy_(layer.body.weight)
            if layer.body.bias is not None:
                target.bias.copy_(layer.body.bias)
            else:
                target.bias.zero_()
    return wnet


@torch.no_grad()
def _check_folded(wnet: WinogradNet, net: GraphNet, x: torch.Tensor) -> None:
    wnet.eval()
    net.eval()
    want, got = net(x), wnet(x)
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
        raise AssertionError("the folded WinogradNet does not compute what the captured graph computes")


def compress(options: GraphOptions, model: torch.nn.Module, data: Split, *, weights=None, on_export=None):
    """Capture, check, train (unless `weights`), fold into a WinogradNet, and run the family's stages
    (`on_export`: see `terwin.algo.winograd.flow.sparsify`)."""
    if not isinstance(options, GraphOptions):
        raise TypeError(f"a user's model takes the Winograd family's GraphOptions, not {type(options).__name__}")
    check_weight_format(options, WEIGHT_FORMAT)
    spec = options.model_spec
    with reproducible():
        t0 = time.monotonic()
        torch.manual_seed(options.seed)
        if not isinstance(model, torch.nn.Module):
            raise TerwinError(f"the model must be a torch.nn.Module, not {type(model).__name__}")
        if weights is not None:
            model = copy.deepcopy(model)
            load_weights(model, weights)
        net = GraphNet(capture(model, data.input_shape), act_bits=spec.act_bits, input_scale=data.input_scale)
        check_capture(net, model)
        topology(net)   # refuse before training
        if net.graph.classes < data.classes:
            raise TerwinError(f"the model outputs {net.graph.classes} scores, but the data has {data.classes} classes")
        gen = torch.Generator().manual_seed(options.seed)
        progress = Progress(f"winograd-{options.mode}", quiet=options.quiet)
        tensors = Tensors.from_split(data, validation=options.validation_fraction, seed=options.seed)
        x_val, y_val = tensors.validation()
        epochs = {k: options.epochs(k) for k in EPOCHS}
        figures = {"validation": {"images": int(len(y_val))}}
        if weights is None:
            best = BestCheckpoint(net, x_val, y_val)
            train(net, tensors, epochs=epochs["pretrain"], lr=3e-3, batch_size=BATCH, generator=gen,
                  lr_decay="cosine", progress=Progress("float", quiet=options.quiet),
                  after_epoch=lambda e, n: best.offer(e))
            best.restore()
            figures["validation"].update(float_epoch=best.epoch + 1, float_accuracy=best.accuracy)
        else:
            epochs["pretrain"] = 0
        wnet = to_winograd_net(net, spec)
        _check_folded(wnet, net, tensors.x_test[:32])
        float_acc = evaluate(wnet, tensors.x_test, tensors.y_test)
        progress.note(f"float accuracy {float_acc:.4f}")
        figures["graph"] = net.graph.describe()
        meta = {"family": "winograd", "mode": options.mode, "model": options.model_ref, "data": options.data_ref,
                "weights": options.weights_ref}
        names = data.class_names if len(data.class_names) == net.graph.classes else \
            tuple(str(i) for i in range(net.graph.classes))
        return sparsify(options, wnet, tensors, gen=gen, progress=progress, float_accuracy=float_acc, started=t0,
                        input_scale=data.input_scale, class_names=names, meta=meta, epochs=epochs, figures=figures,
                        on_export=on_export)


__all__ = ["GraphOptions", "OPTIONS", "options_from_args", "topology", "to_winograd_net", "compress"]
