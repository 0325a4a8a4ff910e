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
# # 2. Calibrating image denoisers without clean images
#
# This reproduces Figure 2 and Table 1 of Batson & Royer, *Noise2Self* (ICML 2019) on
# scikit-image's `camera`, with Gaussian noise of standard deviation 0.1, then applies the same
# steps to a real fluorescence microscopy image (FMD confocal, BPAE cells), whose
# 50-frame average serves as ground truth.
#
# **The idea.** A denoiser whose output at a pixel does not depend on that pixel's own value
# (a *J-invariant* denoiser) has a self-supervised loss `mean((f(x) - x)**2)` equal to its true
# error `mean((f(x) - y)**2)` plus the noise variance. So the loss computed on the noisy image
# alone ranks parameters, and methods, as the ground truth would.
#
# **Time:** about two minutes on 2 CPU cores. *For speed* the images are cropped to 256 x 256;
# use the full 512 x 512 images for real work (about four times the time).

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
from functools import partial

from scipy import ndimage as ndi
from skimage import data, morphology, util
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import image

SIGMA = 0.1
# For speed: a 256 x 256 crop (the camera man); use data.camera() whole for real work.
clean = util.img_as_float(data.camera())[:256, 128:384]
noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


def show(images: dict, cmap="gray"):
    _, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4))
    for ax, (title, picture) in zip(axes, images.items(), strict=True):
        ax.imshow(picture, cmap=cmap, vmin=0, vmax=1)
        ax.set_title(title, fontsize="small")
        ax.axis("off")


print(f"noisy PSNR {psnr(clean, noisy):.2f} dB")

# %% [markdown]
# ## Figure 2: the donut median against the ordinary median
#
# The ordinary median over a disk uses the pixel itself; the *donut* median leaves it out, so
# it is J-invariant. For each radius we compute the self-supervised loss (against the noisy
# image) and the ground-truth loss (against the clean image).

# %%
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

# %% [markdown]
# For the donut median the self-supervised loss is the ground-truth loss shifted up by the
# noise variance: the two curves lie on top of each other. (Where two radii are nearly tied,
# the sampling noise of one image can move the minimum by one step.) The ordinary median's
# self-supervised loss grows with the radius from the start, because at small radii the
# output copies the noisy pixel; it would pick the smallest radius.
#
# ## Calibrating any denoiser: wavelet shrinkage and NL-means
#
# `image.calibrate` makes a denoiser J-invariant by masking a grid of pixel phases (every
# `stride`-th pixel in each direction), replacing the hidden pixels by their neighbours' mean,
# and keeping the output on the hidden pixels only. It then scores the whole parameter grid
# (by default relative to the estimated noise level). To check against the truth, we denoise
# J-invariantly at every grid point and compute the true error too; a user without the clean
# image would stop at `calibration.plot()`.

# %%
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

# %% [markdown]
# ## Table 1: `denoise(method="auto")` picks the method
#
# Because every method's J-invariant loss estimates its true error plus the *same* noise
# variance, losses of different methods compare directly. `method="auto"` calibrates every
# built-in classical method (median, Gaussian, wavelet, NL-means, TV, bilateral) and keeps the
# lowest loss. Subtracting the estimated noise variance from each loss gives a
# self-supervised estimate of each method's PSNR, without the clean image.

# %%
denoised, chosen = image.denoise(noisy, method="auto", return_calibration=True, progress=False)
print(f"chosen: {chosen.method} with {chosen.best_params}; "
      f"estimated noise variance {chosen.noise_variance:.5f} (true {SIGMA**2})")
print(f"{'method':>10} | {'best loss':>9} | estimated PSNR")
for method, loss in sorted(chosen.candidates.items(), key=lambda item: item[1]):
    estimate = 10 * np.log10(1.0 / max(loss - chosen.noise_variance, 1e-12))
    print(f"{method:>10} | {loss:.6f} | {estimate:.2f} dB")

# %% [markdown]
# ## Mixing with the noisy input
#
# A J-invariant denoiser never uses the pixel itself, which throws away information. The
# paper's section 4.2: the mix `w * f(x) + (1 - w) * x` has an optimal weight that follows from
# the self-supervised loss and the noise variance alone. `denoise` mixes by default
# (`mix=False` turns it off).

# %%
invariant = chosen.denoise(noisy, mix=False)
print(f"weight of the J-invariant output: {chosen.mix_weight:.3f}")
print(f"PSNR: noisy {psnr(clean, noisy):.2f} dB, J-invariant {psnr(clean, invariant):.2f} dB, "
      f"mixed {psnr(clean, denoised):.2f} dB")
print(f"self-supervised estimate of the mixed output's MSE: {chosen.expected_error():.6f}, "
      f"true: {np.mean((denoised - clean) ** 2):.6f}")
show({"clean": clean, "noisy": noisy, f"J-invariant {chosen.method}": invariant,
      "mixed": denoised})

# %% [markdown]
# ## Real microscopy: FMD confocal
#
# `datasets.fmd_confocal` loads one noisy confocal frame of BPAE cells and the average of 50
# frames of the same field (the "ground truth"). The noise here is real (Poisson-Gaussian,
# slightly correlated between neighbouring pixels), and nothing about it is given to the
# calibration.

# %%
fmd_noisy, fmd_truth = n2s.datasets.fmd_confocal("B")
# For speed: a 256 x 256 crop; use the whole 512 x 512 frame for real work.
fmd_noisy, fmd_truth = fmd_noisy[:256, :256], fmd_truth[:256, :256]
fmd_denoised, fmd_chosen = image.denoise(fmd_noisy, method="auto", return_calibration=True,
                                         progress=False)
print(f"chosen: {fmd_chosen.method} {fmd_chosen.best_params}, weight {fmd_chosen.mix_weight:.3f}")
print(f"PSNR against the 50-frame average: noisy {psnr(fmd_truth, fmd_noisy):.2f} dB, "
      f"denoised {psnr(fmd_truth, fmd_denoised):.2f} dB")
top = float(np.quantile(fmd_truth, 0.995))  # display range: the images are dim
show({"noisy frame": fmd_noisy / top, f"auto ({fmd_chosen.method}), mixed": fmd_denoised / top,
      "50-frame average": fmd_truth / top}, cmap="magma")

# %% [markdown]
# The FMD noise is slightly correlated between neighbouring pixels. The J-invariant loss
# assumes independent noise, so there it is a sound default rather than a guarantee:
# `benchmarks/RESULTS.md` has the full-size numbers for all three channels, where a plain
# Gaussian filter sometimes does as well.
#
# ## What you learned
#
# - A J-invariant denoiser's self-supervised loss is its true error plus the noise variance,
#   so its minimum is the true minimum (the donut median); a denoiser that sees the pixel
#   itself (the ordinary median) cannot be calibrated this way.
# - `image.calibrate(img, method_or_callable, grid)` makes any denoiser J-invariant and scores
#   its whole grid; `calibration.plot()` draws the curve and its minimum.
# - `image.denoise(img, method="auto")` compares the classical methods by their losses (the
#   paper's Table 1) and mixes the result with the input at the optimal weight.
# - The same calls work on real microscopy, with no knowledge of the noise; correlated noise is
#   the case to watch.
#
# Next: masked CNNs trained on the noisy image itself (`image.denoise(img, method="unet")`).
