"""Batch-norm folding: the folded conv equals conv + BN (eval mode) in float64."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from terwin.algo.quant import bn_affine, fold_bn


def _trained_bn(channels: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(channels, generator=g, dtype=dtype))  # negative gammas too
        bn.bias.copy_(torch.randn(channels, generator=g, dtype=dtype))
        bn.running_mean.copy_(torch.randn(channels, generator=g, dtype=dtype))
        bn.running_var.copy_(torch.rand(channels, generator=g, dtype=dtype) * 3 + 0.01)
    return bn.eval()


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folded_conv_equals_conv_then_bn(seed, with_bias):
    g = torch.Generator().manual_seed(100 + seed)
    conv = nn.Conv2d(5, 7, 3, padding=1, bias=with_bias).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
        if with_bias:
            conv.bias.copy_(torch.randn(7, generator=g, dtype=torch.float64))
    bn = _trained_bn(7, seed)
    x = torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64)
    expected = bn(conv(x)).detach()
    w, b = fold_bn(conv.weight, conv.bias, bn)
    got = F.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1)
    err = float((got - expected).abs().max())
    assert err < 1e-12, f"folded conv differs from conv+BN by {err}"


def test_fold_linear_and_affine_form():
    g = torch.Generator().manual_seed(7)
    fc = nn.Linear(6, 3).double()
    bn = nn.BatchNorm1d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0], dtype=torch.float64))
        bn.weight.copy_(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -3.0], dtype=torch.float64))
    k, c = bn_affine(bn)
    eps = bn.eps
    np.testing.assert_allclose(k, [2 / np.sqrt(4 + eps), -1 / np.sqrt(0.25 + eps), 0.5 / np.sqrt(1 + eps)], rtol=1e-15)
    np.testing.assert_allclose(c, [0 - 0.5 * k[0], 1 + 1.0 * k[1], -3 - 2.0 * k[2]], rtol=1e-15)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    w, b = fold_bn(fc.weight, fc.bias, bn)
    got = x @ torch.from_numpy(w).T + torch.from_numpy(b)
    assert float((got - bn(fc(x)).detach()).abs().max()) < 1e-12
