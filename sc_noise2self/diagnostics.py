"""Diagnostics of a split: how overdispersed the counts are, and how independent the halves are.

- :func:`estimate_overdispersion` gives the negative-binomial size per gene that the
  beta-binomial split (``split="negative_binomial"``) needs;
- :func:`noise_correlations` measures the correlation of the two halves' noise, the biology
  they share removed; :func:`half_correlations` is the raw version.

Both compare each cell with its neighbours, found from the other half of the genes, using the
PCA and kNN primitives of :mod:`sc_noise2self.embedding`; the calibration engine calls the
estimator when a user passes ``overdispersion="estimate"``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from ._rng import RandomState, row_stream_key
from ._validation import check_choice, check_counts, check_whole
from .embedding import build_graph, fit_pca, max_rank
from .transforms import apply_transform, normalize_to_depth

__all__ = ["estimate_overdispersion", "half_correlations", "noise_correlations"]


# Cells the estimate looks at: the sizes are per gene, so a sample of cells measures them
# (median error 9% on expressed genes at 5,000 of 20,000 simulated cells, 5% on all) at a
# cost that does not grow with the atlas (the neighbour means dominate it).
MAX_CELLS = 5000


def estimate_overdispersion(
    X, *, mean: str = "neighbours", n_neighbors: int = 15, max_cells: int | None = MAX_CELLS,
    random_state: RandomState = 0,
) -> np.ndarray:
    """Per-gene negative-binomial size ``b`` by moments, shrunk by empirical Bayes.

    Each count ``x`` is compared with an estimate ``m`` of its expected value ``s_i mu_ig``
    (``s_i``: library size over its mean). Under NB, ``Var(x) = mu + mu^2 / b``; ``m`` is an
    average of other cells, so ``(x - m)^2`` also holds ``m``'s own sampling variance, which
    is removed (see Notes). ``phi_g = 1 / b_g`` is then the summed excess variance over the
    summed squared means. Each ``phi_g`` is shrunk towards the precision-weighted mean over
    genes by its own sampling variance against the spread between genes (empirical Bayes):
    where genes share one ``b``, all get nearly the common value; where they differ, each
    keeps its own.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    mean
        How ``mu_ig`` is estimated. ``"neighbours"`` (default): the mean normalised count of
        each cell's nearest cells, so that differences between cell types are not taken for
        noise. The neighbours are found from the OTHER half of the genes (PCA of
        sqrt-normalised counts; genes alternate between halves by total count): neighbours
        chosen on a gene's own values share the cell's noise in it, which hid overdispersion
        (on simulated NB data with b = 0.5, the 40 most expressed genes came out at a median
        b of 0.8 and up to 4.9). ``"gene"``: one mean per gene, right only for homogeneous
        cells.
    n_neighbors
        Cells averaged for ``"neighbours"``.
    max_cells
        Estimate from this many cells drawn at random (without replacement) when there are
        more; None uses every cell. Only the drawn rows of a dask array are computed.
    random_state
        Seed of the draw of cells (its own stream: no split shares it). The same seed picks
        the same cells whatever the format or chunking.

    Returns
    -------
    Array of ``b`` per gene; ``inf`` where no overdispersion is seen (Poisson).

    Notes
    -----
    With ``m = (s_i / k) sum_j x_jg / s_j`` over ``k`` cells of the same expression,
    ``E[(x - m)^2 - (1 + w_i) m] = mu^2 phi (1 + 1/k)`` and
    ``E[m^2 - w_i m] = mu^2 (1 + phi / k)``, where ``w_i = (s_i / k^2) sum_j 1 / s_j``. Their
    summed ratio ``R`` gives ``phi = R k / (k + 1 - R)``. Neighbours whose true expression
    differs from the cell's add to the excess, so ``b`` can come out somewhat low where cell
    states vary continuously.
    """
    check_choice(mean, ("neighbours", "gene"), name="mean")
    if max_cells is not None:
        check_whole(max_cells, name="max_cells", minimum=3, hint="cells to estimate from")
    X = sparse.csr_matrix(_sampled_rows(X, max_cells, random_state), dtype=np.float64)
    # A cell without molecules has size 0 and says nothing of any gene's variance; kept, its
    # 1/size made every sum infinite and every gene came out Poisson.
    totals = np.asarray(X.sum(axis=1)).ravel()
    X, totals = X[totals > 0], totals[totals > 0]
    if X.shape[0] < 3:
        raise ValueError(
            f"estimate_overdispersion needs at least 3 cells with counts, got {X.shape[0]}; "
            "pass a number or per-gene sizes as overdispersion= instead."
        )
    from ._count_kernels import moment_sums  # numba: imported when used

    size = totals / totals.mean()
    if mean == "gene":
        k, model = X.shape[0], _gene_mean_model(X, size)
    else:
        k = min(n_neighbors, X.shape[0] - 1)
        model = _neighbour_mean_model(X, size, k)
    columns = sparse.csc_matrix(X)
    columns.sum_duplicates()  # also sorts the cells in each column, as the kernel needs
    sums = moment_sums(columns.data, columns.indices.astype(np.int64),
                       columns.indptr.astype(np.int64), size, *model, k)
    phi, variance = _excess_ratio(sums, k)
    with np.errstate(divide="ignore"):
        shrunk = _shrink(phi, variance)
        return np.where(shrunk > 0, 1.0 / shrunk, np.inf)


def _excess_ratio(sums: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``phi`` per gene and its sampling variance (NaN where the gene is never seen)."""
    excess, scale, e2, eo, o2 = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(scale > 0, excess / scale, np.nan)
        residual = np.clip(e2 - 2 * ratio * eo + ratio**2 * o2, 0.0, None)
        ratio = np.minimum(ratio, k)
        slope = k * (k + 1) / (k + 1 - ratio) ** 2  # d phi / d R
        variance = residual / scale**2 * slope**2
        return ratio * k / (k + 1 - ratio), variance


def _shrink(phi: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Empirical-Bayes shrinkage of ``phi`` towards the mean over genes.

    The spread between genes is the variance of ``phi`` less the mean sampling variance, over
    the genes measured to within half their value (unweighted moments: precision weights let
    the best-measured genes set the spread; rarely seen genes, whose variances are large and
    heavy-tailed, would swamp it). Each gene keeps ``spread / (spread + its variance)`` of its
    difference from the random-effects mean.
    """
    seen = np.isfinite(phi) & np.isfinite(variance)
    if not np.any(seen):
        return np.zeros(phi.shape)
    precise = seen & (variance < (phi / 2) ** 2)
    spread = 0.0
    if precise.sum() > 2:
        spread = max(0.0, float(np.var(phi[precise]) - np.mean(variance[precise])))
    weight = 1.0 / (spread + variance[seen] + 1e-12)
    centre = np.sum(weight * phi[seen]) / weight.sum()
    out = np.full(phi.shape, centre)
    out[seen] = centre + spread * weight * (phi[seen] - centre)
    return np.clip(out, 0.0, None)


def _sampled_rows(X, max_cells: int | None, random_state: RandomState):
    """``max_cells`` rows of ``X`` drawn at random, in their order (all when there are fewer)."""
    if max_cells is None or X.shape[0] <= max_cells:
        rows = X
    else:
        rng = np.random.default_rng(row_stream_key(random_state, "overdispersion"))
        rows = X[np.sort(rng.choice(X.shape[0], size=max_cells, replace=False))]
    if hasattr(rows, "compute"):  # dask: compute only these rows, and check them here
        rows = rows.compute()
        check_counts(rows, name="X (the cells sampled to estimate the NB sizes)")
    return rows


class ExpectedCounts(NamedTuple):
    """How :func:`moment_sums` forms each expected count ``m``, in its argument order."""

    reverse_indptr: np.ndarray  # per gene half, the reversed kNN graph (unused per gene)
    reverse_indices: np.ndarray
    half_of: np.ndarray  # each gene's half (whose graph gives its neighbours)
    noise: np.ndarray  # halves x cells: m's Poisson noise is noise * m
    gene_means: np.ndarray  # one normalised mean per gene, or empty for neighbour means


def _gene_mean_model(X, size: np.ndarray) -> ExpectedCounts:
    """:func:`moment_sums`' arguments for ``m = s_i mu_g``, one mean per gene.

    ``m``'s Poisson noise is ``w_i m`` with ``w_i = (s_i / n^2) sum_j 1 / s_j``.
    """
    n_cells = X.shape[0]
    noise = size * np.sum(1.0 / size) / n_cells**2
    no_graph = np.zeros((2, 1), dtype=np.int64)
    return ExpectedCounts(no_graph, no_graph, np.zeros(X.shape[1], dtype=np.int64),
                          np.vstack([noise, noise]),
                          np.asarray(X.sum(axis=0)).ravel() / size.sum())


def _neighbour_mean_model(X, size: np.ndarray, k: int) -> ExpectedCounts:
    """:func:`moment_sums`' arguments for ``m`` from each cell's ``k`` nearest other cells.

    Each gene's neighbours come from the other half of the genes (see
    :func:`estimate_overdispersion`); with fewer than 4 genes, from all of them. The graph of
    each half is given reversed (for each cell, the cells that have it as a neighbour), and
    ``m``'s Poisson noise is ``w_i m`` with ``w_i = (s_i / k^2) sum_j 1 / s_j`` over the
    neighbours.
    """
    halves = _gene_halves(X)
    graphs = [_neighbours(X[:, other], k) for other in halves[::-1]]
    if len(graphs) == 1:
        graphs *= 2
    half_of = np.zeros(X.shape[1], dtype=np.int64)
    if len(halves) == 2:
        half_of[halves[1]] = 1
    noise = np.vstack([size * np.sum(1.0 / size[graph], axis=1) / k**2 for graph in graphs])
    reverse = [_reversed(graph, X.shape[0]) for graph in graphs]
    return ExpectedCounts(np.vstack([indptr for indptr, _ in reverse]),
                          np.vstack([indices for _, indices in reverse]), half_of, noise,
                          np.zeros(0))


def _reversed(graph: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """For each cell, the cells that have it among their neighbours (CSR pointers, indices)."""
    targets = graph.ravel()
    order = np.argsort(targets, kind="stable")
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(targets, minlength=n_cells), out=indptr[1:])
    return indptr, (order // graph.shape[1]).astype(np.int64)


def _gene_halves(X) -> list[np.ndarray]:
    """Genes split in two by alternating along their total count (all genes if under 4)."""
    if X.shape[1] < 4:
        return [np.arange(X.shape[1])]
    order = np.argsort(-np.asarray(X.sum(axis=0)).ravel(), kind="stable")
    return [np.sort(order[0::2]), np.sort(order[1::2])]


def _neighbours(X, k: int) -> np.ndarray:
    """Each cell's ``k`` nearest other cells from the sqrt-normalised counts ``X``."""
    totals = np.asarray(X.sum(axis=1)).ravel()
    depth = float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0
    values = apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)
    return build_graph(values, k + 1, exact_for_few_cells=True).indices[:, 1:]




def half_correlations(Xa, Xb) -> np.ndarray:
    """Per-gene Pearson correlation across cells between two halves (sparse stays sparse).

    About 0 when the split suits the data AND the cells share one expression and depth;
    positive when binomial splitting meets overdispersed counts. On real data the halves
    share each cell's biology and depth too, which makes it positive for any split; use
    :func:`noise_correlations` to see the shared noise alone.

    Parameters
    ----------
    Xa, Xb
        The halves, cells x genes.

    Returns
    -------
    One correlation per gene (NaN where a half is constant).
    """
    n = Xa.shape[0]
    product = Xa.multiply(Xb) if sparse.issparse(Xa) else np.asarray(Xa) * np.asarray(Xb)

    def column_sums(M) -> np.ndarray:
        return np.asarray(M.sum(axis=0), dtype=np.float64).ravel()

    def column_squares(M) -> np.ndarray:
        squared = M.multiply(M) if sparse.issparse(M) else np.square(np.asarray(M, float))
        return column_sums(squared)

    mean_a, mean_b = column_sums(Xa) / n, column_sums(Xb) / n
    covariance = column_sums(product) / n - mean_a * mean_b
    var_a = column_squares(Xa) / n - mean_a**2
    var_b = column_squares(Xb) / n - mean_b**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return covariance / np.sqrt(var_a * var_b)


def noise_correlations(
    Xa, Xb, *, n_neighbors: int = 15, n_pcs: int = 30
) -> np.ndarray:
    """Per-gene correlation across cells between the NOISE of two halves, signal removed.

    Both halves of a cell carry its biology and its depth, so :func:`half_correlations` is
    positive on real data even for a split that suits it. Here each half's depth-normalised
    count is compared with what the cell's neighbours predict, and the residuals of the two
    halves are correlated: the biology the halves share cancels, their shared noise stays.
    About 0 when the split suits the data; about ``mu / (mu + 2 b)`` (``p = 0.5``) for a
    binomial split of NB(mu, b) counts.

    Parameters
    ----------
    Xa, Xb
        The halves, cells x genes (numpy or scipy.sparse), e.g. from :func:`split_counts`.
    n_neighbors
        Neighbours whose mean predicts each cell.
    n_pcs
        Principal components of the embedding in which neighbours are found.

    Returns
    -------
    One correlation per gene (NaN where a residual is constant, e.g. a gene never seen).

    Notes
    -----
    For each gene ``g`` everything that defines the prediction comes from the OTHER half of
    the genes (genes alternate between halves by total count), never from ``g`` itself:
    the size factors ``s_i`` (totals over those genes), the PCA embedding ``z`` of their
    sqrt-normalised counts, and each cell's ``k`` nearest other cells ``N(i)`` in it. Given
    the truth the genes' noise is independent, so choosing neighbours cannot correlate the
    residuals of ``g``; neighbours chosen on ``g``'s own counts, or on half A, would pick
    cells whose noise in ``g`` resembles the cell's and hide shared noise. With
    ``a_i = A_ig / s_i`` the residual is ``a_i - mean_{N(i)} a`` less its least-squares fit
    on ``[1, z_i - mean_{N(i)} z]`` (one gradient per gene, fitted over all cells), which
    removes most of the expression difference between a cell and its neighbours' centre; the
    same for ``b``. What remains of that difference adds a small positive bias that grows
    where biology dominates noise (on simulated low-rank Poisson data with strong structure,
    median over genes about 0.01, 0.06-0.08 for the 40 most expressed genes). Both halves
    are divided by the same size factor, so its sampling noise adds a little more where the
    other half of the genes holds few counts per cell (measured on homogeneous Poisson data:
    0.19 with 4-6 genes, 0.11 with 10, 0.007-0.014 with 300 genes at about 1500 UMIs per
    cell); use it on hundreds of genes.
    """
    Xa = sparse.csr_matrix(Xa, dtype=np.float64)
    Xb = sparse.csr_matrix(Xb, dtype=np.float64)
    if Xa.shape != Xb.shape:
        raise ValueError(f"The halves differ in shape: {Xa.shape} and {Xb.shape}.")
    both = Xa + Xb
    k = min(n_neighbors, Xa.shape[0] - 2)
    if k < 1:
        raise ValueError(f"noise_correlations needs at least 3 cells, got {Xa.shape[0]}.")
    if Xa.shape[1] < 4:
        # Each gene's prediction must come from other genes; with fewer than 4 genes a half
        # would have to predict itself, and its residuals would be anti-correlated (-1).
        raise ValueError(
            f"noise_correlations needs at least 4 genes, got {Xa.shape[1]}: each gene is "
            "predicted from the other half of the genes. Pass more genes."
        )
    out = np.full(Xa.shape[1], np.nan)
    halves = _gene_halves(both)
    for genes, other in zip(halves, halves[::-1], strict=True):
        average, design, size = _neighbour_design(both[:, other], k, n_pcs)
        scale = sparse.diags(np.divide(1.0, size, out=np.zeros_like(size), where=size > 0))
        out[genes] = _residual_correlation(scale @ Xa[:, genes], scale @ Xb[:, genes],
                                           average, design)
    return out


def _neighbour_design(X, k: int, n_pcs: int):
    """From other genes' counts: the neighbour-averaging operator, the residual design, sizes.

    Returns the sparse cells x cells matrix averaging each cell's ``k`` nearest other cells,
    an orthonormal basis of ``[1, z - mean_N z]``, and the size factors (0 for empty cells).
    """
    totals = np.asarray(X.sum(axis=1)).ravel()
    seen = totals > 0
    size = totals / totals[seen].mean() if np.any(seen) else np.zeros_like(totals)
    depth = float(np.median(totals[seen])) if np.any(seen) else 1.0
    values = apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)
    n_pcs = max(1, min(n_pcs, max_rank(values.shape)))
    embedding = fit_pca(values, n_pcs).scores
    # Without a query, kneighbors leaves each cell out of its own neighbours (ties included).
    neighbours = NearestNeighbors().fit(embedding).kneighbors(n_neighbors=k)[1]
    n_cells = X.shape[0]
    average = sparse.csr_matrix(
        (np.full(neighbours.size, 1.0 / k), neighbours.ravel(),
         np.arange(0, neighbours.size + 1, k)), shape=(n_cells, n_cells),
    )
    offsets = embedding - average @ embedding
    design = np.linalg.qr(np.column_stack([np.ones(n_cells), offsets]))[0]
    return average, design, size


def _residual_correlation(a, b, average, design, chunk: int = 4096) -> np.ndarray:
    """Per-column correlation of ``(I - Q Q^T)(I - M) a`` and the same of ``b``, kept sparse.

    ``r' = r - Q (Q^T r)`` with ``r = a - M a``, so ``r'_a . r'_b = r_a . r_b - (Q^T r_a) .
    (Q^T r_b)``; the residuals are built by row blocks only, never as one dense matrix.
    """
    basis = design - average.T @ design  # (I - M)^T Q, so that Q^T r = basis^T a
    qa, qb = (np.asarray((m.T @ basis).T) for m in (a, b))
    products = np.zeros((3, a.shape[1]))
    for start in range(0, a.shape[0], chunk):
        rows = slice(start, min(start + chunk, a.shape[0]))
        block = average[rows]
        r_a, r_b = a[rows] - block @ a, b[rows] - block @ b
        for i, (left, right) in enumerate(((r_a, r_b), (r_a, r_a), (r_b, r_b))):
            products[i] += np.asarray(left.multiply(right).sum(axis=0)).ravel()
    covariance = products[0] - np.sum(qa * qb, axis=0)
    var_a = products[1] - np.sum(qa * qa, axis=0)
    var_b = products[2] - np.sum(qb * qb, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tiny = 1e-12 * (products[1] * products[2])
        return np.where(var_a * var_b > tiny, covariance / np.sqrt(var_a * var_b), np.nan)

