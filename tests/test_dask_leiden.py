"""The Leiden family on dask counts: the in-memory clusters, losses and markers (issue 28).

Up to 5,000 cells the in-memory graph's PCA is exact, as the dask one always is, so the same
counts and seed give the same graph, losses, labels and markers, chunk by chunk.
"""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self.denoisers import leiden_refine
from sc_noise2self.denoisers.cluster_loss import DevianceTargets, partition_deviances
from sc_noise2self.denoisers.leiden import LEIDEN, first_split, informative_genes
from sc_noise2self.denoisers.leiden_dask import ChunkedTargets

da = pytest.importorskip("dask.array")


def realistic(n_obs: int = 2000, seed: int = 0) -> ad.AnnData:
    """NB counts, depth varying (sd 0.6), unequal groups down to 3%, weak and strong."""
    adata = n2s.simulation.simulate_counts(n_obs, 400, (0.5, 0.3, 0.17, 0.03), depth_sd=0.6,
                                           nb_size=(0.5, 50.0), effect=0.8,
                                           random_state=seed)
    adata.X = sparse.csr_matrix(adata.X)
    return adata


def lazy(adata: ad.AnnData, rows: int = 450) -> ad.AnnData:
    """A copy whose counts are a dask array of CSR chunks of ``rows`` cells."""
    copy = adata.copy()
    copy.X = da.from_array(adata.X, chunks=(rows, -1), asarray=False)
    return copy


def test_calibrate_leiden_on_dask_scores_and_labels_as_in_memory():
    # Mutation: a chunk's rates from its own cells (its own gene sums or prior) moves the
    # losses; a chunk split from row 0 instead of its first row draws another split.
    adata = realistic()
    memory, chunked = adata.copy(), lazy(adata)
    for data in (memory, chunked):
        n2s.tl.calibrate_leiden(data, random_state=0)
    want, got = memory.uns["noise2self_leiden"], chunked.uns["noise2self_leiden"]
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-12)
    np.testing.assert_array_equal(got["params"]["n_clusters"], want["params"]["n_clusters"])
    assert got["params"]["backend"] == "dask"
    assert got["params"]["reassignment"] == want["params"]["reassignment"]
    np.testing.assert_array_equal(chunked.obs["noise2self_leiden"],
                                  memory.obs["noise2self_leiden"])
    np.testing.assert_allclose(chunked.varm["noise2self_leiden_cluster_means"],
                               memory.varm["noise2self_leiden_cluster_means"], rtol=1e-6)
    assert memory.obs["noise2self_leiden"].nunique() == 4


def test_markers_of_dask_counts_are_the_in_memory_markers():
    # The whole path: split, rank, graph, resolution, refinement, reassignment, validation
    # on the split's chunks, then Wilcoxon on the lazy half B.
    adata = realistic(seed=1)
    memory, chunked = adata.copy(), lazy(adata, 600)
    for data in (memory, chunked):
        n2s.tl.rank_genes_groups_split(data, random_state=0, write_layer=False)
    key = "rank_genes_groups_split"
    np.testing.assert_array_equal(chunked.obs[f"{key}_groups"], memory.obs[f"{key}_groups"])
    assert chunked.uns[key]["params"]["count_split"] == memory.uns[key]["params"]["count_split"]
    for field in ("names", "scores", "pvals_adj"):
        pd.testing.assert_frame_equal(pd.DataFrame(chunked.uns[key][field]),
                                      pd.DataFrame(memory.uns[key][field]), check_exact=True)


@pytest.fixture(scope="module")
def split_pair():
    """One split of the same counts: in memory (GeneSubset) and in dask chunks (DaskSplit)."""
    adata = realistic(seed=2)
    settings = LEIDEN.default_settings(random_state=0, overdispersion="estimate",
                                       split="negative_binomial")
    halves, _ = first_split(adata.X, settings)
    scored = informative_genes(halves, 2000)
    chunked, _ = first_split(lazy(adata, 333).X, settings)
    return scored, chunked, halves.p


def test_chunked_deviances_of_a_subpopulation_are_its_in_memory_deviances(split_pair):
    # The validation's nodes: some cells are the population, their own sums give the rates.
    scored, chunked, p = split_pair
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(scored.a.shape[0], 700, replace=False))
    labels = rng.integers(0, 3, cells.size)
    want = partition_deviances(labels, DevianceTargets.of(
        scored.a[cells], scored.b[cells], scored.totals[cells], p))
    got = partition_deviances(labels, ChunkedTargets(chunked, cells))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # Mutation check: the whole population's rates give other deviances.
    whole = partition_deviances(labels, ChunkedTargets(chunked).of_cells(cells))
    assert not np.allclose(whole, want)


def test_dask_weighs_a_persisted_chunk_by_its_arrays(split_pair):
    # The scheduler moves what it thinks is small: weighed at the object's own few bytes,
    # whole chunks went from worker to worker on every pass (issue 28's dask loss regression).
    # Mutation: without ChunkHalves.__sizeof__, sizeof is a few dozen bytes.
    from dask.sizeof import sizeof

    _, chunked, _ = split_pair
    part = chunked.parts[0].compute()
    held = sum(x.nbytes for x in (part.a.data, part.a.indices, part.b.data,
                                  part.deviance_targets.own_a))
    assert held < sizeof(part) < 3 * held


def test_a_pass_warns_of_a_large_graph_only_beyond_what_it_must_send():
    # A sweep's labels go to the chunks on every pass (104 MB at a million cells and 13
    # resolutions); distributed's 10 MB warning then told users of nothing they could change.
    # Mutation: no raised threshold around the passes' compute.
    import dask

    from sc_noise2self.denoisers.leiden_dask import _expected_graph

    pytest.importorskip("distributed")  # its config holds the threshold

    labels = np.zeros((1_000_000, 13), dtype=np.int64)
    sums = (np.zeros((40, 2000)), np.zeros(40))
    with _expected_graph((sums,), {"labels": labels}):
        threshold = dask.utils.parse_bytes(
            dask.config.get("distributed.admin.large-graph-warning-threshold"))
    assert 2 * (labels.nbytes + sums[0].nbytes) < threshold < 3 * labels.nbytes
    assert dask.config.get("distributed.admin.large-graph-warning-threshold") == "10MB"


def test_chunked_likeliest_clusters_are_the_in_memory_ones(split_pair):
    scored, chunked, _ = split_pair
    labels = np.random.default_rng(1).integers(0, 4, scored.a.shape[0])
    sizes = np.full(scored.genes.size, 2.0)
    want = leiden_refine.likeliest_clusters(labels, scored.a.astype(np.float64), scored.totals,
                                            sizes)
    targets = ChunkedTargets(chunked)
    got = leiden_refine.likeliest_clusters(labels, targets, targets.totals, sizes)
    np.testing.assert_array_equal(got, want)
    assert np.mean(want != labels) > 0.3  # random labels: most cells move


@pytest.mark.filterwarnings("ignore:The dense denoised matrix")
def test_a_refinement_of_drawn_cells_places_the_rest_as_in_memory(monkeypatch):
    # Clusters over the draw's size are refined on drawn cells, and the others are placed
    # by their PCA scores, which the dask split computes in its chunks.
    monkeypatch.setattr(leiden_refine, "REFINE_MAX_CELLS", 300)
    adata = realistic(1500, seed=3)
    memory, chunked = adata.copy(), lazy(adata, 400)
    for data in (memory, chunked):
        n2s.tl.denoise_leiden(data, resolution=0.3, refine=True, random_state=0,
                              max_layer_gb=0.0)
    np.testing.assert_array_equal(chunked.obs["noise2self_leiden"],
                                  memory.obs["noise2self_leiden"])
    assert memory.uns["noise2self_leiden"]["params"]["refinement"]


def test_leiden_markers_on_a_local_cluster_are_the_in_memory_markers():
    import faulthandler

    from dask.distributed import Client, LocalCluster

    adata = realistic(1200, seed=4)
    memory = adata.copy()
    n2s.tl.rank_genes_groups_split(memory, random_state=0, write_layer=False)
    faulthandler.dump_traceback_later(300, exit=True)  # a hung cluster fails, not stalls
    try:
        with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None) as cluster,
              Client(cluster, timeout=30)):
            chunked = lazy(adata, 300)
            n2s.tl.rank_genes_groups_split(chunked, random_state=0, write_layer=False)
    finally:
        faulthandler.cancel_dump_traceback_later()
    key = "rank_genes_groups_split"
    np.testing.assert_array_equal(chunked.obs[f"{key}_groups"], memory.obs[f"{key}_groups"])
    pd.testing.assert_frame_equal(pd.DataFrame(chunked.uns[key]["pvals"]),
                                  pd.DataFrame(memory.uns[key]["pvals"]), check_exact=True)


def test_dask_counts_on_fewer_genes_than_they_have_choose_the_in_memory_genes():
    # Half A's most variable genes are chosen from its chunks by scanpy (dask sums): the same
    # genes, hence the same clusters, as in memory.
    adata = realistic(1500, seed=5)
    memory, chunked = adata.copy(), lazy(adata, 400)
    for data in (memory, chunked):
        n2s.tl.calibrate_leiden(data, n_top_genes=150, random_state=0)
    np.testing.assert_allclose(chunked.uns["noise2self_leiden"]["loss"],
                               memory.uns["noise2self_leiden"]["loss"], rtol=1e-12)
    np.testing.assert_array_equal(chunked.obs["noise2self_leiden"],
                                  memory.obs["noise2self_leiden"])


def test_labels_made_on_dask_are_validated_and_tested_from_their_record():
    # calibrate_leiden's record on dask counts: validate_clusters_split draws the split
    # again in chunks, and rank_genes_groups_split tests on the lazy half B.
    adata = realistic(1200, seed=6)
    memory, chunked = adata.copy(), lazy(adata, 300)
    for data in (memory, chunked):
        n2s.tl.calibrate_leiden(data, random_state=0)
        n2s.tl.validate_clusters_split(data)
        n2s.tl.rank_genes_groups_split(data, groupby="noise2self_leiden_validated",
                                       write_layer=False)
    key = "noise2self_leiden_validated"
    np.testing.assert_array_equal(chunked.obs[key], memory.obs[key])
    np.testing.assert_array_equal(chunked.uns[key]["pvalues"], memory.uns[key]["pvalues"])
    pd.testing.assert_frame_equal(pd.DataFrame(chunked.uns["rank_genes_groups_split"]["pvals"]),
                                  pd.DataFrame(memory.uns["rank_genes_groups_split"]["pvals"]),
                                  check_exact=True)

