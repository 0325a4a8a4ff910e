"""Leaf: the dask backend's building blocks (row chunks, checked totals, tree reductions).

dask itself is imported only inside the functions that build graphs, so importing this
module stays cheap. The split of dask counts lives with every other split in
:mod:`sc_noise2self.splitting`; statistics over chunks are summed by :func:`tree_reduce`.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_counts
from .transforms import library_sizes


def rows_chunked(X):
    """``X`` with every row whole in one chunk (one chunk along genes), as splitting needs.

    A row's stream is consumed in column order, so a chunk must hold whole rows. AnnData's
    lazy CSR is chunked along rows only, so this is usually free.
    """
    return X if X.numblocks[1] == 1 else X.rechunk({1: -1})


def check_dask_counts(X, *, name: str = "X") -> None:
    """What can be checked of dask counts without computing: the dtype and the shape."""
    if X.ndim != 2:
        raise ValueError(f"Expected {name} as a cells x genes dask array; got {X.ndim} "
                         "dimension(s).")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"{name} has dtype {X.dtype}; expected integer or float counts.")


def row_offsets(X) -> np.ndarray:
    """The first row of each row chunk of ``X``."""
    return np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(np.int64)


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


def persisted_on_cluster(X):
    """``X`` persisted on the workers of an active ``dask.distributed`` client, else ``X``.

    For a lazy array that several passes read: on a cluster each pass then reads the
    workers' copy instead of computing it again. Without a client it stays lazy (persisting
    would load it whole into this process).
    """
    try:
        from distributed import default_client

        default_client()
    except (ImportError, ValueError):  # no distributed, or no client
        return X
    return X.persist()
