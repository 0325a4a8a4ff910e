"""Reading inputs from and writing results into AnnData, the way scanpy does."""

from __future__ import annotations

import anndata as ad


def get_counts(adata: ad.AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a helpful error for a bad name."""
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty; pass `layer=` naming the layer with raw counts.")
        return adata.X
    if layer not in adata.layers:
        known = ", ".join(repr(k) for k in adata.layers) or "none"
        raise KeyError(f"Layer {layer!r} not found in adata.layers (available: {known}).")
    return adata.layers[layer]


def target(adata: ad.AnnData, copy: bool) -> ad.AnnData:
    """The object to write into: a copy when ``copy`` is True, else ``adata`` itself."""
    return adata.copy() if copy else adata
