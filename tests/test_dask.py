"""The dask path: lazy splitting and PCA calibration that reproduce the in-memory results."""

import numpy as np
import pytest
from conftest import to_dense
from scipy import sparse

from sc_noise2self import split_counts

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

CHUNK_TYPES = ("csr", "dense")


def make_counts(n_cells=1200, n_genes=150, seed=0) -> np.ndarray:
    """Counts with a low-rank structure, many zeros and some large values."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.5, 1.0, (n_cells, 4)) @ rng.gamma(0.4, 2.0, (4, n_genes))
    return rng.poisson(rate * rng.lognormal(0.0, 0.4, (n_cells, 1))).astype(np.int32)


def as_dask(X: np.ndarray, chunk_type: str, rows: int):
    """``X`` as a dask array of CSR or dense chunks of ``rows`` rows."""
    if chunk_type == "dense":
        return da.from_array(X, chunks=(rows, -1))
    return da.from_array(sparse.csr_matrix(X), chunks=(rows, -1), asarray=False)


def in_memory(X: np.ndarray, chunk_type: str):
    return X if chunk_type == "dense" else sparse.csr_matrix(X)


@pytest.fixture(scope="module")
def counts() -> np.ndarray:
    return make_counts()


SPLITS = [
    {},
    {"split": "negative_binomial", "overdispersion": 1.5},
    {"sample_ratio": 0.3},
]


@pytest.mark.parametrize("options", SPLITS, ids=["binomial", "nb", "overlap"])
@pytest.mark.parametrize("chunk_type", CHUNK_TYPES)
def test_dask_split_equals_in_memory_split(counts, chunk_type, options):
    expected = split_counts(in_memory(counts, chunk_type), 0.6, random_state=5, **options)
    halves = split_counts(as_dask(counts, chunk_type, 250), 0.6, random_state=5, **options)
    for half, want in zip(halves, expected, strict=True):
        assert isinstance(half, da.Array)
        got = half.compute()
        assert type(got) is type(want) and got.dtype == want.dtype
        np.testing.assert_array_equal(to_dense(got), to_dense(want))
    total = to_dense(halves[0].compute()) + to_dense(halves[1].compute())
    if "sample_ratio" in options:  # shared molecules count in both halves
        assert np.all(total >= counts) and np.any(total > counts)
    else:
        np.testing.assert_array_equal(total, counts)


@pytest.mark.parametrize("chunk_type", CHUNK_TYPES)
def test_chunk_size_does_not_change_the_split(counts, chunk_type):
    splits = [
        [to_dense(h.compute()) for h in split_counts(as_dask(counts, chunk_type, rows),
                                                     random_state=2)]
        for rows in (100, 1000, counts.shape[0])
    ]
    for other in splits[1:]:
        np.testing.assert_array_equal(other[0], splits[0][0])
        np.testing.assert_array_equal(other[1], splits[0][1])
    other_seed = split_counts(as_dask(counts, chunk_type, 100), random_state=3)[0].compute()
    assert not np.array_equal(to_dense(other_seed), splits[0][0])


def test_dense_and_sparse_rows_split_alike(counts):
    # Zeros draw nothing from a row's stream, so storing them or not changes nothing.
    dense_a, _ = split_counts(counts, 0.4, random_state=1)
    csc_a, _ = split_counts(sparse.csc_matrix(counts), 0.4, random_state=1)
    np.testing.assert_array_equal(csc_a.toarray(), dense_a)


def test_column_chunks_are_joined_before_splitting(counts):
    expected, _ = split_counts(counts, random_state=4)
    half, _ = split_counts(da.from_array(counts, chunks=(300, 40)), random_state=4)
    np.testing.assert_array_equal(half.compute(), expected)


def test_split_computes_nothing(counts):
    from dask.callbacks import Callback

    loaded = []

    def load(block):
        loaded.append(block.shape)
        return block

    X = as_dask(counts, "csr", 200).map_blocks(load, meta=sparse.csr_matrix((0, 0), dtype=int))
    tasks = []
    with Callback(pretask=lambda key, dask, state: tasks.append(key)):
        half_a, _ = split_counts(X, random_state=0)
    assert tasks == [] and loaded == []
    half_a.compute()
    assert len(loaded) == X.numblocks[0]  # and it does compute when asked


def test_bad_counts_fail_at_compute_with_the_row(counts):
    X = counts.astype(np.float64)
    X[700, 3] = 1.5
    half, _ = split_counts(da.from_array(X, chunks=(200, -1)))
    with pytest.raises(ValueError, match=r"rows from 600.*non-integer"):
        half.compute()
    with pytest.raises(ValueError, match=r"sampled to estimate the NB sizes.*non-integer"):
        split_counts(da.from_array(X, chunks=(200, -1)), split="negative_binomial",
                     overdispersion="estimate")


@pytest.mark.parametrize("center", [True, False], ids=["centred", "uncentred"])
@pytest.mark.parametrize("p", [0.7, 0.5], ids=["nonlinear", "linear"])
@pytest.mark.parametrize("chunk_type", CHUNK_TYPES)
def test_dask_calibration_equals_in_memory(counts, chunk_type, p, center):
    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    options = dict(max_comps=25, p=p, center=center)
    # The dask path is exact (a Gram matrix): compare with the exact in-memory solver.
    expected = calibrate_pca_counts(in_memory(counts, chunk_type), solver="arpack", **options)
    got = calibrate_pca_counts(as_dask(counts, chunk_type, 300), **options)
    np.testing.assert_array_equal(got.grid, expected.grid)
    # The Gram matrix and ARPACK differ in the last digits of the trailing components; the
    # count loss's log magnifies that where a prediction nears zero (1e-6 under "mse").
    np.testing.assert_allclose(got.loss, expected.loss, rtol=1e-4, atol=0)
    assert got.best == expected.best
    assert got.params["backend"] == "dask" and got.params["p"] == p


def test_poisson_loss_and_several_splits_on_dask(counts):
    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    options = dict(max_comps=15, loss="poisson", n_splits=2, random_state=3)
    expected = calibrate_pca_counts(sparse.csr_matrix(counts), solver="arpack", **options)
    got = calibrate_pca_counts(as_dask(counts, "csr", 500), **options)
    assert got.loss_per_split.shape == (2, 16)
    # The deviance of near-zero predictions amplifies the SVD's rounding (float32 ARPACK in
    # memory against a float64 eigendecomposition here): equal to 1e-4, not 1e-6.
    np.testing.assert_allclose(got.loss_per_split, expected.loss_per_split, rtol=1e-4)
    assert got.best == expected.best


def test_calibration_does_not_depend_on_chunking(counts):
    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    curves = [calibrate_pca_counts(as_dask(counts, "csr", rows), max_comps=10, p=0.5).loss
              for rows in (100, counts.shape[0])]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-10)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"folds": 3}, "n_splits"), ({"solver": "arpack"}, "solver")],
)
def test_dask_calibration_refuses_what_it_cannot_do(counts, options, message):
    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    with pytest.raises(ValueError, match=message):
        calibrate_pca_counts(as_dask(counts, "csr", 500), max_comps=5, **options)


def test_empty_cells_are_refused_before_splitting(counts):
    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    X = counts.copy()
    X[10] = 0
    with pytest.raises(ValueError, match="zero total"):
        calibrate_pca_counts(as_dask(X, "dense", 500), max_comps=5)


def test_local_cluster_of_two_workers_gives_the_in_memory_results(counts):
    import faulthandler

    from dask.distributed import Client, LocalCluster

    from sc_noise2self.denoisers.pca import calibrate_pca_counts

    expected_split = split_counts(sparse.csr_matrix(counts), random_state=8)
    expected = calibrate_pca_counts(sparse.csr_matrix(counts), max_comps=20, random_state=8,
                                    solver="arpack")
    X = as_dask(counts, "csr", 150)
    # A hung cluster must fail this test, not stall CI: dump the stacks and exit after 120 s.
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                           host="127.0.0.1", dashboard_address=None) as cluster,
              Client(cluster, timeout=30) as client):
            assert len(client.scheduler_info()["workers"]) == 2
            futures = client.compute(list(split_counts(X, random_state=8)))
            halves = [future.result(timeout=60) for future in futures]
            got = calibrate_pca_counts(X, max_comps=20, random_state=8)
    finally:
        faulthandler.cancel_dump_traceback_later()
    for half, want in zip(halves, expected_split, strict=True):
        np.testing.assert_array_equal(half.toarray(), want.toarray())
    np.testing.assert_allclose(got.loss, expected.loss, rtol=1e-4, atol=0)  # as above
    assert got.best == expected.best


@pytest.mark.parametrize("rows", [100, 350])
def test_nb_sizes_from_a_sample_of_cells_do_not_depend_on_format_or_chunking(counts, rows):
    from sc_noise2self.diagnostics import estimate_overdispersion

    whole = estimate_overdispersion(sparse.csr_matrix(counts), max_cells=300, random_state=4)
    lazy = estimate_overdispersion(as_dask(counts, "csr", rows), max_cells=300, random_state=4)
    np.testing.assert_array_equal(lazy, whole)
    # Another seed samples other cells; every cell gives yet other sizes.
    other = estimate_overdispersion(sparse.csr_matrix(counts), max_cells=300, random_state=5)
    every = estimate_overdispersion(sparse.csr_matrix(counts), max_cells=None)
    assert not np.array_equal(other, whole) and not np.array_equal(every, whole)


def test_anndata_front_accepts_dask_counts(counts):
    import anndata as ad

    from sc_noise2self import pp, tl

    lazy = ad.AnnData(X=as_dask(counts, "csr", 400))
    eager = ad.AnnData(X=sparse.csr_matrix(counts))
    tl.calibrate_pca(lazy, max_comps=10)
    tl.calibrate_pca(eager, max_comps=10, solver="arpack")  # the dask path's Gram is exact
    for adata in (lazy, eager):
        pp.split_molecules(adata, random_state=2)
    assert isinstance(lazy.layers["noise2self_a"], da.Array)
    np.testing.assert_array_equal(lazy.layers["noise2self_a"].compute().toarray(),
                                  eager.layers["noise2self_a"].toarray())
    np.testing.assert_allclose(lazy.uns["noise2self"]["loss"], eager.uns["noise2self"]["loss"],
                               rtol=1e-6)


@pytest.mark.parametrize("chunk_type", CHUNK_TYPES)
def test_denoise_pca_on_dask_writes_scores_and_a_lazy_layer(counts, chunk_type):
    import anndata as ad

    from sc_noise2self import tl

    lazy = ad.AnnData(X=as_dask(counts, chunk_type, 400))
    eager = ad.AnnData(X=in_memory(counts, chunk_type))
    tl.denoise_pca(lazy, n_comps=6)
    tl.denoise_pca(eager, n_comps=6, solver="arpack")  # the dask path's Gram is exact
    assert isinstance(lazy.obsm["X_noise2self"], np.ndarray)  # small: computed
    assert isinstance(lazy.layers["noise2self"], da.Array)  # dense: only ever lazy
    assert lazy.uns["noise2self"]["params"]["depth"] == eager.uns["noise2self"]["params"]["depth"]
    np.testing.assert_allclose(lazy.layers["noise2self"].compute(), eager.layers["noise2self"],
                               rtol=1e-4, atol=1e-4)
    # Components agree up to sign.
    np.testing.assert_allclose(np.abs(lazy.obsm["X_noise2self"]),
                               np.abs(eager.obsm["X_noise2self"]), rtol=1e-3, atol=1e-3)


def test_many_genes_warn_about_the_gram_matrices():
    from sc_noise2self.denoisers.pca_dask import _warn_large_gram

    with pytest.warns(UserWarning, match="highly variable genes"):
        _warn_large_gram(20_000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_large_gram(2_000)


@pytest.mark.parametrize("chunk_type", CHUNK_TYPES)
def test_torch_device_path_equals_the_scipy_path(counts, chunk_type):
    pytest.importorskip("torch")
    from sc_noise2self.denoisers.pca import calibrate_pca_counts as calibrate_pca_dask

    X = as_dask(counts, chunk_type, 300)
    for p in (0.5, 0.7):  # closed-form products, and gathered rows
        expected = calibrate_pca_dask(X, max_comps=15, p=p)
        got = calibrate_pca_dask(X, max_comps=15, p=p, device="cpu")
        np.testing.assert_allclose(got.loss, expected.loss, rtol=1e-10, atol=0)
        assert got.params["device"] == "cpu"


def test_unavailable_device_is_refused(counts):
    torch = pytest.importorskip("torch")
    from sc_noise2self.denoisers.pca import calibrate_pca_counts as calibrate_pca_dask

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        calibrate_pca_dask(as_dask(counts, "csr", 500), max_comps=5, device="cuda")
