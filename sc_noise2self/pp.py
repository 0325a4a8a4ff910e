"""Preprocessing: split the molecules of an AnnData into two halves."""

from __future__ import annotations

import anndata as ad

from ._anndata import get_counts, target
from .splitting import RandomState, split_counts


def split_molecules(
    adata: ad.AnnData,
    *,
    p: float = 0.5,
    layer: str | None = None,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    copy: bool = False,
) -> ad.AnnData | None:
    """Split each cell's UMI counts binomially into two halves stored as layers.

    Parameters
    ----------
    adata
        Annotated data with raw integer counts in ``X`` or ``layers[layer]``.
    p
        Expected share of molecules in half A.
    layer
        Layer holding the raw counts; None means ``X``.
    random_state
        Seed of the split; the same seed gives identical halves.
    key_added
        Halves go to ``layers[f"{key_added}_a"]`` and ``layers[f"{key_added}_b"]``; the
        settings to ``uns[f"{key_added}_split"]``.
    copy
        Return a new AnnData instead of writing into ``adata``.

    Returns
    -------
    None, or the new AnnData when ``copy=True``. The counts themselves are never modified.
    """
    counts = get_counts(adata, layer)
    half_a, half_b = split_counts(counts, p, random_state=random_state)
    adata = target(adata, copy)
    adata.layers[f"{key_added}_a"] = half_a
    adata.layers[f"{key_added}_b"] = half_b
    adata.uns[f"{key_added}_split"] = {
        "p": float(p),
        "layer": "X" if layer is None else layer,
        "random_state": random_state if isinstance(random_state, int) else "custom",
        "method": "binomial",
    }
    return adata if copy else None
