"""Marker tests from sparse group sums and sparse ranks: scanpy's statistics, never densified.

Mutations these tests catch: the zeros' tie left out of the rank sums or the tie
correction (the Wilcoxon scores and p-values differ from scanpy's), the rest's sums taken
as the group's (the t-tests and fold changes differ), negative values ranked above the
zeros, the top genes ordered otherwise than scanpy's, a dense copy of the matrix (the
memory test), and ``rank_genes_groups_split`` leaving the fast path.
"""

from __future__ import annotations

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self import markers

GROUPS = list("abcde")


def _tested(n_cells: int = 1500, n_genes: int = 200, seed: int = 0, *,
            negative: bool = False) -> ad.AnnData:
    """log1p-normalised sparse counts with many ties, in unequal groups (a small one too)."""
    rng = np.random.default_rng(seed)
    X = sparse.random(n_cells, n_genes, density=0.1, random_state=seed, format="csr")
    X.data = np.floor(X.data * 4) + 1
    adata = ad.AnnData(X.astype(np.float32))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if negative:  # values on both sides of the zeros
        adata.X.data[rng.random(adata.X.nnz) < 0.3] *= -1
    adata.obs["g"] = pd.Categorical(rng.choice(GROUPS, n_cells, p=[.4, .3, .2, .08, .02]))
    adata.var["hv"] = rng.random(n_genes) < 0.5
    return adata


def _scanpys(adata, method, options) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(adata, "g", method=method, key_added="theirs", **options)
    return adata.uns["theirs"]


def _assert_same_record(mine: dict, theirs: dict) -> None:
    for group in GROUPS:
        assert list(mine["names"][group]) == list(theirs["names"][group])
        for column in ("scores", "pvals", "pvals_adj", "logfoldchanges"):
            np.testing.assert_allclose(mine[column][group], theirs[column][group], rtol=2e-5,
                                       atol=1e-7, err_msg=f"{column} of group {group}")


@pytest.mark.parametrize(("method", "options"), [
    ("wilcoxon", {"tie_correct": True}),
    ("wilcoxon", {}),
    ("wilcoxon", {"corr_method": "bonferroni", "rankby_abs": True, "n_genes": 25}),
    ("t-test", {}),
    ("t-test_overestim_var", {"n_genes": 10, "pts": True}),
    ("wilcoxon", {"mask_var": "hv", "tie_correct": True}),
])
def test_the_statistics_equal_scanpys(method, options):
    adata = _tested()
    theirs = _scanpys(adata, method, options)
    mask = adata.var["hv"].to_numpy() if options.get("mask_var") else None
    mine = markers.rank_genes_groups(
        adata.X, adata.obs["g"].array, adata.var_names, method=method, key_params={},
        **{**options, "mask_var": mask})
    _assert_same_record(mine, theirs)
    if options.get("pts"):
        pd.testing.assert_frame_equal(mine["pts"], theirs["pts"])
        pd.testing.assert_frame_equal(mine["pts_rest"], theirs["pts_rest"])


def test_negative_values_rank_below_the_zeros_as_scanpy_ranks_them():
    adata = _tested(negative=True)
    dense = adata.copy()
    dense.X = dense.X.toarray()
    theirs = _scanpys(dense, "wilcoxon", {"tie_correct": True})
    mine = markers.rank_genes_groups(adata.X, adata.obs["g"].array, adata.var_names,
                                     method="wilcoxon", key_params={}, tie_correct=True)
    _assert_same_record(mine, theirs)


def test_the_test_never_densifies_the_cells_by_genes_matrix():
    n_cells, n_genes = 20000, 3000  # dense float64: 480 MB
    X = sparse.random(n_cells, n_genes, density=0.005, random_state=0, format="csr",
                      dtype=np.float64)
    labels = pd.Categorical(np.random.default_rng(0).integers(0, 4, n_cells).astype(str))
    names = pd.Index([f"g{i}" for i in range(n_genes)])
    markers.rank_genes_groups(X[:50], labels[:50], names, method="wilcoxon", key_params={})
    tracemalloc.start()
    markers.rank_genes_groups(X, labels, names, method="wilcoxon", key_params={},
                              tie_correct=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6, f"peak {peak / 1e6:.0f} MB: something the size of the dense matrix"


def test_a_one_cell_group_is_refused_naming_it():
    adata = _tested()
    labels = adata.obs["g"].to_numpy().copy()
    labels[0] = "lonely"
    with pytest.raises(ValueError, match="groups lonely have fewer than 2 cells"):
        markers.rank_genes_groups(adata.X, pd.Categorical(labels), adata.var_names,
                                  method="wilcoxon", key_params={})


def test_rank_genes_groups_split_tests_half_b_as_scanpy_would():
    adata = n2s.simulation.simulate_counts(600, 300, (0.6, 0.4), random_state=0)
    n2s.tl.rank_genes_groups_split(adata, resolution=0.5, validate=False, random_state=0)
    record = adata.uns["rank_genes_groups_split"]
    tested = ad.AnnData(adata.layers["rank_genes_groups_split"], var=adata.var)
    tested.obs["g"] = adata.obs["rank_genes_groups_split_groups"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(tested, "g", method="wilcoxon", tie_correct=True)
    theirs = tested.uns["rank_genes_groups"]
    for group in tested.obs["g"].cat.categories:
        assert list(record["names"][group]) == list(theirs["names"][group])
        np.testing.assert_allclose(record["pvals_adj"][group], theirs["pvals_adj"][group],
                                   rtol=2e-5)
    assert record["params"]["method"] == "wilcoxon"
    assert sc.get.rank_genes_groups_df(adata, group=None, key="rank_genes_groups_split").shape[
        0] == 300 * tested.obs["g"].nunique()
