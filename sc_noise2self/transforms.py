"""Library-size normalisation, variance-stabilising transforms, and depth conversion.

A half that holds a share ``p`` of the molecules is normalised to depth ``p * M`` (``M`` the
median total count of the full data), so its entries behave like counts at that depth. A
prediction made at depth ``a`` is moved to depth ``b`` with :class:`DepthConversion`, the
interpolation that molecular cross-validation uses: ``E[f(Poisson(lambda * a))] ->
E[f(Poisson(lambda * b))]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse, stats

from ._validation import check_choice

Transform = Literal["sqrt", "log1p", "none"]
TRANSFORMS: tuple[str, ...] = ("sqrt", "log1p", "none")

_FUNCTIONS = {"sqrt": np.sqrt, "log1p": np.log1p, "none": lambda x: x}
# Above this Poisson mean the second-order delta method is accurate to ~1e-6.
_EXACT_MEAN_LIMIT = 1000.0


def library_sizes(X) -> np.ndarray:
    """Total counts per cell (row sums) as a 1-D float64 array, accumulated in float64."""
    if sparse.issparse(X) and X.format == "csr" and X.nnz > 1_000_000:
        # scipy's product would first copy every value to float64.
        from ._sparse_kernels import row_sums

        return row_sums(X.data, X.indptr)
    return np.asarray(X @ np.ones(X.shape[1]), dtype=np.float64).ravel()


def normalize_to_depth(
    X, target: float, totals: np.ndarray | None = None, *, dtype=np.float32, inplace: bool = False
):
    """Scale each cell's counts to sum to ``target``; return a new float matrix.

    Parameters
    ----------
    X
        Cells x genes counts, numpy or scipy.sparse (CSR or CSC; COO is converted to CSR).
    target
        The total each cell is scaled to.
    totals
        Per-cell totals, computed from ``X`` when not given.
    dtype
        Floating dtype of the result; float32, as in scanpy, halves memory.
    inplace
        For a CSR or CSC ``X``: replace its values and keep its index arrays, so that no copy
        of the sparsity pattern is made. Only for matrices the caller owns.

    Returns
    -------
    A matrix of the same kind as ``X`` (``X`` itself when ``inplace``). Cells with a zero
    total stay zero.
    """
    totals = library_sizes(X) if totals is None else np.asarray(totals, dtype=np.float64)
    scale = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    if not sparse.issparse(X):
        return (np.asarray(X, dtype=dtype) * scale[:, None].astype(dtype)).astype(dtype, copy=False)
    out = X if inplace and X.format in ("csr", "csc") else X.tocsr(copy=True)
    if out.data.dtype != dtype:
        out.data = out.data.astype(dtype)
    _scale_rows(out, scale.astype(dtype))
    return out


# Stored values per block of :func:`_scale_rows`: a row's factor broadcast to all of a split
# half's values at once was a temporary as large as the half (0.25 GB at 200,000 cells).
_SCALE_BLOCK = 1 << 22


def _scale_rows(X, row_values: np.ndarray) -> None:
    """Multiply each row of a CSR or CSC matrix by its value, in place."""
    if X.format == "csc":
        X.data *= row_values[X.indices]
        return
    indptr = X.indptr
    start = 0
    while start < indptr.size - 1:
        # int(): an int32 pointer plus the block would wrap past 2**31 stored values.
        stop = int(np.searchsorted(indptr, int(indptr[start]) + _SCALE_BLOCK, side="right")) - 1
        stop = min(max(stop, start + 1), indptr.size - 1)
        rows = slice(indptr[start], indptr[stop])
        X.data[rows] *= np.repeat(row_values[start:stop], np.diff(indptr[start:stop + 1]))
        start = stop


def apply_transform(X, transform: Transform, *, inplace: bool = False):
    """Apply ``sqrt``, ``log1p`` or ``none`` elementwise, keeping sparse data sparse.

    Parameters
    ----------
    X
        Non-negative float matrix, numpy or scipy.sparse.
    transform
        Name of the transform; each maps 0 to 0, so sparsity is kept.
    inplace
        Overwrite ``X`` instead of returning a copy.

    Returns
    -------
    The transformed matrix (``X`` itself when ``inplace``).
    """
    check_choice(transform, TRANSFORMS, name="transform")
    func = _FUNCTIONS[transform]
    out = X if inplace else X.copy()
    values = out.data if sparse.issparse(out) else out
    if transform == "none":
        return out
    if np.issubdtype(values.dtype, np.floating):
        func(values, out=values)  # no temporary as large as the values
    else:
        values[...] = func(values)
    return out


def expected_transform(mu: np.ndarray, transform: Transform) -> np.ndarray:
    """Return ``E[f(Poisson(mu))]`` for each entry of ``mu``.

    Exact by summing the Poisson series up to ``mu = 1000``, and by the second-order delta
    method ``f(mu) + f''(mu) * mu / 2`` above, where its error is about 2e-6 or less.

    Parameters
    ----------
    mu
        Non-negative Poisson means.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"``.

    Returns
    -------
    Array of the same shape as ``mu``.
    """
    check_choice(transform, TRANSFORMS, name="transform")
    mu = np.asarray(mu, dtype=np.float64)
    if transform == "none":
        return mu.copy()
    out = np.empty_like(mu)
    small = mu <= _EXACT_MEAN_LIMIT
    out[small] = _series_expectation(mu[small], _FUNCTIONS[transform])
    big = mu[~small]
    if transform == "sqrt":
        out[~small] = np.sqrt(big) - 0.125 / np.sqrt(big)
    else:
        out[~small] = np.log1p(big) - big / (2.0 * (1.0 + big) ** 2)
    return out


def _series_expectation(mu: np.ndarray, func) -> np.ndarray:
    out = np.empty_like(mu)
    order = np.argsort(mu)
    # Blocks of similar means keep each (means x support) pmf table small.
    for start in range(0, mu.size, 256):
        chosen = order[start : start + 256]
        top = mu[chosen].max()
        k = np.arange(int(top + 12 * np.sqrt(top) + 30) + 1)
        out[chosen] = stats.poisson.pmf(k[None, :], mu[chosen][:, None]) @ func(k)
    return out


@dataclass(frozen=True)
class DepthConversion:
    """Map ``E[f(Poisson(lambda * a))]`` to ``E[f(Poisson(lambda * b))]`` for a transform ``f``.

    Parameters
    ----------
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"``.
    depth_from, depth_to
        The relative depths ``a`` and ``b`` (e.g. ``p`` and ``1 - p``).
    """

    transform: str
    depth_from: float
    depth_to: float

    @property
    def ratio(self) -> float:
        """``depth_to / depth_from``."""
        return self.depth_to / self.depth_from

    @property
    def is_identity(self) -> bool:
        """True when the depths are equal, so predictions need no change."""
        return np.isclose(self.depth_from, self.depth_to, rtol=1e-12, atol=0)

    @property
    def is_linear(self) -> bool:
        """True when the map is ``y -> scale * y`` (equal depths, or no transform)."""
        return self.is_identity or self.transform == "none"

    @property
    def scale(self) -> float:
        """The factor of a linear conversion."""
        if not self.is_linear:
            raise ValueError("A conversion through a non-linear transform has no single scale.")
        return 1.0 if self.is_identity else self.ratio

    def table(self, y_max: float, size: int = 1 << 16) -> ConversionTable:
        """Tabulate the conversion on a uniform grid of source values ``0..y_max``.

        The exact expectations are computed on a fine geometric grid of Poisson means and
        interpolated onto the uniform grid, so that compiled kernels can look values up.
        """
        y_max = max(float(y_max), 1e-6)
        mu_top = _mean_reaching(y_max, self.transform)
        mu = np.concatenate([[0.0], np.geomspace(1e-4, mu_top, 4000)])
        y_from = expected_transform(mu, self.transform)
        y_to = expected_transform(mu * self.ratio, self.transform)
        grid = np.linspace(0.0, y_max, size)
        return ConversionTable(
            step=grid[1], converted=np.interp(grid, y_from, y_to), means=np.interp(grid, y_from, mu)
        )

    def convert(self, y: np.ndarray, table: ConversionTable | None = None) -> np.ndarray:
        """Move predictions ``y`` from depth ``a`` to depth ``b``.

        A tabulated (non-linear) conversion maps negative ``y`` to 0; a linear one scales it.
        """
        if self.is_linear:
            return y * self.scale
        table = table if table is not None else self.table(np.max(y))
        return np.interp(y, table.grid, table.converted)

    def to_mean(self, y: np.ndarray, table: ConversionTable | None = None) -> np.ndarray:
        """Invert ``y = E[f(Poisson(mu))]`` at the source depth to the Poisson mean ``mu``."""
        table = table if table is not None else self.table(np.max(y))
        return np.interp(y, table.grid, table.means)


@dataclass(frozen=True)
class ConversionTable:
    """A :class:`DepthConversion` on the uniform grid ``0, step, 2 step, ...``.

    ``converted`` holds the values at the target depth and ``means`` the Poisson means at the
    source depth; between nodes both are linear, beyond the last node constant.
    """

    step: float
    converted: np.ndarray
    means: np.ndarray

    @property
    def grid(self) -> np.ndarray:
        """The source values at the nodes."""
        return self.step * np.arange(self.converted.size)


def _mean_reaching(y_max: float, transform: str) -> float:
    """A Poisson mean whose expected transformed value exceeds ``y_max``."""
    y_max = max(y_max, 1.0)
    if transform == "sqrt":
        return 2.0 * (y_max + 1.0) ** 2
    if transform == "log1p":
        return float(np.expm1(min(y_max + 1.0, 700.0)))
    return 2.0 * y_max + 1.0


def normalised_values(counts, depth: float, transform: str, columns=None):
    """Counts normalised to ``depth`` and transformed, for all genes or ``columns`` only.

    Library sizes come from every gene, so a subset of columns is scaled as in the whole.
    A large CSR result shares ``counts``' index arrays: read it, do not change its pattern
    in place (``eliminate_zeros``, ``sort_indices``), or the counts' pattern changes too.
    """
    totals = library_sizes(counts)
    if columns is not None:
        counts = counts[:, columns]
    if sparse.issparse(counts) and counts.format == "csr" and counts.nnz > 1_000_000:
        from ._count_kernels import normalised_data

        # One compiled pass; the result shares the caller's index arrays (read only) and
        # owns its values alone, half the memory of a full copy of the pattern.
        check_choice(transform, TRANSFORMS, name="transform")
        scale = np.divide(depth, totals, out=np.zeros_like(totals), where=totals > 0)
        data = normalised_data(counts.data, counts.indptr, scale, transform)
        return sparse.csr_matrix((data, counts.indices, counts.indptr), shape=counts.shape,
                                 copy=False)
    return apply_transform(normalize_to_depth(counts, depth, totals), transform, inplace=True)
