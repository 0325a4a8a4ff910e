"""One random stream per cell, so that a split does not depend on how the cells are chunked.

Cell ``i`` draws from the counter-based generator ``Philox(key, counter=(0, 0, i, 0))``: its
halves depend on its counts, its row position and the seed only. Any block of rows can then
be split on its own (a dask chunk, a worker, any order) and give bit for bit the rows that
splitting the whole matrix gives. Streams indexed by chunk position (``SeedSequence.spawn``
per chunk) would make chunk sizes of 100 and 1000 give different splits; Philox streams
indexed by row are disjoint (each has 2^128 blocks of its own) and cost a state reset per
row, not a new seed hash.

Within a row the values are drawn in column order, and a zero count draws nothing, so a dense
row and the same row stored sparsely split identically.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def row_stream_key(random_state) -> np.ndarray:
    """The Philox key (two uint64) of every row stream, from a seed.

    Parameters
    ----------
    random_state
        int, ``SeedSequence``, ``Generator`` or None, as in
        :func:`~sc_noise2self.split_counts`. A Generator advances by two draws; an int or a
        SeedSequence always gives the same key.

    Returns
    -------
    Array of two uint64.
    """
    from .splitting import make_rng

    bits = make_rng(random_state).bit_generator.random_raw(2)
    return np.asarray(bits, dtype=np.uint64)


class RowStreams:
    """Moves one Philox generator to the start of any row's stream.

    Parameters
    ----------
    key
        From :func:`row_stream_key`.
    """

    def __init__(self, key: np.ndarray):
        self._bits = np.random.Philox(key=np.asarray(key, dtype=np.uint64))
        self.rng = np.random.Generator(self._bits)
        self._state = self._bits.state

    def seek(self, row: int) -> np.random.Generator:
        """The generator, placed at the start of row ``row``'s stream."""
        self._state["state"]["counter"][:] = (0, 0, row, 0)
        # An empty output buffer, so no value of the previous row leaks into this one.
        self._state["buffer_pos"] = 4
        self._state["has_uint32"] = 0
        self._bits.state = self._state
        return self.rng


def split_rows(X, p: float, key: np.ndarray, *, first_row: int = 0, sizes=None, shares=None):
    """Split a block of rows of counts, each row from its own stream.

    Parameters
    ----------
    X
        Counts, validated: numpy or scipy.sparse (any format).
    p
        Share of half A.
    key
        From :func:`row_stream_key`.
    first_row
        Position of the block's first row in the whole matrix.
    sizes
        Per-gene NB sizes for beta-binomial splitting, or None.
    shares
        ``(only_a, only_b, both)`` of MCV's overlap model (:func:`overlap_shares`), or None.

    Returns
    -------
    Xa, Xb
        Of X's kind, sparse format and dtype (see :func:`~sc_noise2self.split_counts`).
    """
    from .splitting import _flat_counts, _rebuild

    X, values, per_value = _flat_counts(X, sizes)
    order, row_ptr = _row_major(X)
    if order is not None:
        values = values[order]
        per_value = None if per_value is None else per_value[order]
    half_a, half_b = _draw_rows(values, row_ptr, first_row, p, key, per_value, shares)
    if order is not None:
        half_a[order], half_b[order] = half_a.copy(), half_b.copy()
    return _rebuild(X, half_a), _rebuild(X, half_b)


def _row_major(X) -> tuple[np.ndarray | None, np.ndarray]:
    """Permutation to row-then-column order (None when already so), and each row's start."""
    n_rows, n_cols = X.shape
    if not sparse.issparse(X):
        return None, np.arange(n_rows + 1, dtype=np.int64) * n_cols
    if X.format == "csr":  # canonical: columns sorted within each row
        return None, np.asarray(X.indptr, dtype=np.int64)
    if X.format == "csc":
        rows, cols = X.indices, np.repeat(np.arange(n_cols), np.diff(X.indptr))
    else:
        rows, cols = X.row, X.col
    row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
    return np.lexsort((cols, rows)), row_ptr.astype(np.int64)


def _draw_rows(values, row_ptr, first_row, p, key, sizes, shares):
    """Both halves of row-major ``values``, row ``i`` drawn from stream ``first_row + i``."""
    streams = RowStreams(key)
    counts = values.astype(np.int64)
    half_a = np.zeros_like(values)
    half_b = np.zeros_like(values)
    for i in np.flatnonzero(np.diff(row_ptr)):
        rows = slice(row_ptr[i], row_ptr[i + 1])
        rng = streams.seek(first_row + int(i))
        row_sizes = None if sizes is None else sizes[rows]
        half_a[rows], half_b[rows] = _draw_row(counts[rows], p, rng, row_sizes, shares)
    return half_a, half_b


def _draw_row(n: np.ndarray, p: float, rng: np.random.Generator, sizes, shares):
    """Halves of one row's counts (int64): binomial, beta-binomial, or MCV's overlap."""
    if shares is not None:
        only_a, _, both = shares
        in_both = rng.binomial(n, both)
        in_a_only = rng.binomial(n - in_both, only_a / (1 - both))
        return in_a_only + in_both, n - in_a_only
    share = p
    if sizes is not None:
        # Beta shares only where there is something to split and the gene is not Poisson,
        # so that zeros (stored or not) draw nothing.
        drawn = np.isfinite(sizes) & (n > 0)
        share = np.full(n.shape, p)
        share[drawn] = rng.beta(p * sizes[drawn], (1 - p) * sizes[drawn])
    a = rng.binomial(n, share)
    return a, n - a
