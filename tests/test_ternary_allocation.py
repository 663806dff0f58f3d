"""Per-layer tile budgets (algo/ternary/allocation.py) and dead output channels (export.live_slopes)."""
import copy

import numpy as np
import pytest
import torch

from terwin.algo import torch_int
from terwin.algo.quant import bn_affine
from terwin.algo.ternary.allocation import budget_from_curves, sensitivity_allocation, sensitivity_curves
from terwin.algo.ternary.export import export_ternary, live_slopes, sync_activation_scales
from terwin.algo.ternary.flow import Schedule, TernaryOptions, train_ternary
from terwin.algo.ternary.net import ConvBlock, DigitsNet
from terwin.algo.ternary.pruning import TilePruner, allocate
from terwin.algo.ternary.ternarize import latent_weight, ternary_codes
from terwin.algo.train import reestimate_batchnorm
from terwin.errors import TerwinError
from terwin.spec import PE8X8

TINY = Schedule(float_epochs=2, joint_epochs=2, finetune_epochs=2)


@pytest.fixture(scope="module")
def data(digits_tensors):
    return digits_tensors


@pytest.fixture(scope="module")
def trained(data):
    return train_ternary(TernaryOptions(spec=PE8X8, schedule=TINY, tile_sparsity=0.5, seed=0, quiet=True), data)


def test_budget_meets_the_total_and_spends_it_where_the_loss_is_flat():
    flat = np.linspace(1.0, 1.1, 11)          # 10 tiles, pruning costs little
    steep = np.linspace(1.0, 5.0, 11)         # 10 tiles, pruning costs a lot
    for want in range(0, 21):
        counts = budget_from_curves([flat, steep], want)
        assert sum(counts) == want
        assert counts[0] >= counts[1] or counts[0] == 10, (want, counts)
    assert budget_from_curves([flat, steep], 10) == [10, 0]


def test_budget_ignores_a_noisy_dip():
    # the dip at n = 8 (loss below n = 2..7) must not buy 8 pruned tiles when the level only allows 1
    bumpy = np.array([1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 3.0, 3.0])
    even = np.linspace(1.0, 2.0, 11)
    counts = budget_from_curves([bumpy, even], 6)
    assert counts == [1, 5]


def test_budget_rejects_more_than_there_is():
    with pytest.raises(ValueError):
        budget_from_curves([np.zeros(3), np.zeros(4)], 6)


def test_sensitivity_allocation_keeps_the_total_and_restores_the_masks(data):
    torch.manual_seed(0)
    model = DigitsNet()
    pruner = TilePruner(PE8X8, target=0.875).prepare(model.weighted_layers())
    uniform = [layer.final_count for layer in pruner.layers]
    assert uniform == allocate([layer.groups.count for layer in pruner.layers], 0.875)
    x_val, y_val = data.validation()
    curves = sensitivity_curves(model, pruner, x_val, y_val)
    assert set(curves) == {"conv2", "conv3", "fc"}          # conv1 stays dense
    assert all(len(curves[layer.name]) == layer.groups.count + 1 for layer in pruner.layers[1:])
    counts = sensitivity_allocation(model, pruner, x_val, y_val)
    assert sum(counts.values()) == sum(uniform) and counts["conv1"] == 0
    assert [layer.final_count for layer in pruner.layers] == list(counts.values())
    for layer in pruner.layers:   # measuring masked nothing for good
        assert bool(layer.mask.tile_keep.all()) and float(layer.mask.mask.min()) == 1.0


def test_schedule_rejects_an_unknown_allocation():
    with pytest.raises(TerwinError, match="allocation"):
        Schedule(allocation="random")


def test_live_slopes():
    k = np.array([2.0, 300.0, -3.0, 400.0])
    codes = np.array([[1, 0], [0, 0], [0, -1], [0, 0]])
    assert np.array_equal(live_slopes(k, codes), [2.0, 3.0, -3.0, 3.0])
    assert live_slopes(k, np.ones((4, 2))) is not None and np.array_equal(live_slopes(k, np.ones((4, 2))), k)
    assert np.array_equal(live_slopes(k, np.zeros((4, 2))), np.ones(4))


def test_a_dead_output_group_neither_silences_the_layer_nor_breaks_the_integer_model(trained, data):
    """All tiles of conv2's first output group pruned: those 8 channels are constants (running variance
    0, so k = γ/√ε ≈ 316γ). Their k must not set the layer's output scale — before `live_slopes` the
    scale rose ~100-fold and every conv2 activation rounded to 0 (the pe8x16 collapses at 87.5 %) — and
    the integer model must still follow the fake-quantized one within one unit on every channel."""
    model = copy.deepcopy(trained.model)
    pruner = trained.pruner
    conv2 = next(layer for layer in pruner.layers if layer.name == "conv2")
    keep = conv2.mask.tile_keep.numpy().reshape(conv2.groups.grid.shape).copy()
    module = dict((name, m) for name, m, _ in model.weighted_layers())["conv2"]
    mask = next(p for p in module.parametrizations.weight if hasattr(p, "tile_keep"))
    keep[0] = False
    mask.set_keep(keep)
    with torch.no_grad():
        latent_weight(module).mul_(mask.mask)
    reestimate_batchnorm(model, data.x_train)
    model.eval()
    block = model.blocks[1]
    codes, alpha = ternary_codes(block.conv)
    dead = ~codes.reshape(codes.shape[0], -1).any(axis=1)
    assert dead[:8].all() and not dead[8:].all()
    k, _ = bn_affine(block.bn)
    assert np.abs(k[dead]).min() > 10 * np.abs(k[~dead]).max()   # the raw slopes of the dead channels explode
    sync_activation_scales(model)
    s_in = model.blocks[0].act.scale
    assert float(block.act.min_scale) == pytest.approx(float(np.abs(k[~dead]).max() * alpha.max() * s_in))
    x = data.x_test[:64]
    with torch.no_grad():
        h = model.blocks[1](model.blocks[0](model.input_quant(x)))
    assert float((h[:, ~torch.from_numpy(dead)] > 0).float().mean()) > 0.1, "conv2 went silent"

    dep = export_ternary(model, PE8X8)
    ints = torch_int.trace(dep, torch_int.quantize_input(dep, x.numpy()))
    with torch.no_grad():
        expected = torch.round(model.blocks[1](ints[0].float() * s_in) / block.act.scale).to(torch.int64)
    assert int((ints[1] - expected).abs().max()) <= 1


def test_mask_lowest_masks_the_current_counts_and_leaves_the_masks_open():
    torch.manual_seed(1)
    model = DigitsNet()
    pruner = TilePruner(PE8X8, target=0.75).prepare(model.weighted_layers())
    pruner.ramp(0.5)
    pruner.mask_lowest()
    for layer in pruner.layers:
        keep = layer.mask.tile_keep.numpy()
        assert int((~keep).sum()) == layer.prune_count == round(0.5 * layer.final_count)
        rms = layer.groups.rms(latent_weight(layer.module).detach()).numpy()
        if layer.prune_count:
            assert rms[~keep].max() <= rms[keep].min()
    assert not pruner.frozen
    pruner.ramp(1.0)
    pruner.mask_lowest()
    assert [int((~layer.mask.tile_keep).sum()) for layer in pruner.layers] == [l.final_count for l in pruner.layers]
    pruner.step()
    frozen = [layer.mask.tile_keep.clone() for layer in pruner.layers]
    pruner.ramp(0.0)
    pruner.mask_lowest()   # frozen masks do not move
    assert all(bool((a == layer.mask.tile_keep).all()) for a, layer in zip(frozen, pruner.layers))


def test_with_ramp_masks_the_final_prune_removes_nothing_in_use(data):
    """Masked during the ramp, the tiles the final prune takes are already gone: the validation
    accuracy right after the prune is the one right before it (without masks the 87.5 % prune took
    it from 88-95 % to 34-90 %, docs/ternary.md)."""
    t = train_ternary(TernaryOptions(spec=PE8X8, schedule=Schedule(float_epochs=2, joint_epochs=2, finetune_epochs=1,
                                                                   ramp_masks=True),
                                     tile_sparsity=0.875, seed=0, quiet=True), data)
    assert t.accuracy_after_prune == t.accuracy_before_prune
