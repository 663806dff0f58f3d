"""PE-tile grouping against `terwin.tiling.TileGrid`, sparsity allocation and the regularizers."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from terwin.algo.ternary.pruning import GroupLasso, TileGroups, TileMask, TilePruner, WeightPenaltyClipping, allocate
from terwin.errors import TerwinError
from terwin.spec import PE4X4, PE8X8, PE8X16, HardwareSpec
from terwin.tiling import TileGrid

POW2 = st.sampled_from([1, 2, 4, 8, 16])


@st.composite
def layer_cases(draw):
    spec = HardwareSpec(pe_rows=draw(POW2), pe_cols=draw(POW2))
    out = draw(st.integers(1, 20))
    if draw(st.booleans()):
        shape = (out, draw(st.integers(1, 20)), *(draw(st.sampled_from([1, 3])),) * 2)
        in_shape = None
    else:
        in_shape = (draw(st.integers(1, 12)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        shape = (out, int(np.prod(in_shape)))
    return spec, shape, in_shape


@settings(max_examples=60, deadline=None)
@given(layer_cases())
def test_every_weight_in_exactly_one_group_and_group_is_the_tile(case):
    spec, shape, in_shape = case
    groups = TileGroups(TileGrid.for_weight(shape, spec, in_shape=in_shape))
    grid = groups.grid
    n = int(np.prod(shape))
    owners = groups.index[groups.valid].numpy()
    counts = np.bincount(owners, minlength=n)
    assert np.all(counts == 1), f"weights owned by {sorted(set(counts.tolist()))} groups, expected exactly 1"
    assert groups.count == grid.size
    w = torch.arange(1, n + 1, dtype=torch.float64).reshape(shape)
    gathered = groups.gather(w).numpy().reshape(grid.shape + (spec.pe_rows, spec.pe_cols))
    np.testing.assert_array_equal(gathered, grid.tiles(w.numpy()))
    # group g of the flat order is the tile (og, tg, cg) of TileGrid.group_ids
    ids = grid.group_ids().reshape(-1)
    for g in range(groups.count):
        members = groups.index[g][groups.valid[g]].numpy()
        assert set(members.tolist()) == set(np.flatnonzero(ids == g).tolist())


@settings(max_examples=60, deadline=None)
@given(layer_cases(), st.data())
def test_pruning_a_group_zeroes_exactly_that_tile(case, data):
    spec, shape, in_shape = case
    groups = TileGroups(TileGrid.for_weight(shape, spec, in_shape=in_shape))
    g = data.draw(st.integers(0, groups.count - 1))
    mask = TileMask(groups, shape)
    keep = np.ones(groups.count, dtype=bool)
    keep[g] = False
    mask.set_keep(keep)
    w = torch.randn(shape, dtype=torch.float64) + 3.0  # no zeros
    out = mask(w).numpy()
    zeroed = out == 0
    expected = groups.grid.group_ids().reshape(shape) == g
    np.testing.assert_array_equal(zeroed, expected)
    np.testing.assert_array_equal(out[~zeroed], w.numpy()[~zeroed])
    assert not groups.grid.occupied(out).reshape(-1)[g]


def test_norms_and_rms():
    spec = PE4X4
    groups = TileGroups(TileGrid.for_weight((4, 4, 1, 1), spec))
    assert groups.count == 1
    w = torch.full((4, 4, 1, 1), 0.5)
    assert groups.norms(w).item() == pytest.approx(2.0)
    assert groups.rms(w).item() == pytest.approx(0.5)
    # a partial tile: 3 input channels on 4 lanes -> 12 real weights
    groups = TileGroups(TileGrid.for_weight((4, 6, 1, 1), spec))
    assert groups.sizes.tolist() == [16, 8]


@pytest.mark.parametrize("target", [0.0, 0.3, 0.5, 0.75, 0.9])
def test_allocation_hits_target_and_keeps_first_layer_dense(target):
    counts = [4, 72, 288, 64]  # the digits net on pe8x8
    pruned = allocate(counts, target)
    assert pruned[0] == 0
    assert sum(pruned) == int(np.ceil(target * sum(counts) - 1e-9))
    assert sum(pruned) / sum(counts) >= target
    rates = [p / c for p, c in zip(pruned[1:], counts[1:])]
    assert max(rates) - min(rates) <= 1.0 / min(counts[1:]) + 1e-12, rates


def test_allocation_rounds_up():
    pruned = allocate([2, 36, 144, 32], 0.75)  # the digits net on pe8x16: 160.5 tiles -> 161
    assert sum(pruned) == 161 and pruned[0] == 0


def test_ramp_moves_the_regularizer_target_but_not_the_final_prune():
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    pruner = TilePruner(PE8X8, target=0.5, regularizer=WeightPenaltyClipping(strength=1e-2), dense=())
    pruner.prepare([("conv", conv, None)])
    final = pruner.layers[0].prune_count
    assert final == 18
    pruner.ramp(0.0)
    assert pruner.layers[0].prune_count == 0 and pruner.penalty().item() == 0
    pruner.ramp(0.5)
    assert pruner.layers[0].prune_count == 9
    pruner.step()
    assert pruner.layers[0].prune_count == final
    assert int((~pruner.layers[0].mask.tile_keep).sum()) == final


def test_allocation_rejects_impossible_targets():
    with pytest.raises(TerwinError, match="tile sparsity"):
        allocate([4, 4], 1.0)
    with pytest.raises(TerwinError, match="only 4 of 104"):
        allocate([100, 4], 0.5)


def test_wpc_penalises_only_groups_below_tau():
    norms = torch.tensor([0.1, 0.2, 0.3, 0.4, 5.0, 6.0], requires_grad=True)
    sizes = torch.full((6,), 4)
    wpc = WeightPenaltyClipping(strength=0.5)
    loss = wpc(norms, sizes, prune_count=3)
    # τ = third-smallest RMS (0.3/2) -> clip at τ·sqrt(4) = 0.3
    assert loss.item() == pytest.approx(0.5 * (0.1 + 0.2 + 0.3 + 0.3 + 0.3 + 0.3))
    loss.backward()
    grad = norms.grad.tolist()
    assert grad[:2] == pytest.approx([0.5, 0.5]) and grad[3:] == [0.0, 0.0, 0.0], grad  # grad[2] sits at the tie
    lasso_norms = norms.detach().clone().requires_grad_(True)
    GroupLasso(strength=0.5)(lasso_norms, sizes, 3).backward()
    assert lasso_norms.grad.tolist() == pytest.approx([0.5] * 6)


def test_pruner_lifecycle_prunes_lowest_tiles_per_layer():
    torch.manual_seed(0)
    conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
    conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    spec = PE8X8
    pruner = TilePruner(spec, target=0.5, regularizer=WeightPenaltyClipping(strength=1e-2))
    pruner.prepare([("conv1", conv1, None), ("conv2", conv2, None)])
    assert [layer.prune_count for layer in pruner.layers] == [0, 10]  # conv1 (2 tiles) dense; 18 tiles -> 10 of 20
    # make tile 5 of conv2 the smallest by far
    latent = conv2.parametrizations.weight.original
    groups = pruner.layers[1].groups
    with torch.no_grad():
        flat = latent.view(-1)
        flat[groups.index[5][groups.valid[5]]] = 1e-6
    assert pruner.penalty().item() > 0
    pruner.step()
    masks = pruner.tile_masks()
    assert masks["conv1"].all()
    assert masks["conv2"].shape == (2, 9, 1) and int(masks["conv2"].sum()) == 8
    assert masks["conv2"].reshape(-1)[5] == 0
    # masked weights are zero in the forward pass and get no gradient
    w = conv2.weight
    keep = groups.grid.expand(masks["conv2"]).astype(bool)
    assert torch.all(w[torch.from_numpy(~keep)] == 0)
    conv2(torch.randn(2, 8, 4, 4)).sum().backward()
    assert torch.all(latent.grad[torch.from_numpy(~keep)] == 0)
    assert pruner.penalty().item() == 0  # frozen


def test_pe8x16_first_layer_tiles_pack_taps():
    spec = PE8X16
    groups = TileGroups(TileGrid.for_weight((16, 1, 3, 3), spec))
    assert groups.count == 2 and groups.sizes.tolist() == [72, 72]
