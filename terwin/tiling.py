"""PE tiles: the block of weights that one pass (one cycle) of the PE array consumes.

The ternary engine computes `pe_rows` output channels at once; each row takes `pe_cols` lanes of
(activation, weight) per cycle. A layer's weights W[out, in, kh, kw] are cut into tiles of
`pe_rows` outputs x `pe_cols` lanes:

* when in_channels >= pe_cols, a tile holds `pe_cols` input channels at one kernel tap
  (lane l <- channel cg*pe_cols + l, tap t); channel groups are padded with zero lanes;
* when in_channels < pe_cols (the network's first layer), a tile packs
  `taps_per_tile = pe_cols // in_channels` taps: lane l <- tap tg*taps_per_tile + l // in_channels,
  channel l % in_channels, so a 1-channel image does not waste 7 of 8 lanes.

Taps are numbered t = ky * kw + kx. A linear layer over a (C, H, W) input is the convolution with
kernel (H, W) and a 1x1 output, so it tiles the same way. Output channels are padded up to a
multiple of `pe_rows`. The grid of tiles is (out_groups, tap_groups, channel_groups); the hardware
visits tiles in that order (row-major) for each output pixel, and skips pruned ones.

Pruning (algo), the file format (tile masks), the hardware (decoder, controller) and the cycle
model all take the geometry from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .spec import HardwareSpec, ceil_div


@dataclass(frozen=True)
class TileGrid:
    out_channels: int
    in_channels: int
    kh: int
    kw: int
    rows: int  # pe_rows
    cols: int  # pe_cols

    @classmethod
    def for_weight(cls, weight_shape, spec: HardwareSpec, *, in_shape=None) -> "TileGrid":
        """Grid for a conv weight [out, in, kh, kw] or a linear weight [out, C*H*W] over `in_shape`."""
        if len(weight_shape) == 4:
            o, c, kh, kw = weight_shape
        elif len(weight_shape) == 2:
            if in_shape is None:
                raise ValueError("a linear layer's tile grid needs its (C, H, W) input shape")
            o = weight_shape[0]
            c, kh, kw = in_shape
        else:
            raise ValueError(f"weights must be 2-D or 4-D, not {len(weight_shape)}-D")
        return cls(int(o), int(c), int(kh), int(kw), spec.pe_rows, spec.pe_cols)

    @property
    def taps(self) -> int:
        return self.kh * self.kw

    @property
    def taps_per_tile(self) -> int:
        return max(1, self.cols // self.in_channels)

    @property
    def out_groups(self) -> int:
        return ceil_div(self.out_channels, self.rows)

    @property
    def tap_groups(self) -> int:
        return ceil_div(self.taps, self.taps_per_tile)

    @property
    def channel_groups(self) -> int:
        return ceil_div(self.in_channels, self.cols)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.out_groups, self.tap_groups, self.channel_groups)

    @property
    def tiles_per_out_group(self) -> int:
        return self.tap_groups * self.channel_groups

    @property
    def size(self) -> int:
        return self.out_groups * self.tiles_per_out_group

    def lane_source(self, tap_group: int, channel_group: int, lane: int):
        """(tap, channel) feeding `lane` of a tile, or None for a padding lane."""
        if self.in_channels < self.cols:
            j, c = divmod(lane, self.in_channels)
            if j >= self.taps_per_tile:
                return None
            t = tap_group * self.taps_per_tile + j
            return (t, c) if t < self.taps else None
        c = channel_group * self.cols + lane
        return (tap_group, c) if c < self.in_channels else None

    @cached_property
    def index(self) -> np.ndarray:
        """int64 [og, tg, cg, rows, cols]: flat index into W[out, in, kh, kw], or -1 for padding.

        The vectorised form of `lane_source` (a test checks them against each other), so that
        ResNet-sized layers take milliseconds."""
        tg = np.arange(self.tap_groups)[:, None, None]
        cg = np.arange(self.channel_groups)[None, :, None]
        lane = np.arange(self.cols)[None, None, :]
        if self.in_channels < self.cols:
            j, c = np.divmod(lane, self.in_channels)
            t = tg * self.taps_per_tile + j
            valid = (j < self.taps_per_tile) & (t < self.taps)
            c = c + 0 * cg
        else:
            c = cg * self.cols + lane
            t = tg + 0 * c
            valid = c < self.in_channels
        t, c, valid = np.broadcast_arrays(t, c, valid)  # [tg, cg, cols]
        o = np.arange(self.out_groups)[:, None] * self.rows + np.arange(self.rows)[None, :]  # [og, rows]
        o5 = o[:, None, None, :, None]
        idx = (o5 * self.in_channels + c[None, :, :, None, :]) * self.taps + t[None, :, :, None, :]
        keep = valid[None, :, :, None, :] & (o5 < self.out_channels)
        idx = np.where(keep, idx, -1).astype(np.int64)
        idx.setflags(write=False)
        return idx

    def tiles(self, weight) -> np.ndarray:
        """[og, tg, cg, rows, cols] view of a weight array (NumPy), padding lanes zero."""
        flat = np.asarray(weight).reshape(-1)
        idx = self.index
        out = flat[np.maximum(idx, 0)]
        out[idx < 0] = 0
        return out

    def expand(self, tile_values, dtype=None) -> np.ndarray:
        """Per-tile values [og, tg, cg] -> per-weight array [out, in, kh, kw] (inverse of grouping)."""
        tile_values = np.asarray(tile_values)
        if self.in_channels >= self.cols:  # one tap a tile: a broadcast, no index table (ResNet-sized layers)
            og, tg, cg = self.shape
            v = tile_values.astype(dtype or tile_values.dtype, copy=False).transpose(0, 2, 1)  # [og, cg, tg]
            full = np.broadcast_to(v[:, None, :, None, :], (og, self.rows, cg, self.cols, tg))
            full = full.reshape(og * self.rows, cg * self.cols, tg)[:self.out_channels, :self.in_channels]
            return full.copy().reshape(self.out_channels, self.in_channels, self.kh, self.kw)  # writable, C order
        full = np.broadcast_to(tile_values[..., None, None], self.index.shape)
        out = np.zeros(self.out_channels * self.in_channels * self.taps, dtype=dtype or tile_values.dtype)
        valid = self.index >= 0
        out[self.index[valid]] = full[valid]
        return out.reshape(self.out_channels, self.in_channels, self.kh, self.kw)

    def group_ids(self) -> np.ndarray:
        """int64 [out, in, kh, kw]: the flat tile number (og, tg, cg row-major) of every weight."""
        ids = np.arange(self.size, dtype=np.int64).reshape(self.shape)
        return self.expand(ids)

    def occupied(self, weight) -> np.ndarray:
        """bool [og, tg, cg]: tiles holding at least one nonzero weight."""
        if self.in_channels >= self.cols:  # one tap a tile: group the weights by reshaping (as `expand`)
            og, tg, cg = self.shape
            nz = np.zeros((og * self.rows, cg * self.cols, tg), dtype=bool)
            nz[:self.out_channels, :self.in_channels] = \
                np.asarray(weight).reshape(self.out_channels, self.in_channels, self.taps) != 0
            return nz.reshape(og, self.rows, cg, self.cols, tg).any(axis=(1, 3)).transpose(0, 2, 1)
        return np.any(self.tiles(weight) != 0, axis=(-2, -1))
