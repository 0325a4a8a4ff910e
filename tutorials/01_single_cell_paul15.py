# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Choosing the PCA rank of single-cell data without clean data (paul15)
#
# This reproduces Figure 3 of Batson & Royer, *Noise2Self* (ICML 2019) on the Paul et al.
# (2015) mouse myeloid progenitors: 2,730 cells, 3,451 genes, raw UMI counts.
#
# **The idea.** Each molecule was caught, or not, independently. So we can split every cell's
# counts into two halves, A and B, whose noise is independent given the truth (binomial
# *molecular cross-validation*). A denoiser fitted on A and scored against B has a
# self-supervised loss whose minimum is the minimum of the true loss. For PCA, one truncated
# SVD of half A gives the loss at every rank.
#
# **Time:** about a minute on 2 CPU cores. The data come from `sc_noise2self.datasets.paul15()`,
# which reads `$SC_NOISE2SELF_DATA/paul15.h5ad` and otherwise downloads through scanpy.

# %%
# %matplotlib inline
import warnings

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import sc_noise2self as n2s

sc.settings.verbosity = 1
sc.set_figure_params(dpi=70, frameon=False)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: text bars
print("sc_noise2self", n2s.__version__, "| data folder:", n2s.datasets.data_dir())

# %%
adata = n2s.datasets.paul15()  # raw integer counts in X
adata

# %% [markdown]
# ## Calibrate the rank
#
# `tl.calibrate_pca` splits the counts (share `p=0.7` in half A, the package default), fits
# one SVD and scores every rank from 0 to `max_comps` against half B. The whole curve is kept
# in `adata.uns["noise2self"]`, so the figure can be redrawn and the run repeated.

# %%
n2s.tl.calibrate_pca(adata, max_comps=100)
record = adata.uns["noise2self"]
best = int(record["best"])
loss = record["loss"]
print(f"chosen rank: {best}")
print(f"loss at rank 0 (gene means only): {loss[0]:.5f}, at the minimum: {loss[best]:.5f}, "
      f"at rank 100: {loss[100]:.5f}")
n2s.pl.calibration_curve(adata);

# %% [markdown]
# The loss falls while the components capture biology, reaches a minimum, and rises again as
# further components start fitting the noise of half A. The minimum is interior: neither the
# smallest nor the largest rank.
#
# ## Denoise at too few, the chosen, and too many ranks
#
# `tl.denoise_pca` projects the normalised, square-root transformed counts of *all* molecules
# on `n_comps` components. Each run gets its own `key_added`. `tl.denoised_values` reads back
# chosen genes from what was stored, without a dense cells x genes matrix.

# %%
ranks = {"too few": 2, "chosen": best, "too many": 100}
for rank in ranks.values():
    n2s.tl.denoise_pca(adata, n_comps=rank, key_added=f"pca_{rank}")

genes = ["Mpo", "Klf1", "Ifitm1"]
# The raw panel uses the same scale as the denoisers: normalised to the median depth, sqrt.
raw = sc.pp.normalize_total(adata, inplace=False)["X"][:, adata.var_names.get_indexer(genes)]
panels = {"raw": np.sqrt(raw.toarray())}
for name, rank in ranks.items():
    panels[f"{name} (rank {rank})"] = n2s.tl.denoised_values(adata, genes, key=f"pca_{rank}")

# %% [markdown]
# ## Mpo against Klf1, coloured by Ifitm1
#
# Mpo marks the myeloid (neutrophil) branch and Klf1 the erythroid branch; Ifitm1 is high in
# the progenitors. In the raw counts most cells have zero of one or both genes. Too few
# components merge the branches; too many bring back the noise. At the chosen rank the two
# branches separate, with the Ifitm1-high progenitors where they meet.

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
for ax, (title, values) in zip(axes, panels.items(), strict=True):
    points = ax.scatter(values[:, 0], values[:, 1], c=values[:, 2], s=4, cmap="viridis")
    ax.set(title=title, xlabel="Mpo", ylabel="Klf1")
fig.colorbar(points, ax=axes, label="Ifitm1", shrink=0.8);

# %% [markdown]
# ## The denoised cell scores feed scanpy directly
#
# `tl.denoise_pca(adata)` without `n_comps` calibrates and denoises in one call. It writes the
# cell scores to `obsm["X_noise2self"]`, ready for `sc.pp.neighbors(use_rep=...)`. The same
# seed gives the same split, so it chooses the same rank as above.

# %%
n2s.tl.denoise_pca(adata, max_comps=100)
assert adata.uns["noise2self"]["best"] == best
sc.pp.neighbors(adata, use_rep="X_noise2self", random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color="paul15_clusters", title=f"UMAP on {best} calibrated components")

# %% [markdown]
# ## Against an elbow plot
#
# The usual way to pick the rank is to look for the elbow of the explained variance after
# scanpy's log-normalisation. Two common readings of "the elbow" (the point farthest from the
# chord of the curve, on a linear or on a log scale) are computed below. They need not agree,
# and neither has an objective behind it: the calibrated rank is the minimum of an estimate of
# the denoising error.

# %%
lognorm = adata.copy()
sc.pp.normalize_total(lognorm)
sc.pp.log1p(lognorm)
sc.pp.pca(lognorm, n_comps=50, random_state=0)
ratio = lognorm.uns["pca"]["variance_ratio"]


def farthest_from_chord(y):
    """Rank (1-based) of the point farthest from the line joining the first and last."""
    x = np.arange(1, len(y) + 1)
    distance = np.abs((y[-1] - y[0]) * x - (x[-1] - x[0]) * y + x[-1] * y[0] - y[-1] * x[0])
    return int(x[np.argmax(distance)])


elbows = {"linear": farthest_from_chord(ratio), "log": farthest_from_chord(np.log(ratio))}
print(f"elbow (linear scale): {elbows['linear']}, elbow (log scale): {elbows['log']}, "
      f"self-supervised minimum: {best}")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.semilogy(np.arange(1, 51), ratio, "o-", ms=3)
for (scale, rank), color in zip(elbows.items(), ["C1", "C2"], strict=True):
    left.axvline(rank, color=color, ls=":", label=f"elbow ({scale}): {rank}")
left.axvline(best, color="C3", ls="--", label=f"calibrated: {best}")
left.set(xlabel="component", ylabel="variance ratio", title="elbow plot (log1p)")
left.legend(frameon=False)
n2s.pl.calibration_curve(adata, ax=right, show=False)
right.set_title("self-supervised loss");

# %% [markdown]
# ## What you learned
#
# - `tl.calibrate_pca` scores every rank by molecular cross-validation from one SVD; the
#   curve and its minimum live in `adata.uns["noise2self"]` and `pl.calibration_curve` draws
#   them.
# - Too few components blur cell types together, too many keep the noise; the self-supervised
#   minimum sits between, without clean data and without looking at a plot.
# - `tl.denoise_pca` writes `obsm["X_noise2self"]`, which `sc.pp.neighbors(use_rep=...)` and
#   the rest of scanpy use as they would `X_pca`; `tl.denoised_values` gives chosen genes.
# - An elbow plot gives a rank that depends on how you read it; the calibrated rank minimises
#   an estimate of the error.
#
# Next: tutorial 4 compares PCA with kNN, diffusion and autoencoder denoisers on the same
# split, and checks whether the binomial split suits the data.
