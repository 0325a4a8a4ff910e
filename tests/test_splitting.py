import numpy as np
import pytest
from conftest import FORMATS, as_format, to_dense
from scipy import sparse

from sc_noise2self import split_counts

DTYPES = (np.int32, np.int64, np.float32, np.float64)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_halves_sum_exactly_and_keep_type(counts, fmt, dtype):
    X = as_format(counts.astype(dtype), fmt)
    Xa, Xb = split_counts(X, 0.5, random_state=3)
    for half in (Xa, Xb):
        assert type(half) is type(X)
        assert half.dtype == X.dtype
        if sparse.issparse(X):
            assert half.format == X.format
    np.testing.assert_array_equal(to_dense(Xa) + to_dense(Xb), counts.astype(dtype))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparsity_kept_and_no_explicit_zeros(counts, fmt):
    X = as_format(counts, fmt)
    X_pattern = to_dense(X) != 0
    for half in split_counts(X, 0.5, random_state=0):
        assert half.nnz <= X.nnz
        assert np.all(half.data != 0)
        assert not np.any((to_dense(half) != 0) & ~X_pattern)


def test_explicit_zeros_and_duplicates_in_input():
    X = sparse.coo_matrix(([0, 3, 4, 5], ([0, 0, 1, 1], [0, 1, 2, 2])), shape=(2, 3))
    Xa, Xb = split_counts(X, 0.4, random_state=1)
    np.testing.assert_array_equal(to_dense(Xa) + to_dense(Xb), X.toarray())
    assert Xa.nnz + Xb.nnz <= 4 and np.all(Xa.data != 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_same_bits_other_seed_differs(counts, fmt):
    X = as_format(counts, fmt)
    a1, _ = split_counts(X, random_state=7)
    a2, _ = split_counts(X, random_state=7)
    a3, _ = split_counts(X, random_state=8)
    np.testing.assert_array_equal(to_dense(a1), to_dense(a2))
    if sparse.issparse(a1):
        np.testing.assert_array_equal(a1.data, a2.data)
    assert not np.array_equal(to_dense(a1), to_dense(a3))


@pytest.mark.parametrize("fmt", FORMATS)
def test_input_not_modified(counts, fmt):
    X = as_format(counts.astype(np.float32), fmt)
    before = to_dense(X).copy()
    split_counts(X, 0.3, random_state=0)
    np.testing.assert_array_equal(to_dense(X), before)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_poisson_halves_have_share_p_and_are_uncorrelated(p):
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(rng.poisson(3.0, size=(2000, 500)))
    Xa, Xb = split_counts(X, p, random_state=1)
    assert Xa.sum() / X.sum() == pytest.approx(p, abs=0.005)
    corr = np.corrcoef(to_dense(Xa).ravel(), to_dense(Xb).ravel())[0, 1]
    assert abs(corr) < 0.01
    # A half and the whole ARE correlated, with corr = sqrt(p) for Poisson counts.
    corr_with_x = np.corrcoef(to_dense(Xa).ravel(), to_dense(X).ravel())[0, 1]
    assert corr_with_x == pytest.approx(np.sqrt(p), abs=0.01)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([[1, -1], [2, 3]], "negative"),
        ([[1.5, 1], [2, 3]], "non-integer"),
        ([[np.nan, 1], [2, 3]], "NaN"),
        ([[np.inf, 1], [2, 3]], "NaN or infinite"),
    ],
)
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_bad_counts_are_refused_with_a_hint(values, message, fmt):
    X = as_format(np.array(values, dtype=float), fmt)
    with pytest.raises(ValueError, match=message) as info:
        split_counts(X)
    assert "layers['counts']" in str(info.value)


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.5, "half"])
def test_p_outside_unit_interval_is_refused(counts, p):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_counts(counts, p)


def test_unknown_method_lists_known_ones(counts):
    with pytest.raises(ValueError, match="'binomial'"):
        split_counts(counts, split="poisson-ish")


def nb_counts(n_cells=3000, mu=5.0, size=1.0, n_genes=50, seed=0):
    """NB counts with one mean and size for every entry: no signal, pure overdispersed noise."""
    rng = np.random.default_rng(seed)
    return rng.negative_binomial(size, size / (size + mu), size=(n_cells, n_genes))


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_binomial_halves_sum_exactly(counts, fmt):
    X = as_format(counts, fmt)
    Xa, Xb = split_counts(X, 0.4, split="negative_binomial", overdispersion=2.0, random_state=1)
    np.testing.assert_array_equal(to_dense(Xa) + to_dense(Xb), counts)
    assert type(Xa) is type(X)


def test_beta_binomial_split_decorrelates_nb_counts_where_binomial_does_not():
    mu, size = 5.0, 1.0
    X = sparse.csr_matrix(nb_counts(mu=mu, size=size))
    a, b = split_counts(X, 0.5, random_state=2)
    binomial_corr = np.corrcoef(to_dense(a).ravel(), to_dense(b).ravel())[0, 1]
    assert binomial_corr == pytest.approx(mu / (mu + 2 * size), abs=0.03)
    a, b = split_counts(X, 0.5, split="negative_binomial", overdispersion=size, random_state=2)
    assert abs(np.corrcoef(to_dense(a).ravel(), to_dense(b).ravel())[0, 1]) < 0.02


def test_beta_binomial_halves_have_nb_margins():
    mu, size, p = 4.0, 2.0, 0.7
    a, _ = split_counts(nb_counts(mu=mu, size=size), p, split="negative_binomial",
                        overdispersion=size, random_state=3)
    assert a.mean() == pytest.approx(p * mu, rel=0.02)
    expected_var = p * mu + (p * mu) ** 2 / (p * size)
    assert a.var() == pytest.approx(expected_var, rel=0.05)


def test_overdispersion_estimate_recovers_known_size():
    from sc_noise2self.diagnostics import estimate_overdispersion

    rng = np.random.default_rng(4)
    mu = rng.lognormal(1.0, 0.7, size=200)
    library = rng.lognormal(0.0, 0.3, size=2000)[:, None]
    means = library * mu
    X = rng.negative_binomial(2.0, 2.0 / (2.0 + means))
    estimate = estimate_overdispersion(sparse.csr_matrix(X))
    assert np.median(estimate) == pytest.approx(2.0, rel=0.15)
    poisson = estimate_overdispersion(sparse.csr_matrix(rng.poisson(means)))
    assert np.median(1 / poisson) < 0.05  # nearly no overdispersion found in Poisson data


def test_overdispersion_estimate_keeps_genes_that_truly_differ_apart():
    """Shrinkage pulls noisy genes together, but not genes whose sizes really differ."""
    from sc_noise2self.diagnostics import estimate_overdispersion

    rng = np.random.default_rng(5)
    means = rng.lognormal(0.5, 1.0, 300) * rng.lognormal(0.0, 0.3, (2000, 1))
    sizes = np.where(np.arange(300) % 2, 0.5, 5.0)
    estimate = estimate_overdispersion(sparse.csr_matrix(
        rng.negative_binomial(sizes, sizes / (sizes + means))))
    assert np.median(estimate[1::2]) == pytest.approx(0.5, rel=0.2)
    assert np.median(estimate[0::2]) == pytest.approx(5.0, rel=0.2)


def test_overdispersion_of_the_most_expressed_genes_is_not_hidden_by_their_neighbours():
    """Neighbours found from a gene's own noisy values share that noise and hide its excess.

    On low-rank NB data the most expressed genes, which drive the neighbour search, must come
    out near the true size like the rest (with neighbours from all genes they came out 60%
    too high).
    """
    from sc_noise2self import datasets
    from sc_noise2self.diagnostics import estimate_overdispersion

    size = 0.5
    rate = datasets.synthetic_counts(1500, 400, rank=6, depth=2000,
                                     random_state=1).layers["rate"].astype(float)
    rng = np.random.default_rng(11)
    X = sparse.csr_matrix(rng.negative_binomial(size, size / (size + rate)))
    estimate = estimate_overdispersion(X)
    top = np.argsort(-np.asarray(X.mean(axis=0)).ravel())[:40]
    assert np.median(estimate[top]) == pytest.approx(size, rel=0.25)
    assert np.median(estimate) == pytest.approx(size, rel=0.25)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": "negative_binomial"}, "needs overdispersion"),
        ({"overdispersion": 2.0}, "negative_binomial' only"),
        ({"split": "negative_binomial", "overdispersion": -1.0}, "positive"),
        ({"split": "negative_binomial", "overdispersion": "guess"}, "'estimate'"),
    ],
)
def test_bad_overdispersion_options(counts, options, message):
    with pytest.raises(ValueError, match=message):
        split_counts(counts, **options)


@pytest.mark.parametrize(("p", "r"), [(0.5, 0.3), (0.7, 0.8)])
def test_overlap_correction_matches_its_shares(p, r):
    from sc_noise2self.splitting import overlap_shares

    only_a, only_b, both = overlap_shares(p, r)
    assert only_a + only_b + both == pytest.approx(1.0)
    # The shares are those of two independent draws conditioned on being observed.
    a_rate = (only_a + both) * r
    b_rate = (only_b + both) * r
    assert both * r == pytest.approx(a_rate * b_rate)
    assert a_rate / (a_rate + b_rate) == pytest.approx(p, rel=1e-9)
    X = sparse.csr_matrix(np.full((400, 500), 20))
    Xa, Xb = split_counts(X, p, sample_ratio=r, random_state=0)
    total = X.sum()
    overlap = (Xa + Xb - X).sum()
    assert overlap / total == pytest.approx(both, abs=0.003)
    assert (Xa.sum() - overlap) / total == pytest.approx(only_a, abs=0.003)
    assert np.all(to_dense(Xa) <= 20) and np.all(to_dense(Xa + Xb) >= 20)


def test_no_sample_ratio_is_plain_splitting(counts):
    plain = split_counts(counts, 0.6, random_state=9)
    for ratio in (None, 0):
        same = split_counts(counts, 0.6, random_state=9, sample_ratio=ratio)
        np.testing.assert_array_equal(same[0], plain[0])


def test_split_diagnostics_show_the_binomial_split_correlating_nb_halves():
    import anndata as ad

    import sc_noise2self as n2s
    from sc_noise2self.diagnostics import half_correlations

    X = sparse.csr_matrix(nb_counts(mu=5.0, size=1.0))
    a, b = split_counts(X, 0.5, random_state=1)
    assert np.nanmedian(half_correlations(a, b)) > 0.5
    a, b = split_counts(X, 0.5, split="negative_binomial", overdispersion=1.0, random_state=1)
    assert abs(np.nanmedian(half_correlations(a, b))) < 0.05
    dense = half_correlations(a.toarray(), b.toarray())
    np.testing.assert_allclose(dense, half_correlations(a, b), atol=1e-10)
    ax = n2s.pl.split_diagnostics(ad.AnnData(X), show=False)
    assert len(ax.collections[0].get_offsets()) == X.shape[1]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method", ["binomial", "negative_binomial"])
def test_folds_sum_exactly(counts, fmt, method):
    from sc_noise2self.splitting import split_folds

    X = as_format(counts.astype(np.int32), fmt)
    options = {"overdispersion": 2.0} if method == "negative_binomial" else {}
    folds = split_folds(X, 4, split=method, random_state=3, **options)
    assert len(folds) == 4 and all(type(f) is type(X) for f in folds)
    np.testing.assert_array_equal(sum(to_dense(f) for f in folds), counts)


def test_folds_have_equal_shares_and_nb_folds_decorrelate():
    from sc_noise2self.splitting import split_folds

    X = nb_counts(mu=6.0, size=1.5, n_cells=2000, n_genes=40)
    poisson_folds = split_folds(X, 3, random_state=1)
    for fold in poisson_folds:
        assert fold.mean() == pytest.approx(X.mean() / 3, rel=0.03)
    nb_folds = split_folds(X, 3, split="negative_binomial", overdispersion=1.5, random_state=1)
    assert abs(np.corrcoef(nb_folds[0].ravel(), nb_folds[1].ravel())[0, 1]) < 0.03
    assert np.corrcoef(poisson_folds[0].ravel(), poisson_folds[1].ravel())[0, 1] > 0.3
    with pytest.raises(ValueError, match="at least 2"):
        split_folds(X, 1)


@pytest.mark.parametrize("size", [0.02, 0.5, 40.0])
def test_beta_binomial_split_is_right_for_tiny_and_large_sizes(size):
    # The beta shares come from counter-based gamma variates (logs below shape 1, so tiny
    # shapes do not underflow): halves decorrelated, each with its share of the mean.
    mu, p = 6.0, 0.7
    X = sparse.csr_matrix(nb_counts(mu=mu, size=size))
    a, b = split_counts(X, p, split="negative_binomial", overdispersion=size, random_state=4)
    a, b = to_dense(a).ravel(), to_dense(b).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03
    assert a.sum() / X.sum() == pytest.approx(p, abs=0.02)
    assert a.var() == pytest.approx(p * mu + (p * mu) ** 2 / (p * size), rel=0.15)


@pytest.mark.parametrize("sample_ratio", [None, 0.6])
def test_sparse_halves_own_arrays_of_their_own_size_and_match_dense_ones(sample_ratio):
    # Deep counts: each half keeps most entries, where dropping the zeros of a copied
    # pattern leaves arrays at the input's size (scipy trims only below half).
    rng = np.random.default_rng(0)
    dense = rng.poisson(8.0, size=(60, 40)) * (rng.random((60, 40)) < 0.7)
    dense_halves = split_counts(dense, 0.5, random_state=5, sample_ratio=sample_ratio)
    sparse_halves = split_counts(sparse.csr_matrix(dense), 0.5, random_state=5,
                                 sample_ratio=sample_ratio)
    for half, expected in zip(sparse_halves, dense_halves, strict=True):
        np.testing.assert_array_equal(half.toarray(), expected)
        assert half.has_canonical_format and np.all(half.data != 0)
        for array in (half.data, half.indices):
            owner = array if array.base is None else array.base
            assert owner.nbytes == array.nbytes
