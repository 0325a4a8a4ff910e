"""Bad and edge inputs against the public API: each gets a clear error or a correct result.

Every case names what it passes and the exact outcome class: the exception type and a
pattern that the message must contain (the argument's name, the problem, or the fix), or
``None`` with a check of the result. Counts, AnnData and the command line are here; images,
CNNs and model files follow below them.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self import cli, tl
from sc_noise2self.calibration import calibrate_callable_counts

RNG = np.random.default_rng(0)
COUNTS = RNG.poisson(RNG.gamma(2.0, 1.0, (80, 1)) * RNG.gamma(1.0, 2.0, (1, 25))) + \
    (np.arange(25) == 0)  # every cell has a count
FLOATS = COUNTS.astype(np.float64)


def adata_of(X=None, **layers) -> ad.AnnData:
    return ad.AnnData(sparse.csr_matrix(COUNTS if X is None else X).astype(np.float32),
                      layers=layers or None)


def normalised() -> ad.AnnData:
    a = adata_of()
    a.X = sparse.csr_matrix(np.log1p(COUNTS / COUNTS.sum(1, keepdims=True) * 1e4))
    return a


def warned(pattern: str, function, *args, **kwargs):
    """``function(*args, **kwargs)``, checking that it warns with ``pattern``."""
    with pytest.warns(UserWarning, match=pattern):
        return function(*args, **kwargs)


def backed(tmp_path) -> ad.AnnData:
    adata_of().write_h5ad(tmp_path / "b.h5ad")
    return ad.read_h5ad(tmp_path / "b.h5ad", backed="r")


# (id, function of tmp_path, expected exception or None, message pattern or a check)
SPLIT_CASES = [
    ("p=0", lambda t: n2s.split_counts(COUNTS, 0.0), ValueError, "p=0.0 must lie strictly"),
    ("p=1", lambda t: n2s.split_counts(COUNTS, 1.0), ValueError, "p=1.0"),
    ("p=nan", lambda t: n2s.split_counts(COUNTS, float("nan")), ValueError, "p=nan"),
    ("p='0.5'", lambda t: n2s.split_counts(COUNTS, "0.5"), ValueError, "p='0.5'"),
    ("p=True", lambda t: n2s.split_counts(COUNTS, True), ValueError, "p=True"),
    ("p=-0.2", lambda t: n2s.split_counts(COUNTS, -0.2), ValueError, "strictly between 0"),
    ("method", lambda t: n2s.split_counts(COUNTS, method="poisson"), ValueError,
     "Unknown method='poisson'"),
    ("random_state='abc'", lambda t: n2s.split_counts(COUNTS, random_state="abc"), TypeError,
     "random_state='abc' is not a seed"),
    ("random_state=1.5", lambda t: n2s.split_counts(COUNTS, random_state=1.5), TypeError,
     "random_state=1.5"),
    ("random_state=-1", lambda t: n2s.split_counts(COUNTS, random_state=-1), ValueError,
     "non-negative"),
    ("random_state=True", lambda t: n2s.split_counts(COUNTS, random_state=True), TypeError,
     "random_state=True"),
    ("1-D counts", lambda t: n2s.split_counts(COUNTS[0]), ValueError, "1 dimension"),
    ("3-D counts", lambda t: n2s.split_counts(COUNTS[None]), ValueError, "3 dimension"),
    ("a list", lambda t: n2s.split_counts([[1, 2], [3, 4]]), TypeError, "X is a list"),
    ("a string", lambda t: n2s.split_counts("counts.h5ad"), TypeError, "X is a str"),
    ("negative counts", lambda t: n2s.split_counts(COUNTS - 5), ValueError, "negative"),
    ("NaN counts", lambda t: n2s.split_counts(np.where(COUNTS > 3, np.nan, FLOATS)),
     ValueError, "NaN or infinite"),
    ("inf counts", lambda t: n2s.split_counts(np.where(COUNTS > 3, np.inf, FLOATS)),
     ValueError, "NaN or infinite"),
    ("normalised counts", lambda t: n2s.split_counts(FLOATS / 3), ValueError,
     "non-integer values"),
    ("bool matrix", lambda t: n2s.split_counts(COUNTS > 2), TypeError, "dtype bool"),
    ("object matrix", lambda t: n2s.split_counts(COUNTS.astype(object)), TypeError,
     "dtype object"),
    ("complex matrix", lambda t: n2s.split_counts(COUNTS.astype(complex)), TypeError,
     "dtype complex"),
    ("overdispersion with binomial", lambda t: n2s.split_counts(COUNTS, overdispersion=2.0),
     ValueError, "overdispersion=2.0 applies to method='negative_binomial'"),
    ("NB without overdispersion", lambda t: n2s.split_counts(COUNTS, method="negative_binomial"),
     ValueError, "needs overdispersion"),
    ("NB overdispersion=-1", lambda t: n2s.split_counts(
        COUNTS, method="negative_binomial", overdispersion=-1.0), ValueError, "must be positive"),
    ("NB overdispersion wrong length", lambda t: n2s.split_counts(
        COUNTS, method="negative_binomial", overdispersion=np.ones(3)), ValueError,
     "one per gene"),
    ("NB overdispersion='guess'", lambda t: n2s.split_counts(
        COUNTS, method="negative_binomial", overdispersion="guess"), ValueError,
     "Unknown overdispersion='guess'"),
    ("sample_ratio with NB", lambda t: n2s.split_counts(
        COUNTS, method="negative_binomial", overdispersion=2.0, sample_ratio=0.1), ValueError,
     "sample_ratio"),
    ("sample_ratio=1.5", lambda t: n2s.split_counts(COUNTS, sample_ratio=1.5), ValueError,
     "sample_ratio=1.5"),
    ("empty matrix", lambda t: n2s.split_counts(np.zeros((0, 5), dtype=int)), None,
     lambda out: out[0].shape == (0, 5)),
    ("all-zero rows", lambda t: n2s.split_counts(np.zeros((3, 4), dtype=int)), None,
     lambda out: not out[0].any() and not out[1].any()),
    ("integral floats", lambda t: n2s.split_counts(FLOATS), None,
     lambda out: np.array_equal(out[0] + out[1], FLOATS)),
    ("uint8 counts", lambda t: n2s.split_counts(COUNTS.astype(np.uint8)), None,
     lambda out: out[0].dtype == np.uint8 and np.array_equal(out[0] + out[1], COUNTS)),
    ("COO input", lambda t: n2s.split_counts(sparse.coo_matrix(COUNTS)), None,
     lambda out: out[0].format == "coo" and np.array_equal((out[0] + out[1]).toarray(),
                                                            COUNTS)),
    ("sparse array", lambda t: n2s.split_counts(sparse.csr_array(COUNTS)), None,
     lambda out: np.array_equal((out[0] + out[1]).toarray(), COUNTS)),
    ("estimate on NB", lambda t: n2s.split_counts(
        COUNTS, method="negative_binomial", overdispersion="estimate"), None,
     lambda out: np.array_equal(out[0] + out[1], COUNTS)),
    ("folds=1", lambda t: n2s.splitting.split_folds(COUNTS, 1), ValueError, "n_folds=1"),
]

ANNDATA_CASES = [
    ("not an AnnData", lambda t: tl.calibrate_pca(COUNTS), TypeError,
     "adata is a ndarray; pass an AnnData"),
    ("missing layer", lambda t: tl.calibrate_pca(adata_of(), layer="raw"), KeyError,
     "Layer 'raw' not found"),
    ("layer=3", lambda t: tl.calibrate_pca(adata_of(), layer=3), TypeError, "layer=3"),
    ("backed AnnData", lambda t: tl.calibrate_pca(backed(t)), ValueError,
     "adata is backed"),
    ("backed AnnData, denoise", lambda t: tl.denoise_pca(backed(t), n_comps=3), ValueError,
     "to_memory"),
    ("X is None", lambda t: tl.calibrate_pca(ad.AnnData(obs={"a": np.arange(3)}).copy()),
     ValueError, "adata.X is empty"),
    ("one cell", lambda t: tl.calibrate_pca(adata_of(COUNTS[:1])), ValueError,
     "1 cell"),
    ("no genes", lambda t: tl.calibrate_pca(adata_of(COUNTS[:, :0])), ValueError, "no genes"),
    ("an empty cell", lambda t: tl.calibrate_pca(adata_of(np.vstack([COUNTS, 0 * COUNTS[:1]]))),
     ValueError, "zero total counts"),
    ("normalised X, calibrate", lambda t: tl.calibrate_pca(normalised()), ValueError,
     "non-integer"),
    ("normalised X, denoise_pca(n_comps=10)", lambda t: tl.denoise_pca(normalised(), n_comps=10),
     ValueError, "non-integer"),
    ("normalised X, denoise_knn(n_neighbors=10)",
     lambda t: tl.denoise_knn(normalised(), n_neighbors=10), ValueError, "non-integer"),
    ("normalised X, denoise_diffusion(t=2)", lambda t: tl.denoise_diffusion(normalised(), t=2),
     ValueError, "non-integer"),
    ("max_comps='10'", lambda t: tl.calibrate_pca(adata_of(), max_comps="10"), TypeError,
     "max_comps='10' must be a whole number"),
    ("max_comps=0", lambda t: tl.calibrate_pca(adata_of(), max_comps=0), ValueError,
     "max_comps=0 must be at least 1"),
    ("max_comps=2.5", lambda t: tl.calibrate_pca(adata_of(), max_comps=2.5), TypeError,
     "max_comps=2.5"),
    ("max_comps too large", lambda t: warned("exceeds", tl.calibrate_pca, adata_of(),
                                             max_comps=500, copy=True), None,
     lambda out: out.uns["noise2self"]["grid"][-1] == 24),
    ("n_splits=2.5", lambda t: tl.calibrate_pca(adata_of(), n_splits=2.5), ValueError,
     "n_splits=2.5"),
    ("n_splits=0", lambda t: tl.calibrate_pca(adata_of(), n_splits=0), ValueError,
     "n_splits=0"),
    ("random_state='abc', calibrate", lambda t: tl.calibrate_pca(adata_of(), random_state="abc"),
     TypeError, "random_state='abc'"),
    ("random_state=-1, denoise with n_comps", lambda t: tl.denoise_pca(
        adata_of(), n_comps=3, random_state=-1), ValueError, "random_state=-1"),
    ("transform='log'", lambda t: tl.calibrate_pca(adata_of(), transform="log"), ValueError,
     "Unknown transform='log'"),
    ("loss='mae'", lambda t: tl.calibrate_knn(adata_of(), loss="mae"), ValueError,
     "Unknown loss='mae'"),
    ("split='nb'", lambda t: tl.calibrate_diffusion(adata_of(), split="nb"), ValueError,
     "Unknown split='nb'"),
    ("p=2", lambda t: tl.calibrate_pca(adata_of(), p=2.0), ValueError, "p=2.0"),
    ("folds=1", lambda t: tl.calibrate_pca(adata_of(), folds=1), ValueError, "folds=1"),
    ("folds=2.5", lambda t: tl.calibrate_pca(adata_of(), folds=2.5), ValueError, "folds=2.5"),
    ("folds with sample_ratio", lambda t: tl.calibrate_pca(adata_of(), folds=3,
                                                           sample_ratio=0.2), ValueError,
     "folds and sample_ratio"),
    ("estimate with binomial", lambda t: tl.calibrate_pca(adata_of(), overdispersion="estimate"),
     ValueError, "applies to split='negative_binomial'"),
    ("solver='svd'", lambda t: tl.calibrate_pca(adata_of(), solver="svd"), ValueError,
     "Unknown solver='svd'"),
    ("solver='randomized' on sparse", lambda t: tl.calibrate_pca(
        adata_of(), solver="randomized", max_comps=5, copy=True), None,
     lambda out: out.uns["noise2self"]["best"] >= 0),
    ("max_score_cells=0", lambda t: tl.calibrate_pca(adata_of(), max_score_cells=0), ValueError,
     "max_score_cells=0"),
    ("center='yes'", lambda t: tl.calibrate_pca(adata_of(), center="yes"), TypeError,
     "center='yes'"),
    ("key_added=3", lambda t: tl.calibrate_pca(adata_of(), key_added=3), TypeError,
     "key_added=3"),
    ("key_added=''", lambda t: tl.calibrate_pca(adata_of(), key_added=""), TypeError,
     "key_added=''"),
    ("copy='no'", lambda t: tl.calibrate_pca(adata_of(), copy="no"), TypeError, "copy='no'"),
    ("progress='yes'", lambda t: tl.calibrate_pca(adata_of(), progress="yes"), TypeError,
     "progress='yes'"),
    ("unknown option", lambda t: tl.calibrate_pca(adata_of(), max_rank=5), TypeError,
     "max_rank"),
    ("positional option", lambda t: tl.calibrate_pca(adata_of(), 5), TypeError,
     "positional"),
    ("max_layer_gb=-1", lambda t: tl.denoise_pca(adata_of(), n_comps=2, max_layer_gb=-1),
     ValueError, "max_layer_gb=-1"),
    ("max_layer_gb=nan", lambda t: tl.denoise_pca(adata_of(), n_comps=2,
                                                  max_layer_gb=float("nan")), ValueError,
     "max_layer_gb=nan"),
    ("max_layer_gb='1'", lambda t: tl.denoise_pca(adata_of(), n_comps=2, max_layer_gb="1"),
     TypeError, "max_layer_gb='1'"),
    ("n_comps=0", lambda t: tl.denoise_pca(adata_of(), n_comps=0), ValueError, "n_comps=0"),
    ("n_comps='3'", lambda t: tl.denoise_pca(adata_of(), n_comps="3"), TypeError, "n_comps='3'"),
    ("ks=[0, 2]", lambda t: tl.calibrate_knn(adata_of(), ks=[0, 2]), ValueError, "ks must hold"),
    ("ks too many", lambda t: tl.calibrate_knn(adata_of(), ks=[2, 500]), ValueError,
     "n_cells - 1"),
    ("ks=['a']", lambda t: tl.calibrate_knn(adata_of(), ks=["a"]), TypeError, "ks (each value)"),
    ("n_pcs=0", lambda t: tl.calibrate_knn(adata_of(), n_pcs=0), ValueError, "n_pcs=0"),
    ("n_neighbors=0 for denoise_knn", lambda t: tl.denoise_knn(adata_of(), n_neighbors=0),
     ValueError, "n_neighbors=0"),
    ("n_neighbors=1000 for denoise_knn", lambda t: tl.denoise_knn(adata_of(), n_neighbors=1000),
     ValueError, "n_neighbors=1000"),
    ("t_max=-1", lambda t: tl.calibrate_diffusion(adata_of(), t_max=-1), ValueError, "t_max=-1"),
    ("t_max=2.5", lambda t: tl.calibrate_diffusion(adata_of(), t_max=2.5), TypeError,
     "t_max=2.5"),
    ("diffusion n_neighbors=1", lambda t: tl.calibrate_diffusion(adata_of(), n_neighbors=1),
     ValueError, "n_neighbors=1"),
    ("t=-2 for denoise_diffusion", lambda t: tl.denoise_diffusion(adata_of(), t=-2), ValueError,
     "t=-2"),
    ("widths too wide", lambda t: tl.calibrate_autoencoder(adata_of(), widths=[2, 99]),
     ValueError, "widths must lie"),
    ("widths=['x']", lambda t: tl.calibrate_autoencoder(adata_of(), widths=["x"]), TypeError,
     "widths (each value)"),
    ("val_fraction=1", lambda t: tl.calibrate_autoencoder(adata_of(), val_fraction=1.0),
     ValueError, "val_fraction=1.0"),
    ("max_epochs=0", lambda t: tl.calibrate_autoencoder(adata_of(), max_epochs=0), ValueError,
     "max_epochs=0"),
    ("lr=-1", lambda t: tl.calibrate_autoencoder(adata_of(), lr=-1.0), ValueError, "lr=-1.0"),
    ("hidden=(0,)", lambda t: tl.calibrate_autoencoder(adata_of(), hidden=(0,)), ValueError,
     "hidden (each size)"),
    ("device='tpu'", lambda t: tl.calibrate_autoencoder(adata_of(), device="tpu"), ValueError,
     "device='tpu'"),
    ("denoise_autoencoder with poisson",
     lambda t: tl.denoise_autoencoder(adata_of(), loss="poisson"), ValueError,
     "loss='mse'"),
    ("method='ica'", lambda t: tl.calibrate(adata_of(), "ica"), ValueError,
     "Unknown method='ica'"),
    ("param_grid wrong knob", lambda t: tl.calibrate(adata_of(), "pca", param_grid={"k": [2]}),
     ValueError, "param_grid takes one key, 'n_comps'"),
    ("callable without grid", lambda t: tl.calibrate(adata_of(), lambda v, k: v), ValueError,
     "needs param_grid"),
    ("empty grid", lambda t: tl.calibrate(adata_of(), lambda v, k: v, param_grid={"k": []}),
     ValueError, "no values"),
    ("grid not a dict", lambda t: tl.calibrate(adata_of(), lambda v, k: v, param_grid=[1, 2]),
     ValueError, "not a dict"),
    ("callable wrong shape", lambda t: tl.calibrate(adata_of(), lambda v, k: np.zeros((2, 2)),
                                                     param_grid={"k": [1]}), ValueError,
     "returned shape"),
    ("callable returns a float", lambda t: tl.calibrate(adata_of(), lambda v, k: 1.0,
                                                         param_grid={"k": [1]}), TypeError,
     "returned float"),
    ("callable NaN everywhere", lambda t: calibrate_callable_counts(
        COUNTS, lambda v, k: np.full(v.shape, np.nan), {"k": [1, 2]}), ValueError,
     "No setting gave a finite"),
    ("compare unknown method", lambda t: tl.compare(adata_of(), methods=("pca", "x")),
     ValueError, "Unknown method='x'"),
    ("denoised_values without a run", lambda t: tl.denoised_values(adata_of()), KeyError,
     "No denoising under key"),
    ("denoised_values unknown gene", lambda t: tl.denoised_values(
        tl.denoise_pca(adata_of(), n_comps=2, copy=True), ["nope"]), KeyError, "nope"),
    ("split_molecules p=1.5", lambda t: n2s.pp.split_molecules(adata_of(), p=1.5), ValueError,
     "p=1.5"),
    ("split_molecules NB estimate", lambda t: n2s.pp.split_molecules(
        adata_of(), method="negative_binomial", overdispersion="estimate", copy=True), None,
     lambda out: out.uns["noise2self_split"]["method"] == "negative_binomial"),
    ("pl.calibration_curve without a run", lambda t: n2s.pl.calibration_curve(
        adata_of(), show=False), KeyError, "noise2self"),
]


def run_cli(*argv) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, err.getvalue()


CLI_CASES = [
    ("input missing", lambda t: run_cli("denoise", str(t / "no.h5ad"), "--out",
                                        str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "does not exist" in out[1]),
    ("input is a PNG", lambda t: (t / "x.png").write_bytes(b"x") and run_cli(
        "denoise", str(t / "x.png"), "--out", str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "Formats accepted" in out[1]),
    ("input is an empty folder", lambda t: (t / "d").mkdir() or run_cli(
        "denoise", str(t / "d"), "--out", str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "10x matrix folder" in out[1]),
    ("out is the input", lambda t: adata_of().write_h5ad(t / "i.h5ad") or run_cli(
        "denoise", str(t / "i.h5ad"), "--out", str(t / "i.h5ad")), None,
     lambda out: out[0] == 2 and "is the input" in out[1]),
    ("out exists", lambda t: (t / "o.h5ad").write_bytes(b"x") and run_cli(
        "denoise", "--dataset", "synthetic", "--out", str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "--overwrite" in out[1]),
    ("out folder missing", lambda t: run_cli("denoise", "--dataset", "synthetic", "--out",
                                             str(t / "no" / "o.h5ad")), None,
     lambda out: out[0] == 2 and "does not exist" in out[1]),
    ("out is a folder", lambda t: run_cli("denoise", "--dataset", "synthetic", "--out", str(t),
                                          "--overwrite"), None,
     lambda out: out[0] == 2 and "is a folder" in out[1]),
    ("plot exists", lambda t: (t / "c.png").write_bytes(b"x") and run_cli(
        "denoise", "--dataset", "synthetic", "--out", str(t / "o.h5ad"), "--plot",
        str(t / "c.png")), None, lambda out: out[0] == 2 and "c.png" in out[1]),
    ("normalised input", lambda t: normalised().write_h5ad(t / "n.h5ad") or run_cli(
        "denoise", str(t / "n.h5ad"), "--out", str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "non-integer" in out[1]),
    ("missing layer", lambda t: adata_of().write_h5ad(t / "i.h5ad") or run_cli(
        "denoise", str(t / "i.h5ad"), "--layer", "counts", "--out", str(t / "o.h5ad")), None,
     lambda out: out[0] == 2 and "counts" in out[1]),
    ("--p 1.5", lambda t: run_cli("denoise", "--dataset", "synthetic", "--out",
                                  str(t / "o.h5ad"), "--p", "1.5"), None,
     lambda out: out[0] == 2 and "p=1.5" in out[1]),
    ("--max-layer-gb -1", lambda t: run_cli("denoise", "--dataset", "synthetic", "--out",
                                            str(t / "o.h5ad"), "--max-layer-gb", "-1"), None,
     lambda out: out[0] == 2 and "max_layer_gb" in out[1]),
    ("--n-splits 0", lambda t: run_cli("denoise", "--dataset", "synthetic", "--out",
                                       str(t / "o.h5ad"), "--n-splits", "0"), None,
     lambda out: out[0] == 2 and "n_splits=0" in out[1]),
]

CASES = SPLIT_CASES + ANNDATA_CASES + CLI_CASES


@pytest.mark.parametrize(("make", "error", "expect"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_or_edge_input(tmp_path, make, error, expect):
    if error is None:
        result = make(tmp_path)
        assert expect(result)
        return
    with pytest.raises(error, match=expect if expect.startswith("(") else _escaped(expect)):
        make(tmp_path)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_inputs_are_never_modified():
    X = sparse.csr_matrix(COUNTS.astype(np.float32))
    adata = ad.AnnData(X.copy())
    before = adata.X.copy()
    tl.calibrate_pca(adata, max_comps=4, copy=True)
    tl.denoise_knn(adata, n_neighbors=3, copy=True)
    n2s.split_counts(adata.X, random_state=1)
    assert (adata.X != before).nnz == 0 and not adata.uns and not adata.layers
