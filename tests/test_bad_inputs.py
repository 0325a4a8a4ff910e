"""Bad and edge inputs against the public API: each gets a clear error or a correct result.

Every case names what it passes and the exact outcome class: the exception type and a
pattern that the message must contain (the argument's name, the problem, or the fix), or
``None`` with a check of the result. Counts, AnnData and the command line are here; images,
CNNs and model files follow below them.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import sc_noise2self as n2s
from sc_noise2self import cli, tl
from sc_noise2self.calibration import calibrate_callable_counts

RNG = np.random.default_rng(0)
COUNTS = RNG.poisson(RNG.gamma(2.0, 1.0, (80, 1)) * RNG.gamma(1.0, 2.0, (1, 25))) + \
    (np.arange(25) == 0)  # every cell has a count
FLOATS = COUNTS.astype(np.float64)


def _fused_and_plain_halves(counts: np.ndarray):
    """Half A by the fused CSR path and by the path that keeps the counts, same seed."""
    from sc_noise2self.losses import prepare_halves

    X = sparse.csr_matrix(counts.astype(np.float32))
    options = dict(p=0.7, transform="none", random_state=3, split="binomial")
    return prepare_halves(X, **options), prepare_halves(X, keep_counts=True, **options)


def _one_molecule_cells() -> np.ndarray:
    """COUNTS with a third of the cells holding a single molecule (half A of it may be empty)."""
    counts = COUNTS.astype(np.float32).copy()
    counts[::3] = 0
    counts[np.arange(0, counts.shape[0], 3), np.arange(0, counts.shape[0], 3) % counts.shape[1]] = 1
    return counts


def lazy_adata() -> ad.AnnData:
    """Small counts as a dask array of CSR chunks."""
    import dask.array as da

    adata = adata_of()
    adata.X = da.from_array(sparse.csr_matrix(adata.X), chunks=(10, -1), asarray=False)
    return adata


def adata_of(X=None, **layers) -> ad.AnnData:
    return ad.AnnData(sparse.csr_matrix(COUNTS if X is None else X).astype(np.float32),
                      layers=layers or None)


def halved(adata: ad.AnnData) -> ad.AnnData:
    """``adata`` with its (dask) counts halved: non-integer values, seen only in the chunks."""
    adata.X = adata.X / 2
    return adata


def lazy_split_grouped() -> ad.AnnData:
    """Dask counts split by pp.split_molecules, with two groups made on half A (say)."""
    adata = lazy_adata()
    n2s.pp.split_molecules(adata, random_state=0)
    adata.obs["g"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")
    return adata


def normalised() -> ad.AnnData:
    a = adata_of()
    a.X = sparse.csr_matrix(np.log1p(COUNTS / COUNTS.sum(1, keepdims=True) * 1e4))
    return a


def _two_islands() -> np.ndarray:
    """Counts of two populations without a gene in common: two unconnected graphs."""
    rng = np.random.default_rng(3)
    half = rng.poisson(rng.gamma(0.5, 4.0, 40), (60, 40)).astype(np.float32)
    half[:, 0] += 1  # every cell has counts
    other = rng.poisson(rng.gamma(0.5, 4.0, 40), (60, 40)).astype(np.float32)
    other[:, 0] += 1
    zeros = np.zeros_like(half)
    return np.vstack([np.hstack([half, zeros]), np.hstack([zeros, other])])


def with_obs(adata: ad.AnnData, **columns) -> ad.AnnData:
    """``adata`` with constant ``obs`` columns added."""
    for name, value in columns.items():
        adata.obs[name] = value
    return adata


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
    ("split", lambda t: n2s.split_counts(COUNTS, split="poisson"), ValueError,
     "Unknown split='poisson'"),
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
     ValueError, "overdispersion=2.0 applies to split='negative_binomial'"),
    ("NB without overdispersion", lambda t: n2s.split_counts(COUNTS, split="negative_binomial"),
     ValueError, "needs overdispersion"),
    ("NB overdispersion=-1", lambda t: n2s.split_counts(
        COUNTS, split="negative_binomial", overdispersion=-1.0), ValueError, "must be positive"),
    ("NB overdispersion wrong length", lambda t: n2s.split_counts(
        COUNTS, split="negative_binomial", overdispersion=np.ones(3)), ValueError,
     "one per gene"),
    ("NB overdispersion='guess'", lambda t: n2s.split_counts(
        COUNTS, split="negative_binomial", overdispersion="guess"), ValueError,
     "Unknown overdispersion='guess'"),
    ("max_cells=2", lambda t: n2s.diagnostics.estimate_overdispersion(COUNTS, max_cells=2),
     ValueError, "max_cells"),
    ("expected_counts without a truth", lambda t: n2s.simulation.expected_counts(adata_of()),
     ValueError, "no simulated truth"),
    ("sample_ratio with NB", lambda t: n2s.split_counts(
        COUNTS, split="negative_binomial", overdispersion=2.0, sample_ratio=0.1), ValueError,
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
        COUNTS, split="negative_binomial", overdispersion="estimate"), None,
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
    ("folds with sample_ratio", lambda t: tl.calibrate_pca(
        adata_of(), folds=3, sample_ratio=0.2, split="binomial"), ValueError,
     "folds and sample_ratio"),
    ("estimate with binomial", lambda t: tl.calibrate_pca(adata_of(), split="binomial",
                                                          overdispersion="estimate"),
     ValueError, "applies to split='negative_binomial'"),
    ("sample_ratio with the NB split", lambda t: tl.calibrate_pca(adata_of(), sample_ratio=0.2),
     ValueError, "pass split='binomial' with it"),
    ("sample_ratio with split_molecules' NB default", lambda t: n2s.pp.split_molecules(
        adata_of(), sample_ratio=0.2), ValueError, "pass split='binomial' with it"),
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
        adata_of(), split="negative_binomial", overdispersion="estimate", copy=True), None,
     lambda out: out.uns["noise2self_split"]["split"] == "negative_binomial"),
    ("pl.calibration_curve without a run", lambda t: n2s.pl.calibration_curve(
        adata_of(), show=False), KeyError, "noise2self"),
    ("resolutions=[-1]", lambda t: tl.calibrate_leiden(adata_of(), resolutions=[-1.0]),
     ValueError, "resolutions (each value)=-1.0"),
    ("resolutions=['a']", lambda t: tl.calibrate_leiden(adata_of(), resolutions=["a"]),
     TypeError, "resolutions (each value)='a'"),
    ("leiden n_comps=0", lambda t: tl.calibrate_leiden(adata_of(), n_comps=0), ValueError,
     "n_comps=0"),
    ("leiden n_neighbors=1", lambda t: tl.calibrate_leiden(adata_of(), n_neighbors=1),
     ValueError, "n_neighbors=1"),
    ("denoise_leiden resolution<0", lambda t: tl.denoise_leiden(adata_of(), resolution=-0.5),
     ValueError, "resolution=-0.5"),
    ("markers method='anova'", lambda t: tl.rank_genes_groups_split(adata_of(), method="anova"),
     ValueError, "Unknown method='anova'"),
    ("markers resolution='auto'", lambda t: tl.rank_genes_groups_split(
        adata_of(), resolution="auto"), ValueError, "Unknown resolution='auto'"),
    ("markers resolution=-1", lambda t: tl.rank_genes_groups_split(adata_of(), resolution=-1.0),
     ValueError, "resolution=-1.0"),
    ("markers n_neighbors=0", lambda t: tl.rank_genes_groups_split(adata_of(), n_neighbors=0),
     ValueError, "n_neighbors=0"),
    ("markers p=1", lambda t: tl.rank_genes_groups_split(adata_of(), p=1.0), ValueError,
     "p=1.0"),
    ("markers groupby missing", lambda t: tl.rank_genes_groups_split(adata_of(), groupby="x"),
     KeyError, "groupby='x' is not a column"),
    ("markers groupby without its split", lambda t: tl.rank_genes_groups_split(
        with_obs(adata_of(), g="a"), groupby="g"), ValueError, "split_molecules"),
    ("markers on normalised X", lambda t: tl.rank_genes_groups_split(normalised()),
     ValueError, "non-integer"),
    ("markers of non-integer dask counts", lambda t: tl.rank_genes_groups_split(
        halved(lazy_adata())), ValueError, "non-integer values"),
    ("validation of dask split_molecules groups", lambda t: tl.validate_clusters_split(
        lazy_split_grouped(), groupby="g"), ValueError, "dask layers of pp.split_molecules"),
    ("markers of dask counts by logreg", lambda t: tl.rank_genes_groups_split(
        with_obs(lazy_adata(), g="a"), groupby="g", method="logreg"), ValueError,
     "method='logreg'"),
    ("association covariate=3", lambda t: tl.association_split(adata_of(), 3), TypeError,
     "covariate=3"),
    ("association dpt without root", lambda t: tl.association_split(adata_of(), "dpt"),
     ValueError, "needs root"),
    ("association root out of range", lambda t: tl.association_split(adata_of(), "dpt",
                                                                      root=10_000),
     ValueError, "root=10000"),
    ("association unknown column", lambda t: tl.association_split(adata_of(), "age"),
     KeyError, "covariate='age'"),
    ("association column without its split", lambda t: tl.association_split(
        with_obs(adata_of(), age=1.0), "age"), ValueError, "split_molecules"),
    ("pl.resolution_curve on a PCA record", lambda t: n2s.pl.resolution_curve(
        tl.calibrate_pca(adata_of(), max_comps=3, copy=True), key="noise2self", show=False),
     KeyError, "no cluster counts"),
    ("pl.pvalue_qq without results", lambda t: n2s.pl.pvalue_qq(adata_of(), show=False),
     KeyError, "rank_genes_groups_split"),
    # Issue 24: clusters you can trust.
    ("leiden rule='best'", lambda t: tl.calibrate_leiden(adata_of(), rule="best"), ValueError,
     "rule='best'"),
    ("leiden loss='mse'", lambda t: tl.calibrate_leiden(adata_of(), loss="mse"), ValueError,
     "loss='mse' is not available for the leiden family"),
    ("leiden folds", lambda t: tl.calibrate_leiden(adata_of(), folds=3), ValueError,
     "Use n_splits instead of folds"),
    ("leiden random_state=None", lambda t: tl.calibrate_leiden(adata_of(), random_state=None),
     TypeError, "needs an integer seed"),
    # Issue 25: cryptic errors and options read wrongly.
    ("cells of one molecule are data, not empty cells", lambda t: tl.calibrate_pca(
        ad.AnnData(sparse.csr_matrix(_one_molecule_cells())), max_comps=3, copy=True), None,
     lambda out: out.uns["noise2self"]["best"] >= 0),
    ("float16 counts", lambda t: tl.calibrate_pca(
        ad.AnnData(COUNTS.astype(np.float16)), max_comps=3), TypeError,
     "X has dtype float16"),
    ("non-count layer is named, not X", lambda t: tl.calibrate_pca(
        adata_of(norm=sparse.csr_matrix(COUNTS * 0.37)), layer="norm", max_comps=3),
     ValueError, "layers['norm'] contains non-integer values"),
    ("non-count layer in split_molecules", lambda t: n2s.pp.split_molecules(
        adata_of(norm=sparse.csr_matrix(COUNTS * 0.37)), layer="norm"),
     ValueError, "layers['norm'] contains non-integer values"),
    ("continuous groupby", lambda t: tl.rank_genes_groups_split(
        with_obs(split_adata(), t_=np.linspace(0.01, 0.99, COUNTS.shape[0])), groupby="t_"),
     TypeError, "holds continuous values"),
    ("dpt on a disconnected graph", lambda t: tl.association_split(
        adata_of(_two_islands()), "dpt", root=0, n_neighbors=5),
     ValueError, "not connected to the root cell 0"),
    ("string covariate", lambda t: tl.association_split(
        with_obs(split_adata(), s="x"), "s"), TypeError, "ranks a numeric covariate"),
    ("resolution_curve of a given resolution", lambda t: n2s.pl.resolution_curve(
        tl.denoise_leiden(adata_of(), resolution=1.0, copy=True), show=False), KeyError,
     "holds no loss curve"),
    ("leiden refine='yes'", lambda t: tl.calibrate_leiden(adata_of(), refine="yes"),
     TypeError, "refine='yes' must be True or False"),
    ("markers refine=1", lambda t: tl.rank_genes_groups_split(adata_of(), refine=1),
     TypeError, "refine=1 must be True or False"),
    ("markers of one cluster", lambda t: tl.rank_genes_groups_split(
        with_obs(split_adata(), g="0"), groupby="g"), ValueError, "holds one group"),
    ("markers of one-cell clusters", lambda t: tl.rank_genes_groups_split(
        with_obs(split_adata(), g=["x"] + ["y"] * (COUNTS.shape[0] - 1)), groupby="g"),
     ValueError, "fewer than 2 cells"),
    ("markers groupby with another p", lambda t: tl.rank_genes_groups_split(
        with_obs(split_adata(), g=halves_groups()), groupby="g", p=0.5), ValueError,
     r"['p'] cannot be used"),
    ("validate without the split", lambda t: n2s.tl.validate_clusters_split(
        with_obs(adata_of(), g=halves_groups()), "g"), ValueError, "split_molecules"),
    ("validate alpha=2", lambda t: n2s.tl.validate_clusters_split(
        with_obs(split_adata(), g=halves_groups()), "g", alpha=2.0), ValueError, "alpha=2.0"),
    ("validate a missing column", lambda t: n2s.tl.validate_clusters_split(adata_of(), "x"),
     KeyError, "groupby='x' is not a column"),
    ("simulate no groups", lambda t: n2s.simulation.simulate_counts(group_sizes=()),
     ValueError, "group_sizes=[]"),
    ("simulate depth_sd=-1", lambda t: n2s.simulation.simulate_counts(depth_sd=-1.0),
     ValueError, "depth_sd=-1.0"),
    ("simulate nb_size=(5, 1)", lambda t: n2s.simulation.simulate_counts(nb_size=(5.0, 1.0)),
     ValueError, "nb_size=(5.0, 1.0)"),
    ("pl.cluster_tree without a validation", lambda t: n2s.pl.cluster_tree(
        adata_of(), show=False), KeyError, "run tl.validate_clusters_split first"),
    ("validate n_top_genes=1", lambda t: n2s.tl.validate_clusters_split(
        with_obs(split_adata(), g=halves_groups()), "g", n_top_genes=1), ValueError,
     "n_top_genes=1"),
]


def split_adata() -> ad.AnnData:
    """Counts with a pp.split_molecules run, for groups of half A."""
    adata = adata_of()
    n2s.pp.split_molecules(adata)
    return adata


def halves_groups() -> list[str]:
    return ["a" if i % 2 else "b" for i in range(COUNTS.shape[0])]


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
# scVI (issue 17): every option is refused before any model is trained.
_SCVI_FAST = {"max_epochs": 2, "accelerator": "cpu"}
SCVI_CASES = [
    ("scvi n_latent=0", lambda t: tl.calibrate_scvi(adata_of(), n_latent=(0, 2)), ValueError,
     "n_latent (each value)=0"),
    ("scvi n_latent=2.5", lambda t: tl.calibrate_scvi(adata_of(), n_latent=(2.5,)), TypeError,
     "n_latent (each value)=2.5"),
    ("scvi n_latent > genes", lambda t: tl.calibrate_scvi(adata_of(), n_latent=(40,)),
     ValueError, "n_latent (each value)=40"),
    ("scvi n_latent='ten'", lambda t: tl.calibrate_scvi(adata_of(), n_latent="ten"), TypeError,
     "n_latent (each value)='ten'"),
    ("denoise_scvi n_latent=0", lambda t: tl.denoise_scvi(adata_of(), n_latent=0), ValueError,
     "n_latent=0"),
    ("scvi gene_likelihood", lambda t: tl.calibrate_scvi(adata_of(), gene_likelihood="normal"),
     ValueError, "Unknown gene_likelihood='normal'"),
    ("scvi accelerator='tpu'", lambda t: tl.calibrate_scvi(adata_of(), accelerator="tpu"),
     ValueError, "Unknown accelerator='tpu'"),
    ("scvi max_epochs=0", lambda t: tl.calibrate_scvi(adata_of(), max_epochs=0), ValueError,
     "max_epochs=0"),
    ("scvi n_hidden=-4", lambda t: tl.calibrate_scvi(adata_of(), n_hidden=-4), ValueError,
     "n_hidden=-4"),
    ("scvi n_layers=1.5", lambda t: tl.calibrate_scvi(adata_of(), n_layers=1.5), TypeError,
     "n_layers=1.5"),
    ("scvi batch_size=0", lambda t: tl.calibrate_scvi(adata_of(), batch_size=0), ValueError,
     "batch_size=0"),
    ("scvi n_samples=0", lambda t: tl.calibrate_scvi(adata_of(), n_samples=0), ValueError,
     "n_samples=0"),
    ("scvi early_stopping='yes'", lambda t: tl.calibrate_scvi(adata_of(), early_stopping="yes"),
     TypeError, "early_stopping='yes'"),
    ("scvi return_model='yes'", lambda t: tl.calibrate_scvi(adata_of(), return_model="yes"),
     TypeError, "return_model='yes'"),
    ("scvi batch_key=3", lambda t: tl.calibrate_scvi(adata_of(), batch_key=3), TypeError,
     "batch_key=3"),
    ("scvi batch_key missing", lambda t: tl.calibrate_scvi(adata_of(), batch_key="donor"),
     KeyError, "batch_key='donor' is not a column of adata.obs"),
    ("scvi batch with NaN", lambda t: tl.calibrate_scvi(
        with_obs(adata_of(), b=np.where(np.arange(80) % 2, "x", None)), batch_key="b"),
     ValueError, "obs['b'] has missing values"),
    ("scvi loss='kl'", lambda t: tl.calibrate_scvi(adata_of(), loss="kl"), ValueError,
     "Unknown loss='kl'"),
    ("scvi on normalised X", lambda t: tl.calibrate_scvi(normalised(), **_SCVI_FAST),
     ValueError, "non-integer"),
    ("scvi on a backed AnnData", lambda t: tl.calibrate_scvi(backed(t)), ValueError,
     "backed"),
    ("loss='nb' for pca", lambda t: tl.calibrate_pca(adata_of(), loss="nb"), ValueError,
     "loss='nb' is not available for the pca family"),
    ("loss='nb' for knn", lambda t: tl.calibrate_knn(adata_of(), loss="nb"), ValueError,
     "loss='nb' is not available for the knn family"),
    ("compare options for a method not run", lambda t: tl.compare(
        adata_of(), methods=("pca",), options={"scvi": {}}), ValueError, "options="),
]


@pytest.mark.parametrize(("make", "error", "expect"), [c[1:] for c in SCVI_CASES],
                         ids=[c[0] for c in SCVI_CASES])
def test_bad_scvi_input(tmp_path, make, error, expect):
    pytest.importorskip("scvi")
    test_bad_or_edge_input(tmp_path, make, error, expect)


def _markers(**changes):
    import pandas as pd

    from sc_noise2self import markers

    X = sparse.random(40, 6, density=0.5, random_state=0, format="csr")
    options = {"values": X, "labels": pd.Categorical(["a", "b"] * 20),
               "var_names": pd.Index(list("uvwxyz")), "method": "wilcoxon",
               "key_params": {}, **changes}
    return markers.rank_genes_groups(**options)


def _halves_keeping_nothing_of_b():
    from sc_noise2self.losses import prepare_halves

    return prepare_halves(sparse.csr_matrix(COUNTS), p=0.5, transform="log1p", random_state=0,
                          keep_b_values=False)


ATLAS_CASES = [
    ("halves: half B neither as values nor as counts", lambda t: _halves_keeping_nothing_of_b(),
     ValueError, "keep_b_values=False keeps half B as counts only: pass keep_counts=True"),
    ("markers: logreg", lambda t: _markers(method="logreg"), ValueError, "method='logreg'"),
    ("markers: a reference group", lambda t: _markers(reference="a"), ValueError,
     "reference='a'"),
    ("markers: unknown correction", lambda t: _markers(corr_method="holm"), ValueError,
     "corr_method='holm'"),
    ("markers: labels of other cells", lambda t: _markers(
        labels=pd.Categorical(["a", "b"] * 10)), ValueError,
     "labels has 20 entries for 40 cells"),
    ("markers: mask_var of other genes", lambda t: _markers(mask_var=np.ones(5, bool)),
     ValueError, "mask_var has shape (5,) for 6 genes"),
    ("device and poisson loss", lambda t: tl.calibrate_pca(adata_of(), device="cpu",
                                                           loss="poisson"),
     ValueError, "device='cpu' calibrates with loss='mse'"),
    ("device and NB split", lambda t: tl.calibrate_pca(
        adata_of(), device="cpu", split="negative_binomial", overdispersion=5.0),
     ValueError, "split asked for more"),
    ("device and folds", lambda t: tl.calibrate_pca(adata_of(), device="cpu", folds=3),
     ValueError, "folds asked for more"),
    ("device='tpu'", lambda t: tl.calibrate_pca(adata_of(), device="tpu"), ValueError,
     "Unknown device='tpu'"),
    ("device='mps' on PCA", lambda t: _pca_on_mps(), (ValueError, RuntimeError), "(mps)"),
    ("count beyond the split's range", lambda t: n2s.split_counts(
        sparse.csr_matrix(np.array([[1, 3_000_000]]))), ValueError,
     "splitting handles at most 2,048,000 molecules"),
    # Counts wider than 16 bits: the fused split keeps 32-bit shares. Fails if half A's
    # counts are held in uint16 whatever their range (they wrap past 65,535).
    ("16-bit split of wide counts", lambda t: _fused_and_plain_halves(
        np.where(COUNTS > 0, COUNTS + 200_000, 0)), None,
     lambda pair: pair[0].a.max() > 65_535
     and np.array_equal(pair[0].a.toarray(), pair[1].a.toarray())),
]


def _pca_on_mps():
    pytest.importorskip("torch")
    return tl.calibrate_pca(adata_of(), device="mps")


CASES = SPLIT_CASES + ANNDATA_CASES + CLI_CASES + ATLAS_CASES


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


# ===================================================================== images (issue 15)
# Images, classical denoisers, calibration, mixing, noise estimation, CNN training and
# prediction, and model files. Tiny images and CNNs of one step keep the section fast; every
# CNN case that should fail does so before any training.

from functools import lru_cache  # noqa: E402

from sc_noise2self import image as im  # noqa: E402

IMG = np.random.default_rng(1).random((24, 24))
RGB = np.stack([IMG] * 3, axis=-1)
TV = {"weight": [0.1]}
QUIET = {"progress": False}
CNN = {"steps": 1, "batch_size": 2, "patch_size": 8, "progress": False,
       "model_kwargs": {"depth": 2, "features": 4}}


def with_nan(value=np.nan) -> np.ndarray:
    image = IMG.copy()
    image[3, 4] = value
    return image


def nan_at(k_bad: int):
    def denoiser(image, *, k):
        return np.full(image.shape, np.nan) if k == k_bad else image * 0 + image.mean()

    return denoiser


@lru_cache(maxsize=1)
def tiny_model():
    """One DnCNN trained for one step, shared by the prediction and file cases."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one step loses to the baseline, as it should
        return im.train(IMG, "dncnn", **CNN)


def saved_model(folder) -> object:
    return tiny_model().save(folder / "m.pt")


def write(path, content: bytes):
    path.write_bytes(content)
    return path


def train(**options):
    return im.train(IMG, "dncnn", **{**CNN, **options})


IMAGE_INPUT_CASES = [
    ("1-D image", lambda t: im.denoise(np.zeros(64), "tv"), ValueError,
     "2D image or a 3D volume"),
    ("4-D image without channels", lambda t: im.denoise(np.zeros((2, 8, 8, 8)), "tv"),
     ValueError, "4 spatial axes"),
    ("5-D image", lambda t: im.calibrate(np.zeros((2, 2, 8, 8, 8)), "tv", TV), ValueError,
     "channel_axis="),
    ("bool image", lambda t: im.denoise(IMG > 0.5, "tv"), TypeError, "dtype bool"),
    ("object image", lambda t: im.denoise(IMG.astype(object), "tv"), TypeError, "dtype object"),
    ("complex image", lambda t: im.denoise(IMG.astype(complex), "tv"), TypeError,
     "dtype complex"),
    ("image is a path", lambda t: im.denoise("cells.tif", "tv"), TypeError, "image is a str"),
    ("image is None", lambda t: im.calibrate(None, "tv", TV), TypeError, "image is None"),
    ("ragged list", lambda t: im.denoise([[1.0, 2.0], [3.0]], "tv"), ValueError,
     "not a rectangular array"),
    ("empty image", lambda t: im.denoise(np.zeros((0, 10)), "tv"), ValueError, "is empty"),
    ("NaN pixel", lambda t: im.denoise(with_nan(), "tv"), ValueError, "NaN or infinite"),
    ("inf pixel", lambda t: im.calibrate(with_nan(np.inf), "tv", TV), ValueError,
     "fill or crop them"),
    ("RGB without channel_axis", lambda t: im.denoise(RGB, "tv"), ValueError,
     "pass channel_axis=-1"),
    ("channels first without channel_axis", lambda t: im.calibrate(RGB.T, "tv", TV),
     ValueError, "pass channel_axis=0"),
    ("channel_axis=3", lambda t: im.denoise(RGB, "tv", channel_axis=3), ValueError,
     "channel_axis=3 is out of range"),
    ("channel_axis='0'", lambda t: im.denoise(RGB, "tv", channel_axis="0"), TypeError,
     "channel_axis='0'"),
    ("channel_axis=1.5", lambda t: im.denoise(RGB, "tv", channel_axis=1.5), TypeError,
     "channel_axis=1.5"),
    ("stride=1", lambda t: im.calibrate(IMG, "tv", TV, stride=1), ValueError, "stride=1"),
    ("stride=2.5", lambda t: im.calibrate(IMG, "tv", TV, stride=2.5), TypeError, "stride=2.5"),
    ("stride='4'", lambda t: im.denoise_invariant(IMG, np.copy, stride="4"), TypeError,
     "stride='4'"),
    ("stride larger than the image", lambda t: im.calibrate(IMG[:6], "tv", TV, stride=8),
     ValueError, "smaller than stride=8"),
    ("uint16 image", lambda t: im.denoise((IMG * 60000).astype(np.uint16), "gaussian", **QUIET),
     None, lambda out: out.dtype == np.float64 and 0 <= out.min() and out.max() <= 1),
    ("float16 image", lambda t: im.denoise(IMG.astype(np.float16), "gaussian", **QUIET), None,
     lambda out: out.dtype == np.float32 and out.shape == IMG.shape),
    ("constant image", lambda t: warned("constant", im.denoise, np.full((16, 16), 2.0), "auto"),
     None, lambda out: np.array_equal(out, np.full((16, 16), 2.0))),
    ("image times 1e200", lambda t: im.denoise(IMG * 1e200, "tv"), ValueError,
     "Rescale it first"),
    ("image times 1e-200", lambda t: im.calibrate(IMG * 1e-200, "tv"), ValueError,
     "Rescale it first"),
    ("image times 1e30", lambda t: im.denoise(IMG * 1e30, "gaussian", **QUIET), None,
     lambda out: np.isfinite(out).all() and 0.1 < out.mean() / 1e30 < 0.9),
]

IMAGE_DENOISE_CASES = [
    ("method='wiener'", lambda t: im.denoise(IMG, "wiener"), ValueError,
     "Unknown method='wiener'"),
    ("method=None", lambda t: im.denoise(IMG, None), ValueError, "Unknown method=None"),
    ("bilateral on a volume", lambda t: im.denoise(np.zeros((8, 8, 8)) + IMG[:8, :8], "bilateral"),
     ValueError, "supports images with (2,) spatial axes"),
    ("param_grid with auto", lambda t: im.denoise(IMG, param_grid=TV), ValueError,
     "param_grid applies to one method"),
    ("training option for tv", lambda t: im.denoise(IMG, "tv", steps=3), TypeError,
     "'unet' or 'dncnn'"),
    ("noise_variance=-1", lambda t: im.denoise(IMG, "gaussian", noise_variance=-1), ValueError,
     "noise_variance=-1 must be a finite number of at least 0"),
    ("noise_variance=nan", lambda t: im.denoise(IMG, "gaussian", noise_variance=float("nan")),
     ValueError, "noise_variance=nan"),
    ("noise_variance=inf", lambda t: im.calibrate(IMG, "tv", TV, noise_variance=float("inf")),
     ValueError, "noise_variance=inf"),
    ("noise_variance='0.01'", lambda t: im.denoise(IMG, "tv", noise_variance="0.01"), TypeError,
     "noise_variance='0.01'"),
    ("noise_variance=0", lambda t: im.denoise(IMG, "gaussian", noise_variance=0.0, **QUIET),
     None, lambda out: np.array_equal(out, IMG)),  # no noise: the input is the best estimate
    ("mix='yes'", lambda t: im.denoise(IMG, "tv", mix="yes"), TypeError, "mix='yes'"),
    ("fallback=None", lambda t: im.denoise(IMG, "tv", fallback=None), TypeError,
     "fallback=None"),
    ("return_calibration=1", lambda t: im.denoise(IMG, "tv", return_calibration=1), TypeError,
     "return_calibration=1"),
    ("progress='no'", lambda t: im.denoise(IMG, "tv", progress="no"), TypeError,
     "progress='no'"),
    ("param_grid for a CNN", lambda t: im.denoise(IMG, "unet", param_grid=TV), TypeError,
     "param_grid applies to the classical methods"),
    ("noise_variance for a CNN", lambda t: im.denoise(IMG, "dncnn", noise_variance=0.01),
     TypeError, "noise_variance applies to the classical methods"),
]

IMAGE_CALIBRATION_CASES = [
    # Issue 25: clear errors where numpy's or the wrong advice came out.
    ("grid value not a number", lambda t: im.calibrate(IMG, "gaussian", {"sigma": ["abc"]}),
     TypeError, "param_grid['sigma'] holds 'abc'; sigma of method 'gaussian' is a number"),
    ("1 x 1 image", lambda t: im.calibrate(np.ones((1, 1)), "gaussian"), ValueError,
     "needs at least 2 pixels along each spatial axis"),
    ("channel_axis on the wrong axis", lambda t: im.calibrate(
        np.stack([IMG] * 3, axis=-1), "gaussian", channel_axis=0), ValueError,
     "With channel_axis=0, its axis -1 of 3 is read as a spatial axis"),
    ("calibrate_sample of a CNN refused before training", lambda t: _blocks().calibrate_sample(
        _yx(), size=16, method="unet"), ValueError, "not method='unet'"),
    ("callable without a grid", lambda t: im.calibrate(IMG, np.copy), ValueError,
     "param_grid is required"),
    ("grid {}", lambda t: im.calibrate(IMG, "tv", {}), ValueError, "param_grid={} is empty"),
    ("grid without values", lambda t: im.calibrate(IMG, "tv", {"weight": []}), ValueError,
     "no values for ['weight']"),
    ("grid is a list", lambda t: im.calibrate(IMG, "tv", [0.1]), ValueError, "not a dict"),
    ("unknown tv parameter", lambda t: im.calibrate(IMG, "tv", {"sigma": [1.0]}), TypeError,
     "'sigma', which method 'tv' does not take"),
    ("negative tv weight", lambda t: im.calibrate(IMG, "tv", {"weight": [-1.0]}), ValueError,
     "param_grid['weight'] holds -1.0"),
    ("NaN nl_means h", lambda t: im.calibrate(IMG, "nl_means", {"h": [float("nan")]}),
     ValueError, "param_grid['h'] holds nan"),
    ("median radius 0", lambda t: im.calibrate(IMG, "median", {"radius": [0]}), ValueError,
     "param_grid['radius'] holds 0"),
    ("median radius 1.5", lambda t: im.calibrate(IMG, "median", {"radius": [1.5]}), ValueError,
     "whole number of at least 1"),
    ("denoiser=42", lambda t: im.calibrate(IMG, 42, {"k": [1]}), TypeError,
     "neither a method name nor a callable"),
    ("callable returns the wrong shape", lambda t: im.calibrate(
        IMG, lambda x, k: x[:5], {"k": [1]}, **QUIET), ValueError, "returned an array of shape"),
    ("callable returns a float", lambda t: im.calibrate(
        IMG, lambda x, k: 1.0, {"k": [1]}, **QUIET), TypeError, "returned float"),
    ("callable NaN everywhere", lambda t: im.calibrate(IMG, nan_at(1), {"k": [1]}, **QUIET),
     ValueError, "No parameter set of 'denoiser' gave a finite"),
    ("callable NaN at one setting", lambda t: warned(
        r"\{'k': 2\} \(NaN\)", im.calibrate, IMG, nan_at(2), {"k": [1, 2]}, **QUIET), None,
     lambda out: out.best_params == {"k": 1} and np.isnan(out.losses[1])),
    ("interpolation='cubic'", lambda t: im.calibrate(IMG, "tv", TV, interpolation="cubic"),
     ValueError, "Unknown interpolation='cubic'"),
    ("dtype=np.int16", lambda t: im.calibrate(IMG, "tv", TV, dtype=np.int16), ValueError,
     "np.float32 or np.float64"),
    ("dtype='abc'", lambda t: im.calibrate(IMG, "tv", TV, dtype="abc"), ValueError,
     "dtype='abc'"),
    ("n_jobs=0", lambda t: im.calibrate(IMG, "tv", TV, n_jobs=0), ValueError, "n_jobs=0"),
    ("n_jobs=1.5", lambda t: im.calibrate(IMG, "tv", TV, n_jobs=1.5), TypeError, "n_jobs=1.5"),
    ("approximate_loss='yes'", lambda t: im.calibrate(IMG, "tv", TV, approximate_loss="yes"),
     TypeError, "approximate_loss='yes'"),
    ("denoise_invariant of 3", lambda t: im.denoise_invariant(IMG, 3), TypeError,
     "denoiser=3 is not callable"),
    ("denoise_invariant random_state='a'", lambda t: im.denoise_invariant(
        IMG, np.copy, random_state="a"), TypeError, "random_state='a'"),
    ("calibration rebuilt without its callable", lambda t: im.ImageCalibration.from_dict(
        im.calibrate(IMG, lambda x, k: x, {"k": [1]}, **QUIET).to_dict()).denoise(IMG),
     ValueError, "rebuilt without its denoiser"),
    ("calibration.denoise(fallback='no')", lambda t: im.calibrate(
        IMG, "gaussian", {"sigma": [1.0]}, **QUIET).denoise(IMG, fallback="no"), TypeError,
     "fallback='no'"),
]

def _classical_choice():
    """A budgeted choice too short for a CNN: the classical winner."""
    return im.denoise(IMG, "auto", max_time=1e-3, return_calibration=True, progress=False)[1]


def _napari_calibration(method: str = "auto", **options):
    """The napari calibrate widget's computation (no Qt needed)."""
    from sc_noise2self.napari import layouts_for, run_calibration

    return run_calibration(IMG, layouts_for(IMG.shape)[0], method, **options)


IMAGE_MIXING_NOISE_CASES = [
    ("optimal_mix_weight(0.01, -1)", lambda t: im.optimal_mix_weight(0.01, -1), ValueError,
     "noise_variance=-1"),
    ("optimal_mix_weight(nan, 0.01)", lambda t: im.optimal_mix_weight(float("nan"), 0.01),
     ValueError, "loss=nan"),
    ("optimal_mix_weight('0.1', 0.01)", lambda t: im.optimal_mix_weight("0.1", 0.01), TypeError,
     "loss='0.1'"),
    ("mixed_error(weight=inf)", lambda t: im.mixed_error(float("inf"), 0.02, 0.01), ValueError,
     "weight=inf"),
    ("optimal_mix_weight(0.01, 0)", lambda t: im.optimal_mix_weight(0.01, 0.0), None,
     lambda out: out == 0.0),
    ("optimal_mix_weight(0.01, 0.02)", lambda t: im.optimal_mix_weight(0.01, 0.02), None,
     lambda out: out == 1.0),
    ("estimate 2x2", lambda t: im.estimate_noise_variance(np.ones((2, 2))), ValueError,
     "too small to estimate its noise variance"),
    ("estimate with NaN", lambda t: im.estimate_noise_variance(with_nan()), ValueError,
     "NaN or infinite"),
    ("estimate 1-D", lambda t: im.estimate_noise_variance(np.zeros(100)), ValueError,
     "2D image or a 3D volume"),
    ("estimate bool", lambda t: im.estimate_noise_variance(IMG > 0.5), TypeError,
     "dtype bool"),
    ("estimate channel_axis=5", lambda t: im.estimate_noise_variance(RGB, channel_axis=5),
     ValueError, "channel_axis=5 is out of range"),
    ("estimate constant", lambda t: im.estimate_noise_variance(np.full((16, 16), 3.0)), None,
     lambda out: out == 0.0),
    ("estimate uint8", lambda t: im.estimate_noise_variance((IMG * 255).astype(np.uint8)),
     None, lambda out: 0 < out < 0.2),  # in [0, 1] units, like every other image function
    ("max_time with a classical method", lambda t: im.denoise(IMG, "tv", max_time=10),
     TypeError, "max_time applies to method='auto'"),
    ("auto max_time=0", lambda t: im.denoise(IMG, "auto", max_time=0), ValueError,
     "max_time=0 must be positive"),
    ("auto max_time='60'", lambda t: im.denoise(IMG, "auto", max_time="60"), TypeError,
     "max_time='60' must be a number"),
    ("napari calibration max_time=-1", lambda t: _napari_calibration(max_time=-1.0),
     ValueError, "max_time=-1.0"),
    ("napari calibration max_time with tv", lambda t: _napari_calibration("tv", max_time=5.0),
     TypeError, "max_time applies to method='auto'"),
    ("calibrate 4x40 without noise_variance", lambda t: im.calibrate(
        np.random.default_rng(0).random((4, 40)), "tv"), ValueError,
     "Pass noise_variance= yourself"),
    # Structured noise: masks and the detector.
    ("mask='diagonal'", lambda t: im.calibrate(IMG, "tv", mask="diagonal"), ValueError,
     "mask='diagonal'"),
    ("mask naming every axis", lambda t: im.denoise(IMG, "tv", mask=(0, 1)), ValueError,
     "fewer than all of the image's 2 spatial axes"),
    ("mask axis out of range", lambda t: im.denoise_invariant(IMG, lambda x: x, mask=(2,)),
     ValueError, "fewer than all"),
    ("mask of strings", lambda t: im.calibrate(IMG, "tv", mask=("x",)), TypeError,
     "tuple of spatial axes"),
    ("train mask='lines'", lambda t: train(mask="lines"), ValueError, "mask='lines'"),
    ("estimate with every axis a line", lambda t: im.estimate_noise_variance(
        IMG, line_axes=(0, 1)), ValueError, "line_axes=(0, 1) must name fewer than all"),
    ("estimate with an axis out of range", lambda t: im.estimate_noise_variance(
        IMG, line_axes=(5,)), ValueError, "line_axes=(5,) must name fewer than all"),
    ("estimate reach=5", lambda t: im.estimate_noise_variance(IMG, reach=5), ValueError,
     "reach=5 must be from 0 to 3"),
    ("estimate reach=1.5", lambda t: im.estimate_noise_variance(IMG, reach=1.5), TypeError,
     "reach=1.5 must be a whole number"),
    ("estimate reach with lines", lambda t: im.estimate_noise_variance(
        IMG, reach=1, line_axes=(1,)), ValueError, "blocks and lines do not combine"),
    ("train blocks with random masking", lambda t: train(mask="blocks", masking="random"),
     ValueError, "need masking='grid'"),
    ("train blocks with median stand-ins", lambda t: train(mask="blocks", replacement="median"),
     ValueError, "need masking='grid' and replacement='mean' or 'random'"),
    ("AutoChoice.apply on integers", lambda t: _classical_choice().apply(
        (IMG * 255).astype(np.uint8)), TypeError, "floats has dtype uint8"),
    ("blocks on a 9 x 9 image", lambda t: im.calibrate(
        np.random.default_rng(0).random((9, 9)), "gaussian", mask="blocks",
        noise_variance=0.01, progress=False), None,
     lambda out: out.settings["mask"] == "blocks" and out.settings["reach"] == 1
     and out.settings["noise_correlation"]["mask"] == "blocks"),
    ("predict_blocks mix_weight=1.5", lambda t: im.predict_blocks(
        im.ImageData(IMG, "YX"), tiny_model(), mix_weight=1.5), ValueError,
     "mix_weight=1.5 must be at most 1"),
    ("predict_blocks mix_weight=nan", lambda t: im.predict_blocks(
        im.ImageData(IMG, "YX"), tiny_model(), mix_weight=float("nan")), ValueError,
     "mix_weight"),
    ("noise_correlation max_lag=0", lambda t: im.noise_correlation(IMG, max_lag=0),
     ValueError, "max_lag=0"),
    ("noise_correlation threshold=1.5", lambda t: im.noise_correlation(IMG, threshold=1.5),
     ValueError, "threshold=1.5 must be a correlation in"),
    ("noise_correlation on a 12-pixel axis", lambda t: im.noise_correlation(IMG[:12]),
     ValueError, "too few to estimate the noise correlation"),
    ("auto mask on a tiny image keeps pixels",
     lambda t: im.calibrate(np.random.default_rng(0).random((4, 40)), "tv",
                            noise_variance=0.01).settings["mask"],
     None, lambda out: out == "pixel"),
]

CNN_CASES = [
    ("steps=0", lambda t: train(steps=0), ValueError, "steps=0 must be at least 1"),
    ("steps=2.5", lambda t: train(steps=2.5), TypeError, "steps=2.5"),
    ("steps='10'", lambda t: train(steps="10"), TypeError, "steps='10'"),
    ("epochs=-1", lambda t: train(steps=None, epochs=-1), ValueError, "epochs=-1"),
    ("steps and epochs", lambda t: train(epochs=2), ValueError, "not both"),
    ("max_time=0", lambda t: train(max_time=0), ValueError, "max_time=0"),
    ("max_time=-5", lambda t: train(max_time=-5), ValueError, "max_time=-5"),
    ("max_time='60'", lambda t: train(max_time="60"), TypeError, "max_time='60'"),
    ("max_time=nan", lambda t: train(max_time=float("nan")), ValueError, "max_time=nan"),
    ("batch_size=0", lambda t: train(batch_size=0), ValueError, "batch_size=0"),
    ("batch_size=2.5", lambda t: train(batch_size=2.5), TypeError, "batch_size=2.5"),
    ("lr=-1", lambda t: train(lr=-1.0), ValueError, "lr=-1.0"),
    ("lr='fast'", lambda t: train(lr="fast"), TypeError, "lr='fast'"),
    ("patch_size=2", lambda t: train(patch_size=2), ValueError, "patch_size=2"),
    ("patch_size=16.5", lambda t: train(patch_size=16.5), TypeError, "patch_size=16.5"),
    ("patch_size for 3 axes", lambda t: train(patch_size=(8, 8, 8)), ValueError,
     "patch_size=(8, 8, 8) must be an int or 2 ints"),
    ("val_fraction=0.8", lambda t: train(val_fraction=0.8), ValueError, "val_fraction=0.8"),
    ("steps_per_epoch=0", lambda t: train(steps_per_epoch=0), ValueError, "steps_per_epoch=0"),
    ("patience=0", lambda t: train(patience=0), ValueError, "patience=0"),
    ("mask_stride=1", lambda t: train(mask_stride=1), ValueError, "mask_stride=1"),
    ("masking='checkerboard'", lambda t: train(masking="checkerboard"), ValueError,
     "Unknown masking='checkerboard'"),
    ("replacement='zero'", lambda t: train(replacement="zero"), ValueError,
     "Unknown replacement='zero'"),
    ("model='resnet'", lambda t: im.train(IMG, "resnet", **CNN), ValueError,
     "Unknown model='resnet'"),
    ("device='tpu'", lambda t: train(device="tpu"), ValueError, "Unknown device='tpu'"),
    ("model_kwargs width", lambda t: train(model_kwargs={"width": 8}), TypeError,
     "Unknown model_kwargs ['width']"),
    ("model_kwargs=[1]", lambda t: train(model_kwargs=[1]), TypeError, "model_kwargs=[1]"),
    ("ema=1.5", lambda t: train(ema=1.5), ValueError, "ema=1.5"),
    ("random_state=-1", lambda t: train(random_state=-1), ValueError, "random_state=-1"),
    ("compile='yes'", lambda t: train(compile="yes"), TypeError, "compile='yes'"),
    ("callback=3", lambda t: train(callback=3), TypeError, "callback=3"),
    ("n_spatial=4", lambda t: train(n_spatial=4), ValueError, "n_spatial=4"),
    ("RGB without channel_axis", lambda t: im.train(RGB, "dncnn", **CNN), ValueError,
     "pass channel_axis=-1"),
    ("too small to train", lambda t: im.train(np.zeros((3, 30)), "dncnn", **CNN), ValueError,
     "at least 4 pixels"),
    ("NaN training image", lambda t: im.train(with_nan(), "dncnn", **CNN), ValueError,
     "NaN or infinite"),
    ("no images", lambda t: im.train([], "dncnn", **CNN), ValueError, "empty list"),
    ("different channel counts", lambda t: im.train([RGB, RGB[..., :2]], "dncnn",
                                                    channel_axis=-1, **CNN), ValueError,
     "different channel counts"),
    ("denoise_cnn of a constant image", lambda t: warned(
        "constant", im.denoise_cnn, np.zeros((16, 16)), "dncnn", **CNN), None,
     lambda out: np.array_equal(out, np.zeros((16, 16)))),
]

CNN_PREDICT_AND_FILE_CASES = [
    ("grey model on an RGB array", lambda t: tiny_model().predict(
        np.stack([IMG] * 3, axis=-1)), ValueError, "would be read as 24 images of (24, 3)"),
    ("predict a 4-D array", lambda t: tiny_model().predict(np.zeros((2, 3, 8, 8))), ValueError,
     "this model takes images of 2 axes"),
    ("predict NaN", lambda t: tiny_model().predict(with_nan()), ValueError, "NaN or infinite"),
    ("predict tile_size=0", lambda t: tiny_model().predict(IMG, tile_size=0), ValueError,
     "tile_size=0"),
    ("predict tile_size=8.5", lambda t: tiny_model().predict(IMG, tile_size=8.5), TypeError,
     "tile_size=8.5"),
    ("predict tile_overlap=-1", lambda t: tiny_model().predict(IMG, tile_size=8,
                                                               tile_overlap=-1), ValueError,
     "tile_overlap=-1"),
    ("predict batch_size=0", lambda t: tiny_model().predict(IMG, batch_size=0), ValueError,
     "batch_size=0"),
    # Issue 25: seams, an ignored option and a constant image, each handled before work.
    ("predict tile_overlap below the reach", lambda t: tiny_model().predict(
        IMG, tile_size=8, tile_overlap=1), ValueError, "is below this network's reach"),
    ("predict tile_overlap without tile_size", lambda t: tiny_model().predict(
        IMG, tile_overlap=40), ValueError, "has no effect without tile_size"),
    ("predict a constant image", lambda t: tiny_model().predict(np.full((24, 24), 0.3)),
     None, lambda out: np.array_equal(out, np.full((24, 24), 0.3))),
    ("predict_blocks of a constant image", lambda t: _blocks().predict_blocks(
        _yx(np.full((40, 40), 0.3, np.float32)), tiny_model(), block=16), None,
     lambda out: np.array_equal(out, np.full((40, 40), 0.3, np.float32))),
    ("predict invariant='yes'", lambda t: tiny_model().predict(IMG, invariant="yes"),
     TypeError, "invariant='yes'"),
    ("predict amp='fp8'", lambda t: tiny_model().predict(IMG, amp="fp8"), ValueError,
     "amp='fp8'"),
    # float16 has no CPU path: said, and the prediction runs in float32.
    ("predict amp='fp16' on a CPU", lambda t: warned(
        "amp='fp16' is ignored on device 'cpu'", tiny_model().predict, IMG, amp="fp16"),
     None, lambda out: np.array_equal(out, tiny_model().predict(IMG))),
    ("predict a 1x1 image", lambda t: tiny_model().predict(np.ones((1, 1))), None,
     lambda out: out.shape == (1, 1) and np.isfinite(out).all()),
    ("tiled equals whole", lambda t: tiny_model().predict(IMG, tile_size=8), None,
     lambda out: np.abs(out - tiny_model().predict(IMG)).max() < 1e-4),
    ("load a missing file", lambda t: im.Noise2SelfModel.load(t / "none.pt"),
     FileNotFoundError, "none.pt"),
    ("load an empty file", lambda t: im.Noise2SelfModel.load(write(t / "e.pt", b"")),
     ValueError, "is empty (0 bytes)"),
    ("load a text file", lambda t: im.Noise2SelfModel.load(write(t / "x.pt", b"hello")),
     ValueError, "x.pt' cannot be read as a Noise2SelfModel file"),
    ("load a truncated file", lambda t: im.Noise2SelfModel.load(write(
        t / "cut.pt", saved_model(t).read_bytes()[:500])), ValueError, "cut.pt"),
    ("load a saved tensor", lambda t: im.Noise2SelfModel.load(_torch_save(t / "w.pt")),
     ValueError, "is not a Noise2SelfModel file"),
    ("load a folder", lambda t: im.Noise2SelfModel.load(t), FileNotFoundError, "is a folder"),
    ("save over a file", lambda t: tiny_model().save(write(t / "m.pt", b"keep")),
     FileExistsError, "overwrite"),
    ("save overwrite='yes'", lambda t: tiny_model().save(t / "n.pt", overwrite="yes"),
     TypeError, "overwrite='yes'"),
    ("save to a folder", lambda t: tiny_model().save(t, overwrite=True), IsADirectoryError,
     "is a folder"),
    ("save then load", lambda t: im.Noise2SelfModel.load(saved_model(t), device="cpu"), None,
     lambda out: np.array_equal(out.predict(IMG), tiny_model().predict(IMG))),
]


def _torch_save(path):
    import torch

    torch.save(torch.zeros(3), path)
    return path



def _plain_zarr(tmp_path):
    import zarr

    zarr.open_array(tmp_path / "plain.zarr", mode="w", shape=(4, 4), dtype="f4")
    return tmp_path / "plain.zarr"


def _files():
    from sc_noise2self.image import files

    return files


def _blocks():
    from sc_noise2self.image import blocks

    return blocks


def _workflows():
    from sc_noise2self.image import workflows

    return workflows


def _truncated_tiff(folder):
    """A TIFF cut off after its first 2,000 bytes, as an interrupted copy leaves it."""
    whole = _files().write(folder / "whole.tif", np.tile(IMG, (4, 4)), axes="YX")
    cut = folder / "cut.tif"
    cut.write_bytes(whole.read_bytes()[:2000])
    return cut


def _yx(values=None):
    return _files().ImageData(IMG if values is None else values, "YX")


# Microscopy files, blocks and the file workflows (issue 18).
IMAGE_FILE_CASES = [
    ("read a .png", lambda t: _files().read(t / "x.png"), ValueError,
     "neither a TIFF (.tif, .tiff, .ome.tif) nor an OME-Zarr"),
    ("read a missing file", lambda t: _files().read(t / "gone.tif"), FileNotFoundError,
     "does not exist"),
    ("read a zarr that is not OME", lambda t: _files().read(_plain_zarr(t)), ValueError,
     "holds no OME-Zarr image"),
    ("write without axes", lambda t: _files().write(t / "a.tif", IMG), ValueError,
     "needs axes="),
    ("axes of the wrong length", lambda t: _files().write(t / "a.tif", IMG, axes="ZYX"),
     ValueError, "axes='ZYX' has 3 letters for an image of 2 dimensions"),
    ("an axis twice", lambda t: _files().ImageData(np.zeros((2, 2, 2)), "YXY"), ValueError,
     "names an axis twice"),
    ("an unknown axis letter", lambda t: _files().ImageData(np.zeros((2, 2, 2)), "QYX"),
     ValueError, "outside 'TCZYX'"),
    ("axes not a string", lambda t: _files().ImageData(IMG, 5), TypeError, "axes=5"),
    ("scale of the wrong length", lambda t: _files().ImageData(IMG, "YX", (1.0,)),
     ValueError, "one positive pixel size per axis"),
    ("a negative scale", lambda t: _files().ImageData(IMG, "YX", (1.0, -2.0)), ValueError,
     "scale=(1.0, -2.0)"),
    ("axes with ImageData", lambda t: _files().write(t / "a.tif", _yx(), axes="YX"),
     ValueError, "only with a plain array"),
    ("write over an existing file", lambda t: [_files().write(t / "a.zarr", IMG, axes="YX"),
                                               _files().write(t / "a.zarr", IMG, axes="YX")],
     FileExistsError, "exists"),
    ("block=0", lambda t: _blocks().denoise_blocks(
        _yx(), im.denoise(IMG, "gaussian", return_calibration=True, **QUIET)[1], block=0),
     ValueError, "block (each size)=0"),
    ("spatial ZYX on a 2D image", lambda t: _blocks().denoise_blocks(
        _yx(), im.denoise(IMG, "gaussian", return_calibration=True, **QUIET)[1],
        spatial="ZYX"), ValueError, "spatial='ZYX'"),
    ("calibrate_file to a .png", lambda t: _workflows().calibrate_file(_yx(), t / "o.png"),
     ValueError, "neither a TIFF"),
    ("calibrate_file into a missing folder", lambda t: _workflows().calibrate_file(
        _yx(), t / "no" / "o.zarr"), FileNotFoundError, "does not exist; create it first"),
    ("train_file frames=0", lambda t: _workflows().train_file(_yx(), frames=0), ValueError,
     "frames=0"),
    # Issue 25: refused before any work, naming the argument or the file.
    ("calibrate_file sample=0", lambda t: _workflows().calibrate_file(
        _yx(), t / "o.zarr", sample=0), ValueError, "sample=0 must be at least 1"),
    ("calibrate_file of a bool image", lambda t: _workflows().calibrate_file(
        _yx(IMG > 0.5), t / "o.zarr"), TypeError, "convert a mask with .astype(float)"),
    ("a truncated TIFF names the file", lambda t: _files().read(_truncated_tiff(t)),
     ValueError, "could not be read as tiff"),
    ("YXC pixels to TIFF come back as YXC", lambda t: _files().read(_files().write(
        t / "rgb.tif", np.stack([IMG] * 3, axis=-1), axes="YXC")), None,
     lambda out: out.axes == "YXC" and out.shape == (*IMG.shape, 3)),
    ("blocks of a TYX stack keep shape", lambda t: _blocks().denoise_blocks(
        _files().ImageData(np.stack([IMG, IMG]), "TYX"),
        im.denoise(IMG, "median", return_calibration=True, **QUIET)[1], block=8), None,
     lambda out: out.shape == (2, *IMG.shape) and np.isfinite(out).all()),
]

def _package(folder, rdf: dict | None = None, *, damaged: bool = False):
    """A bioimage.io package: ours (exported), another tool's RDF, or a cut-off zip."""
    path = folder / "model.zip"
    if rdf is None:
        tiny_model().export_bioimageio(path, sample=IMG, authors=["A"])
        if damaged:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path
    import zipfile

    import yaml

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", yaml.safe_dump(rdf))
    return path


_OTHER_TOOL = {"type": "model", "format_version": "0.5.4", "name": "CAREamics N2V",
               "config": {"careamics": {}}}

# Issue 27: bioimage.io packages, refused before any work where the input is wrong.
BIOIMAGEIO_CASES = [
    ("export without authors", lambda t: tiny_model().export_bioimageio(
        t / "m.zip", sample=IMG, authors=[]), ValueError, "bioimage.io asks who made"),
    ("export to a .pt", lambda t: tiny_model().export_bioimageio(
        t / "m.pt", sample=IMG, authors=["A"]), ValueError, "path ending in .zip"),
    ("export an RGB sample to a grey model", lambda t: tiny_model().export_bioimageio(
        t / "m.zip", sample=RGB, authors=["A"]), ValueError, "image has shape (24, 24, 3)"),
    ("export with two names for one channel", lambda t: tiny_model().export_bioimageio(
        t / "m.zip", sample=IMG, authors=["A"], channel_names=["a", "b"]), ValueError,
     "pass 1 distinct names"),
    ("export with pixel sizes for 3 axes", lambda t: tiny_model().export_bioimageio(
        t / "m.zip", sample=IMG, authors=["A"], pixel_size=[1, 1, 1]), ValueError,
     "one size per spatial axis (2, in yx order)"),
    ("load another tool's package", lambda t: im.load_model(_package(t, _OTHER_TOOL)),
     ValueError, "'CAREamics N2V') was not exported by sc_noise2self"),
    ("load a spec 0.4 package", lambda t: im.load_model(_package(
        t, {**_OTHER_TOOL, "format_version": "0.4.10"})), ValueError,
     "a bioimage.io model of spec 0.4.10"),
    ("load a damaged package", lambda t: im.load_model(_package(t, damaged=True)),
     ValueError, "not a readable bioimage.io package"),
]

IMAGE_CASES = (IMAGE_INPUT_CASES + IMAGE_DENOISE_CASES + IMAGE_CALIBRATION_CASES
               + IMAGE_MIXING_NOISE_CASES + CNN_CASES + CNN_PREDICT_AND_FILE_CASES
               + IMAGE_FILE_CASES + BIOIMAGEIO_CASES)


@pytest.mark.parametrize(("make", "error", "expect"), [c[1:] for c in IMAGE_CASES],
                         ids=[c[0] for c in IMAGE_CASES])
def test_bad_or_edge_image_input(tmp_path, make, error, expect):
    test_bad_or_edge_input(tmp_path, make, error, expect)


def test_image_inputs_are_never_modified():
    image = IMG.copy()
    image.flags.writeable = False
    im.denoise(image, "tv", **QUIET)
    im.estimate_noise_variance(image)
    tiny_model().predict(image, tile_size=8)
    assert np.array_equal(image, IMG)
