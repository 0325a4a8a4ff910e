"""Half A's neighbour graph for the Leiden family: scaled genes, PCA, kNN, igraph's Leiden.

One graph is built per split (and per refined cluster) and clustered at every resolution;
:class:`GraphStart` hands the first split's graph from the calibration to the final labels.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._cores import worker_count
from ..embedding import (
    GRAM_MAX_CELLS,
    blas_threads_for,
    fit_pca,
    gram_pca,
    max_rank,
    randomized_pca,
    scanpy_neighbors,
)


def seed_of(seed) -> int:
    """A 31-bit integer seed (what igraph and scanpy take) from any package seed."""
    return int(np.random.default_rng(seed).integers(2**31 - 1))


# The resolutions scored by default, as scanpy's users sweep them (0: one cluster, added by
# the family).
DEFAULT_RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)

# Past this many cells the graph's PCA is randomized, with more power iterations and a wider
# range than the calibration's: at 30,000 cells (10 groups) its 9 leading components met
# ARPACK's at a principal-angle cosine of 0.99999 in 1.6 s against ARPACK's 5.9 s, where the
# default 4 iterations lost the flat tail. Up to it ARPACK: every truth test of issue 24
# (K = 12 at 3,000 cells, CellBench, PBMC 3k) and every refinement's draw of 5,000 cells.
ARPACK_MAX_CELLS = 5000
GRAPH_POWER_ITERATIONS = 10
GRAPH_OVERSAMPLE = 20


def neighbour_graph(values, n_comps: int, n_neighbors: int, seed: int) -> LeidenGraph:
    """The kNN graph of the PCA of ``values`` (scanpy's neighbors), ready for Leiden.

    The genes are scaled first (:func:`scaled_genes`), and the PCA is ARPACK's: on scaled
    genes the spectrum is flat, and the randomized solver's few power iterations lost the
    small groups' directions (1 of 20 seeds of K = 12 against ARPACK's 8; RESULTS, issue 24).
    Past :data:`ARPACK_MAX_CELLS` (5,000) it is randomized with 10 power iterations.
    The graph keeps the scaling and the PCA, so that other cells can be placed in its space
    (:meth:`LeidenGraph.embed`).
    """
    n_comps = max(1, min(n_comps, max_rank(values.shape)))
    n_neighbors = min(n_neighbors, values.shape[0] - 1)
    with blas_threads_for(values.shape[0]):
        scaling = GeneScaling.of(values)
        # The randomized PCA runs in float32 (it would convert a float64 copy); the exact ones in
        # float64, as every truth test of the clustering ran.
        scaled = scaling.apply(values, np.float64 if values.shape[0] <= ARPACK_MAX_CELLS
                               else np.float32)
        if values.shape[0] <= GRAM_MAX_CELLS:  # the same exact PCA, faster for few cells
            fit = gram_pca(scaled, n_comps)
        elif values.shape[0] <= ARPACK_MAX_CELLS:
            fit = fit_pca(scaled, n_comps, random_state=seed, solver="arpack")
        else:
            fit = randomized_pca(scaled, n_comps, seed, n_iter=GRAPH_POWER_ITERATIONS,
                                 oversample=GRAPH_OVERSAMPLE)
        del scaled  # a float64 copy of half A: not held while the neighbours are searched
        adjacency = knn_connectivities(fit.scores, n_neighbors, seed)
    return LeidenGraph.of(adjacency, scaling=scaling, fit=fit)


def knn_connectivities(scores: np.ndarray, n_neighbors: int, seed: int):
    """scanpy's kNN connectivities of cells' PCA ``scores`` (``sc.pp.neighbors``)."""
    graph = ad.AnnData(obs=pd.DataFrame(index=np.arange(scores.shape[0]).astype(str)),
                       obsm={"X_pca": scores})
    scanpy_neighbors(graph, n_neighbors=min(n_neighbors, scores.shape[0] - 1), use_rep="X_pca",
                     random_state=seed)
    return graph.obsp["connectivities"]


class LeidenGraph:
    """A weighted graph in igraph's form, built once and clustered at many resolutions.

    ``sc.tl.leiden`` rebuilds the igraph graph from the adjacency matrix on every call,
    which was half the time of the 169 Leiden runs of one calibration (RESULTS, issue 24).
    The graph is built as scanpy builds it (each stored entry an edge) and clustered with
    scanpy's arguments and seeding, so the labels are those of ``sc.tl.leiden(flavor=
    "igraph", n_iterations=2, directed=False)`` (a test checks it).
    """

    def __init__(self, graph, weights: np.ndarray, scaling: GeneScaling | None = None,
                 fit=None, arrays: tuple | None = None) -> None:
        self.graph = graph
        # float64, one per edge, passed to each run: as an igraph edge attribute they were a
        # list of Python floats, 32 bytes an edge (0.8 GB for a million cells; issue 28).
        self.weights = weights
        self.scaling, self.fit = scaling, fit
        self.arrays = arrays  # (cells, edges, weights): what workers rebuild the graph from

    @classmethod
    def of(cls, adjacency, *, scaling: GeneScaling | None = None, fit=None) -> LeidenGraph:
        """The igraph graph of a symmetric sparse adjacency matrix (and how it was embedded)."""
        adjacency = sparse.csr_matrix(adjacency)
        sources, targets = adjacency.nonzero()
        # int32 cells and the float32 weights scanpy stores (exact in float64): 12 bytes an
        # edge kept for the workers, where int64 and float64 took 24.
        index = np.int32 if adjacency.shape[0] < np.iinfo(np.int32).max else np.int64
        edges = np.column_stack([sources, targets]).astype(index, copy=False)
        arrays = (adjacency.shape[0], edges, np.asarray(adjacency[sources, targets]).ravel())
        return cls(*_igraph_of(*arrays), scaling, fit, arrays)

    @property
    def n_edges(self) -> int:
        """Edges of the graph (each stored entry of the adjacency one edge)."""
        return int(self.weights.size)

    def embed(self, values) -> np.ndarray:
        """PCA scores of other cells' ``values`` in this graph's scaled space (cells x comps)."""
        return embedded(values, self.scaling, self.fit)

    def labels(self, resolution: float, seed: int) -> np.ndarray:
        """Leiden (modularity, two iterations) at ``resolution``: codes 0..K-1."""
        import igraph

        try:
            igraph.set_random_number_generator(_SeededForIgraph(seed))
            part = self.graph.community_leiden(objective_function="modularity",
                                               weights=self.weights,
                                               resolution=float(resolution), n_iterations=2)
        finally:
            igraph.set_random_number_generator(random)
        return np.asarray(part.membership, dtype=np.int64)


def embedded(values, scaling: GeneScaling, fit) -> np.ndarray:
    """PCA scores of cells' ``values``, scaled by ``scaling``, in ``fit``'s components."""
    scaled = scaling.apply(values)
    return np.asarray(scaled @ fit.components.T) - fit.mean @ fit.components.T


def _igraph_of(n_cells: int, edges: np.ndarray, weights: np.ndarray):
    """igraph's undirected graph of these edges, and their weights in float64.

    Each stored entry is one edge; each Leiden run takes the weights as they are.
    """
    import igraph

    # add_edges takes the array in half the time of Graph(edges=...): 1.7 s against 3.4 s
    # for 3.4 million edges.
    graph = igraph.Graph(n=n_cells, directed=False)
    graph.add_edges(edges)
    return graph, np.asarray(weights, dtype=np.float64)


class _SeededForIgraph:
    """igraph's random source, drawn from ``np.random.RandomState(seed)`` as scanpy seeds it.

    The global ``random`` module, igraph's default, is neither used nor moved.
    """

    def __init__(self, seed: int) -> None:
        self._rng = np.random.RandomState(seed)

    def getrandbits(self, k: int) -> int:
        return self._rng.tomaxint() & ((1 << k) - 1)

    def randint(self, low: int, high: int) -> int:
        return self._rng.randint(low, high + 1)

    def random(self) -> float:
        return self._rng.random_sample()

    def gauss(self, mu: float, sigma: float) -> float:
        return self._rng.normal(mu, sigma)


# A scaled gene's values are capped this many standard deviations above its mean
# (``sc.pp.scale(max_value=10)`` in scanpy's standard pipeline).
SCALE_CAP = 10.0


def scaled_genes(values) -> sparse.csr_matrix:
    """``values`` with every gene at unit variance, capped :data:`SCALE_CAP` SDs up (CSR).

    Unscaled, the first components follow the large groups' many variable genes: at K = 12
    only 13-31% of a 33-cell group's 15 neighbours were its own; scaled, 75-90% (RESULTS,
    issue 24). The stored values are scaled and capped and the PCA centres implicitly, so
    no zero is filled in. Unlike ``sc.pp.scale`` there is no lower clip: values are at
    least 0, and a zero lies 10 SDs below the mean only for a gene 10 SDs above 0
    everywhere. Dense input takes the same path, so both formats give the same graph.
    """
    return GeneScaling.of(values).apply(values)


@dataclass(frozen=True)
class GeneScaling:
    """Each gene's scale and cap, learnt from some cells and applied to any.

    See :func:`scaled_genes`.
    """

    inverse: np.ndarray  # 1 / SD (0 for a constant gene)
    cap: np.ndarray  # the largest scaled value: mean / SD + SCALE_CAP

    @classmethod
    def of(cls, values) -> GeneScaling:
        """The scaling that puts these cells' genes at unit variance."""
        from .._sparse_kernels import column_means_and_squares  # numba: when used

        values = sparse.csr_matrix(values)  # no copy of CSR input
        n_cells = values.shape[0]
        # Summed from the values as they are: a float64 copy of half A and its product with
        # itself were the graph's largest memory (1.2 GB at 200,000 cells; issue 28).
        mean, square = column_means_and_squares(values.data, values.indices, values.shape[1],
                                                n_cells)
        return cls.of_moments(mean, square, n_cells)

    @classmethod
    def of_moments(cls, mean: np.ndarray, square: np.ndarray, n_cells: int) -> GeneScaling:
        """The scaling of genes with these means and mean squares over ``n_cells`` cells."""
        sd = np.sqrt(np.maximum(square - mean**2, 0.0) * n_cells / max(n_cells - 1, 1))
        inverse = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)
        return cls(inverse, mean * inverse + SCALE_CAP)

    def apply(self, values, dtype=np.float64) -> sparse.csr_matrix:
        """``values`` scaled and capped (CSR, stored values only), in ``dtype``.

        The result shares the input's indices (a constant gene keeps stored zeros, which no
        product sees), and is computed in float64 by blocks, so float32 output is the
        float64 result rounded, without a float64 copy of the whole matrix.
        """
        values = sparse.csr_matrix(values)
        data = np.empty(values.nnz, dtype=dtype)
        for start in range(0, values.nnz, SCALE_BLOCK):
            block = slice(start, min(start + SCALE_BLOCK, values.nnz))
            genes = values.indices[block]
            data[block] = np.minimum(values.data[block].astype(np.float64)
                                     * self.inverse[genes], self.cap[genes])
        return sparse.csr_matrix((data, values.indices, values.indptr), shape=values.shape)


# Stored values scaled per block of GeneScaling.apply (float64 temporaries of 32 MB).
SCALE_BLOCK = 2**22


def leiden_labels(graph: LeidenGraph, resolution: float, seed: int) -> np.ndarray:
    """Leiden clusters of ``graph`` at ``resolution``, as integer codes 0..K-1."""
    return graph.labels(resolution, seed)


# From this many cells, the resolutions of a sweep are shared among worker processes, one per
# usable core: igraph's Leiden runs on one core, and at 200,000
# cells its twelve runs (5.5-7.4 s each) were a third of the workflow (issue 28). Each run
# is seeded alone, so the labels do not depend on the number of workers. At 30,000 cells the
# sweep took 4.5 s on two workers against 6.5 s in turn, but 6.9 s when the workers had to
# start (importing the package takes a new process 2.9 s).
PARALLEL_SWEEP_CELLS = 50000


def leiden_sweep(graph: LeidenGraph, resolutions, seed: int) -> list[np.ndarray]:
    """:func:`leiden_labels` at each resolution, in order (resolution 0: one cluster)."""
    resolutions = [float(value) for value in resolutions]
    todo = [value for value in resolutions if value > 0]
    workers = (min(worker_count(None, len(todo)), workers_that_fit(graph))
               if graph.arrays is not None and graph.graph.vcount() >= PARALLEL_SWEEP_CELLS
               else 1)
    if workers > 1:
        from joblib import Parallel, delayed

        # One task per worker, every worker-th resolution: low and high resolutions, whose
        # runs differ in cost, are spread evenly. The graph travels as its numpy arrays
        # (pickling igraph's graph took 1.4 s at 30,000 cells, its arrays a few ms). This
        # process only waits: igraph holds the GIL, and a batch run here kept the thread that
        # sends the workers their tasks from running until it was done.
        batches = [todo[start::workers] for start in range(workers)]
        done = Parallel(n_jobs=workers, backend="loky")(
            delayed(_batch_labels)(graph.arrays, batch, seed) for batch in batches)
        found = {value: labels for batch, labels in zip(batches, done, strict=True)
                 for value, labels in zip(batch, labels, strict=True)}
    else:
        found = {value: graph.labels(value, seed) for value in todo}
    n_cells = graph.graph.vcount()
    return [found[value] if value > 0 else np.zeros(n_cells, dtype=np.int64)
            for value in resolutions]


# What one sweep worker holds per edge: igraph's edge vectors, the weights, the arrays it
# is sent and Leiden's own (3.0-3.5 GB of RSS for about 25 million edges at a million cells).
WORKER_BYTES_PER_EDGE = 130


def workers_that_fit(graph: LeidenGraph) -> int:
    """How many sweep workers the free memory holds, at least 1 (this process runs alone).

    At a million cells two workers with a graph each, beside this process, outgrew a 24 GB
    machine; the runs are the same whoever makes them, so fewer workers only take longer.
    """
    free = free_memory_bytes()
    if free is None:
        return 1 << 30
    return max(1, int(0.8 * free // (WORKER_BYTES_PER_EDGE * max(graph.n_edges, 1))))


def free_memory_bytes() -> int | None:
    """Memory the system can give without swapping (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _batch_labels(arrays: tuple, resolutions: list[float], seed: int) -> list[np.ndarray]:
    """A worker's share of a sweep (module level, so that it can be sent to the worker)."""
    graph = LeidenGraph(*_igraph_of(*arrays))
    return [graph.labels(value, seed) for value in resolutions]


@dataclass(frozen=True)
class GraphStart:
    """The first split's half-A graph, handed from the calibration to the final labels.

    Within one ``calibrate_leiden`` (or ``rank_genes_groups_split``) call the final labels
    are made on the very graph the calibration scored; building it again was a sixth of the
    call's time (RESULTS, issue 24). It is used only when the half-A values it was built
    from, its genes and its options are the fit's own (:meth:`fits`), and it is never kept
    in the AnnData.
    """

    graph: LeidenGraph
    key: tuple
    halves: Any = None  # the first split's halves the graph was built from
    split_seed: int | None = None  # that split's seed (seed_of)
    scored: Any = None  # half A's GeneSubset the graph was built from
    n_top_genes: int | None = None  # the option that chose its genes

    @classmethod
    def of(cls, graph: LeidenGraph, scored: Any, options: dict, seed: int,
           halves: Any = None) -> GraphStart:
        """The start of ``graph``, built from ``scored`` (half A's ``GeneSubset``) and options.

        ``halves``, the split ``scored`` came from, is handed on too, so that the labels'
        split is not drawn again (a draw took 11 s at 200,000 cells; issue 28).
        """
        return cls(graph, _graph_key(scored, options["n_comps"], options["n_neighbors"], seed),
                   halves, seed, scored, options["n_top_genes"])

    def halves_of(self, seed: int, p: float):
        """The handed-on halves when they are the split of ``seed`` at share ``p``, else None."""
        if self.halves is None or self.split_seed != seed or self.halves.p != p:
            return None
        return self.halves

    def scored_of(self, halves: Any, n_top_genes: int | None):
        """The handed-on genes when they were chosen from these very halves so, else None."""
        if self.scored is None or halves is not self.halves or n_top_genes != self.n_top_genes:
            return None
        return self.scored

    def fits(self, scored: Any, n_comps: int, n_neighbors: int, seed: int) -> bool:
        """Whether this graph is the one these values and options would build."""
        return self.key == _graph_key(scored, n_comps, n_neighbors, seed)


def _graph_key(scored: Any, n_comps: int, n_neighbors: int, seed: int) -> tuple:
    """What a half-A graph depends on: its values (by digest), genes, options and seed."""
    digest = hashlib.blake2b(digest_size=16)
    if hasattr(scored, "fingerprint"):  # a dask split: its counts, seed and genes
        digest.update(scored.fingerprint.encode())
        return (digest.hexdigest(), (scored.n_cells, scored.genes.size),
                scored.genes.tobytes(), int(n_comps), int(n_neighbors), int(seed))
    values = scored.values
    if sparse.issparse(values):
        values = sparse.csr_matrix(values)
        for part in (values.indptr, values.indices, values.data):
            digest.update(np.ascontiguousarray(part))  # read in place: tobytes() copied it
    else:
        digest.update(np.ascontiguousarray(values))
    return (digest.hexdigest(), tuple(values.shape), scored.genes.tobytes(), int(n_comps),
            int(n_neighbors), int(seed))
