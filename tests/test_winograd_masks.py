"""Masks and regularisers of the Winograd family: exact sparsity, pruned stays pruned, joint regulariser gradients."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from terwin.algo.winograd.masks import (JointPruner, JointRegularizer, WinogradMagnitudePruner, linear_prune,
                                        magnitude_mask, partial_l2)
from terwin.algo.winograd.nn import WinoConv, WinogradNet
from terwin.algo.winograd.transforms import kernel_to_winograd, transforms


@pytest.fixture
def net():
    torch.manual_seed(0)
    return WinogradNet()


def _train_steps(net, steps=5):
    torch.manual_seed(1)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        x = torch.rand(16, 1, 8, 8)
        y = torch.randint(0, 10, (16,))
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.apply_masks()
    return loss


def test_magnitude_mask_prunes_exactly_the_smallest():
    w = torch.tensor([[0.5, -0.1, 0.0, 2.0], [-3.0, 0.2, 0.05, -0.3]])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [[1, 0, 0, 1], [1, 0, 0, 1]]
    assert magnitude_mask(w, 0.0).sum() == 8
    ties = magnitude_mask(torch.ones(10), 0.3)
    assert ties.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]  # ties broken by position, exact count
    with pytest.raises(ValueError):
        magnitude_mask(w, 1.0)


def test_switching_to_the_winograd_domain_keeps_the_function(net):
    x = torch.rand(4, 1, 8, 8)
    net.eval()
    with torch.no_grad():
        spatial = net(x)
        net.set_mode("winograd")
        wino = net(x)
    torch.testing.assert_close(wino, spatial, rtol=1e-5, atol=1e-5)
    conv = net.convs()[1]
    assert conv.weight_wd.shape == (32, 16, 4, 4) and not conv.weight.requires_grad


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.8])
def test_winograd_pruning_reaches_exact_sparsity_and_pruned_weights_stay_zero(net, sparsity):
    net.set_mode("winograd")
    WinogradMagnitudePruner()(net, sparsity)
    masks = [c.winograd_mask.clone() for c in net.convs()]
    for conv, mask in zip(net.convs(), masks):
        n = mask.numel()
        assert int((mask == 0).sum()) == round(sparsity * n)
        assert int((conv.weight_wd == 0).sum()) >= round(sparsity * n)
    _train_steps(net)
    for conv, mask in zip(net.convs(), masks):
        assert torch.all(conv.weight_wd[mask == 0] == 0), "a pruned Winograd-domain weight moved"
        assert torch.any(conv.weight_wd[mask == 1] != 0)
        g = conv.weight_wd.grad
        assert torch.all(g[mask == 0] == 0), "pruned weights must get no gradient"


def test_iterative_pruning_never_revives_a_pruned_weight(net):
    net.set_mode("winograd")
    prune = WinogradMagnitudePruner()
    prune(net, 0.4)
    before = [c.winograd_mask.clone() for c in net.convs()]
    _train_steps(net, 3)
    prune(net, 0.7)
    for conv, old in zip(net.convs(), before):
        assert torch.all(conv.winograd_mask <= old)
        assert int((conv.winograd_mask == 0).sum()) == round(0.7 * old.numel())


def test_winograd_pruning_needs_winograd_parameters(net):
    with pytest.raises(ValueError, match="mode 'winograd'"):
        WinogradMagnitudePruner()(net, 0.5)


def test_joint_pruning_is_sparse_in_both_domains(net):
    JointPruner()(net, spatial_sparsity=0.5, winograd_sparsity=0.7)
    for conv in net.convs():
        assert conv.mode == "joint"
        g = conv.spatial_weight()
        assert int((g == 0).sum()) == round(0.5 * g.numel())
        u = conv.winograd_weight()
        assert int((u == 0).sum()) >= round(0.7 * u.numel())
        # the Winograd model is the masked transform of the spatially pruned kernels
        torch.testing.assert_close(u, conv.winograd_mask * kernel_to_winograd(g))
    masks = [(c.spatial_mask.clone(), c.winograd_mask.clone()) for c in net.convs()]
    _train_steps(net)
    for conv, (ms, mw) in zip(net.convs(), masks):
        assert torch.all(conv.weight[ms == 0] == 0)
        assert torch.all(conv.winograd_weight()[mw == 0] == 0)


def test_classifier_pruning(net):
    linear_prune(net, 0.5)
    fc = net.linears()[0]
    assert int((fc.weight == 0).sum()) == fc.weight.numel() // 2


def test_partial_l2_covers_the_entries_below_the_percentile():
    w = torch.tensor([3.0, -1.0, 0.5, -4.0, 2.0, 0.1])
    # 50% -> the three smallest magnitudes 0.1, 0.5, -1.0
    assert partial_l2(w, 0.5).item() == pytest.approx(0.01 + 0.25 + 1.0)


def test_winograd_regulariser_gradient_is_gt_m_u_g():
    """d/dg sum_{masked} (G g G^T)^2 = 2 G^T (M * G g G^T) G (Choi et al.), with the mask held fixed."""
    torch.manual_seed(0)
    g = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    u = kernel_to_winograd(g)
    partial_l2(u, 0.6).backward()
    _, gm, _ = transforms(2, dtype=torch.float64)
    u = u.detach()
    mask = 1 - magnitude_mask(u, 0.6)
    expected = 2 * gm.T @ (mask * u) @ gm
    torch.testing.assert_close(g.grad, expected, rtol=1e-12, atol=1e-12)


def test_learnable_coefficients_follow_e_alpha_r_minus_lambda():
    torch.manual_seed(0)
    net = WinogradNet()
    reg = JointRegularizer(spatial_sparsity=0.5, winograd_sparsity=0.7, lam=1e-2, init=0.3)
    cost = reg(net)
    cost.backward()
    r_wd, r_sd = (t.item() for t in reg.terms(net))
    assert r_wd > 0 and r_sd > 0
    assert reg.alpha.grad.item() == pytest.approx(math.exp(0.3) * r_wd - 1e-2, rel=1e-5)
    assert reg.beta.grad.item() == pytest.approx(math.exp(0.3) * r_sd - 1e-2, rel=1e-5)
    # R_SD pulls only the spatial weights below their percentile
    net.zero_grad()
    reg.terms(net)[1].backward()
    conv = net.convs()[0]
    grad = conv.weight.grad
    below = 1 - magnitude_mask(conv.weight, 0.5)
    assert torch.all(grad[below == 0] == 0) and torch.any(grad[below == 1] != 0)


def test_regularised_training_shrinks_the_small_weights_of_both_domains():
    torch.manual_seed(0)
    net = WinogradNet()
    reg = JointRegularizer(spatial_sparsity=0.5, winograd_sparsity=0.7, lam=1e-2)
    before = [t.item() for t in reg.terms(net)]
    opt = torch.optim.Adam([{"params": net.parameters(), "lr": 1e-3}, {"params": reg.parameters(), "lr": 0.05}])
    for _ in range(60):
        loss = reg(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [t.item() for t in reg.terms(net)]
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], f"{before} -> {after}"


def test_wino_conv_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be"):
        WinoConv(1, 16).set_mode("fft")


def test_weights_keep_their_shape_per_tile_parameter():
    conv = WinoConv(2, 3, m=2)
    assert conv.winograd_mask.shape == (3, 2, 4, 4)
    assert np.prod(conv.spatial_mask.shape) == 3 * 2 * 9
