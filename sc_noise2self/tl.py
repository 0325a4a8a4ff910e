"""Tools: calibrate a denoiser by the self-supervised loss, then denoise, writing into AnnData."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd

from ._anndata import get_counts, target
from .calibration import DEFAULT_P, CalibrationResult
from .denoisers.pca import Solver, calibrate_pca_counts, clip_n_comps, fit_pca
from .splitting import RandomState
from .transforms import apply_transform, library_sizes, normalize_to_depth


def _logger():
    from scanpy import logging

    return logging


def calibrate_pca(
    adata: ad.AnnData,
    *,
    max_comps: int = 100,
    layer: str | None = None,
    transform: str = "sqrt",
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    solver: Solver = "auto",
    max_score_cells: int | None = 20_000,
    copy: bool = False,
) -> ad.AnnData | None:
    """Choose the number of principal components by molecular cross-validation.

    Splits each cell's counts into halves A (share ``p``) and B, fits one truncated SVD to
    half A, and scores the rank-k denoising of A against B for every k in ``0..max_comps``.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    max_comps
        Largest rank scored; clipped, with a warning, to what the data allow.
    layer
        Layer with the raw counts; None means ``X``.
    transform
        ``"sqrt"`` (the paper) or ``"log1p"`` (scanpy) after normalising each half to its
        share of the median library size; ``"none"`` keeps normalised counts.
    loss
        ``"mse"`` on the transformed scale, or ``"poisson"`` deviance on half B's counts.
    p
        Share of molecules in half A, the half that is fitted. The default 0.9 (MCV's) picks
        ranks that suit the full depth; the paper's 0.5 picks ranks that suit half the depth,
        which run low on shallow data (see ``benchmarks/RESULTS.md``). With ``p != 0.5``
        predictions are moved to half B's depth before scoring.
    n_splits
        Independent splits to average; ``loss_std`` keeps their spread.
    random_state
        Seed; the same seed gives identical curves.
    key_added
        Results go to ``adata.uns[key_added]``.
    solver
        SVD solver: ``"auto"``, ``"arpack"``, ``"covariance_eigh"`` or ``"randomized"``.
    max_score_cells
        Cap on the cells scored when the loss is non-linear (``p != 0.5`` under ``sqrt`` or
        ``log1p``, or ``loss="poisson"``); see
        :func:`~sc_noise2self.denoisers.pca.calibrate_pca_counts`. None scores every cell.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``uns[key_added]`` with ``params``,
    ``grid`` (ranks 0..max_comps), ``loss``, ``loss_std``, ``loss_per_split`` and ``best``.
    """
    log = _logger()
    start = log.info(f"calibrating PCA rank up to {max_comps} by molecular cross-validation")
    result = calibrate_pca_counts(
        get_counts(adata, layer), max_comps=max_comps, transform=transform, loss=loss, p=p,
        n_splits=n_splits, random_state=random_state, solver=solver,
        max_score_cells=max_score_cells,
    )
    result.params["layer"] = layer
    adata = target(adata, copy)
    adata.uns[key_added] = result.to_dict()
    log.info(f"    best rank {result.best}", time=start, deep=f"added 'uns[{key_added!r}]'")
    return adata if copy else None


def denoise_pca(
    adata: ad.AnnData,
    *,
    n_comps: int | None = None,
    layer: str | None = None,
    transform: str = "sqrt",
    max_comps: int = 100,
    loss: str = "mse",
    p: float = DEFAULT_P,
    n_splits: int = 1,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    solver: Solver = "auto",
    max_layer_gb: float = 1.0,
    max_score_cells: int | None = 20_000,
    copy: bool = False,
) -> ad.AnnData | None:
    """Denoise by PCA at a calibrated (or given) rank, writing scores, loadings and values.

    The full counts are normalised to the median library size and transformed, then
    projected on ``n_comps`` principal components.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    n_comps
        Rank of the denoiser. None calibrates it first with :func:`calibrate_pca`, using
        ``max_comps``, ``loss``, ``p``, ``n_splits`` and ``random_state``.
    layer
        Layer with the raw counts; None means ``X``.
    transform
        ``"sqrt"``, ``"log1p"`` or ``"none"``.
    max_comps, loss, p, n_splits, max_score_cells
        Passed to the calibration when ``n_comps`` is None.
    random_state
        Seed of the calibration and of the SVD solver.
    key_added
        Prefix of every key written.
    solver
        SVD solver, as in :func:`calibrate_pca`.
    max_layer_gb
        A dense denoised matrix goes to ``layers[key_added]`` only when it takes at most this
        many gigabytes (float32); otherwise use :func:`denoised_values` for chosen genes.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or a new AnnData when ``copy=True``. Writes ``obsm['X_' + key_added]`` (cell scores,
    for ``sc.pp.neighbors(use_rep=...)``), ``varm[key_added + '_loadings']``,
    ``var[key_added + '_mean']``, ``uns[key_added]`` (calibration record, ``n_comps`` and the
    normalisation depth) and, when it fits, the dense ``layers[key_added]`` on the transformed
    scale.
    """
    log = _logger()
    counts = get_counts(adata, layer)
    calibration = None
    if n_comps is None:
        calibration = calibrate_pca_counts(
            counts, max_comps=max_comps, transform=transform, loss=loss, p=p,
            n_splits=n_splits, random_state=random_state, solver=solver,
            max_score_cells=max_score_cells,
        )
        n_comps = _usable_rank(calibration)
    n_comps = clip_n_comps(n_comps, counts.shape, name="n_comps")
    start = log.info(f"denoising by PCA with {n_comps} components")
    depth = float(np.median(library_sizes(counts)))
    values = apply_transform(normalize_to_depth(counts, depth), transform, inplace=True)
    fit = fit_pca(values, n_comps, solver=solver, random_state=random_state)
    adata = target(adata, copy)
    _write_pca(adata, fit, key_added, calibration, n_comps, depth, transform, layer)
    _write_dense_layer(adata, key_added, max_layer_gb)
    log.info("    finished", time=start, deep=f"added 'obsm[X_{key_added}]', 'varm', 'uns'")
    return adata if copy else None


def _usable_rank(calibration: CalibrationResult) -> int:
    if calibration.best == 0:
        warnings.warn(
            "The self-supervised loss is lowest at rank 0 (gene means only): the counts show no "
            "structure above noise at this depth. Using 1 component.",
            UserWarning,
            stacklevel=3,
        )
        return 1
    return int(calibration.best)


def _write_pca(adata, fit, key, calibration, n_comps, depth, transform, layer) -> None:
    record = calibration.to_dict() if calibration is not None else {"params": {}}
    record["params"].update(
        n_comps=int(n_comps), depth=depth, transform=transform,
        layer="X" if layer is None else layer,
    )
    record["n_comps"] = int(n_comps)
    adata.obsm[f"X_{key}"] = fit.scores.astype(np.float32)
    adata.varm[f"{key}_loadings"] = fit.components.T.astype(np.float32)
    adata.var[f"{key}_mean"] = fit.mean.astype(np.float32)
    adata.uns[key] = record


def _write_dense_layer(adata: ad.AnnData, key: str, max_layer_gb: float) -> None:
    size_gb = adata.n_obs * adata.n_vars * 4 / 1e9
    if size_gb <= max_layer_gb:
        adata.layers[key] = denoised_values(adata, key=key)
        return
    warnings.warn(
        f"The dense denoised matrix would take {size_gb:.2f} GB (> max_layer_gb={max_layer_gb}); "
        f"not writing layers[{key!r}]. Get chosen genes with "
        f"`sc_noise2self.tl.denoised_values(adata, genes, key={key!r})`.",
        UserWarning,
        stacklevel=3,
    )


def denoised_values(
    adata: ad.AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    key: str = "noise2self",
) -> np.ndarray:
    """Denoised values for chosen genes, from what :func:`denoise_pca` stored.

    Parameters
    ----------
    adata
        AnnData on which :func:`denoise_pca` ran.
    genes
        One gene name, a list of names, or None for all genes.
    key
        The ``key_added`` of that run.

    Returns
    -------
    Dense float32 array, cells x genes, on the transformed scale of the run.
    """
    for needed in (f"X_{key}", f"{key}_loadings"):
        if needed not in adata.obsm and needed not in adata.varm:
            raise KeyError(f"No PCA denoising under key {key!r}; run `tl.denoise_pca` first.")
    columns = _gene_positions(adata, genes)
    loadings = adata.varm[f"{key}_loadings"][columns]
    mean = adata.var[f"{key}_mean"].to_numpy()[columns]
    return (adata.obsm[f"X_{key}"] @ loadings.T + mean).astype(np.float32)


def _gene_positions(adata: ad.AnnData, genes) -> np.ndarray:
    if genes is None:
        return np.arange(adata.n_vars)
    names = [genes] if isinstance(genes, str) else list(genes)
    positions = pd.Index(adata.var_names).get_indexer(names)
    missing = [g for g, i in zip(names, positions, strict=True) if i < 0]
    if missing:
        raise KeyError(f"Genes not in adata.var_names: {missing[:5]}.")
    return positions
