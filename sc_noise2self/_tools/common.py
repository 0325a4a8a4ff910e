"""Pieces every tool shares: logging, storing results, reading denoised values back."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import get_counts
from ..transforms import apply_transform, library_sizes, normalize_to_depth


def logger():
    """scanpy's logger (imported late: scanpy is slow to import)."""
    from scanpy import logging

    return logging


def store_calibration(adata: ad.AnnData, result, key_added: str, layer: str | None) -> None:
    """Write a calibration record into ``adata.uns[key_added]``.

    Per-gene NB sizes (estimated or given) go to ``adata.var[key_added + '_overdispersion']``.
    """
    result.params["layer"] = layer
    sizes = result.params.get("overdispersion")
    if isinstance(sizes, np.ndarray):
        adata.var[f"{key_added}_overdispersion"] = sizes
        result.params["overdispersion"] = f"per gene, in var['{key_added}_overdispersion']"
    adata.uns[key_added] = result.to_dict()


def normalised_values(counts, depth: float, transform: str, columns=None):
    """Counts normalised to ``depth`` and transformed, for all genes or ``columns`` only."""
    totals = library_sizes(counts)
    if columns is not None:
        counts = counts[:, columns]
    return apply_transform(normalize_to_depth(counts, depth, totals), transform, inplace=True)


def write_dense_layer(
    adata: ad.AnnData, key: str, max_layer_gb: float, values=None, way_out: str | None = None
) -> None:
    """Write ``layers[key]`` when it fits ``max_layer_gb``; else warn and name the way out.

    ``values()`` computes the dense matrix (default: :func:`denoised_values`); ``way_out``
    says how to get values without the layer.
    """
    size_gb = adata.n_obs * adata.n_vars * 4 / 1e9
    if size_gb <= max_layer_gb:
        adata.layers[key] = values() if values else denoised_values(adata, key=key)
        return
    way_out = way_out or (
        f"Get chosen genes with `sc_noise2self.tl.denoised_values(adata, genes, key={key!r})`."
    )
    warnings.warn(
        f"The dense denoised matrix would take {size_gb:.2f} GB (> max_layer_gb={max_layer_gb}); "
        f"not writing layers[{key!r}]. {way_out}",
        UserWarning,
        stacklevel=3,
    )


def denoised_values(
    adata: ad.AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    key: str = "noise2self",
) -> np.ndarray:
    """Denoised values for chosen genes, from what a ``tl.denoise_*`` function stored.

    Parameters
    ----------
    adata
        AnnData on which ``denoise_pca``, ``denoise_knn`` or ``denoise_diffusion`` ran.
    genes
        One gene name, a list of names, or None for all genes.
    key
        The ``key_added`` of that run.

    Returns
    -------
    Dense float32 array, cells x genes, on the transformed scale of the run.
    """
    if key not in adata.uns or ("n_comps" not in adata.uns[key] and "method" not in adata.uns[key]):
        raise KeyError(f"No denoising under key {key!r}; run a `tl.denoise_*` function first.")
    columns = _gene_positions(adata, genes)
    record = adata.uns[key]
    method = str(record.get("method", "pca"))
    if method == "autoencoder":
        if key not in adata.layers:
            raise KeyError(
                f"The autoencoder run under {key!r} wrote no dense layer (max_layer_gb); re-run "
                "`tl.denoise_autoencoder` with a larger max_layer_gb."
            )
        return np.asarray(adata.layers[key][:, columns], dtype=np.float32)
    if method == "pca":
        loadings = adata.varm[f"{key}_loadings"][columns]
        mean = adata.var[f"{key}_mean"].to_numpy()[columns]
        return (adata.obsm[f"X_{key}"] @ loadings.T + mean).astype(np.float32)
    return _smoothed_values(adata, record, key, columns)


def _smoothed_values(adata: ad.AnnData, record: dict, key: str, columns) -> np.ndarray:
    """Apply the stored graph operator (``steps`` times) to the chosen genes' values."""
    params = record["params"]
    layer = None if params["layer"] in ("X", "None") else params["layer"]
    values = normalised_values(get_counts(adata, layer), params["depth"], params["transform"],
                               columns)
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    operator = adata.obsp[f"{key}_operator"]
    for _ in range(int(record.get("steps", 1))):
        values = operator @ values
    return np.asarray(values, dtype=np.float32)


def _gene_positions(adata: ad.AnnData, genes) -> np.ndarray:
    if genes is None:
        return np.arange(adata.n_vars)
    names = [genes] if isinstance(genes, str) else list(genes)
    positions = pd.Index(adata.var_names).get_indexer(names)
    missing = [g for g, i in zip(names, positions, strict=True) if i < 0]
    if missing:
        raise KeyError(f"Genes not in adata.var_names: {missing[:5]}.")
    return positions
