"""PCA and neighbour-graph primitives that denoisers and diagnostics share.

These are building blocks, not denoisers: a truncated PCA of transformed values and a kNN
graph of cells. They sit below both the denoiser families (which score them against a held-out
half) and the diagnostics (which use neighbours to estimate overdispersion and the halves'
noise correlation), so neither has to import the other.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.neighbors import NearestNeighbors

from ._rng import RandomState
from ._validation import check_choice

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


def centred_randomized_pca(X, n_comps: int, seed: int, *, n_iter: int = 7,
                           oversample: int = 10) -> PCAFit:
    """Randomized PCA (Halko et al. 2011) of sparse ``X`` centred implicitly, never densified.

    Every product with ``X - 1 mu^T`` is ``X @ V - 1 (mu @ V)``, so the sparse matrix is used
    as it is; power iterations with QR keep the small singular directions accurate.

    Parameters
    ----------
    X
        Cells x genes sparse matrix.
    n_comps
        Number of components.
    seed
        Seed of the random test matrix.
    n_iter, oversample
        Power iterations and extra columns, as scikit-learn's ``randomized_svd``.

    Returns
    -------
    The fitted :class:`PCAFit` (scores ``U S``, components ``V``), in float64.
    """
    X = sparse.csr_matrix(X, dtype=np.float64)
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    ones = np.ones((X.shape[0], 1))

    def times(V):  # (X - 1 mu^T) V
        return X @ V - ones @ (mean @ V)[None, :]

    def transposed_times(U):  # (X - 1 mu^T)^T U
        return X.T @ U - np.outer(mean, U.sum(axis=0))

    width = min(n_comps + oversample, min(X.shape))
    Q = times(np.random.default_rng(seed).standard_normal((X.shape[1], width)))
    for _ in range(n_iter):
        Q = np.linalg.qr(times(np.linalg.qr(transposed_times(np.linalg.qr(Q)[0]))[0]))[0]
    Q = np.linalg.qr(Q)[0]
    U_small, S, Vt = np.linalg.svd(transposed_times(Q).T, full_matrices=False)
    U = Q @ U_small[:, :n_comps]
    # Signs as scikit-learn's svd_flip: the largest loading of each component positive.
    signs = np.sign(Vt[np.arange(n_comps), np.argmax(np.abs(Vt[:n_comps]), axis=1)])
    signs[signs == 0] = 1.0
    return PCAFit(U * S[:n_comps] * signs, Vt[:n_comps] * signs[:, None], mean)


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
        ``"randomized"`` centres sparse data implicitly (:func:`centred_randomized_pca`).
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
    if center and solver == "randomized" and sparse.issparse(X):
        # scikit-learn's PCA centres sparse data only with arpack and covariance_eigh.
        return centred_randomized_pca(X, n_comps, seed)
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



@dataclass
class NeighbourGraph:
    """Neighbours of each cell, nearest first and the cell itself at position 0."""

    indices: np.ndarray  # cells x n_neighbors
    distances: np.ndarray  # cells x n_neighbors

    @property
    def n_neighbors(self) -> int:
        """Neighbours stored per cell, the cell itself included."""
        return self.indices.shape[1]


def build_graph(values, n_neighbors: int, *, n_pcs: int = 30, random_state=0) -> NeighbourGraph:
    """kNN graph of cells from their transformed values (PCA, then exact Euclidean neighbours).

    Parameters
    ----------
    values
        Cells x genes transformed values (numpy or CSR); for calibration, half A only.
    n_neighbors
        Neighbours per cell, the cell itself included.
    n_pcs
        Principal components that the distances use (clipped to what the data allow).
    random_state
        Seed of the PCA solver.

    Returns
    -------
    The :class:`NeighbourGraph`.
    """
    n_cells = values.shape[0]
    if n_neighbors > n_cells:
        raise ValueError(
            f"n_neighbors={n_neighbors} exceeds the {n_cells} cells; use at most {n_cells}."
        )
    n_pcs = max(1, min(n_pcs, max_rank(values.shape)))
    embedding = fit_pca(values, n_pcs, random_state=random_state).scores
    search = NearestNeighbors(n_neighbors=n_neighbors).fit(embedding)
    distances, indices = search.kneighbors(embedding)
    put_self_first(indices, distances)
    return NeighbourGraph(indices, distances)


def put_self_first(indices: np.ndarray, distances: np.ndarray) -> None:
    """Move each cell to position 0 of its own neighbour row (in place), distance 0."""
    # Duplicated cells can tie at distance 0, so the cell itself is not always returned first.
    own = np.arange(indices.shape[0])
    not_first = indices[:, 0] != own
    for i in np.flatnonzero(not_first):
        where = np.flatnonzero(indices[i] == own[i])
        j = where[0] if where.size else indices.shape[1] - 1
        indices[i, 1 : j + 1] = indices[i, :j].copy()
        distances[i, 1 : j + 1] = distances[i, :j].copy()
        indices[i, 0], distances[i, 0] = i, 0.0

