"""The clustering loss: half B's counts predicted by each cell's half-A cluster.

Shared by the Leiden family (which resolution, which refinement) and by the validation of
clusters (which splits replicate): both compare partitions by these per-cell deviances
and their paired standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import anndata as ad
import numpy as np
from scipy import sparse

from .._validation import is_dask_array
from ..losses import Halves


@dataclass
class GeneSubset:
    """Half A's values and both halves' counts on the genes a clustering is made and scored on.

    The genes are chosen from half A alone, so half B stays unseen. Each cell's depth is its
    half-A total over these genes, so the rates of :func:`count_deviances` sum to one.
    """

    genes: np.ndarray
    values: Any  # half A normalised and transformed (for the graph)
    a: Any  # raw counts
    b: Any
    totals: np.ndarray

    def values_of(self, cells: np.ndarray):
        """Half A's values of ``cells`` (what a refinement's graph is built from)."""
        return self.values[cells]

    def embedded(self, graph, cells: np.ndarray) -> np.ndarray:
        """PCA scores of ``cells`` in ``graph``'s space (:meth:`LeidenGraph.embed`)."""
        return graph.embed(self.values[cells])


def cell_deviances(labels: np.ndarray, halves: Halves) -> np.ndarray:
    """Each cell's Poisson deviance of half B under its half-A cluster's leave-one-out rate.

    Cell ``i`` of cluster ``k`` is predicted ``mu_ig = r_ig * n_i * (1 - p) / p``: the
    cluster's rate of gene ``g`` in half A WITHOUT cell ``i`` (its own molecules never
    predict it), times the cell's own half-A total ``n_i`` moved to half B's share. The rate
    is shrunk towards the population's (also leave-one-out) by :data:`PRIOR_CELLS` typical
    cells' worth of molecules ``c``, so a one-cell cluster predicts exactly as the baseline:

        r_ig = (S_kg - a_ig + c pi_g) / (T_k - n_i + c),   pi_g = (S_g - a_ig) / (T - n_i),

    with ``S_kg`` and ``T_k`` the cluster's half-A sums of gene ``g`` and of all genes.
    Predicting counts at each cell's own depth removes what transformed, depth-normalised
    means reward (sorting cells by depth); leaving the cell out removes its own share of a
    small cluster's mean. The rates sum to 1 over genes, so ``sum_g mu_ig`` is the same for
    every partition and only half B's non-zero counts need a prediction.

    Returns
    -------
    Array (cells,) of summed deviances ``2 sum_g [b log(b / mu) - (b - mu)]``.
    """
    return count_deviances(labels, halves.a_counts, halves.b_counts, halves.totals_a,
                           halves.p)


def count_deviances(labels: np.ndarray, a, b, totals_a: np.ndarray, p: float) -> np.ndarray:
    """:func:`cell_deviances` of raw half-A counts ``a`` and half-B counts ``b`` (cells x genes).

    ``totals_a`` are the cells' half-A totals and ``p`` half A's share of the molecules; the
    population (and its prior) is the cells given.
    """
    return partition_deviances(labels, DevianceTargets.of(a, b, totals_a, p))


@dataclass
class DevianceTargets:
    """What every partition's deviances share: half B's non-zeros and their half-A counts.

    Made once per split (:meth:`of`) and scored for each partition by
    :func:`partition_deviances`; :meth:`of_cells` keeps some cells and the whole
    population's rates.
    """

    a: Any  # canonical CSR, raw half-A counts
    totals: np.ndarray  # each cell's half-A total
    indptr: np.ndarray  # half B's row pointers: cell i's non-zeros are indptr[i]:indptr[i+1]
    genes: np.ndarray  # the gene of each of half B's non-zeros
    observed: np.ndarray  # and its count
    own_a: np.ndarray  # the half-A count of the same cell and gene
    constant: np.ndarray  # each cell's 2 (sum_g mu - sum_g b), the same for every partition
    p: float
    gene_sums: np.ndarray  # the population's half-A sum of each gene
    prior: float  # PRIOR_CELLS typical cells' half-A molecules

    @classmethod
    def of(cls, a, b, totals_a: np.ndarray, p: float) -> DevianceTargets:
        """The targets of raw half-A counts ``a`` and half-B counts ``b``."""
        a, b = canonical(a), canonical(b)
        totals = np.asarray(totals_a, dtype=np.float64)
        b_totals = np.asarray(b.sum(axis=1), dtype=np.float64).ravel()
        # The rates sum to one over genes, so sum_g mu = n_i (1 - p) / p for any partition.
        constant = 2.0 * (totals * (1.0 - p) / p - b_totals)
        # float32 counts (exact below 2^24), half B's own when they are float32 already:
        # half B's non-zeros are the largest arrays of a clustering's loss (issue 28).
        gene_sums = np.asarray(a.sum(axis=0, dtype=np.float64)).ravel()
        prior = PRIOR_CELLS * max(float(np.median(totals)), 1.0)
        return cls(a, totals, b.indptr.astype(np.int64), b.indices,
                   b.data.astype(np.float32, copy=False), values_at(a, b), constant, p,
                   gene_sums, prior)

    def of_cells(self, cells: np.ndarray, with_counts: bool = True) -> DevianceTargets:
        """The targets of ``cells`` (sorted indices) alone, scored against the population.

        A partition of some cells leaves every other cell's prediction as it was, so two
        partitions of them are compared on their deviances alone. Without ``with_counts``
        their half-A counts ``a`` are not copied (None): :func:`deviances_given` does not
        read them, and a dask pass over a chunk's cells needs nothing else.
        """
        per_cell = np.diff(self.indptr)
        chosen = np.zeros(self.totals.size, dtype=bool)
        chosen[cells] = True
        keep = np.repeat(chosen, per_cell)  # sorted cells keep their entries in order
        indptr = np.concatenate([[0], np.cumsum(per_cell[cells])])
        return replace(self, a=self.a[cells] if with_counts else None,
                       totals=self.totals[cells], indptr=indptr,
                       genes=self.genes[keep], observed=self.observed[keep],
                       own_a=self.own_a[keep], constant=self.constant[cells])

    @property
    def population_total(self) -> float:
        """All the population's half-A molecules (on the scored genes)."""
        return float(self.gene_sums.sum())


def partition_deviances(labels: np.ndarray, targets) -> np.ndarray:
    """Each cell's deviance under ``labels`` (see :func:`cell_deviances`).

    ``targets`` are :class:`DevianceTargets`, or any targets with a ``deviances`` method
    (the dask backend's, whose cells live in chunks).
    """
    if not isinstance(targets, DevianceTargets):
        return targets.deviances(labels)
    labels = np.asarray(labels, dtype=np.int64)
    sums, cluster_totals = partition_sums(labels, targets.a, targets.totals,
                                          int(labels.max()) + 1)
    return deviances_given(labels, targets, sums, cluster_totals)


def partition_deviances_of(labelings: list, targets) -> list[np.ndarray]:
    """:func:`partition_deviances` of several partitions of the same cells.

    In memory one after the other; the dask backend's targets score them all in the same
    two passes over the chunks.
    """
    if not isinstance(targets, DevianceTargets):
        return targets.deviances_of(labelings)
    return [partition_deviances(labels, targets) for labels in labelings]


def partition_sums(labels: np.ndarray, a, totals: np.ndarray,
                   n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's sums of half-A counts ``a`` (canonical CSR): per gene, and ``totals``.

    Sums over cells: those of several blocks of cells add up to the whole population's.

    Returns
    -------
    ``(clusters x genes, clusters)``, float64.
    """
    from .._count_kernels import labelled_row_sums  # numba: imported when used

    labels = np.asarray(labels, dtype=np.int64)
    sums = labelled_row_sums(a.data, a.indices, a.indptr, labels, n_clusters, a.shape[1])
    return sums, np.bincount(labels, weights=totals, minlength=n_clusters)


def partition_sums_within(labels: np.ndarray, a, totals: np.ndarray, n_clusters: int,
                          mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partition_sums` of the cells in ``mask`` alone (None: every cell).

    The other cells go to one more cluster, dropped after: the counts are summed where they
    lie, not copied row by row first.
    """
    if mask is None:
        return partition_sums(labels, a, totals, n_clusters)
    sums, cluster_totals = partition_sums(np.where(mask, labels, n_clusters), a, totals,
                                          n_clusters + 1)
    return sums[:n_clusters], cluster_totals[:n_clusters]


def deviances_within(targets: DevianceTargets, mask: np.ndarray,
                     labels: np.ndarray) -> np.ndarray:
    """Each cell of ``mask``'s deviance under ``labels`` (one per such cell), as the population.

    The same deviances as the targets of those cells alone (their gene sums and prior the
    population's), without copying their counts: the validation's root node copied both
    halves whole, a third of the peak memory at 200,000 cells (issue 28).
    """
    labels = np.asarray(labels, dtype=np.int64)
    every = np.zeros(mask.size, dtype=np.int64)
    every[mask] = labels
    n_clusters = int(labels.max()) + 1
    sums, cluster_totals = partition_sums_within(every, targets.a, targets.totals, n_clusters,
                                                 mask)
    population = replace(targets, gene_sums=sums.sum(axis=0),
                         prior=PRIOR_CELLS * max(float(np.median(targets.totals[mask])), 1.0))
    # The other cells are scored too, against cluster 0, and dropped: a pass over all of
    # half B's non-zeros costs less than copying the population's.
    return deviances_given(every, population, sums, cluster_totals)[mask]


def deviances_given(labels: np.ndarray, targets: DevianceTargets, sums: np.ndarray,
                    cluster_totals: np.ndarray) -> np.ndarray:
    """Each cell's deviance under ``labels``, given the clusters' :func:`partition_sums`.

    The sums may be a larger population's (the cells of ``targets`` are then a block of it,
    with the population's ``gene_sums`` and ``prior``): each cell's deviance depends on its
    own counts and on these sums only.
    """
    from .._count_kernels import partition_deviance_sums  # numba: imported when used

    t = targets
    deviance = partition_deviance_sums(
        t.indptr, t.genes, t.observed, t.own_a, np.asarray(labels, dtype=np.int64), t.totals,
        sums, cluster_totals, t.gene_sums, t.population_total, t.prior, (1.0 - t.p) / t.p)
    return 2.0 * deviance + t.constant


# Weight of the population's rate in each cluster's rate, in typical cells of half A.
PRIOR_CELLS = 10.0


def values_at(a, b) -> np.ndarray:
    """``a``'s values at ``b``'s stored entries (0 where ``a`` has none); canonical CSR."""
    from .._count_kernels import values_at_entries  # numba: imported when used

    return values_at_entries(a.data, a.indices, a.indptr, b.indices, b.indptr)


def canonical(X):
    """CSR with sorted indices, no duplicates and no stored zeros (keys increase)."""
    X = sparse.csr_matrix(X)
    if not X.has_canonical_format or (X.nnz and not X.data.all()):
        X = X.copy()
        X.sum_duplicates()
        X.eliminate_zeros()  # a stored 0 would make 0 log 0 a NaN in the deviance
    return X


def cluster_sums(values, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Each cluster's sum of ``values`` (dense K x genes, float64), sparse input kept sparse."""
    members = sparse.csr_matrix((np.ones(labels.size), (labels, np.arange(labels.size))),
                                shape=(n_clusters, labels.size))
    sums = members @ values
    return sums.toarray() if sparse.issparse(sums) else np.asarray(sums, dtype=np.float64)


def top_variable_genes(counts, n_top_genes: int) -> np.ndarray:
    """Indices of the most variable genes of raw counts (normalised, log1p, "seurat").

    ``counts`` in memory, or a dask array of them (scanpy sums its chunks).
    """
    import scanpy as sc

    if is_dask_array(counts):
        values = counts.map_blocks(hvg_values, dtype=np.float32,
                                   meta=sparse.csr_matrix((0, 0), dtype=np.float32))
    else:
        values = hvg_values(counts)
    table = sc.pp.highly_variable_genes(ad.AnnData(values), n_top_genes=n_top_genes,
                                        flavor="seurat", inplace=False)
    return np.flatnonzero(np.asarray(table["highly_variable"]))


def hvg_values(counts) -> sparse.csr_matrix:
    """Counts as scanpy's standard pipeline has them for ``highly_variable_genes``.

    Normalised to 10,000 per cell and log1p-transformed, in float32; each cell by its own
    total, so a block of cells gets its rows of the whole matrix's values.
    """
    import scanpy as sc

    values = ad.AnnData(sparse.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(values, target_sum=1e4)
    sc.pp.log1p(values)
    return values.X


def paired_standard_errors(per_cell: np.ndarray) -> np.ndarray:
    """Standard error of each grid point's mean loss minus the best point's, paired by cell.

    ``per_cell`` is (grid, cells). Cells are the independent units of a split, so the
    spread of their paired differences says how far two points' means can be trusted apart.
    """
    best = int(np.nanargmin(np.where(np.isfinite(per_cell).all(axis=1),
                                     per_cell.sum(axis=1), np.inf)))
    differences = per_cell - per_cell[best]
    return differences.std(axis=1, ddof=1) / np.sqrt(per_cell.shape[1])


def coarsest_within(losses: np.ndarray, errors: np.ndarray, best: int) -> int:
    """The first point whose loss is within its standard error of the ``best`` point's."""
    within = np.flatnonzero(np.isfinite(losses) & (losses - losses[best] <= errors))
    return int(within.min()) if within.size else best
