"""Write the tutorial notebooks from the cell lists below (outputs stripped).

The notebooks are generated, not edited by hand: change a cell here, then run

    python tutorials/build_notebooks.py            # rewrite tutorials/*.ipynb
    python tutorials/build_notebooks.py --check    # exit 1 if a committed notebook differs

``tests/test_docs.py`` runs the check, so a notebook edited by hand (or committed with
outputs) fails the tests. CI executes the notebooks with ``pytest --nbmake tutorials/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# Shared first code cell: inline figures, quiet logs, and a clear message without the data.
SETUP = """\
%matplotlib inline
import warnings

import matplotlib.pyplot as plt
import numpy as np
import scanpy as sc

import sc_noise2self as n2s

sc.settings.verbosity = 1
sc.set_figure_params(dpi=70, frameon=False)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: text bars
print("sc_noise2self", n2s.__version__, "| data folder:", n2s.datasets.data_dir())"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def paul15_notebook() -> list:
    return [
        md("""
# 1. Choosing the PCA rank of single-cell data without clean data (paul15)

This reproduces Figure 3 of Batson & Royer, *Noise2Self* (ICML 2019) on the Paul et al.
(2015) mouse myeloid progenitors: 2,730 cells, 3,451 genes, raw UMI counts.

**The idea.** Each molecule was caught, or not, independently. So we can split every cell's
counts into two halves, A and B, whose noise is independent given the truth (binomial
*molecular cross-validation*). A denoiser fitted on A and scored against B has a
self-supervised loss whose minimum is the minimum of the true loss. For PCA, one truncated
SVD of half A gives the loss at every rank.

**Time:** about a minute on 2 CPU cores. The data come from `sc_noise2self.datasets.paul15()`,
which reads `$SC_NOISE2SELF_DATA/paul15.h5ad` and otherwise downloads through scanpy.
"""),
        code(SETUP),
        code("""
adata = n2s.datasets.paul15()  # raw integer counts in X
adata
"""),
        md("""
## Calibrate the rank

`tl.calibrate_pca` splits the counts (share `p=0.7` in half A, the package default), fits
one SVD and scores every rank from 0 to `max_comps` against half B. The whole curve is kept
in `adata.uns["noise2self"]`, so the figure can be redrawn and the run repeated.
"""),
        code("""
n2s.tl.calibrate_pca(adata, max_comps=100)
record = adata.uns["noise2self"]
best = int(record["best"])
loss = record["loss"]
print(f"chosen rank: {best}")
print(f"loss at rank 0 (gene means only): {loss[0]:.5f}, at the minimum: {loss[best]:.5f}, "
      f"at rank 100: {loss[100]:.5f}")
n2s.pl.calibration_curve(adata);
"""),
        md("""
The loss falls while the components capture biology, reaches a minimum, and rises again as
further components start fitting the noise of half A. The minimum is interior: neither the
smallest nor the largest rank.

## Denoise at too few, the chosen, and too many ranks

`tl.denoise_pca` projects the normalised, square-root transformed counts of *all* molecules
on `n_comps` components. Each run gets its own `key_added`. `tl.denoised_values` reads back
chosen genes from what was stored, without a dense cells x genes matrix.
"""),
        code("""
ranks = {"too few": 2, "chosen": best, "too many": 100}
for rank in ranks.values():
    n2s.tl.denoise_pca(adata, n_comps=rank, key_added=f"pca_{rank}")

genes = ["Mpo", "Klf1", "Ifitm1"]
# The raw panel uses the same scale as the denoisers: normalised to the median depth, sqrt.
raw = sc.pp.normalize_total(adata, inplace=False)["X"][:, adata.var_names.get_indexer(genes)]
panels = {"raw": np.sqrt(raw.toarray())}
for name, rank in ranks.items():
    panels[f"{name} (rank {rank})"] = n2s.tl.denoised_values(adata, genes, key=f"pca_{rank}")
"""),
        md("""
## Mpo against Klf1, coloured by Ifitm1

Mpo marks the myeloid (neutrophil) branch and Klf1 the erythroid branch; Ifitm1 is high in
the progenitors. In the raw counts most cells have zero of one or both genes. Too few
components merge the branches; too many bring back the noise. At the chosen rank the two
branches separate, with the Ifitm1-high progenitors where they meet.
"""),
        code("""
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), layout="constrained")
for ax, (title, values) in zip(axes, panels.items(), strict=True):
    points = ax.scatter(values[:, 0], values[:, 1], c=values[:, 2], s=4, cmap="viridis")
    ax.set(title=title, xlabel="Mpo", ylabel="Klf1")
fig.colorbar(points, ax=axes, label="Ifitm1", shrink=0.8);
"""),
        md("""
## The denoised cell scores feed scanpy directly

`tl.denoise_pca(adata)` without `n_comps` calibrates and denoises in one call. It writes the
cell scores to `obsm["X_noise2self"]`, ready for `sc.pp.neighbors(use_rep=...)`. The same
seed gives the same split, so it chooses the same rank as above.
"""),
        code("""
n2s.tl.denoise_pca(adata, max_comps=100)
assert adata.uns["noise2self"]["best"] == best
sc.pp.neighbors(adata, use_rep="X_noise2self", random_state=0)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color="paul15_clusters", title=f"UMAP on {best} calibrated components")
"""),
        md("""
## Against an elbow plot

The usual way to pick the rank is to look for the elbow of the explained variance after
scanpy's log-normalisation. Two common readings of "the elbow" (the point farthest from the
chord of the curve, on a linear or on a log scale) are computed below. They need not agree,
and neither has an objective behind it: the calibrated rank is the minimum of an estimate of
the denoising error.
"""),
        code("""
lognorm = adata.copy()
sc.pp.normalize_total(lognorm)
sc.pp.log1p(lognorm)
sc.pp.pca(lognorm, n_comps=50, random_state=0)
ratio = lognorm.uns["pca"]["variance_ratio"]


def farthest_from_chord(y):
    \"\"\"Rank (1-based) of the point farthest from the line joining the first and last.\"\"\"
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
"""),
        md("""
## What you learned

- `tl.calibrate_pca` scores every rank by molecular cross-validation from one SVD; the
  curve and its minimum live in `adata.uns["noise2self"]` and `pl.calibration_curve` draws
  them.
- Too few components blur cell types together, too many keep the noise; the self-supervised
  minimum sits between, without clean data and without looking at a plot.
- `tl.denoise_pca` writes `obsm["X_noise2self"]`, which `sc.pp.neighbors(use_rep=...)` and
  the rest of scanpy use as they would `X_pca`; `tl.denoised_values` gives chosen genes.
- An elbow plot gives a rank that depends on how you read it; the calibrated rank minimises
  an estimate of the error.

Next: tutorial 4 compares PCA with kNN, diffusion and autoencoder denoisers on the same
split, and checks whether the binomial split suits the data.
"""),
    ]


def images_notebook() -> list:
    return [
        md("""
# 2. Calibrating image denoisers without clean images

This reproduces Figure 2 and Table 1 of Batson & Royer, *Noise2Self* (ICML 2019) on
scikit-image's `camera`, with Gaussian noise of standard deviation 0.1, then applies the same
steps to a real fluorescence microscopy image (FMD confocal, BPAE cells), whose
50-frame average serves as ground truth.

**The idea.** A denoiser whose output at a pixel does not depend on that pixel's own value
(a *J-invariant* denoiser) has a self-supervised loss `mean((f(x) - x)**2)` equal to its true
error `mean((f(x) - y)**2)` plus the noise variance. So the loss computed on the noisy image
alone ranks parameters, and methods, as the ground truth would.

**Time:** about two minutes on 2 CPU cores. *For speed* the images are cropped to 256 x 256;
use the full 512 x 512 images for real work (about four times the time).
"""),
        code(SETUP),
        code("""
from scipy import ndimage as ndi
from skimage import data, morphology, util

from sc_noise2self import image

SIGMA = 0.1
# For speed: a 256 x 256 crop (the camera man); use data.camera() whole for real work.
clean = util.img_as_float(data.camera())[:256, 128:384]
noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)


def psnr(estimate, truth):
    return 10 * np.log10(1.0 / np.mean((estimate - truth) ** 2))


def show(images: dict, cmap="gray"):
    _, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4))
    for ax, (title, picture) in zip(axes, images.items(), strict=True):
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize="small")
        ax.axis("off")


print(f"noisy PSNR {psnr(noisy, clean):.2f} dB")
"""),
        md("""
## Figure 2: the donut median against the ordinary median

The ordinary median over a disk uses the pixel itself; the *donut* median leaves it out, so
it is J-invariant. For each radius we compute the self-supervised loss (against the noisy
image) and the ground-truth loss (against the clean image).
"""),
        code("""
donut_median = image.get_method("median").function  # J-invariant: the centre is left out
radii = [1, 2, 3, 4, 5, 6]
curves = {"donut median": ([], []), "ordinary median": ([], [])}
for radius in radii:
    outputs = {
        "donut median": donut_median(noisy, radius=radius),
        "ordinary median": ndi.median_filter(noisy, footprint=morphology.disk(radius)),
    }
    for name, output in outputs.items():
        curves[name][0].append(np.mean((output - noisy) ** 2))  # self-supervised
        curves[name][1].append(np.mean((output - clean) ** 2))  # ground truth

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, (name, (self_supervised, truth)) in zip(axes, curves.items(), strict=True):
    ax.plot(radii, self_supervised, "o-", label="self-supervised loss")
    ax.plot(radii, truth, "s-", label="ground-truth loss")
    ax.plot(radii, np.add(truth, SIGMA**2), ":", color="grey", label="ground truth + noise var.")
    ax.set(title=name, xlabel="radius", ylabel="MSE")
    ax.legend(frameon=False, fontsize="small")
for name, (self_supervised, truth) in curves.items():
    print(f"{name}: self-supervised minimum at radius {radii[np.argmin(self_supervised)]}, "
          f"ground-truth minimum at radius {radii[np.argmin(truth)]}")
"""),
        md("""
For the donut median the self-supervised loss is the ground-truth loss shifted up by the
noise variance: the two curves lie on top of each other. (Where two radii are nearly tied,
the sampling noise of one image can move the minimum by one step.) The ordinary median's
self-supervised loss grows with the radius from the start, because at small radii the
output copies the noisy pixel; it would pick the smallest radius.

## Calibrating any denoiser: wavelet shrinkage and NL-means

`image.calibrate` makes a denoiser J-invariant by masking a grid of pixel phases (every
`stride`-th pixel in each direction), replacing the hidden pixels by their neighbours' mean,
and keeping the output on the hidden pixels only. It then scores the whole parameter grid
(by default relative to the estimated noise level). To check against the truth, we denoise
J-invariantly at every grid point and compute the true error too; a user without the clean
image would stop at `calibration.plot()`.
"""),
        code("""
calibrations = {name: image.calibrate(noisy, name, progress=False)
                for name in ("wavelet", "nl_means")}

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
for ax, (name, calibration) in zip(axes, calibrations.items(), strict=True):
    calibration.plot(ax=ax)
    knob = next(iter(calibration.best_params))
    x = [params[knob] for params in calibration.grid]
    truth = [np.mean((image.denoise_invariant(noisy, calibration.denoiser, **params) - clean) ** 2)
             for params in calibration.grid]
    ax.plot(x, np.add(truth, SIGMA**2), "s:", color="C2", label="ground truth + noise var.")
    ax.legend(frameon=False, fontsize="small")
    print(f"{name}: self-supervised best {knob}={calibration.best_params[knob]:.4f}, "
          f"ground-truth best {knob}={x[int(np.argmin(truth))]:.4f}")
"""),
        md("""
## Table 1: `denoise(method="auto")` picks the method

Because every method's J-invariant loss estimates its true error plus the *same* noise
variance, losses of different methods compare directly. `method="auto"` calibrates every
built-in classical method (median, Gaussian, wavelet, NL-means, TV, bilateral) and keeps the
lowest loss. Subtracting the estimated noise variance from each loss gives a
self-supervised estimate of each method's PSNR, without the clean image.
"""),
        code("""
denoised, chosen = image.denoise(noisy, method="auto", return_calibration=True, progress=False)
print(f"chosen: {chosen.method} with {chosen.best_params}; "
      f"estimated noise variance {chosen.noise_variance:.5f} (true {SIGMA**2})")
print(f"{'method':>10} | {'best loss':>9} | estimated PSNR")
for method, loss in sorted(chosen.candidates.items(), key=lambda item: item[1]):
    estimate = 10 * np.log10(1.0 / max(loss - chosen.noise_variance, 1e-12))
    print(f"{method:>10} | {loss:.6f} | {estimate:.2f} dB")
"""),
        md("""
## Mixing with the noisy input

A J-invariant denoiser never uses the pixel itself, which throws away information. The
paper's section 4.2: the mix `w * f(x) + (1 - w) * x` has an optimal weight that follows from
the self-supervised loss and the noise variance alone. `denoise` mixes by default
(`mix=False` turns it off).
"""),
        code("""
invariant = chosen.denoise(noisy, mix=False)
print(f"weight of the J-invariant output: {chosen.mix_weight:.3f}")
print(f"PSNR: noisy {psnr(noisy, clean):.2f} dB, J-invariant {psnr(invariant, clean):.2f} dB, "
      f"mixed {psnr(denoised, clean):.2f} dB")
print(f"self-supervised estimate of the mixed output's MSE: {chosen.expected_error():.6f}, "
      f"true: {np.mean((denoised - clean) ** 2):.6f}")
show({"clean": clean, "noisy": noisy, f"J-invariant {chosen.method}": invariant,
      "mixed": denoised})
"""),
        md("""
## Real microscopy: FMD confocal

`datasets.fmd_confocal` loads one noisy confocal frame of BPAE cells and the average of 50
frames of the same field (the "ground truth"). The noise here is real (Poisson-Gaussian,
slightly correlated between neighbouring pixels), and nothing about it is given to the
calibration.
"""),
        code("""
fmd_noisy, fmd_truth = n2s.datasets.fmd_confocal("B")
# For speed: a 256 x 256 crop; use the whole 512 x 512 frame for real work.
fmd_noisy, fmd_truth = fmd_noisy[:256, :256], fmd_truth[:256, :256]
fmd_denoised, fmd_chosen = image.denoise(fmd_noisy, method="auto", return_calibration=True,
                                         progress=False)
print(f"chosen: {fmd_chosen.method} {fmd_chosen.best_params}, weight {fmd_chosen.mix_weight:.3f}")
print(f"PSNR against the 50-frame average: noisy {psnr(fmd_noisy, fmd_truth):.2f} dB, "
      f"denoised {psnr(fmd_denoised, fmd_truth):.2f} dB")
top = float(np.quantile(fmd_truth, 0.995))  # display range: the images are dim
show({"noisy frame": fmd_noisy / top, f"auto ({fmd_chosen.method}), mixed": fmd_denoised / top,
      "50-frame average": fmd_truth / top}, cmap="magma")
"""),
        md("""
The FMD noise is slightly correlated between neighbouring pixels. The J-invariant loss
assumes independent noise, so there it is a sound default rather than a guarantee:
`benchmarks/RESULTS.md` has the full-size numbers for all three channels, where a plain
Gaussian filter sometimes does as well.

## What you learned

- A J-invariant denoiser's self-supervised loss is its true error plus the noise variance,
  so its minimum is the true minimum (the donut median); a denoiser that sees the pixel
  itself (the ordinary median) cannot be calibrated this way.
- `image.calibrate(img, method_or_callable, grid)` makes any denoiser J-invariant and scores
  its whole grid; `calibration.plot()` draws the curve and its minimum.
- `image.denoise(img, method="auto")` compares the classical methods by their losses (the
  paper's Table 1) and mixes the result with the input at the optimal weight.
- The same calls work on real microscopy, with no knowledge of the noise; correlated noise is
  the case to watch.

Next: masked CNNs trained on the noisy image itself (`image.denoise(img, method="unet")`).
"""),
    ]


def families_notebook() -> list:
    return [
        md("""
# 4. Which denoiser family? And does the split suit the data?

Molecular cross-validation grades any denoiser of counts, not only PCA. Every family is
fitted on half A of the same split and scored against the same half B, so their
self-supervised losses compare directly: the lowest loss predicts held-out molecules best.
This tutorial compares PCA, kNN averaging, diffusion (MAGIC-style) and an autoencoder on
paul15, then checks the assumption under the split: halves that are independent given the
truth.

**Time:** two to three minutes on 2 CPU cores. *For speed* the autoencoder gets three widths
and at most 30 epochs; see the cell for the real-work settings.
"""),
        code(SETUP + """
import pandas as pd
import torch

# Small networks train faster on one thread of a shared CPU; on a GPU pass device="cuda".
torch.set_num_threads(1)"""),
        code("""
adata = n2s.datasets.paul15()  # raw integer counts in X
adata
"""),
        md("""
## Four families on one split

`tl.compare` calibrates each family with its default grid on the same split (same
`random_state`) and returns a table sorted by the best loss. Each family's whole curve goes
where its own `calibrate_<method>` puts it (`adata.uns["noise2self"]` for PCA,
`adata.uns["noise2self_<method>"]` for the others), so `denoise_<method>` reuses it.
"""),
        code("""
table = n2s.tl.compare(adata, methods=["pca", "knn", "diffusion"])
table
"""),
        md("""
The autoencoder takes its own training options, so it is calibrated on its own, with the
same split settings (default `p`, `random_state=0`) and under the key `tl.compare` would
use, then added to the table. Its final net is trained by squared error, so its own default
loss is `"mse"`; `loss="poisson"` scores it like the others, so that the losses compare.
"""),
        code("""
# For speed: three widths, at most 30 epochs. For real work use the defaults
# (widths=None: 1, 2, 4, ..., 128; max_epochs=200), about 4 minutes here, or a GPU.
n2s.tl.calibrate_autoencoder(adata, widths=[2, 8, 32], max_epochs=30, device="cpu",
                             loss="poisson", progress=False, key_added="noise2self_autoencoder")
record = adata.uns["noise2self_autoencoder"]
row = {"method": "autoencoder", "param": "width", "best": record["best"],
       "best_loss": float(np.min(record["loss"])), "key": "noise2self_autoencoder"}
table = pd.concat([table, pd.DataFrame([row])]).sort_values("best_loss", ignore_index=True)
table[["method", "param", "best", "best_loss"]]
"""),
        code("""
fig, axes = plt.subplots(1, len(table), figsize=(4 * len(table), 3.2), sharey=True,
                         layout="constrained")
for ax, (method, key) in zip(axes, zip(table["method"], table["key"], strict=True), strict=True):
    n2s.pl.calibration_curve(adata, key=key, ax=ax, show=False)
    ax.set_title(method)
low, high = table["best_loss"].min(), adata.uns["noise2self"]["loss"][0]
axes[0].set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low));
"""),
        md("""
Read the table as a ranking of how well each family, at its best setting, predicts
molecules it never saw. The differences between families are small next to the drop from
the gene means alone (rank 0 of the PCA curve): on data like these the choice of the knob
matters more than the choice of the family. With a truncated training budget the
autoencoder is at a disadvantage here; give it the default budget before concluding.

A minimum at the edge of a grid (check each curve) means the best setting may lie beyond
it: widen the grid, e.g. `tl.calibrate_knn(adata, ks=[30, 50, 80, 120])`.

## Why the split is negative-binomial by default

Binomial splitting assumes Poisson counts given the truth. With overdispersed
(negative-binomial) counts the halves share part of the noise, and the loss then rewards
fitting it: the chosen rank runs high. Every calibration therefore splits beta-binomially
by default (`split="negative_binomial"`, at per-gene NB sizes estimated from the counts),
which keeps negative-binomial halves independent (count splitting, data thinning).

`pl.split_diagnostics` draws, per gene, the correlation between the two halves' *noise*
against the gene's mean. Each half's count is compared with the mean of the cell's nearest
cells, found from the other genes, so the cell type and sequencing depth that both halves
share cancel out. Points near 0 mean the split suits the data. Points that rise with the
mean mean the halves share noise (overdispersed counts split binomially), and the chosen
rank will run high; points below 0 mean the split assumed more overdispersion than the data
have. A few genes high at a low mean are single cells with an extreme count: read the bulk
of the points and the median in the title.
"""),
        code("""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True, layout="constrained")
n2s.pl.split_diagnostics(adata, split="binomial", ax=axes[0], show=False)
n2s.pl.split_diagnostics(adata, split="negative_binomial", overdispersion="estimate",
                         ax=axes[1], show=False);
"""),
        md("""
The diagnostic's consequence is what matters: calibrate the rank again with the binomial
split (same loss) and compare the choices. The NB sizes the default estimated are in
`var["noise2self_overdispersion"]`.
"""),
        code("""
n2s.tl.calibrate_pca(adata, split="binomial", key_added="noise2self_binomial")
sizes = adata.var["noise2self_overdispersion"]
print(f"estimated NB size per gene: median {np.median(sizes):.1f} "
      f"(smaller = more overdispersed; Poisson is infinite)")
print(f"chosen rank: negative-binomial split (default) {adata.uns['noise2self']['best']}, "
      f"binomial split {adata.uns['noise2self_binomial']['best']}")
n2s.pl.calibration_curve(adata, key=["noise2self", "noise2self_binomial"]);
"""),
        md("""
## What you learned

- `tl.compare` calibrates several families on one split; their losses compare directly, and
  each family's curve is kept in `adata.uns`. Calibrate a family with its own options (the
  autoencoder here) under the same split settings and it joins the comparison.
- `pl.calibration_curve` draws one curve or overlays several (`key=[...]`).
- `pl.split_diagnostics` shows whether the two halves share noise: near 0 when the split
  suits the data, rising with the mean when a binomial split meets overdispersed counts.
- The default split (`"negative_binomial"` at estimated sizes) keeps overdispersed halves
  independent; `split="binomial"` is for counts known to be Poisson, and a higher chosen
  rank under it is the sign that it rewards noise.
"""),
    ]


def neural_notebook() -> list:
    return [
        md("""
# 3. Masked CNNs trained on the noisy images themselves

The paper's section 5: a convolutional network trained with the Noise2Self loss never needs
a clean image. At each step a grid of pixels is hidden (every fourth pixel in each
direction, at a random phase, replaced by the mean of its four neighbours), and the network
is scored only on the hidden pixels, against their noisy values. The network cannot copy a
pixel it never sees, so it learns to predict the signal. This grid masking is the default of
`image.train`: on a GPU it trained 1.2 dB better than the paper's random mask with random
stand-ins after 800 steps (`benchmarks/RESULTS.md`); `masking="random"` keeps the paper's.

**Tiny CPU budget.** *For speed* each network here trains for 40-45 seconds on 2 CPU cores,
about a hundred steps. That is far from converged: expect it to trail the calibrated classical
methods of tutorial 2. For real work, train for thousands of steps on a GPU (last section).
"""),
        code(SETUP + """
import tempfile
from pathlib import Path

import torch
from skimage import data, util

from sc_noise2self import image

# Small networks train faster on one thread of a shared CPU; a GPU needs none of this.
torch.set_num_threads(1)


def psnr(estimate, truth):
    return 10 * np.log10(1.0 / np.mean((estimate - truth) ** 2))"""),
        md("""
## One noisy image

The camera crop of tutorial 2, Gaussian noise of standard deviation 0.1. `image.train`
takes the noisy image alone.

**Which network.** `image.train(noisy)` alone trains the default UNet (the paper's four
levels at half its widths, with training settings chosen for a CPU budget). Here a DnCNN of
8 layers and 32 features, which learns more per second in a budget of under a minute. In
the CPU runs of `benchmarks/RESULTS.md` (camera crop, 240 s on 2 cores, `augment=True`),
the DnCNN 8x32 reached 28.73 dB and the default UNet 28.57 to 28.68 dB over three seeds,
against 28.1 dB for NL-means. With 64 features, the DnCNN is the best recipe for long
budgets: on the full camera image it reached 29.10 to 29.24 dB over two training seeds
after 40 minutes on 2 CPU cores, and
29.12 dB after 21 s on a GPU (last section). A step of the 8x64 costs about four times the
arithmetic of the 8x32.
"""),
        code("""
clean = util.img_as_float(data.camera())[:256, 128:384]
noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)

# For speed: DnCNN 8x32 for 45 s on the CPU. For real work: 8x64 (model_kwargs={"depth": 8})
# for 3,000 steps on a GPU (last section).
model = image.train(noisy, "dncnn", model_kwargs={"depth": 8, "features": 32},
                    max_time=45, steps_per_epoch=25, progress=False, random_state=0)
history = model.history
print(model)
print(f"{history['step'][-1]} steps; stopped by {history['stopped']}; "
      f"best epoch {history['best_epoch']}")
"""),
        md("""
The training curve: the self-supervised loss on the training patches, and on a held-out
band of the image after every epoch (every hidden-pixel phase of the band, so each held-out
pixel is scored once). Both are in the network's units (the image rescaled between two of
its percentiles). They fall as the network learns the signal and level off at the noise
variance plus the network's remaining error; the weights with the lowest held-out loss are
kept, and training stops after 20 epochs without improvement in the second half of the
learning-rate schedule.
"""),
        code("""
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(history["step"], history["train_loss"], "o-", ms=3, label="training patches")
ax.plot(history["step"], history["val_loss"], "s-", ms=3, label="held-out band")
ax.set(xlabel="step", ylabel="self-supervised loss", title="training curve")
ax.legend(frameon=False);
"""),
        md("""
`predict(augment=True)` averages the predictions of the 8 flipped and transposed copies of
the image (test-time augmentation): 8 passes instead of one, a smoother estimate. It added
0.06 to 0.50 dB in every GPU run where it was scored, and 0.24 to 0.55 dB in the CPU runs on
the crop; `image.denoise(img, method="unet")` uses it by default. Against the classical
best: NL-means calibrated by its J-invariant loss and mixed with the input, as
`image.denoise` does it (tutorial 2).
"""),
        code("""
direct = model.predict(noisy)
cnn = model.predict(noisy, augment=True)
classical, calibration = image.denoise(noisy, method="nl_means", return_calibration=True,
                                       progress=False)
print(f"PSNR: noisy {psnr(noisy, clean):.2f} dB | CNN (45 s, CPU) {psnr(direct, clean):.2f} dB, "
      f"with augment=True {psnr(cnn, clean):.2f} dB | NL-means calibrated "
      f"{psnr(classical, clean):.2f} dB")
fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
panels = {"clean": clean, "noisy": noisy, "masked CNN, augment=True": cnn,
          "NL-means, calibrated": classical}
for ax, (title, picture) in zip(axes, panels.items(), strict=True):
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize="small")
    ax.axis("off")
"""),
        md("""
## A set of noisy images: Set12

One network can learn from many noisy images at once: pass a list (sizes may differ). Here
the twelve Set12 images with Gaussian noise of standard deviation 25/255, the usual
benchmark setting, each then denoised by the same network with test-time augmentation.
The classical comparison is TV denoising calibrated on each image
(`approximate_loss=True` scores one masking phase only: *for speed*; leave it False for
real work).
"""),
        code("""
clean_set = n2s.datasets.set12()
rng = np.random.default_rng(0)
noisy_set = [picture + 25 / 255 * rng.standard_normal(picture.shape) for picture in clean_set]

# For speed: 40 s on the CPU. For real work: several thousand steps on a GPU.
set_model = image.train(noisy_set, "dncnn", model_kwargs={"depth": 8, "features": 32},
                        max_time=40, progress=False, random_state=0)
rows = []
for truth, noisy_image in zip(clean_set, noisy_set, strict=True):
    tv = image.denoise(noisy_image, method="tv", approximate_loss=True, progress=False)
    rows.append([psnr(noisy_image, truth),
                 psnr(set_model.predict(noisy_image, augment=True), truth), psnr(tv, truth)])
print(f"{set_model.history['step'][-1]} steps")
print(" image | noisy | CNN   | TV calibrated   (CNN: predict(augment=True))")
for i, values in enumerate(rows, start=1):
    print(f"  {i:>4} | " + " | ".join(f"{v:.2f}" for v in values))
print("  mean | " + " | ".join(f"{v:.2f}" for v in np.mean(rows, axis=0)))
"""),
        md("""
## Saving and loading

A trained model saves its weights, architecture, normalisation and training history in one
file.
"""),
        code("""
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "camera_dncnn.pt"
    model.save(path)
    reloaded = image.Noise2SelfModel.load(path)
    assert np.allclose(reloaded.predict(noisy, augment=True), cnn)
print("GPU available here:", torch.cuda.is_available())
"""),
        md("""
## On a GPU

Nothing changes but the budget: `device="auto"` (the default) picks the GPU, and mixed
precision and `torch.compile` switch on there by default. The
best recipe measured on the GPU, a DnCNN of 8 layers and 64 features with grid masking and
weight averaging, then test-time augmentation:

```python
model = image.train(noisy, "dncnn", model_kwargs={"depth": 8}, steps=3000, ema=0.999)
denoised = model.predict(noisy, augment=True)
denoised = model.predict(big_image, augment=True, tile_size=512)  # tiles bound GPU memory
```

What it gave, as recorded in `benchmarks/RESULTS.md` (one NVIDIA H200, torch 2.11 with
CUDA 13.0, bf16 autocast; the full 512 x 512 camera image, noise 0.1, seed 0; one run per
row):

| recipe | steps (budget) | PSNR | with `augment=True` |
|---|---|---|---|
| UNet (paper's widths, batch 16), paper's random mask | 800 | 27.16 dB | |
| UNet (paper's widths, batch 16), grid masking with neighbour means | 800 | 28.35 dB | |
| DnCNN 8x64, grid masking | 800 | 28.02 dB | |
| DnCNN 8x64, grid masking, `ema=0.999` | 2650 of 3000 (plateau) | **29.02 dB** | **29.12 dB** |

The last run took about 21 seconds. The best classical method on the same image (NL-means,
J-invariant calibration, mixed) scored 28.68 dB, so the GPU-trained network passes it by
0.44 dB. (Those runs stopped on a plateau with a patience of 10 epochs; the default is now
20.)

## What you learned

- `image.train(noisy)` fits a masked CNN with the Noise2Self loss on noisy images alone,
  one image or a list; `.history` holds the training curve and `.predict` denoises.
- Grid masking with neighbour means is the default; `predict(augment=True)` averages 8
  flipped copies for a smoother estimate.
- The held-out self-supervised loss tracks training without any clean image.
- On a CPU budget of under a minute the network is far from converged and the calibrated classical
  methods win; on a GPU, a few thousand steps of an 8x64 DnCNN pass them.
- `model.save(path)` / `Noise2SelfModel.load(path)` keep everything needed to denoise later,
  and `device="auto"` moves the same code to a GPU.
"""),
    ]


def dask_notebook() -> list:
    return [
        md("""
# 5. Out of core: 200,000 cells with dask, and on a cluster

Atlases do not fit in memory. `tl.calibrate_pca`, `tl.denoise_pca`, `pp.split_molecules`
and `split_counts` also take a **dask array** of counts, such as the lazy `X` that anndata
reads from a zarr or h5ad store. The matrix is never loaded whole: each task holds one chunk
of cells, and only genes x genes matrices (and the rows of the cells scored) come to memory.

This tutorial writes a 200,000-cell count matrix to a zarr store, opens it lazily, splits it
without computing anything, calibrates the PCA rank out of core, checks the answer against
the in-memory calibration, and runs the same code on a dask cluster.

**Time:** about a minute on 2 idle CPU cores. *For speed* the cells have 500 genes (say, the
highly variable ones) and a median of 150 UMIs among them; use 2,000 genes for real work
(the genes x genes matrices grow with the square: 32 MB each at 2,000 genes). No real data
are needed here.
"""),
        code(SETUP + """
import tempfile
from pathlib import Path

import anndata as ad
import dask
import zarr
from anndata.experimental import read_elem_lazy
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits

# dask's default (threaded) scheduler runs one task per core: one BLAS thread per task
# keeps them from competing for the cores.
threadpool_limits(1)
print("dask", dask.__version__, "| anndata", ad.__version__)"""),
        md("""
## A 200,000-cell store, written chunk by chunk

`datasets.write_synthetic_counts` draws Poisson counts from 8 gene programs (the model of
`datasets.synthetic_counts`) and appends them to a zarr store in AnnData's format, 10,000
cells at a time, so it never holds the whole matrix either. Your own data would be an
`.zarr` or `.h5ad` file written by anndata.
"""),
        code("""
folder = Path(tempfile.mkdtemp(prefix="n2s_tutorial_"))
# For speed: 500 genes, median 150 UMIs per cell among them; use your own 2,000 HVGs for
# real work.
store = n2s.datasets.write_synthetic_counts(folder / "cells.zarr", n_obs=200_000, n_vars=500,
                                            depth=150, random_state=0)
size_mb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e6
print(f"{store.name}: {size_mb:.0f} MB on disk")
"""),
        md("""
## Open it lazily

`read_elem_lazy` gives a dask array of CSR chunks; `chunks=(20_000, -1)` asks for 20,000
whole cells (every gene) per chunk. Nothing is read yet but the shape. An AnnData holds it
like any other `X`.
"""),
        code("""
X = read_elem_lazy(zarr.open_group(store, mode="r")["X"], chunks=(20_000, -1))
adata = ad.AnnData(X=X)
print(adata)
X
"""),
        md("""
## Splitting is lazy

`pp.split_molecules` builds the split as a dask graph: a dask callback counts the tasks that
run, and none do. Asking for the first five cells of half A reads and splits one chunk only.
Each cell draws from its own random stream, indexed by its row, so the halves equal the
in-memory split bit for bit, whatever the chunking or the scheduler.
"""),
        code("""
tasks = []
with Callback(pretask=lambda key, graph, state: tasks.append(key)):
    n2s.pp.split_molecules(adata, random_state=0)
print(f"tasks run while splitting 200,000 cells: {len(tasks)}")
half_a = adata.layers["noise2self_a"]
print(half_a)

with Callback(pretask=lambda key, graph, state: tasks.append(key)):
    first_cells = half_a[:5].compute()
print(f"tasks run to get 5 cells of half A: {len(tasks)}, on "
      f"{half_a[:5].numblocks[0]} of the {half_a.numblocks[0]} chunks")
in_memory, _ = n2s.split_counts(X[:5].compute(), 0.5, random_state=0)
print("same as the in-memory split:", (first_cells != in_memory).nnz == 0)
"""),
        md("""
## Calibrate the rank out of core

`tl.calibrate_pca` on the lazy AnnData reads the chunks twice: once for every cell's total
(checking the counts on the way), then once to split each chunk and sum half A's
genes x genes covariance and half B's products with it. The loss at every rank follows from
those sums; the curve goes to `adata.uns["noise2self"]` as in memory.

These simulated counts are Poisson by construction, so this tutorial splits them
binomially (`split="binomial"`), which is exact for them. On such continuous mixtures at
150 UMIs per cell the default (the NB split at sizes estimated from the counts) takes the
cells' continuous variation for overdispersion, splits too conservatively and misses the
weakest structure: on 20,000 of these cells it kept rank 0 where the truth-best rank was 2
and the binomial split chose 2 (benchmarks/RESULTS.md, issue 24). On real counts keep the
default.
"""),
        code("""
SPLIT = dict(split="binomial")  # Poisson counts by construction (see above)
# For speed: ranks 0-30 (the data have 8 programs); keep the default max_comps=100 for
# real data.
n2s.tl.calibrate_pca(adata, max_comps=30, random_state=0, **SPLIT)
best = int(adata.uns["noise2self"]["best"])
print(f"chosen rank: {best}")
n2s.pl.calibration_curve(adata);
"""),
        md("""
The minimum may sit below the 8 programs of the simulation: at 150 UMIs per cell the
weakest programs are hard to tell from the noise, and components that fitted them would fit
noise too.

## The same answer as in memory

On the first 20,000 cells, which fit in memory, calibrate twice with the same seed: once
from the lazy slice, once from the loaded CSR matrix with the exact ARPACK solver. The split
is the same bit for bit; the curves differ only by rounding, because the dask path takes the
components from the summed covariance (an eigendecomposition) where ARPACK runs a truncated
SVD. (In memory, the default solver on large data is randomized: the same rank, and a curve
equal up to the optimum to about 1e-4.)
"""),
        code("""
subset = X[:20_000]
lazy = ad.AnnData(X=subset)
loaded = ad.AnnData(X=subset.compute())  # 20,000 cells as CSR in memory
n2s.tl.calibrate_pca(lazy, max_comps=30, random_state=0, **SPLIT)
n2s.tl.calibrate_pca(loaded, max_comps=30, random_state=0, solver="arpack", **SPLIT)
lazy_loss, loaded_loss = lazy.uns["noise2self"]["loss"], loaded.uns["noise2self"]["loss"]
print(f"best rank: lazy {lazy.uns['noise2self']['best']}, "
      f"in memory {loaded.uns['noise2self']['best']}")
print(f"largest relative difference of the curves: "
      f"{np.max(np.abs(lazy_loss - loaded_loss) / loaded_loss):.1e}")
"""),
        md("""
## On a cluster

The work runs on whatever dask scheduler is active. With a `dask.distributed` client
connected, the same call runs on its workers. Here a local cluster of two workers (threads
in this process, `processes=False`, so that this small run pays no serialisation); the
loss curve is the one computed above.
"""),
        code("""
from dask.distributed import Client, LocalCluster

with (LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                   dashboard_address=None) as cluster,
      Client(cluster) as client):
    print(client)
    on_cluster = ad.AnnData(X=X)
    n2s.tl.calibrate_pca(on_cluster, max_comps=30, random_state=0, **SPLIT)
print("same curve as the threaded run:",
      np.allclose(on_cluster.uns["noise2self"]["loss"], adata.uns["noise2self"]["loss"],
                  rtol=1e-10))
"""),
        md("""
On a real cluster, connect to its scheduler instead and run the same code. The workers need
`sc_noise2self` installed and read access to the store (a shared file system, or an object
store URL that zarr opens):

```python
from dask.distributed import Client

client = Client("tcp://scheduler-host:8786")   # your scheduler's address
X = read_elem_lazy(zarr.open_group("/shared/atlas.zarr", mode="r")["X"], chunks=(20_000, -1))
adata = ad.AnnData(X=X)
n2s.tl.calibrate_pca(adata)                    # runs on the cluster's workers
```

## Denoise at the chosen rank

`tl.denoise_pca` reads the chunks again to fit the components and compute the scores (here
200,000 x the rank, small) into `obsm["X_noise2self"]`, ready for scanpy. The dense
denoised matrix stays a lazy dask array in `layers["noise2self"]`: compute only the slices
you need.
"""),
        code("""
n2s.tl.denoise_pca(adata, n_comps=best, **SPLIT)
scores = adata.obsm["X_noise2self"]
print(f"cell scores: {type(scores).__name__} {scores.shape}")
print(adata.layers["noise2self"])
denoised_first = adata.layers["noise2self"][:3, :5].compute()
print(np.round(denoised_first, 2))

fig, ax = plt.subplots(figsize=(4.5, 3.8))
ax.hexbin(scores[:, 0], scores[:, 1], gridsize=60, bins="log", cmap="viridis")
ax.set(xlabel="component 1", ylabel="component 2", title="200,000 cells, denoised scores");
"""),
        code("""
import shutil

shutil.rmtree(folder)  # the temporary store
"""),
        md("""
## What you learned

- `read_elem_lazy(..., chunks=(n, -1))` opens anndata's counts as a dask array of CSR
  chunks; an AnnData holds it as `X`, and `tl.calibrate_pca` / `tl.denoise_pca` /
  `pp.split_molecules` take it as they take a matrix in memory.
- The split is lazy and, cell by cell, the in-memory split; calibration reads the chunks
  twice and holds genes x genes matrices, never cells x genes.
- The loss curve on dask equals the in-memory curve up to rounding, with the same chosen
  rank.
- The same code runs on a `dask.distributed` cluster: connect a `Client` first.
- Memory and time grow with the genes squared: select genes (highly variable ones) first.
"""),
    ]


def clustering_notebook() -> list:
    return [
        md("""
# 6. Which clusters are real? Which markers are real?

After "how many PCs", a scanpy user asks two more questions, and the molecule split answers
both.

1. **Which clusters?** A clustering predicts each cell's fresh molecules by its cluster's
   rate. Make the clusters on half A of each cell's molecules, predict half B's counts at
   each cell's own depth, by its cluster's rate without the cell itself, and the resolution
   with the lowest Poisson deviance is the one whose clusters predict fresh molecules best.
   One cluster is always on the curve; the coarsest resolution within one standard error of
   the best is chosen. Each split between two clusters is then tested on half B, and the
   splits that do not replicate are merged.
2. **Which marker genes are real?** Clustering and then testing the same counts is double
   dipping: the clusters were made to make the genes differ. Count splitting (Neufeld et
   al. 2024) clusters on half A and tests on half B, whose noise is independent.

**Time:** a few minutes on 2 CPU cores.
"""),
        code(SETUP + """
import warnings"""),
        md("""
## PBMC 3k: the resolution curve

Raw counts of the scanpy tutorial dataset, lightly filtered. `tl.calibrate_leiden` splits
the molecules (by the negative binomial, at NB sizes estimated per gene), builds the graph of
half A on its 2,000 most variable genes (each scaled to unit variance) and runs Leiden at
every resolution of the grid; resolution 0 is one cluster, the baseline. The band is one
paired standard error. Then each chosen cluster is clustered again on its own graph, and a
split is kept only when it predicts half B better by more than one standard error: small
groups that one graph of all the cells leaves merged are found this way. The record lists
the splits it kept.
"""),
        code("""
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
"""),
        md("""
## Splits that replicate on half B

`tl.validate_clusters_split` joins half A's clusters into a tree and tests each split, from
the root down, on half B's molecules: does predicting each side by its own rate beat
predicting both by their common rate? Splits that fail at the family-wise level 0.05 are
merged (grey).
"""),
        code("""
n2s.tl.validate_clusters_split(adata)
print(adata.obs["noise2self_leiden_validated"].nunique(), "clusters replicate")
n2s.pl.cluster_tree(adata, show=False)
plt.show()
"""),
        md("""
## Markers tested on the half the clusters never saw

`tl.rank_genes_groups_split` draws the calibration's split again and runs scanpy's own
`rank_genes_groups` on half B, normalised and log1p-transformed, for the validated clusters.
The result is in scanpy's format; the tested values are in `layers["rank_genes_groups_split"]`,
which the dotplot shows. Each cluster is then named by the textbook PBMC markers among its
top half-B markers.
"""),
        code("""
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
"""),
        md("""
## Why it matters: a population with no clusters at all

One population, with depths varying several-fold and per-gene NB overdispersion, as real
cells have (`sc_noise2self.simulation.simulate_counts`). Leiden at resolution 1 finds
clusters in the noise; testing them on the same counts (double dipping) gives far more than
5% of p-values below 0.05. `calibrate_leiden` keeps one cluster and says so, and the
count-split test of forced clusters gives about 5%, as valid p-values must.
"""),
        code("""
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
"""),
        md("""
## What you learned

- `tl.calibrate_leiden` chooses the clustering by the self-supervised loss: clusters from
  half A, each cell's half-B counts predicted at its own depth by its cluster's rate without
  itself. One cluster is on every curve, and the coarsest resolution within one standard
  error of the best is taken (`rule="1se"`). `pl.resolution_curve` shows it all. Each
  chosen cluster is then split again on its own graph where the loss says so.
- `tl.validate_clusters_split` merges the splits that do not replicate on half B;
  `pl.cluster_tree` draws the tree with its p-values.
- `tl.rank_genes_groups_split` tests markers of those clusters on the same split's half B,
  in scanpy's format. On pure noise its p-values are uniform; double dipping's are not.
- The Leiden family and the marker tests split by the negative binomial at estimated sizes:
  binomial halves of overdispersed counts share each cell's noise (`docs/guide.md`).
- `tl.association_split` does the same for a covariate of half A, such as a pseudotime.
"""),
    ]


def microscopy_notebook() -> list:
    return [
        md("""
# 7. Microscopy files without Python: the command line and napari

A microscopist's data are TIFF or OME-Zarr stacks, often larger than memory, and their
tool is napari. This tutorial denoises real confocal images from files with the
`sc-noise2self image` command, checks the result against the clean reference, shows that a
volume is processed block by block with the same result as in memory, and walks through
the two napari widgets.

Every denoiser here is graded by the self-supervised loss on the noisy data alone, against
the J-invariant neighbour mean; the reference images are used only to show you the PSNR.

**Time:** about a minute on 2 CPU cores (the CNN gets 20 s; use minutes for real work).
"""),
        code(SETUP + """
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from IPython.display import Image, display

from sc_noise2self.image import files

work = Path(tempfile.mkdtemp())


def sc_noise2self(*args):
    # The command line, as you would type it in a shell: sc-noise2self image ...
    command = [sys.executable, "-m", "sc_noise2self.cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout[-2000:] or done.stderr[-2000:])
    done.check_returncode()


def psnr(estimate, truth):
    return 10 * np.log10(1.0 / np.mean((np.asarray(estimate, float) - truth) ** 2))"""),
        md("""
## A three-channel confocal file

The FMD dataset's BPAE cells: one noisy frame per channel (blue nuclei, green actin, red
mitochondria) and the average of 50 frames as the reference. We write the noisy channels
as one OME-TIFF with axes `CYX` and a pixel size, as a microscope would.
"""),
        code("""
pairs = [n2s.datasets.fmd_confocal(c) for c in "BGR"]
noisy = np.stack([p[0] for p in pairs])
truth = np.stack([p[1] for p in pairs])
files.write(work / "bpae.ome.tif", np.round(noisy * 255).astype(np.uint8), axes="CYX",
            scale=(1.0, 0.1, 0.1))
image = files.read(work / "bpae.ome.tif")
print(image.axes, image.shape, image.dtype, image.scale)"""),
        md("""
## Calibrate and denoise from the shell

`sc-noise2self image calibrate IN --out OUT` compares the classical methods on a central
sample by the self-supervised loss (`--method auto`), picks each one's parameters, mixes in
the optimal share of the noisy input, and denoises the whole file block by block. With
`--per-channel` each channel gets its own method and parameters: the three stains differ.
The output keeps the input's axes, shape and pixel size; an existing output is never
replaced without `--overwrite`.
"""),
        code("""
sc_noise2self("image", "calibrate", work / "bpae.ome.tif", "--out", work / "bpae.ome.zarr",
              "--per-channel", "--report", work / "report.json", "--plot", work / "curve.png")
denoised = files.read(work / "bpae.ome.zarr")
print(denoised.axes, denoised.shape, denoised.scale)
for c, name in enumerate("BGR"):
    print(f"{name}: noisy {psnr(noisy[c], truth[c]):.2f} dB -> denoised "
          f"{psnr(denoised.data[c] / 255, truth[c]):.2f} dB")
display(Image(str(work / "curve.png")))"""),
        md("""
The report holds each calibration's whole record (the loss at every parameter, the
neighbour-mean baseline, the noise variance, the mix weight), so the choice can be checked
later.
"""),
        code("""
report = json.loads((work / "report.json").read_text())
print([(r["method"], r["best"], round(r["mix_weight"], 3)) for r in report])
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, picture, title in zip(axes, [noisy[1], denoised.data[1] / 255, truth[1]],
                              ["noisy (actin)", "denoised", "50-frame average"], strict=True):
    ax.imshow(picture[128:384, 128:384], cmap="gray", vmin=0, vmax=truth[1].max())
    ax.set_title(title)
    ax.axis("off")"""),
        md("""
## A masked CNN, trained on the noisy file itself

`image train` trains a Noise2Self UNet on every channel and time point of the file (here
20 s, far too short for a good network; give it minutes) and writes its prediction;
`--save-model` keeps the network, and `image predict` applies it to other files. A network
that has not yet beaten the neighbour mean on its held-out pixels is not trusted: the
neighbour mean is written instead, with a warning.
"""),
        code("""
sc_noise2self("image", "train", work / "bpae.ome.tif", "--out", work / "bpae_unet.zarr",
              "--max-time", "20", "--save-model", work / "unet.pt")
sc_noise2self("image", "predict", work / "bpae.ome.tif", "--model", work / "unet.pt",
              "--out", work / "bpae_unet.tif")
cnn = files.read(work / "bpae_unet.tif")
print("CNN, 20 s:", [f"{psnr(cnn.data[c] / 255, truth[c]):.2f} dB" for c in range(3)])"""),
        md("""
## Larger than memory: block by block

Inputs are read lazily and outputs written block by block with a halo: each block is read
with enough neighbours to cover how far the denoiser reaches, on the masking grid (or the
network's down-sampling grid), so the result equals the whole-image result up to float
rounding. Here a 32-plane stack is denoised in 64-pixel blocks and compared with the same
calibration applied in memory.
"""),
        code("""
from sc_noise2self.image import blocks

stack = np.stack([np.roll(noisy[1], 8 * z, axis=0)[:256, :256] for z in range(32)])
files.write(work / "stack.zarr", stack.astype(np.float32), axes="ZYX")
lazy = files.read(work / "stack.zarr", lazy=True)
calibration = blocks.calibrate_sample(lazy, spatial="YX", size=128, method="gaussian")
by_blocks = blocks.denoise_blocks(lazy, calibration, block=64)
in_memory = calibration.denoise(stack[5])
print("largest difference:", np.abs(by_blocks[5] - in_memory).max())"""),
        md("""
The same runs from the shell on any size of file:
`sc-noise2self image calibrate big.ome.zarr --out big_denoised.ome.zarr --block 256`.
A 2.1 GB volume is denoised in `benchmarks/RESULTS.md` with a fraction of that in memory.

## In napari

Install the plugin with `pip install "sc-noise2self[napari]"`; its two widgets are under
*Plugins > Noise2Self*, and *File > Open Sample > Noise2Self* opens noisy images to try.

**Noise2Self: calibrate.** Pick an image layer, how to read its axes (a 2D image, a z-stack,
a stack of 2D images, channels), the method (`auto` or one) and whether to mix. It runs in
the background with a progress bar and a Cancel button, adds the denoised layer with the
input's scale and position, and shows the loss curve of the chosen method and the best loss
of every method against the neighbour mean and the estimated noise variance.
"""),
        code("""
images = Path("images")  # taken by tests/test_napari.py from a headless viewer
for name in ("napari_calibrate.png", "napari_train.png"):
    if (images / name).exists():
        display(Image(str(images / name), width=900))"""),
        md("""
**Noise2Self: train CNN.** Pick the model, a time or step budget and the device (it says
what it found: CUDA, MPS or CPU). The training curve updates live; *Stop (keep best)* ends
training at the next epoch and keeps the best network so far. Predict on the same layer or
another one, and save or load the network.

## What you learned

- `sc-noise2self image calibrate | train | predict` denoise TIFF and OME-Zarr files from
  the shell, keeping axes, shape and pixel size, and never overwrite without `--overwrite`.
- `--per-channel` calibrates each stain on its own; the report keeps every loss curve.
- Files larger than memory are processed block by block, with the same result as in memory.
- The napari widgets run the same calibration and training, with progress, cancel and the
  loss curves, and every output is graded against the neighbour mean.
"""),
    ]


NOTEBOOKS = {
    "01_single_cell_paul15.ipynb": paul15_notebook,
    "02_images_calibration.ipynb": images_notebook,
    "03_images_neural.ipynb": neural_notebook,
    "04_single_cell_families.ipynb": families_notebook,
    "05_scale_dask.ipynb": dask_notebook,
    "06_single_cell_clustering.ipynb": clustering_notebook,
    "07_images_files_napari.ipynb": microscopy_notebook,
}


def build(cells: list) -> nbformat.NotebookNode:
    """A notebook with deterministic cell ids, so rebuilding changes nothing."""
    notebook = new_notebook(cells=cells)
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed notebooks instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        text = nbformat.writes(build(cells())) + "\n"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"Out of date (run python tutorials/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
