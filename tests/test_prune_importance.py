"""PE-tile pruning by Gao et al.'s importance (`TilePruner(criterion="importance")`, `terwin compress
--prune-criterion importance`): the tiles pruned are those of lowest Σ E[g²]·w² / n_g."""
import numpy as np
import pytest
import torch
from torch import nn

from terwin import cli
from terwin.algo.ternary.flow import TernaryOptions, compress
from terwin.algo.ternary.pruning import GroupLasso, TilePruner
from terwin.errors import TerwinError
from terwin.spec import PE4X4
from terwin.tiling import TileGrid


def _pruned_layer(criterion, grads, *, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(8, 12, 3, bias=False)
    pruner = TilePruner(PE4X4, target=0.5, dense=(), criterion=criterion).prepare([("conv", conv, None)])
    for g in grads:                                       # training steps: the loss (w * g).sum() has gradient g
        (conv.weight * torch.as_tensor(g, dtype=torch.float32)).sum().backward()
        conv.zero_grad()
    w = conv.parametrizations.weight.original.detach().double().numpy().copy()
    pruner.step()
    return pruner, conv, w


def _lowest(scores, count):
    return set(np.argsort(scores, kind="stable")[:count].tolist())


def test_importance_prunes_the_tiles_of_lowest_importance_times_weight_squared():
    rng = np.random.default_rng(0)
    shape = (12, 8, 3, 3)
    grads = [(rng.normal(size=shape) * rng.choice([0.01, 1.0, 5.0], size=shape)).astype(np.float32) for _ in range(3)]
    pruner, conv, w = _pruned_layer("importance", grads)
    ids = TileGrid.for_weight(shape, PE4X4).group_ids().reshape(-1)
    importance = np.mean([g.astype(np.float64) ** 2 for g in grads], axis=0)
    n = np.bincount(ids)
    scores = np.bincount(ids, weights=(importance * w * w).reshape(-1)) / n
    layer = pruner.layers[0]
    assert np.array_equal(pruner.importance(layer).numpy(), importance)     # the mean of the squared gradients
    pruned = set(np.flatnonzero(~layer.mask.tile_keep.numpy()).tolist())
    assert len(pruned) == layer.final_count > 0
    assert pruned == _lowest(scores, layer.final_count)
    # magnitude ranks by the RMS norm and, on these gradients, prunes other tiles
    mag, _, w_mag = _pruned_layer("magnitude", grads)
    rms = np.sqrt(np.bincount(ids, weights=(w_mag * w_mag).reshape(-1)) / n)
    pruned_mag = set(np.flatnonzero(~mag.layers[0].mask.tile_keep.numpy()).tolist())
    assert pruned_mag == _lowest(rms, layer.final_count) and pruned_mag != pruned
    # frozen masks: later steps do not change the importance
    before = pruner.importance(layer).clone()
    (conv.weight * 3).sum().backward()
    assert torch.equal(pruner.importance(layer), before)


def test_the_regularizer_gradient_is_not_importance():
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 12, 3, bias=False)
    pruner = TilePruner(PE4X4, target=0.5, dense=(), criterion="importance",
                        regularizer=GroupLasso(strength=0.5)).prepare([("conv", conv, None)])
    grads = [rng.normal(size=(12, 8, 3, 3)).astype(np.float32) for _ in range(2)]
    for g in grads:
        loss = (conv.weight * torch.as_tensor(g)).sum() + pruner.penalty()
        loss.backward()
        conv.zero_grad()
    layer = pruner.layers[0]
    assert layer.steps == 2           # the penalty's own gradient pass is not a step
    want = np.mean([g.astype(np.float64) ** 2 for g in grads], axis=0)
    # the task gradient, up to float32 rounding of (task + penalty) gradient; the penalty's share is far larger
    assert np.allclose(pruner.importance(layer).numpy(), want, rtol=1e-4, atol=1e-6)


def test_bad_criterion_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(TerwinError, match="--prune-criterion"):
        TilePruner(PE4X4, target=0.5, criterion="hessian")
    with pytest.raises(TerwinError, match="--prune-criterion"):
        TernaryOptions(prune_criterion="hessian")
    assert cli.main(["compress", "--prune-criterion", "hessian", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and err.count("\n") == 1, err


def test_compress_with_the_importance_criterion():
    dep, report = compress(TernaryOptions(epochs_scale=0.03, quiet=True, prune_criterion="importance"))
    assert report["options"]["prune_criterion"] == "importance"
    assert report["reference_mismatches"] == 0 and report["sparsity"] == 0.5
