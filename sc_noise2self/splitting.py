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
    X, *, mean: str = "neighbours", n_neighbors: int = 15, prior_cells: float = 10.0
) -> np.ndarray:
    """Per-gene negative-binomial size ``b`` by moments, shrunk towards the typical gene.

    Each count is compared with its expected value ``s_i mu_ig`` (``s_i``: library size over
    its mean). Under NB, ``E[(x - m)^2 - m] = m^2 / b``, so ``phi_g = 1 / b_g`` is the summed
    excess variance over the summed ``m^2``. The estimate is shrunk towards the median over
    genes, with weight ``n_g / (n_g + prior_cells)`` on the gene's own value (``n_g``: its
    non-zero cells).

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    mean
        How ``mu_ig`` is estimated. ``"neighbours"`` (default): the mean normalised count of
        each cell's nearest cells (PCA of sqrt-normalised counts, the cell itself left out),
        so that differences between cell types are not taken for noise. ``"gene"``: one mean
        per gene, right only for homogeneous cells.
    n_neighbors
        Cells averaged for ``"neighbours"``.
    prior_cells
        Strength of the shrinkage, in non-zero cells.

    Returns
    -------
    Array of ``b`` per gene; ``inf`` where no overdispersion is seen (Poisson).
    """
    check_choice(mean, ("neighbours", "gene"), name="mean")
    X = sparse.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(axis=1)).ravel()
    size = totals / totals.mean()
    if mean == "gene":
        expected_rows = _gene_mean_rows(X, size)
    else:
        expected_rows = _neighbour_mean_rows(X, size, n_neighbors)
    excess, scale = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for rows, expected in expected_rows:
        observed = X[rows]
        squares = observed.multiply(observed) - 2 * observed.multiply(expected)
        excess += np.asarray(squares.sum(axis=0)).ravel()
        excess += np.asarray((expected.multiply(expected) - expected).sum(axis=0)).ravel()
        scale += np.asarray(expected.multiply(expected).sum(axis=0)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.clip(np.where(scale > 0, excess / scale, 0.0), 0.0, None)
    detected = np.diff(X.tocsc().indptr).astype(np.float64)
    weight = detected / (detected + prior_cells)
    typical = np.median(phi[detected > 0]) if np.any(detected > 0) else 0.0
    shrunk = weight * phi + (1 - weight) * typical
    with np.errstate(divide="ignore"):
        return np.where(shrunk > 0, 1.0 / shrunk, np.inf)


def _gene_mean_rows(X, size: np.ndarray, chunk: int = 4096):
    """Expected counts ``s_i mu_g`` with one mean per gene, by blocks of cells."""
    mu = np.asarray(X.sum(axis=0)).ravel() / size.sum()
    for start in range(0, X.shape[0], chunk):
        rows = slice(start, min(start + chunk, X.shape[0]))
        yield rows, sparse.csr_matrix(np.outer(size[rows], mu))


def _neighbour_mean_rows(X, size: np.ndarray, n_neighbors: int, chunk: int = 4096):
    """Expected counts from each cell's nearest cells (itself left out), by blocks of cells."""
    from .denoisers.graph import build_graph
    from .transforms import apply_transform, normalize_to_depth

    n_cells = X.shape[0]
    k = min(n_neighbors, n_cells - 1)
    depth = float(np.median(np.asarray(X.sum(axis=1)).ravel()))
    values = apply_transform(normalize_to_depth(X, depth), "sqrt", inplace=True)
    neighbours = build_graph(values, k + 1).indices[:, 1:]
    normalised = sparse.diags(1.0 / size) @ X
    for start in range(0, n_cells, chunk):
        rows = slice(start, min(start + chunk, n_cells))
        block = neighbours[rows]
        average = sparse.csr_matrix(
            (np.full(block.size, 1.0 / k), block.ravel(),
             np.arange(0, block.size + 1, k)), shape=(block.shape[0], n_cells),
        )
        yield rows, sparse.diags(size[rows]) @ (average @ normalised)


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

    About 0 when the split suits the data; positive when binomial splitting meets
    overdispersed counts.

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
