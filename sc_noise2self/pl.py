"""Plots: loss curves of calibrations, resolution curves, and p-values against the uniform."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
from scipy.cluster import hierarchy

from ._anndata import get_counts
from ._validation import check_choice, is_dask_array
from .calibration import CalibrationResult
from .diagnostics import half_correlations, noise_correlations
from .io import write_figure
from .pp import split_counts


def _as_result(adata_or_result, key: str) -> CalibrationResult:
    if isinstance(adata_or_result, CalibrationResult):
        return adata_or_result
    if isinstance(adata_or_result, ad.AnnData):
        if key not in adata_or_result.uns:
            raise KeyError(
                f"No calibration in adata.uns[{key!r}]; run `tl.calibrate_pca` (or another "
                "`tl.calibrate_*` function) first."
            )
        record = adata_or_result.uns[key]
        if isinstance(record, dict) and "loss" not in record:
            knob = record.get("method", "the setting")
            raise KeyError(
                f"uns[{key!r}] holds no loss curve: the {knob} run stored there was given its "
                "setting (e.g. denoise_leiden(resolution=...)), so nothing was calibrated. "
                "Run the matching tl.calibrate_* function first, or pass its key."
            )
        return CalibrationResult.from_dict(record)
    if isinstance(adata_or_result, dict):
        return CalibrationResult.from_dict(adata_or_result)
    raise TypeError(f"Expected AnnData, CalibrationResult or dict, got {type(adata_or_result)}.")


def calibration_curve(
    adata_or_result,
    key: str = "noise2self",
    *,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Plot the self-supervised loss against the calibrated knob, marking its minimum.

    Parameters
    ----------
    adata_or_result
        AnnData with ``uns[key]`` written by a calibrate function, a
        :class:`~sc_noise2self.calibration.CalibrationResult`, or its ``to_dict()``.
    key
        Key in ``adata.uns``; a list of keys overlays several calibrations (e.g. the
        ``key`` column of :func:`~sc_noise2self.tl.compare`), each against its own knob.
    ax
        Matplotlib axes to draw into; a new figure when None.
    show
        Show the figure; None follows ``scanpy.settings.autoshow``.
    save
        As in scanpy: True or a suffix writes ``calibration_curve{suffix}`` into
        ``scanpy.settings.figdir``; a path with a directory writes exactly there. Every
        plot of this module does the same under its own name (``resolution_curve``,
        ``cluster_tree``, ...), so one never replaces another.

    Returns
    -------
    The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    keys = [key] if isinstance(key, str) else list(key)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    for i, name in enumerate(keys):
        label = None if len(keys) == 1 else name
        _draw_curve(ax, _as_result(adata_or_result, name), color=f"C{i}", label=label)
    _save_or_show(ax.figure, save, show, "calibration_curve")
    return ax


def _draw_curve(ax, result: CalibrationResult, color: str = "C0", label: str | None = None):
    grid = np.asarray(result.grid, dtype=float)
    overlay = label is not None
    name = f"{label} ({result.param})" if overlay else "self-supervised loss"
    ax.plot(grid, result.loss, color=color, lw=1.5, label=name)
    if result.loss_per_split.shape[0] > 1:
        low, high = result.loss - result.loss_std, result.loss + result.loss_std
        ax.fill_between(grid, low, high, color=color, alpha=0.25, lw=0,
                        label=None if overlay else "± 1 s.d. over splits")
    best = result.best_index
    marker_color = color if overlay else "C3"
    ax.axvline(grid[best], color=marker_color, ls="--", lw=1)
    ax.plot(grid[best], result.loss[best], "o", color=marker_color,
            label=None if overlay else f"minimum at {result.best}")
    ax.set_xlabel("setting" if overlay else result.param)
    ax.set_ylabel(f"loss ({result.params.get('loss', 'mse')})")
    ax.legend(frameon=False, fontsize="small")


def _save_or_show(fig, save: bool | str | None, show: bool | None, plot: str) -> None:
    """scanpy's ``save=``: True writes ``figdir/<plot>.<format>``, a str is a suffix or path.

    Each plot has its own default name (as ``sc.pl.umap(save=True)`` writes ``umap.pdf``),
    so that saving one figure never replaces another's.
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if save:
        path = Path(save) if isinstance(save, str) and Path(save).parent != Path() else None
        if path is None:
            suffix = save if isinstance(save, str) else ""
            name = f"{plot}{suffix}"
            if not Path(name).suffix:
                name = f"{name}.{sc.settings.file_format_figs}"
            path = Path(sc.settings.figdir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # scanpy's save= replaces the figure it names; the write itself is atomic.
        write_figure(fig, path, overwrite=True)
    if sc.settings.autoshow if show is None else show:
        plt.show()


def split_diagnostics(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    p: float = 0.5,
    split: str = "binomial",
    overdispersion=None,
    random_state=0,
    statistic: str = "noise",
    n_neighbors: int = 15,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Plot, per gene, how much noise the two halves of a split share, against its mean.

    The halves of a split that suits the data are independent given the truth; a binomial
    split of overdispersed (negative-binomial) counts gives them shared noise, which
    rewards overfitting. Both halves also share each cell's biology and depth, so their
    plain correlation across cells is positive on real data whatever the split. The default
    ``statistic="noise"`` (:func:`~sc_noise2self.diagnostics.noise_correlations`) therefore
    correlates each half's residual from its cell's neighbours, found from the other genes:
    about 0 for every gene when the split suits the data; positive, and growing with the
    mean (about ``mean / (mean + 2 b)`` at ``p = 0.5``), when the counts are overdispersed
    and the split was binomial: the cue to use ``split="negative_binomial"``. Below 0 means
    the split assumed more overdispersion than the data have (``b`` too small). Genes whose
    biology dwarfs their noise (the highest means) read a little above 0 even for a
    suitable split, as neighbours never match exactly (on Poisson data with the structure
    of paul15, pbmc3k and CellBench the median was 0.02-0.06). A gene high at a low mean
    is usually one cell with an extreme count of it (e.g. 40 UMIs where no other cell has
    more than 2): both halves keep most of it under either split.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    layer
        Layer with the raw counts; None means ``X``.
    p, split, overdispersion, random_state
        The split to diagnose, as in :func:`~sc_noise2self.split_counts`.
    statistic
        ``"noise"``: correlation of the halves' noise (signal removed, see above).
        ``"raw"``: plain correlation across cells
        (:func:`~sc_noise2self.diagnostics.half_correlations`), which includes the shared
        biology and depth.
    n_neighbors
        Neighbours per cell for ``statistic="noise"``.
    ax
        Matplotlib axes to draw into; a new figure when None.
    show, save
        As in :func:`calibration_curve`.

    Returns
    -------
    The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    check_choice(statistic, ("noise", "raw"), name="statistic")
    counts = get_counts(adata, layer)
    if is_dask_array(counts):
        raise TypeError(
            "split_diagnostics needs counts in memory, and this AnnData holds a dask array. "
            "Plot a subsample: e.g. adata[:20000].to_memory(), or compute() a few chunks."
        )
    half_a, half_b = split_counts(counts, p, random_state=random_state, split=split,
                                  overdispersion=overdispersion)
    if statistic == "noise":
        correlation = noise_correlations(half_a, half_b, n_neighbors=n_neighbors)
    else:
        correlation = half_correlations(half_a, half_b)
    mean = np.asarray(counts.mean(axis=0)).ravel()
    shown = (mean > 0) & np.isfinite(correlation)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.scatter(mean[shown], correlation[shown], s=4, alpha=0.5, color="C0", lw=0)
    ax.axhline(0.0, color="C3", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("mean count per cell")
    ax.set_ylabel("noise correlation between halves" if statistic == "noise"
                  else "correlation between halves")
    ax.set_title(f"{split} split, median {np.median(correlation[shown]):.3f}", fontsize="small")
    _save_or_show(ax.figure, save, show, "split_diagnostics")
    return ax


def resolution_curve(adata_or_result, key: str = "noise2self_leiden", *, ax=None,
                     show: bool | None = None, save: bool | str | None = None):
    """Plot the loss and the number of clusters against the Leiden resolution.

    Parameters
    ----------
    adata_or_result
        AnnData on which :func:`~sc_noise2self.tl.calibrate_leiden` ran, its
        :class:`~sc_noise2self.calibration.CalibrationResult`, or its ``to_dict()``.
    key
        Key in ``adata.uns``.
    ax
        Matplotlib axes for the loss; the cluster counts go on a twin axis. New when None.
    show, save
        As in :func:`calibration_curve`.

    Returns
    -------
    The matplotlib Axes of the loss.
    """
    import matplotlib.pyplot as plt

    result = _as_result(adata_or_result, key)
    if "n_clusters" not in result.params:
        raise KeyError(f"uns[{key!r}] holds no cluster counts; run tl.calibrate_leiden first.")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    _draw_curve(ax, result)
    _draw_standard_errors(ax, result)
    # Resolution 0 (one cluster, the baseline) on a log axis: linear near 0.
    ax.set_xscale("symlog", linthresh=0.05, linscale=0.3)
    top = float(np.max(result.grid))
    ticks = [t for t in (0, 0.1, 1, 10, 100) if t <= max(top, 0.1)]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    counts = ax.twinx()
    counts.plot(np.asarray(result.grid, dtype=float), result.params["n_clusters"], "s:",
                color="C2", ms=3, lw=1)
    counts.set_ylabel("clusters (half A)", color="C2")
    _save_or_show(ax.figure, save, show, "resolution_curve")
    return ax


def _draw_standard_errors(ax, result: CalibrationResult) -> None:
    """The paired standard errors of the 1se rule as a band, and the resolution it chose."""
    errors = result.params.get("standard_error")
    if errors is None:
        return
    grid, loss = np.asarray(result.grid, dtype=float), result.loss
    errors = np.asarray(errors, dtype=float)
    ax.fill_between(grid, loss - errors, loss + errors, color="C0", alpha=0.2, lw=0,
                    label="± 1 paired s.e. to the minimum")
    chosen = result.params.get("best_1se")
    if chosen is not None and result.params.get("rule", "1se") == "1se":
        index = int(np.argmin(np.abs(grid - float(chosen))))
        ax.plot(grid[index], loss[index], "D", color="C1", label=f"chosen (1se) at {chosen:g}")
    ax.legend(frameon=False, fontsize="small")


def cluster_tree(adata, key: str = "noise2self_leiden_validated", *, ax=None,
                 show: bool | None = None, save: bool | str | None = None):
    """Draw the tree of half A's clusters, each split with its half-B p-value.

    The tree is the one :func:`~sc_noise2self.tl.validate_clusters_split` tested; splits it
    merged are grey.

    Parameters
    ----------
    adata
        AnnData on which :func:`~sc_noise2self.tl.validate_clusters_split` ran.
    key
        Its ``key_added``.
    ax
        Matplotlib axes; a new figure when None.
    show, save
        As in :func:`calibration_curve`.

    Returns
    -------
    The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    record = adata.uns.get(key)
    if not isinstance(record, dict) or "linkage" not in record:
        raise KeyError(f"uns[{key!r}] holds no cluster tree; run "
                       "tl.validate_clusters_split first.")
    tree = np.asarray(record["linkage"], dtype=float)
    merged = np.asarray(record["merged"], dtype=bool)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.5, 0.35 * (tree.shape[0] + 1)), 3.2))
    n_leaves = tree.shape[0] + 1

    def colour(node: int) -> str:
        return "0.6" if node >= n_leaves and merged[node - n_leaves] else "C0"

    drawn = hierarchy.dendrogram(tree, labels=[str(c) for c in record["clusters"]], ax=ax,
                                 link_color_func=colour)
    centres = _node_centres(tree, drawn["leaves"])
    for xs, ys in zip(drawn["icoord"], drawn["dcoord"], strict=True):
        # A link's node: the one at its height whose centre is the link's middle (heights
        # alone tie when two merges are equally far apart).
        middle = 0.5 * (xs[1] + xs[2])
        node = int(np.argmin(np.abs(centres - middle) + np.abs(tree[:, 2] - ys[1])))
        height = ys[1]
        pvalue = record["pvalues"][node]
        if np.isfinite(pvalue):
            ax.annotate(f"{pvalue:.2g}", (0.5 * (xs[1] + xs[2]), height), fontsize="x-small",
                        ha="center", va="bottom", color=colour(node + n_leaves))
    ax.set_ylabel("centroid distance (half A)")
    ax.set_title(f"{record['n_clusters']} clusters replicate on half B", fontsize="small")
    _save_or_show(ax.figure, save, show, "cluster_tree")
    return ax


def _node_centres(tree: np.ndarray, leaves: list[int]) -> np.ndarray:
    """The x of each merge in scipy's dendrogram: leaves at 5, 15, ..., merges midway."""
    n_leaves = tree.shape[0] + 1
    x = np.empty(2 * n_leaves - 1)
    x[np.asarray(leaves)] = 5.0 + 10.0 * np.arange(n_leaves)
    for row, (left, right) in enumerate(tree[:, :2].astype(int)):
        x[n_leaves + row] = 0.5 * (x[left] + x[right])
    return x[n_leaves:]


def pvalue_qq(adata, key: str = "rank_genes_groups_split", *, naive_key: str | None = None,
              ax=None, show: bool | None = None, save: bool | str | None = None):
    """Q-Q plot of marker p-values against the uniform, beside double-dipping ones if asked.

    Parameters
    ----------
    adata
        AnnData with ``sc.tl.rank_genes_groups``-format results in ``uns[key]`` (from
        :func:`~sc_noise2self.tl.rank_genes_groups_split`).
    key
        The count-split results.
    naive_key
        Results of the same test on the same counts that made the clusters (e.g.
        ``"rank_genes_groups"``), drawn beside for comparison.
    ax
        Matplotlib axes; a new figure when None.
    show, save
        As in :func:`calibration_curve`.

    Returns
    -------
    The matplotlib Axes. Under no true difference, valid p-values lie on the diagonal.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.4))
    for name, color, label in ((key, "C0", "count split"), (naive_key, "C3", "double dipping")):
        if name is None:
            continue
        if name not in adata.uns or "pvals" not in adata.uns[name]:
            raise KeyError(f"No rank_genes_groups results in adata.uns[{name!r}].")
        record = adata.uns[name]["pvals"]
        p = np.sort(np.concatenate([record[group] for group in record.dtype.names]))
        expected = (np.arange(1, p.size + 1) - 0.5) / p.size
        ax.plot(-np.log10(expected), -np.log10(np.maximum(p, 1e-300)), ".", ms=2,
                color=color, label=label)
    top = ax.get_xlim()[1]
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.set_xlabel("expected -log10 p (uniform)")
    ax.set_ylabel("observed -log10 p")
    ax.legend(frameon=False, fontsize="small")
    _save_or_show(ax.figure, save, show, "pvalue_qq")
    return ax
