"""The Leiden family on a dask array of counts: graph and Leiden in memory, counts in chunks.

The first split is drawn chunk by chunk (the in-memory split, bit for bit: one random
stream per row) and kept on the scored genes only, as one :class:`ChunkHalves` per row
chunk, persisted where the dask scheduler keeps data: on a distributed cluster in the
workers' memory, which dask spills to disk when it runs short. What comes to this process:

- vectors of one value per cell (totals, labels, losses) and clusters x genes sums;
- half A's PCA scores (cells x ``n_comps``), from the genes x genes covariance of its
  scaled values summed over chunks (an exact PCA, as in memory up to 5,000 cells);
- the kNN graph of the scores, which Leiden clusters at every resolution;
- the rows of the cells a refinement draws (at most 5,000 a cluster).

Every loss is a pass over the chunks: each cell's deviance needs its own counts and the
clusters' half-A sums only (:func:`~.cluster_loss.partition_sums`, added over chunks, then
:func:`~.cluster_loss.deviances_given`). The reassignment's passes likewise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse

from .._dask import row_offsets, tree_reduce
from .._rng import row_stream_key
from ..calibration import DaskCounts, SplitSettings
from ..embedding import PCAFit, blas_threads_for, max_rank
from ..splitting import gene_sizes, split_rows
from ..transforms import apply_transform, library_sizes, normalised_values, normalize_to_depth
from .cluster_loss import (
    PRIOR_CELLS,
    DevianceTargets,
    canonical,
    cluster_sums,
    deviances_given,
    partition_sums_within,
    top_variable_genes,
)
from .leiden_graph import GeneScaling, LeidenGraph, embedded, knn_connectivities
from .pca_dask import covariance_components, value_statistics


@dataclass(frozen=True)
class SplitPlan:
    """What a chunk task needs to draw its rows' split and prepare half A."""

    p: float
    transform: str
    depth: float  # the median total of all the counts, as in memory
    key: np.ndarray  # of the rows' random streams
    sizes: np.ndarray | None  # NB sizes per gene, or None for a binomial split

    @classmethod
    def of(cls, counts: DaskCounts, settings: SplitSettings, seed) -> SplitPlan:
        """The plan of the split of ``seed`` (settings validated: NB sizes resolved)."""
        return cls(settings.p, settings.transform, counts.depth, row_stream_key(seed, "split"),
                   gene_sizes(counts.X, settings.split, settings.overdispersion))

    def scored_halves(self, chunk, first_row: int, genes: np.ndarray) -> ChunkHalves:
        """The chunk's halves on ``genes``, as in memory (``prepare_halves``, then the genes).

        Half A's values are normalised by each cell's total over every gene, then only the
        scored genes are normalised (the same arithmetic, entry by entry).
        """
        half_a, half_b = split_rows(chunk, self.p, self.key, first_row=first_row,
                                    sizes=self.sizes)
        a = canonical(half_a)[:, genes]
        b = canonical(half_b)[:, genes]
        totals = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
        return ChunkHalves(a, b, totals, DevianceTargets.of(a, b, totals, self.p),
                           library_sizes(half_a), self.p * self.depth, self.transform)

    def half_a_counts(self, chunk, block_id=None, offsets=None):
        """Half A's raw counts of a chunk (CSR), for ``map_blocks``."""
        half_a, _ = split_rows(chunk, self.p, self.key, first_row=int(offsets[block_id[0]]),
                               sizes=self.sizes)
        return sparse.csr_matrix(half_a)


@dataclass
class ChunkHalves:
    """One row chunk's split on the scored genes (what :class:`GeneSubset` holds in memory)."""

    a: sparse.csr_matrix  # half A's raw counts, canonical
    b: sparse.csr_matrix  # half B's raw counts, canonical
    totals: np.ndarray  # half-A totals over the scored genes
    # Made once with the chunk: remade on every pass, they were three quarters of a
    # deviance pass's time (half A's count at each of half B's non-zeros, above all).
    deviance_targets: DevianceTargets
    # What half A's values are made from, when a pass reads them (graph, validation):
    # kept, they were a fifth of what the workers hold, for a few passes of the whole run.
    depth_totals: np.ndarray  # half-A totals over every gene: the normalisation's
    depth: float  # the total every cell is normalised to
    transform: str

    def values(self, rows: np.ndarray | None = None) -> sparse.csr_matrix:
        """Half A's values of ``rows`` (None: every cell): the graph's, as in memory.

        Each cell is normalised by its total over every gene, then only the scored genes
        are normalised and transformed: the in-memory arithmetic, entry by entry.
        """
        a = self.a if rows is None else self.a[rows]
        totals = self.depth_totals if rows is None else self.depth_totals[rows]
        # A copy of the counts' values that shares their index arrays, as in memory.
        values = sparse.csr_matrix((a.data.astype(np.float32), a.indices, a.indptr),
                                   shape=a.shape)
        normalize_to_depth(values, self.depth, totals, inplace=True)
        return apply_transform(values, self.transform, inplace=True)

    def __sizeof__(self) -> int:
        # What dask's scheduler weighs a chunk by (its ``sizeof`` falls back to this): with
        # the object's own few bytes it moved whole chunks between workers to balance their
        # load, seconds a pass, and kept a copy on both.
        t = self.deviance_targets
        arrays = (self.a.data, self.a.indices, self.a.indptr, self.b.data, self.b.indices,
                  self.b.indptr, self.totals, self.depth_totals, t.indptr, t.genes,
                  t.observed, t.own_a, t.constant, t.gene_sums)  # shared ones counted once
        return object.__sizeof__(self) + sum({id(x): x.nbytes for x in arrays}.values())

    def targets_of(self, rows: np.ndarray | None) -> DevianceTargets:
        """The deviance targets of ``rows`` of the chunk (None: all of them).

        Their ``gene_sums`` and ``prior`` are the chunk's own: a pass replaces them with its
        population's (:func:`_deviances_of_rows`).
        """
        if rows is None:
            return self.deviance_targets
        return self.deviance_targets.of_cells(rows, with_counts=False)


def _chunk_moments(part: ChunkHalves, n_cells: int) -> dict:
    from .._sparse_kernels import column_means_and_squares  # numba: imported when used

    values = part.values()
    mean, square = column_means_and_squares(values.data, values.indices, values.shape[1],
                                            n_cells)
    return {"mean": mean, "square": square}


def _chunk_gram(part: ChunkHalves, scaling) -> dict:
    return value_statistics(scaling.apply(part.values()))


def _chunk_scores(part: ChunkHalves, scaling, fit: PCAFit) -> np.ndarray:
    return embedded(part.values(), scaling, fit)


def _added(parts: list):
    """The sum of several chunks' results: dicts, tuples or arrays of equal shapes."""
    first = parts[0]
    if isinstance(first, dict):
        return {name: sum(part[name] for part in parts) for name in first}
    if isinstance(first, tuple):
        return tuple(sum(values) for values in zip(*parts, strict=True))
    return sum(parts)


@dataclass
class DaskSplit:
    """The first split of dask counts on the scored genes, held chunk by chunk.

    It stands where :class:`~.cluster_loss.GeneSubset` stands in memory: the genes, both
    halves' counts (for the loss) and half A's values (for the graph, made from its counts
    when a pass reads them), each in its chunks.
    """

    parts: list  # persisted delayed ChunkHalves, one per row chunk
    starts: np.ndarray  # each chunk's first row
    n_cells: int
    genes: np.ndarray
    p: float
    totals: np.ndarray  # half-A totals over the scored genes, every cell
    gene_sums: np.ndarray  # the population's half-A sum of each scored gene
    fingerprint: str  # of the counts, the split and the genes: what the split depends on
    settings: SplitSettings  # validated (NB sizes resolved): the lazy halves' too
    n_top_genes: int | None  # the option that chose the genes
    b_sizes: Any = None  # the NB split's sizes, when they were an array (as Halves keeps)

    @classmethod
    def of(cls, counts: DaskCounts, settings: SplitSettings, seed,
           n_top_genes: int | None) -> DaskSplit:
        """Draw the split of ``seed``, choose half A's genes, keep both halves on them."""
        import dask

        X = counts.X
        plan = SplitPlan.of(counts, settings, seed)
        if n_top_genes is None or n_top_genes >= X.shape[1]:
            genes = np.arange(X.shape[1])
        else:
            half_a = X.map_blocks(plan.half_a_counts, offsets=row_offsets(X), dtype=X.dtype,
                                  meta=sparse.csr_matrix((0, 0), dtype=X.dtype))
            genes = top_variable_genes(half_a, n_top_genes)
        starts = row_offsets(X)
        blocks = X.to_delayed(optimize_graph=False).ravel()
        parts = [dask.delayed(plan.scored_halves)(block, int(first), genes)
                 for block, first in zip(blocks, starts, strict=True)]
        parts = list(dask.persist(*parts))
        totals = np.concatenate(dask.compute(*[dask.delayed(_totals)(part) for part in parts]))
        digest = hashlib.sha1(counts.totals.tobytes())
        sizes = np.zeros(0) if plan.sizes is None else plan.sizes
        for piece in (plan.key, genes, np.asarray(X.shape), np.asarray([plan.p]), sizes):
            digest.update(np.ascontiguousarray(piece).tobytes())
        digest.update(plan.transform.encode())
        split = cls(parts, starts, X.shape[0], genes, settings.p, totals, np.zeros(genes.size),
                    digest.hexdigest(), settings, n_top_genes)
        split.gene_sums = split.reduce(_gene_sums)
        return split

    @property
    def prior(self) -> float:
        """The population rate's weight in typical cells' half-A molecules (as in memory)."""
        return PRIOR_CELLS * max(float(np.median(self.totals)), 1.0)

    def rows(self, index: int) -> slice:
        """The rows of chunk ``index``."""
        end = self.starts[index + 1] if index + 1 < self.starts.size else self.n_cells
        return slice(int(self.starts[index]), int(end))

    def map(self, function, *args, **by_rows) -> list:
        """``function(part, *args, **{name: array[rows]})`` for every chunk, computed, in order.

        ``by_rows`` arrays of one entry per cell are cut to each chunk's rows.
        """
        import dask

        with _expected_graph(args, by_rows):
            return list(dask.compute(*self._tasks(function, args, by_rows)))

    def reduce(self, function, *args, **by_rows):
        """The sum over chunks of :meth:`map`'s results, added in a tree."""
        import dask

        with _expected_graph(args, by_rows):
            (total,) = dask.compute(tree_reduce(self._tasks(function, args, by_rows), _added))
        return total

    def _tasks(self, function, args: tuple, by_rows: dict) -> list:
        import dask

        # Each argument once in the graph, which every chunk's task refers to: inlined, the
        # clusters x genes sums of a sweep would travel once per chunk to the workers.
        shared = [dask.delayed(arg, pure=True) for arg in args]
        return [dask.delayed(function)(part, *shared, **{name: array[self.rows(i)]
                                                           for name, array in by_rows.items()})
                for i, part in enumerate(self.parts)]

    # -- what the Leiden family asks of its scored genes -----------------------------------

    def graph(self, n_comps: int, n_neighbors: int, seed: int):
        """Half A's neighbour graph, as :func:`~.leiden_graph.neighbour_graph` builds it.

        The genes are scaled by moments summed over chunks, and the PCA is the exact one of
        the genes x genes covariance (the in-memory graph's up to 5,000 cells).
        """
        n_comps = max(1, min(n_comps, max_rank((self.n_cells, self.genes.size))))
        moments = self.reduce(_chunk_moments, self.n_cells)
        scaling = GeneScaling.of_moments(moments["mean"], moments["square"], self.n_cells)
        fit = covariance_components(self.reduce(_chunk_gram, scaling), n_comps, center=True)
        fit.scores = np.concatenate(self.map(_chunk_scores, scaling, fit))
        with blas_threads_for(self.n_cells):
            adjacency = knn_connectivities(fit.scores, n_neighbors, seed)
        return LeidenGraph.of(adjacency, scaling=scaling, fit=fit)

    def centroids(self, codes: np.ndarray, n_comps: int) -> np.ndarray:
        """Each cluster's mean half-A PCA score, as the validation's tree takes them.

        The values are half A's counts normalised to their median total and log1p'd; the
        PCA is the exact one of their covariance, summed over chunks.
        """
        depth = float(np.median(self.totals))
        n_comps = max(1, min(n_comps, max_rank((self.n_cells, self.genes.size))))
        fit = covariance_components(self.reduce(_chunk_log_gram, depth), n_comps, center=True)
        n_clusters = int(codes.max()) + 1
        sums = self.reduce(_chunk_log_sums, depth, n_clusters, labels=codes)
        means = sums / np.bincount(codes, minlength=n_clusters)[:, None]
        return (means - fit.mean) @ fit.components.T

    def values_of(self, cells: np.ndarray) -> sparse.csr_matrix:
        """Half A's values of ``cells`` (sorted indices), gathered from their chunks."""
        return sparse.vstack(self.map(_values_at, cells=self._local(cells)), format="csr")

    def embedded(self, graph, cells: np.ndarray) -> np.ndarray:
        """PCA scores of ``cells`` (sorted) in ``graph``'s space, computed in their chunks."""
        return np.concatenate(self.map(_embedded_at, graph.scaling, graph.fit,
                                       cells=self._local(cells)))

    def _local(self, cells: np.ndarray) -> np.ndarray:
        """``cells`` as a per-cell mask (what :meth:`map` cuts to each chunk's rows)."""
        chosen = np.zeros(self.n_cells, dtype=bool)
        chosen[cells] = True
        return chosen


def _expected_graph(args: tuple, by_rows: dict):
    """Raise distributed's large-graph warning above what a pass must send, not at 10 MB.

    A pass sends one value per cell to the chunks (a sweep's labels: 104 MB at a million
    cells and 13 resolutions), which scattering would move just the same; the warning then
    told the user of nothing they could change. A graph larger than those arrays still warns.
    """
    import dask

    sent = _nbytes((*args, *by_rows.values()))
    return dask.config.set({"distributed.admin.large-graph-warning-threshold":
                            f"{10_000_000 + 2 * sent}B"})


def _nbytes(value) -> int:
    """Bytes of the arrays in ``value``, an array or a tuple or list of them (nested)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple | list):
        return sum(_nbytes(item) for item in value)
    return 0


def _log_values(part: ChunkHalves, depth: float) -> sparse.csr_matrix:
    return sparse.csr_matrix(normalised_values(part.a, depth, "log1p"), dtype=np.float64)


def _chunk_log_gram(part: ChunkHalves, depth: float) -> dict:
    return value_statistics(_log_values(part, depth))


def _chunk_log_sums(part: ChunkHalves, depth: float, n_clusters: int,
                    labels: np.ndarray) -> np.ndarray:
    return cluster_sums(_log_values(part, depth), labels, n_clusters)


def _totals(part: ChunkHalves) -> np.ndarray:
    return part.totals


def _gene_sums(part: ChunkHalves, mask=None) -> np.ndarray:
    if mask is None:
        return np.asarray(part.a.sum(axis=0, dtype=np.float64)).ravel()
    return _masked_sums(part, np.zeros(mask.size, dtype=np.int64), 1, mask)[0][0]


def _values_at(part: ChunkHalves, cells: np.ndarray) -> sparse.csr_matrix:
    return part.values(np.flatnonzero(cells))


def _embedded_at(part: ChunkHalves, scaling, fit: PCAFit, cells: np.ndarray) -> np.ndarray:
    return embedded(part.values(np.flatnonzero(cells)), scaling, fit)


class ChunkedTargets:
    """The deviance targets of a :class:`DaskSplit`: what :class:`DevianceTargets` is in memory.

    The population is every cell of the split, or the sorted ``cells`` given (a node of the
    validation's tree), whose half-A sums give every rate. :func:`~.cluster_loss.
    partition_deviances` calls :meth:`deviances`; the refinement gathers a cluster's drawn
    cells with :meth:`of_cells`; the reassignment sums and scores by chunks through
    :meth:`label_sums` and :meth:`map_rows`. Labels and results are the population's, in
    its order.
    """

    def __init__(self, split: DaskSplit, cells: np.ndarray | None = None) -> None:
        self.split, self.p, self.cells = split, split.p, cells
        self.mask = None if cells is None else split._local(cells)
        self.totals = split.totals if cells is None else split.totals[cells]
        # A subpopulation's gene sums come with its first partition's sums (no extra pass).
        self._gene_sums = split.gene_sums if cells is None else None
        self.prior = PRIOR_CELLS * max(float(np.median(self.totals)), 1.0)

    @property
    def gene_sums(self) -> np.ndarray:
        """The population's half-A sum of each gene."""
        if self._gene_sums is None:
            self._gene_sums = self.split.reduce(_gene_sums, mask=self.mask)
        return self._gene_sums

    def deviances(self, labels: np.ndarray) -> np.ndarray:
        """Each cell's deviance under ``labels``: two passes over the chunks."""
        return self.deviances_of([labels])[0]

    def deviances_of(self, labelings: list) -> list[np.ndarray]:
        """Each cell's deviance under each of ``labelings``, in the same two passes."""
        labels = np.column_stack([np.asarray(one, dtype=np.int64) for one in labelings])
        sizes = [int(column.max()) + 1 for column in labels.T]
        sums = self.split.reduce(_chunk_labelled_sums, sizes, **self._by_rows(labels=labels))
        if self._gene_sums is None:  # every cell of the population has a label
            self._gene_sums = sums[0].sum(axis=0)
        per_cell = self.map_rows(_deviances_of_rows, self.gene_sums, self.prior, sums,
                                 labels=labels, targets=True)
        return list(per_cell.T)

    def label_sums(self, labels: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
        """Each cluster's half-A sums of every gene and of all genes (one pass)."""
        return self.split.reduce(_chunk_labelled_sums, [n_clusters],
                                 **self._by_rows(labels=np.asarray(labels)[:, None]))

    def map_rows(self, function, *args, targets: bool = False, **by_rows) -> np.ndarray:
        """``function(a, totals, *args, **by_rows)`` on each chunk's population, joined.

        ``a`` is the chunk's half-A counts in float64 (its :class:`DevianceTargets` when
        ``targets``: with the chunk's own ``gene_sums`` and ``prior``, which ``function``
        replaces with the population's), ``by_rows`` arrays of one entry per population cell
        are cut likewise.
        """
        parts = self.split.map(_chunk_rows, function, args, targets,
                               **self._by_rows(**by_rows))
        return np.concatenate([part for part in parts if part is not None])

    def of_cells(self, cells: np.ndarray) -> DevianceTargets:
        """The targets of ``cells`` (sorted, of the population) in memory, rates as they are."""
        chosen = cells if self.cells is None else self.cells[cells]
        parts = self.split.map(_chunk_cells, cells=self.split._local(chosen))
        a = sparse.vstack([part[0] for part in parts], format="csr")
        b = sparse.vstack([part[1] for part in parts], format="csr")
        return replace(DevianceTargets.of(a, b, self.totals[cells], self.p),
                       gene_sums=self.gene_sums, prior=self.prior)

    def _by_rows(self, **arrays) -> dict:
        """Per-cell ``arrays`` of the population spread over every cell, with the mask."""
        if self.cells is None:
            return arrays
        spread = {}
        for name, values in arrays.items():
            full = np.zeros((self.split.n_cells, *values.shape[1:]), dtype=values.dtype)
            full[self.cells] = values
            spread[name] = full
        return {**spread, "mask": self.mask}


def _masked_sums(part: ChunkHalves, labels: np.ndarray, size: int,
                 mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partition_sums` of the population's cells of the chunk, by ``labels``."""
    return partition_sums_within(labels, part.a, part.totals, size, mask)


def _chunk_labelled_sums(part: ChunkHalves, sizes: list[int], labels: np.ndarray,
                         mask=None) -> tuple:
    """:func:`partition_sums` of every column of ``labels``, flat: (sums, totals, ...)."""
    return tuple(array for column, size in zip(labels.T, sizes, strict=True)
                 for array in _masked_sums(part, column, size, mask))


def _deviances_of_rows(targets: DevianceTargets, totals, gene_sums, prior: float,
                       sums: tuple, labels: np.ndarray) -> np.ndarray:
    """Cells x labelings: each cell's deviance under each column of ``labels``."""
    targets = replace(targets, gene_sums=gene_sums, prior=prior)
    return np.column_stack([deviances_given(column, targets, sums[2 * k], sums[2 * k + 1])
                            for k, column in enumerate(labels.T)])


def _chunk_rows(part: ChunkHalves, function, args: tuple, targets: bool, mask=None,
                **by_rows) -> np.ndarray:
    rows = None if mask is None else np.flatnonzero(mask)
    totals = part.totals if rows is None else part.totals[rows]
    if not totals.size:  # no cell of the population here
        return None
    if rows is not None:
        by_rows = {name: values[rows] for name, values in by_rows.items()}
    if targets:
        first = part.targets_of(rows)
    else:
        first = (part.a if rows is None else part.a[rows]).astype(np.float64)
    return function(first, totals, *args, **by_rows)


def _chunk_cells(part: ChunkHalves, cells: np.ndarray):
    rows = np.flatnonzero(cells)
    return part.a[rows], part.b[rows]
