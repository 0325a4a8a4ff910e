"""The split diagnostic: correlation of the halves' noise, with the biology they share removed."""

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

from sc_noise2self import datasets, pl, split_counts
from sc_noise2self.diagnostics import half_correlations, noise_correlations

# Median over genes of the noise correlation for a split that suits the data. The neighbour
# mean never matches a cell's expression exactly; on these data that leaves about 0.01-0.02.
SUITED = 0.04


@pytest.fixture(scope="module")
def rate() -> np.ndarray:
    """Strong low-rank cell structure: 6 programs, deep cells (raw half correlations > 0.2)."""
    return datasets.synthetic_counts(1000, 300, rank=6, depth=5000,
                                     random_state=3).layers["rate"].astype(np.float64)


def draw(rate: np.ndarray, size: float, seed: int = 0) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    if np.isinf(size):
        return sparse.csr_matrix(rng.poisson(rate))
    return sparse.csr_matrix(rng.negative_binomial(size, size / (size + rate)))


@pytest.mark.parametrize(
    ("size", "split", "p"),
    [
        (np.inf, {}, 0.5),
        (np.inf, {}, 0.7),
        (2.0, {"split": "negative_binomial", "overdispersion": 2.0}, 0.5),
        (5.0, {"split": "negative_binomial", "overdispersion": 5.0}, 0.7),
    ],
    ids=["poisson-binomial", "poisson-binomial-p0.7", "nb2-nb", "nb5-nb-p0.7"],
)
def test_noise_correlation_is_zero_for_a_suited_split_where_the_raw_one_is_not(rate, size,
                                                                                split, p):
    X = draw(rate, size)
    a, b = split_counts(X, p, random_state=1, **split)
    raw = np.nanmedian(half_correlations(a, b))
    noise = noise_correlations(a, b)
    assert raw > 0.1  # the shared biology: the old statistic fails "about 0"
    assert abs(np.nanmedian(noise)) < SUITED
    assert np.mean(np.isfinite(noise)) > 0.95


@pytest.mark.parametrize("size", [2.0, 10.0])
def test_noise_correlation_of_binomial_halves_of_nb_counts_is_mu_over_mu_plus_2b(rate, size):
    X = draw(rate, size, seed=1)
    a, b = split_counts(X, 0.5, random_state=2)
    noise = noise_correlations(a, b)
    mean = np.asarray(X.mean(axis=0)).ravel()
    expected = mean / (mean + 2 * size)  # corr of NB(mu, b)'s binomial halves at p = 0.5
    assert np.nanmedian(noise) > 0.1
    assert np.nanmedian(noise - expected) == pytest.approx(0.0, abs=0.05)
    # Binomial splitting of overdispersed counts: noise correlation grows with the mean.
    low, high = np.argsort(mean)[:100], np.argsort(mean)[-100:]
    assert np.nanmedian(noise[high]) > np.nanmedian(noise[low]) + 0.2


def test_noise_correlation_sparse_equals_dense_and_needs_matching_halves(rate):
    X = draw(rate[:200, :60], 2.0)
    a, b = split_counts(X, 0.5, random_state=0)
    np.testing.assert_allclose(noise_correlations(a.toarray(), b.toarray()),
                               noise_correlations(a, b), atol=1e-10)
    with pytest.raises(ValueError, match="differ in shape"):
        noise_correlations(a, b[:, :10])


def test_split_diagnostics_draws_the_noise_statistic_by_default(rate):
    X = draw(rate[:300, :80], 2.0)
    adata = ad.AnnData(X)
    a, b = split_counts(X, 0.5, random_state=0)
    for statistic, expected in (("noise", noise_correlations(a, b)),
                                ("raw", half_correlations(a, b))):
        options = {} if statistic == "noise" else {"statistic": statistic}
        ax = pl.split_diagnostics(adata, show=False, **options)
        drawn = ax.collections[0].get_offsets()[:, 1]
        np.testing.assert_allclose(np.sort(drawn), np.sort(expected[np.isfinite(expected)]))
    with pytest.raises(ValueError, match="'noise'"):
        pl.split_diagnostics(adata, statistic="residual", show=False)


def test_noise_correlation_refuses_too_few_genes_or_cells():
    counts = np.random.default_rng(0).poisson(5, (200, 3))
    half_a, half_b = split_counts(counts, 0.5, random_state=0)
    with pytest.raises(ValueError, match="at least 4 genes"):
        noise_correlations(half_a, half_b)
    with pytest.raises(ValueError, match="at least 3 cells"):
        noise_correlations(half_a[:2], half_b[:2])


def test_overdispersion_estimate_refuses_too_few_cells():
    from sc_noise2self.diagnostics import estimate_overdispersion

    with pytest.raises(ValueError, match="at least 3 cells"):
        estimate_overdispersion(np.ones((2, 5)))


def test_split_diagnostics_refuses_dask_counts():
    da = pytest.importorskip("dask.array")
    counts = np.random.default_rng(0).poisson(2, (60, 20))
    adata = ad.AnnData(da.from_array(counts, chunks=(20, 20)))
    with pytest.raises(TypeError, match="in memory"):
        pl.split_diagnostics(adata, show=False)


@pytest.mark.parametrize("mean", ["neighbours", "gene"])
def test_compiled_moment_sums_equal_the_dense_formula(mean):
    """The sparse kernel's five sums over cells are the dense formula of the Notes.

    ``m`` is the neighbours' (or all cells') mean normalised count times the cell's size,
    ``o = m^2 - w m`` and ``e = x (x - 2 m) + o - m``. Dropping ``w m`` (m's own noise) or
    the cell's size in ``m`` moves the sums far past the tolerance.
    """
    from scipy import sparse

    from sc_noise2self import diagnostics
    from sc_noise2self._count_kernels import moment_sums

    rng = np.random.default_rng(8)
    depth = rng.lognormal(0.0, 0.6, (120, 1))
    X = sparse.csr_matrix(rng.negative_binomial(1.0, 1.0 / (1.0 + depth * rng.gamma(
        0.5, 2.0, 40))).astype(np.float64))
    X[:, 7] = 0  # a gene never seen
    X.eliminate_zeros()
    dense = X.toarray()
    size = dense.sum(axis=1) / dense.sum(axis=1).mean()
    k = X.shape[0] if mean == "gene" else 6
    if mean == "gene":
        model = diagnostics._gene_mean_model(X, size)
        expected = np.outer(size, dense.sum(axis=0) / size.sum())
        noise = np.outer(size * np.sum(1 / size) / k**2, np.ones(X.shape[1]))
    else:
        model = diagnostics._neighbour_mean_model(X, size, k)
        halves = diagnostics._gene_halves(X)
        expected, noise = np.zeros_like(dense), np.zeros_like(dense)
        for genes, other in zip(halves, halves[::-1], strict=True):
            graph = diagnostics._neighbours(X[:, other], k)
            expected[:, genes] = size[:, None] * (dense / size[:, None])[graph][
                :, :, genes].mean(axis=1)
            noise[:, genes] = (size * np.sum(1 / size[graph], axis=1) / k**2)[:, None]
    own = expected**2 - noise * expected
    excess = dense * (dense - 2 * expected) + own - expected
    want = [t.sum(axis=0) for t in (excess, own, excess**2, excess * own, own**2)]
    columns = sparse.csc_matrix(X)
    got = moment_sums(columns.data, columns.indices.astype(np.int64),
                      columns.indptr.astype(np.int64), size, *model, k)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-10, atol=1e-9)
    assert np.all(got[:, 7] == 0)


@pytest.mark.parametrize("mean", ["neighbours", "gene"])
def test_a_cell_without_molecules_does_not_hide_the_overdispersion(mean):
    # An empty cell has size 0; kept, its 1/size made every moment infinite and every gene
    # came out Poisson (inf). Fails without dropping such cells.
    from scipy import sparse

    from sc_noise2self.diagnostics import estimate_overdispersion

    rng = np.random.default_rng(3)
    means = rng.lognormal(0.5, 0.7, 200) * rng.lognormal(0.0, 0.3, (1500, 1))
    X = rng.negative_binomial(0.5, 0.5 / (0.5 + means)).astype(np.float64)
    X[7] = 0
    estimate = estimate_overdispersion(sparse.csr_matrix(X), mean=mean)
    without = estimate_overdispersion(sparse.csr_matrix(np.delete(X, 7, axis=0)), mean=mean)
    assert np.all(np.isfinite(estimate))
    np.testing.assert_allclose(estimate, without, rtol=1e-12)
    if mean == "neighbours":
        assert np.median(estimate) == pytest.approx(0.5, rel=0.2)
