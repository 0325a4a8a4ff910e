"""PCA denoising, and its self-supervised loss at every rank from one decomposition.

With half A's centred decomposition ``A - 1 mu^T ~ sum_i a_i v_i^T`` (``a_i`` the score columns)
and a linear depth conversion ``c``, the loss of the rank-k prediction ``c (mu + sum_{i<=k}
a_i v_i^T)`` against half B expands into

``||B - c 1 mu^T||^2 - 2c sum_{i<=k} <B - c 1 mu^T, a_i v_i^T>
+ c^2 sum_{i,j<=k} (a_i.a_j)(v_i.v_j)``,

so every rank costs O(K^2) once ``B V^T`` (one sparse product) is known. Non-linear conversions
and the Poisson loss are evaluated exactly on bounded row chunks instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA, TruncatedSVD

from .._validation import check_choice, is_dask_array
from ..calibration import DEFAULT_P, CalibrationResult, Halves, SplitSettings, run_splits
from ..splitting import RandomState, spawn_seeds

Solver = Literal["auto", "arpack", "covariance_eigh", "randomized"]
SOLVERS: tuple[str, ...] = ("auto", "arpack", "covariance_eigh", "randomized")


@dataclass
class PCAFit:
    """A truncated PCA: ``X ~ 1 mean^T + scores @ components``."""

    scores: np.ndarray  # cells x K, float64
    components: np.ndarray  # K x genes, float64
    mean: np.ndarray  # genes, float64 (zeros when not centred)

    @property
    def n_comps(self) -> int:
        """Number of components."""
        return self.components.shape[0]

    def reconstruct(self, rows: slice | np.ndarray, n_comps: int, genes=slice(None)) -> np.ndarray:
        """Dense rank-``n_comps`` reconstruction of the given rows and genes."""
        scores = self.scores[rows, :n_comps]
        return self.mean[genes] + scores @ self.components[:n_comps][:, genes]


def max_rank(shape: tuple[int, int]) -> int:
    """Largest number of components every solver supports for a matrix of ``shape``."""
    return max(min(shape) - 1, 0)


def clip_n_comps(n_comps: int, shape: tuple[int, int], *, name: str = "max_comps") -> int:
    """Clip ``n_comps`` to what the data allow, with a warning when it had to change."""
    limit = max_rank(shape)
    if n_comps < 1:
        raise ValueError(f"{name}={n_comps} must be a positive number of components.")
    if limit < 1:
        raise ValueError(
            f"Data of shape {shape} support no principal components; PCA needs at least "
            "2 cells and 2 genes."
        )
    if n_comps > limit:
        warnings.warn(
            f"{name}={n_comps} exceeds what data of shape {shape} allow; using {limit}.",
            UserWarning,
            stacklevel=3,
        )
        return limit
    return int(n_comps)


def fit_pca(
    X,
    n_comps: int,
    *,
    center: bool = True,
    solver: Solver = "auto",
    random_state: RandomState = 0,
) -> PCAFit:
    """Fit a truncated PCA with scikit-learn, centring sparse data implicitly.

    Parameters
    ----------
    X
        Cells x genes float matrix (numpy or CSR/CSC); it is not densified.
    n_comps
        Number of components.
    center
        Subtract gene means (as ``sc.pp.pca``); ``False`` gives a truncated SVD.
    solver
        ``"auto"`` is ``"arpack"``, scanpy's default for sparse data (measured faster than
        ``"covariance_eigh"`` on sparse counts, see ``benchmarks/RESULTS.md``);
        ``"randomized"`` needs dense data when centring.
    random_state
        Seed of the iterative solvers' starting vectors.

    Returns
    -------
    The fitted :class:`PCAFit`, in float64.
    """
    check_choice(solver, SOLVERS, name="solver")
    if solver == "auto":
        solver = "arpack"
    seed = int(np.random.default_rng(random_state).integers(2**31 - 1))
    if center:
        model = PCA(n_components=n_comps, svd_solver=solver, random_state=seed)
        scores = model.fit_transform(X)
        mean = np.asarray(model.mean_, dtype=np.float64).ravel()
    else:
        algorithm = "randomized" if solver == "randomized" else "arpack"
        model = TruncatedSVD(n_components=n_comps, algorithm=algorithm, random_state=seed)
        scores = model.fit_transform(X)
        mean = np.zeros(X.shape[1])
    return PCAFit(
        np.asarray(scores, dtype=np.float64),
        np.asarray(model.components_, dtype=np.float64),
        mean,
    )


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
        return _linear_mse_curve(fit, halves.b, conversion.scale)
    cells = np.arange(fit.scores.shape[0]) if score_cells is None else np.asarray(score_cells)
    return _compiled_curve(fit, halves, loss, cells)


def _linear_mse_curve(fit: PCAFit, B, scale: float) -> np.ndarray:
    n_cells = B.shape[0]
    values = B.data if sparse.issparse(B) else B
    products = BProducts(
        b_sq=float(np.sum(np.square(values, dtype=np.float64))),
        b_colsum=np.asarray(B.T @ np.ones(n_cells)).ravel(),  # float64 accumulation
        # <B, a_k v_k^T> = (B^T a_k) . v_k: one sparse product with a genes x K result.
        bt_scores=_transpose_times(B, fit.scores),
        scores_sum=fit.scores.sum(axis=0),
        scores_gram=fit.scores.T @ fit.scores,
    )
    return linear_mse_from_products(fit.mean, fit.components, products, B.shape, scale)


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


def _transpose_times(B, scores: np.ndarray) -> np.ndarray:
    """``B.T @ scores`` accumulated in float64, without copying B's index arrays."""
    if sparse.issparse(B) and B.format in ("csr", "csc"):
        B = type(B)((B.data.astype(np.float64), B.indices, B.indptr), shape=B.shape)
    elif not sparse.issparse(B):
        B = np.asarray(B, dtype=np.float64)
    return np.asarray(B.T @ scores, dtype=np.float64)


def _leading_block_sums(gram: np.ndarray) -> np.ndarray:
    """``sum(gram[:k, :k])`` for k = 1..K."""
    row_parts = np.cumsum(np.tril(gram, -1).sum(axis=1))
    return np.cumsum(np.diag(gram)) + 2 * row_parts


def _compiled_curve(fit: PCAFit, halves: Halves, loss: str, cells: np.ndarray) -> np.ndarray:
    # O(cells x genes x ranks) in a compiled loop: the price of a non-linear conversion or loss.
    from ._kernels import rank_curve_sums

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


def calibrate_pca_counts(
    X,
    *,
    max_comps: int = 100,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    center: bool = True,
    solver: Solver = "auto",
    max_score_cells: int | None = 20_000,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    folds: int | None = None,
    progress: bool | None = None,
) -> CalibrationResult:
    """Self-supervised loss of PCA denoising at every rank ``0..max_comps``, on raw counts.

    Parameters
    ----------
    X
        Raw counts, cells x genes (numpy or scipy.sparse); never densified. A dask array
        is calibrated out of core, chunk by chunk
        (:func:`~sc_noise2self.denoisers.pca_dask.calibrate_pca_dask`).
    max_comps
        Largest rank scored; clipped, with a warning, to what the data allow.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"`` after library-size normalisation.
    loss
        ``"mse"`` on the transformed scale or ``"poisson"`` deviance on counts.
    p
        Share of molecules in half A (the half that is fitted).
    n_splits
        Number of independent splits whose curves are averaged.
    random_state
        Seed; the same seed gives identical curves.
    center
        Centre genes before the SVD, as ``sc.pp.pca``.
    solver
        SVD solver, see :func:`fit_pca`.
    max_score_cells
        With ``p != 0.5`` under ``sqrt``/``log1p``, or ``loss="poisson"``, every entry must be
        scored at every rank (cost cells x genes x ranks); above this many cells the loss is
        scored on a seeded random subset of this size. None scores every cell. The SVD always
        uses every cell.
    split, overdispersion
        How molecules are split (:func:`~sc_noise2self.split_counts`): ``"binomial"``, or
        ``"negative_binomial"`` with the NB size per gene, a number or ``"estimate"``.
    sample_ratio
        MCV's overlap correction (:func:`~sc_noise2self.split_counts`); None splits plainly.
    folds
        K-fold thinning instead of one split (:func:`~sc_noise2self.splitting.split_folds`):
        each fold is scored against the other K-1, so ``p`` becomes (K-1)/K; the K curves
        of each of the ``n_splits`` thinnings are averaged.
    progress
        A progress bar over splits; None shows it only on a terminal.

    Returns
    -------
    :class:`~sc_noise2self.calibration.CalibrationResult` over ``grid = 0..max_comps``.
    """
    if is_dask_array(X):
        from .pca_dask import calibrate_pca_dask

        return calibrate_pca_dask(
            X, max_comps=max_comps, transform=transform, loss=loss, p=p, n_splits=n_splits,
            random_state=random_state, center=center, solver=solver,
            max_score_cells=max_score_cells, split=split, overdispersion=overdispersion,
            sample_ratio=sample_ratio, folds=folds, progress=progress,
        )
    settings = SplitSettings(
        p, transform, loss, n_splits, random_state, split, overdispersion, sample_ratio, folds
    )
    settings = settings.validate(X)
    max_comps = clip_n_comps(max_comps, X.shape)

    def score(halves: Halves, seed) -> np.ndarray:
        fit = fit_pca(halves.a, max_comps, center=center, solver=solver, random_state=seed)
        halves.a = None  # summarised by the fit; free it before scoring
        cells = pick_score_cells(X.shape[0], max_score_cells, seed)
        return rank_loss_curve(fit, halves, loss, score_cells=cells)

    curves = run_splits(X, settings, score, progress=progress)
    params = dict(
        settings.params(), max_comps=max_comps, center=center, solver=solver,
        max_score_cells=max_score_cells,
    )
    return CalibrationResult("n_comps", np.arange(max_comps + 1), curves, params)
