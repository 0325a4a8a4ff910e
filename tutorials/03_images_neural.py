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
# # 3. Masked CNNs trained on the noisy images themselves
#
# The paper's section 5: a convolutional network trained with the Noise2Self loss never needs
# a clean image. At each step a grid of pixels is hidden (every fourth pixel in each
# direction, at a random phase, replaced by the mean of its four neighbours), and the network
# is scored only on the hidden pixels, against their noisy values. The network cannot copy a
# pixel it never sees, so it learns to predict the signal. This grid masking is the default of
# `image.train`: on a GPU it trained 1.2 dB better than the paper's random mask with random
# stand-ins after 800 steps (`benchmarks/RESULTS.md`); `masking="random"` keeps the paper's.
#
# **Tiny CPU budget.** *For speed* each network here trains for 40-45 seconds on 2 CPU cores,
# about a hundred steps. That is far from converged: expect it to trail the calibrated classical
# methods of tutorial 2. For real work, train for thousands of steps on a GPU (last section).

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
import tempfile
from functools import partial
from pathlib import Path

import torch
from skimage import data, util
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import image

# Small networks train faster on one thread of a shared CPU; a GPU needs none of this.
torch.set_num_threads(1)


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


# %% [markdown]
# ## One noisy image
#
# The camera crop of tutorial 2, Gaussian noise of standard deviation 0.1. `image.train`
# takes the noisy image alone.
#
# **Which network.** `image.train(noisy)` alone trains the default UNet (the paper's four
# levels at half its widths, with training settings chosen for a CPU budget). Here a DnCNN of
# 8 layers and 32 features, which learns more per second in a budget of under a minute. In
# the CPU runs of `benchmarks/RESULTS.md` (camera crop, 240 s on 2 cores, `augment=True`),
# the DnCNN 8x32 reached 28.73 dB and the default UNet 28.57 to 28.68 dB over three seeds,
# against 28.1 dB for NL-means. With 64 features, the DnCNN is the best recipe for long
# budgets: on the full camera image it reached 29.10 to 29.24 dB over two training seeds
# after 40 minutes on 2 CPU cores, and
# 29.12 dB after 21 s on a GPU (last section). A step of the 8x64 costs about four times the
# arithmetic of the 8x32.

# %%
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

# %% [markdown]
# The training curve: the self-supervised loss on the training patches, and on a held-out
# band of the image after every epoch (every hidden-pixel phase of the band, so each held-out
# pixel is scored once). Both are in the network's units (the image rescaled between two of
# its percentiles). They fall as the network learns the signal and level off at the noise
# variance plus the network's remaining error; the weights with the lowest held-out loss are
# kept, and training stops after 20 epochs without improvement in the second half of the
# learning-rate schedule.

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(history["step"], history["train_loss"], "o-", ms=3, label="training patches")
ax.plot(history["step"], history["val_loss"], "s-", ms=3, label="held-out band")
ax.set(xlabel="step", ylabel="self-supervised loss", title="training curve")
ax.legend(frameon=False);

# %% [markdown]
# `predict(augment=True)` averages the predictions of the 8 flipped and transposed copies of
# the image (test-time augmentation): 8 passes instead of one, a smoother estimate. It added
# 0.06 to 0.50 dB in every GPU run where it was scored, and 0.24 to 0.55 dB in the CPU runs on
# the crop; `image.denoise(img, method="unet")` uses it by default. Against the classical
# best: NL-means calibrated by its J-invariant loss and mixed with the input, as
# `image.denoise` does it (tutorial 2).

# %%
direct = model.predict(noisy)
cnn = model.predict(noisy, augment=True)
classical, calibration = image.denoise(noisy, method="nl_means", return_calibration=True,
                                       progress=False)
print(f"PSNR: noisy {psnr(clean, noisy):.2f} dB | CNN (45 s, CPU) {psnr(clean, direct):.2f} dB, "
      f"with augment=True {psnr(clean, cnn):.2f} dB | NL-means calibrated "
      f"{psnr(clean, classical):.2f} dB")
fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
panels = {"clean": clean, "noisy": noisy, "masked CNN, augment=True": cnn,
          "NL-means, calibrated": classical}
for ax, (title, picture) in zip(axes, panels.items(), strict=True):
    ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize="small")
    ax.axis("off")

# %% [markdown]
# ## A set of noisy images: Set12
#
# One network can learn from many noisy images at once: pass a list (sizes may differ). Here
# the twelve Set12 images with Gaussian noise of standard deviation 25/255, the usual
# benchmark setting, each then denoised by the same network with test-time augmentation.
# The classical comparison is TV denoising calibrated on each image
# (`approximate_loss=True` scores one masking phase only: *for speed*; leave it False for
# real work).

# %%
clean_set = n2s.datasets.set12()
rng = np.random.default_rng(0)
noisy_set = [picture + 25 / 255 * rng.standard_normal(picture.shape) for picture in clean_set]

# For speed: 40 s on the CPU. For real work: several thousand steps on a GPU.
set_model = image.train(noisy_set, "dncnn", model_kwargs={"depth": 8, "features": 32},
                        max_time=40, progress=False, random_state=0)
rows = []
for truth, noisy_image in zip(clean_set, noisy_set, strict=True):
    tv = image.denoise(noisy_image, method="tv", approximate_loss=True, progress=False)
    rows.append([psnr(truth, noisy_image),
                 psnr(truth, set_model.predict(noisy_image, augment=True)), psnr(truth, tv)])
print(f"{set_model.history['step'][-1]} steps")
print(" image | noisy | CNN   | TV calibrated   (CNN: predict(augment=True))")
for i, values in enumerate(rows, start=1):
    print(f"  {i:>4} | " + " | ".join(f"{v:.2f}" for v in values))
print("  mean | " + " | ".join(f"{v:.2f}" for v in np.mean(rows, axis=0)))

# %% [markdown]
# ## Saving and loading
#
# A trained model saves its weights, architecture, normalisation and training history in one
# file.

# %%
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "camera_dncnn.pt"
    model.save(path)
    reloaded = image.Noise2SelfModel.load(path)
    assert np.allclose(reloaded.predict(noisy, augment=True), cnn)
print("GPU available here:", torch.cuda.is_available())

# %% [markdown]
# ## On a GPU
#
# Nothing changes but the budget: `device="auto"` (the default) picks the GPU, and mixed
# precision and `torch.compile` switch on there by default. The
# best recipe measured on the GPU, a DnCNN of 8 layers and 64 features with grid masking and
# weight averaging, then test-time augmentation:
#
# ```python
# model = image.train(noisy, "dncnn", model_kwargs={"depth": 8}, steps=3000, ema=0.999)
# denoised = model.predict(noisy, augment=True)
# denoised = model.predict(big_image, augment=True, tile_size=512)  # tiles bound GPU memory
# ```
#
# What it gave, as recorded in `benchmarks/RESULTS.md` (one NVIDIA H200, torch 2.11 with
# CUDA 13.0, bf16 autocast; the full 512 x 512 camera image, noise 0.1, seed 0; one run per
# row):
#
# | recipe | steps (budget) | PSNR | with `augment=True` |
# |---|---|---|---|
# | UNet (paper's widths, batch 16), paper's random mask | 800 | 27.16 dB | |
# | UNet (paper's widths, batch 16), grid masking with neighbour means | 800 | 28.35 dB | |
# | DnCNN 8x64, grid masking | 800 | 28.02 dB | |
# | DnCNN 8x64, grid masking, `ema=0.999` | 2650 of 3000 (plateau) | **29.02 dB** | **29.12 dB** |
#
# The last run took about 21 seconds. The best classical method on the same image (NL-means,
# J-invariant calibration, mixed) scored 28.68 dB, so the GPU-trained network passes it by
# 0.44 dB. (Those runs stopped on a plateau with a patience of 10 epochs; the default is now
# 20.)
#
# ## What you learned
#
# - `image.train(noisy)` fits a masked CNN with the Noise2Self loss on noisy images alone,
#   one image or a list; `.history` holds the training curve and `.predict` denoises.
# - Grid masking with neighbour means is the default; `predict(augment=True)` averages 8
#   flipped copies for a smoother estimate.
# - The held-out self-supervised loss tracks training without any clean image.
# - On a CPU budget of under a minute the network is far from converged and the calibrated classical
#   methods win; on a GPU, a few thousand steps of an 8x64 DnCNN pass them.
# - `model.save(path)` / `Noise2SelfModel.load(path)` keep everything needed to denoise later,
#   and `device="auto"` moves the same code to a GPU.
