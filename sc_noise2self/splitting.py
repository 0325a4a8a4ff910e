"""Step 1 on count data: partition each cell's molecules into parts that sum to it.

For Poisson counts, ``Xa | X ~ Binomial(X, p)`` and ``Xb = X - Xa`` are independent given the
true expression, with means ``p * lambda`` and ``(1 - p) * lambda`` (molecular cross-validation,
Batson, Royer & Webber 2019). Beta-binomial shares do the same for negative-binomial counts,
and multinomial shares give K folds.

This module is the bottom of the single-cell stack: it imports only the leaves (seeds,
validation, dask helpers). Binomial splits draw each count from counter-based uniforms
keyed by seed, row, row total and gene (:mod:`sc_noise2self._count_kernels`); beta-binomial
splits draw each count's share from such uniforms too (apart from the binomial's). So numpy,
scipy.sparse and dask inputs, in any chunking, split into the same bits. K folds draw from
one numpy generator.
"""

from __future__ import annotations

import operator
from typing import Literal

import numpy as np
from scipy import sparse

from ._dask import check_dask_counts, row_offsets, rows_chunked
from ._rng import RandomState, make_rng, row_stream_key
from ._validation import check_choice, check_counts, check_fraction, is_dask_array

SPLIT_METHODS = ("binomial", "negative_binomial")

__all__ = ["SPLIT_METHODS", "RandomState", "gene_sizes", "overlap_shares", "split_counts",
           "split_folds", "split_rows"]


def split_counts(X, p: float = 0.5, *, random_state: RandomState = 0,
                 split: Literal["binomial", "negative_binomial"] = "binomial",
                 overdispersion=None, sample_ratio: float | None = None):
    """Split count matrix ``X`` molecule by molecule into two halves that sum to ``X``.

    Step 1 itself. :func:`sc_noise2self.split_counts` is the public front, which also
    resolves ``overdispersion="estimate"`` (a diagnostic that needs a neighbour graph, so
    it lives above this module); here ``overdispersion`` is a number or one per gene.

    Parameters
    ----------
    X
        Raw counts, cells x genes: numpy, scipy.sparse (CSR, CSC or COO) or dask.
    p
        Expected share of each count that goes to the first half, in (0, 1).
    random_state
        Seed, ``SeedSequence`` or ``Generator``; the same seed gives bit-identical halves.
    split, overdispersion, sample_ratio
        As in :func:`sc_noise2self.split_counts`.

    Returns
    -------
    Xa, Xb
        Of the input's type, sparse format and dtype, with ``Xa + Xb == X`` exactly (dask:
        lazy).
    """
    check_choice(split, SPLIT_METHODS, name="split")
    p = check_fraction(p)
    if sample_ratio and split != "binomial":
        raise ValueError("sample_ratio (the overlap correction) needs split='binomial'.")
    shares = overlap_shares(p, sample_ratio) if sample_ratio else None
    key = row_stream_key(random_state, "split")
    if is_dask_array(X):
        check_dask_counts(X)
        return _split_dask(X, p, key, gene_sizes(X, split, overdispersion), shares)
    check_counts(X)
    return split_rows(X, p, key, sizes=gene_sizes(X, split, overdispersion), shares=shares)


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


def gene_sizes(X, split: str, overdispersion) -> np.ndarray | None:
    """Per-gene NB sizes for ``split="negative_binomial"``; None for binomial splitting.

    ``overdispersion`` is one number or one per gene here: ``"estimate"`` is resolved above
    this module (by :func:`sc_noise2self.split_counts` and the calibration engine), because
    the estimator needs a neighbour graph, and step 1 imports nothing above itself.
    """
    if split == "binomial":
        if overdispersion is not None:
            raise ValueError(
                f"overdispersion={overdispersion!r} applies to split='negative_binomial' "
                "only; drop it, or pass split='negative_binomial'."
            )
        return None
    if overdispersion is None:
        raise ValueError(
            "split='negative_binomial' needs overdispersion: a number, one per gene, or "
            "'estimate'."
        )
    if isinstance(overdispersion, str):
        check_choice(overdispersion, ("estimate",), name="overdispersion")
        raise ValueError(
            "overdispersion='estimate' is resolved by sc_noise2self.split_counts and the tl "
            "functions; at this level pass the sizes, e.g. "
            "sc_noise2self.diagnostics.estimate_overdispersion(X)."
        )
    try:
        sizes = np.broadcast_to(np.asarray(overdispersion, dtype=np.float64), (X.shape[1],))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"overdispersion must be one positive number or one per gene ({X.shape[1]}); got "
            f"{np.shape(overdispersion)}."
        ) from error
    if np.any(np.isnan(sizes)) or np.any(sizes <= 0):
        raise ValueError("overdispersion (the NB size b) must be positive; use inf for Poisson.")
    return np.array(sizes)


def flat_counts(X, sizes: np.ndarray | None = None):
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


def rebuild(X, values: np.ndarray):
    """A matrix like ``X`` holding ``values`` (from :func:`flat_counts`) instead."""
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



def split_rows(X, p: float, key: np.ndarray, *, first_row: int = 0, sizes=None, shares=None):
    """Split a block of rows of counts: counter-based draws, or each row from its own stream.

    Parameters
    ----------
    X
        Counts, validated: numpy or scipy.sparse (any format).
    p
        Share of half A.
    key
        From :func:`sc_noise2self._rng.row_stream_key`.
    first_row
        Position of the block's first row in the whole matrix.
    sizes
        Per-gene NB sizes for beta-binomial splitting, or None.
    shares
        ``(only_a, only_b, both)`` of MCV's overlap model (:func:`overlap_shares`), or None.

    Returns
    -------
    Xa, Xb
        Of X's kind, sparse format and dtype (see :func:`split_counts`).
    """
    return _counter_split(X, p, key, first_row, shares, sizes)


def _counter_split(X, p: float, key: np.ndarray, first_row: int, shares, sizes=None):
    """Binomial, beta-binomial or MCV overlap halves from counter-based draws (row, gene)."""
    X, _, _ = flat_counts(X)
    form = X.format if sparse.issparse(X) else None
    rows = X.tocsr() if form not in (None, "csr") else X
    if form not in (None, "csr"):
        rows.sort_indices()
    a, shared = half_a_values(rows, p, key, first_row=first_row, shares=shares, sizes=sizes)
    if form is None:
        b = np.asarray(rows).ravel() - a
        if shared.size:  # MCV's overlap: molecules in both halves count in each
            b += shared
        return rebuild(rows, a), rebuild(rows, b)
    from ._sparse_kernels import split_patterns  # numba: imported when used

    parts = split_patterns(rows.indptr, rows.indices, rows.data, a, shared)
    del a
    half_a, half_b = (type(rows)(part, shape=rows.shape) for part in parts)
    if form != "csr":
        return half_a.asformat(form), half_b.asformat(form)
    return half_a, half_b


def check_split_range(values: np.ndarray) -> None:
    """Raise unless every stored count is within what the counter-based split draws."""
    from ._count_kernels import MAX_COUNT

    if values.size and values.max() > MAX_COUNT:
        raise ValueError(
            f"X holds a count of {values.max():g}; splitting handles at most {MAX_COUNT:,} "
            "molecules per cell and gene. Are these raw UMI counts?"
        )


def half_a_values(X, p: float, key: np.ndarray, *, first_row: int = 0, shares=None,
                  dtype=None, sizes=None):
    """Half A's share of every stored count of a CSR or dense ``X``, aligned with its values.

    The draws are counter-based (:mod:`sc_noise2self._count_kernels`): a pure function of
    ``key``, the row's position ``first_row + i``, its total and the gene. Returns half A's
    values and, under MCV's overlap model (``shares``), the counts in both halves (else an
    empty array). ``dtype`` (default the values') holds half A's values. Per-gene NB
    ``sizes`` draw each count's share from a beta distribution first (the NB split).
    """
    from ._count_kernels import split_values
    from ._sparse_kernels import row_sums

    if sparse.issparse(X):
        values, indptr, indices, dense_cols = X.data, X.indptr, X.indices, 0
        totals = row_sums(values, indptr)  # scipy's sum would copy the values to 64 bits
    else:
        values = np.ascontiguousarray(X).ravel()
        n_rows, dense_cols = X.shape
        indptr = np.arange(n_rows + 1, dtype=np.int64) * dense_cols
        indices, totals = np.zeros(0, dtype=np.int32), np.asarray(X).sum(axis=1)
    check_split_range(values)
    both, only_a = (-1.0, 0.0) if shares is None else (shares[2], shares[0] / (1 - shares[2]))
    out = np.zeros(values.size, dtype=dtype if dtype is not None else values.dtype)
    return split_values(values, indptr, indices, dense_cols, np.rint(totals).astype(np.uint64),
                        first_row, key, float(p), float(both), float(only_a), out, sizes)


def _split_dask(X, p: float, key: np.ndarray, sizes, shares):
    """Lazy split of a dask array: each row chunk is split as the whole matrix would be.

    One task per chunk draws both halves (a tuple); two cheap layers pick them apart, so
    computing both halves splits each chunk once. The meta only stands in for the tuple.
    Counts are checked chunk by chunk when computed.
    """
    X = rows_chunked(X)
    pairs = X.map_blocks(
        _split_chunk, p=p, key=key, offsets=row_offsets(X), sizes=sizes, shares=shares,
        dtype=X.dtype, meta=X._meta, token="split-counts-pairs",
    )
    return tuple(
        pairs.map_blocks(operator.itemgetter(half), dtype=X.dtype, meta=X._meta,
                         token=f"split-counts-{'ab'[half]}")
        for half in (0, 1)
    )


def _split_chunk(chunk, *, p, key, offsets, sizes, shares, block_id=None):
    first_row = int(offsets[block_id[0]])
    check_counts(chunk, name=f"X (rows from {first_row})")
    return split_rows(chunk, p, key, first_row=first_row, sizes=sizes, shares=shares)


def split_folds(
    X,
    n_folds: int,
    *,
    random_state: RandomState = 0,
    split: Literal["binomial", "negative_binomial"] = "binomial",
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
    split, overdispersion
        As in :func:`split_counts`.

    Returns
    -------
    A list of K matrices of the input's kind and dtype whose sum is ``X``.
    """
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r} must be an integer of at least 2.")
    check_choice(split, SPLIT_METHODS, name="split")
    check_counts(X)
    sizes = gene_sizes(X, split, overdispersion)
    rng = make_rng(random_state)
    X, values, per_value = flat_counts(X, sizes)
    return [rebuild(X, part) for part in _multinomial_parts(values, n_folds, rng, per_value)]


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
