import numpy as np
import pytest
import scprep
from conftest import as_format, to_dense
from scipy import sparse

from sc_noise2self.transforms import (
    DepthConversion,
    apply_transform,
    expected_transform,
    library_sizes,
    normalize_to_depth,
)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc", "coo"])
def test_normalisation_matches_scprep_and_keeps_input(counts, fmt):
    X = as_format(counts, fmt)
    before = to_dense(X).copy()
    target = float(np.median(library_sizes(X)))
    ours = to_dense(normalize_to_depth(X, target))
    theirs = scprep.normalize.library_size_normalize(counts.astype(float), rescale=target)
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5)
    np.testing.assert_array_equal(to_dense(X), before)


@pytest.mark.parametrize("block", [5, 25])
def test_rows_scaled_in_blocks_as_at_once(monkeypatch, block):
    from sc_noise2self import transforms

    rng = np.random.default_rng(1)
    dense = (rng.poisson(2.0, size=(120, 30)) * (rng.random((120, 30)) < 0.4)).astype(np.float32)
    dense[7] = 0  # an empty row inside a block
    X = sparse.csr_matrix(dense)
    expected = dense * (50.0 / np.maximum(dense.sum(axis=1), 1))[:, None].astype(np.float32)
    # Rows hold about 10 values: blocks of 5 leave every row alone, blocks of 25 hold a few
    # rows and end inside one.
    monkeypatch.setattr(transforms, "_SCALE_BLOCK", block)
    np.testing.assert_array_equal(normalize_to_depth(X, 50.0).toarray(), expected)
    np.testing.assert_array_equal(X.toarray(), dense)


def test_zero_cells_stay_zero():
    X = np.array([[0, 0], [1, 3]])
    np.testing.assert_array_equal(normalize_to_depth(X, 8.0), [[0, 0], [2, 6]])


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("name", ["sqrt", "log1p", "none"])
def test_transforms_are_elementwise_and_keep_sparsity(counts, fmt, name):
    X = as_format(counts.astype(np.float32), fmt)
    out = apply_transform(X, name)
    func = {"sqrt": np.sqrt, "log1p": np.log1p, "none": lambda x: x}[name]
    np.testing.assert_allclose(to_dense(out), func(counts.astype(np.float32)), rtol=1e-6)
    np.testing.assert_array_equal(to_dense(X), counts)


@pytest.mark.parametrize("name", ["sqrt", "log1p"])
def test_expected_transform_matches_monte_carlo(name):
    rng = np.random.default_rng(0)
    mu = np.array([0.05, 0.5, 2.0, 20.0, 1500.0])
    draws = rng.poisson(mu, size=(400_000, mu.size))
    func = np.sqrt if name == "sqrt" else np.log1p
    mc = func(draws).mean(axis=0)
    se = func(draws).std(axis=0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(expected_transform(mu, name) - mc) < 5 * se + 1e-9)


def test_delta_method_joins_the_exact_series_smoothly():
    mu = np.array([999.0, 1000.0, 1000.5, 1001.0])
    values = expected_transform(mu, "sqrt")
    np.testing.assert_allclose(np.diff(values), np.diff(np.sqrt(mu)), rtol=1e-3)


@pytest.mark.parametrize("name", ["sqrt", "log1p"])
@pytest.mark.parametrize(("a", "b"), [(0.9, 0.1), (0.3, 0.7)])
def test_depth_conversion_moves_expectations(name, a, b):
    lam = np.geomspace(0.01, 300, 50)
    conversion = DepthConversion(name, a, b)
    y_a = expected_transform(lam * a, name)
    y_b = expected_transform(lam * b, name)
    np.testing.assert_allclose(conversion.convert(y_a), y_b, rtol=2e-3)
    np.testing.assert_allclose(conversion.to_mean(y_a), lam * a, rtol=5e-3)


def test_linear_conversions():
    assert DepthConversion("sqrt", 0.5, 0.5).scale == 1.0
    assert DepthConversion("none", 0.8, 0.2).scale == pytest.approx(0.25)
    assert not DepthConversion("log1p", 0.8, 0.2).is_linear
    with pytest.raises(ValueError, match="non-linear"):
        _ = DepthConversion("sqrt", 0.8, 0.2).scale


def test_unknown_transform_is_refused():
    with pytest.raises(ValueError, match="'sqrt'"):
        apply_transform(np.ones((2, 2)), "arcsinh")
