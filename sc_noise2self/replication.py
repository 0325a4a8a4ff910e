"""Clusters that replicate: splits of half A's clusters tested on half B's molecules.

The loss chooses a resolution; it does not say that each split between two clusters is
real. :func:`validate_clusters_split` asks that of every split, on the molecules the
clusters never saw, in the spirit of sc-SHC (Grabski, Street and Irizarry, Nature Methods
2023), with count splitting instead of a parametric bootstrap:

1. the clusters of half A are joined into a tree by the distances between their centroids
   in half A's principal components (Ward's linkage, weighted by cluster size);
2. at each node, the cells of its two branches are predicted in counts as
   :func:`~sc_noise2self.denoisers.cluster_loss.count_deviances` predicts them: by the half-A rate
   of their own branch, and by the half-A rate of both branches together. Each cell's
   half-B deviance under the merged rate minus under its branch's rate is a paired
   difference; a one-sided t-test over the node's cells asks whether the split predicts
   fresh molecules better. Half B is independent of half A given the cells' truth (the NB
   split), so with no difference between the branches that mean is at most 0;
3. the tree is tested from the root down at level ``alpha * (n_node - 1) / (n - 1)`` (the
   family-wise error control of sc-SHC, after Meinshausen); a node that fails is merged
   with everything below it, and its children are not tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse, stats

from ._anndata import get_counts, logger, target
from ._dask import check_dask_counts
from ._validation import check_counts, check_fraction, check_whole, is_dask_array
from .denoisers.cluster_loss import (
    DevianceTargets,
    deviances_within,
    partition_deviances_of,
    top_variable_genes,
)
from .denoisers.leiden import (
    DEFAULT_TOP_GENES,
    LABELS_FROM_HALF_A,
    counts_fingerprint,
    first_split,
    first_split_seed,
    lazy_halves,
    split_settings,
)
from .denoisers.leiden_dask import ChunkedTargets, DaskSplit
from .embedding import fit_pca, max_rank
from .transforms import library_sizes, normalised_values

__all__ = ["GroupHalves", "checked_groups", "checked_labels", "group_halves",
           "replicated_clusters",
           "validate_clusters_split"]


@dataclass
class GroupHalves:
    """The two halves of the split whose half A made a column of groups."""

    a: Any  # raw half-A counts, cells x genes
    b: Any  # raw half-B counts
    p: float
    record: dict  # where the groups and the halves came from
    # On dask counts: the split kept on half A's n_top_genes in its chunks (n_top_genes ->
    # DaskSplit), which the validation reads; None in memory.
    chunked: Any = None


def checked_groups(adata: ad.AnnData, column: str, *, what: str = "groupby",
                   min_size: int = 2) -> np.ndarray:
    """The labels of ``obs[column]`` as strings, refused when they cannot be compared.

    ``min_size`` is the fewest cells a group may have (2 for a test of each group).
    """
    if column not in adata.obs:
        raise KeyError(f"{what}={column!r} is not a column of adata.obs.")
    if adata.obs[column].isna().any():
        raise ValueError(
            f"{what}={column!r} is missing for {int(adata.obs[column].isna().sum())} "
            "cell(s); give every cell a value, or test a subset without them."
        )
    values = adata.obs[column]
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise TypeError(
            f"{what}={column!r} holds continuous values ({values.nunique()} distinct), not "
            "groups. Test a continuous covariate of half A with tl.association_split, or "
            f"bin it into categories first (e.g. pd.cut(adata.obs[{column!r}], 4))."
        )
    return checked_labels(values.astype(str).to_numpy(), f"{what}={column!r}", min_size)


def checked_labels(labels: np.ndarray, name: str, min_size: int = 2) -> np.ndarray:
    """``labels`` when they hold two groups or more of ``min_size`` cells; else an error."""
    names, sizes = np.unique(labels, return_counts=True)
    if names.size < 2:
        raise ValueError(
            f"{name} holds one group ({names[0]!r}): at least two groups are needed to "
            "compare. One cluster is what calibrate_leiden returns when no clustering beats "
            "it, and what validation leaves when no split replicates; there is nothing to "
            "test."
        )
    if sizes.min() < min_size:
        raise ValueError(
            f"{name} has group(s) of fewer than {min_size} cells "
            f"{list(names[sizes < min_size])[:5]}: a test needs at least {min_size} cells "
            "per group. Merge or drop them first, or let validation merge them."
        )
    return labels


def group_halves(adata: ad.AnnData, column: str, split_key: str, layer, *,
                 what: str = "groupby") -> GroupHalves:
    """The split whose half A made ``obs[column]``.

    calibrate_leiden's (drawn again from its record), the source's of a
    :func:`validate_clusters_split` column, or a :func:`~sc_noise2self.pp.split_molecules`
    run's layers.
    """
    if column not in adata.obs:
        raise KeyError(f"{what}={column!r} is not a column of adata.obs.")
    record = adata.uns.get(column)
    if isinstance(record, dict) and record.get("method") == "validate_clusters_split":
        return group_halves(adata, str(record["params"]["groupby"]), split_key, layer,
                            what=what)
    if isinstance(record, dict) and record.get("method") == "leiden":
        return _leiden_halves(adata, column, record, layer, what)
    return _layer_halves(adata, column, split_key, what)


def _leiden_halves(adata: ad.AnnData, column: str, record: dict, layer,
                   what: str) -> GroupHalves:
    """calibrate_leiden's first split, drawn again from its record."""
    params = {k: (None if isinstance(v, str) and v == "None" else v)
              for k, v in dict(record["params"]).items()}
    stored_layer = params.get("layer", "X")
    if (layer or "X") != stored_layer:
        raise ValueError(
            f"{what}={column!r} was made from layer {stored_layer!r}; pass "
            f"layer={None if stored_layer == 'X' else stored_layer!r}."
        )
    if not isinstance(params.get("random_state"), int | np.integer):
        raise ValueError(
            f"{what}={column!r} came from a run whose seed was not an integer, so its split "
            "cannot be drawn again; rerun calibrate_leiden with an integer random_state."
        )
    if params.get("labels_from") != LABELS_FROM_HALF_A:
        raise ValueError(
            f"{what}={column!r} has no record of being made on half A (a record written "
            "before sc_noise2self's issue 24 labelled the cells from all the counts). Rerun "
            "calibrate_leiden on this AnnData."
        )
    counts = get_counts(adata, None if stored_layer == "X" else stored_layer)
    if counts_fingerprint(counts) != params.get("counts"):
        raise ValueError(
            f"{what}={column!r} was made on half A of a split of other counts (the cells, "
            "genes or totals changed since calibrate_leiden: a subset, a gene filter or a "
            "normalised X). Its split cannot be drawn again here, and another split's half B "
            "would hold the molecules that made the clusters. Test on the AnnData "
            "calibrate_leiden ran on, or rerun it on this one."
        )
    if isinstance(params.get("overdispersion"), str) and params["overdispersion"].startswith(
            "per gene"):
        sizes = f"{column}_overdispersion"
        if sizes not in adata.var:
            raise KeyError(
                f"{what}={column!r} was split at per-gene NB sizes kept in var[{sizes!r}], "
                "which is gone; rerun calibrate_leiden."
            )
        params["overdispersion"] = adata.var[sizes].to_numpy()
    settings = split_settings(params, params["transform"], int(params["random_state"]))
    provenance = {"p": settings.p, "split": settings.split,
                  "random_state": int(params["random_state"]),
                  "groups_from": f"obs[{column!r}] (half A of calibrate_leiden's split)",
                  "tested_on": "half B of that split"}
    if is_dask_array(counts):  # both halves lazy; the validation's split in chunks
        settings = settings.validate(counts)
        a, b = lazy_halves(counts, settings, first_split_seed(settings))
        return GroupHalves(a, b, settings.p, provenance, chunked=lambda n_top_genes: (
            first_split(counts, settings, n_top_genes=n_top_genes)[0]))
    halves, _ = first_split(counts, settings)
    return GroupHalves(halves.a_counts, halves.b_counts, settings.p, provenance)


def _layer_halves(adata: ad.AnnData, column: str, split_key: str, what: str) -> GroupHalves:
    """The halves of a pp.split_molecules run, checked."""
    names = (f"{split_key}_a", f"{split_key}_b")
    if any(name not in adata.layers for name in names):
        raise ValueError(
            f"{what}={column!r} needs the half it never saw: run "
            f"sc_noise2self.pp.split_molecules(adata, key_added={split_key!r}) first, compute "
            f"it from layers['{split_key}_a'], then pass it here (split_key names that "
            "split), or make it with sc_noise2self.tl.calibrate_leiden. A column computed "
            "from all the counts would be double dipping."
        )
    a, b = (adata.layers[name] for name in names)
    (check_dask_counts if is_dask_array(b) else check_counts)(b, name=f"layers[{names[1]!r}]")
    split = dict(adata.uns.get(f"{split_key}_split", {}))
    provenance = {**split, "groups_from": f"obs[{column!r}]",
                  "tested_on": f"layers['{split_key}_b']"}
    return GroupHalves(a, b, float(split.get("p", 0.5)), provenance)


def validate_clusters_split(
    adata: ad.AnnData, groupby: str = "noise2self_leiden", *, alpha: float = 0.05,
    n_comps: int = 30, n_top_genes: int | None = DEFAULT_TOP_GENES,
    split_key: str = "noise2self", layer: str | None = None, key_added: str | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Merge the clusters of half A whose split does not replicate on half B.

    Parameters
    ----------
    adata
        The cells, with raw counts in ``X`` (or ``layers[layer]``) and clusters made on half
        A in ``obs[groupby]``.
    groupby
        The clusters: the labels of :func:`~sc_noise2self.tl.calibrate_leiden` (default), or
        your groups computed from ``layers[split_key + '_a']`` of
        :func:`~sc_noise2self.pp.split_molecules`.
    alpha
        Family-wise error rate of the splits kept, over the whole tree.
    n_comps
        Principal components of half A in which the cluster tree is built.
    n_top_genes
        The most variable genes of half A that the tree is built and the splits tested on
        (None: every gene), as :func:`~sc_noise2self.tl.calibrate_leiden` scores them.
    split_key
        With your own groups: the ``key_added`` of their ``split_molecules`` run.
    layer
        Layer with the raw counts (for calibrate_leiden's labels); None means ``X``.
    key_added
        The merged labels go to ``obs[key_added]`` and the tree, the p-values and the
        levels to ``uns[key_added]``; None means ``groupby + '_validated'``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. ``uns[key_added]`` holds ``linkage`` (scipy's
    format, over ``clusters``), ``pvalues`` and ``levels`` per internal node (NaN where a
    node was not tested because a node above it was merged), and ``merged`` (whether the
    node's clusters became one).
    """
    alpha = check_fraction(alpha, name="alpha")
    check_whole(n_comps, name="n_comps", minimum=1, hint="PCA components of the tree")
    if n_top_genes is not None:
        check_whole(n_top_genes, name="n_top_genes", minimum=2,
                    hint="the most variable genes of half A, or None for all")
    key_added = key_added or f"{groupby}_validated"
    if key_added == groupby:
        raise ValueError(
            f"key_added={key_added!r} is groupby itself: the merged labels would replace the "
            "clusters and the record of the split they came from. Choose another key_added."
        )
    # One-cell clusters (Leiden makes them at high resolution) are tested like any other.
    labels = checked_groups(adata, groupby, min_size=1)
    halves = group_halves(adata, groupby, split_key, layer)
    log = logger()
    start = log.info(f"testing the splits of {np.unique(labels).size} clusters on half B")
    merged, record = replicated_clusters(labels, halves, alpha, n_comps, n_top_genes)
    adata = target(adata, copy)
    adata.obs[key_added] = merged
    adata.uns[key_added] = {
        "method": "validate_clusters_split",
        "params": {"groupby": groupby, "alpha": alpha, "n_comps": n_comps,
                   "n_top_genes": "None" if n_top_genes is None else n_top_genes,
                   "count_split": halves.record},
        **record,
    }
    log.info(f"    became {record['n_clusters']} clusters", time=start,
             deep=f"added obs[{key_added!r}] and uns[{key_added!r}]")
    return adata if copy else None


def replicated_clusters(labels: np.ndarray, halves: GroupHalves, alpha: float, n_comps: int,
                        n_top_genes: int | None) -> tuple[pd.Categorical, dict]:
    """Half A's ``labels`` with the splits that fail on half B merged, and the tree's record.

    The merged clusters are named 0..K-1, largest first; ``members`` maps each new name to
    the old clusters it holds.
    """
    if isinstance(halves, GroupHalves) and halves.chunked is not None:
        halves = halves.chunked(n_top_genes)
    elif isinstance(halves, GroupHalves) and is_dask_array(halves.b):
        raise ValueError(
            "Validating groups on the dask layers of pp.split_molecules is not supported: "
            "the tree and its tests read half A and half B together. Cluster the dask counts "
            "with tl.calibrate_leiden (its record lets validate_clusters_split draw the split "
            "again in chunks), or compute the two layers into memory first.")
    halves = restricted(halves, n_top_genes)
    names, codes = np.unique(labels, return_inverse=True)
    tree = cluster_tree(halves if isinstance(halves, DaskSplit) else halves.a, codes, n_comps)
    tested = test_tree(tree, codes, halves, alpha)
    merged = merged_names(tree, names, tested["merged"])[codes]
    new_names, members = renamed_by_size(merged)
    categorical = pd.Categorical(new_names[np.unique(merged, return_inverse=True)[1]],
                                 categories=[str(k) for k in range(len(members))])
    record = {"clusters": names, "linkage": tree, **tested, "members": members,
              "n_clusters": len(members)}
    return categorical, record


def restricted(halves: GroupHalves | DaskSplit, n_top_genes: int | None,
               ) -> GroupHalves | DaskSplit:
    """``halves`` on the most variable genes of half A (all genes for None).

    A dask split is on them already: the clustering chose them from the same half A.
    """
    if isinstance(halves, DaskSplit):
        return halves
    a = sparse.csr_matrix(halves.a)
    if n_top_genes is None or n_top_genes >= a.shape[1]:
        return halves
    genes = top_variable_genes(a, n_top_genes)
    return GroupHalves(a[:, genes], sparse.csr_matrix(halves.b)[:, genes], halves.p,
                       halves.record)


def cluster_tree(half_a, codes: np.ndarray, n_comps: int) -> np.ndarray:
    """scipy linkage of the clusters' centroids in half A's log1p principal components.

    ``half_a``: counts in memory, or a dask split (an exact PCA summed over its chunks).
    """
    if isinstance(half_a, DaskSplit):
        return weighted_ward(half_a.centroids(codes, n_comps), np.bincount(codes))
    depth = float(np.median(library_sizes(half_a)))
    values = normalised_values(half_a, depth, "log1p")
    n_comps = max(1, min(n_comps, max_rank(values.shape)))
    scores = fit_pca(values, n_comps, random_state=0).scores
    centroids = np.vstack([scores[codes == k].mean(axis=0) for k in range(codes.max() + 1)])
    return weighted_ward(centroids, np.bincount(codes))


def weighted_ward(centroids: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Ward's linkage of clusters of ``sizes`` cells, in scipy's linkage format.

    Joining clusters ``a`` and ``b`` costs ``n_a n_b / (n_a + n_b) |c_a - c_b|^2``, the rise
    in within-cluster sum of squares, so a cluster of two cells joins its nearest neighbour
    early instead of sitting alone at the root. With average linkage of centroids (unweighted,
    scipy's only option for centroids) one two-cell cluster between two groups became the
    root's split; its test failed and merged all three true groups into one. Heights are
    ``sqrt(2 cost)``, scipy's Ward heights for single cells; the fourth column counts leaves.
    """
    centroids = np.array(centroids, dtype=np.float64)  # a copy: merged rows are written
    weights = np.array(sizes, dtype=np.float64)
    n_leaves = centroids.shape[0]
    active = list(range(n_leaves))
    ids, leaves = list(range(n_leaves)), [1] * n_leaves
    tree = np.zeros((n_leaves - 1, 4))
    for step in range(n_leaves - 1):
        first, second, cost = _cheapest_pair(centroids[active], weights[active])
        a, b = active[first], active[second]
        merged = (weights[a] * centroids[a] + weights[b] * centroids[b]) / (weights[a] + weights[b])
        tree[step] = (min(ids[a], ids[b]), max(ids[a], ids[b]), np.sqrt(2.0 * cost),
                      leaves[a] + leaves[b])
        centroids[a], weights[a] = merged, weights[a] + weights[b]
        ids[a], leaves[a] = n_leaves + step, leaves[a] + leaves[b]
        active.remove(b)
    return tree


def _cheapest_pair(centroids: np.ndarray, weights: np.ndarray) -> tuple[int, int, float]:
    """Positions of the two clusters whose join costs least under Ward's criterion."""
    squared = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    cost = np.outer(weights, weights) / np.add.outer(weights, weights) * squared
    cost[np.tril_indices(len(weights))] = np.inf
    first, second = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return int(first), int(second), float(cost[first, second])


def test_tree(tree: np.ndarray, codes: np.ndarray, halves: GroupHalves, alpha: float) -> dict:
    """Test each node from the root down; a node that fails is merged with all below it."""
    n_leaves = tree.shape[0] + 1
    pvalues = np.full(tree.shape[0], np.nan)
    levels = np.full(tree.shape[0], np.nan)
    merged = np.zeros(tree.shape[0], dtype=bool)
    # In memory, the targets of every cell, made once; each node's cells are a population
    # of them (deviances_within), with no copy of their counts.
    every = (halves if isinstance(halves, DaskSplit)
             else DevianceTargets.of(halves.a, halves.b, library_sizes(halves.a), halves.p))
    stack = [tree.shape[0] - 1]  # the root
    while stack:
        node = stack.pop()
        left, right = (_leaves(tree, int(child)) for child in tree[node, :2])
        rows = np.flatnonzero(np.isin(codes, left + right))
        levels[node] = alpha * (rows.size - 1) / (codes.size - 1)
        pvalues[node] = split_pvalue(rows, np.isin(codes[rows], right), every)
        if not pvalues[node] <= levels[node]:  # a NaN p-value merges too
            merged[node] = True
            continue
        stack.extend(int(child) - n_leaves for child in tree[node, :2] if child >= n_leaves)
    return {"pvalues": pvalues, "levels": levels, "merged": _below_merged(tree, merged)}


def split_pvalue(rows: np.ndarray, right: np.ndarray,
                 every: DevianceTargets | DaskSplit) -> float:
    """One-sided p-value that two branches' half-A rates predict half B better than one.

    ``rows`` (sorted) are the node's cells, the population whose rates are compared, and
    ``right`` marks the right branch's; ``every`` holds the targets of all cells.
    """
    labelings = [np.zeros(rows.size, dtype=np.int64), right.astype(np.int64)]
    if isinstance(every, DaskSplit):  # the node's cells are the population, in chunks
        together, apart = partition_deviances_of(labelings, ChunkedTargets(every, rows))
    else:
        mask = np.zeros(every.totals.size, dtype=bool)
        mask[rows] = True
        together, apart = (deviances_within(every, mask, labels) for labels in labelings)
    gain = together - apart
    if gain.std() == 0:
        return 1.0
    return float(stats.ttest_1samp(gain, 0.0, alternative="greater").pvalue)


def _leaves(tree: np.ndarray, node: int) -> list[int]:
    """The clusters under ``node`` (scipy's numbering: leaves first, then merges)."""
    n_leaves = tree.shape[0] + 1
    if node < n_leaves:
        return [node]
    left, right = (int(child) for child in tree[node - n_leaves, :2])
    return _leaves(tree, left) + _leaves(tree, right)


def _below_merged(tree: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """Every node under a merged node is merged too."""
    n_leaves = tree.shape[0] + 1
    merged = merged.copy()
    for node in range(tree.shape[0] - 1, -1, -1):  # parents come after their children
        if merged[node]:
            for child in tree[node, :2]:
                if child >= n_leaves:
                    merged[int(child) - n_leaves] = True
    return merged


def merged_names(tree: np.ndarray, names: np.ndarray, merged: np.ndarray) -> np.ndarray:
    """Each cluster's new name: its merged group's names joined by '+', or its own."""
    n_leaves = tree.shape[0] + 1
    new = names.astype(object).copy()
    for node in np.flatnonzero(merged):
        if node + n_leaves in tree[merged, :2]:
            continue  # a merged node inside a merged node: the top one names them
        members = _leaves(tree, int(node) + n_leaves)
        joined = "+".join(sorted((str(names[k]) for k in members), key=_natural))
        new[members] = joined
    return new.astype(str)


def renamed_by_size(merged: np.ndarray) -> tuple[np.ndarray, dict]:
    """New names 0..K-1 of the merged groups, largest first, and each one's old clusters."""
    groups, sizes = np.unique(merged, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    new = np.empty(groups.size, dtype=object)
    new[order] = [str(k) for k in range(groups.size)]
    return new.astype(str), {str(new[i]): str(groups[i]) for i in order}


def _natural(name: str):
    return (0, int(name), "") if name.isdigit() else (1, 0, name)
