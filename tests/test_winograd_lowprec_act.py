"""The learnable low-precision regularizer (arXiv 1809.00095) on the Winograd family's activations
(`--lowprec-act-lambda`): zero on the calibrated grid, the pull towards it, α learning e^α → λ / R,
bad values as one-line errors, and a tiny compress whose integer model is still bit-exact."""
import math

import pytest
import torch
from torch import nn

from terwin import cli
from terwin.algo.quant import ActQuant, fake_quantize
from terwin.algo.winograd.flow import WinogradOptions, compress
from terwin.algo.winograd.lowprec import ActivationRegularizer, LowPrecisionRegularizer, combined, grid_error
from terwin.errors import TerwinError
from terwin.spec import WINOGRAD

TINY = 0.02


def _quantized_net(bits=4, scale=0.5):
    """A module holding one calibrated unsigned `bits`-bit activation quantizer of step `scale`."""
    q = ActQuant(bits, calibration="percentile")
    q.calibrating = False
    q.calibrated_scale.fill_(scale)
    q.enabled = True
    return nn.Sequential(q)


def test_bad_act_lambda_is_a_one_line_error(tmp_path, capsys):
    for value in (-0.5, math.nan, math.inf):
        with pytest.raises(TerwinError, match="--lowprec-act-lambda"):
            WinogradOptions(lowprec_act_lambda=value)
    for argv, text in ((["--lowprec-act-lambda", "-1"], "number >= 0"), (["--lowprec-act-lambda", "nan"], "number >= 0"),
                       (["--lowprec-act-lambda", "x"], "not a number")):
        assert cli.main(["compress", "--family", "winograd", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "--lowprec-act-lambda" in err and text in err and err.count("\n") == 1, err
    with pytest.raises(ValueError, match="lambda"):
        ActivationRegularizer(_quantized_net(), lam=0.0)


def test_act_penalty_is_zero_on_the_grid_and_pulls_towards_it():
    net = _quantized_net(bits=4, scale=0.5)
    reg = ActivationRegularizer(net, lam=0.01)
    levels = torch.arange(16, dtype=torch.float32) * 0.5          # the 4-bit grid 0 .. 15 steps
    net.train()
    with reg.recording():
        net(levels.clone().requires_grad_())
        assert float(reg.error().detach()) == 0.0                            # on the grid: no error
        # 0.1 above / below the levels (0.2 steps), and 1.0 above the top level (clipped: 2 steps to the top)
        up = (levels[:-1] + 0.1).requires_grad_()
        down = (levels[1:] - 0.1).requires_grad_()
        top = torch.tensor([7.5 + 1.0], requires_grad=True)
        for x in (up, down, top):
            net(x)
        penalty = reg()                                            # α = 0: e^α = 1, R = the error
        n = 15 + 15 + 1
        assert reg.last_error == pytest.approx((30 * 0.2 ** 2 + 2.0 ** 2) / n, rel=1e-6)
        penalty.backward()
        # descending the penalty moves each value towards its grid point
        assert bool((up.grad > 0).all()) and bool((down.grad < 0).all()) and float(top.grad[0]) > 0
        assert float(up.grad[0]) == pytest.approx(2 * 0.2 / 0.5 / n, rel=1e-5)
        assert float(reg().detach()) == 0.0                                 # what was recorded is used once
        # evaluation passes (no gradients) are not recorded
        with torch.no_grad():
            net(up)
        net.eval()
        net(up)
        assert float(reg.error().detach()) == 0.0
    # outside `recording()` nothing is recorded
    net.train()
    net(up)
    assert float(reg.error().detach()) == 0.0


def test_alpha_learns_and_the_activations_converge_to_the_grid():
    torch.manual_seed(0)
    net = _quantized_net(bits=4, scale=0.5)
    reg = ActivationRegularizer(net, lam=0.01)
    # fixed activations 0.2 steps off the grid: e^α goes to λ / R = 0.01 / 0.04
    x = torch.arange(15, dtype=torch.float32) * 0.5 + 0.1
    opt = torch.optim.Adam(reg.parameters(), lr=0.05)
    net.train()
    with reg.recording():
        for _ in range(400):
            opt.zero_grad()
            net(x.clone().requires_grad_())
            reg().backward()
            opt.step()
    assert float(reg.alpha.detach().exp()) == pytest.approx(0.01 / 0.04, rel=0.05)
    # learnable activations (a layer's output before the quantizer) move onto the grid
    pre = nn.Parameter(torch.rand(64) * 7.0)
    reg = ActivationRegularizer(net, lam=0.01)
    opt = torch.optim.Adam([{"params": [pre], "lr": 1e-2}, {"params": list(reg.parameters()), "lr": 0.05}])
    with reg.recording():
        net(pre)
        before = float(reg.error().detach())
        for _ in range(200):
            opt.zero_grad()
            net(pre)
            reg().backward()
            opt.step()
    assert before > 0.02 and reg.measure(pre.detach()) < before / 4 and float(reg.alpha.detach().exp()) > 1
    assert reg.figures()["grid_error"] == reg.measured_error


def test_grid_error_and_combined_penalty():
    x = torch.tensor([[0.25, -0.3], [1.0, 9.0]])
    step = torch.tensor([0.5, 1.0]).view(-1, 1)
    # steps: 0.5 -> 1 (0.25), -0.6 -> -1 (0.16); 1 -> 1 (0), 9 -> clamped to 3 (36)
    assert float(grid_error(x, step, -3, 3)) == pytest.approx(0.25 + 0.16 + 36.0)
    assert combined([None, None]) == (None, [])
    net = _quantized_net()
    a, b = ActivationRegularizer(net, lam=0.1), ActivationRegularizer(net, lam=0.2)
    penalty, params = combined([a, None, b])
    assert len(params) == 2 and float(penalty().detach()) == 0.0            # α = 0, nothing recorded: 0 − λ·0


def test_compress_with_the_act_regularizer_is_bit_exact_and_reports_it():
    spec = WINOGRAD.replace(act_bits=4)
    kept = {}

    def keep(net, dep, data):
        # R again, by the fake quantizer itself: mean ((x − fake_quantize(x)) / scale)² over the training images
        seen = []
        hooks = [q.register_forward_pre_hook(lambda m, a: seen.append((a[0], m))) for q in net.modules()
                 if isinstance(q, ActQuant)]
        with torch.no_grad():
            net.eval()
            net(data.x_train)
        for h in hooks:
            h.remove()
        err = sum(float((((x - fake_quantize(x, q.scale, bits=q.bits)) / q.scale) ** 2).sum()) for x, q in seen)
        kept["grid_error"] = err / sum(x.numel() for x, _ in seen)
        kept["bits"] = {q.bits for _, q in seen}
    _, report = compress(WinogradOptions(spec=spec, epochs_scale=TINY, quiet=True, lowprec_act_lambda=0.05),
                         on_export=keep)
    fig = report["winograd"]["lowprec_act_regularizer"]
    assert report["reference_mismatches"] == 0 and report["options"]["lowprec_act_lambda"] == 0.05
    assert fig["lambda"] == 0.05 and fig["act_bits"] == 4 and kept["bits"] == {4} and fig["exp_alpha"] > 0
    assert 0 < fig["grid_error"] == pytest.approx(kept["grid_error"], rel=1e-6)
    assert "lowprec_regularizer" not in report["winograd"]          # the weights' regularizer stays off


def test_weight_regularizer_unchanged_by_the_generalization():
    """The weights' R is still the mean over all weights of ((w − Q(w)) / step)² on the export's grid."""
    from terwin.algo.winograd.nn import WinogradNet
    torch.manual_seed(1)
    net = WinogradNet(m=2)
    net.set_mode("winograd")
    reg = LowPrecisionRegularizer(net, bits=3, lam=0.1)
    total, count = 0.0, 0
    for w, quant in [(c.winograd_weight(), reg.conv_quant) for c in net.convs()] + \
                    [(fc.masked_weight(), reg.linear_quant) for fc in net.linears()]:
        q, s = quant.codes(w)
        view = (-1,) + (1,) * (w.dim() - 1)
        total += float((((w - q * s.view(view)) / s.view(view)) ** 2).sum().detach())
        count += w.numel()
    assert float(reg.error().detach()) == pytest.approx(total / count, rel=1e-6)


def test_a_user_model_through_the_graph_flow_takes_the_option_too():
    """`terwin.compress(model, ..., family="winograd", lowprec_act_lambda=...)`: the user-model flow
    (graph_flow) shares the family's stages, the regularizer included."""
    import terwin
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    _, report = terwin.compress(model, terwin.load_data("digits", limit=300), family="winograd",
                                lowprec_act_lambda=0.1, epochs_scale=0.02, quiet=True)
    fig = report["winograd"]["lowprec_act_regularizer"]
    assert report["reference_mismatches"] == 0 and fig["lambda"] == 0.1 and fig["grid_error"] > 0
