"""The atlas-scale PCA path: counter-based split, fused halves, randomized PCA, torch device.

Each claim is a property: draws that do not depend on storage, blocks or device; halves that
sum to the counts; a solver that finds the exact solver's subspace and rank; a device path
whose curves equal the numpy path's; a final fit that starts from the calibration's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse, stats

from sc_noise2self import datasets, embedding, split_counts, tl
from sc_noise2self._rng import row_stream_key
from sc_noise2self.denoisers.pca import calibrate_pca_counts
from sc_noise2self.denoisers.rank_loss import linear_mse_curve
from sc_noise2self.embedding import fit_pca, randomized_pca, resolve_solver
from sc_noise2self.losses import device_halves, prepare_halves
from sc_noise2self.splitting import half_a_values

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def counts():
    return datasets.synthetic_counts(1500, 400, rank=8, depth=400, random_state=3).X


def poisson_matrix(seed: int, shape=(400, 300), mean: float = 3.0):
    return np.random.default_rng(seed).poisson(mean, shape)


# --- the counter-based split -------------------------------------------------------------


@pytest.mark.parametrize("form", ["dense", "csr", "csc", "coo"])
def test_split_does_not_depend_on_storage(form):
    X = poisson_matrix(0)
    stored = X if form == "dense" else sparse.csr_matrix(X).asformat(form)
    a, b = split_counts(stored, 0.7, random_state=4)
    a_dense = a if form == "dense" else a.toarray()
    b_dense = b if form == "dense" else b.toarray()
    reference, _ = split_counts(X, 0.7, random_state=4)
    assert np.array_equal(a_dense, reference)
    assert np.array_equal(a_dense + b_dense, X)  # the halves sum exactly to the input
    if form != "dense":
        assert a.format == form


def test_split_of_a_row_block_is_the_split_of_those_rows():
    X = sparse.csr_matrix(poisson_matrix(1))
    key = row_stream_key(9)
    whole, _ = half_a_values(X, 0.6, key)
    top, _ = half_a_values(X[:150], 0.6, key)
    bottom, _ = half_a_values(X[150:], 0.6, key, first_row=150)
    assert np.array_equal(whole, np.concatenate([top, bottom]))


@pytest.mark.parametrize("p", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("n", [1, 4, 30, 2500])
def test_split_counts_are_binomial(p, n):
    X = np.full((400, 50), n)
    a, _ = split_counts(X, p, random_state=n)
    support = np.arange(n + 1)
    expected = stats.binom.pmf(support, n, p) * X.size
    observed = np.bincount(a.ravel(), minlength=n + 1)
    if n > 40:  # compare moments where cells of the histogram would be sparse
        assert a.mean() == pytest.approx(n * p, rel=0.01)
        assert a.var() == pytest.approx(n * p * (1 - p), rel=0.1)
        return
    keep = expected > 5
    rest = [observed[~keep].sum(), expected[~keep].sum()] if (~keep).any() else [0, 0]
    chi = stats.chisquare(np.append(observed[keep], rest[0]) if rest[1] else observed[keep],
                          np.append(expected[keep], rest[1]) if rest[1] else expected[keep])
    assert chi.pvalue > 1e-3


def test_halves_of_poisson_counts_are_uncorrelated():
    X = np.random.default_rng(2).poisson(np.random.default_rng(3).gamma(2, 2, 200), (3000, 200))
    a, b = split_counts(X, 0.5, random_state=0)
    r = [np.corrcoef(a[:, g], b[:, g])[0, 1] for g in range(200)]
    assert abs(np.mean(r)) < 3 / np.sqrt(3000 * 200)
    assert np.std(r) == pytest.approx(1 / np.sqrt(3000), rel=0.15)


def test_a_count_beyond_the_inversion_range_is_refused():
    X = sparse.csr_matrix(np.array([[3, 5_000_000]]))
    with pytest.raises(ValueError, match="at most"):
        split_counts(X, 0.5)


def test_torch_draws_equal_the_compiled_draws():
    from sc_noise2self import _count_kernels_torch as kernels

    X = sparse.csr_matrix(poisson_matrix(5, mean=2.0))
    X[3, 4] = 4000  # several inversion pieces
    key = row_stream_key(11)
    for p in (0.3, 0.8):
        compiled, _ = half_a_values(X, p, key)
        values, crow, col = kernels.csr_to_device(X, torch.device("cpu"))
        assert np.array_equal(kernels.split_values(values, crow, col, key, p).numpy(), compiled)


# --- fused halves --------------------------------------------------------------------------


@pytest.mark.parametrize("transform", ["sqrt", "none", "log1p"])
def test_fused_halves_equal_split_then_normalise(counts, transform, monkeypatch):
    from sc_noise2self import losses

    fused = prepare_halves(counts, p=0.7, transform=transform, random_state=2)
    monkeypatch.setattr(losses, "_fusable", lambda *args: False)
    plain = prepare_halves(counts, p=0.7, transform=transform, random_state=2)
    for half in ("a", "b"):
        mine, theirs = getattr(fused, half), getattr(plain, half)
        assert np.array_equal(mine.indptr, theirs.indptr)
        assert np.array_equal(mine.indices, theirs.indices)
        if transform == "log1p":  # numba's float32 log1p may differ by one unit in the last place
            np.testing.assert_allclose(mine.data, theirs.data, rtol=3e-7)
        else:
            assert np.array_equal(mine.data, theirs.data)
    assert np.array_equal(fused.totals_a, plain.totals_a)


def test_device_halves_equal_the_numpy_halves(counts):
    numpy_halves = prepare_halves(counts, p=0.7, transform="sqrt", random_state=6)
    torch_halves = device_halves(counts, p=0.7, transform="sqrt", random_state=6,
                                 depth=numpy_halves.depth, device=torch.device("cpu"))
    for half in ("a", "b"):
        mine = getattr(torch_halves, half)
        theirs = getattr(numpy_halves, half)
        assert np.array_equal(mine.values().numpy(), theirs.data)
        assert np.array_equal(mine.col_indices().numpy(), theirs.indices)
    assert torch_halves.max_value == numpy_halves.max_value


# --- the randomized solver -----------------------------------------------------------------


def principal_angle_cosines(V1: np.ndarray, V2: np.ndarray) -> np.ndarray:
    return np.linalg.svd(V1 @ V2.T, compute_uv=False)


def test_randomized_pca_finds_the_exact_subspace(counts):
    halves = prepare_halves(counts, p=0.7, transform="sqrt", random_state=0)
    exact = fit_pca(halves.a, 20, solver="arpack")
    fast = randomized_pca(halves.a, 20, seed=1)
    cosines = principal_angle_cosines(exact.components[:8], fast.components[:8])
    assert cosines.min() > 0.999  # the structured directions
    np.testing.assert_allclose(fast.mean, exact.mean, rtol=1e-5)  # float32 sums in ARPACK's
    # The scores are the exact projection on the components.
    values = halves.a.toarray() - fast.mean
    np.testing.assert_allclose(fast.scores, values @ fast.components.T, atol=2e-4)


def test_randomized_pca_is_reproducible_and_seeded(counts):
    halves = prepare_halves(counts, p=0.5, transform="sqrt", random_state=0)
    first, again = (randomized_pca(halves.a, 10, seed=3) for _ in range(2))
    assert np.array_equal(first.scores, again.scores)
    other = randomized_pca(halves.a, 10, seed=4)
    assert not np.array_equal(first.scores, other.scores)


def test_randomized_and_exact_solvers_choose_the_same_rank(counts):
    exact = calibrate_pca_counts(counts, max_comps=30, solver="arpack")
    fast = calibrate_pca_counts(counts, max_comps=30, solver="randomized")
    assert fast.best == exact.best
    # Up to past the optimum the structured components are exact; the trailing noise
    # components, which the randomized range resolves less well, differ by a few 1e-3.
    near = slice(0, exact.best + 1)
    np.testing.assert_allclose(fast.loss[near], exact.loss[near], rtol=1e-4)
    np.testing.assert_allclose(fast.loss, exact.loss, rtol=1e-2)


def test_a_warm_start_converges_in_fewer_iterations(counts):
    halves = prepare_halves(counts, p=0.7, transform="sqrt", random_state=0)
    start = randomized_pca(halves.a, 20, seed=0).components
    full = prepare_halves(counts, p=0.5, transform="sqrt", random_state=1).a
    exact = fit_pca(full, 12, solver="arpack")
    fits = {}
    for n_iter in (1, 2):
        for name, begin in (("warm", start), ("cold", None)):
            fit = randomized_pca(full, 12, seed=0, start=begin, n_iter=n_iter)
            fits[name, n_iter] = principal_angle_cosines(exact.components[:8],
                                                         fit.components[:8]).min()
    assert fits["warm", 1] > fits["cold", 1] and fits["warm", 2] > fits["cold", 2]
    assert fits["warm", 1] > 0.995 and fits["warm", 2] > 0.999


def test_auto_solver_is_randomized_only_where_the_range_is_small():
    big = sparse.random(2000, 1000, 0.05, format="csr")
    assert resolve_solver("auto", big, 100) == "randomized"
    assert resolve_solver("auto", big[:300], 100) == "arpack"  # range > a quarter of 300
    assert resolve_solver("auto", big.toarray(), 100) == "arpack"  # dense: scikit-learn
    assert resolve_solver("arpack", big, 100) == "arpack"


def test_linear_curve_from_compiled_products_matches_a_dense_computation(counts):
    halves = prepare_halves(counts, p=0.5, transform="sqrt", random_state=0)
    fit = randomized_pca(halves.a, 12, seed=0)
    curve = linear_mse_curve(fit, halves.b, 1.0)
    B = halves.b.toarray().astype(np.float64)
    scores = fit.scores.astype(np.float64)
    direct = [np.mean((fit.mean + scores[:, :k] @ fit.components[:k] - B) ** 2)
              for k in range(13)]
    np.testing.assert_allclose(curve, direct, rtol=1e-5)


# --- the torch device path, on the CPU -----------------------------------------------------

# What the device path scores (squared error on a binomial split); the defaults are refused.
DEVICE = dict(loss="mse", split="binomial")


@pytest.mark.parametrize("p", [0.5, 0.7])  # linear and non-linear conversion
def test_device_curves_equal_the_numpy_curves(counts, p):
    numpy_result = calibrate_pca_counts(counts, max_comps=25, p=p, **DEVICE)
    torch_result = calibrate_pca_counts(counts, max_comps=25, p=p, device="cpu", **DEVICE)
    np.testing.assert_allclose(torch_result.loss, numpy_result.loss, rtol=1e-4)
    assert torch_result.best == numpy_result.best


def test_device_denoising_equals_numpy_denoising(counts):
    import anndata as ad

    results = {}
    for device in (None, "cpu"):
        adata = ad.AnnData(counts.copy())
        tl.denoise_pca(adata, n_comps=10, device=device, max_layer_gb=0, progress=False)
        results[device] = adata
    V_numpy = results[None].varm["noise2self_loadings"]
    V_torch = results["cpu"].varm["noise2self_loadings"]
    cosines = principal_angle_cosines(V_numpy.T.astype(np.float64), V_torch.T.astype(np.float64))
    assert cosines.min() > 0.9999


def test_a_missing_gpu_fails_before_any_work(counts):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        calibrate_pca_counts(counts, max_comps=10, device="cuda")


def test_auto_device_without_a_gpu_is_the_numpy_path(counts):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    auto = calibrate_pca_counts(counts, max_comps=10, device="auto")
    plain = calibrate_pca_counts(counts, max_comps=10)
    assert np.array_equal(auto.loss, plain.loss)


# --- the warm start from calibrate_pca to denoise_pca --------------------------------------


def test_denoise_starts_from_the_stored_calibration(counts, monkeypatch):
    import anndata as ad

    adata = ad.AnnData(counts.copy())
    tl.calibrate_pca(adata, max_comps=20, progress=False)
    stored = adata.varm["noise2self_warm_start_loadings"]
    assert stored.shape == (adata.n_vars, 20)
    starts = []
    original = embedding.randomized_pca

    def spy(*args, **kwargs):
        starts.append(kwargs.get("start"))
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, "randomized_pca", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tl.denoise_pca(adata, max_comps=20, max_layer_gb=0, progress=False)  # reuses it
    assert len(starts) == 1 and starts[0] is not None  # one SVD, started from half A's
    np.testing.assert_allclose(starts[0], stored.T, rtol=1e-6)
    # The warm fit spans what a cold exact fit of the full counts spans.
    k = adata.uns["noise2self"]["n_comps"]
    cold = ad.AnnData(counts.copy())
    tl.denoise_pca(cold, n_comps=k, solver="arpack", max_layer_gb=0, progress=False)
    cosines = principal_angle_cosines(
        adata.varm["noise2self_loadings"].T.astype(np.float64),
        cold.varm["noise2self_loadings"].T.astype(np.float64))
    assert cosines.min() > 0.999


# --- counts too large for the device: streamed in row blocks --------------------------------


@pytest.fixture
def tiny_device(monkeypatch):
    """A device capped at 100 kB: halves made on the host, read in blocks of 256 rows."""
    from sc_noise2self.denoisers import pca_torch

    blocks = []
    original = pca_torch.RowBlocks.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        blocks.append(self.rows)

    monkeypatch.setenv("SC_NOISE2SELF_DEVICE_GB", "0.0001")
    monkeypatch.setattr(pca_torch.RowBlocks, "__init__", recording)
    return blocks


@pytest.mark.parametrize("p", [0.5, 0.7])
def test_streamed_row_blocks_give_the_curves_of_the_whole_matrix(counts, p, tiny_device):
    streamed = calibrate_pca_counts(counts, max_comps=25, p=p, device="cpu", **DEVICE)
    assert tiny_device and all(rows < counts.shape[0] for rows in tiny_device)  # streamed
    tiny_device.clear()
    numpy_result = calibrate_pca_counts(counts, max_comps=25, p=p, **DEVICE)
    np.testing.assert_allclose(streamed.loss, numpy_result.loss, rtol=1e-4)
    assert streamed.best == numpy_result.best


def test_streamed_denoising_equals_numpy_denoising(counts, tiny_device):
    import anndata as ad

    streamed = ad.AnnData(counts.copy())
    tl.denoise_pca(streamed, n_comps=10, device="cpu", max_layer_gb=0, progress=False)
    assert tiny_device  # the full counts were read in blocks
    plain = ad.AnnData(counts.copy())
    tl.denoise_pca(plain, n_comps=10, max_layer_gb=0, progress=False)
    cosines = principal_angle_cosines(
        streamed.varm["noise2self_loadings"].T.astype(np.float64),
        plain.varm["noise2self_loadings"].T.astype(np.float64))
    assert cosines.min() > 0.9999


def test_the_device_path_refuses_the_count_loss_and_nb_split_by_name(counts):
    with pytest.raises(ValueError, match="loss, split asked for more"):
        calibrate_pca_counts(counts, max_comps=5, device="cpu")


def test_a_device_cap_that_is_not_a_number_is_refused(counts, monkeypatch):
    monkeypatch.setenv("SC_NOISE2SELF_DEVICE_GB", "lots")
    with pytest.raises(ValueError, match=r"\$SC_NOISE2SELF_DEVICE_GB='lots' must be a number"):
        calibrate_pca_counts(counts, max_comps=5, device="cpu", **DEVICE)


# --- edges found in review ------------------------------------------------------------------


def test_predictions_beyond_the_conversion_table_use_its_last_value():
    from sc_noise2self.denoisers._kernels import rank_curve_sums

    table = np.linspace(0.0, 1.0, 11)  # values on 0, 0.1, ..., 1.0
    target = sparse.csr_matrix(np.array([[0.5, 0.0]]))
    mean = np.array([5.0, 7.0])  # far past the table's end (position 50 and 70 of 10)
    sums = rank_curve_sums(np.zeros((1, 1)), np.zeros((1, 2)), mean, target, table, 0.1, None)
    np.testing.assert_allclose(sums, [(1.0 - 0.5) ** 2 + 1.0] * 2, rtol=1e-6)


def test_device_halves_of_counts_with_an_empty_half():
    X = sparse.csr_matrix(np.array([[1, 0], [0, 0]]))
    halves = device_halves(X, p=0.5, transform="sqrt", random_state=0, depth=1.0,
                           device=torch.device("cpu"))
    assert halves.max_value >= 0.0
    assert halves.a.values().numel() + halves.b.values().numel() == 1


def test_device_split_refuses_what_the_cpu_split_refuses():
    X = sparse.csr_matrix(np.array([[1, 3_000_000]]))
    with pytest.raises(ValueError, match="at most 2,048,000"):
        device_halves(X, p=0.5, transform="sqrt", random_state=0, depth=1.0,
                      device=torch.device("cpu"))


def test_log1p_halves_agree_across_devices(counts):
    numpy_halves = prepare_halves(counts, p=0.3, transform="log1p", random_state=1)
    torch_halves = device_halves(counts, p=0.3, transform="log1p", random_state=1,
                                 depth=numpy_halves.depth, device=torch.device("cpu"))
    np.testing.assert_allclose(torch_halves.a.values().numpy(), numpy_halves.a.data,
                               rtol=1.2e-7, atol=0)


def test_a_subset_does_not_start_from_its_parents_components(counts):
    import anndata as ad

    from sc_noise2self.denoisers.pca import load_start

    adata = ad.AnnData(counts.copy())
    tl.calibrate_pca(adata, max_comps=10, progress=False)
    assert load_start(adata, "noise2self") is not None
    assert load_start(adata[:500].copy(), "noise2self") is None  # other cells
    assert load_start(adata[:, :300].copy(), "noise2self") is None  # other genes


def test_a_calibration_without_a_start_removes_the_older_one(counts):
    import anndata as ad

    da = pytest.importorskip("dask.array")
    adata = ad.AnnData(counts.copy())
    tl.calibrate_pca(adata, max_comps=10, progress=False)
    assert "noise2self_warm_start_loadings" in adata.varm
    adata.X = da.from_array(sparse.csr_matrix(counts), chunks=(500, -1))
    tl.calibrate_pca(adata, max_comps=10, progress=False)  # dask: no half-A components
    assert "noise2self_warm_start_loadings" not in adata.varm
    assert "noise2self_warm_start" not in adata.uns


def test_the_explicit_transpose_gives_the_products_of_the_csc_view(counts):
    from sc_noise2self.denoisers.pca_torch import OnDevice

    halves = device_halves(counts, p=0.7, transform="sqrt", random_state=0, depth=400.0,
                           device=torch.device("cpu"))
    U = torch.randn(counts.shape[0], 5, generator=torch.Generator().manual_seed(0))
    view = OnDevice(halves.a)
    copy = OnDevice(halves.a)
    copy.transposed = halves.a.t().to_sparse_csr()  # what a backend without CSC @ U uses
    torch.testing.assert_close(copy.rmatmul(U), view.rmatmul(U), rtol=1e-5, atol=1e-4)


# --- what the Leiden path holds (issue 28: peak memory against the counts) ---------------


def nb_halves(counts, **kept):
    X = sparse.csr_matrix(counts, dtype=np.float32)
    return prepare_halves(X, p=0.5, transform="log1p", random_state=4, keep_counts=True,
                          keep_a_counts=True, split="negative_binomial",
                          overdispersion=np.full(X.shape[1], 5.0), **kept)


def test_halves_for_count_losses_hold_half_b_once_and_half_a_pattern_once(counts):
    full, lean = nb_halves(counts), nb_halves(counts, keep_b_values=False)
    assert lean.b is None and full.b is not None
    # The same draws: the counts and half A's values do not change.
    for name in ("a", "a_counts", "b_counts"):
        assert (getattr(lean, name) != getattr(full, name)).nnz == 0
    # Half A's counts and values share one pattern, not one another's values.
    assert np.shares_memory(lean.a.indices, lean.a_counts.indices)
    assert not np.shares_memory(lean.a.data, lean.a_counts.data)
    with pytest.raises(ValueError, match="keep_b_values=False"):
        prepare_halves(sparse.csr_matrix(counts), p=0.5, transform="log1p", random_state=0,
                       keep_b_values=False)


def test_the_leiden_loss_is_the_same_without_half_b_values(counts):
    from dataclasses import replace

    from sc_noise2self.calibration import calibrate_counts
    from sc_noise2self.denoisers.leiden import LEIDEN

    seen = []

    def spying(family):
        def score(halves, *args, **kwargs):
            seen.append((family.scores_b_values, halves.b is None))
            return family.score(halves, *args, **kwargs)
        return replace(family, score=score)

    results = [calibrate_counts(counts, spying(family),
                                settings=LEIDEN.default_settings(random_state=0),
                                resolutions=[0.3, 1.0], n_comps=10, refine=False)
               for family in (LEIDEN, replace(LEIDEN, scores_b_values=True))]
    assert seen == [(False, True), (True, False)]  # the Leiden family skips half B's values
    np.testing.assert_array_equal(results[0].loss, results[1].loss)


def test_deviance_targets_keep_half_b_counts_without_a_copy(counts):
    from dataclasses import replace

    from sc_noise2self.denoisers.cluster_loss import DevianceTargets, partition_deviances

    halves = nb_halves(counts, keep_b_values=False)
    targets = DevianceTargets.of(halves.a_counts, halves.b_counts, halves.totals_a, 0.5)
    assert np.shares_memory(targets.observed, halves.b_counts.data)
    # Some cells' targets are those of their rows alone, with the population's rates.
    cells = np.sort(np.random.default_rng(0).choice(counts.shape[0], 300, replace=False))
    local = targets.of_cells(cells)
    alone = DevianceTargets.of(halves.a_counts[cells], halves.b_counts[cells],
                               halves.totals_a[cells], 0.5)
    for name in ("indptr", "genes", "observed", "own_a", "constant", "totals"):
        np.testing.assert_array_equal(getattr(local, name), getattr(alone, name))
    np.testing.assert_array_equal(local.gene_sums, targets.gene_sums)
    labels = np.random.default_rng(1).integers(0, 3, cells.size)
    np.testing.assert_array_equal(partition_deviances(labels, local),
                                  partition_deviances(labels, replace(
                                      alone, gene_sums=targets.gene_sums, prior=targets.prior)))
