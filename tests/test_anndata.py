import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from conftest import to_dense

import sc_noise2self as n2s
from sc_noise2self.calibration import CalibrationResult


@pytest.fixture
def adata(synthetic):
    return synthetic.copy()


def test_split_molecules_writes_layers_and_keeps_counts(adata):
    before = adata.X.copy()
    n2s.pp.split_molecules(adata, p=0.3, random_state=2)
    a, b = adata.layers["noise2self_a"], adata.layers["noise2self_b"]
    np.testing.assert_array_equal(to_dense(a + b), to_dense(before))
    assert (adata.X != before).nnz == 0
    assert adata.uns["noise2self_split"]["p"] == 0.3


def test_the_split_record_and_the_pca_warm_start_never_replace_each_other(adata):
    # Issue 25: both were kept in uns["noise2self_split"] under the default key, so a
    # calibration replaced the split's settings by a shape, and a later split silently
    # turned denoise_pca's warm start off. Fails with the warm start back at key + "_split".
    from sc_noise2self.denoisers.pca import load_start

    n2s.pp.split_molecules(adata, p=0.3, random_state=2)
    split = dict(adata.uns["noise2self_split"])
    n2s.tl.calibrate_pca(adata, max_comps=5)
    assert dict(adata.uns["noise2self_split"]).keys() == split.keys()
    assert adata.uns["noise2self_split"]["p"] == 0.3
    n2s.pp.split_molecules(adata, p=0.3, random_state=3)
    assert load_start(adata, "noise2self") is not None  # the warm start is still there


def test_split_molecules_copy_leaves_input_untouched(adata):
    out = n2s.pp.split_molecules(adata, copy=True)
    assert "noise2self_a" in out.layers and "noise2self_a" not in adata.layers


def test_calibrate_pca_writes_the_record(adata):
    X_before = adata.X.copy()
    assert n2s.tl.calibrate_pca(adata, max_comps=12) is None
    record = adata.uns["noise2self"]
    assert set(record) >= {"params", "grid", "loss", "best", "loss_std"}
    np.testing.assert_array_equal(record["grid"], np.arange(13))
    assert record["best"] == record["grid"][np.argmin(record["loss"])]
    assert record["params"]["max_comps"] == 12 and record["params"]["p"] == 0.7
    assert (adata.X != X_before).nnz == 0


def test_calibrate_pca_copy_returns_new_object(adata):
    out = n2s.tl.calibrate_pca(adata, max_comps=5, copy=True)
    assert isinstance(out, ad.AnnData) and out is not adata
    assert "noise2self" in out.uns and "noise2self" not in adata.uns


def test_layer_argument_reads_that_layer(adata):
    reference = n2s.tl.calibrate_pca(adata, max_comps=6, copy=True).uns["noise2self"]["loss"]
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.5  # not counts any more: the layer must be what is read
    n2s.tl.calibrate_pca(adata, max_comps=6, layer="counts")
    np.testing.assert_array_equal(adata.uns["noise2self"]["loss"], reference)
    with pytest.raises(ValueError, match="non-integer"):
        n2s.tl.calibrate_pca(adata, max_comps=6)
    with pytest.raises(KeyError, match="available: 'rate', 'counts'"):
        n2s.tl.calibrate_pca(adata, layer="raw_counts")


def test_record_survives_h5ad_round_trip(adata, tmp_path):
    n2s.tl.calibrate_pca(adata, max_comps=6, n_splits=2)
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["noise2self"]
    again = CalibrationResult.from_dict(back)
    np.testing.assert_array_equal(again.loss, adata.uns["noise2self"]["loss"])
    assert again.best == adata.uns["noise2self"]["best"]


def test_denoise_pca_calibrates_then_writes_scanpy_style(adata):
    X_before = adata.X.copy()
    n2s.tl.denoise_pca(adata, max_comps=15)
    k = adata.uns["noise2self"]["n_comps"]
    assert k == adata.uns["noise2self"]["best"]
    assert adata.obsm["X_noise2self"].shape == (adata.n_obs, k)
    assert adata.varm["noise2self_loadings"].shape == (adata.n_vars, k)
    assert adata.layers["noise2self"].shape == adata.shape
    np.testing.assert_allclose(
        adata.layers["noise2self"][:, :5], n2s.tl.denoised_values(adata, adata.var_names[:5])
    )
    assert (adata.X != X_before).nnz == 0
    sc.pp.neighbors(adata, use_rep="X_noise2self", n_neighbors=10)
    assert "connectivities" in adata.obsp


def test_denoised_layer_is_closer_to_truth_than_raw(adata):
    n2s.tl.denoise_pca(adata, max_comps=15)
    depth = adata.uns["noise2self"]["params"]["depth"]
    rate = adata.layers["rate"]
    truth = np.sqrt(rate / rate.sum(1, keepdims=True) * depth)
    raw = np.sqrt(to_dense(n2s.transforms.normalize_to_depth(adata.X, depth)))
    denoised = adata.layers["noise2self"]
    assert np.mean((denoised - truth) ** 2) < 0.5 * np.mean((raw - truth) ** 2)


def test_dense_layer_skipped_over_the_memory_limit(adata):
    with pytest.warns(UserWarning, match="denoised_values"):
        n2s.tl.denoise_pca(adata, n_comps=4, max_layer_gb=0.0)
    assert "noise2self" not in adata.layers
    assert n2s.tl.denoised_values(adata, "gene3").shape == (adata.n_obs, 1)
    with pytest.raises(KeyError, match=r"not in adata\.var_names"):
        n2s.tl.denoised_values(adata, ["no_such_gene"])


def test_denoise_pca_copy_and_given_rank(adata):
    out = n2s.tl.denoise_pca(adata, n_comps=3, copy=True)
    assert out.obsm["X_noise2self"].shape[1] == 3
    assert "X_noise2self" not in adata.obsm


def test_calibration_curve_plot(adata, tmp_path):
    import matplotlib.pyplot as plt

    n2s.tl.calibrate_pca(adata, max_comps=10, n_splits=2)
    ax = n2s.pl.calibration_curve(adata, show=False, save=str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").stat().st_size > 0
    best = adata.uns["noise2self"]["best"]
    marker_x = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]
    assert marker_x == [best]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), adata.uns["noise2self"]["loss"])
    plt.close("all")
    with pytest.raises(KeyError, match="calibrate_pca"):
        n2s.pl.calibration_curve(adata, key="missing", show=False)


def test_one_cell_anndata_is_refused():
    one = ad.AnnData(np.array([[3, 0, 5]], dtype=np.int32))
    with pytest.raises(ValueError, match="at least 2 cells"):
        n2s.tl.calibrate_pca(one)
    with pytest.raises(ValueError, match="at least 2 cells"):
        n2s.tl.denoise_pca(one)


def test_all_zero_cells_point_to_filter_cells(adata):
    X = adata.X.tolil()
    X[3, :] = 0
    adata.X = X.tocsr()
    with pytest.raises(ValueError, match=r"sc\.pp\.filter_cells"):
        n2s.tl.calibrate_pca(adata, max_comps=5)


def test_negative_binomial_split_reaches_every_family(adata):
    n2s.tl.calibrate_pca(adata, max_comps=6, split="negative_binomial", overdispersion="estimate")
    sizes = adata.var["noise2self_overdispersion"]
    assert sizes.shape == (adata.n_vars,) and np.all(sizes > 0)
    record = adata.uns["noise2self"]
    assert record["params"]["split"] == "negative_binomial"
    binomial = n2s.tl.calibrate_pca(adata, max_comps=6, split="binomial",
                                    copy=True).uns["noise2self"]["loss"]
    assert not np.allclose(record["loss"], binomial)
    # The default: the NB split at estimated sizes (None means "estimate" under it).
    default = n2s.tl.calibrate_pca(adata, max_comps=6, copy=True).uns["noise2self"]["loss"]
    np.testing.assert_array_equal(default, record["loss"])
    n2s.tl.calibrate_knn(adata, ks=[1, 5], split="negative_binomial", overdispersion=5.0)
    assert adata.uns["noise2self_knn"]["params"]["overdispersion"] == 5.0
    n2s.tl.calibrate(adata, "diffusion", param_grid={"t": [0, 2]}, split="negative_binomial",
                     overdispersion=5.0)
    with pytest.raises(ValueError, match="'negative_binomial'"):
        n2s.tl.calibrate_pca(adata, max_comps=3, split="nb")


def test_sample_ratio_reaches_calibrate_pca(adata):
    plain = n2s.tl.calibrate_pca(adata, max_comps=5, copy=True).uns["noise2self"]
    overlap = n2s.tl.calibrate_pca(adata, max_comps=5, sample_ratio=0.5, split="binomial",
                                   copy=True)
    record = overlap.uns["noise2self"]
    assert record["params"]["sample_ratio"] == 0.5
    assert not np.allclose(record["loss"], plain["loss"])


def test_sample_ratio_reaches_the_graph_families(adata):
    n2s.tl.calibrate_knn(adata, ks=[1, 5], sample_ratio=0.4, split="binomial")
    assert adata.uns["noise2self_knn"]["params"]["sample_ratio"] == 0.4
    n2s.tl.calibrate(adata, "diffusion", param_grid={"t": [0, 1]}, sample_ratio=0.4,
                     split="binomial")
    assert adata.uns["noise2self_diffusion"]["params"]["sample_ratio"] == 0.4


def test_folds_reach_the_graph_families(adata):
    n2s.tl.calibrate_knn(adata, ks=[1, 5], folds=3)
    record = adata.uns["noise2self_knn"]
    assert record["loss_per_split"].shape == (3, 2) and record["params"]["folds"] == 3
