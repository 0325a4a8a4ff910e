"""The PCA family: denoise by a truncated PCA, its rank chosen by the self-supervised loss.

The record :data:`PCA` declares the rank as the knob and scores every rank ``0..max_comps``
from one SVD of half A (:mod:`sc_noise2self.denoisers.rank_loss`); on a dask array it scores
from chunk statistics instead (:mod:`sc_noise2self.denoisers.pca_dask`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from .._anndata import write_dense_layer
from .._device import free_device_bytes, resolve_device
from .._validation import check_choice, check_whole, is_dask_array
from ..calibration import (
    CalibrationResult,
    Family,
    Knob,
    WarmStart,
    counts_calibrator,
    largest,
)
from ..embedding import SOLVERS, PCAFit, clip_n_comps, fit_pca, solver_seed
from ..losses import DEVICE_BYTES_PER_COUNT, Halves
from ..transforms import library_sizes, normalised_values
from .pca_dask import DASK_SOLVERS, fit_pca_dask, score_pca_dask
from .rank_loss import pick_score_cells, rank_loss_curve


def _grid(max_comps: int, shape: tuple[int, int], options: dict) -> np.ndarray:
    check_whole(max_comps, name="max_comps", minimum=1, hint="the largest rank scored")
    return np.arange(clip_n_comps(max_comps, shape) + 1)


def _check(options: dict, X) -> None:
    solvers = DASK_SOLVERS if is_dask_array(X) else SOLVERS
    name = "solver (on a dask array)" if is_dask_array(X) else "solver"
    check_choice(options["solver"], solvers, name=name)
    if options["max_score_cells"] is not None:
        check_whole(options["max_score_cells"], name="max_score_cells", minimum=1,
                    hint="or None to score every cell")
    if not isinstance(options["center"], bool):
        raise TypeError(f"center={options['center']!r} must be True or False.")
    if options["device"] is not None and not is_dask_array(X):
        in_memory_device(options["device"])  # a missing accelerator fails before any work


def in_memory_device(device):
    """The torch device on which in-memory counts are split, factorised and scored, or None.

    None keeps numpy; ``"auto"`` is CUDA when present, else None (numpy is the faster CPU
    path); ``"cpu"`` runs the torch code on the CPU (how the GPU path is tested).
    """
    if device is None:
        return None
    if isinstance(device, str) and device == "auto":
        resolved = resolve_device("auto")
        return resolved if resolved.type == "cuda" else None
    resolved = resolve_device(device)
    if resolved.type not in ("cuda", "cpu"):
        raise ValueError(f"device={device!r}: PCA runs on 'cuda' or 'cpu' (torch), or None.")
    return resolved


def halves_device(options: dict, X, settings):
    """Where each split is made and scored (the family's ``halves_device``)."""
    device = in_memory_device(options["device"])
    if device is None:
        return None
    unsupported = {"loss": settings.loss != "mse", "split": settings.split != "binomial",
                   "sample_ratio": bool(settings.sample_ratio),
                   "folds": settings.folds is not None, "center": not options["center"]}
    named = [name for name, bad in unsupported.items() if bad]
    if named:
        raise ValueError(
            f"device={options['device']!r} calibrates with loss='mse', binomial splitting, "
            f"one split per seed and centring; {', '.join(named)} asked for more. Pass "
            "device=None for the numpy path, which has every option."
        )
    return device


def score_ranks(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                progress: bool | None = None) -> np.ndarray:
    """Loss of every rank in ``grid`` from one PCA of half A (the family's ``score``)."""
    n_cells = halves.b.shape[0]
    if halves.device is not None:
        return _score_ranks_on_device(halves, grid, seed, options)
    fit = fit_pca(halves.a, int(grid[-1]), center=options["center"], solver=options["solver"],
                  random_state=seed)
    halves.a = None  # summarised by the fit; free it before scoring
    cells = pick_score_cells(n_cells, options["max_score_cells"], seed)
    # Half A's components are where the final fit's randomized solver starts.
    return rank_loss_curve(fit, halves, loss, score_cells=cells), {"start": fit.components}


def _score_ranks_on_device(halves: Halves, grid: np.ndarray, seed, options: dict):
    from .pca_torch import as_operator, randomized_pca_torch, rank_loss_curve_torch

    fit, scores = randomized_pca_torch(as_operator(halves.a, halves.device), int(grid[-1]),
                                       solver_seed(seed))
    halves.a = None
    cells = pick_score_cells(halves.b.shape[0], options["max_score_cells"], seed)
    return rank_loss_curve_torch(fit, scores, halves, cells), {"start": fit.components}


@dataclass
class FittedPCA:
    """A PCA of the full counts: the fit, the depth it was normalised to, a lazy layer."""

    fit: PCAFit
    depth: float
    lazy_layer: Any = None  # dask array of denoised values, for dask counts


def choose_rank(result: CalibrationResult) -> int:
    """The calibrated rank, or 1 with a warning when rank 0 (gene means alone) won."""
    if result.best == 0:
        warnings.warn(
            "The self-supervised loss is lowest at rank 0 (gene means only): the counts show no "
            "structure above noise at this depth. Using 1 component.",
            UserWarning,
            stacklevel=4,
        )
        return 1
    return int(result.best)


def fit_ranks(counts, n_comps: int, options: dict, *, transform: str, random_state,
              max_layer_gb: float, start: np.ndarray | None = None) -> FittedPCA:
    """PCA of the full normalised, transformed counts at ``n_comps`` components.

    ``start`` (the calibration's components of half A) starts the randomized solver, which
    then needs only :data:`~sc_noise2self.embedding.WARM_ITERATIONS` power iterations.
    """
    check_whole(n_comps, name="n_comps", minimum=1, hint="the rank of the denoiser")
    n_comps = clip_n_comps(n_comps, counts.shape, name="n_comps")
    if is_dask_array(counts):
        # Out of core: scores computed when they fit max_layer_gb; the dense layer stays lazy.
        fit, depth, layer = fit_pca_dask(counts, n_comps, transform=transform,
                                         max_scores_gb=max_layer_gb)
        return FittedPCA(fit, depth, layer)
    depth = float(np.median(library_sizes(counts)))
    device = in_memory_device(options.get("device"))
    if device is not None:
        return FittedPCA(_fit_on_device(counts, n_comps, depth, transform, random_state,
                                        start, device), depth)
    values = normalised_values(counts, depth, transform)
    fit = fit_pca(values, n_comps, solver=options["solver"], random_state=random_state,
                  start=start)
    return FittedPCA(fit, depth)


def _fit_on_device(counts, n_comps: int, depth: float, transform: str, random_state, start,
                   device) -> PCAFit:
    """The full counts normalised and factorised on ``device``; scores back as float32.

    Counts too large for the device's free memory are normalised on the host and read by
    the device in row blocks.
    """
    from .._count_kernels_torch import csr_to_device, normalised_matrix
    from .pca_torch import as_operator, randomized_pca_torch

    counts = sparse.csr_matrix(counts)
    if counts.nnz * DEVICE_BYTES_PER_COUNT > free_device_bytes(device):
        values = normalised_values(counts, depth, transform)
    else:
        values = normalised_matrix(*csr_to_device(counts, device), depth, transform,
                                   counts.shape)
    fit, scores = randomized_pca_torch(as_operator(values, device), n_comps,
                                       solver_seed(random_state), start=start)
    fit.scores = scores.cpu().numpy()
    return fit


# Where a calibration keeps half A's components for ``denoise_pca`` to start from: keys of
# their own, so that ``pp.split_molecules``'s record (``uns[key + '_split']``) and this one
# never replace each other under the default key (issue 25).
WARM_START_KEY = "{key}_warm_start"


def save_start(adata, components: np.ndarray | None, key: str) -> None:
    """Keep half A's components (genes x K, float32) for ``denoise_pca`` to start from.

    The shape of the data they came from is kept beside them (``uns[key +
    '_warm_start']``), so that a subset of the cells or genes does not start from its
    parent's; None removes an older calibration's components.
    """
    name = WARM_START_KEY.format(key=key)
    if components is None:
        adata.varm.pop(f"{name}_loadings", None)
        adata.uns.pop(name, None)
        return
    adata.varm[f"{name}_loadings"] = np.asarray(components, dtype=np.float32).T
    adata.uns[name] = {"n_obs": int(adata.n_obs), "n_vars": int(adata.n_vars)}


def load_start(adata, key: str) -> np.ndarray | None:
    """The components :func:`save_start` kept (K x genes) if they are of this data, or None."""
    name = WARM_START_KEY.format(key=key)
    loadings = adata.varm.get(f"{name}_loadings")
    shape = adata.uns.get(name, {})
    if loadings is None or (shape.get("n_obs"), shape.get("n_vars")) != adata.shape:
        return None
    return np.asarray(loadings, dtype=np.float64).T


def store_pca(adata, fitted: FittedPCA, key: str, max_layer_gb: float) -> dict:
    """Write scores, loadings, means and the denoised layer (when it fits) into ``adata``."""
    fit = fitted.fit
    adata.obsm[f"X_{key}"] = (fit.scores.astype(np.float32) if isinstance(fit.scores, np.ndarray)
                              else fit.scores)
    adata.varm[f"{key}_loadings"] = fit.components.T.astype(np.float32)
    adata.var[f"{key}_mean"] = fit.mean.astype(np.float32)
    if fitted.lazy_layer is not None:
        adata.layers[key] = fitted.lazy_layer
    else:
        write_dense_layer(adata, key, max_layer_gb,
                          values=lambda: reconstruct(adata, key, np.arange(adata.n_vars)))
    return {"n_comps": int(fit.n_comps)}


def reconstruct(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """Denoised values of the chosen genes from the stored scores and loadings (float32)."""
    loadings = adata.varm[f"{key}_loadings"][columns]
    mean = adata.var[f"{key}_mean"].to_numpy()[columns]
    return (np.asarray(adata.obsm[f"X_{key}"]) @ loadings.T + mean).astype(np.float32)


PCA = Family(
    name="pca",
    grid=Knob("n_comps", grid_arg="max_comps", default=100, make_grid=_grid, from_values=largest),
    score=score_ranks, score_dask=score_pca_dask, check_options=_check,
    fit=fit_ranks, choose=choose_rank, store=store_pca, values=reconstruct,
    baseline_index=lambda grid, options: 0 if options["center"] else None,
    options={"solver": "auto", "max_score_cells": 20_000, "center": True, "device": None},
    fit_options=("solver", "device"),
    warm_start=WarmStart(save=save_start, load=load_start),
    halves_device=halves_device,
    option_docs={
        "max_comps": "Largest rank scored; clipped, with a warning, to what the data allow.",
        "n_comps": "Rank of the denoiser. None calibrates it first (or reuses a matching "
                   "calibration stored under ``key_added``).",
        "solver": "SVD solver: ``\"auto\"`` (randomized on sparse data of at least four "
                  "times ``max_comps + 10`` cells and genes, whose chosen ranks matched "
                  "ARPACK's; else ARPACK), ``\"arpack\"``, ``\"covariance_eigh\"`` or "
                  "``\"randomized\"``; on a dask array ``\"auto\"`` or "
                  "``\"covariance_eigh\"``.",
        "max_score_cells": "Cap on the cells scored when the loss is non-linear (``p != 0.5`` "
                           "under ``sqrt`` or ``log1p``, or ``loss=\"poisson\"``), whose cost "
                           "is cells x genes x ranks; a seeded random subset of this size. "
                           "None scores every cell. The SVD always uses every cell.",
        "center": "Centre genes before the SVD, as ``sc.pp.pca``.",
        "device": "None (numpy, every core) or a torch device. In memory: ``\"cuda\"`` "
                  "splits, normalises, factorises (randomized) and scores on the GPU, "
                  "``\"auto\"`` does so when CUDA is present, ``\"cpu\"`` runs the same "
                  "torch code on the CPU; the curves equal numpy's within float32 rounding "
                  "(loss ``\"mse\"``, binomial splitting). For dask counts: the device of "
                  "each chunk's genes x genes products and the eigendecomposition.",
    },
    summary="Choose the number of principal components by molecular cross-validation.\n\n"
            "Splits each cell's counts into halves A (share ``p``) and B, fits one truncated "
            "SVD to half A, and scores the rank-k denoising of A against B for every k in "
            "``0..max_comps``. Dask counts are calibrated out of core, chunk by chunk. Half "
            "A's components are kept in ``varm[key_added + '_warm_start_loadings']`` "
            "(the data's shape in ``uns[key_added + '_warm_start']``), where "
            "``denoise_pca``'s randomized solver starts.",
    denoise_summary="Denoise by PCA at a calibrated (or given) rank, writing scores, loadings "
                    "and values.\n\nThe full counts are normalised to the median library size "
                    "and transformed, then projected on ``n_comps`` principal components.",
    writes="``obsm['X_' + key_added]`` (cell scores, for ``sc.pp.neighbors(use_rep=...)``), "
           "``varm[key_added + '_loadings']``, ``var[key_added + '_mean']``, ``uns[key_added]`` "
           "and, when it fits ``max_layer_gb``, the dense ``layers[key_added]`` on the "
           "transformed scale (for dask counts a lazy dask array).",
)


calibrate_pca_counts = counts_calibrator(PCA)
