"""Leaf: the split and the normalised halves of :mod:`sc_noise2self._count_kernels`, in torch.

The same counter-based draws, so a split on a GPU gives the halves a CPU gives: uint64
SplitMix64 arithmetic is done in int64 tensors (multiplication and addition wrap modulo
2**64 in two's complement; right shifts are made logical by masking), and each count is
drawn by the same inversion, vectorised over the entries still drawing. Tested against the
numba kernels on the CPU, bit for bit. This module imports torch: import it lazily.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ._count_kernels import (
    DRAWS_PER_STAGE,
    GOLDEN,
    MIX_1,
    MIX_2,
    PIECE,
    TRANSFORM_CODES,
    zero_probabilities,
)


def _signed(value) -> int:
    """A uint64 constant as the int64 with the same bits."""
    value = int(value)
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX_1, _MIX_2 = _signed(GOLDEN), _signed(MIX_1), _signed(MIX_2)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shift_right(x, 30)) * _MIX_1
    x = (x ^ _shift_right(x, 27)) * _MIX_2
    return x ^ _shift_right(x, 31)


def row_states(key: np.ndarray, rows: torch.Tensor, totals: torch.Tensor) -> torch.Tensor:
    """Each row's SplitMix64 start, as :func:`sc_noise2self._count_kernels.row_state`."""
    k0, k1 = (_signed(k) for k in key)
    s = _mix(k0 + _GOLDEN * (rows + 1))
    return _mix(s ^ (k1 + _GOLDEN * (totals + 1)))


def _uniforms(states: torch.Tensor, genes: torch.Tensor, draw: int) -> torch.Tensor:
    bits = _mix(states + _GOLDEN * (genes * (2 * DRAWS_PER_STAGE) + draw + 1))
    return (_shift_right(bits, 11).to(torch.float64) + 0.5) * (1.0 / 9007199254740992.0)


def _inverse_binomial(m: torch.Tensor, q: float, u: torch.Tensor,
                      start: torch.Tensor) -> torch.Tensor:
    """Smallest k with CDF(k) >= u for Binomial(m, q), q <= 1/2, entry by entry."""
    ratio = q / (1.0 - q)
    mf = m.to(torch.float64)
    f = start[m]
    cdf = f.clone()
    k = torch.zeros_like(mf)
    active = torch.nonzero((u > cdf) & (k < mf)).ravel()
    while active.numel():
        ka, ma = k[active], mf[active]
        step = (ma - ka) / (ka + 1.0) * ratio
        f[active] = f[active] * step
        k[active] = ka + 1.0
        cdf[active] = cdf[active] + f[active]
        still = (u[active] > cdf[active]) & (k[active] < ma)
        active = active[still]
    return k.to(torch.int64)


def binomial(n: torch.Tensor, q: float, states: torch.Tensor, genes: torch.Tensor,
             stage: int) -> torch.Tensor:
    """Binomial(n, q) from each entry's uniforms of one stage, as the numba kernel."""
    if q <= 0.0:
        return torch.zeros_like(n)
    if q >= 1.0:
        return n.clone()
    flip = q > 0.5
    small = 1.0 - q if flip else q
    start = torch.as_tensor(zero_probabilities(small), device=n.device)
    drawn = torch.zeros_like(n)
    left = n.clone()
    piece = 0
    while True:
        todo = torch.nonzero(left > 0).ravel()
        if not todo.numel():
            break
        m = torch.clamp(left[todo], max=PIECE)
        u = _uniforms(states[todo], genes[todo], stage * DRAWS_PER_STAGE + piece)
        drawn[todo] += _inverse_binomial(m, small, u, start)
        left[todo] -= m
        piece += 1
    return n - drawn if flip else drawn


def split_values(values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, key: np.ndarray,
                 p: float) -> torch.Tensor:
    """Half A's share of every stored count of a CSR matrix (int64), on its device."""
    rows = _entry_rows(crow, values.numel())
    counts = values.to(torch.int64)
    totals = torch.zeros(crow.numel() - 1, dtype=torch.int64, device=values.device)
    totals.index_add_(0, rows, counts)
    states = row_states(key, torch.arange(totals.numel(), device=values.device), totals)
    return binomial(counts, float(p), states[rows], col.to(torch.int64), 0)


def _entry_rows(crow: torch.Tensor, nnz: int) -> torch.Tensor:
    n_rows = crow.numel() - 1
    return torch.repeat_interleave(torch.arange(n_rows, device=crow.device), torch.diff(crow),
                                   output_size=nnz)


def normalised_halves(values: torch.Tensor, a_values: torch.Tensor, crow: torch.Tensor,
                      col: torch.Tensor, depths: tuple[float, float], transform: str,
                      shape: tuple[int, int]):
    """Half A's row totals and both halves as float32 torch CSR matrices.

    As :func:`sc_noise2self._count_kernels.normalised_halves`, value for value.
    """
    rows = _entry_rows(crow, values.numel())
    parts = (a_values, values.to(torch.int64) - a_values)
    halves, totals_a = [], None
    for part, depth in zip(parts, depths, strict=True):
        totals = torch.zeros(shape[0], dtype=torch.float64, device=values.device)
        totals.index_add_(0, rows, part.to(torch.float64))
        scale = torch.where(totals > 0, depth / totals.clamp(min=1.0), 0.0).to(torch.float32)
        keep = part > 0
        data = _transformed(part[keep].to(torch.float32) * scale[rows[keep]], transform)
        per_row = torch.zeros(shape[0] + 1, dtype=torch.int64, device=values.device)
        per_row[1:] = torch.bincount(rows[keep], minlength=shape[0]).cumsum(0)
        halves.append(csr_tensor(per_row, col[keep], data, shape))
        totals_a = totals if totals_a is None else totals_a
    return totals_a, halves[0], halves[1]


def _transformed(values: torch.Tensor, transform: str) -> torch.Tensor:
    # In float64, rounded once: torch's float32 sqrt on the CPU is not correctly rounded
    # (1 ulp off numpy's on 17% of values), the float64 one is.
    code = TRANSFORM_CODES[transform]
    if code == 1:
        return torch.sqrt(values.to(torch.float64)).to(torch.float32)
    if code == 2:
        return torch.log1p(values.to(torch.float64)).to(torch.float32)
    return values


def csr_to_device(X, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Values, row pointers and columns of a canonical scipy CSR matrix, on ``device``."""
    return (torch.as_tensor(X.data, device=device),
            torch.as_tensor(X.indptr.astype(np.int64), device=device),
            torch.as_tensor(X.indices.astype(np.int64), device=device))


def normalised_matrix(values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
                      depth: float, transform: str, shape: tuple[int, int]) -> torch.Tensor:
    """All counts scaled to ``depth`` per row and transformed: a float32 torch CSR matrix.

    The arithmetic is that of ``normalize_to_depth`` then ``apply_transform``.
    """
    rows = _entry_rows(crow, values.numel())
    totals = torch.zeros(shape[0], dtype=torch.float64, device=values.device)
    totals.index_add_(0, rows, values.to(torch.float64))
    scale = torch.where(totals > 0, depth / totals.clamp(min=1.0), 0.0).to(torch.float32)
    data = _transformed(values.to(torch.float32) * scale[rows], transform)
    return csr_tensor(crow, col, data, shape)


def csr_tensor(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
               shape: tuple[int, int]) -> torch.Tensor:
    """A torch CSR matrix, without torch's notices that CSR support is in beta."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support",
                                category=UserWarning)
        warnings.filterwarnings("ignore", message="Sparse invariant checks",
                                category=UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape)
