import numpy as np
from hypothesis import given, settings, strategies as st

from terwin.spec import HardwareSpec
from terwin.tiling import TileGrid

pow2 = st.sampled_from([1, 2, 4, 8, 16])


@settings(max_examples=150, deadline=None)
@given(rows=pow2, cols=pow2, out=st.integers(1, 40), cin=st.integers(1, 40), k=st.sampled_from([1, 2, 3, 5]))
def test_every_weight_lies_in_exactly_one_tile_slot(rows, cols, out, cin, k):
    spec = HardwareSpec(pe_rows=rows, pe_cols=cols)
    grid = TileGrid.for_weight((out, cin, k, k), spec)
    idx = grid.index
    real = idx[idx >= 0]
    assert sorted(real.tolist()) == list(range(out * cin * k * k))
    assert idx.shape == grid.shape + (rows, cols)
    # rows of a tile are consecutive output channels; a row never mixes outputs
    o_of = np.where(idx >= 0, idx // (cin * k * k), -1)
    for og in range(grid.out_groups):
        for r in range(rows):
            os_ = np.unique(o_of[og, :, :, r, :])
            assert set(os_.tolist()) <= {-1, og * rows + r}


@settings(max_examples=60, deadline=None)
@given(rows=pow2, cols=pow2, out=st.integers(1, 24), cin=st.integers(1, 24), seed=st.integers(0, 9))
def test_tiles_and_expand_are_inverse(rows, cols, out, cin, seed):
    spec = HardwareSpec(pe_rows=rows, pe_cols=cols)
    grid = TileGrid.for_weight((out, cin, 3, 3), spec)
    w = np.random.default_rng(seed).integers(-1, 2, size=(out, cin, 3, 3))
    tiles = grid.tiles(w)
    assert tiles.shape == grid.shape + (rows, cols)
    assert np.abs(tiles).sum() == np.abs(w).sum()
    keep = np.random.default_rng(seed + 1).integers(0, 2, size=grid.shape)
    masked = w * grid.expand(keep)
    assert np.array_equal(grid.occupied(masked), grid.occupied(w) & keep.astype(bool))


def test_first_layer_packs_taps_into_lanes():
    grid = TileGrid.for_weight((16, 1, 3, 3), HardwareSpec(pe_rows=8, pe_cols=8))
    assert (grid.taps_per_tile, grid.shape) == (8, (2, 2, 1))
    assert [grid.lane_source(0, 0, lane) for lane in range(8)] == [(t, 0) for t in range(8)]
    assert grid.lane_source(1, 0, 0) == (8, 0) and grid.lane_source(1, 0, 1) is None


def test_linear_layer_is_a_conv_over_its_whole_input():
    spec = HardwareSpec(pe_rows=4, pe_cols=8)
    grid = TileGrid.for_weight((10, 32 * 2 * 2), spec, in_shape=(32, 2, 2))
    assert grid.shape == (3, 4, 4)
    # lane l of tile (og=0, tg=t, cg) reads input feature c*HW + t, as torch.flatten orders (C, H, W)
    assert grid.index[0, 1, 2, 0, 3] == (2 * 8 + 3) * 4 + 1


@settings(max_examples=100, deadline=None)
@given(rows=pow2, cols=pow2, out=st.integers(1, 20), cin=st.integers(1, 20), k=st.sampled_from([1, 3, 5]))
def test_index_follows_lane_source(rows, cols, out, cin, k):
    """The vectorised index table is exactly the per-lane definition."""
    grid = TileGrid.for_weight((out, cin, k, k), HardwareSpec(pe_rows=rows, pe_cols=cols))
    for tg in range(grid.tap_groups):
        for cg in range(grid.channel_groups):
            for lane in range(cols):
                src = grid.lane_source(tg, cg, lane)
                for og in range(grid.out_groups):
                    for r in range(rows):
                        o = og * rows + r
                        want = -1 if src is None or o >= out else (o * cin + src[1]) * k * k + src[0]
                        assert grid.index[og, tg, cg, r, lane] == want


@settings(max_examples=80, deadline=None)
@given(rows=pow2, cols=pow2, out=st.integers(1, 20), cin=st.integers(1, 40), k=st.sampled_from([1, 3]),
       seed=st.integers(0, 9))
def test_expand_and_occupied_follow_the_index_table(rows, cols, out, cin, k, seed):
    """`expand` and `occupied` (a reshape when a tile holds one tap) agree with the index table."""
    grid = TileGrid.for_weight((out, cin, k, k), HardwareSpec(pe_rows=rows, pe_cols=cols))
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 100, size=grid.shape)
    expected = np.zeros(out * cin * k * k, dtype=values.dtype)
    valid = grid.index >= 0
    expected[grid.index[valid]] = np.broadcast_to(values[..., None, None], grid.index.shape)[valid]
    expanded = grid.expand(values)
    assert np.array_equal(expanded, expected.reshape(out, cin, k, k)) and expanded.flags.writeable
    assert grid.expand(values, dtype=np.float32).dtype == np.float32
    w = rng.integers(-1, 2, size=(out, cin, k, k)) * (rng.random((out, cin, k, k)) < 0.05)
    assert np.array_equal(grid.occupied(w), np.any(grid.tiles(w) != 0, axis=(-2, -1)))
