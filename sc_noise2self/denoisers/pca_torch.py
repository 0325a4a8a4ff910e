"""The PCA family on a torch device: factorise and score where the halves are.

The split and the normalisation run on the device already
(:func:`sc_noise2self.losses.device_halves`), or on the host when they would not fit. Here
half A's randomized PCA and the loss at every rank follow the numpy path step for step
(:func:`sc_noise2self.embedding.randomized_pca`, :mod:`sc_noise2self.denoisers.rank_loss`):
the same seeded test matrix, the same SVQB re-orthonormalisation, the same closed form for
the linear loss and the same table lookups for a non-linear one. So the curves equal the
CPU's within float32 rounding, and on the CPU this module is tested against them. A matrix
on the device is used whole (:class:`OnDevice`); one on the host is moved to the device a
block of rows at a time for every product (:class:`RowBlocks`). This module imports torch:
import it lazily.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from .._count_kernels_torch import csr_tensor, csr_to_device
from .._device import free_device_bytes
from ..embedding import CentredProducts, PCAFit, randomized_factors, svqb_transform
from ..losses import Halves
from .rank_loss import BProducts, linear_mse_from_products, sum_squares

_CELL_BLOCK = 4096  # cells per block of the non-linear loss (block x genes float32)
_MIN_BLOCK_ROWS = 256  # the fewest rows moved to the device at a time


class OnDevice:
    """A float32 torch CSR matrix that lives on its device: products use it whole."""

    def __init__(self, X: torch.Tensor):
        self.X, self.shape, self.device = X, tuple(X.shape), X.device
        self.transposed = None  # X.T as CSR, built only where X.T (CSC) @ U is refused

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """``X @ V``."""
        return self.X @ V

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """``X.T @ U``: the CSC view where the backend multiplies it, else a CSR copy."""
        if self.transposed is None:
            try:
                return self.X.t() @ U
            except (RuntimeError, NotImplementedError):
                self.transposed = self.X.t().to_sparse_csr()
        return self.transposed @ U

    def sum_squares(self) -> float:
        """The sum of the squared values, in float64."""
        values = self.X.values().to(torch.float64)
        return float((values * values).sum())

    def dense_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The chosen rows, dense float32, on the device."""
        return dense_rows(self.X, rows)


class RowBlocks:
    """A float32 scipy CSR matrix on the host, moved to ``device`` in blocks of rows.

    Each block holds at most ``budget`` bytes on the device (and at least
    :data:`_MIN_BLOCK_ROWS` rows); the results are those of :class:`OnDevice` up to the
    order of float32 sums.
    """

    def __init__(self, X, device, budget: float):
        self.X = sparse.csr_matrix(X, dtype=np.float32)
        self.shape, self.device = self.X.shape, device
        bytes_per_row = 16.0 * max(self.X.nnz, 1) / max(self.shape[0], 1)
        self.rows = int(max(_MIN_BLOCK_ROWS, min(self.shape[0], budget / bytes_per_row)))

    def _blocks(self):
        for start in range(0, self.shape[0], self.rows):
            block = self.X[start:start + self.rows]
            parts = csr_to_device(block, self.device)
            yield start, csr_tensor(parts[1], parts[2], parts[0], block.shape)

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """``X @ V``, a block of rows at a time."""
        out = torch.empty(self.shape[0], V.shape[1], dtype=V.dtype, device=self.device)
        for start, block in self._blocks():
            out[start:start + block.shape[0]] = block @ V
        return out

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """``X.T @ U``, summed over blocks of rows."""
        out = torch.zeros(self.shape[1], U.shape[1], dtype=U.dtype, device=self.device)
        for start, block in self._blocks():
            out += block.t() @ U[start:start + block.shape[0]]
        return out

    def sum_squares(self) -> float:
        """The sum of the squared values, in float64, on the host (bounded chunks)."""
        return sum_squares(self.X.data)

    def dense_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The chosen rows, dense float32, on the device."""
        return torch.as_tensor(self.X[rows.cpu().numpy()].toarray(), device=self.device)


def as_operator(X, device) -> OnDevice | RowBlocks:
    """A torch CSR matrix used whole, or a scipy one streamed to ``device`` in row blocks."""
    if isinstance(X, torch.Tensor):
        return OnDevice(X)
    return RowBlocks(X, device, budget=max(free_device_bytes(device) / 4, 1.0))


def randomized_pca_torch(X: OnDevice | RowBlocks, n_comps: int, seed: int, *,
                         center: bool = True, n_iter: int | None = None, oversample: int = 10,
                         start: np.ndarray | None = None) -> tuple[PCAFit, torch.Tensor]:
    """:func:`~sc_noise2self.embedding.randomized_pca` of a float32 CSR matrix on a device.

    Returns
    -------
    The fit (components and mean as float64 numpy; its scores stay on the device, in the
    second value, float32) and the scores.
    """
    device, (n_rows, n_cols) = X.device, X.shape
    ones = torch.ones(n_rows, 1, dtype=torch.float32, device=device)
    mean = (X.rmatmul(ones).ravel().to(torch.float64) / n_rows if center
            else torch.zeros(n_cols, dtype=torch.float64, device=device))

    def times(V: torch.Tensor, out=None) -> torch.Tensor:  # (X - 1 mu^T) V, float32
        V = V.to(torch.float32)
        return X.matmul(V) - (mean.to(torch.float32) @ V)

    def transposed_times(U: torch.Tensor) -> torch.Tensor:  # (X - 1 mu^T)^T U, float64
        return X.rmatmul(U).to(torch.float64) - torch.outer(mean, U.to(torch.float64).sum(0))

    products = CentredProducts(times, transposed_times, _orthonormalise,
                               lambda M: torch.as_tensor(M, device=device))
    components, scores = randomized_factors(products, torch, X.shape, n_comps, seed,
                                            n_iter=n_iter, oversample=oversample, start=start)
    return PCAFit(None, components.cpu().numpy(), mean.cpu().numpy()), scores


def _orthonormalise(Y: torch.Tensor) -> torch.Tensor:
    """SVQB from the float64 Gram (:func:`~sc_noise2self.embedding.svqb_transform`)."""
    Y64 = Y.to(torch.float64)
    return Y @ svqb_transform(Y64.T @ Y64, torch).to(torch.float32)


def rank_loss_curve_torch(fit: PCAFit, scores: torch.Tensor, halves: Halves,
                          score_cells: np.ndarray | None = None) -> np.ndarray:
    """Mean squared error against half B at every rank ``0..K`` (as ``rank_loss_curve``)."""
    conversion = halves.conversion
    B = as_operator(halves.b, scores.device)
    if conversion.is_linear:
        return linear_mse_from_products(fit.mean, fit.components, _b_products(B, scores),
                                        tuple(B.shape), conversion.scale)
    cells = (torch.arange(scores.shape[0], device=scores.device) if score_cells is None
             else torch.as_tensor(score_cells, device=scores.device))
    return _table_curve(fit, scores, B, halves, cells)


def _b_products(B: OnDevice | RowBlocks, scores: torch.Tensor) -> BProducts:
    ones = torch.ones(B.shape[0], 1, dtype=torch.float32, device=B.device)
    scores64 = scores.to(torch.float64)
    return BProducts(
        b_sq=B.sum_squares(),
        b_colsum=B.rmatmul(ones).ravel().to(torch.float64).cpu().numpy(),
        bt_scores=B.rmatmul(scores).to(torch.float64).cpu().numpy(),
        scores_sum=scores64.sum(0).cpu().numpy(),
        scores_gram=(scores64.T @ scores64).cpu().numpy(),
    )


def dense_rows(X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The chosen rows of a torch CSR matrix as a dense float32 block."""
    crow, col, values = X.crow_indices(), X.col_indices(), X.values()
    starts, lengths = crow[rows], crow[rows + 1] - crow[rows]
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=X.device), lengths)
    offsets = torch.arange(owner.numel(), device=X.device) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths)
    entries = starts[owner] + offsets
    out = torch.zeros(rows.numel(), X.shape[1], dtype=torch.float32, device=X.device)
    out[owner, col[entries]] = values[entries].to(torch.float32)
    return out


def _table_curve(fit: PCAFit, scores: torch.Tensor, B: OnDevice | RowBlocks, halves: Halves,
                 cells: torch.Tensor) -> np.ndarray:
    """The non-linear conversion's loss, a block of cells at a time, as the numba kernel."""
    table = halves.conversion_table()
    device = scores.device
    values = torch.as_tensor(table.converted, dtype=torch.float32, device=device)
    inv_step = np.float32(1.0 / table.step)
    top = float(values.numel() - 1)  # at the end m stops at size - 2, the fraction at 1
    mean = torch.as_tensor(fit.mean, dtype=torch.float32, device=device) * inv_step
    components = torch.as_tensor(fit.components, dtype=torch.float32, device=device)
    sums = torch.zeros(components.shape[0] + 1, dtype=torch.float64, device=device)
    for start in range(0, cells.numel(), _CELL_BLOCK):
        block = cells[start:start + _CELL_BLOCK]
        observed = B.dense_rows(block)
        position = mean.expand(block.numel(), -1).clone()
        block_scores = scores[block] * inv_step
        for k in range(components.shape[0] + 1):
            if k:
                position += block_scores[:, k - 1:k] * components[k - 1]
            x = position.clamp(0.0, top)
            m = x.to(torch.int64).clamp(max=values.numel() - 2)
            converted = values[m] + (x - m) * (values[m + 1] - values[m])
            sums[k] += ((converted - observed) ** 2).sum(dim=1, dtype=torch.float64).sum()
    return (sums / (cells.numel() * B.shape[1])).cpu().numpy()
