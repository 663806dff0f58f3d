"""Capture of a user's network (torch.fx → the Deployment's layers), its refusals, weights loading,
and the integer mapping of residual connections, projections and average pooling (export ==
the fake-quantized model)."""
from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from terwin import fileformat
from terwin.algo import torch_int
from terwin.algo.graph import CaptureError, GraphNet, capture, check_capture, load_model, load_weights
from terwin.algo.quant import set_quantization
from terwin.algo.ternary.graph_flow import check_limits, export_graph, sync_graph_scales
from terwin.algo.ternary.pruning import TilePruner
from terwin.algo.ternary.ternarize import Ternarizer, prepare_ternary
from terwin.deployment import INPUT
from terwin.errors import TerwinError
from terwin.sim import reference
from terwin.spec import PE8X8


def cbr(cin, cout, k=3, stride=1, padding=1, bias=False):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias), nn.BatchNorm2d(cout)]


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = cbr(cin, cout, stride=stride)
        self.conv2, self.bn2 = cbr(cout, cout)
        self.proj = nn.Sequential(*cbr(cin, cout, 1, stride, 0)) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.proj(x)
        return F.relu(out)


class Net(nn.Module):
    """Every supported form at once: bias convs, padding='same', a 5x5 kernel, `+=`, torch.add, x.relu(),
    nn.ReLU(inplace), projection and identity shortcuts, max / average / global pooling, view(N, -1),
    dropout, a hidden linear layer."""

    def __init__(self, cin=1, classes=4):
        super().__init__()
        self.stem = nn.Conv2d(cin, 8, 5, padding="same", bias=True)
        self.act = nn.ReLU(inplace=True)
        self.b1 = Block(8, 8, 1)
        self.b2 = Block(8, 16, 2)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2, stride=1)
        self.drop = nn.Dropout(0.1)
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, classes)

    def forward(self, x):
        x = self.act(self.stem(x))
        x = self.b2(self.b1(x))
        x = torch.add(self.bn3(self.conv3(x)), x).relu()
        x = self.avg(self.pool(x))
        x = F.adaptive_avg_pool2d(x, 1)
        x = self.drop(x.view(x.size(0), -1))
        return self.fc2(F.relu(self.fc1(x)))


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def test_capture_lowers_every_supported_form():
    torch.manual_seed(0)
    model = _randomize_bn(Net())
    graph = capture(model, (1, 12, 12))
    ops = {op.name: op for op in graph.ops}
    assert [op.name for op in graph.ops] == [
        "stem", "b1.conv1", "b1.conv2", "b2.conv1", "b2.proj.0", "b2.conv2", "conv3", "pool", "avg",
        "adaptive_avg_pool2d", "fc1", "fc2"]
    assert ops["stem"].kernel == 5 and ops["stem"].padding == 2 and ops["stem"].bn is None
    assert ops["b1.conv2"].residual == "stem"                      # identity shortcut: the block's input
    assert ops["b2.proj.0"].relu is False and ops["b2.proj.0"].bn == "b2.proj.1" and ops["b2.proj.0"].stride == 2
    assert ops["b2.conv2"].residual == "b2.proj.0" and ops["b2.conv2"].source == "b2.conv1"
    assert ops["conv3"].residual == "b2.conv2" and ops["conv3"].bn == "bn3"
    assert ops["avg"].kind == "avgpool2d" and (ops["avg"].kernel, ops["avg"].stride) == (2, 1)
    gap = ops["adaptive_avg_pool2d"]
    assert gap.kind == "avgpool2d" and gap.kernel == gap.stride == 2 and gap.out_shape == (16, 1, 1)
    assert ops["fc1"].relu and ops["fc1"].in_shape == (16, 1, 1)
    assert not ops["fc2"].relu and ops["fc2"].source == "fc1"
    assert graph.classes == 4
    net = GraphNet(graph, act_bits=8, input_scale=1 / 255)
    assert check_capture(net, model) < 1e-5
    # the user's model is not touched: the graph holds a copy
    assert all(a is not b for a, b in zip(model.parameters(), net.parameters()))


def _refusal(model, shape=(1, 8, 8)):
    with pytest.raises(CaptureError) as info:
        capture(model, shape)
    msg = str(info.value)
    assert "\n" not in msg and "supported" in msg
    return msg


class Seq(nn.Module):
    def __init__(self, *layers, head=8 * 8 * 8):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(head, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


class Gate(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x) * x


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class TwoMaps(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.c1, self.c2, self.fn = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1), fn
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.fn(self, x), 1))


@pytest.mark.parametrize("model, words", [
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.Sigmoid()), ["body.1", "Sigmoid", "not supported"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), Gate()), ["body.2", "torch.sigmoid"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.ReLU()),
     ["body.2", "Conv2d", "groups=2"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=2, dilation=2), nn.ReLU()), ["body.0", "dilation"]),
    (Seq(nn.Conv2d(1, 8, (3, 1), padding=(1, 0)), nn.ReLU()), ["body.0", "square"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), Branchy()), ["body.2", "torch.fx cannot trace",
                                                                 "data-dependent control flow"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()), ["body.1", "before a ReLU"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 1, padding=1)), ["body.2", "padding"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(8)), ["body.2", "BatchNorm2d",
                                                                        "right after a Conv2d"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), head=8 * 2 * 2),
     ["body.2", "output size 2"]),
    (TwoMaps(lambda s, x: F.relu(s.c1(x)) + F.relu(s.c2(x))), ["add", "needs one operand computed by a Conv2d"]),
    (TwoMaps(lambda s, x: s.c1(x) + s.c2(x)), ["forward", "torch.flatten", "c1", "before a ReLU"]),
    (TwoMaps(lambda s, x: F.relu(s.c1(x) + x * 2)), ["mul", "not supported"]),
    (Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), *[nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()] * 2),
     ["body.2", "called twice"]),
    (TwoMaps(lambda s, x: torch.cat([F.relu(s.c1(x)), F.relu(s.c2(x))], 1)[:, :8]), ["torch.cat", "not supported"]),
])
def test_unsupported_ops_are_refused_in_one_line_naming_module_and_op(model, words):
    msg = _refusal(model)
    for word in words:
        assert word in msg, (word, msg)


def test_other_refusals():
    class LSTMNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 8, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.rnn(x)[0])

    assert "rnn: LSTM is not supported" in _refusal(LSTMNet())

    class EndsInReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            return F.relu(self.fc(torch.flatten(x, 1)))

    assert "class scores" in _refusal(EndsInReLU())
    assert "images of shape 3x8x8" in str(pytest.raises(CaptureError, capture, Seq(nn.Conv2d(1, 8, 3, padding=1),
                                                                                   nn.ReLU()), (3, 8, 8)).value)


def test_load_model_errors(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent("""
        from torch import nn
        def good():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        def bad():
            raise ValueError("no such width\\nsecond line")
        def not_module():
            return 3
        NUMBER = 4
    """))
    assert isinstance(load_model(f"{f}:good"), nn.Module)
    a, b = load_model(f"{f}:good", seed=3), load_model(f"{f}:good", seed=3)   # the initial weights under --seed
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for ref, words in [(f"{f}:bad", "bad() raised ValueError: no such width"), (f"{f}:not_module", "returned a int"),
                       (f"{f}:missing", "has no 'missing'"), (f"{f}:NUMBER", "not a function"),
                       (str(f), "FILE.py:FACTORY"), (f"{tmp_path / 'nope.py'}:good", "no such file")]:
        with pytest.raises(TerwinError) as info:
            load_model(ref)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    with pytest.raises(TerwinError, match="loading it failed: SyntaxError"):
        load_model(f"{broken}:f")


def test_load_weights_strictly(tmp_path):
    model = Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    state = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    path = tmp_path / "w.pt"
    torch.save(state, path)
    target = Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    load_weights(target, path)
    assert torch.equal(target.fc.weight, state["fc.weight"])
    cases = [({k: v for k, v in state.items() if k != "fc.bias"}, "no 'fc.bias'"),
             ({**state, "extra.weight": torch.zeros(1)}, "'extra.weight' is not a parameter"),
             ({**state, "fc.weight": torch.zeros(3, 5)}, "'fc.weight' has shape (3, 5)"),
             ([1, 2], "not a state_dict")]
    for bad, words in cases:
        torch.save(bad, path)
        with pytest.raises(TerwinError) as info:
            load_weights(target, path)
        assert words in str(info.value), str(info.value)
    path.write_bytes(b"not a pickle")
    with pytest.raises(TerwinError, match="torch.load"):
        load_weights(target, path)


# -- the integer mapping ------------------------------------------------------------------------------


def _calibrated(model, shape, *, act_bits=8, seed=0):
    """The GraphNet of `model` with ternary weights, quantization on and scales calibrated (no training)."""
    graph = capture(model, shape)
    net = GraphNet(graph, act_bits=act_bits, input_scale=1 / ((1 << act_bits) - 1))
    pruner = TilePruner(PE8X8.replace(act_bits=act_bits), target=0.25).prepare(net.weighted_layers())
    pruner.step()
    prepare_ternary(net, Ternarizer(threshold=0.05))
    set_quantization(net, enabled=True, calibrating=True)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for m in net.modules():  # the quantizers calibrate (training mode) on eval-mode activations
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, *shape, generator=g))
    set_quantization(net, enabled=True, calibrating=False)
    net.eval()
    sync_graph_scales(net)
    return net, pruner


@pytest.mark.parametrize("act_bits", [8, 6])
def test_export_computes_the_fake_quantized_model(act_bits):
    """Residuals (identity and projection), a signed projection, max / average / global pooling and a
    hidden linear layer: the integer model's scores, times the score unit, follow the fake-quantized
    float model, and torch-int equals the reference on every layer."""
    torch.manual_seed(1)
    model = _randomize_bn(Net(cin=2, classes=5), seed=1)
    shape = (2, 12, 12)
    net, pruner = _calibrated(model, shape, act_bits=act_bits)
    spec = PE8X8.replace(act_bits=act_bits)
    dep = export_graph(net, spec, tile_masks=pruner.tile_masks())
    assert dep.format_version == 2
    kinds = {(layer.kind, getattr(layer, "residual", None) is not None, getattr(layer, "relu", True))
             for layer in dep.layers}
    assert {("conv2d", True, True), ("conv2d", False, False), ("avgpool2d", False, True), ("linear", False, True)} <= kinds
    x = torch.rand(64, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fq = net(x).double().numpy()
    q = reference.quantize_input(dep, x.numpy())
    ours = torch_int.trace(dep, q)
    for layer, a, b in zip(dep.layers, ours, reference.trace(dep, q)):
        assert np.array_equal(a.numpy(), b), layer.name
    # the model file keeps every integer (residual multipliers are 32-bit: `<i4`)
    again = fileformat.from_bytes(fileformat.to_bytes(dep))
    assert any(int(np.abs(layer.residual_multiplier).max()) > 1 << 15 for layer in dep.layers
               if getattr(layer, "residual", None)), "the case of a multiplier wider than 16 bits"
    for a, b in zip(reference.trace(again, q), ours):
        assert np.array_equal(a, b.numpy())
    fc = dep.layers[-1]
    unit = fc.weight_scale[0] * net.scale_of(fc.source if fc.source else dep.layers[-2].name)
    scores = reference.forward(dep, q) * unit
    err = np.abs(scores - fq).max() / np.abs(fq).max()
    assert err < 0.08, err
    assert (scores.argmax(1) == fq.argmax(1)).mean() >= 0.9


def test_plain_chain_stays_format_version_1():
    model = Seq(*cbr(1, 8), nn.ReLU(), nn.MaxPool2d(2), *cbr(8, 8), nn.ReLU(), head=8 * 4 * 4)
    net, pruner = _calibrated(model, (1, 8, 8))
    dep = export_graph(net, PE8X8, tile_masks=pruner.tile_masks())
    assert dep.format_version == 1 and all(layer.source is None for layer in dep.layers)
    assert [layer.kind for layer in dep.layers] == ["conv2d", "maxpool2d", "conv2d", "linear"]


def test_limits_are_checked_before_training():
    wide = Seq(nn.Conv2d(1, 4096, 3, padding=1), nn.ReLU(), nn.Conv2d(4096, 4096, 3, padding=1), nn.ReLU(),
               head=4096 * 8 * 8)
    net = GraphNet(capture(wide, (1, 8, 8)), act_bits=8, input_scale=1 / 255)
    with pytest.raises(TerwinError, match="weights, more than the limit"):
        check_limits(net, PE8X8)
    ok = GraphNet(capture(Seq(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()), (1, 8, 8)), act_bits=8, input_scale=1 / 255)
    check_limits(ok, PE8X8)
    assert ok.ops[0].source == INPUT


class InputShortcut(nn.Module):
    """The shortcut on the left of `+` is the network input itself; a conv head returns the scores."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Conv2d(2, 3, 1)

    def forward(self, x):
        y = F.relu(x + self.conv(x))
        return torch.flatten(self.head(self.pool(y)), 1)


def test_input_shortcut_on_the_left_and_a_conv_score_layer():
    model = InputShortcut()
    graph = capture(model, (2, 6, 6))
    assert [(op.name, op.kind, op.residual, op.relu) for op in graph.ops] == [
        ("conv", "conv2d", INPUT, True), ("pool", "avgpool2d", None, True), ("head", "conv2d", None, False)]
    net, pruner = _calibrated(model, (2, 6, 6))
    assert check_capture(GraphNet(capture(model, (2, 6, 6)), act_bits=8, input_scale=1 / 255), model) < 1e-5
    dep = export_graph(net, PE8X8, tile_masks=pruner.tile_masks())
    q = np.random.default_rng(0).integers(0, 256, size=(8, 2, 6, 6))
    for a, b in zip(torch_int.trace(dep, q), reference.trace(dep, q)):
        assert np.array_equal(a.numpy(), b)
    assert dep.layers[0].residual == INPUT and reference.forward(dep, q).shape == (8, 3)
