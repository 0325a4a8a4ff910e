"""The self-supervised loss of PCA denoising at every rank, from one decomposition.

With half A's centred decomposition ``A - 1 mu^T ~ sum_i a_i v_i^T`` (``a_i`` the score columns)
and a linear depth conversion ``c``, the loss of the rank-k prediction ``c (mu + sum_{i<=k}
a_i v_i^T)`` against half B expands into

``||B - c 1 mu^T||^2 - 2c sum_{i<=k} <B - c 1 mu^T, a_i v_i^T>
+ c^2 sum_{i,j<=k} (a_i.a_j)(v_i.v_j)``,

so every rank costs O(K^2) once ``B V^T`` (one sparse product) is known. Non-linear conversions
and the Poisson loss are evaluated exactly on bounded row chunks instead (a compiled loop).
Both the in-memory and the dask backends of the PCA family score through this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .._rng import spawn_seeds
from ..embedding import PCAFit
from ..losses import Halves
from ._kernels import rank_curve_sums


def rank_loss_curve(
    fit: PCAFit, halves: Halves, loss: str = "mse", *, score_cells: np.ndarray | None = None
) -> np.ndarray:
    """Mean self-supervised loss against half B at every rank ``0..fit.n_comps``.

    Parameters
    ----------
    fit
        PCA fitted to ``halves.a``.
    halves
        The prepared split.
    loss
        ``"mse"`` on the transformed scale, or ``"poisson"`` deviance on half B's counts.
    score_cells
        Cells on which a non-linear loss is evaluated (default all). The linear case, whose
        cost does not grow with the ranks, always uses every cell.

    Returns
    -------
    Array of length ``fit.n_comps + 1``; entry ``k`` is the loss of the rank-``k`` prediction.
    """
    conversion = halves.conversion
    if loss == "mse" and conversion.is_linear:
        return linear_mse_curve(fit, halves.b, conversion.scale)
    cells = np.arange(fit.scores.shape[0]) if score_cells is None else np.asarray(score_cells)
    return _compiled_curve(fit, halves, loss, cells)


def linear_mse_curve(fit: PCAFit, B, scale: float) -> np.ndarray:
    """Mean MSE at every rank of ``scale * (mean + scores_k V_k)`` against ``B``, exactly."""
    return linear_mse_from_products(fit.mean, fit.components, b_products(B, fit.scores),
                                    B.shape, scale)


def b_products(B, scores: np.ndarray) -> BProducts:
    """Half B's sums and its products with the scores, with no float64 copy of either.

    Sparse ``B`` goes through the compiled products (float32 values, float64 across row
    blocks); <B, a_k v_k^T> = (B^T a_k) . v_k is one pass with a genes x K result.
    """
    from .._sparse_kernels import column_sums, csr_transposed_times, gram

    if sparse.issparse(B):
        B = sparse.csr_matrix(B)
        parts = (B.data, B.indices, B.indptr)
        ones = np.ones((B.shape[0], 1), dtype=np.float32)
        b_colsum = csr_transposed_times(*parts, ones, B.shape[1]).ravel()
        bt_scores = csr_transposed_times(*parts, scores, B.shape[1])
        b_sq = sum_squares(B.data)
    else:
        B = np.asarray(B, dtype=np.float64)
        b_colsum, bt_scores, b_sq = B.sum(axis=0), B.T @ scores, sum_squares(B.ravel())
    return BProducts(b_sq=b_sq, b_colsum=b_colsum, bt_scores=np.asarray(bt_scores, np.float64),
                     scores_sum=column_sums(scores), scores_gram=gram(scores))


def sum_squares(values: np.ndarray, chunk: int = 1 << 20) -> float:
    """Sum of squares in float64, a bounded chunk at a time."""
    parts = (values[i:i + chunk].astype(np.float64) for i in range(0, values.size, chunk))
    return float(sum(np.dot(part, part) for part in parts))


@dataclass
class BProducts:
    """What the linear all-rank MSE needs of half B and the scores ``a``; sums over cells.

    ``b_sq``: sum of B^2; ``b_colsum``: B^T 1 (genes); ``bt_scores``: B^T a (genes x K);
    ``scores_sum``: a^T 1 (K); ``scores_gram``: a^T a (K x K).
    """

    b_sq: float
    b_colsum: np.ndarray
    bt_scores: np.ndarray
    scores_sum: np.ndarray
    scores_gram: np.ndarray


def linear_mse_from_products(
    mu: np.ndarray, V: np.ndarray, products: BProducts, shape: tuple[int, int], scale: float
) -> np.ndarray:
    """Mean MSE at every rank ``0..K`` of ``scale * (mu + a_k V_k)`` against half B.

    Parameters
    ----------
    mu, V
        The fit's mean (genes) and components (K x genes).
    products
        Half B's sums and its products with the scores.
    shape
        Cells x genes of half B.
    scale
        The linear depth conversion.

    Returns
    -------
    Array of length K + 1.
    """
    n_cells, n_genes = shape
    p = products
    base = p.b_sq - 2 * scale * mu @ p.b_colsum + n_cells * scale**2 * (mu @ mu)
    cross = np.einsum("gk,kg->k", p.bt_scores, V) - scale * p.scores_sum * (V @ mu)
    quad = _leading_block_sums(p.scores_gram * (V @ V.T))
    curve = np.concatenate([[base], base - 2 * scale * np.cumsum(cross) + scale**2 * quad])
    return curve / (n_cells * n_genes)


def _leading_block_sums(gram: np.ndarray) -> np.ndarray:
    """``sum(gram[:k, :k])`` for k = 1..K."""
    row_parts = np.cumsum(np.tril(gram, -1).sum(axis=1))
    return np.cumsum(np.diag(gram)) + 2 * row_parts


def _compiled_curve(fit: PCAFit, halves: Halves, loss: str, cells: np.ndarray) -> np.ndarray:
    # O(cells x genes x ranks) in a compiled loop: the price of a non-linear conversion or loss.
    table = halves.conversion_table()
    target = sparse.csr_matrix(halves.target(loss))[cells]
    if loss == "poisson":
        values = table.means
        cell_scale = halves.expected_b_counts(np.ones((cells.size, 1)), cells).ravel()
    else:
        values, cell_scale = table.converted, None
    sums = rank_curve_sums(
        fit.scores[cells], fit.components, fit.mean, target, values, table.step, cell_scale
    )
    return sums / np.prod(target.shape)


def pick_score_cells(
    n_cells: int, max_score_cells: int | None, seed: np.random.SeedSequence
) -> np.ndarray | None:
    """A seeded random subset of at most ``max_score_cells`` cells, or None for all cells."""
    if max_score_cells is None or n_cells <= max_score_cells:
        return None
    if max_score_cells < 1:
        raise ValueError(f"max_score_cells={max_score_cells} must be a positive number or None.")
    rng = np.random.default_rng(spawn_seeds(seed, 1)[0])
    return np.sort(rng.choice(n_cells, size=max_score_cells, replace=False))
