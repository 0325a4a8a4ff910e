"""Tools for graph smoothing: calibrate and denoise by kNN averaging or lazy diffusion."""

from __future__ import annotations

import anndata as ad
import numpy as np

from .._anndata import get_counts, target
from ..calibration import DEFAULT_P, CalibrationResult, SplitSettings
from ..denoisers.graph import (
    build_graph,
    calibrate_diffusion_counts,
    calibrate_knn_counts,
    diffusion_operator,
    knn_operator,
)
from ..splitting import RandomState
from ..transforms import library_sizes
from .common import logger, normalised_values, store_calibration, write_dense_layer


def calibrate_knn(
    adata: ad.AnnData,
    *,
    ks=None,
    n_pcs: int = 30,
    layer: str | None = None,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    folds: int | None = None,
    key_added: str = "noise2self_knn",
    copy: bool = False,
) -> ad.AnnData | None:
    """Choose the number of neighbours to average over by molecular cross-validation.

    The kNN graph is built from half A alone; each cell's prediction is the mean of half A
    over its k nearest cells (itself first), scored against half B.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    ks
        Neighbour counts to score; 1 means no smoothing. None uses 1, 2, 3, 5, 8, 10, 15, 20,
        30, 50 below the number of cells.
    n_pcs
        Principal components of half A used for the neighbour search.
    layer
        Layer with the raw counts; None means ``X``.
    transform, loss, p, n_splits, random_state, split, overdispersion, sample_ratio, folds
        As in :func:`~sc_noise2self.tl.calibrate_pca`.
    key_added
        Results go to ``adata.uns[key_added]``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``uns[key_added]`` with ``params``,
    ``grid`` (the ks), ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    settings = SplitSettings(
        p, transform, loss, n_splits, random_state, split, overdispersion, sample_ratio, folds
    )
    result = calibrate_knn_counts(get_counts(adata, layer), ks=ks, n_pcs=n_pcs, settings=settings)
    adata = target(adata, copy)
    store_calibration(adata, result, key_added, layer)
    return adata if copy else None


def calibrate_diffusion(
    adata: ad.AnnData,
    *,
    t_max: int = 12,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    layer: str | None = None,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    split: str = "binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    folds: int | None = None,
    key_added: str = "noise2self_diffusion",
    copy: bool = False,
) -> ad.AnnData | None:
    """Choose the number of diffusion steps (MAGIC-style smoothing) by molecular cross-validation.

    The lazy random walk ``(P + I) / 2`` on an adaptive Gaussian kNN graph of half A is
    applied ``t`` times to half A and scored against half B, for every t in ``0..t_max``.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    t_max
        Largest number of steps scored.
    n_neighbors
        Neighbours per cell in the graph, the cell itself included.
    n_pcs
        Principal components of half A used for the neighbour search.
    layer
        Layer with the raw counts; None means ``X``.
    transform, loss, p, n_splits, random_state, split, overdispersion, sample_ratio, folds
        As in :func:`~sc_noise2self.tl.calibrate_pca`.
    key_added
        Results go to ``adata.uns[key_added]``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``uns[key_added]`` with ``params``,
    ``grid`` (0..t_max), ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    settings = SplitSettings(
        p, transform, loss, n_splits, random_state, split, overdispersion, sample_ratio, folds
    )
    result = calibrate_diffusion_counts(
        get_counts(adata, layer), t_max=t_max, n_neighbors=n_neighbors, n_pcs=n_pcs,
        settings=settings,
    )
    adata = target(adata, copy)
    store_calibration(adata, result, key_added, layer)
    return adata if copy else None


def denoise_knn(
    adata: ad.AnnData,
    *,
    n_neighbors: int | None = None,
    n_pcs: int = 30,
    layer: str | None = None,
    transform: str = "sqrt",
    random_state: RandomState = 0,
    key_added: str = "noise2self_knn",
    max_layer_gb: float = 1.0,
    copy: bool = False,
    **calibrate_kwargs,
) -> ad.AnnData | None:
    """Denoise by averaging each cell over its nearest cells, at a calibrated (or given) k.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    n_neighbors
        Neighbours to average over, the cell itself included. None calibrates it first with
        :func:`calibrate_knn` (``calibrate_kwargs`` are passed on).
    n_pcs, layer, transform, random_state
        As in :func:`calibrate_knn`.
    key_added
        Prefix of every key written.
    max_layer_gb
        Write the dense ``layers[key_added]`` only when it takes at most this many gigabytes.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **calibrate_kwargs
        Options of :func:`calibrate_knn` (``ks``, ``p``, ``loss``, ``n_splits``).

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``obsp[key_added + '_operator']`` (the
    averaging matrix), ``uns[key_added]`` and, when it fits, ``layers[key_added]``.
    """
    calibration = None
    if n_neighbors is None:
        calibration = calibrate_knn_counts(
            get_counts(adata, layer), n_pcs=n_pcs,
            settings=_settings(transform, random_state, calibrate_kwargs),
            **_only(calibrate_kwargs, "ks"),
        )
        n_neighbors = int(calibration.best)

    def operator(graph):
        return knn_operator(graph, n_neighbors), 1

    return _denoise_by_graph(
        adata, "knn", n_neighbors, operator, calibration, n_pcs, layer, transform, random_state,
        key_added, max_layer_gb, copy,
    )


def denoise_diffusion(
    adata: ad.AnnData,
    *,
    t: int | None = None,
    n_neighbors: int = 15,
    n_pcs: int = 30,
    layer: str | None = None,
    transform: str = "sqrt",
    random_state: RandomState = 0,
    key_added: str = "noise2self_diffusion",
    max_layer_gb: float = 1.0,
    copy: bool = False,
    **calibrate_kwargs,
) -> ad.AnnData | None:
    """Denoise by ``t`` steps of lazy diffusion on the kNN graph, ``t`` calibrated or given.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    t
        Number of diffusion steps. None calibrates it first with :func:`calibrate_diffusion`
        (``calibrate_kwargs`` are passed on).
    n_neighbors, n_pcs, layer, transform, random_state
        As in :func:`calibrate_diffusion`.
    key_added
        Prefix of every key written.
    max_layer_gb
        Write the dense ``layers[key_added]`` only when it takes at most this many gigabytes.
    copy
        Return a new AnnData instead of writing into ``adata``.
    **calibrate_kwargs
        Options of :func:`calibrate_diffusion` (``t_max``, ``p``, ``loss``, ``n_splits``).

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``obsp[key_added + '_operator']`` (one
    step of the walk), ``uns[key_added]`` (with ``steps``) and, when it fits,
    ``layers[key_added]``.
    """
    calibration = None
    if t is None:
        calibration = calibrate_diffusion_counts(
            get_counts(adata, layer), n_neighbors=n_neighbors, n_pcs=n_pcs,
            settings=_settings(transform, random_state, calibrate_kwargs),
            **_only(calibrate_kwargs, "t_max"),
        )
        t = int(calibration.best)

    def operator(graph):
        return diffusion_operator(graph), t

    return _denoise_by_graph(
        adata, "diffusion", n_neighbors, operator, calibration, n_pcs, layer, transform,
        random_state, key_added, max_layer_gb, copy,
    )


def _settings(transform: str, random_state, options: dict) -> SplitSettings:
    known = {"p", "loss", "n_splits", "split", "overdispersion", "sample_ratio", "folds"}
    return SplitSettings(transform=transform, random_state=random_state,
                         **{k: v for k, v in options.items() if k in known})


def _only(options: dict, *names: str) -> dict:
    split_options = {"p", "loss", "n_splits", "split", "overdispersion", "sample_ratio",
                     "folds"}
    unknown = set(options) - split_options - set(names)
    if unknown:
        raise TypeError(f"Unexpected options {sorted(unknown)}.")
    return {k: v for k, v in options.items() if k in names}


def _denoise_by_graph(adata, method, n_neighbors, make_operator, calibration, n_pcs, layer,
                      transform, random_state, key_added, max_layer_gb, copy):
    log = logger()
    start = log.info(f"denoising by {method} smoothing")
    counts = get_counts(adata, layer)
    depth = float(np.median(library_sizes(counts)))
    values = normalised_values(counts, depth, transform)
    graph = build_graph(values, n_neighbors, n_pcs=n_pcs, random_state=random_state)
    operator, steps = make_operator(graph)
    adata = target(adata, copy)
    record = calibration.to_dict() if isinstance(calibration, CalibrationResult) else {"params": {}}
    record["params"].update(depth=depth, transform=transform, n_neighbors=n_neighbors,
                            layer="X" if layer is None else layer)
    record.update(method=method, steps=int(steps))
    adata.obsp[f"{key_added}_operator"] = operator
    adata.uns[key_added] = record
    write_dense_layer(adata, key_added, max_layer_gb)
    log.info("    finished", time=start, deep=f"added 'obsp[{key_added}_operator]', 'uns'")
    return adata if copy else None
