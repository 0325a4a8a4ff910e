"""Preprocessing: split molecules into halves, for arrays and for AnnData."""

from __future__ import annotations

from typing import Literal

import anndata as ad

from . import splitting
from ._anndata import counts_name, get_counts, target
from ._rng import RandomState
from ._validation import check_counts, is_dask_array
from .diagnostics import estimate_overdispersion
from .runs import DEFAULT_P

# split_counts is public as sc_noise2self.split_counts (the API page lists it there).
__all__ = ["split_molecules"]


def split_counts(X, p: float = 0.5, *, random_state: RandomState = 0,
                 split: Literal["binomial", "negative_binomial"] = "binomial",
                 overdispersion=None, sample_ratio: float | None = None):
    """Split count matrix ``X`` molecule by molecule into two halves that sum to ``X``.

    Parameters
    ----------
    X
        Cells x genes raw counts: a numpy array or a scipy.sparse matrix or array (CSR, CSC or
        COO), or a dask array of such chunks (split lazily, chunk by chunk). Integer dtypes,
        or floats whose values are all integral.
    p
        Expected share of each count that goes to the first half, strictly between 0 and 1.
    random_state
        Seed, ``SeedSequence`` or ``Generator``. The same seed gives bit-identical halves,
        whatever the dask chunking or device: each count's draws are a pure function of the
        seed, its cell's row and total and its gene (:mod:`sc_noise2self._count_kernels`;
        the beta-binomial split draws each cell from a Philox stream keyed alike), so
        splitting a half again with the same seed does not reuse the first split's draws.
    split
        ``"binomial"``: ``Xa ~ Binomial(X, p)``, which makes the halves independent given the
        truth when the counts are Poisson. ``"negative_binomial"``: ``Xa ~ Binomial(X, pi)``
        with ``pi ~ Beta(p b, (1 - p) b)`` for gene size ``b`` (count splitting / data
        thinning), which makes the halves independent NB(p mu, p b) and NB((1-p) mu,
        (1-p) b) when the counts are NB(mu, b).
    overdispersion
        The NB size ``b``: one number, one per gene, or ``"estimate"``
        (:func:`~sc_noise2self.diagnostics.estimate_overdispersion`, counts in memory only).
        ``inf`` means Poisson for that gene. Only with ``split="negative_binomial"``.
    sample_ratio
        MCV's overlap correction: the share ``r`` of each cell's molecules that the data
        captured. Two independent draws from the cell would share molecules when ``r`` is
        not small, so each observed molecule goes to A only, B only or both, with the shares
        of :func:`overlap_shares`; then ``Xa + Xb >= X``. None (or 0) splits plainly.

    Returns
    -------
    Xa, Xb
        Two matrices of the input's type, sparse format and dtype with ``Xa + Xb == X``
        exactly (for dask input: two lazy dask arrays, nothing computed yet). Sparse halves
        store no zeros, so they never hold more non-zeros than ``X``. The input is not
        modified.

    Examples
    --------
    >>> import numpy as np
    >>> from sc_noise2self import split_counts
    >>> X = np.array([[3, 0, 10], [1, 4, 0]])
    >>> Xa, Xb = split_counts(X, random_state=0)
    >>> bool((Xa + Xb == X).all())
    True
    """
    if sample_ratio and split != "binomial":  # before the NB sizes are estimated
        raise ValueError(
            "sample_ratio (MCV's overlap correction) works with split='binomial' only; pass "
            "split='binomial' with it (split_molecules' default is 'negative_binomial')."
        )
    if isinstance(overdispersion, str) and overdispersion == "estimate":
        if split == "negative_binomial":
            if not is_dask_array(X):
                check_counts(X)
            overdispersion = estimate_overdispersion(X, random_state=random_state)
    return splitting.split_counts(X, p, random_state=random_state, split=split,
                                  overdispersion=overdispersion, sample_ratio=sample_ratio)


def split_molecules(
    adata: ad.AnnData,
    *,
    p: float = DEFAULT_P,
    split: Literal["binomial", "negative_binomial"] = "negative_binomial",
    overdispersion=None,
    sample_ratio: float | None = None,
    layer: str | None = None,
    random_state: RandomState = 0,
    key_added: str = "noise2self",
    copy: bool = False,
) -> ad.AnnData | None:
    """Split each cell's UMI counts into two halves stored as layers.

    Parameters
    ----------
    adata
        The cells, with raw integer counts in ``X`` or in ``layers[layer]``.
    p, split, overdispersion, sample_ratio
        As in :func:`~sc_noise2self.split_counts`: the expected share of half A, binomial or
        beta-binomial (negative-binomial) shares, and MCV's overlap correction. The
        defaults are those of every calibration and of ``tl.rank_genes_groups_split``: 0.7,
        and the NB split at sizes estimated from the counts (``overdispersion=None`` means
        ``"estimate"`` under that split). Pass ``split="binomial"`` for Poisson counts
        (and for ``sample_ratio``).
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
    if not is_dask_array(counts):  # named as the user knows it, before any work
        check_counts(counts, name=counts_name(layer))
    if split == "negative_binomial" and overdispersion is None:
        overdispersion = "estimate"
    half_a, half_b = split_counts(counts, p, random_state=random_state, split=split,
                                  overdispersion=overdispersion, sample_ratio=sample_ratio)
    adata = target(adata, copy)
    adata.layers[f"{key_added}_a"] = half_a
    adata.layers[f"{key_added}_b"] = half_b
    adata.uns[f"{key_added}_split"] = {
        "p": float(p),
        "layer": "X" if layer is None else layer,
        "random_state": random_state if isinstance(random_state, int) else "custom",
        "split": split,
        "sample_ratio": "None" if sample_ratio is None else float(sample_ratio),
    }
    return adata if copy else None
