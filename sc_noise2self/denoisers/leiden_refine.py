"""Labels after Leiden: clusters split again on their own graphs, cells moved by likelihood.

Both steps work on half A alone and are kept only where the clustering loss on half B
(:mod:`.cluster_loss`) says they predict fresh molecules better, so half B stays the
referee and the marker tests on it stay honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import CubicSpline

from .cluster_loss import (
    DevianceTargets,
    GeneSubset,
    coarsest_within,
    paired_standard_errors,
    partition_deviances,
    partition_sums,
)
from .leiden_graph import DEFAULT_RESOLUTIONS, leiden_labels, neighbour_graph, seed_of

# Each chosen cluster of at least this many cells is clustered again on its own cells, in
# up to this many passes (the second looks only at the clusters the first one split).
REFINE_MIN_CELLS = 30
REFINE_PASSES = 2
# A split is offered only when each of its sub-clusters has this many cells. One-cell
# clusters predict by the population's rate, so on a cluster of noise (Leiden at a given
# resolution on one population) shattering it beat keeping it: the loss was right that the
# cluster was worse than none, but hundreds of one-cell clusters are no answer.
REFINE_MIN_SUBCLUSTER = 10


@dataclass
class Refinement:
    """The labels after :func:`refined_clusters`, and what it split."""

    labels: np.ndarray
    n_before: int  # clusters before
    splits: list[str]  # one line per split kept
    reassignment: str = field(default="")  # what :func:`reassigned_by_likelihood` did


def refined_clusters(labels: np.ndarray, scored: GeneSubset, targets: DevianceTargets,
                     options: dict, seed: int) -> Refinement:
    """Split each cluster again on its own half-A graph, where the loss says so.

    One graph of all the cells can leave groups of 1-2% mixed into their neighbours at every
    resolution, though the loss prefers them apart by 8-13 standard errors (K = 12; RESULTS,
    issue 24): its components follow the large groups. A cluster's own graph spends its
    components on what varies inside it. Each cluster of at least
    :data:`REFINE_MIN_CELLS` is clustered at every default resolution, and ``rule`` picks
    among those splits and the unsplit cluster by the same loss and standard errors as the
    resolution (under ``"1se"`` a split must beat the cluster by more than its noise). One
    cluster is never refined, so a population without structure stays one cluster.
    """
    before = int(labels.max()) + 1
    splits: list[str] = []
    pending = set(range(before)) if before > 1 else set()
    for step in range(REFINE_PASSES):
        split_now = set()
        for cluster in sorted(pending):
            cells = np.flatnonzero(labels == cluster)
            if cells.size < REFINE_MIN_CELLS:
                continue
            sub, gain = cluster_split(cells, scored, targets, options,
                                      seed_of([seed, step, cluster]))
            if sub is None:
                continue
            new_codes = int(labels.max()) + sub[sub > 0]
            labels = labels.copy()
            labels[cells[sub > 0]] = new_codes
            split_now |= {cluster, *np.unique(new_codes).tolist()}
            splits.append(f"pass {step + 1}: {cells.size} cells into {int(sub.max()) + 1} "
                          f"clusters, {gain:.1f} standard errors better")
        pending = split_now
    return Refinement(ordered_by_size(labels), before, splits)


def cluster_split(cells: np.ndarray, scored: GeneSubset, targets: DevianceTargets,
                  options: dict, seed: int) -> tuple[np.ndarray | None, float]:
    """The split of ``cells`` that ``rule`` picks (None: keep them together) and its gain.

    The gain is the loss the split saves over the unsplit cluster, in paired standard
    errors of the cluster's cells. A cluster of more than :data:`REFINE_MAX_CELLS` is split
    on that many of its cells, drawn at random (:func:`placed_by_neighbours`).
    """
    sample = refinement_sample(cells, seed)
    graph = neighbour_graph(scored.values_of(sample), options["n_comps"],
                            options["n_neighbors"], seed)
    candidates = [np.zeros(sample.size, dtype=np.int64)]
    for resolution in DEFAULT_RESOLUTIONS:
        sub = leiden_labels(graph, resolution, seed)
        if sub.max() > 0 and np.bincount(sub).min() >= REFINE_MIN_SUBCLUSTER:
            candidates.append(sub)
    if len(candidates) == 1:
        return None, 0.0
    local = targets.of_cells(sample)
    per_cell = np.asarray([partition_deviances(labels, local) for labels in candidates])
    losses = per_cell.mean(axis=1)
    best = int(np.argmin(losses))
    chosen = (coarsest_within(losses, paired_standard_errors(per_cell), best)
              if options.get("rule", "1se") == "1se" else best)
    if chosen == 0:
        return None, 0.0
    saved = per_cell[0] - per_cell[chosen]
    gain = paired_gain(saved)
    split = candidates[chosen]
    if sample.size < cells.size:
        split = placed_by_neighbours(cells, sample, split, graph, scored,
                                     options["n_neighbors"])
    return split, gain


# A cluster of more cells is refined on this many of them, drawn at random, and its other
# cells join the sub-cluster of most of their nearest drawn cells: the refinement's cost
# stops growing with the atlas, and a group of 1% of 200,000 cells inside a cluster of 40%
# still has about 125 cells in the draw (issue 28).
REFINE_MAX_CELLS = 5000


def refinement_sample(cells: np.ndarray, seed: int) -> np.ndarray:
    """At most :data:`REFINE_MAX_CELLS` of ``cells`` (sorted), drawn with ``seed``."""
    if cells.size <= REFINE_MAX_CELLS:
        return cells
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(cells, size=REFINE_MAX_CELLS, replace=False))


def placed_by_neighbours(cells: np.ndarray, sample: np.ndarray, sample_labels: np.ndarray,
                         graph, scored, n_neighbors: int) -> np.ndarray:
    """Labels of all ``cells`` from those of the drawn ``sample``.

    The drawn cells keep theirs; the others take the majority of their ``n_neighbors``
    nearest drawn cells in the PCA space of the drawn cells' graph (``scored``'s values
    placed there by :meth:`~.cluster_loss.GeneSubset.embedded`).
    """
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.empty(cells.size, dtype=np.int64)
    drawn = np.isin(cells, sample, assume_unique=True)
    labels[drawn] = sample_labels
    vote = KNeighborsClassifier(n_neighbors=min(n_neighbors, sample.size))
    vote.fit(graph.fit.scores, sample_labels)
    labels[~drawn] = vote.predict(scored.embedded(graph, cells[~drawn]))
    return labels


def ordered_by_size(labels: np.ndarray) -> np.ndarray:
    """Codes 0..K-1 with 0 the largest cluster, as ``sc.tl.leiden`` numbers them."""
    order = np.argsort(-np.bincount(labels), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels]



# Passes of the reassignment; it stops sooner when no cell moves.
REASSIGN_PASSES = 10
# The cluster rates of the reassignment are shrunk to the population's by this many typical
# cells' molecules, not the loss's 10: on CellBench dropseq at 10 and 20% depth (5 seeds
# each, Poisson likelihood, the loss's 2,000 genes), one cell gave ARI 0.87-0.97 against the
# lines where 10 gave 0.71-0.96 (RESULTS, issue 24, seventh session).
REASSIGN_PRIOR_CELLS = 1.0


@dataclass
class Reassignment:
    """The labels after :func:`reassigned_by_likelihood`, and the loss's verdict on them."""

    labels: np.ndarray
    moved: int  # cells whose cluster changed (0 when Leiden's labels were kept)
    verdict: str


def reassigned_by_likelihood(labels: np.ndarray, targets: DevianceTargets,
                             sizes: np.ndarray | None = None) -> Reassignment:
    """Each cell moved to the cluster whose half-A rates make its half-A molecules likeliest.

    A kNN graph of normalised, log-transformed values places a shallow cell by values whose
    noise and bias grow as its depth falls, so Leiden leaves some shallow cells in the
    wrong cluster (CellBench dropseq at 10% depth: the misplaced cells had 1,260 molecules
    against a median of 2,253; RESULTS, issue 24). A count likelihood weighs every cell's
    molecules as they are. Passes of classification EM move each cell to the cluster of
    highest NB likelihood of its half-A counts on the loss's genes (``targets.a``), at half
    A's per-gene ``sizes`` of those genes (None: Poisson), its own cluster's rate taken
    without its own molecules, until no cell moves. The sizes matter: with genes as bursty
    as b = 0.5, a Poisson likelihood moved up to a third of correctly placed cells. The
    moved labels are kept only when their loss on half B is lower than Leiden's, and the
    passes stop as soon as it is not: the referee decides, and it never sees a label made
    from half B.
    """
    rows = CountRows.of(targets)
    sizes = (np.full(targets.gene_sums.size, np.inf) if sizes is None
             else np.asarray(sizes, dtype=np.float64))
    current = np.unique(labels, return_inverse=True)[1]
    origin = np.unique(labels)  # the given code of each current cluster
    given = partition_deviances(labels, targets)
    loss = given
    for _ in range(REASSIGN_PASSES):
        step = likeliest_step(current, rows, rows.totals, sizes)
        # A cluster every cell left is dropped: empty, it would predict by the population.
        kept, step = np.unique(step, return_inverse=True)
        if kept.size == origin.size and np.array_equal(step, current):
            break
        origin, current = origin[kept], step
        # Passes that have made half B's loss worse than Leiden's labels stop: on PBMC 3k
        # each of ten passes moved 160-490 cells, the loss rose from the first and the
        # referee vetoed the end, after 0.5 s. Passes that are still better go on to
        # convergence (stopping at the first pass that does not improve on the last one
        # cost CellBench dropseq 10% 2 of 5 seeds at ARI >= 0.9; RESULTS, eighth session).
        loss = partition_deviances(origin[current], targets)
        if loss.mean() >= given.mean():
            break
    final = origin[current]
    changed = int(np.sum(final != labels))
    if changed == 0:
        return Reassignment(labels, 0, "no cell is likelier in another cluster")
    gain = paired_gain(given - loss)
    if loss.mean() >= given.mean():
        return Reassignment(labels, 0, f"{changed} cells would move, but the loss on half B "
                                       f"is not lower ({gain:.1f} standard errors); kept")
    moved = ordered_by_size(final)
    emptied = np.unique(labels).size - np.unique(final).size
    lost = f"; {emptied} cluster(s) emptied" if emptied else ""
    return Reassignment(moved, changed,
                        f"{changed} cells moved, {gain:.1f} standard errors better{lost}")


def paired_gain(saved: np.ndarray) -> float:
    """The mean of per-cell savings in its standard errors (0 when they do not vary)."""
    error = float(saved.std(ddof=1) / np.sqrt(saved.size))
    return float(saved.mean() / error) if error > 0 else 0.0


def likeliest_step(labels: np.ndarray, counts_a, totals: np.ndarray,
                   sizes: np.ndarray) -> np.ndarray:
    """One pass of :func:`reassigned_by_likelihood`, with small clusters closed as they shrink.

    A cluster that a pass would leave with fewer than :data:`REFINE_MIN_SUBCLUSTER` cells,
    and fewer than it had, is closed and its cells go to their likeliest other cluster, as
    the refinement offers no sub-cluster that small: otherwise a few cells like those that
    left can linger in it (five misplaced cells left a cluster of their own, and two cells
    of their group moved in).
    """
    n_clusters = int(labels.max()) + 1
    before = np.bincount(labels, minlength=n_clusters)
    closed = np.zeros(n_clusters, dtype=bool)
    while True:
        step = likeliest_clusters(labels, counts_a, totals, sizes, closed)
        after = np.bincount(step, minlength=n_clusters)
        shrunk = ~closed & (after < REFINE_MIN_SUBCLUSTER) & (after < before)
        if not shrunk.any() or (closed | shrunk).all():
            return step
        closed |= shrunk


def likeliest_clusters(labels: np.ndarray, counts_a, totals: np.ndarray, sizes: np.ndarray,
                       closed: np.ndarray | None = None) -> np.ndarray:
    """Every cell's likeliest cluster, none of them ``closed`` (default: none closed).

    ``counts_a`` are half A's counts (CSR) with their row ``totals``, or rows held in
    chunks (:class:`CountRows`'s methods: the dask backend's targets).
    """
    rows = counts_a if hasattr(counts_a, "map_rows") else CountRows(counts_a, totals)
    n_clusters = int(labels.max()) + 1
    labels = np.asarray(labels, dtype=np.int64)
    sums, cluster_totals = rows.label_sums(labels, n_clusters)
    gene_sums = sums.sum(axis=0)
    prior = REASSIGN_PRIOR_CELLS * max(float(np.median(totals)), 1.0)
    prior_counts = prior * gene_sums / max(float(gene_sums.sum()), 1.0)
    rates = (sums + prior_counts) / (cluster_totals + prior)[:, None]
    # The zeros' depth of a cell in its own cluster: the cluster's sums without the cell.
    own_scale = (cluster_totals[labels] + prior) / (cluster_totals[labels] - totals + prior)
    if closed is None:
        closed = np.zeros(n_clusters, dtype=bool)
    fallback = int(np.argmax(np.where(closed, -1.0, cluster_totals)))  # the largest open one
    model = LikelihoodModel(rates, sums, prior_counts, cluster_totals, prior, sizes,
                            zero_grid(totals, own_scale))
    return rows.map_rows(_likeliest_rows, model, closed, fallback, labels=labels,
                         own_scale=own_scale)


@dataclass
class CountRows:
    """Half A's counts in memory, with the two operations the reassignment needs.

    The dask backend's targets offer the same two, computed chunk by chunk.
    """

    a: Any  # CSR of counts, any float dtype (the kernel widens each count to float64)
    totals: np.ndarray

    @classmethod
    def of(cls, targets) -> Any:
        """The rows of deviance targets: in memory, their counts as they are.

        A float64 copy of half A's float32 counts was the reassignment's whole rise in
        memory (0.62 GB at 200,000 cells); the kernel reads each count as float64 instead.
        """
        if hasattr(targets, "map_rows"):
            return targets
        return cls(targets.a, targets.totals)

    def label_sums(self, labels: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
        """Each cluster's sums of every gene and of the totals."""
        return partition_sums(labels, self.a, self.totals, n_clusters)

    def map_rows(self, function, *args, **by_rows) -> np.ndarray:
        """``function(a, totals, *args, **by_rows)`` on all the rows."""
        return function(self.a, self.totals, *args, **by_rows)


@dataclass(frozen=True)
class LikelihoodModel:
    """The clusters' rates of one reassignment pass: what every cell is scored against."""

    rates: np.ndarray
    sums: np.ndarray
    prior_counts: np.ndarray
    cluster_totals: np.ndarray
    prior: float
    sizes: np.ndarray
    grid: np.ndarray  # log depths of the zero terms' spline (zero_grid)


def _likeliest_rows(a, totals: np.ndarray, model: LikelihoodModel, closed: np.ndarray,
                    fallback: int, labels: np.ndarray, own_scale: np.ndarray) -> np.ndarray:
    from .._count_kernels import likeliest_labels  # numba: when used

    m = model
    zero_terms = zero_likelihoods(m.rates, m.sizes, totals, labels, own_scale, m.grid)
    return likeliest_labels(a.data, a.indices, a.indptr,
                            labels, m.rates, m.sums, m.prior_counts, totals, m.cluster_totals,
                            m.prior, m.sizes, zero_terms, closed, fallback)


# Depths at which each cluster's all-zero likelihood is computed exactly; a cubic spline in
# log depth gives it at every cell's depth. On CellBench (the lines' rates, sizes 0.3-50) its
# error was at most 0.003 nats (1e-7 of the term) with 64 points, 0.0002 with 128 at twice
# the cost, 0.03 with 32; a cell's choice turns on differences of nats. The error grows with
# the fourth power of the spacing times the depth, so a wider range of depths gets more
# points: at most ZERO_GRID_SPACING apart in log depth (a review measured 2.6 nats for 64
# points over depths 1 to 100,000).
ZERO_GRID_POINTS = 64
ZERO_GRID_SPACING = 0.05


def zero_grid(totals: np.ndarray, own_scale: np.ndarray) -> np.ndarray:
    """The log depths at which :func:`zero_likelihoods` computes its terms exactly.

    From every cell's depth (and its leave-one-out depth in its own cluster), so that cells
    scored in blocks share one spline.
    """
    depths = np.maximum(totals, 1.0)
    low = np.log(depths.min())
    high = np.log(max(float((depths * own_scale).max()), depths.max() * 1.0001))
    points = max(ZERO_GRID_POINTS, int(np.ceil((high - low) / ZERO_GRID_SPACING)) + 1)
    return np.linspace(low, high, points)


def zero_likelihoods(rates: np.ndarray, sizes: np.ndarray, totals: np.ndarray,
                     labels: np.ndarray, own_scale: np.ndarray,
                     grid: np.ndarray | None = None) -> np.ndarray:
    """Cells x clusters: the NB log-likelihood of all zeros at each cluster's rates.

    ``sum_g log NB(0; r_kg n, s_g) = -sum_g s_g log(1 + r_kg n / s_g)`` is a smooth
    function of the depth ``n`` alone, so it is computed on a ``grid`` of log depths
    (:func:`zero_grid` of these cells by default) and interpolated, instead of over every
    gene for every cell and cluster.
    """
    if grid is None:
        grid = zero_grid(totals, own_scale)
    depths = np.maximum(totals, 1.0)
    finite = np.isfinite(sizes)
    out = np.empty((totals.size, rates.shape[0]))
    for k, rate in enumerate(rates):
        means = rate[:, None] * np.exp(grid)[None, :]  # genes x grid
        bursty = sizes[finite, None] * np.log1p(means[finite] / sizes[finite, None])
        spline = CubicSpline(grid, -(bursty.sum(axis=0) + means[~finite].sum(axis=0)))
        scale = np.where(labels == k, own_scale, 1.0)
        out[:, k] = spline(np.log(depths * scale))
    return out
