"""F(m x m, 3x3) Winograd convolution in torch: transform matrices, input tiles, `winograd_conv2d`.

The transform matrices come from `terwin.winograd` (one source for algo, sim and hw); the output
tile `m` is a parameter everywhere, although only F(2x2,3x3) is offered today.

Tiling (the same as `terwin.sim.reference.winograd_conv2d_acc` and the hardware): the padded input is
read in (m+2)x(m+2) tiles at stride m from the top-left corner; the last row/column of tiles may reach
past the padded input, where it reads zeros; outputs past the true output size are cropped. So odd
output sizes are handled with partial tiles.

`winograd_conv2d` runs on float tensors (training) and on int64 tensors (the integer evaluation in
`terwin.algo.torch_int`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from terwin import winograd


# -- transforms ----------------------------------------------------------------------------------

def transforms(m: int = 2, *, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B^T, G, A^T) of F(m x m, 3x3) as torch tensors (G holds halves; do not ask for an integer dtype)."""
    bt, g, at = winograd.matrices(m, 3)
    return tuple(torch.tensor(a, dtype=dtype, device=device) for a in (bt, g, at))


def integer_transforms(m: int = 2, *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B^T, A^T) as int64 tensors: the input and output transforms hold only 0 and +-1."""
    bt, _, at = winograd.matrices(m, 3)
    return torch.tensor(bt, dtype=torch.int64, device=device), torch.tensor(at, dtype=torch.int64, device=device)


def kernel_to_winograd(g: torch.Tensor, *, m: int = 2) -> torch.Tensor:
    """U = G g G^T for spatial 3x3 kernels g [..., 3, 3] -> [..., m+2, m+2]."""
    _, gm, _ = transforms(m, dtype=g.dtype, device=g.device)
    return gm @ g @ gm.T


def output_size(size: int, padding: int) -> int:
    return size + 2 * padding - 2


def input_tiles(x: torch.Tensor, *, padding: int, m: int = 2) -> tuple[torch.Tensor, int, int]:
    """Input tiles d [N, C, ty, tx, m+2, m+2] of x [N, C, H, W], and the true output size (Ho, Wo)."""
    n_in = m + 2
    h, w = x.shape[-2:]
    ho, wo = output_size(h, padding), output_size(w, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"input {h}x{w} with padding {padding} has no 3x3 output")
    ty, tx = winograd.tiles_per_side(ho, m), winograd.tiles_per_side(wo, m)
    # pad left/top by `padding`, right/bottom up to the last tile's far edge (never negative: ty*m >= ho)
    xp = F.pad(x, (padding, tx * m + 2 - w - padding, padding, ty * m + 2 - h - padding))
    return xp.unfold(2, n_in, m).unfold(3, n_in, m), ho, wo


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, *, padding: int, m: int = 2) -> torch.Tensor:
    """Y = A^T [sum_c U[o, c] * (B^T d_c B)] A per m x m output tile; x [N, C, H, W], u [O, C, m+2, m+2].

    Works on float tensors (training; float64 is exact for integer data in range) and on int64
    tensors (the integer evaluation: B^T and A^T are integer, so everything stays integer).
    """
    if x.dtype.is_floating_point:
        bt, _, at = transforms(m, dtype=x.dtype, device=x.device)
    else:
        bt, at = integer_transforms(m, device=x.device)
    n_in = m + 2
    u = u.to(x.dtype)
    d, ho, wo = input_tiles(x, padding=padding, m=m)
    n, c, ty, tx = d.shape[:4]
    o = u.shape[0]
    # row-major vec(B^T d B) = (B^T kron B^T) vec(d), and likewise for A^T M A: three plain matmuls
    d = d.permute(0, 2, 3, 1, 4, 5).reshape(n * ty * tx, c, n_in * n_in)
    v = d @ torch.kron(bt, bt).T                                          # B^T d B      [T, C, n*n]
    mm = torch.bmm(v.permute(2, 0, 1), u.reshape(o, c, -1).permute(2, 1, 0))  # sum_c U * V  [n*n, T, O]
    y = mm.permute(1, 2, 0) @ torch.kron(at, at).T                        # A^T M A      [T, O, m*m]
    y = y.reshape(n, ty, tx, o, m, m).permute(0, 3, 1, 4, 2, 5).reshape(n, o, ty * m, tx * m)
    return y[:, :, :ho, :wo]


__all__ = ["transforms", "integer_transforms", "kernel_to_winograd", "output_size", "input_tiles", "winograd_conv2d"]
