"""Compiled loops for losses that have no closed form over ranks.

A non-linear depth conversion or the Poisson loss must be evaluated entry by entry at every
rank: O(cells x genes x ranks). numba runs that loop without cells x genes temporaries, in
parallel over fixed blocks of cells, so the sums do not depend on the thread count. This
module imports numba, so import it only where it is needed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_N_BLOCKS = 64


def rank_curve_sums(
    scores: np.ndarray,
    components: np.ndarray,
    mean: np.ndarray,
    target,
    table_values: np.ndarray,
    table_step: float,
    cell_scale: np.ndarray | None,
) -> np.ndarray:
    """Summed loss of ``mean + scores[:, :k] @ components[:k]`` for k = 0..K against ``target``.

    Parameters
    ----------
    scores, components, mean
        The rank-K decomposition (cells x K, K x genes, genes), float64.
    target
        CSR matrix of what is predicted (half B transformed, or its counts).
    table_values, table_step
        Piecewise-linear function on the uniform grid ``0, step, ...`` applied to each
        prediction: the converted value (squared error) or the Poisson mean (deviance).
    cell_scale
        None for the squared error; for the Poisson deviance, the factor per cell that turns
        a tabulated mean into an expected count of ``target``.

    Returns
    -------
    Array of K + 1 sums.
    """
    poisson = cell_scale is not None
    scale = cell_scale if poisson else np.ones(scores.shape[0])
    partial = _curve_kernel(
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(components, dtype=np.float64),
        np.ascontiguousarray(mean, dtype=np.float64),
        target.indptr, target.indices, target.data.astype(np.float64, copy=False),
        np.ascontiguousarray(table_values, dtype=np.float64), float(table_step),
        np.ascontiguousarray(scale, dtype=np.float64), poisson, _N_BLOCKS,
    )
    return partial.sum(axis=0)


@njit(inline="always", cache=True)
def _lookup(y, values, inv_step):
    t = y * inv_step
    if t <= 0.0:
        return values[0]
    last = values.size - 1
    if t >= last:
        return values[last]
    i = int(t)
    return values[i] + (t - i) * (values[i + 1] - values[i])


@njit(inline="always", cache=True)
def _entry_loss(prediction, observed, values, inv_step, scale, poisson):
    v = _lookup(prediction, values, inv_step)
    if not poisson:
        d = v - observed
        return d * d
    expected = max(v * scale, 1e-8)
    if observed > 0.0:
        return 2.0 * (observed * np.log(observed / expected) - (observed - expected))
    return 2.0 * expected


@njit(parallel=True, cache=True)
def _curve_kernel(scores, components, mean, indptr, indices, data, values, step, scale, poisson,
                  n_blocks):
    n_cells, n_comps = scores.shape
    n_genes = mean.size
    inv_step = 1.0 / step
    partial = np.zeros((n_blocks, n_comps + 1))
    per_block = (n_cells + n_blocks - 1) // n_blocks
    for block in prange(n_blocks):
        prediction = np.empty(n_genes)
        observed = np.zeros(n_genes)
        for i in range(block * per_block, min((block + 1) * per_block, n_cells)):
            for idx in range(indptr[i], indptr[i + 1]):
                observed[indices[idx]] = data[idx]
            acc = 0.0
            for j in range(n_genes):
                prediction[j] = mean[j]
                acc += _entry_loss(prediction[j], observed[j], values, inv_step, scale[i], poisson)
            partial[block, 0] += acc
            for k in range(1, n_comps + 1):
                s = scores[i, k - 1]
                acc = 0.0
                for j in range(n_genes):
                    prediction[j] += s * components[k - 1, j]
                    acc += _entry_loss(prediction[j], observed[j], values, inv_step, scale[i],
                                       poisson)
                partial[block, k] += acc
            for idx in range(indptr[i], indptr[i + 1]):
                observed[indices[idx]] = 0.0
    return partial
