"""The ternarizer (He et al. WACV 2019 rule, terwin's zero budget) and its parametrization."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from terwin.algo.ternary.ternarize import Ternarizer, TernaryWeight, is_ternary, latent_weight, prepare_ternary, ternary_codes


def test_values_threshold_and_scale_by_hand():
    w = torch.tensor([[0.9, -0.3, 0.02, -0.05], [0.0, 0.5, -0.9, 0.04]])
    codes, alpha = Ternarizer(threshold=0.05)(w)
    # Δ = 0.05 * 0.9 = 0.045: 0.02, 0.0, 0.04 fall below; -0.05 stays
    expected = torch.tensor([[1., -1., 0., -1.], [0., 1., -1., 0.]])
    assert torch.equal(codes, expected), f"expected {expected}, got {codes}"
    kept = torch.tensor([0.9, 0.3, 0.05, 0.5, 0.9])
    assert alpha.item() == pytest.approx(float(kept.mean())), f"alpha {alpha.item()} vs mean {float(kept.mean())}"


def test_boundary_weight_equal_to_delta_is_kept():
    w = torch.tensor([1.0, 0.25, -0.25, 0.2499])
    codes, _ = Ternarizer(threshold=0.25)(w)
    assert codes.tolist() == [1.0, 1.0, -1.0, 0.0]


def test_per_channel_scale_and_threshold():
    w = torch.tensor([[1.0, 0.04, -0.5], [0.1, -0.1, 0.004]])
    codes, alpha = Ternarizer(threshold=0.05, per_channel=True)(w)
    # row 0: Δ = 0.05 -> 0.04 is zero; row 1: Δ = 0.005 -> 0.004 is zero
    assert codes.tolist() == [[1, 0, -1], [1, -1, 0]]
    assert alpha.reshape(-1).tolist() == pytest.approx([0.75, 0.1])


def test_zero_budget_caps_the_zero_fraction():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4000, generator=g) * torch.rand(4000, generator=g)  # many small weights
    w[:1000] = 0  # pruned weights stay zero and do not count
    plain, _ = Ternarizer(threshold=0.2)(w)
    capped, _ = Ternarizer(threshold=0.2, zero_budget=0.03)(w)
    live = w != 0
    plain_zero = float((plain[live] == 0).float().mean())
    capped_zero = float((capped[live] == 0).float().mean())
    assert plain_zero > 0.2, plain_zero
    assert capped_zero <= 0.03 + 1e-3, f"zero fraction {capped_zero} above the 3% budget"
    assert torch.all(capped[~live] == 0)
    # the cap only lowers Δ: every weight the plain rule keeps, the capped rule keeps with the same sign
    assert torch.equal(capped[plain != 0], plain[plain != 0])


def test_threshold_validation():
    with pytest.raises(ValueError, match="threshold"):
        Ternarizer(threshold=1.5)
    with pytest.raises(ValueError, match="zero budget"):
        Ternarizer(zero_budget=-0.1)


def test_straight_through_gradient_zeroed_where_clipped():
    w = torch.tensor([0.3, -0.02, 1.2, -0.7, -1.0], requires_grad=True)
    param = TernaryWeight(Ternarizer(threshold=0.05, clip=1.0))
    out = param(w)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (out * upstream).sum().backward()
    # identity where |w| < 1 (also for the weight that ternarized to 0), zero where |w| >= 1
    assert w.grad.tolist() == [1.0, 2.0, 0.0, 4.0, 0.0], w.grad.tolist()


def test_forward_is_alpha_times_codes():
    torch.manual_seed(1)
    w = torch.randn(8, 3, 3, 3)
    out = TernaryWeight(Ternarizer(threshold=0.05))(w)
    codes, alpha = Ternarizer(threshold=0.05)(w)
    assert torch.equal(out, codes * alpha)
    assert set(torch.unique(out / alpha).tolist()) <= {-1.0, 0.0, 1.0}


def test_prepare_registers_parametrization_and_codes_export():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4, 3))
    prepare_ternary(model, Ternarizer(threshold=0.05))
    prepare_ternary(model, Ternarizer(threshold=0.05))  # idempotent
    conv, fc = model[0], model[2]
    assert is_ternary(conv) and is_ternary(fc)
    assert len(conv.parametrizations.weight) == 1
    codes, alpha = ternary_codes(conv)
    assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 0, 1}
    assert np.allclose(conv.weight.detach().numpy(), codes * alpha[0], rtol=0, atol=1e-7)
    # the latent weight is the trained float weight, and training updates it
    latent = latent_weight(conv)
    assert latent is conv.parametrizations.weight.original
    before = latent.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(5, 2, 3, 3)).sum().backward()
    opt.step()
    assert not torch.equal(before, latent.detach())
    assert parametrize.is_parametrized(conv, "weight")
