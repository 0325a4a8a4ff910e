"""Inference without double dipping: groups or covariates from half A, tests on half B.

``sc.tl.leiden`` followed by ``sc.tl.rank_genes_groups`` on the same counts tests the genes
that made the clusters: even one homogeneous population gives hundreds of "markers". Count
splitting (Neufeld et al., Biostatistics 2024; negative-binomial splitting, arXiv:2307.12985)
clusters on half A and tests on half B. For Poisson counts (binomial split), or negative
binomial counts with the right overdispersion (beta-binomial split), the halves are
independent, so the p-values of half B are valid whatever half A's clusters are.
"""

from __future__ import annotations

import inspect
import time
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse as sp
from scipy import stats

from . import markers
from ._anndata import counts_name, get_counts, logger, target
from ._dask import check_dask_counts, persisted_on_cluster, rows_chunked
from ._rng import RandomState
from ._validation import (
    check_choice,
    check_counts,
    check_fraction,
    check_real,
    check_whole,
    is_dask_array,
)
from .calibration import DEFAULT_P, calibrate_counts
from .denoisers.leiden import (
    DEFAULT_TOP_GENES,
    LEIDEN,
    LEIDEN_SPLIT,
    choose_resolution,
    fit_clusters,
)
from .embedding import scanpy_neighbors
from .pp import split_counts
from .replication import (
    GroupHalves,
    checked_groups,
    checked_labels,
    group_halves,
    replicated_clusters,
)

METHODS = ("wilcoxon", "t-test", "t-test_overestim_var", "logreg")


def rank_genes_groups_split(
    adata: ad.AnnData, *, groupby: str | None = None,
    resolution: float | str | None = "calibrated", method: str = "wilcoxon",
    p: float = DEFAULT_P, split: str = LEIDEN_SPLIT["split"],
    overdispersion=None, n_comps: int | None = 30,
    n_neighbors: int = 15, n_top_genes: int | None = DEFAULT_TOP_GENES, rule: str = "1se",
    refine: bool | None = None, layer: str | None = None,
    random_state: RandomState = 0, key_added: str = "rank_genes_groups_split",
    split_key: str = "noise2self", validate: bool = True, write_layer: bool = True,
    copy: bool = False, **kwargs,
) -> ad.AnnData | None:
    """Marker genes of clusters found on half A, tested on half B (scanpy's format).

    One split serves both: the clusters are made on its half A, exactly as
    :func:`~sc_noise2self.tl.calibrate_leiden` makes and grades them, and the markers are
    tested on its half B, which the clusters never saw.

    Parameters
    ----------
    adata
        The cells, with raw integer counts in ``X`` or ``layers[layer]``.
    groupby
        None: cluster half A here (``resolution``). Or an ``obs`` column made on half A:
        the labels of :func:`~sc_noise2self.tl.calibrate_leiden` (its split is drawn again
        from its record, and the test runs on that split's half B), or YOUR groups computed
        from ``layers[split_key + '_a']`` of :func:`sc_noise2self.pp.split_molecules` (the
        test runs on ``layers[split_key + '_b']``). Groups computed from all the counts
        would bring the double dipping back, and are refused.
    resolution
        When ``groupby`` is None: ``"calibrated"`` (default; chosen by the self-supervised
        loss as :func:`~sc_noise2self.tl.calibrate_leiden` chooses it, with ``rule``), or a
        Leiden resolution.
    method
        Test of ``sc.tl.rank_genes_groups``: ``"wilcoxon"``, ``"t-test"``,
        ``"t-test_overestim_var"`` or ``"logreg"``. Wilcoxon and the t-tests against the
        rest run on sparse group sums and sparse ranks (:mod:`sc_noise2self.markers`):
        scanpy's statistics, with a cost that grows with the non-zeros and no dense copy.
    p
        Share of molecules in half A (the clustering half); 0.7 as in every calibration.
    split, overdispersion
        ``"negative_binomial"`` by default, at the NB sizes per gene given in
        ``overdispersion`` (None: estimated): binomial splitting of overdispersed counts
        leaves the halves correlated, clusters of noise in half A and p-values too small.
        ``"binomial"`` for Poisson counts.
    n_comps, n_neighbors, n_top_genes
        PCA components (None: the calibrated rank) and neighbours of half A's graph, and the
        most variable genes of half A it is built and scored on (None: every gene). The
        markers are tested on every gene.
    rule
        ``"1se"`` or ``"min"``: how a calibrated resolution is chosen (see
        :func:`~sc_noise2self.tl.calibrate_leiden`).
    refine
        When ``groupby`` is None: split each cluster again on its own half-A graph where
        the loss says so, as :func:`~sc_noise2self.tl.calibrate_leiden` does. None refines
        a calibrated resolution and not a given one, whose p-values then stay valid whatever
        the clusters (no choice is made on half B).
    split_key
        With YOUR ``groupby``: the ``key_added`` of the
        :func:`~sc_noise2self.pp.split_molecules` run whose half A made the groups.
    layer
        Layer with the raw counts; None means ``X``.
    random_state
        Seed of the split and the clustering; the same seed gives identical results.
    key_added
        The test results go to ``uns[key_added]`` in ``sc.tl.rank_genes_groups``'s format,
        so ``sc.pl.rank_genes_groups``, ``sc.get.rank_genes_groups_df`` and dotplots read
        them; half A's groups go to ``obs[key_added + '_groups']`` (or stay in ``groupby``).
        ``uns[key_added]['params']['seconds']`` says where the time went: the resolution
        (split, rank, graph, sweep; when calibrated), the clusters (Leiden, refinement,
        reassignment; with a given resolution the split and graph too), the validation
        (when it ran) and the markers.
    validate
        When ``groupby`` is None: merge the clusters whose split does not replicate on half
        B (:func:`~sc_noise2self.tl.validate_clusters_split`, family-wise level 0.05) before
        testing their markers.
    write_layer
        Write the values that were tested, half B normalised to 10,000 per cell and
        log1p-transformed (sparse), to ``layers[key_added]``, so that dotplots show them:
        ``sc.pl.rank_genes_groups_dotplot(adata, key=key_added, layer=key_added)``. Raw
        counts would be dominated by a few abundant genes (MALAT1, FTL).
    copy
        Return a new AnnData instead of writing into ``adata``.
    **kwargs
        Passed to ``sc.tl.rank_genes_groups`` (``n_genes``, ``corr_method``,
        ``mask_var="highly_variable"`` to test highly variable genes only, ...); the
        Wilcoxon test gets ``tie_correct=True`` unless told otherwise.

    Returns
    -------
    None, or a new AnnData when ``copy=True``.
    """
    for name, value in (("write_layer", write_layer), ("validate", validate)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be True or False.")

    check_choice(method, METHODS, name="method")
    if method == "wilcoxon":
        # Split counts are small integers with many ties: without the tie correction the
        # rank-sum variance is overestimated and the p-values pile up near 1.
        kwargs.setdefault("tie_correct", True)
    p = check_fraction(p)
    _check_clustering_options(resolution, n_comps, n_neighbors, adata)
    options = {"n_comps": n_comps, "n_neighbors": n_neighbors, "n_top_genes": n_top_genes,
               "rule": rule, "refine": refine}
    LEIDEN.check_options(options, adata)
    settings = LEIDEN.default_settings(
        p=p, split=split, random_state=random_state,
        overdispersion=("estimate" if overdispersion is None and split == "negative_binomial"
                        else overdispersion))
    _check_dask_markers(adata, groupby, layer, split_key, method, kwargs)
    if groupby is None:
        counts = get_counts(adata, layer)
        if is_dask_array(counts):  # the values are checked chunk by chunk, as they are read
            check_dask_counts(counts, name=counts_name(layer))
        else:
            check_counts(counts, name=counts_name(layer))
        labels, half_b, split_record = _clusters_of_first_split(counts, resolution, options,
                                                                settings, validate)
        group_key = f"{key_added}_groups"
    else:
        _refuse_split_options_with_groupby(dict(
            resolution=resolution, p=p, split=split, overdispersion=overdispersion,
            n_comps=n_comps, n_neighbors=n_neighbors, n_top_genes=n_top_genes, rule=rule,
            refine=refine, random_state=random_state, validate=validate))
        halves = group_halves(adata, groupby, split_key, layer)
        half_b, split_record = halves.b, halves.record
        labels = checked_groups(adata, groupby)
        group_key = groupby
    # Stage seconds come with the clusters' record; with groupby the record is the user's.
    seconds = split_record.pop("seconds") if groupby is None else {}
    started = time.perf_counter()
    tested = _normalised_half(half_b, adata)
    values = tested.X
    if is_dask_array(values):
        # Each block of genes is a pass over half B: on a cluster, over the workers' copy
        # (without it, each pass split the counts again: 438 of 1,468 s at a million cells).
        tested.X = persisted_on_cluster(values)
    tested.var = adata.var.copy()  # so that mask_var="highly_variable" finds its column
    tested.obs[group_key] = pd.Categorical(labels)
    logger().info(f"testing {tested.obs[group_key].nunique()} groups of half A on half B")
    _test_groups(tested, group_key, method, key_added, kwargs)
    adata = target(adata, copy)
    if groupby is None:
        adata.obs[group_key] = pd.Categorical(labels)
    if write_layer:  # lazy on dask: a persisted copy would live only as long as the cluster
        adata.layers[key_added] = values
    seconds["markers"] = time.perf_counter() - started
    record = dict(tested.uns[key_added])
    record["params"] = {**dict(record["params"]), "count_split": split_record,
                        "values": f"layers[{key_added!r}]" if write_layer else "half B",
                        "seconds": seconds}
    adata.uns[key_added] = record
    return adata if copy else None


def _check_dask_markers(adata: ad.AnnData, groupby, layer, split_key: str, method: str,
                        options: dict) -> None:
    """Refuse, before any work, what the dask path cannot run: scanpy's other tests.

    The test runs on half B: split from the counts here (or again from calibrate_leiden's
    record), or the layer of a pp.split_molecules run when ``groupby`` has one.
    """
    counts = adata.X if layer is None else adata.layers.get(layer)
    half_b = adata.layers.get(f"{split_key}_b") if groupby is not None else None
    tested = half_b if half_b is not None else counts
    if not is_dask_array(tested):
        return
    if not markers.takes(method, options):
        raise ValueError(
            f"method={method!r} with options {sorted(options)} is scanpy's test, which needs "
            "half B in memory; on dask counts use method='wilcoxon', 't-test' or "
            "'t-test_overestim_var' against the rest (options n_genes, corr_method, "
            "mask_var, pts, rankby_abs, tie_correct).")


def _test_groups(tested: ad.AnnData, group_key: str, method: str, key_added: str,
                 options: dict) -> None:
    """``tested.uns[key_added]``: each group against the rest, in scanpy's format.

    Wilcoxon and the t-tests against the rest run on sparse group sums and sparse ranks
    (:mod:`sc_noise2self.markers`, equal to scanpy's statistics without densifying); any
    other test or option is ``sc.tl.rank_genes_groups``'s.
    """
    import scanpy as sc  # slow to import; only testing needs it

    if markers.takes(method, options):
        options = dict(options)
        mask = options.pop("mask_var", None)
        if isinstance(mask, str):
            mask = tested.var[mask].to_numpy(dtype=bool)
        params = {"groupby": group_key, "reference": "rest", "method": method,
                  "use_raw": False, "layer": None,
                  "corr_method": options.get("corr_method", "benjamini-hochberg")}
        tested.uns[key_added] = markers.rank_genes_groups(
            tested.X, tested.obs[group_key].array, tested.var_names, method=method,
            key_params=params, mask_var=mask, **options)
        return
    with warnings.catch_warnings():
        # scanpy's tests divide by zero variances of genes absent from a group and fragment
        # a DataFrame per group; neither changes a result, and a flood hides what matters.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        sc.tl.rank_genes_groups(tested, group_key, method=method, key_added=key_added,
                                **options)


def _clusters_of_first_split(counts, resolution, options: dict, settings, validate: bool):
    """Half A's labels, half B's counts and the record.

    The labels are Leiden's at the calibrated (or given) resolution, with the splits that do
    not replicate on half B merged when ``validate`` is set.
    """
    fit_options = {**options, "p": settings.p, "split": settings.split,
                   "overdispersion": settings.overdispersion, "n_splits": 1}
    start, seconds, started = None, {}, time.perf_counter()
    if resolution in (None, "calibrated"):
        result = calibrate_counts(counts, LEIDEN, settings=settings, **options)
        resolution = choose_resolution(result)
        # The calibration's rank, refinement and NB sizes, not found a second time.
        fit_options["n_comps"] = result.params["n_comps"]
        fit_options["refine"] = result.params["refine"]
        if isinstance(result.params.get("overdispersion"), np.ndarray):
            fit_options["overdispersion"] = result.params["overdispersion"]
        start = result.start  # the scored graph, used again for the labels
        del result
        seconds["resolution"] = time.perf_counter() - started
        started = time.perf_counter()
    clusters = fit_clusters(counts, resolution, fit_options, transform=settings.transform,
                            random_state=settings.random_state, max_layer_gb=0.0, start=start)
    # The calibration's graph, half-A values and targets are done with: held on through the
    # validation and the markers, they were a quarter of the peak at 200,000 cells.
    start = None
    if clusters.half_b is None:
        raise ValueError(
            "No clustering of these counts beats one cluster (resolution 0), so there are no "
            "groups whose markers could be tested. Pass a resolution to test clusters that "
            "the loss does not support, or use deeper data."
        )
    labels = clusters.labels.astype(str)
    seconds["clusters"] = time.perf_counter() - started
    started = time.perf_counter()
    validated_to = None
    if validate and np.unique(labels).size > 1:
        # On dask the split's scored genes, in their chunks, are what the test reads.
        halves = (clusters.scored if clusters.scored is not None
                  else GroupHalves(clusters.half_a, clusters.half_b, settings.p, {}))
        n_comps = 30 if options["n_comps"] is None else options["n_comps"]
        merged, tree = replicated_clusters(labels, halves, 0.05, n_comps,
                                           options["n_top_genes"])
        labels, validated_to = np.asarray(merged).astype(str), tree["n_clusters"]
        seconds["validation"] = time.perf_counter() - started
    what = "validated" if validated_to is not None else "unvalidated"
    checked_labels(labels, f"Half A's {what} clustering at resolution {resolution:g}")
    record = {"p": settings.p, "split": settings.split, "validated": bool(validate),
              **({} if validated_to is None else {"clusters_after_validation": validated_to}),
              "random_state": _seed_record(settings.random_state),
              "resolution": float(resolution),
              "groups_from": "half A of the split (Leiden)", "tested_on": "its half B",
              "seconds": seconds}  # taken out by the caller, into the test's record
    return labels, clusters.half_b, record


def _refuse_split_options_with_groupby(given: dict, function=None,
                                       what: str = "groupby") -> None:
    """Refuse, not ignore, options that make groups or splits when they are already made.

    ``given`` maps option names to this call's values; any that differ from ``function``'s
    defaults (:func:`rank_genes_groups_split`'s by default) is refused.
    """
    defaults = inspect.signature(function or rank_genes_groups_split).parameters
    changed = [name for name, value in given.items()
               if not _same(value, defaults[name].default)]
    if changed:
        raise ValueError(
            f"With {what}, the groups and the split they came from are already made, so "
            f"{changed} cannot be used: pass them to calibrate_leiden, "
            "validate_clusters_split or pp.split_molecules instead."
        )


def _same(value, default) -> bool:
    """``value`` is the default (arrays never are)."""
    if isinstance(value, np.ndarray) or isinstance(default, np.ndarray):
        return False
    return type(value) is type(default) and value == default


def _check_clustering_options(resolution, n_comps, n_neighbors, adata: ad.AnnData) -> None:
    """The clustering options, checked before any split is drawn."""
    if isinstance(resolution, str):
        check_choice(resolution, ("calibrated",), name="resolution")
    elif resolution is not None:
        check_real(resolution, name="resolution", minimum=1e-9, hint="Leiden's resolution")
    if n_comps is not None:
        check_whole(n_comps, name="n_comps", minimum=1, hint="or None for the calibrated rank")
    check_whole(n_neighbors, name="n_neighbors", minimum=2, maximum=max(2, adata.n_obs - 1),
                hint="neighbours per cell in half A's graph")


def _seed_record(random_state) -> int | str:
    return int(random_state) if isinstance(random_state, int | np.integer) else "custom"


def _normalised_half(half_b, adata: ad.AnnData) -> ad.AnnData:
    """Half B as scanpy tests it: normalised to 10,000 per cell and log1p-transformed.

    Each cell is normalised by its own total, so a dask half B is normalised chunk by chunk
    by the same function, to the same bits.
    """
    if is_dask_array(half_b):
        # Whole rows per chunk: a cell is normalised by its total over every gene.
        half_b = rows_chunked(half_b)
        values = half_b.map_blocks(_normalised_rows, dtype=np.float32,
                                   meta=half_b._meta.astype(np.float32))
    else:
        values = _normalised_rows(half_b)
    return ad.AnnData(values, obs=pd.DataFrame(index=adata.obs_names),
                      var=pd.DataFrame(index=adata.var_names))


def _normalised_rows(counts):
    """Rows of counts normalised to 10,000 and log1p-transformed, by scanpy (float32)."""
    import scanpy as sc

    rows = ad.AnnData(counts.astype(np.float32))
    sc.pp.normalize_total(rows, target_sum=1e4)
    sc.pp.log1p(rows)
    return rows.X


def association_split(
    adata: ad.AnnData, covariate: str, *, root: int | None = None, p: float = DEFAULT_P,
    split: str = LEIDEN_SPLIT["split"], overdispersion=None, n_comps: int = 30,
    n_neighbors: int = 15,
    layer: str | None = None, random_state: RandomState = 0,
    key_added: str = "association_split", split_key: str = "noise2self", copy: bool = False,
) -> ad.AnnData | None:
    """Genes associated with a covariate of half A, tested on half B (Spearman, BH).

    Parameters
    ----------
    adata
        The cells and their raw integer counts (``X`` or ``layers[layer]``).
    covariate
        ``"dpt"``: diffusion pseudotime computed here from half A alone (``sc.tl.dpt`` from
        the cell ``root``); or an ``obs`` column that YOU computed from half A of
        :func:`sc_noise2self.pp.split_molecules` (``layers[split_key + '_a']``), tested on
        that split's half B. A covariate known without the counts (age, time of sampling)
        may be tested the same way.
    root
        Index of the root cell, for ``covariate="dpt"``.
    p, split, overdispersion
        The count split for ``covariate="dpt"``, as in :func:`rank_genes_groups_split`
        (the NB split at estimated sizes, ``p=0.7``). With an ``obs`` covariate the split is
        the one that made it, and these (with ``root``, ``n_comps``, ``n_neighbors`` and
        ``random_state``) are refused rather than ignored.
    n_comps, n_neighbors
        Half A's PCA and neighbours for the pseudotime.
    split_key
        For an ``obs`` covariate: the ``key_added`` of the split that made it.
    layer
        Layer with the raw counts; None means ``X``.
    random_state
        Seed of the split; the same seed gives identical results.
    key_added
        Per gene, ``var[key_added + '_rho']`` (Spearman's correlation on half B),
        ``_pval`` and ``_pval_adj`` (Benjamini-Hochberg); the covariate to
        ``obs[key_added + '_covariate']`` and the settings to ``uns[key_added]``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``.
    """
    p = check_fraction(p)
    if not isinstance(covariate, str):
        raise TypeError(f"covariate={covariate!r} must be 'dpt' or the name of an obs column.")
    if covariate == "dpt":
        _check_clustering_options(None, n_comps, n_neighbors, adata)
        if root is None:
            raise ValueError(
                f"covariate='dpt' needs root, the index of a cell (0..{adata.n_obs - 1})."
            )
        check_whole(root, name="root", minimum=0, maximum=adata.n_obs - 1,
                    hint="the index of the cell where the pseudotime starts")
        counts = get_counts(adata, layer)
        check_counts(counts, name=counts_name(layer))
        if overdispersion is None and split == "negative_binomial":
            overdispersion = "estimate"
        half_a, half_b = split_counts(counts, p, random_state=random_state, split=split,
                                      overdispersion=overdispersion)
        values = _pseudotime_of_half(half_a, adata, int(root), n_comps, n_neighbors)
        record = {"p": p, "split": split, "random_state": _seed_record(random_state),
                  "groups_from": "half A of the split (diffusion pseudotime)",
                  "tested_on": "its half B"}
    else:
        # A covariate of the user's: tested on the half its split kept from it.
        if covariate not in adata.obs:
            raise KeyError(f"covariate={covariate!r} is not a column of adata.obs.")
        if adata.obs[covariate].isna().any():
            raise ValueError(
                f"covariate={covariate!r} is missing for "
                f"{int(adata.obs[covariate].isna().sum())} cell(s); give every cell a value, "
                "or test a subset without them."
            )
        _refuse_split_options_with_groupby(
            dict(root=root, p=p, split=split, overdispersion=overdispersion, n_comps=n_comps,
                 n_neighbors=n_neighbors, random_state=random_state),
            association_split, what="an obs covariate")
        if not pd.api.types.is_numeric_dtype(adata.obs[covariate]) or pd.api.types.is_bool_dtype(
                adata.obs[covariate]):
            raise TypeError(
                f"covariate={covariate!r} has dtype {adata.obs[covariate].dtype}; the test "
                "ranks a numeric covariate (a pseudotime, an age). Compare groups with "
                "tl.rank_genes_groups_split(groupby=...) instead, or convert the column to "
                "numbers."
            )
        halves = group_halves(adata, covariate, split_key, None, what="covariate")
        half_b, record = halves.b, dict(halves.record)
        values = adata.obs[covariate].to_numpy(dtype=np.float64)
    rho, pval = spearman_per_gene(_normalised_half(half_b, adata).X, values)
    adata = target(adata, copy)
    adata.var[f"{key_added}_rho"] = rho
    adata.var[f"{key_added}_pval"] = pval
    tested = np.isfinite(pval)
    adjusted = np.full(pval.shape, np.nan)
    adjusted[tested] = stats.false_discovery_control(pval[tested])
    adata.var[f"{key_added}_pval_adj"] = adjusted
    adata.obs[f"{key_added}_covariate"] = values
    # The provenance of the split actually used, not this call's defaults.
    adata.uns[key_added] = {"params": {"covariate": covariate, "test": "spearman",
                                       "count_split": record}}
    return adata if copy else None


def _pseudotime_of_half(half_a, adata: ad.AnnData, root: int, n_comps: int,
                        n_neighbors: int) -> np.ndarray:
    import scanpy as sc

    graph = _normalised_half(half_a, adata)
    sc.pp.pca(graph, n_comps=min(n_comps, min(graph.shape) - 1))
    scanpy_neighbors(graph, n_neighbors=n_neighbors, use_rep="X_pca", random_state=0)
    sc.tl.diffmap(graph)
    graph.uns["iroot"] = root
    sc.tl.dpt(graph)
    pseudotime = graph.obs["dpt_pseudotime"].to_numpy(dtype=np.float64)
    unreached = int(np.sum(~np.isfinite(pseudotime)))
    if unreached:  # scanpy gives inf to cells that no path joins to the root
        raise ValueError(
            f"covariate='dpt': {unreached} of {pseudotime.size} cells are not connected to "
            f"the root cell {root} in half A's neighbour graph, so they have no pseudotime. "
            "Test each connected part on its own (a subset of the cells), or raise "
            "n_neighbors to join them."
        )
    return pseudotime


def spearman_per_gene(values, covariate: np.ndarray, block: int = 512):
    """Spearman's correlation of every gene with ``covariate``, and its two-sided p-value.

    Parameters
    ----------
    values
        Cells x genes (numpy or scipy.sparse), densified a block of genes at a time.
    covariate
        One finite value per cell.
    block
        Genes per dense block.

    Returns
    -------
    ``(rho, pval)`` per gene; NaN for a gene that is constant over the cells.
    """
    covariate = np.asarray(covariate, dtype=np.float64)
    if covariate.shape != (values.shape[0],) or not np.all(np.isfinite(covariate)):
        raise ValueError("The covariate must hold one finite value per cell.")
    ranked = stats.rankdata(covariate)
    ranked = (ranked - ranked.mean()) / np.linalg.norm(ranked - ranked.mean())
    n = values.shape[0]
    rho = np.full(values.shape[1], np.nan)
    for start in range(0, values.shape[1], block):
        genes = slice(start, start + block)
        dense = values[:, genes]
        dense = dense.toarray() if sp.issparse(dense) else np.asarray(dense, dtype=np.float64)
        gene_ranks = stats.rankdata(dense, axis=0)
        centred = gene_ranks - gene_ranks.mean(axis=0)
        norms = np.linalg.norm(centred, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho[genes] = np.where(norms > 0, ranked @ centred / norms, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = rho * np.sqrt((n - 2) / np.clip(1.0 - rho**2, 1e-300, None))
    pval = 2.0 * stats.t.sf(np.abs(t), df=n - 2)
    return rho, np.where(np.isfinite(rho), pval, np.nan)
