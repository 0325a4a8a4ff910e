"""Step 1 on count data: partition each cell's molecules into two halves.

For Poisson counts, ``Xa | X ~ Binomial(X, p)`` and ``Xb = X - Xa`` are independent given the
true expression, with means ``p * lambda`` and ``(1 - p) * lambda`` (molecular cross-validation,
Batson, Royer & Webber 2019).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse

from ._row_streams import row_stream_key, split_rows
from ._validation import check_choice, check_counts, check_fraction, is_dask_array

SPLIT_METHODS = ("binomial", "negative_binomial")

RandomState = int | np.random.Generator | np.random.SeedSequence | None


def make_rng(random_state: RandomState) -> np.random.Generator:
    """Return a numpy Generator for an int, SeedSequence, Generator or None."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def spawn_seeds(random_state: RandomState, n: int) -> list[np.random.SeedSequence]:
    """Return ``n`` independent child seeds, reproducible from ``random_state``.

    Unlike ``SeedSequence.spawn``, this leaves ``random_state`` untouched, so passing the
    same seed object twice gives the same children.
    """
    if isinstance(random_state, np.random.Generator):
        parent = random_state.bit_generator.seed_seq
    elif isinstance(random_state, np.random.SeedSequence):
        parent = random_state
    else:
        parent = np.random.SeedSequence(random_state)
    return [
        np.random.SeedSequence(
            parent.entropy, spawn_key=(*parent.spawn_key, i), pool_size=parent.pool_size
        )
        for i in range(n)
    ]


def split_counts(
    X,
    p: float = 0.5,
    *,
    random_state: RandomState = 0,
    method: Literal["binomial", "negative_binomial"] = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
):
    """Split count matrix ``X`` molecule by molecule into two halves that sum to ``X``.

    Parameters
    ----------
    X
        Cells x genes raw counts: a numpy array or a scipy.sparse matrix or array (CSR, CSC or
        COO), or a dask array of such chunks (split lazily, chunk by chunk). Integer dtypes,
        or floats whose values are all integral.
    p
        Expected share of each count that goes to the first half, strictly between 0 and 1.
    random_state
        Seed, ``SeedSequence`` or ``Generator``. The same seed gives bit-identical halves,
        whatever the dask chunking: each cell draws from its own stream, indexed by its row.
    method
        ``"binomial"``: ``Xa ~ Binomial(X, p)``, which makes the halves independent given the
        truth when the counts are Poisson. ``"negative_binomial"``: ``Xa ~ Binomial(X, pi)``
        with ``pi ~ Beta(p b, (1 - p) b)`` for gene size ``b`` (count splitting / data
        thinning), which makes the halves independent NB(p mu, p b) and NB((1-p) mu,
        (1-p) b) when the counts are NB(mu, b).
    overdispersion
        The NB size ``b``: one number, one per gene, or ``"estimate"``
        (:func:`estimate_overdispersion`). ``inf`` means Poisson for that gene. Only with
        ``method="negative_binomial"``.
    sample_ratio
        MCV's overlap correction: the share ``r`` of each cell's molecules that the data
        captured. Two independent draws from the cell would share molecules when ``r`` is
        not small, so each observed molecule goes to A only, B only or both, with the shares
        of :func:`overlap_shares`; then ``Xa + Xb >= X``. None (or 0) splits plainly.

    Returns
    -------
    Xa, Xb
        Two matrices of the input's type, sparse format and dtype with ``Xa + Xb == X``
        exactly (for dask input: two lazy dask arrays, nothing computed yet). Sparse halves
        store no zeros, so they never hold more non-zeros than ``X``. The input is not
        modified.

    Examples
    --------
    >>> import numpy as np
    >>> from sc_noise2self import split_counts
    >>> X = np.array([[3, 0, 10], [1, 4, 0]])
    >>> Xa, Xb = split_counts(X, random_state=0)
    >>> bool((Xa + Xb == X).all())
    True
    """
    check_choice(method, SPLIT_METHODS, name="method")
    p = check_fraction(p)
    if sample_ratio and method != "binomial":
        raise ValueError("sample_ratio (the overlap correction) needs method='binomial'.")
    if is_dask_array(X):
        from ._dask import split_counts_dask

        return split_counts_dask(X, p, random_state=random_state, method=method,
                                 overdispersion=overdispersion, sample_ratio=sample_ratio)
    check_counts(X)
    sizes = _gene_sizes(X, method, overdispersion)
    shares = overlap_shares(p, sample_ratio) if sample_ratio else None
    # One stream per row: dask chunks of any size give these same halves (_row_streams.py).
    return split_rows(X, p, row_stream_key(random_state), sizes=sizes, shares=shares)


def overlap_shares(p: float, sample_ratio: float) -> tuple[float, float, float]:
    """Shares of observed molecules in A only, B only, and both, under MCV's overlap model.

    Two independent draws capture each of a cell's molecules with probabilities ``a`` and
    ``b`` (``a / (a + b) = p``); a molecule is observed when either draw has it, so
    ``a + b - a b = sample_ratio``. Given that it was observed, it lies in A only, B only or
    both with probabilities ``a (1 - b) / r``, ``b (1 - a) / r`` and ``a b / r``.

    Parameters
    ----------
    p
        Share of half A, as in :func:`split_counts`.
    sample_ratio
        Share ``r`` of the cell's molecules that were captured, in (0, 1).

    Returns
    -------
    ``(only_a, only_b, both)``, summing to 1.
    """
    r = check_fraction(sample_ratio, name="sample_ratio")
    q = p * (1 - p)
    total = (1 - np.sqrt(1 - 4 * q * r)) / (2 * q)  # a + b
    a, b = p * total, (1 - p) * total
    return a * (1 - b) / r, b * (1 - a) / r, a * b / r


def _gene_sizes(X, method: str, overdispersion) -> np.ndarray | None:
    """Per-gene NB sizes for ``method="negative_binomial"``; None for binomial splitting."""
    if method == "binomial":
        if overdispersion is not None:
            raise ValueError("overdispersion applies to method='negative_binomial' only.")
        return None
    if overdispersion is None:
        raise ValueError(
            "method='negative_binomial' needs overdispersion: a number, one per gene, or "
            "'estimate'."
        )
    if isinstance(overdispersion, str):
        check_choice(overdispersion, ("estimate",), name="overdispersion")
        return estimate_overdispersion(X)
    sizes = np.broadcast_to(np.asarray(overdispersion, dtype=np.float64), (X.shape[1],))
    if np.any(np.isnan(sizes)) or np.any(sizes <= 0):
        raise ValueError("overdispersion (the NB size b) must be positive; use inf for Poisson.")
    return np.array(sizes)


def estimate_overdispersion(
    X, *, mean: str = "neighbours", n_neighbors: int = 15
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
    X = sparse.csr_matrix(X, dtype=np.float64)
    if X.shape[0] < 3:
        raise ValueError(
            f"estimate_overdispersion needs at least 3 cells, got {X.shape[0]}; pass a "
            "number or per-gene sizes as overdispersion= instead."
        )
    totals = np.asarray(X.sum(axis=1)).ravel()
    size = totals / totals.mean()
    if mean == "gene":
        k, expected_rows = X.shape[0], _gene_mean_rows(X, size)
    else:
        k = min(n_neighbors, X.shape[0] - 1)
        expected_rows = _neighbour_mean_rows(X, size, k)
    # Per gene: sums of e, o, e^2, e o and o^2 over cells, e the excess and o the squared mean.
    sums = np.zeros((5, X.shape[1]))
    for rows, expected, spread in expected_rows:
        observed = X[rows]
        own = expected.multiply(expected) - spread  # m^2 less the Poisson noise of m
        excess = observed.multiply(observed) - 2 * observed.multiply(expected) + own - expected
        for i, term in enumerate((excess, own, excess.multiply(excess), excess.multiply(own),
                                  own.multiply(own))):
            sums[i] += np.asarray(term.sum(axis=0)).ravel()
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


def _gene_mean_rows(X, size: np.ndarray, chunk: int = 4096):
    """Expected counts ``m = s_i mu_g`` with one mean per gene, and ``w_i m``, by blocks."""
    n_cells = X.shape[0]
    mu = np.asarray(X.sum(axis=0)).ravel() / size.sum()
    spread = size * np.sum(1.0 / size) / n_cells**2
    for start in range(0, n_cells, chunk):
        rows = slice(start, min(start + chunk, n_cells))
        expected = sparse.csr_matrix(np.outer(size[rows], mu))
        yield rows, expected, sparse.diags(spread[rows]) @ expected


def _neighbour_mean_rows(X, size: np.ndarray, k: int, chunk: int = 4096):
    """Expected counts ``m`` from each cell's ``k`` nearest other cells, and ``w_i m``.

    Each gene's neighbours come from the other half of the genes (see
    :func:`estimate_overdispersion`); with fewer than 4 genes, from all of them.
    """
    n_cells = X.shape[0]
    normalised = sparse.diags(1.0 / size) @ X
    halves = _gene_halves(X)
    graphs = [_neighbours(X[:, other], k) for other in halves[::-1]]
    masks = [sparse.diags(np.isin(np.arange(X.shape[1]), genes).astype(np.float64))
             for genes in halves]
    for start in range(0, n_cells, chunk):
        rows = slice(start, min(start + chunk, n_cells))
        expected, spread = [], []
        for neighbours, mask in zip(graphs, masks, strict=True):
            block = neighbours[rows]
            average = sparse.csr_matrix(
                (np.full(block.size, 1.0 / k), block.ravel(),
                 np.arange(0, block.size + 1, k)), shape=(block.shape[0], n_cells),
            )
            part = sparse.diags(size[rows]) @ (average @ (normalised @ mask))
            expected.append(part)
            spread.append(sparse.diags(size[rows] * (average @ (1.0 / size)) / k) @ part)
        yield rows, sum(expected).tocsr(), sum(spread).tocsr()


def _gene_halves(X) -> list[np.ndarray]:
    """Genes split in two by alternating along their total count (all genes if under 4)."""
    if X.shape[1] < 4:
        return [np.arange(X.shape[1])]
    order = np.argsort(-np.asarray(X.sum(axis=0)).ravel(), kind="stable")
    return [np.sort(order[0::2]), np.sort(order[1::2])]


def _neighbours(X, k: int) -> np.ndarray:
    """Each cell's ``k`` nearest other cells from the sqrt-normalised counts ``X``."""
    from .denoisers.graph import build_graph
    from .transforms import apply_transform, normalize_to_depth

    totals = np.asarray(X.sum(axis=1)).ravel()
    depth = float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0
    values = apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)
    return build_graph(values, k + 1).indices[:, 1:]


def _flat_counts(X, sizes: np.ndarray | None = None):
    """``X`` (sparse: canonical), its stored values, and each value's gene size (or None).

    Duplicate sparse entries are summed first, so that they are split as one count.
    """
    if sparse.issparse(X):
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        per_value = None if sizes is None else sizes[_value_genes(X)]
        return X, X.data, per_value
    X = np.asarray(X)
    per_value = None if sizes is None else np.broadcast_to(sizes, X.shape).ravel()
    return X, X.ravel(), per_value


def _rebuild(X, values: np.ndarray):
    """A matrix like ``X`` holding ``values`` (from :func:`_flat_counts`) instead."""
    return _with_data(X, values) if sparse.issparse(X) else values.reshape(X.shape)


def _value_genes(X) -> np.ndarray:
    """The gene (column) of every stored value of a sparse matrix."""
    if X.format == "csr":
        return X.indices
    if X.format == "csc":
        return np.repeat(np.arange(X.shape[1]), np.diff(X.indptr))
    return X.col


def _with_data(X, data: np.ndarray):
    """A matrix with the pattern of ``X`` (copied) and new values, its zeros removed."""
    if X.format == "coo":
        out = type(X)((data, (X.row.copy(), X.col.copy())), shape=X.shape)
    else:
        out = type(X)((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    out.eliminate_zeros()
    return out


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
    from sklearn.neighbors import NearestNeighbors

    from .denoisers.pca import fit_pca, max_rank
    from .transforms import apply_transform, normalize_to_depth

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


def split_folds(
    X,
    n_folds: int,
    *,
    random_state: RandomState = 0,
    method: Literal["binomial", "negative_binomial"] = "binomial",
    overdispersion=None,
) -> list:
    """Thin ``X`` into ``n_folds`` parts that sum to it exactly (K-fold data thinning).

    Poisson counts (``"binomial"``): each count is split multinomially with equal shares,
    giving independent Poisson folds. NB counts (``"negative_binomial"``): the shares are
    ``Dirichlet(b / K, ..., b / K)`` per count first, giving independent NB(mu / K, b / K)
    folds.

    Parameters
    ----------
    X
        Raw counts, cells x genes (numpy or scipy.sparse).
    n_folds
        Number of folds K, at least 2.
    random_state
        Seed; the same seed gives bit-identical folds.
    method, overdispersion
        As in :func:`split_counts`.

    Returns
    -------
    A list of K matrices of the input's kind and dtype whose sum is ``X``.
    """
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r} must be an integer of at least 2.")
    check_choice(method, SPLIT_METHODS, name="method")
    check_counts(X)
    sizes = _gene_sizes(X, method, overdispersion)
    rng = make_rng(random_state)
    X, values, per_value = _flat_counts(X, sizes)
    return [_rebuild(X, part) for part in _multinomial_parts(values, n_folds, rng, per_value)]


def _multinomial_parts(values: np.ndarray, k: int, rng: np.random.Generator, sizes=None):
    """Split each count into k parts, multinomially (Dirichlet-multinomially with sizes)."""
    if sizes is None:
        shares = np.full((values.size, k), 1.0 / k)
    else:
        concentration = np.where(np.isfinite(sizes), sizes / k, np.inf)
        finite = np.isfinite(concentration)
        shares = np.full((values.size, k), 1.0 / k)
        draws = rng.gamma(concentration[finite, None], size=(int(finite.sum()), k))
        shares[finite] = draws / draws.sum(axis=1, keepdims=True)
    remaining = values.astype(np.int64)
    left = np.ones(values.size)
    parts = []
    for j in range(k - 1):
        # Sequential binomials give the multinomial: part j takes its share of what is left.
        share = np.clip(np.divide(shares[:, j], left, out=np.ones_like(left), where=left > 0),
                        0.0, 1.0)
        part = rng.binomial(remaining, share)
        parts.append(part.astype(values.dtype))
        remaining -= part
        left -= shares[:, j]
    parts.append(remaining.astype(values.dtype))
    return parts
