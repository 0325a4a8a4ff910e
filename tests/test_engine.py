"""The one engine (issue 14): records, options that reach every family, streams, the referee."""

from __future__ import annotations

import inspect
import json

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self import tl
from sc_noise2self.calibration import (
    CalibrationResult,
    Family,
    Knob,
    SplitSettings,
    calibrate_callable_counts,
    calibrate_counts,
)
from sc_noise2self.datasets import synthetic_counts

FAMILY_OPTIONS = {
    "pca": {"max_comps": 6},
    "knn": {"ks": [1, 3, 5]},
    "diffusion": {"t_max": 3},
    "autoencoder": {"widths": [2, 4], "max_epochs": 3, "hidden": (16,), "device": "cpu"},
}


@pytest.fixture(scope="module")
def small():
    adata = synthetic_counts(120, 40, rank=3, depth=400, random_state=1, store_truth=False)
    return adata


def test_splitting_a_half_again_with_the_same_seed_draws_new_uniforms():
    X = np.random.default_rng(0).poisson(1000, size=(400, 60))
    half_a, _ = n2s.split_counts(X, 0.5, random_state=0)
    again_a, _ = n2s.split_counts(half_a, 0.5, random_state=0)
    first = (half_a - 0.5 * X).ravel()
    second = (again_a - 0.5 * half_a).ravel()
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.02
    # ... while the same call stays bit-identical, dense or sparse.
    repeat_a, _ = n2s.split_counts(sparse.csr_matrix(X), 0.5, random_state=0)
    np.testing.assert_array_equal(repeat_a.toarray(), half_a)


def test_split_purposes_get_different_streams():
    from sc_noise2self._rng import row_stream_key

    keys = {tuple(row_stream_key(0, purpose)) for purpose in ("split", "folds", "thin")}
    assert len(keys) == 3
    np.testing.assert_array_equal(row_stream_key(0, "split"), row_stream_key(0, "split"))


@pytest.mark.parametrize("method", list(FAMILY_OPTIONS))
def test_an_engine_option_reaches_every_family(small, method):
    # sample_ratio is declared once, in SplitSettings; every generated front takes it.
    for prefix in ("calibrate", "denoise"):
        assert "sample_ratio" in inspect.signature(getattr(tl, f"{prefix}_{method}")).parameters
    plain = tl.calibrate(small, method, copy=True, key_added="k", split="binomial",
                         **FAMILY_OPTIONS[method])
    overlap = tl.calibrate(small, method, copy=True, key_added="k", sample_ratio=0.5,
                           split="binomial", **FAMILY_OPTIONS[method])
    assert plain.uns["k"]["params"]["sample_ratio"] == "None"
    assert overlap.uns["k"]["params"]["sample_ratio"] == 0.5
    # The overlap split gives other halves, hence another curve.
    assert not np.allclose(plain.uns["k"]["loss"], overlap.uns["k"]["loss"])


def test_denoise_pca_takes_every_split_option(small):
    parameters = inspect.signature(tl.denoise_pca).parameters
    for name in SplitSettings.names():
        assert name in parameters, name


def test_a_new_family_is_one_record(small):
    def score(halves, grid, seed, options, loss, *, progress=None):
        a = halves.a.toarray() if sparse.issparse(halves.a) else halves.a
        target = halves.b.toarray() if sparse.issparse(halves.b) else halves.b
        mean = a.mean(axis=0) * halves.conversion.scale
        converted = halves.conversion.convert(a)
        return np.array([np.mean((w * converted + (1 - w) * mean - target) ** 2) for w in grid])

    def weights(values, shape, options):
        return np.asarray(values, dtype=float)

    shrink = Family(name="shrink", grid=Knob("weight", "weights", (0.0, 0.5, 1.0), weights),
                    score=score, fit=None, store=None, values=None)
    result = calibrate_counts(small.X, shrink, p=0.5)
    assert result.param == "weight" and result.loss.shape == (3,)
    # Shrinking noisy cells towards the gene means beats keeping them as they are.
    assert result.best < 1.0
    with pytest.raises(ValueError, match=r"p=1\.5"):
        calibrate_counts(small.X, shrink, p=1.5)
    with pytest.raises(TypeError, match="Unexpected option"):
        calibrate_counts(small.X, shrink, widths=[1])


def test_families_without_a_dask_backend_refuse_dask_clearly(small):
    da = pytest.importorskip("dask.array")
    X = da.from_array(small.X.toarray(), chunks=(40, -1))
    with pytest.raises(ValueError, match="needs the counts in memory"):
        tl.calibrate_knn(ad.AnnData(X), ks=[1, 2])


def test_a_nan_loss_never_wins(small):
    def flaky(values, k):
        values = values.toarray() if sparse.issparse(values) else np.asarray(values)
        out = np.repeat(values.mean(axis=0, keepdims=True), values.shape[0], axis=0) * k
        return np.full_like(out, np.nan) if k == 2 else out

    with pytest.warns(UserWarning, match=r"k=\[2\] gave a non-finite"):
        result = calibrate_callable_counts(small.X, flaky, {"k": [1, 2, 3]})
    assert np.isnan(result.loss[1]) and result.best != 2
    assert list(result.failed) == [1]
    with pytest.raises(ValueError, match="No setting gave a finite"):
        calibrate_callable_counts(small.X, lambda v, k: np.full(v.shape, np.nan), {"k": [1, 2]})


def test_results_round_trip_through_json_and_h5ad(small, tmp_path):
    adata = tl.calibrate(small, "pca", copy=True, max_comps=5, n_splits=2)
    result = CalibrationResult.from_dict(adata.uns["noise2self"])
    again = CalibrationResult.from_json(json.dumps(json.loads(result.to_json())))
    np.testing.assert_array_equal(again.loss_per_split, result.loss_per_split)
    assert again.best == result.best and again.params["n_splits"] == 2
    adata.write_h5ad(tmp_path / "a.h5ad")
    read = CalibrationResult.from_dict(ad.read_h5ad(tmp_path / "a.h5ad").uns["noise2self"])
    np.testing.assert_allclose(read.loss, result.loss)
    assert read.params["sample_ratio"] is None


def test_denoise_after_calibrate_reuses_the_stored_calibration(small, monkeypatch):
    adata = small.copy()
    tl.calibrate_pca(adata, max_comps=6)
    calls = []
    original = tl.calibrate_counts
    monkeypatch.setattr(tl, "calibrate_counts", lambda *a, **k: calls.append(1) or original(
        *a, **k))
    tl.denoise_pca(adata, max_comps=6)
    assert calls == [] and adata.uns["noise2self"]["n_comps"] >= 1
    tl.denoise_pca(adata, max_comps=5)  # other settings: calibrates again
    assert calls == [1]


def test_rows_with_no_counts_anywhere_split_like_the_rest():
    X = np.random.default_rng(3).poisson(2.0, size=(30, 12))
    X[[0, 7, 8, 29]] = 0  # empty rows first, in a run, and last
    dense_a, dense_b = n2s.split_counts(X, 0.3, random_state=5)
    sparse_a, _ = n2s.split_counts(sparse.csc_matrix(X), 0.3, random_state=5)
    np.testing.assert_array_equal(dense_a + dense_b, X)
    np.testing.assert_array_equal(sparse_a.toarray(), dense_a)
    assert not dense_a[[0, 7, 8, 29]].any()


def test_the_referee_grades_every_calibration_against_the_gene_means(small):
    from sc_noise2self.losses import baseline_loss, column_means, prepare_halves

    # PCA's rank 0 is the baseline itself: reading it off the curve equals scoring it.
    result = calibrate_counts(small.X, tl.FAMILIES["pca"], max_comps=5, p=0.5, loss="mse",
                              split="binomial")
    halves = prepare_halves(small.X, p=0.5, transform="sqrt",
                            random_state=n2s._rng.spawn_seeds(0, 1)[0])
    scored = baseline_loss(column_means(halves.a), halves, "mse")
    assert result.params["baseline_loss"] == pytest.approx(scored, rel=1e-7)  # closed form
    assert result.params["baseline_loss"] == pytest.approx(result.loss[0], rel=1e-12)

    # A denoiser that only adds noise loses to the baseline, and the user is told so.
    def noisy(values, scale):
        values = values.toarray() if sparse.issparse(values) else np.asarray(values)
        return values + np.random.default_rng(0).normal(0, scale, values.shape)

    with pytest.warns(UserWarning, match="no better than .* gene-mean baseline"):
        lost = calibrate_callable_counts(small.X, noisy, {"scale": [1.0, 2.0]})
    assert lost.loss.min() > lost.params["baseline_loss"]


def test_progress_bars_follow_the_flag_and_scanpys_verbosity(small, capfd, monkeypatch):
    import scanpy as sc

    from sc_noise2self import _progress

    tl.calibrate_pca(small, max_comps=4, n_splits=2, progress=True, copy=True)
    assert "pca: splits" in capfd.readouterr().err
    tl.calibrate_pca(small, max_comps=4, n_splits=2, progress=False, copy=True)
    assert "splits" not in capfd.readouterr().err
    monkeypatch.setattr(_progress, "_interactive", lambda: True)  # as on a terminal
    before = sc.settings.verbosity
    try:
        sc.settings.verbosity = "warning"
        assert not _progress.shows_progress(None)
        sc.settings.verbosity = "info"
        assert _progress.shows_progress(None)
        tl.calibrate_pca(small, max_comps=4, n_splits=2, copy=True)
        assert "pca: splits" in capfd.readouterr().err
    finally:
        sc.settings.verbosity = before


def test_a_best_at_the_largest_grid_value_is_flagged(small):
    def shrink(values, weight):
        values = values.toarray() if sparse.issparse(values) else np.asarray(values)
        return (1 - weight) * values + weight * values.mean(axis=0)

    with pytest.warns(UserWarning, match="largest weight scored"):
        calibrate_callable_counts(small.X, shrink, {"weight": [0.0, 0.1, 0.2]})
