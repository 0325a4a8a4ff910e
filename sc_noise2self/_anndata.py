"""Reading inputs from and writing results into AnnData, the way scanpy does."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np
import pandas as pd


def logger():
    """scanpy's logger (imported late: scanpy is slow to import)."""
    from scanpy import logging

    return logging


def get_counts(adata: ad.AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a helpful error for a bad name."""
    if not isinstance(adata, ad.AnnData):
        raise TypeError(
            f"adata is a {type(adata).__name__}; pass an AnnData (e.g. anndata.AnnData(X) "
            "around a counts matrix)."
        )
    if adata.isbacked:
        raise ValueError(
            "adata is backed (read_h5ad(..., backed='r')): its X is read row by row from disk "
            "and cannot be split in place. Load it with adata = adata.to_memory(), or for data "
            "larger than memory read X lazily as a dask array "
            "(anndata.experimental.read_elem_lazy) and pass that."
        )
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer={layer!r} must be the name of a layer (a str) or None for X.")
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass `layer=` naming the layer with raw counts.")
        return adata.X
    if layer not in adata.layers:
        known = ", ".join(repr(k) for k in adata.layers) or "none"
        raise KeyError(f"Layer {layer!r} not found in adata.layers (available: {known}).")
    return adata.layers[layer]


def counts_name(layer: str | None) -> str:
    """How error messages name the counts a function reads: ``X`` or ``layers['...']``."""
    return "X" if layer is None else f"layers[{layer!r}]"


def target(adata: ad.AnnData, copy: bool) -> ad.AnnData:
    """The object to write into: a copy when ``copy`` is True, else ``adata`` itself."""
    return adata.copy() if copy else adata


def store_calibration(adata: ad.AnnData, result, key_added: str, layer: str | None) -> dict:
    """Write a calibration record into ``adata.uns[key_added]`` and return it.

    Per-gene NB sizes (the split's, estimated or given, and the ``"nb"`` loss's) go to
    ``adata.var[key_added + '_overdispersion']`` and ``adata.var[key_added + '_nb_size']``.
    """
    result.params["layer"] = "X" if layer is None else layer
    for name in ("overdispersion", "nb_size"):
        sizes = result.params.get(name)
        if isinstance(sizes, np.ndarray) and sizes.ndim == 1:
            adata.var[f"{key_added}_{name}"] = sizes
            result.params[name] = f"per gene, in var['{key_added}_{name}']"
    adata.uns[key_added] = result.to_dict()
    return adata.uns[key_added]


def write_dense_layer(
    adata: ad.AnnData, key: str, max_layer_gb: float, values: Callable[[], np.ndarray],
    way_out: str | None = None,
) -> None:
    """Write ``layers[key] = values()`` when it fits ``max_layer_gb``; else warn with a way out."""
    size_gb = adata.n_obs * adata.n_vars * 4 / 1e9
    if size_gb <= max_layer_gb:
        adata.layers[key] = values()
        return
    way_out = way_out or (
        f"Get chosen genes with `sc_noise2self.tl.denoised_values(adata, genes, key={key!r})`."
    )
    warnings.warn(
        f"The dense denoised matrix would take {size_gb:.2f} GB (> max_layer_gb={max_layer_gb}); "
        f"not writing layers[{key!r}]. {way_out}",
        UserWarning,
        stacklevel=4,
    )


def gene_positions(adata: ad.AnnData, genes: Sequence[str] | str | None) -> np.ndarray:
    """Column positions of gene names (all genes for None); raises naming missing genes."""
    if genes is None:
        return np.arange(adata.n_vars)
    names = [genes] if isinstance(genes, str) else list(genes)
    positions = pd.Index(adata.var_names).get_indexer(names)
    missing = [g for g, i in zip(names, positions, strict=True) if i < 0]
    if missing:
        raise KeyError(f"Genes not in adata.var_names: {missing[:5]}.")
    return positions
