"""A user's PyTorch network as a graph terwin can compress: capture with torch.fx, lowering to the
Deployment's layer vocabulary, and `GraphNet`, the trainable (float / fake-quantized) form of it.

Capture (`capture(model, input_shape)`): `torch.fx.symbolic_trace`, shapes by running one image
through the traced graph, then one walk over the nodes that fuses them into the layers of a format-version-2
`Deployment` (docs/ternary.md, "A user's model"):

* `Conv2d` (any square kernel, stride, zero padding; bias or not; groups = 1) → `conv2d`, with a
  following `BatchNorm2d` folded into its requantizer and the ReLU after it (module, `F.relu`,
  `torch.relu`, `.relu()`) ending it: an unsigned map;
* `relu(bn(conv(h)) + shortcut)` (`+`, `+=`, `torch.add`) → the conv's layer with `residual` =
  the shortcut's map: the network input, an unsigned map, or a projection — a conv (+BN) without
  ReLU whose only readers are additions, which becomes a signed map (relu false);
* `MaxPool2d` → `maxpool2d`; `AvgPool2d`, `AdaptiveAvgPool2d(1)` (global) → `avgpool2d`;
* `Flatten`, `torch.flatten(x, 1)`, `.view(N, -1)`, `.reshape(N, -1)` → nothing (a linear layer
  reads its input map flattened in (C, H, W) order); `Linear` → `linear` (+ ReLU: a hidden layer);
* `Dropout`, `Identity`, `F.dropout` → removed (identities at inference);
* the model returns the class scores of a `Linear` (or `Conv2d`) without BatchNorm and ReLU: the score
  layer (relu false, last).

Anything else — another activation, a grouped or dilated conv, a recurrent layer, data-dependent
control flow (fx cannot trace it), an addition that cannot be fused that way — is refused before any
training: one `TerwinError` line naming the module path and the op, and what is supported.

`GraphNet(graph)` runs the captured layers with the model's own modules (conv, BN, linear), an
`InputQuant` at the input and an `ActQuant` after each requantizing layer (signed for a projection);
the compression families train and export it like their built-in nets.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import math
import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from terwin import intmath
from terwin.deployment import INPUT, conv_out_size
from terwin.errors import TerwinError
from terwin.safeio import open_regular

from .quant import ActQuant, InputQuant, fake_quantize, round_half_up_ste

SUPPORTED = ("supported: Conv2d (square kernel, zero padding, groups=1) with optional BatchNorm2d, ReLU, "
             "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Flatten/view, Linear, Dropout, Identity, and "
             "relu(bn(conv(x)) + shortcut) with the shortcut a map or a conv (+BN) projection")
MAX_WEIGHTS_BYTES = 2 << 30  # a --weights file


class CaptureError(TerwinError):
    """A model terwin cannot compress: one line naming the module path and the op."""


# -- loading a user's model and weights -----------------------------------------------------------


def load_model(ref: str, *, seed: int | None = None) -> nn.Module:
    """`FILE.py:FACTORY` -> the nn.Module that FACTORY() returns (FILE loaded with importlib by path),
    with torch's global RNG seeded by `seed` first, so that its initial weights are reproducible.
    A missing file or factory, a file that fails to load, a factory that raises or returns something
    else than a Module: one TerwinError line."""
    path, sep, name = str(ref).rpartition(":")
    if not sep or not path or not name:
        raise TerwinError(f"--model must be FILE.py:FACTORY (a Python file and the function in it that returns "
                          f"the torch.nn.Module), not {ref!r}")
    with open_regular(path, what="Python file"):
        pass
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:12]
    module_name = f"terwin_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise TerwinError(f"{path}: not a Python file importlib can load")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # as `python FILE.py` would: the file's folder first on the module path while it loads and its
    # factory runs, so it can import the modules beside it
    folder = str(Path(path).resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        try:
            spec.loader.exec_module(module)
        except BaseException as e:  # the user's file: any error is theirs, reported in one line
            sys.modules.pop(module_name, None)
            if isinstance(e, KeyboardInterrupt):
                raise
            raise TerwinError(f"{path}: loading it failed: {_one_line(e)}") from None
        factory = getattr(module, name, None)
        if factory is None:
            raise TerwinError(f"{path}: has no {name!r} (the factory --model names)")
        if not callable(factory):
            raise TerwinError(f"{path}: {name} is a {type(factory).__name__}, not a function returning the model")
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory()
        except Exception as e:
            raise TerwinError(f"{path}: {name}() raised {_one_line(e)}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    if not isinstance(model, nn.Module):
        raise TerwinError(f"{path}: {name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, weights) -> None:
    """Load a state_dict (a mapping, or a file saved with `torch.save(model.state_dict(), FILE)`,
    read with `torch.load(weights_only=True)`) into `model`, strictly: a missing, unexpected or
    misshapen key is one TerwinError line naming the first."""
    where = "--weights"
    if not isinstance(weights, Mapping):
        where = str(weights)
        with open_regular(weights, what="state_dict file") as (f, size):
            if size > MAX_WEIGHTS_BYTES:
                raise TerwinError(f"{where}: {size:,} bytes, more than the limit of {MAX_WEIGHTS_BYTES:,}")
            try:
                weights = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:
                raise TerwinError(f"{where}: not a state_dict torch.load(weights_only=True) can read: "
                                  f"{_one_line(e)}") from None
    if not isinstance(weights, Mapping) or not all(isinstance(k, str) for k in weights):
        raise TerwinError(f"{where}: holds a {type(weights).__name__}, not a state_dict (save model.state_dict())")
    expected = model.state_dict()
    for key in expected:
        if key not in weights:
            raise TerwinError(f"{where}: no {key!r}, which the model has (the first missing key)")
    for key, value in weights.items():
        if key not in expected:
            raise TerwinError(f"{where}: {key!r} is not a parameter or buffer of the model (the first unexpected key)")
        if not isinstance(value, torch.Tensor):
            raise TerwinError(f"{where}: {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise TerwinError(f"{where}: {key!r} has shape {tuple(value.shape)}, the model's has "
                              f"{tuple(expected[key].shape)}")
    model.load_state_dict(weights, strict=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# -- the lowered graph ----------------------------------------------------------------------------


@dataclass
class Op:
    """One layer of the lowered graph (a Deployment layer before its integers are known).

    kind: "conv2d", "linear", "maxpool2d" or "avgpool2d"; name: the layer name (the module path of a
    conv / linear / pool module, the fx node name of a functional pool); source / residual: map names
    (INPUT or an earlier op's name); module / bn: paths into the model; relu: True = unsigned map,
    False = a signed map (a projection) or, on the last op, the class scores."""
    kind: str
    name: str
    source: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    module: str | None = None
    bn: str | None = None
    residual: str | None = None
    relu: bool = True
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    avg: tuple[int, int] | None = None   # avgpool2d: (multiplier, shift), multiplier / 2^shift ≈ 1 / kernel²

    @property
    def weighted(self) -> bool:
        return self.kind in ("conv2d", "linear")


@dataclass
class Graph:
    """The captured model: its ops in execution order, and the model whose modules they name."""
    model: nn.Module
    input_shape: tuple[int, int, int]
    ops: list[Op] = field(default_factory=list)

    def module(self, path: str) -> nn.Module:
        return self.model.get_submodule(path)

    @property
    def classes(self) -> int:
        return self.ops[-1].out_shape[0]

    @property
    def has_residual(self) -> bool:
        return any(op.residual is not None for op in self.ops)

    def describe(self) -> list[str]:
        """One line per op, for progress output and compress.json."""
        lines = []
        for op in self.ops:
            extra = f" + {op.residual}" if op.residual else ""
            act = "relu" if op.relu else ("scores" if op is self.ops[-1] else "signed")
            what = f"{op.kind}({op.source}{extra})"
            if op.weighted:
                what += f" {act}"
            lines.append(f"{op.name}: {what} {'x'.join(map(str, op.in_shape))} -> {'x'.join(map(str, op.out_shape))}")
        return lines


@dataclass
class _Map:
    """A materialised map: the network input or an op's output. flat: torch holds it as [N, F]."""
    name: str
    shape: tuple[int, int, int]
    signed: bool = False
    flat: bool = False


@dataclass
class _Open:
    """A conv / linear whose requantizer is not placed yet (waiting for BN, an addition, a ReLU)."""
    op: Op
    origin: str   # module path of the conv / linear, for messages


class _Meta:
    """A non-tensor value (x.size(), x.shape[0]) only used as an argument of view/reshape."""


class _Tracer(fx.Tracer):
    """symbolic_trace that remembers the module it is inside, to name it when tracing fails."""

    def __init__(self):
        super().__init__()
        self.path: list[str] = []

    def call_module(self, m, forward, args, kwargs):
        self.path.append(self.path_of_module(m))
        out = super().call_module(m, forward, args, kwargs)
        self.path.pop()  # left in place when tracing fails inside: the error names the innermost module
        return out


def _where(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack)) if stack else "forward"


def _op_name(node: fx.Node, modules) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    if name == "fn" and target is F.max_pool2d:
        name = "max_pool2d"
    prefix = "F." if "functional" in mod else "operator." if mod == "_operator" else "torch." if "torch" in mod or not mod else ""
    return f"{prefix}{name}"


def capture(model: nn.Module, input_shape) -> Graph:
    """Trace `model` (a deep copy of it is what the graph holds and later training changes) for
    images of `input_shape` (C, H, W) and lower it (module docstring); CaptureError when it cannot."""
    model = copy.deepcopy(model)
    input_shape = tuple(int(v) for v in input_shape)
    tracer = _Tracer()
    try:
        fx_graph = tracer.trace(model)
    except Exception as e:
        where = tracer.path[-1] if tracer.path else "forward"
        raise CaptureError(f"{where or 'forward'}: torch.fx cannot trace the model ({_one_line(e)}); data-dependent "
                           f"control flow and other untraceable Python are not supported; {SUPPORTED}") from None
    gm = fx.GraphModule(model, fx_graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    lowering = _Lowering(gm, Graph(model=model, input_shape=input_shape))
    lowering.precheck()   # unsupported modules and functions first: they may not even run on the shapes
    was = model.training
    model.eval()
    shapes = _Shapes(gm)
    try:
        with torch.no_grad():
            shapes.run(torch.zeros(1, *input_shape))
    except Exception as e:
        where = _where(shapes.node) if shapes.node is not None else "forward"
        raise CaptureError(f"{where}: the model cannot run on images of shape {'x'.join(map(str, input_shape))} "
                           f"(the data's): {_one_line(e)}") from None
    finally:
        model.train(was)
    lowering.run()
    return lowering.graph


class _Shapes(fx.Interpreter):
    """Runs the traced model once and records every tensor's shape in node.meta["shape"]; `node` is
    the node being run (the one that failed, after an error)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.node = None

    def run_node(self, n: fx.Node):
        self.node = n
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            n.meta["shape"] = tuple(int(v) for v in result.shape)
        return result


class _Lowering:
    def __init__(self, gm: fx.GraphModule, graph: Graph):
        self.gm = gm
        self.graph = graph
        self.modules = dict(gm.named_modules())
        self.values: dict[fx.Node, object] = {}
        self.names: set[str] = {INPUT}
        self.called: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------

    def refuse(self, node: fx.Node, why: str):
        raise CaptureError(f"{_where(node)}: {_op_name(node, self.modules)} {why}; {SUPPORTED}")

    def shape(self, node: fx.Node) -> tuple:
        return node.meta.get("shape", ())

    def chw(self, node: fx.Node) -> tuple[int, int, int]:
        s = self.shape(node)
        if len(s) == 4:
            return tuple(int(v) for v in s[1:])
        if len(s) == 2:
            return (int(s[1]), 1, 1)
        self.refuse(node, f"makes a tensor of shape {s}, not [N, C, H, W] or [N, features]")

    def value(self, node: fx.Node, arg) -> object:
        if not isinstance(arg, fx.Node):
            self.refuse(node, f"takes a constant ({type(arg).__name__}) where a tensor is expected")
        return self.values[arg]

    def map_of(self, node: fx.Node, arg, *, flat_ok: bool = False, unsigned: bool = True) -> _Map:
        v = self.value(node, arg)
        if isinstance(v, _Open):
            self.refuse(node, f"reads the output of {v.origin} before a ReLU (a conv or linear output is only read "
                              f"through a ReLU, or by a residual addition)")
        if not isinstance(v, _Map):
            self.refuse(node, "reads a value that is not an activation map")
        if v.signed and unsigned:
            self.refuse(node, f"reads {v.name}, a conv without ReLU that is also added as a shortcut; such a map "
                              f"may only be a shortcut")
        if v.flat and not flat_ok:
            self.refuse(node, "reads a flattened tensor (only Linear reads one)")
        return v

    def unique(self, name: str) -> str:
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}#{n}"
        self.names.add(name)
        return name

    def emit(self, op: Op) -> _Map:
        self.graph.ops.append(op)
        return _Map(op.name, op.out_shape, signed=op.kind == "conv2d" and not op.relu, flat=op.kind == "linear")

    def close(self, node: fx.Node, opened: _Open, *, relu: bool) -> _Map:
        """Place the requantizer of an open conv / linear."""
        opened.op.relu = relu
        return self.emit(opened.op)

    def single_user(self, node: fx.Node, producer: fx.Node, opened: _Open):
        if len(producer.users) != 1:
            self.refuse(node, f"reads the output of {opened.origin}, which another op reads too before a ReLU")

    # -- the walk --------------------------------------------------------------------------------

    def precheck(self) -> None:
        """Refuse any module type, function or method the walk does not know, in node order."""
        for node in self.gm.graph.nodes:
            if node.op == "call_module" and not isinstance(self.modules[node.target], MODULES):
                self.refuse(node, "is not supported")
            elif node.op == "call_function" and node.target not in FUNCTIONS:
                self.refuse(node, "is not supported")
            elif node.op == "call_method" and node.target not in METHODS:
                self.refuse(node, "is not supported")

    def run(self) -> None:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if any(isinstance(v, _Map) and v.name == INPUT for v in self.values.values()):
                    self.refuse(node, "is a second input (a model takes one image tensor)")
                self.values[node] = _Map(INPUT, self.graph.input_shape)
            elif node.op == "get_attr":
                raise CaptureError(f"{_where(node)}: reads the tensor {node.target} directly (only modules' own "
                                   f"parameters are supported); {SUPPORTED}")
            elif node.op == "call_module":
                self.values[node] = self.call_module(node)
            elif node.op == "call_function":
                self.values[node] = self.call_function(node)
            elif node.op == "call_method":
                self.values[node] = self.call_method(node)
            elif node.op == "output":
                output = node
        self.finish(output)

    def call_module(self, node: fx.Node):
        m = self.modules[node.target]
        x = node.args[0] if node.args else None
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Identity)):
            return self.value(node, x)
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m)
        if isinstance(m, nn.Linear):
            return self.linear(node, m)
        if isinstance(m, nn.BatchNorm2d):
            return self.batchnorm(node, m)
        if isinstance(m, nn.ReLU):
            return self.relu(node, x)
        if isinstance(m, nn.MaxPool2d):
            return self.pool(node, "maxpool2d", m.kernel_size, m.stride, m.padding, dilation=m.dilation,
                             ceil_mode=m.ceil_mode, extra=m.return_indices and "return_indices=True")
        if isinstance(m, nn.AvgPool2d):
            return self.pool(node, "avgpool2d", m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode,
                             extra=m.divisor_override is not None and "divisor_override")
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.global_pool(node, m.output_size)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        self.refuse(node, "is not supported")

    def call_function(self, node: fx.Node):
        t, args, kw = node.target, node.args, node.kwargs
        if t in (F.relu, torch.relu, torch.relu_, F.relu_):
            return self.relu(node, args[0])
        if t in (operator.add, operator.iadd, torch.add):
            if kw.get("alpha", 1) != 1 or len(args) > 2:
                self.refuse(node, "with alpha is not supported")
            return self.add(node, *args[:2]) if len(args) >= 2 else self.add(node, args[0], kw.get("other"))
        if t in (F.dropout, torch.dropout, F.dropout2d):
            return self.value(node, args[0])
        if t is torch.flatten:
            a = _bind(args, kw, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
            return self.flatten(node, a["input"], a["start_dim"], a["end_dim"])
        if t is F.max_pool2d:
            a = _bind(args, kw, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                      {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
            return self.pool(node, "maxpool2d", a["kernel_size"], a["stride"], a["padding"], dilation=a["dilation"],
                             ceil_mode=a["ceil_mode"], extra=a["return_indices"] and "return_indices=True", x=a["input"])
        if t is F.avg_pool2d:
            a = _bind(args, kw, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override"),
                      {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                       "divisor_override": None})
            return self.pool(node, "avgpool2d", a["kernel_size"], a["stride"], a["padding"], ceil_mode=a["ceil_mode"],
                             extra=a["divisor_override"] is not None and "divisor_override", x=a["input"])
        if t is F.adaptive_avg_pool2d:
            a = _bind(args, kw, ("input", "output_size"), {})
            return self.global_pool(node, a["output_size"], x=a["input"])
        if t is getattr or t is operator.getitem:
            base = args[0]
            if isinstance(base, fx.Node) and (isinstance(self.values.get(base), _Meta) or
                                              (t is getattr and args[1] == "shape")):
                return self.meta_only(node)
            self.refuse(node, "indexes a tensor (slicing and indexing are not supported)")
        self.refuse(node, "is not supported")

    def call_method(self, node: fx.Node):
        t, args, kw = node.target, node.args, node.kwargs
        if t in ("relu", "relu_"):
            return self.relu(node, args[0])
        if t in ("add", "add_"):
            if kw.get("alpha", 1) != 1:
                self.refuse(node, "with alpha is not supported")
            return self.add(node, args[0], args[1] if len(args) > 1 else kw.get("other"))
        if t == "size" or t == "dim":
            return self.meta_only(node)
        if t in ("view", "reshape", "flatten"):
            if t == "flatten":
                a = _bind(args, kw, ("self", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
                return self.flatten(node, a["self"], a["start_dim"], a["end_dim"])
            return self.flatten(node, args[0], None, None)
        if t == "contiguous":
            return self.value(node, args[0])
        self.refuse(node, "is not supported")

    def meta_only(self, node: fx.Node):
        """A size or shape, fine when only view/reshape use it."""
        for user in node.users:
            ok = (user.op == "call_method" and user.target in ("view", "reshape", "size")) or \
                 (user.op == "call_function" and user.target is operator.getitem)
            if not ok:
                self.refuse(user, "computes with a tensor's size (only view/reshape may use it)")
        return _Meta()

    # -- ops ---------------------------------------------------------------------------------------

    def conv(self, node: fx.Node, m: nn.Conv2d):
        if node.target in self.called:
            self.refuse(node, "is called twice (a module's weights are used once)")
        self.called.add(node.target)
        k = _square(m.kernel_size)
        stride = _square(m.stride)
        pad = m.padding
        if isinstance(pad, str):
            pad = 0 if pad == "valid" else ((k - 1) // 2 if k % 2 == 1 and stride == 1 else None)
        else:
            pad = _square(pad)
        if m.groups != 1:
            self.refuse(node, f"with groups={m.groups} (a grouped or depthwise convolution) is not supported")
        if k is None or stride is None or pad is None or _square(m.dilation) != 1:
            self.refuse(node, f"with kernel {m.kernel_size}, stride {m.stride}, padding {m.padding}, dilation "
                              f"{m.dilation} is not supported (square kernel and stride, symmetric padding, no dilation)")
        if m.padding_mode != "zeros":
            self.refuse(node, f"with padding_mode={m.padding_mode!r} is not supported (zeros only)")
        src = self.map_of(node, node.args[0])
        out = self.chw(node)
        if out != (m.out_channels, conv_out_size(src.shape[1], k, stride, pad), conv_out_size(src.shape[2], k, stride, pad)):
            self.refuse(node, f"produces {out}, not what a {k}x{k} stride-{stride} conv gives on {src.shape}")
        op = Op("conv2d", self.unique(str(node.target)), src.name, src.shape, out, module=str(node.target),
                kernel=k, stride=stride, padding=pad)
        return _Open(op, str(node.target))

    def linear(self, node: fx.Node, m: nn.Linear):
        if node.target in self.called:
            self.refuse(node, "is called twice (a module's weights are used once)")
        self.called.add(node.target)
        src = self.map_of(node, node.args[0], flat_ok=True)
        if not src.flat:
            self.refuse(node, f"reads a {len(self.shape(node.args[0]))}-D map; flatten it first "
                              f"(torch.flatten(x, 1), nn.Flatten() or x.view(x.size(0), -1))")
        op = Op("linear", self.unique(str(node.target)), src.name, src.shape, (m.out_features, 1, 1),
                module=str(node.target))
        return _Open(op, str(node.target))

    def batchnorm(self, node: fx.Node, m: nn.BatchNorm2d):
        if node.target in self.called:
            self.refuse(node, "is called twice (a module's statistics are used once)")
        self.called.add(node.target)
        prev = node.args[0]
        v = self.value(node, prev)
        if not isinstance(v, _Open) or v.op.kind != "conv2d" or v.op.bn is not None or v.op.residual is not None:
            self.refuse(node, "is only supported right after a Conv2d (folded into it)")
        if m.running_mean is None or m.running_var is None:
            self.refuse(node, "without running statistics (track_running_stats=False) cannot be folded")
        self.single_user(node, prev, v)
        v.op.bn = str(node.target)
        return v

    def relu(self, node: fx.Node, x):
        v = self.value(node, x)
        if isinstance(v, _Open):
            self.single_user(node, x, v)
            return self.close(node, v, relu=True)
        if isinstance(v, _Map) and not v.signed:
            return v   # an unsigned map (or the non-negative input): the ReLU changes nothing
        self.refuse(node, "reads a value it cannot lower")

    def add(self, node: fx.Node, a, b):
        if not isinstance(a, fx.Node) or not isinstance(b, fx.Node):
            self.refuse(node, "adds a constant (only two branches of the network may be added)")
        va, vb = self.values[a], self.values[b]
        if self.shape(a) != self.shape(b) or self.shape(a) != self.shape(node):
            self.refuse(node, f"adds maps of shapes {self.shape(a)} and {self.shape(b)} (no broadcasting)")

        def main_candidate(arg, v):
            return isinstance(v, _Open) and v.op.kind == "conv2d" and v.op.residual is None and len(arg.users) == 1

        if main_candidate(a, va):
            main, other, other_node = va, vb, b
        elif main_candidate(b, vb):
            main, other, other_node = vb, va, a
        else:
            self.refuse(node, "needs one operand computed by a Conv2d (+BatchNorm2d) without ReLU and read only "
                              "by this addition: the layer the addition is fused into")
        if isinstance(other, _Open):
            # a projection shortcut: a conv (+BN) without ReLU whose readers are all additions -> a signed map
            if other.op.kind != "conv2d" or other.op.residual is not None:
                self.refuse(node, f"adds the output of {other.origin}, which is neither a map nor a conv (+BN) "
                                  f"projection")
            for user in other_node.users:
                if not _is_add(user):
                    self.refuse(user, f"reads the projection {other.origin} (a conv without ReLU added as a "
                                      f"shortcut), which only additions may read")
            other = self.close(node, other, relu=False)
            self.values[other_node] = other
        elif not isinstance(other, _Map) or other.flat:
            self.refuse(node, "adds a value that is not an activation map")
        main.op.residual = other.name
        return main

    def pool(self, node: fx.Node, kind: str, kernel, stride, padding, *, dilation=1, ceil_mode=False, extra=None,
             x=None):
        x = node.args[0] if x is None else x
        src = self.map_of(node, x)
        k = _square(kernel)
        s = k if stride is None or stride == [] or stride == () else _square(stride)
        if extra:
            self.refuse(node, f"with {extra} is not supported")
        if k is None or s is None or _square(padding) != 0 or _square(dilation) != 1:
            self.refuse(node, f"with kernel {kernel}, stride {stride}, padding {padding} is not supported "
                              f"(square kernel and stride, no padding, no dilation)")
        out = self.chw(node)
        expected = (src.shape[0], conv_out_size(src.shape[1], k, s, 0), conv_out_size(src.shape[2], k, s, 0))
        if out != expected:
            self.refuse(node, f"with ceil_mode gives {out}, not {expected}" if ceil_mode else
                        f"produces {out}, not {expected}")
        name = self.unique(str(node.target) if node.op == "call_module" else node.name)
        avg = intmath.fit_multiplier(1.0 / (k * k)) if kind == "avgpool2d" else None
        return self.emit(Op(kind, name, src.name, src.shape, out, kernel=k, stride=s, avg=avg))

    def global_pool(self, node: fx.Node, output_size, *, x=None):
        x = node.args[0] if x is None else x
        src = self.map_of(node, x)
        if _square(output_size) != 1:
            self.refuse(node, f"with output size {output_size} is not supported (only 1: global average pooling)")
        _, h, w = src.shape
        if h != w:
            self.refuse(node, f"on a {h}x{w} map is not supported (global pooling of square maps)")
        name = self.unique(str(node.target) if node.op == "call_module" else node.name)
        return self.emit(Op("avgpool2d", name, src.name, src.shape, (src.shape[0], 1, 1), kernel=h, stride=h,
                            avg=intmath.fit_multiplier(1.0 / (h * h))))

    def flatten(self, node: fx.Node, x, start_dim, end_dim):
        in_shape = self.shape(x) if isinstance(x, fx.Node) else ()
        out_shape = self.shape(node)
        if len(in_shape) < 2 or out_shape != (in_shape[0], math.prod(in_shape[1:])):
            self.refuse(node, f"turns {tuple(in_shape)} into {tuple(out_shape)}; only flattening each image "
                              f"(to [N, C·H·W]) is supported")
        v = self.value(node, x)
        if isinstance(v, _Open) and v.op.kind == "conv2d" and list(node.users) and \
                all(u.op == "output" for u in node.users) and len(x.users) == 1:
            return v   # the scores of a conv, flattened: the model's output
        src = self.map_of(node, x, flat_ok=True)
        return _Map(src.name, src.shape, flat=True)

    def finish(self, output: fx.Node | None) -> None:
        result = output.args[0] if output is not None else None
        if not isinstance(result, fx.Node):
            raise CaptureError(f"forward: the model must return one tensor of class scores; {SUPPORTED}")
        v = self.values.get(result)
        if isinstance(v, _Open) and v.op.bn is None and v.op.residual is None and len(result.users) == 1:
            if len(self.shape(result)) != 2:
                self.refuse(result, f"gives the model's output of shape {self.shape(result)}; the class scores "
                                    f"are [N, classes] (flatten a conv's scores)")
            v.op.relu = False
            self.graph.ops.append(v.op)
            return
        if isinstance(v, _Open):
            why = "with BatchNorm" if v.op.bn else "with a residual addition" if v.op.residual else "read twice"
            raise CaptureError(f"{v.origin}: the model's output (the class scores) comes from {v.origin} {why}; "
                               f"the score layer is a Linear (or Conv2d) without BatchNorm, ReLU or residual")
        raise CaptureError(f"{_where(result)}: the model's output must be the class scores of a Linear (or Conv2d) "
                           f"without ReLU, not {_op_name(result, self.modules)}'s output; {SUPPORTED}")


MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
           nn.Linear, nn.Dropout, nn.Dropout2d, nn.Identity)
FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_, operator.add, operator.iadd, torch.add, F.dropout, torch.dropout,
             F.dropout2d, torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, getattr, operator.getitem)
METHODS = ("relu", "relu_", "add", "add_", "size", "dim", "view", "reshape", "flatten", "contiguous")


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)) or \
           (node.op == "call_method" and node.target in ("add", "add_"))


def _square(v):
    """An int from an int or a pair of equal ints; None otherwise."""
    if isinstance(v, (tuple, list)):
        if len(v) == 2 and v[0] == v[1] and isinstance(v[0], int):
            return int(v[0])
        if len(v) == 1 and isinstance(v[0], int):
            return int(v[0])
        return None
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _bind(args, kwargs, names, defaults) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


# -- the trainable graph ------------------------------------------------------------------------------


class _Layer(nn.Module):
    """One op with the model's modules: conv/linear (+ BN), the ActQuant after its requantizer."""

    def __init__(self, op: Op, graph: Graph, *, act_bits: int, last: bool):
        super().__init__()
        self.op = op
        self.act_bits = act_bits
        if op.weighted:
            self.body = graph.module(op.module)
            self.bn = graph.module(op.bn) if op.bn else None
            if last:
                self.act = None
            else:
                self.act = ActQuant(act_bits, calibration="ema-max", signed=not op.relu)

    def forward(self, x, residual=None, *, scale=None):
        op = self.op
        if op.kind == "maxpool2d":
            return F.max_pool2d(x, op.kernel, op.stride)
        if op.kind == "avgpool2d":
            return _average(x, op, scale, act_bits=self.act_bits)
        if op.kind == "linear":
            y = self.body(x.flatten(1))
            y = y[:, :, None, None]
        else:
            y = self.body(x)
        if self.bn is not None:
            y = self.bn(y)
        if residual is not None:
            y = y + residual
        if op.relu:
            y = F.relu(y)
        return y if self.act is None else self.act(y)


def _average(x: torch.Tensor, op: Op, scale, *, act_bits: int) -> torch.Tensor:
    """Float average pooling; on a quantized map (`scale`: the float value of one unit) the integer
    rule instead: round half up of (window sum · m / 2^s), clamped (straight-through)."""
    y = F.avg_pool2d(x, op.kernel, op.stride)
    if scale is None:
        return y
    m, s = op.avg
    units = y * (op.kernel * op.kernel) / scale * (m / (1 << s))
    return torch.clamp(round_half_up_ste(units), 0, (1 << act_bits) - 1) * scale


class GraphNet(nn.Module):
    """The captured graph, trainable: float, then with fake quantization (`set_quantization`) and
    ternary (or other) weight parametrizations on the model's conv / linear modules.

    forward(x [N, C, H, W]) -> class scores [N, classes]. `input_scale`: the data's input quantization
    (the InputQuant). act_bits: the width of every ActQuant."""

    def __init__(self, graph: Graph, *, act_bits: int, input_scale: float):
        super().__init__()
        self.graph = graph
        self.input_shape = graph.input_shape
        self.input_scale = float(input_scale)
        self.act_bits = act_bits
        self.input_quant = InputQuant(self.input_scale, act_bits)
        last = len(graph.ops) - 1
        self.layers = nn.ModuleList(_Layer(op, graph, act_bits=act_bits, last=i == last) for i, op in enumerate(graph.ops))
        self._by_name = {op.name: i for i, op in enumerate(graph.ops)}

    @property
    def ops(self) -> list[Op]:
        return self.graph.ops

    def layer(self, name: str) -> _Layer:
        return self.layers[self._by_name[name]]

    def scale_of(self, name: str) -> float:
        """The float value of one unit of map `name` (input, an ActQuant's scale, a pool's source's)."""
        if name == INPUT:
            return self.input_scale
        layer = self.layer(name)
        if layer.op.weighted:
            return layer.act.scale
        return self.scale_of(layer.op.source)

    def quantized(self) -> bool:
        return self.input_quant.enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = {INPUT: self.input_quant(x)}
        quantized = self.quantized()
        y = None
        for layer in self.layers:
            op = layer.op
            residual = maps[op.residual] if op.residual else None
            scale = self.scale_of(op.source) if quantized and op.kind == "avgpool2d" else None
            y = layer(maps[op.source], residual, scale=scale)
            maps[op.name] = y
        return y.flatten(1)

    def weighted_layers(self) -> list[tuple[str, nn.Module, tuple | None]]:
        """[(name, conv/linear module, linear in_shape or None)] in network order (`TilePruner.prepare`)."""
        return [(layer.op.name, layer.body, layer.op.in_shape if layer.op.kind == "linear" else None)
                for layer in self.layers if layer.op.weighted]


def check_capture(net: GraphNet, model: nn.Module, *, samples: int = 4, seed: int = 0) -> float:
    """Largest |difference| between the float GraphNet and the model itself (both in eval mode) on
    random images; a CaptureError when the lowering does not compute what the model computes."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, *net.input_shape, generator=gen)
    was_net, was_model = net.training, model.training
    net.eval()
    model.eval()
    try:
        with torch.no_grad():
            want = model(x)
            got = net(x)
    finally:
        net.train(was_net)
        model.train(was_model)
    if tuple(want.shape) != tuple(got.shape):
        raise CaptureError(f"forward: the captured graph gives scores of shape {tuple(got.shape)}, the model "
                           f"{tuple(want.shape)}; {SUPPORTED}")
    diff = float((want - got).abs().max())
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    if not diff <= tol:
        raise CaptureError(f"forward: the captured graph does not compute what the model computes (largest "
                           f"difference {diff:.3g} on random images); {SUPPORTED}")
    return diff


__all__ = ["SUPPORTED", "CaptureError", "Op", "Graph", "GraphNet", "capture", "check_capture", "load_model",
           "load_weights"]
