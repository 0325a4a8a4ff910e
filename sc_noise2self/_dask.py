"""Molecule splitting and per-chunk reductions on dask arrays of counts.

Every function here builds a lazy graph over row chunks (``map_blocks``); nothing is
computed until the caller asks. Each cell draws from its own random stream, indexed by its
row (:mod:`sc_noise2self._row_streams`), so the halves are the same bits as the in-memory
split whatever the chunking, the scheduler, the number of workers or the order of execution.
"""

from __future__ import annotations

import operator

import numpy as np

from ._row_streams import row_stream_key, split_rows
from ._validation import check_counts


def rows_chunked(X):
    """``X`` with every row whole in one chunk (one chunk along genes), as splitting needs.

    A row's stream is consumed in column order, so a chunk must hold whole rows. AnnData's
    lazy CSR is chunked along rows only, so this is usually free.
    """
    return X if X.numblocks[1] == 1 else X.rechunk({1: -1})


def check_dask_counts(X) -> None:
    """What can be checked of dask counts without computing: the dtype and the shape."""
    if X.ndim != 2:
        raise ValueError(f"Expected a cells x genes dask array; got {X.ndim} dimension(s).")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"X has dtype {X.dtype}; expected integer or float counts.")


def row_offsets(X) -> np.ndarray:
    """The first row of each row chunk of ``X``."""
    return np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(np.int64)


def split_counts_dask(
    X,
    p: float,
    *,
    random_state=0,
    method: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
):
    """Lazy molecule split of a dask array of counts; see :func:`~sc_noise2self.split_counts`.

    Parameters
    ----------
    X
        Dask array, cells x genes, of numpy or scipy.sparse chunks.
    p
        Share of half A (validated by the caller).
    random_state
        Seed; the halves equal ``split_counts(X.compute(), ...)`` bit for bit.
    method, overdispersion, sample_ratio
        As in :func:`~sc_noise2self.split_counts`; ``overdispersion="estimate"`` needs all
        cells at once and is refused (pass the sizes, e.g. estimated on a subsample).

    Returns
    -------
    Xa, Xb
        Lazy dask arrays with X's row chunks (one chunk along genes: gene chunks are joined
        first), chunk type and dtype. Counts are checked (integral, non-negative) chunk by
        chunk when computed.
    """
    check_dask_counts(X)
    X = rows_chunked(X)
    sizes, shares = split_options(X, p, method, overdispersion, sample_ratio)
    key = row_stream_key(random_state)
    offsets = row_offsets(X)
    # One task per chunk draws both halves (a tuple); two cheap layers pick them apart, so
    # computing both halves splits each chunk once. The meta only stands in for the tuple.
    pairs = X.map_blocks(
        _split_chunk, p=p, key=key, offsets=offsets, sizes=sizes, shares=shares,
        dtype=X.dtype, meta=X._meta, token="split-counts-pairs",
    )
    return tuple(
        pairs.map_blocks(operator.itemgetter(half), dtype=X.dtype, meta=X._meta,
                         token=f"split-counts-{'ab'[half]}")
        for half in (0, 1)
    )


def _split_chunk(chunk, *, p, key, offsets, sizes, shares, block_id=None):
    """Both halves of one row chunk (a tuple; picked apart by the next layer)."""
    first_row = int(offsets[block_id[0]])
    check_counts(chunk, name=f"X (rows from {first_row})")
    return split_rows(chunk, p, key, first_row=first_row, sizes=sizes, shares=shares)


def split_options(X, p: float, method: str, overdispersion, sample_ratio):
    """Per-gene NB sizes and overlap shares for a dask split; refuses what needs all cells."""
    from .splitting import _gene_sizes, overlap_shares

    if isinstance(overdispersion, str):
        raise ValueError(
            "overdispersion='estimate' needs every cell in memory; on a dask array pass the "
            "NB sizes per gene, e.g. estimate_overdispersion(adata[:20000].X.compute())."
        )
    sizes = _gene_sizes(X, method, overdispersion)
    return sizes, (overlap_shares(p, sample_ratio) if sample_ratio else None)


def checked_library_sizes(X) -> np.ndarray:
    """Total counts per cell (float64, in memory), checking every chunk's counts on the way.

    Parameters
    ----------
    X
        Dask array of counts, chunked along rows only.

    Returns
    -------
    One total per cell; raises ``ValueError`` naming the chunk with bad counts.
    """
    totals = X.map_blocks(
        _checked_row_sums, offsets=row_offsets(X), drop_axis=1, dtype=np.float64,
        meta=np.array((), dtype=np.float64),
    )
    return totals.compute()


def _checked_row_sums(chunk, *, offsets, block_id=None) -> np.ndarray:
    from .transforms import library_sizes

    check_counts(chunk, name=f"X (rows from {offsets[block_id[0]]})")
    return library_sizes(chunk)


def tree_reduce(parts: list, combine, fan_in: int = 8):
    """Combine delayed ``parts`` by ``combine(list)`` in a tree of ``fan_in``, lazily.

    A tree keeps at most about ``fan_in`` partial results alive per level, where one task
    gathering every part would hold them all.
    """
    import dask

    while len(parts) > 1:
        parts = [dask.delayed(combine)(parts[i : i + fan_in])
                 for i in range(0, len(parts), fan_in)]
    return parts[0]
