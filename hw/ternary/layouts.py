"""Bit layouts of the ternary engine, in one place.

The hardware (`amaranth.lib.data` views) and the memory images (`TernaryProgram.memories()`) take
the field offsets from these factories, so no module slices magic offsets by hand. The
requantization constants use the shared `terwin.hw.common.requant.param_layout`.

Ternary code (2 bits): bit 0 `nonzero`, bit 1 `negative`: 0b00 -> 0, 0b01 -> +1, 0b11 -> -1
(0b10 is never written and decodes as 0).
"""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from terwin.intmath import signed_bits

TERNARY_CODE = data.StructLayout({"nonzero": 1, "negative": 1})


def lanes_layout(spec, width: int, *, is_signed: bool = False) -> data.ArrayLayout:
    """`pe_cols` lanes of `width`-bit values."""
    return data.ArrayLayout(signed(width) if is_signed else unsigned(width), spec.pe_cols)


def tile_codes_layout(spec) -> data.ArrayLayout:
    """codes[row][lane] of one PE tile."""
    return data.ArrayLayout(data.ArrayLayout(TERNARY_CODE, spec.pe_cols), spec.pe_rows)


def weight_word_layout(spec, *, lm_bits: int, coff_bits: int) -> data.StructLayout:
    """One kept tile's header in the weight memory (its codes, `tile_codes_layout`, are in the codes
    memory at the same address).

    lm: row of the lane map (which kernel tap / channel each lane reads); coff: address offset of the
    tile's channel group; last: last kept tile of its output group.
    """
    return data.StructLayout({
        "lm": unsigned(max(1, lm_bits)),
        "coff": unsigned(max(1, coff_bits)),
        "last": 1,
    })


def lane_map_layout(spec, *, k_bits: int, aoff_bits: int) -> data.ArrayLayout:
    """Per lane: kernel row/col of the tap it reads and its address offset from the pixel base."""
    lane = data.StructLayout({"ky": unsigned(k_bits), "kx": unsigned(k_bits), "aoff": unsigned(aoff_bits)})
    return data.ArrayLayout(lane, spec.pe_cols)


# -- what travels with a tile through the MAC pipeline ------------------------------------------------

def coord_bits(program) -> int:
    """Signed width of a pixel coordinate (with padding, kernel and pool-window offsets)."""
    coord_max = max(max(s.in_shape[1:]) + max(s.kh, s.kw) + 2 * max(s.stride, 1) * max(s.pool_k, 1)
                    for s in program.stages)
    return signed_bits(-coord_max, coord_max)


def pixel_bits(program) -> int:
    """Signed width of a pixel's address within a (padded) input map."""
    pix_max = max((s.in_shape[1] + 2 * s.padding + s.kh) * (s.in_shape[2] + 2 * s.padding + s.kw)
                  for s in program.stages)
    return signed_bits(-pix_max, pix_max)


def group_bits(program) -> int:
    """Width of an output-group number within a stage."""
    return max(1, (max(2, max(s.out_groups for s in program.stages)) - 1).bit_length())


def pixel_index_bits(program) -> int:
    """Width of an output pixel's index (0 .. out_h * out_w) within its channel."""
    return max(1, max(s.out_h * s.out_w for s in program.stages).bit_length())


def channel_base_bits(program) -> int:
    """Width of an output address's channel part (the output group's first channel)."""
    plane = max(s.out_h * s.out_w for s in program.stages)
    chmax = 2 * (max(program.n_scores, program.bank_depth) + program.spec.pe_rows * plane)
    return max(1, chmax.bit_length())


def conv_pixel_bits(program) -> int:
    """Width of a conv output pixel's index (0 .. conv_h * conv_w) within its channel."""
    return max(1, max(s.conv_h * s.conv_w for s in program.stages).bit_length())


def _residual_fields(program) -> dict:
    """What a job or channel carries for the residual read (only in a program with residuals): the
    conv output pixel (before the fused pool) and the channel part of the residual map's address."""
    if not program.has_residual:
        return {}
    plane = max(s.conv_h * s.conv_w for s in program.stages)
    res_max = 2 * (program.bank_depth + program.spec.pe_rows * plane)
    return {"conv_pixel": unsigned(conv_pixel_bits(program)), "res_address": unsigned(res_max.bit_length())}


def job_layout(program) -> data.StructLayout:
    """One job (an output pixel of an output group, at one pool-window position).

    group: output group; channel_base: its first channel's output address offset; pixel: the pooled
    output pixel's index; window_first/window_last: first/last position of its pool window;
    stage_last: the stage's last job; with residuals, conv_pixel and res_address (the group's first
    channel's offset in the residual map)."""
    return data.StructLayout({
        "group": unsigned(group_bits(program)), "channel_base": unsigned(channel_base_bits(program)),
        "pixel": unsigned(pixel_index_bits(program)), "window_first": 1, "window_last": 1, "stage_last": 1,
        **_residual_fields(program),
    })


def tile_layout(program) -> data.StructLayout:
    """One issued tile: valid; first/last tile of its job; iy0/ix0: the input coordinates of its
    window origin (kernel tap 0, padding subtracted); pixel_base: their address offset; its job."""
    cbits, pbits = coord_bits(program), pixel_bits(program)
    return data.StructLayout({
        "valid": 1, "first": 1, "last": 1, "iy0": signed(cbits), "ix0": signed(cbits),
        "pixel_base": signed(pbits), "job": job_layout(program),
    })


def lane_sums_layout(program):
    """The sums a drain step hands the requantizers: one per out lane (a plain signed value with one)."""
    acc = signed(program.acc_bits)
    return acc if program.out_lanes == 1 else data.ArrayLayout(acc, program.out_lanes)


def channel_layout(program) -> data.StructLayout:
    """One output channel of a job on its way through the requantizer to the writer.

    channel: output channel within the stage; address: its output address offset (channel part);
    pixel, window_first, window_last: of its job; stage_last: the stage's last channel; with
    residuals, conv_pixel and res_address (the channel part of its residual's address)."""
    log_rows = (program.spec.pe_rows - 1).bit_length()
    return data.StructLayout({
        "channel": unsigned(group_bits(program) + log_rows), "address": unsigned(channel_base_bits(program)),
        "pixel": unsigned(pixel_index_bits(program)), "window_first": 1, "window_last": 1, "stage_last": 1,
        **_residual_fields(program),
    })
