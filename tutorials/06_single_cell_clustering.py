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
# # 6. Which clusters are real? Which markers are real?
#
# After "how many PCs", a scanpy user asks two more questions, and the molecule split answers
# both.
#
# 1. **Which clusters?** A clustering predicts each cell's fresh molecules by its cluster's
#    rate. Make the clusters on half A of each cell's molecules, predict half B's counts at
#    each cell's own depth, by its cluster's rate without the cell itself, and the resolution
#    with the lowest Poisson deviance is the one whose clusters predict fresh molecules best.
#    One cluster is always on the curve; the coarsest resolution within one standard error of
#    the best is chosen. Each split between two clusters is then tested on half B, and the
#    splits that do not replicate are merged.
# 2. **Which marker genes are real?** Clustering and then testing the same counts is double
#    dipping: the clusters were made to make the genes differ. Count splitting (Neufeld et
#    al. 2024) clusters on half A and tests on half B, whose noise is independent.
#
# **Time:** a few minutes on 2 CPU cores.

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
import warnings

# %% [markdown]
# ## PBMC 3k: the resolution curve
#
# Raw counts of the scanpy tutorial dataset, lightly filtered. `tl.calibrate_leiden` splits
# the molecules (by the negative binomial, at NB sizes estimated per gene), builds the graph of
# half A on its 2,000 most variable genes (each scaled to unit variance) and runs Leiden at
# every resolution of the grid; resolution 0 is one cluster, the baseline. The band is one
# paired standard error. Then each chosen cluster is clustered again on its own graph, and a
# split is kept only when it predicts half B better by more than one standard error: small
# groups that one graph of all the cells leaves merged are found this way. The record lists
# the splits it kept.

# %%
adata = n2s.datasets.pbmc3k()
sc.pp.filter_cells(adata, min_genes=200)
sc.pp.filter_genes(adata, min_cells=10)
n2s.tl.calibrate_leiden(adata)
record = adata.uns["noise2self_leiden"]
print("chosen resolution:", record["resolution"], "(lowest loss at", record["params"]["best_min"],
      ") | clusters:", adata.obs["noise2self_leiden"].nunique())
print("before refinement:", record["params"]["n_clusters_before_refinement"], "| kept splits:",
      record["params"]["refinement"])
n2s.pl.resolution_curve(adata, show=False)
plt.show()

# %% [markdown]
# ## Splits that replicate on half B
#
# `tl.validate_clusters_split` joins half A's clusters into a tree and tests each split, from
# the root down, on half B's molecules: does predicting each side by its own rate beat
# predicting both by their common rate? Splits that fail at the family-wise level 0.05 are
# merged (grey).

# %%
n2s.tl.validate_clusters_split(adata)
print(adata.obs["noise2self_leiden_validated"].nunique(), "clusters replicate")
n2s.pl.cluster_tree(adata, show=False)
plt.show()

# %% [markdown]
# ## Markers tested on the half the clusters never saw
#
# `tl.rank_genes_groups_split` draws the calibration's split again and runs scanpy's own
# `rank_genes_groups` on half B, normalised and log1p-transformed, for the validated clusters.
# The result is in scanpy's format; the tested values are in `layers["rank_genes_groups_split"]`,
# which the dotplot shows. Each cluster is then named by the textbook PBMC markers among its
# top half-B markers.

# %%
n2s.tl.rank_genes_groups_split(adata, groupby="noise2self_leiden_validated")
known = ["CD3E", "IL7R", "CCR7", "MS4A1", "CD79A", "CD14", "LYZ", "FCGR3A", "MS4A7", "NKG7",
         "GNLY", "FCER1A", "CST3", "PPBP"]
markers = sc.get.rank_genes_groups_df(adata, group=None, key="rank_genes_groups_split")
for group, table in markers.groupby("group", observed=True):
    top = table.query("pvals_adj < 0.05 and scores > 0").head(30)["names"]
    print(group, (adata.obs["noise2self_leiden_validated"] == group).sum(), "cells:",
          [g for g in top if g in known])
sc.pl.rank_genes_groups_dotplot(adata, key="rank_genes_groups_split", n_genes=4,
                                layer="rank_genes_groups_split")

# %% [markdown]
# ## Why it matters: a population with no clusters at all
#
# One population, with depths varying several-fold and per-gene NB overdispersion, as real
# cells have (`sc_noise2self.simulation.simulate_counts`). Leiden at resolution 1 finds
# clusters in the noise; testing them on the same counts (double dipping) gives far more than
# 5% of p-values below 0.05. `calibrate_leiden` keeps one cluster and says so, and the
# count-split test of forced clusters gives about 5%, as valid p-values must.

# %%
null = n2s.simulation.simulate_counts(1500, 600, depth_sd=0.6, random_state=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    n2s.tl.calibrate_leiden(null)
print("calibrate_leiden:", null.obs["noise2self_leiden"].nunique(), "cluster |",
      [str(w.message)[:80] for w in caught if "baseline" in str(w.message)])

naive = null.copy()  # the usual workflow on the same counts
sc.pp.normalize_total(naive, target_sum=1e4)
sc.pp.log1p(naive)
sc.pp.pca(naive)
sc.pp.neighbors(naive)
sc.tl.leiden(naive, resolution=1.0, flavor="igraph", n_iterations=2, directed=False)
sc.tl.rank_genes_groups(naive, "leiden", method="wilcoxon", tie_correct=True)
null.uns["rank_genes_groups"] = naive.uns["rank_genes_groups"]

# Clusters forced at resolution 1, kept unvalidated (validation would merge them all).
n2s.tl.rank_genes_groups_split(null, resolution=1.0, validate=False, n_genes=600)
for key in ("rank_genes_groups", "rank_genes_groups_split"):
    p = np.concatenate([null.uns[key]["pvals"][g] for g in null.uns[key]["pvals"].dtype.names])
    print(f"{key}: {np.mean(p < 0.05):.3f} of p-values below 0.05")
n2s.pl.pvalue_qq(null, naive_key="rank_genes_groups");

# %% [markdown]
# ## What you learned
#
# - `tl.calibrate_leiden` chooses the clustering by the self-supervised loss: clusters from
#   half A, each cell's half-B counts predicted at its own depth by its cluster's rate without
#   itself. One cluster is on every curve, and the coarsest resolution within one standard
#   error of the best is taken (`rule="1se"`). `pl.resolution_curve` shows it all. Each
#   chosen cluster is then split again on its own graph where the loss says so.
# - `tl.validate_clusters_split` merges the splits that do not replicate on half B;
#   `pl.cluster_tree` draws the tree with its p-values.
# - `tl.rank_genes_groups_split` tests markers of those clusters on the same split's half B,
#   in scanpy's format. On pure noise its p-values are uniform; double dipping's are not.
# - The Leiden family and the marker tests split by the negative binomial at estimated sizes:
#   binomial halves of overdispersed counts share each cell's noise (`docs/guide.md`).
# - `tl.association_split` does the same for a covariate of half A, such as a pseudotime.
