import numpy as np
import pytest
from conftest import shared_file

from sc_noise2self import cli, datasets, tl


def test_synthetic_counts_have_known_low_rank_truth():
    a = datasets.synthetic_counts(200, 80, rank=4, depth=500, random_state=3)
    b = datasets.synthetic_counts(200, 80, rank=4, depth=500, random_state=3)
    assert a.X.dtype == np.int32 and a.X.format == "csr"
    assert (a.X != b.X).nnz == 0
    assert np.linalg.matrix_rank(a.layers["rate"].astype(float), tol=1e-3) == 4
    assert np.median(np.asarray(a.X.sum(1))) == pytest.approx(500, rel=0.15)
    assert "rate" not in datasets.synthetic_counts(20, 10, store_truth=False).layers


def test_write_synthetic_counts_appends_chunks_into_a_lazy_readable_store(tmp_path):
    import anndata as ad
    import zarr
    from anndata.experimental import read_elem_lazy

    path = datasets.write_synthetic_counts(tmp_path / "a.zarr", 250, 40, rank=3, depth=300,
                                           chunk_size=60, random_state=1)
    again = datasets.write_synthetic_counts(tmp_path / "b.zarr", 250, 40, rank=3, depth=300,
                                            chunk_size=60, random_state=1)
    adata, twin = ad.read_zarr(path), ad.read_zarr(again)
    assert adata.shape == (250, 40) and adata.X.dtype == np.int32 and adata.X.format == "csr"
    assert (adata.X != twin.X).nnz == 0  # same seed, same store
    assert np.median(np.asarray(adata.X.sum(1))) == pytest.approx(300, rel=0.2)
    assert np.median(adata.obs["library_size"]) == pytest.approx(300, rel=0.2)
    # Every chunk landed: the last rows are not empty, and the lazy read equals the eager one.
    assert np.asarray(adata.X[-60:].sum(1)).min() > 0
    lazy = read_elem_lazy(zarr.open_group(str(path), mode="r")["X"], chunks=(100, -1))
    assert (lazy.compute() != adata.X).nnz == 0
    other = ad.read_zarr(datasets.write_synthetic_counts(tmp_path / "c.zarr", 250, 40,
                                                         rank=3, depth=300, random_state=2))
    assert (other.X != adata.X).nnz > 0
    with pytest.raises(ValueError, match="chunk_size=0"):
        datasets.write_synthetic_counts(tmp_path / "d.zarr", 10, 5, chunk_size=0)


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("loader", "file", "shape"),
    [
        (datasets.paul15, "paul15.h5ad", (2730, 3451)),
        (datasets.pbmc3k, "pbmc3k_raw.h5ad", (2700, 32738)),
        (lambda: datasets.cellbench("celseq2"), "cellbench_celseq2_3cl.h5ad", (274, 28142)),
        (lambda: datasets.cellbench("dropseq"), "cellbench_dropseq_3cl.h5ad", (225, 15127)),
    ],
)
def test_real_loaders_return_integer_counts(loader, file, shape):
    shared_file(file)
    adata = loader()
    assert adata.shape == shape
    assert adata.X.dtype == np.int32 and adata.X.format == "csr"
    assert adata.X.data.min() > 0


def test_unknown_cellbench_protocol():
    with pytest.raises(ValueError, match="celseq2"):
        datasets.cellbench("10x")


@pytest.mark.shared_data
def test_paul15_curve_has_an_interior_minimum():
    shared_file("paul15.h5ad")
    adata = datasets.paul15()
    tl.calibrate_pca(adata, max_comps=60)
    record = adata.uns["noise2self"]
    print(f"paul15 chosen rank: {record['best']}")
    assert 0 < record["best"] < 60
    assert record["loss"][0] > record["loss"].min() < record["loss"][-1]


def test_cli_runs_on_embedded_synthetic_data(tmp_path, capsys, monkeypatch):
    out, plot = tmp_path / "o.h5ad", tmp_path / "c.png"
    monkeypatch.chdir(tmp_path)
    code = cli.main(["denoise", "--dataset", "synthetic", "--out", str(out),
                     "--max-comps", "30", "--plot", "c.png"])  # a bare name, as users type it
    printed = capsys.readouterr().out
    assert code == 0 and out.exists() and plot.exists()
    assert "chosen rank: " in printed and "interior minimum" in printed and "time:" in printed


def test_cli_reports_bad_input(tmp_path, capsys):
    import anndata as ad

    path = tmp_path / "bad.h5ad"
    ad.AnnData(np.array([[1.5, 2.0], [3.0, 1.0]], dtype=np.float32)).write_h5ad(path)
    assert cli.main(["denoise", str(path), "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "non-integer" in capsys.readouterr().err


def test_write_synthetic_counts_never_replaces_a_store_unless_asked(tmp_path):
    import anndata as ad

    path = datasets.write_synthetic_counts(tmp_path / "s.zarr", 30, 8, chunk_size=10)
    with pytest.raises(FileExistsError, match="exists"):
        datasets.write_synthetic_counts(path, 40, 8)
    assert ad.read_zarr(path).n_obs == 30
    datasets.write_synthetic_counts(path, 40, 8, overwrite=True)
    assert ad.read_zarr(path).n_obs == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing left beside it


def test_the_command_line_takes_the_packages_split_defaults():
    from sc_noise2self.calibration import DEFAULT_P, SplitSettings

    args = cli.build_parser().parse_args(["denoise"])
    defaults = SplitSettings()
    assert (args.loss, args.split, args.p) == (defaults.loss, defaults.split, DEFAULT_P)
    assert cli.build_parser().parse_args(["denoise", "--split", "binomial"]).split == "binomial"
