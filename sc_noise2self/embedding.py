"""PCA and neighbour-graph primitives that denoisers and diagnostics share.

These are building blocks, not denoisers: a truncated PCA of transformed values and a kNN
graph of cells. They sit below both the denoiser families (which score them against a held-out
half) and the diagnostics (which use neighbours to estimate overdispersion and the halves'
noise correlation), so neither has to import the other.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import linalg, sparse
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

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


# Power iterations of the randomized solver. Cold: two more than the fewest (2) whose chosen
# ranks equalled the exact solver's on the 16 real and synthetic sets of
# benchmarks/bench_pca_solvers.py. Warm (the final fit, from the calibration's components of
# half A): one iteration met ARPACK's components of the full data at principal-angle cosines
# of 0.9998 and 0.99997 (100k and 30k synthetic cells), where four cold ones gave 0.998.
RANDOMIZED_ITERATIONS = 4
WARM_ITERATIONS = 1
# "auto" takes the randomized solver for sparse data when the range it needs is this small
# a share of the smaller side (else ARPACK, exact, on small or narrow data).
_RANDOMIZED_SHARE = 0.25


def randomized_pca(X, n_comps: int, seed: int, *, center: bool = True,
                   n_iter: int | None = None, oversample: int = 10,
                   start: np.ndarray | None = None) -> PCAFit:
    """Randomized PCA (Halko, Martinsson & Tropp 2011) of a sparse matrix, centred implicitly.

    Every product with ``X - 1 mu^T`` is ``X @ V - 1 (mu @ V)``, so the sparse matrix is used
    as it is, in float32 on every core (:mod:`sc_noise2self._sparse_kernels`). One thin
    float32 buffer holds the range; each power iteration re-orthonormalises it in place from
    its float64 Gram matrix (SVQB, Stathopoulos & Wu 2002), so no second cells x width copy
    is made. The scores are the exact projection ``(X - 1 mu^T) V^T`` on the components.
    The iteration itself is :func:`randomized_factors`, which the torch path shares.

    Parameters
    ----------
    X
        Cells x genes sparse matrix (converted to float32 CSR when it is not).
    n_comps
        Number of components.
    seed
        Seed of the random test matrix.
    center
        Subtract the gene means; False gives a truncated SVD.
    n_iter, oversample
        Power iterations (default :data:`RANDOMIZED_ITERATIONS`, or
        :data:`WARM_ITERATIONS` from a ``start``) and extra columns of the range.
    start
        Components (K x genes) to start the range from, e.g. a PCA of a molecule split's
        half A; missing columns are random.

    Returns
    -------
    The fitted :class:`PCAFit`: float32 scores, float64 components and mean.
    """
    from ._sparse_kernels import column_sums, csr_times, csr_transposed_times

    X = sparse.csr_matrix(X)
    data = X.data.astype(np.float32, copy=False)
    parts = (data, X.indices, X.indptr)
    n_cols = X.shape[1]
    ones = np.ones((X.shape[0], 1), dtype=np.float32)  # scipy's sum would copy the values
    mean = (csr_transposed_times(*parts, ones, n_cols).ravel() / X.shape[0] if center
            else np.zeros(n_cols))

    def times(V, out=None):  # (X - 1 mu^T) V, in place in ``out``
        out = csr_times(*parts, V, out)
        out -= (mean @ V).astype(np.float32)
        return out

    def transposed_times(U):  # (X - 1 mu^T)^T U, float64
        return csr_transposed_times(*parts, U, n_cols) - np.outer(mean, column_sums(U))

    products = CentredProducts(times, transposed_times, _orthonormalise, lambda M: M)
    components, scores = randomized_factors(products, np, X.shape, n_comps, seed,
                                            n_iter=n_iter, oversample=oversample, start=start)
    return PCAFit(scores, components, mean)


@dataclass(frozen=True)
class CentredProducts:
    """What :func:`randomized_factors` needs of a centred matrix ``X - 1 mu^T``, on a backend.

    Attributes
    ----------
    times
        ``times(V, out=None)``: ``(X - 1 mu^T) V`` as float32, in ``out`` where the backend
        writes in place (the numpy path reuses the range's buffer).
    transposed_times
        ``transposed_times(U)``: ``(X - 1 mu^T)^T U`` as float64.
    orthonormalise
        Makes a float32 range's columns orthonormal (:func:`svqb_transform` applied).
    to_backend
        Moves a host float64 array where the products run.
    """

    times: Callable
    transposed_times: Callable
    orthonormalise: Callable
    to_backend: Callable


def randomized_factors(products: CentredProducts, xp, shape: tuple[int, int], n_comps: int,
                       seed: int, *, n_iter: int | None = None, oversample: int = 10,
                       start: np.ndarray | None = None):
    """The randomized range finder and SVD, once for numpy and torch (``xp`` is either module).

    Returns
    -------
    The components (``n_comps`` x genes, float64, signs as scikit-learn's) and the scores
    (cells x ``n_comps``, float32), as arrays of ``xp``.
    """
    width = min(n_comps + oversample, min(shape))
    test = products.to_backend(start_matrix(shape[1], width, seed, start))
    Y = products.orthonormalise(products.times(test))
    if n_iter is None:
        n_iter = RANDOMIZED_ITERATIONS if start is None else WARM_ITERATIONS
    for _ in range(n_iter):
        Q = xp.linalg.qr(products.transposed_times(Y))[0]
        Y = products.orthonormalise(products.times(Q, out=Y))
    _, _, Vt = xp.linalg.svd(products.transposed_times(Y).T, full_matrices=False)
    del Y
    components = flip_signs(Vt[:n_comps], xp)
    return components, products.times(components.T)


def start_matrix(n_cols: int, width: int, seed: int, start: np.ndarray | None) -> np.ndarray:
    """The randomized solver's first genes x width matrix.

    The start's components first, then seeded Gaussian columns, drawn on the CPU so that
    every device starts alike.
    """
    rng = np.random.default_rng(seed)
    if start is None:
        return rng.standard_normal((n_cols, width))
    known = np.asarray(start, dtype=np.float64)[:width].T
    return np.hstack([known, rng.standard_normal((n_cols, width - known.shape[1]))])


def svqb_transform(gram, xp):
    """The width x width matrix that makes a range with this float64 Gram orthonormal.

    SVQB (Stathopoulos & Wu 2002): ``Y @ transform`` has orthonormal columns. Directions the
    data do not reach (eigenvalues below 1e-10 of the largest) stay zero. ``xp`` is numpy or
    torch.
    """
    values, vectors = xp.linalg.eigh(gram)
    keep = values > values.max() * 1e-10
    transform = xp.zeros_like(vectors)
    transform[:, keep] = vectors[:, keep] / xp.sqrt(values[keep])
    return transform


def _orthonormalise(Y: np.ndarray, rows: int = 8192) -> np.ndarray:
    """Make the columns of float32 ``Y`` orthonormal in place, a block of rows at a time."""
    from ._sparse_kernels import gram

    transform = svqb_transform(gram(Y), np).astype(np.float32)
    for start in range(0, Y.shape[0], rows):
        Y[start:start + rows] = Y[start:start + rows] @ transform
    return Y


def flip_signs(components, xp=np):
    """Signs as scikit-learn's svd_flip: the largest loading of each component positive."""
    largest = xp.argmax(xp.abs(components), axis=1)
    rows = xp.ones_like(largest).cumsum(0) - 1  # an arange on the components' device
    signs = xp.sign(components[rows, largest])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


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


def solver_seed(random_state: RandomState) -> int:
    """The integer seed the solvers' starting vectors are drawn from, for any package seed."""
    return int(np.random.default_rng(random_state).integers(2**31 - 1))


def resolve_solver(solver: str, X, n_comps: int) -> str:
    """The solver ``"auto"`` stands for on ``X`` (see :func:`fit_pca`); others unchanged."""
    check_choice(solver, SOLVERS, name="solver")
    if solver != "auto":
        return solver
    small_range = n_comps + 10 <= _RANDOMIZED_SHARE * min(X.shape)
    return "randomized" if sparse.issparse(X) and small_range else "arpack"


# Up to this many cells (a refined cluster, a small data set) gram_pca is exact like ARPACK
# and 3-6 times faster from 100 to 1,000 cells; at 2,000 cells they were even (issue 24).
GRAM_MAX_CELLS = 1000
# Up to this many cells a graph is built with one BLAS thread. scipy's OpenBLAS threads
# keep spinning after a threaded call and take the cores from the kNN search that follows
# (sklearn's OpenMP): on 2 cores, the kNN of 225 cells took 35 ms after an eigh of 700 cells
# against 1.5 ms after the same eigh on one thread, and the refinement's eight kNN searches
# on PBMC 3k 280 ms against 12 ms (RESULTS, issue 24, eighth session). On so few cells the
# PCA loses little by it; past it the randomized PCA's products need the threads.
ONE_BLAS_THREAD_MAX_CELLS = 5000


def blas_threads_for(n_cells: int):
    """A context with one BLAS thread for a graph of few cells (the default past them)."""
    if n_cells <= ONE_BLAS_THREAD_MAX_CELLS:
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


# Genes per dense block of gram_pca: the cells x cells Gram matrix is summed over blocks of
# this many genes, so no more than cells x 256 values are ever dense at once.
GRAM_GENE_BLOCK = 256


def gram_pca(X, n_comps: int) -> PCAFit:
    """Exact centred PCA of few cells through their cells x cells Gram matrix.

    For a block of up to about a thousand cells (the refinement of one cluster), the
    eigenvectors of the centred Gram matrix ``(X - 1 mean^T)(X - 1 mean^T)^T`` are the
    scores' directions: 3-6 times faster than ARPACK at 100-1,000 cells, with scores equal to
    1e-11 (up to each component's sign; RESULTS, issue 24). Past a few thousand cells the
    ``n^3`` eigensolver loses to ARPACK. Each component's largest loading is made positive.

    Parameters
    ----------
    X
        Cells x genes, numpy or sparse; genes are densified a block at a time.
    n_comps
        Number of components, below the number of cells.

    Returns
    -------
    The fitted :class:`PCAFit`.
    """
    X = X.tocsc() if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    n_cells, n_genes = X.shape
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    gram = np.zeros((n_cells, n_cells))
    for first in range(0, n_genes, GRAM_GENE_BLOCK):
        block = X[:, first:first + GRAM_GENE_BLOCK]
        block = block.toarray() if sparse.issparse(block) else block
        block = block - mean[first:first + GRAM_GENE_BLOCK]
        gram += block @ block.T
    values, vectors = linalg.eigh(gram, subset_by_index=(n_cells - n_comps, n_cells - 1))
    order = np.argsort(values)[::-1]
    singular = np.sqrt(np.maximum(values[order], 0.0))
    vectors = vectors[:, order]
    # components = U^T (X - 1 mean^T) / s, without forming X - 1 mean^T
    components = (np.asarray(X.T @ vectors).T - np.outer(vectors.sum(axis=0), mean))
    components /= np.where(singular > 0, singular, 1.0)[:, None]
    signs = np.sign(components[np.arange(n_comps), np.abs(components).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return PCAFit(vectors * singular * signs, components * signs[:, None], mean)


def fit_pca(
    X,
    n_comps: int,
    *,
    center: bool = True,
    solver: Solver = "auto",
    random_state: RandomState = 0,
    start: np.ndarray | None = None,
) -> PCAFit:
    """Fit a truncated PCA, centring sparse data implicitly.

    Parameters
    ----------
    X
        Cells x genes float matrix (numpy or CSR/CSC); it is not densified.
    n_comps
        Number of components.
    center
        Subtract gene means (as ``sc.pp.pca``); ``False`` gives a truncated SVD.
    solver
        ``"auto"`` is ``"randomized"`` for sparse data whose range (``n_comps`` plus 10) is
        at most a quarter of the smaller side, else ``"arpack"`` (exact; scanpy's default for
        sparse data). ``"randomized"`` runs :func:`randomized_pca` on sparse data, whose
        chosen ranks equalled ARPACK's on real and synthetic sets (``benchmarks/RESULTS.md``).
    random_state
        Seed of the iterative solvers' starting vectors.
    start
        Components to start the randomized solver from (see :func:`randomized_pca`).

    Returns
    -------
    The fitted :class:`PCAFit` (float64; the randomized solver's scores are float32).
    """
    solver = resolve_solver(solver, X, n_comps)
    seed = solver_seed(random_state)
    if solver == "randomized" and sparse.issparse(X):
        # scikit-learn's PCA centres sparse data only with arpack and covariance_eigh.
        return randomized_pca(X, n_comps, seed, center=center, start=start)
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


def build_graph(values, n_neighbors: int, *, n_pcs: int = 30, random_state=0,
                exact_for_few_cells: bool = False) -> NeighbourGraph:
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
    exact_for_few_cells
        Up to :data:`GRAM_MAX_CELLS` cells, take the exact PCA of :func:`gram_pca`, which
        is faster there than the default solver.

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
    with blas_threads_for(n_cells):
        if exact_for_few_cells and n_cells <= GRAM_MAX_CELLS:
            embedding = gram_pca(values, n_pcs).scores
        else:
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


# scanpy's exact neighbours end below this many cells (euclidean); above it scanpy builds a
# pynndescent index, whose output we convert (see :func:`scanpy_neighbors`).
SCANPY_EXACT_KNN_CELLS = 8192


def scanpy_neighbors(graph, *, n_neighbors: int, use_rep: str, random_state: int) -> None:
    """``sc.pp.neighbors`` on ``graph`` that works with every pynndescent release.

    pynndescent 0.7 returns a ``csr_array``, which scanpy 1.11 reads with ``getnnz`` (only
    ``csr_matrix`` has it), so every dataset past scanpy's exact path (8,192 cells) failed.
    Past that size we hand scanpy the same approximate transformer it would build (UMAP's
    ``n_trees`` and ``n_iters``), converting its output to ``csr_matrix``.
    """
    import scanpy as sc

    transformer = None
    n_obs = graph.n_obs
    if n_obs >= SCANPY_EXACT_KNN_CELLS:
        transformer = _csr_nndescent_class()(
            n_neighbors=n_neighbors, metric="euclidean", random_state=random_state,
            n_jobs=sc.settings.n_jobs, n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
            n_iters=max(5, round(np.log2(n_obs))))
    sc.pp.neighbors(graph, n_neighbors=n_neighbors, use_rep=use_rep,
                    random_state=random_state, transformer=transformer)


@functools.cache
def _csr_nndescent_class():
    """The class, made on first use: pynndescent is slow to import."""
    from pynndescent import PyNNDescentTransformer

    class CsrNNDescent(PyNNDescentTransformer):
        """pynndescent's transformer, returning ``scipy.sparse.csr_matrix`` (scanpy reads it)."""

        def fit_transform(self, X, y=None, **fit_params):
            return sparse.csr_matrix(super().fit_transform(X, y, **fit_params))

        def transform(self, X, y=None):
            return sparse.csr_matrix(super().transform(X, y))

    return CsrNNDescent

