"""Markers on a dask half B: the in-memory results, a block of genes at a time (issue 28)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self import markers

da = pytest.importorskip("dask.array")


def clustered_counts(seed: int = 0) -> ad.AnnData:
    """Realistic counts (NB, depth varying, unequal groups) with their groups."""
    return n2s.simulation.simulate_counts(1500, 300, (0.5, 0.3, 0.15, 0.05), depth_sd=0.6,
                                          nb_size=(0.5, 50.0), random_state=seed)


def split_and_grouped(adata: ad.AnnData, chunks) -> ad.AnnData:
    """A copy split by pp.split_molecules (dask chunks when ``chunks``), groups in obs."""
    copy = adata.copy()
    if chunks is not None:
        copy.X = da.from_array(sparse.csr_matrix(adata.X), chunks=chunks, asarray=False)
    n2s.pp.split_molecules(copy, random_state=3)
    copy.obs["groups"] = adata.obs["group"].astype(str).to_numpy()
    return copy


def record_frames(adata: ad.AnnData, key: str = "rank_genes_groups_split") -> dict:
    record = adata.uns[key]
    return {name: pd.DataFrame(record[name]) for name in
            ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")}


@pytest.mark.parametrize("method", ["wilcoxon", "t-test"])
@pytest.mark.parametrize("chunks", [(400, -1), (700, 120)], ids=["rows", "rows-genes"])
def test_dask_markers_equal_the_in_memory_markers(monkeypatch, method, chunks):
    # Same counts, same seed: the dask half B gives the in-memory record, gene for gene, and
    # the same tested layer. The block budget is cut so that the genes come in several
    # blocks. Fails when a block's statistics are put back in another order, when a gene's
    # ranks are taken within a chunk of cells instead of all cells, or when the chunks are
    # normalised by anything but each cell's own total.
    monkeypatch.setattr(markers, "DASK_BLOCK_VALUES", 20_000)
    adata = clustered_counts()
    memory = split_and_grouped(adata, None)
    lazy = split_and_grouped(adata, chunks)
    n2s.tl.rank_genes_groups_split(memory, groupby="groups", method=method)
    n2s.tl.rank_genes_groups_split(lazy, groupby="groups", method=method)
    assert isinstance(lazy.layers["rank_genes_groups_split"], da.Array)
    np.testing.assert_array_equal(lazy.layers["rank_genes_groups_split"].compute().toarray(),
                                  memory.layers["rank_genes_groups_split"].toarray())
    want, got = record_frames(memory), record_frames(lazy)
    pd.testing.assert_frame_equal(got["names"], want["names"])
    for name in ("scores", "pvals", "pvals_adj", "logfoldchanges"):
        if method == "wilcoxon":  # column by column, in the same order: the same bits
            pd.testing.assert_frame_equal(got[name], want[name], check_exact=True)
        else:  # group sums of columns against those of rows: another summation order
            pd.testing.assert_frame_equal(got[name], want[name], rtol=1e-6)
    top = want["names"].iloc[:5]
    assert {"gene" in str(name) for name in top.to_numpy().ravel()} == {True}


def test_a_half_b_chunked_along_genes_is_normalised_by_whole_cells():
    # A lazy half B read back from a store may be chunked along genes too; each cell must
    # still be normalised by its total over every gene. Fails when the chunks are
    # normalised as they come (each by the totals of its own genes).
    adata = clustered_counts(3)
    memory = split_and_grouped(adata, None)
    lazy = memory.copy()
    lazy.layers["noise2self_b"] = da.from_array(memory.layers["noise2self_b"],
                                                chunks=(500, 70), asarray=False)
    for data in (memory, lazy):
        n2s.tl.rank_genes_groups_split(data, groupby="groups")
    pd.testing.assert_frame_equal(record_frames(lazy)["scores"],
                                  record_frames(memory)["scores"], check_exact=True)


def test_the_refusal_looks_at_the_half_b_that_is_tested():
    # X in memory, a lazy half B: scanpy's logreg would get the dask array; refused.
    adata = clustered_counts(4)
    lazy = split_and_grouped(adata, None)
    lazy.layers["noise2self_b"] = da.from_array(lazy.layers["noise2self_b"],
                                                chunks=(500, -1), asarray=False)
    with pytest.raises(ValueError, match="method='logreg'"):
        n2s.tl.rank_genes_groups_split(lazy, groupby="groups", method="logreg")


def test_gene_blocks_cover_every_gene_once_within_the_budget():
    per_gene = np.array([5, 5, 5, 50, 1, 1, 1, 30])
    blocks = markers._gene_blocks(per_gene, 12)
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(per_gene.size))
    # Each block stays within the budget unless one gene alone is over it.
    assert all(per_gene[block].sum() <= 12 or block.size == 1 for block in blocks)


def test_markers_of_a_mask_on_dask_are_the_masked_in_memory_markers():
    adata = clustered_counts(1)
    memory = split_and_grouped(adata, None)
    lazy = split_and_grouped(adata, (500, -1))
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[::3] = True
    for data in (memory, lazy):
        data.var["chosen"] = mask
        n2s.tl.rank_genes_groups_split(data, groupby="groups", mask_var="chosen",
                                       write_layer=False)
    want, got = record_frames(memory), record_frames(lazy)
    pd.testing.assert_frame_equal(got["names"], want["names"])
    pd.testing.assert_frame_equal(got["scores"], want["scores"], check_exact=True)
    assert set(want["names"].to_numpy().ravel()) <= set(adata.var_names[mask])


def test_markers_on_a_local_cluster_are_the_in_memory_markers():
    # The same code on a distributed cluster of two workers: the chunks' normalisation and
    # the gene blocks run on the workers, and the record is the in-memory one.
    import faulthandler

    from dask.distributed import Client, LocalCluster

    adata = clustered_counts(2)
    memory = split_and_grouped(adata, None)
    n2s.tl.rank_genes_groups_split(memory, groupby="groups")
    faulthandler.dump_traceback_later(120, exit=True)  # a hung cluster fails, not stalls
    try:
        with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None) as cluster,
              Client(cluster, timeout=30)):
            lazy = split_and_grouped(adata, (400, -1))
            n2s.tl.rank_genes_groups_split(lazy, groupby="groups", write_layer=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    want, got = record_frames(memory), record_frames(lazy)
    pd.testing.assert_frame_equal(got["names"], want["names"])
    pd.testing.assert_frame_equal(got["pvals"], want["pvals"], check_exact=True)
