"""The Leiden family: the clustering resolution chosen by the self-supervised loss.

A clustering is a denoiser: it replaces each cell by its cluster's mean profile. The PCA,
the neighbour graph and the Leiden clusters at every resolution are computed from half A
alone; each cell's prediction is its A-cluster's mean of half A (normalised, transformed,
moved to half B's depth by the engine's loss), scored against half B. The resolution whose
cluster means best predict fresh molecules wins. Too few clusters average distinct cell
states together; too many average too few cells, and their means keep half A's noise.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._anndata import write_dense_layer
from .._dask import checked_library_sizes, rows_chunked, tree_reduce
from .._rng import spawn_seeds
from .._validation import check_choice, check_real, check_whole, is_dask_array
from ..calibration import DaskCounts, Family, Knob, SplitSettings, WarmStart, counts_calibrator
from ..embedding import max_rank
from ..losses import Halves, prepare_halves
from ..results import BaselineWarning
from ..runs import prepare_dask
from ..splitting import gene_sizes, split_counts
from ..transforms import library_sizes, normalised_values
from .cluster_loss import (
    DevianceTargets,
    GeneSubset,
    cluster_sums,
    coarsest_within,
    paired_standard_errors,
    partition_deviances_of,
    top_variable_genes,
)
from .cluster_loss import canonical as _canonical
from .leiden_dask import ChunkedTargets, DaskSplit
from .leiden_graph import (
    DEFAULT_RESOLUTIONS,
    GraphStart,
    leiden_labels,
    leiden_sweep,
    neighbour_graph,
    seed_of,
)
from .leiden_refine import (
    Refinement,
    reassigned_by_likelihood,
    refined_clusters,
)
from .pca import calibrate_pca_counts

RULES = ("1se", "min")
# What the Leiden family splits and scores by default (benchmarks/RESULTS.md, issue 24):
# - the loss is in counts (:func:`cell_deviances`);
# - the NB split at estimated sizes: a binomial split of overdispersed counts leaves each
#   cell's own rate in both halves, so clusters of noise in half A "predict" half B;
# - log1p for half A's graph, on which Leiden separated known groups better than sqrt.
LEIDEN_SPLIT = {"loss": "poisson", "split": "negative_binomial",
                "overdispersion": "estimate", "transform": "log1p"}


def _grid(resolutions, shape: tuple[int, int], options: dict) -> np.ndarray:
    """The resolutions to score, always starting at 0: one cluster, the baseline."""
    if resolutions is None:
        values = list(DEFAULT_RESOLUTIONS)
    else:  # the user's own values in messages, not numpy's repr of them
        values = [resolutions] if np.isscalar(resolutions) else list(resolutions)
    for value in values:
        check_real(value, name="resolutions (each value)", minimum=0.0,
                   hint="Leiden's resolution; 0 is one cluster")
    if not values:
        raise ValueError("resolutions is empty; give at least one Leiden resolution.")
    return np.unique(np.asarray([0.0, *values], dtype=np.float64))


def _baseline_index(grid, options) -> int:
    return 0  # resolution 0, one cluster: the population's rate predicts every cell


def choose_resolution(result) -> float:
    """The resolution ``rule`` picks from a calibration; both choices go to its params.

    ``"min"`` takes the lowest loss. ``"1se"`` takes the smallest resolution whose loss is
    within one paired standard error of the lowest (``params['standard_error']``): a point
    the data cannot tell from the best is not worth its extra clusters, and one cluster
    (resolution 0) is chosen when no clustering beats it by more than its noise.
    """
    grid, losses = np.asarray(result.grid, dtype=np.float64), result.loss
    best = result.best_index
    cell_losses = result.params.pop("cell_losses", None)  # cells x grid: too big for uns
    if cell_losses is not None:
        result.params["standard_error"] = paired_standard_errors(np.asarray(cell_losses))
    errors = np.asarray(result.params.get("standard_error", np.zeros_like(losses)), dtype=float)
    parsimonious = coarsest_within(losses, errors, best)
    rule = result.params.get("rule", "1se")
    chosen = parsimonious if rule == "1se" else best
    result.params.update(best_min=float(grid[best]), best_1se=float(grid[parsimonious]))
    if grid[chosen] == 0 and best != 0:
        warnings.warn(
            f"One cluster: the lowest loss (resolution {grid[best]}) beats the one-cluster "
            f"baseline by {losses[0] - losses[best]:.3g}, less than its standard error "
            f"{errors[0]:.3g}, so rule='1se' keeps one cluster. Pass rule='min' to take the "
            "lowest loss anyway, or use deeper data.",
            BaselineWarning, stacklevel=4)
    return float(grid[chosen])


def _check(options: dict, X) -> None:
    if options["n_comps"] is not None:
        check_whole(options["n_comps"], name="n_comps", minimum=1,
                    hint="PCA components of the graph, or None for the calibrated rank")
    check_whole(options["n_neighbors"], name="n_neighbors", minimum=2, maximum=X.shape[0] - 1,
                hint="neighbours per cell in the graph")
    check_choice(options["rule"], RULES, name="rule")
    if options["n_top_genes"] is not None:
        check_whole(options["n_top_genes"], name="n_top_genes", minimum=2,
                    hint="the most variable genes of half A to cluster on, or None for all")
    if options.get("refine") is not None and not isinstance(options["refine"], bool):
        raise TypeError(f"refine={options['refine']!r} must be True or False (split each "
                        "cluster again where the loss says so, or keep Leiden's labels), "
                        "or None (refine a calibrated resolution, not a given one).")


def _prepare(options: dict, X, settings) -> dict:
    """Refuse folds and overlapping halves, then resolve the rank.

    The labels are made on half A of the first split, and half B must be unseen.
    """
    check_first_split(settings)
    if not isinstance(settings.random_state, int | np.integer):
        raise TypeError(
            f"random_state={settings.random_state!r}: the Leiden family draws its first split "
            "again to label the cells and to test them on half B, so it needs an integer "
            "seed (e.g. random_state=0)."
        )
    if options.get("refine") is None:  # a calibrated resolution is refined by default
        options = {**options, "refine": True}
    return calibrated_rank(options, X, settings)


def calibrated_rank(options: dict, X, settings) -> dict:
    """``n_comps=None`` becomes the PCA rank calibrated once on the counts (at least 2).

    Only that one integer is learnt from every molecule; the graphs and clusters that are
    scored come from half A alone.
    """
    if options["n_comps"] is not None:
        return options
    rank = calibrate_pca_counts(X, max_comps=min(50, max_rank(X.shape)), settings=settings).best
    return {**options, "n_comps": max(2, int(rank))}


# Cells normalised at a time for the cluster means: the normalised counts are never whole in
# memory (1.2 GB at 200,000 cells x 2,000 genes, issue 28).
MEANS_BLOCK_CELLS = 65536


def normalised_cluster_means(counts, labels: np.ndarray, depth: float,
                             transform: str) -> np.ndarray:
    """Each cluster's mean of the normalised, transformed counts (K x genes, float64).

    The cells are normalised a block at a time, so the normalised counts are never whole.
    """
    n_clusters = int(labels.max()) + 1
    if is_dask_array(counts):  # chunk by chunk, each chunk's rows normalised on their own
        import dask

        counts = rows_chunked(counts)
        ends = np.cumsum(counts.chunks[0])
        blocks = counts.to_delayed(optimize_graph=False).ravel()
        sums = tree_reduce([dask.delayed(_normalised_sums)(block, labels[end - rows:end],
                                                           n_clusters, depth, transform)
                            for block, end, rows in zip(blocks, ends, counts.chunks[0],
                                                        strict=True)], sum)
        return dask.compute(sums)[0] / np.bincount(labels, minlength=n_clusters)[:, None]
    sums = np.zeros((n_clusters, counts.shape[1]))
    for start in range(0, counts.shape[0], MEANS_BLOCK_CELLS):
        rows = slice(start, min(start + MEANS_BLOCK_CELLS, counts.shape[0]))
        sums += _normalised_sums(counts[rows], labels[rows], n_clusters, depth, transform)
    return sums / np.bincount(labels, minlength=n_clusters)[:, None]


def _normalised_sums(counts, labels: np.ndarray, n_clusters: int, depth: float,
                     transform: str) -> np.ndarray:
    return cluster_sums(normalised_values(counts, depth, transform), labels, n_clusters)


# Genes scored and clustered, as scanpy's standard pipeline keeps (highly variable in half A).
DEFAULT_TOP_GENES = 2000


def informative_genes(halves: Halves, n_top_genes: int | None) -> GeneSubset:
    """The ``n_top_genes`` most variable genes of half A (scanpy's "seurat" flavour).

    Uninformative genes add estimation noise to every cluster's rates and no signal: on
    CellBench celseq2 at 10% depth, the true cell lines lost to one cluster when scored on
    all 28,142 genes (mean deviance gain -0.9 +- 4.4 per cell) and won clearly on the 2,000
    most variable ones (+20.6 +- 1.7).
    """
    a = _canonical(halves.a_counts)
    b = _canonical(halves.b_counts)
    if n_top_genes is None or n_top_genes >= a.shape[1]:  # every gene: no copies
        totals = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
        return GeneSubset(np.arange(a.shape[1]), halves.a, a, b, totals)
    genes = top_variable_genes(a, n_top_genes)
    a_genes = a[:, genes]
    totals = np.asarray(a_genes.sum(axis=1), dtype=np.float64).ravel()
    return GeneSubset(genes, halves.a[:, genes], a_genes, b[:, genes], totals)


def score_resolutions(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                      progress: bool | None = None):
    """Loss and number of clusters at every resolution, from one graph of half A.

    Resolution 0 is one cluster, the population's rate: the baseline. The extras carry the
    paired standard error of each point against the best (for ``rule="1se"``).
    """
    scored = informative_genes(halves, options["n_top_genes"])
    return _sweep_scores(scored, targets_of(scored, halves.p), grid, seed_of(seed), options,
                         halves)


def score_resolutions_dask(counts: DaskCounts, settings: SplitSettings, grid: np.ndarray,
                           seed, options: dict):
    """:func:`score_resolutions` of one split of a dask array (the family's dask backend).

    The split is kept on the scored genes in its chunks (:class:`~.leiden_dask.DaskSplit`);
    the graph and Leiden run in memory, each loss is a pass over the chunks.
    """
    scored = DaskSplit.of(counts, settings, seed, options["n_top_genes"])
    return _sweep_scores(scored, ChunkedTargets(scored), grid, seed_of(seed), options, scored)


def _sweep_scores(scored, targets, grid: np.ndarray, seed: int, options: dict, halves):
    """Leiden at every resolution of ``grid`` on ``scored``'s graph, each scored by the loss."""
    graph = graph_of(scored, options["n_comps"], options["n_neighbors"], seed)
    sweep = leiden_sweep(graph, grid, seed)
    n_clusters = [int(labels.max()) + 1 for labels in sweep]
    per_cell = np.asarray(partition_deviances_of(sweep, targets)) / scored.genes.size
    # The engine averages extras over splits: the per-cell losses' average is what the
    # standard errors of several splits are computed from (choose_resolution).
    return per_cell.mean(axis=1), {"n_clusters": np.array(n_clusters), "cell_losses": per_cell,
                                   "standard_error": paired_standard_errors(per_cell),
                                   "start": GraphStart.of(graph, scored, options, seed,
                                                          halves)}


def graph_of(scored, n_comps: int, n_neighbors: int, seed: int):
    """Half A's neighbour graph of the scored genes, in memory or from a dask split."""
    if isinstance(scored, DaskSplit):
        return scored.graph(n_comps, n_neighbors, seed)
    return neighbour_graph(scored.values, n_comps, n_neighbors, seed)


def targets_of(scored, p: float):
    """The loss's targets of the scored genes: in memory, or chunk by chunk on dask."""
    if isinstance(scored, DaskSplit):
        return ChunkedTargets(scored)
    return DevianceTargets.of(scored.a, scored.b, scored.totals, p)


@dataclass
class Clustering:
    """Leiden clusters of half A of the calibration's first split, at one resolution."""

    labels: np.ndarray
    counts: object  # the raw counts the labels were made from (for the cluster means)
    transform: str  # how the cluster means are normalised and transformed
    depth: float
    resolution: float
    n_comps: int
    half_a: object = None  # the first split's half-A counts (None for one cluster)
    half_b: object = None  # and its half-B counts
    fingerprint: str = ""  # of the counts the split was drawn from (counts_fingerprint)
    nb_sizes: object = None  # the NB split's per-gene sizes, when they were an array
    refinement: Refinement | None = None  # None: Leiden's labels at the resolution
    scored: Any = None  # on dask, the split's scored genes in chunks (DaskSplit)


# The split options that the final labels share with the calibration (its first split).
SPLIT_FIT_OPTIONS = ("p", "split", "overdispersion", "n_splits", "folds")


def check_first_split(settings: SplitSettings) -> None:
    """Refuse the settings that leave no unseen half B of a first split to draw again."""
    if settings.folds is not None:
        raise ValueError(
            "The Leiden family labels the cells on half A of its first split; folds has no "
            "such half. Use n_splits instead of folds."
        )
    if settings.sample_ratio:
        raise ValueError(
            "sample_ratio makes overlapping halves, so half B would share molecules with the "
            "half A that made the clusters; the Leiden family refuses it."
        )


def first_split(counts, settings: SplitSettings, start: GraphStart | None = None,
                n_top_genes: int | None = DEFAULT_TOP_GENES,
                ) -> tuple[Halves | DaskSplit, np.random.SeedSequence]:
    """The halves of a calibration's first split, drawn again (the draws are seeded).

    Dask counts give a :class:`~.leiden_dask.DaskSplit` on half A's ``n_top_genes`` most
    variable genes, in its chunks.

    The same call as :func:`~sc_noise2self.runs.run_splits` makes for its first split, so
    the labels made here on half A are the ones that were scored, and half B is the half
    they never saw, for marker tests. Within one call the calibration's ``start`` hands the
    very halves on, and they are not drawn again.
    """
    check_first_split(settings)
    settings = settings.validate(counts)
    seed = first_split_seed(settings)
    halves = None if start is None else start.halves_of(seed_of(seed), settings.p)
    if isinstance(halves, DaskSplit) and halves.n_top_genes != n_top_genes:
        halves = None  # kept on other genes: drawn again on these
    if halves is None and is_dask_array(counts):
        halves = DaskSplit.of(prepare_dask(counts), settings, seed, n_top_genes)
    elif halves is None:
        halves = prepare_halves(
            counts, p=settings.p, transform=settings.transform, random_state=seed,
            keep_counts=True, keep_a_counts=True, keep_b_values=False, split=settings.split,
            overdispersion=settings.overdispersion)
    halves.b_sizes = (np.asarray(settings.overdispersion, dtype=np.float64)
                      if isinstance(settings.overdispersion, np.ndarray) else None)
    return halves, seed


def first_split_seed(settings: SplitSettings) -> np.random.SeedSequence:
    """The seed of a calibration's first split, as ``run_splits`` draws it."""
    return spawn_seeds(settings.random_state, settings.n_splits)[0]


def counts_fingerprint(counts) -> str:
    """A digest of the counts a split is drawn from: its shape and every cell's total.

    The draws are keyed by each cell's row and total, so labels made on half A can only be
    tested on the half B of the same rows, genes and totals: a subset or a re-ordering of
    the cells or genes draws another split, whose half B holds molecules that made them.
    """
    totals = np.asarray(cell_totals(counts), dtype=np.float64)
    digest = hashlib.sha1(np.asarray(counts.shape, dtype=np.int64).tobytes())
    digest.update(totals.tobytes())
    digest.update(gene_totals(counts).tobytes())
    return digest.hexdigest()


def cell_totals(counts) -> np.ndarray:
    """Every cell's total count, of counts in memory or on dask (checked chunk by chunk)."""
    if is_dask_array(counts):
        return checked_library_sizes(rows_chunked(counts))
    return library_sizes(counts)


def gene_totals(counts) -> np.ndarray:
    """Every gene's total count (float64), of counts in memory or on dask (exact either way)."""
    if is_dask_array(counts):
        import dask

        blocks = rows_chunked(counts).to_delayed(optimize_graph=False).ravel()
        (total,) = dask.compute(tree_reduce([dask.delayed(_column_totals)(b) for b in blocks],
                                            sum))
        return total
    return _column_totals(counts)


def _column_totals(counts) -> np.ndarray:
    # Summed in float64: float32 sums round past 2^24, and by an order that differs between
    # a whole matrix and its chunks.
    return np.asarray(counts.sum(axis=0, dtype=np.float64)).ravel()


def split_settings(options: dict, transform: str, random_state) -> SplitSettings:
    """The Leiden family's split settings from a fit's options."""
    given = {name: options[name] for name in SPLIT_FIT_OPTIONS if name in options}
    return LEIDEN.default_settings(**given, transform=transform, random_state=random_state)


def fit_clusters(counts, resolution: float, options: dict, *, transform: str, random_state,
                 max_layer_gb: float, start: GraphStart | None = None) -> Clustering:
    """Leiden at ``resolution`` (0: one cluster) on half A of the calibration's first split.

    ``start``, the calibration's :class:`GraphStart`, spares building the same graph again.
    """
    check_real(resolution, name="resolution", minimum=0.0,
               hint="Leiden's resolution; 0 is one cluster")
    settings = split_settings(options, transform, random_state)
    # A given resolution skips the calibration, but n_comps=None still means the PCA rank
    # calibrated on these counts, as documented.
    n_comps = calibrated_rank(options, counts, settings)["n_comps"]
    depth = float(np.median(cell_totals(counts)))
    if resolution == 0:
        return Clustering(np.zeros(counts.shape[0], dtype=np.int64), counts, transform, depth,
                          0.0, int(n_comps), fingerprint=counts_fingerprint(counts))
    n_top_genes = options.get("n_top_genes", DEFAULT_TOP_GENES)
    halves, seed = first_split(counts, settings, start, n_top_genes)
    scored = None if start is None else start.scored_of(halves, n_top_genes)
    if scored is None:
        scored = halves if isinstance(halves, DaskSplit) else informative_genes(halves,
                                                                                n_top_genes)
    if start is not None and start.fits(scored, n_comps, options["n_neighbors"], seed_of(seed)):
        graph = start.graph
    else:
        graph = graph_of(scored, n_comps, options["n_neighbors"], seed_of(seed))
    labels, refinement = leiden_labels(graph, resolution, seed_of(seed)), None
    if options.get("refine"):
        targets = targets_of(scored, halves.p)
        refinement = refined_clusters(labels, scored, targets,
                                      {**options, "n_comps": n_comps}, seed_of(seed))
        if refinement.labels.max() > 0:
            sizes = half_a_sizes(halves, settings.validate(counts), counts)
            moved = reassigned_by_likelihood(refinement.labels, targets,
                                             None if sizes is None else sizes[scored.genes])
            refinement.labels, refinement.reassignment = moved.labels, moved.verdict
        labels = refinement.labels
    half_a, half_b = ((halves.a_counts, halves.b_counts) if not isinstance(halves, DaskSplit)
                      else lazy_halves(counts, halves.settings, seed))
    return Clustering(labels, counts, transform, depth, float(resolution), int(n_comps),
                      half_a=half_a, half_b=half_b, fingerprint=counts_fingerprint(counts),
                      nb_sizes=halves.b_sizes, refinement=refinement,
                      scored=halves if isinstance(halves, DaskSplit) else None)


def lazy_halves(counts, settings: SplitSettings, seed) -> tuple:
    """Both halves of dask ``counts``' split of ``seed``, every gene, lazy (for markers).

    ``settings`` validated: NB sizes resolved.
    """
    return split_counts(counts, settings.p, random_state=seed, split=settings.split,
                        overdispersion=gene_sizes(counts, settings.split,
                                                  settings.overdispersion))


def half_a_sizes(halves: Halves, settings: SplitSettings, counts) -> np.ndarray | None:
    """Half A's per-gene NB sizes: ``p`` times the split's (a gamma rate splits so).

    None (Poisson) for a binomial split. The split's sizes are the calibration's estimate,
    the user's number or array, or, with ``"estimate"`` and a given resolution, estimated
    here as the split estimated them.
    """
    if halves.b_sizes is not None:
        return halves.p * halves.b_sizes
    if settings.split != "negative_binomial":
        return None
    if settings.estimates_sizes:
        settings = settings.with_estimated_sizes(counts)
    return halves.p * gene_sizes(counts, settings.split, settings.overdispersion)


def store_clusters(adata, fitted: Clustering, key: str, max_layer_gb: float) -> dict:
    """Labels to ``obs[key]`` (categorical, as ``sc.tl.leiden``); cluster means to the layer."""
    adata.obs[key] = pd.Categorical(fitted.labels.astype(str),
                                    categories=[str(k) for k in range(fitted.labels.max() + 1)])
    # Kept (genes x clusters), so that the values of any subset of the cells or genes are
    # its rows of the full data's cluster means, never means of the subset's own cells.
    adata.varm[f"{key}_cluster_means"] = normalised_cluster_means(
        fitted.counts, fitted.labels, fitted.depth, fitted.transform).T.astype(np.float32)
    if max_layer_gb is not None:  # None: calibrate_leiden writes the labels only
        write_dense_layer(adata, key, max_layer_gb, values=lambda: cluster_values(
            adata, key, np.arange(adata.n_vars)))
    adata.uns[key]["params"].update(
        n_comps=fitted.n_comps, labels_from=LABELS_FROM_HALF_A, counts=fitted.fingerprint)
    if fitted.refinement is not None:
        adata.uns[key]["params"].update(
            n_clusters_before_refinement=fitted.refinement.n_before,
            refinement="; ".join(fitted.refinement.splits) or "no cluster split further",
            reassignment=fitted.refinement.reassignment or "one cluster: nothing to move")
    if fitted.nb_sizes is not None:  # the split's sizes, so that it can be drawn again
        adata.var[f"{key}_overdispersion"] = fitted.nb_sizes
        adata.uns[key]["params"]["overdispersion"] = (
            f"per gene, in var['{key}_overdispersion']")
    return {"n_clusters": int(fitted.labels.max()) + 1, "resolution": fitted.resolution}


# What a Leiden record's labels were made from (records made before issue 24 lack it: their
# labels came from all the counts, and no half of theirs is unseen).
LABELS_FROM_HALF_A = "half A of the first split"


def cluster_values(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """Each cell's cluster mean of the normalised values, for the chosen genes (float32).

    The means are the full data's (``varm[key + '_cluster_means']``), so a subset of the
    cells or genes gets exactly its part of the stored layer.
    """
    labels = adata.obs[key].cat.codes.to_numpy().astype(np.int64)
    name = f"{key}_cluster_means"
    if name not in adata.varm:
        raise KeyError(
            f"varm[{name!r}] is missing: this Leiden record predates stored cluster means "
            "(or the varm entry was removed). Rerun calibrate_leiden or denoise_leiden."
        )
    means = np.asarray(adata.varm[name], dtype=np.float32)[columns]  # genes x clusters
    return np.ascontiguousarray(means.T[labels])


LEIDEN = Family(
    name="leiden",
    grid=Knob("resolution", grid_arg="resolutions", default=None, make_grid=_grid),
    score=score_resolutions, score_dask=score_resolutions_dask, check_options=_check,
    prepare_options=_prepare,
    fit=fit_clusters, store=store_clusters, values=cluster_values, fit_after_calibrate=True,
    baseline_index=_baseline_index, choose=choose_resolution, needs_counts=True,
    scores_b_values=False,  # the loss reads half B's counts; its values would be 1/3 more
    losses=("poisson",), denoise_losses=("poisson",), split_defaults=LEIDEN_SPLIT,
    # The graph is handed on within a call only: nothing is written, nothing read back.
    warm_start=WarmStart(save=lambda adata, start, key: None, load=lambda adata, key: None),
    options={"n_comps": 30, "n_neighbors": 15, "n_top_genes": DEFAULT_TOP_GENES,
             "rule": "1se", "refine": None},
    fit_options=("n_comps", "n_neighbors", "n_top_genes", "rule", "refine",
                 *SPLIT_FIT_OPTIONS),
    option_docs={
        "resolutions": "Leiden resolutions to score; None uses 0.05, 0.1, 0.2, 0.3, 0.5, "
                       "0.7, 1, 1.5, 2, 3, 5 and 8. Resolution 0, one cluster (the "
                       "baseline), is always scored first.",
        "rule": "``\"1se\"`` (default): the smallest resolution whose loss is within one "
                "paired standard error of the lowest, so one cluster when no clustering "
                "beats it by more than its noise; ``\"min\"``: the lowest loss. Both are "
                "kept in ``uns[key_added]['params']`` (``best_1se``, ``best_min``).",
        "resolution": "Leiden's resolution. None calibrates it first (or reuses a matching "
                      "calibration stored under ``key_added``).",
        "n_comps": "PCA components of half A's neighbour graph (30, near scanpy's 50; the "
                   "clusters are graded by the loss whatever the graph); None uses the PCA "
                   "rank calibrated on the counts.",
        "n_neighbors": "Neighbours per cell in the graph (``sc.pp.neighbors``).",
        "refine": "Cluster each cluster of at least 30 cells again on its own half-A "
                  "graph and keep the split that ``rule`` picks by the same loss (two "
                  "passes; sub-clusters of at least 10 cells); one cluster is never "
                  "refined. Then each cell moves to the cluster where its half-A counts "
                  "are likeliest (NB, leave-one-out), kept when the loss on half B is "
                  "lower. The splits kept are listed in "
                  "``uns[key_added]['params']['refinement']``, the moves in "
                  "``['reassignment']``. None (default) refines a "
                  "calibrated resolution and keeps Leiden's labels at a given one; True or "
                  "False decide either way.",
        "n_top_genes": "Genes the graph is built and the loss scored on: the most variable "
                       "of half A (scanpy's ``\"seurat\"`` flavour, 2,000 as in scanpy's "
                       "standard pipeline); None uses every gene. Chosen on half A alone, "
                       "so half B stays unseen.",
    },
    summary="Choose the Leiden clustering resolution by molecular cross-validation.\n\n"
            "A clustering predicts each cell's counts by its cluster's rate. PCA, neighbours "
            "and Leiden at every resolution come from half A alone; each cell's half-B counts "
            "are predicted by its half-A cluster's rate without the cell itself, at the "
            "cell's own depth, and scored by Poisson deviance. Resolution 0 (one cluster) is "
            "the baseline. The labels at the chosen resolution are written to "
            "``obs[key_added]``, and the number of clusters at every resolution to "
            "``uns[key_added]['params']['n_clusters']``.",
    denoise_summary="Cluster by Leiden at a calibrated (or given) resolution and denoise each "
                    "cell by its cluster's mean.",
    writes="the labels to ``obs[key_added]`` (categorical, like ``sc.tl.leiden``), "
           "``uns[key_added]`` and, when it fits ``max_layer_gb``, the cluster means on the "
           "transformed scale to ``layers[key_added]``.",
)

calibrate_leiden_counts = counts_calibrator(LEIDEN)
