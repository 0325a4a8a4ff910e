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
# # 7. Microscopy files without Python: the command line and napari
#
# A microscopist's data are TIFF or OME-Zarr stacks, often larger than memory, and their
# tool is napari. This tutorial denoises real confocal images from files with the
# `sc-noise2self image` command, checks the result against the clean reference, shows that a
# volume is processed block by block with the same result as in memory, and walks through
# the two napari widgets.
#
# Every denoiser here is graded by the self-supervised loss on the noisy data alone, against
# the J-invariant neighbour mean; the reference images are used only to show you the PSNR.
#
# **Time:** about three minutes on 2 CPU cores (the CNNs get 20 s and 60 s; use minutes for
# real work).

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
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from IPython.display import Image, display
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self.image import files

work = Path(tempfile.mkdtemp())


def sc_noise2self(*args):
    # The command line, as you would type it in a shell: sc-noise2self image ...
    command = [sys.executable, "-m", "sc_noise2self.cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    print(done.stdout[-2000:] or done.stderr[-2000:])
    done.check_returncode()


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


# %% [markdown]
# ## A three-channel confocal file
#
# The FMD dataset's BPAE cells: one noisy frame per channel (blue nuclei, green actin, red
# mitochondria) and the average of 50 frames as the reference. We write the noisy channels
# as one OME-TIFF with axes `CYX` and a pixel size, as a microscope would.

# %%
pairs = [n2s.datasets.fmd_confocal(c) for c in "BGR"]
noisy = np.stack([p[0] for p in pairs])
truth = np.stack([p[1] for p in pairs])
files.write(work / "bpae.ome.tif", np.round(noisy * 255).astype(np.uint8), axes="CYX",
            scale=(1.0, 0.1, 0.1))
image = files.read(work / "bpae.ome.tif")
print(image.axes, image.shape, image.dtype, image.scale)

# %% [markdown]
# ## Calibrate and denoise from the shell
#
# `sc-noise2self image calibrate IN --out OUT` compares the classical methods on a central
# sample by the self-supervised loss (`--method auto`), picks each one's parameters, mixes in
# the optimal share of the noisy input, and denoises the whole file block by block. With
# `--per-channel` each channel gets its own method and parameters: the three stains differ.
# The output keeps the input's axes, shape and pixel size; an existing output is never
# replaced without `--overwrite`.

# %%
sc_noise2self("image", "calibrate", work / "bpae.ome.tif", "--out", work / "bpae.ome.zarr",
              "--per-channel", "--report", work / "report.json", "--plot", work / "curve.png")
denoised = files.read(work / "bpae.ome.zarr")
print(denoised.axes, denoised.shape, denoised.scale)
for c, name in enumerate("BGR"):
    print(f"{name}: noisy {psnr(truth[c], noisy[c]):.2f} dB -> denoised "
          f"{psnr(truth[c], denoised.data[c] / 255):.2f} dB")
display(Image(str(work / "curve.png")))

# %% [markdown]
# The report holds each calibration's whole record (the loss at every parameter, the
# neighbour-mean baseline, the noise variance, the mix weight), so the choice can be checked
# later.

# %%
report = json.loads((work / "report.json").read_text())
print([(r["method"], r["best"], round(r["mix_weight"], 3)) for r in report])
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, picture, title in zip(axes, [noisy[1], denoised.data[1] / 255, truth[1]],
                              ["noisy (actin)", "denoised", "50-frame average"], strict=True):
    ax.imshow(picture[128:384, 128:384], cmap="gray", vmin=0, vmax=truth[1].max())
    ax.set_title(title)
    ax.axis("off")

# %% [markdown]
# ## A masked CNN, trained on the noisy file itself
#
# `image train` trains a Noise2Self UNet on every channel and time point of the file (here
# 20 s, far too short for a good network; give it minutes) and writes its prediction;
# `--save-model` keeps the network, and `image predict` applies it to other files. A network
# that has not yet beaten the neighbour mean on its held-out pixels is not trusted: the
# neighbour mean is written instead, with a warning.

# %%
sc_noise2self("image", "train", work / "bpae.ome.tif", "--out", work / "bpae_unet.zarr",
              "--max-time", "20", "--save-model", work / "unet.pt")
sc_noise2self("image", "predict", work / "bpae.ome.tif", "--model", work / "unet.pt",
              "--out", work / "bpae_unet.tif")
cnn = files.read(work / "bpae_unet.tif")
print("CNN, 20 s:", [f"{psnr(truth[c], cnn.data[c] / 255):.2f} dB" for c in range(3)])

# %% [markdown]
# ## Structured noise: stripes from a line-scanning microscope
#
# Noise2Self assumes that a pixel's noise is independent of the pixels the denoiser sees.
# Line-scanning confocals and sCMOS read-out break that: neighbouring pixels along a row
# share part of their noise. A pixel-wise mask then leaves the hidden pixel's noise visible
# in its neighbours on the row, every self-supervised loss comes out too low, and the
# calibration under-smooths, leaving the stripes in.
#
# `image.noise_correlation` measures the noise's correlation along each axis from a residual
# that never uses the pixel's own line, on the flattest pixels (so that edges do not pass for
# noise). Here we add noise correlated over 5 pixels along the rows to the actin channel's
# 50-frame average, as a line-scanning microscope would.

# %%
from scipy import ndimage as ndi

white = np.random.default_rng(0).normal(0, 0.05, truth[1].shape)
row_noise = ndi.correlate1d(white, np.ones(5) / np.sqrt(5), axis=1)  # a 5-pixel box per row
striped = (truth[1] + row_noise).astype(np.float32)
found = n2s.image.noise_correlation(striped)
print(found.summary())
found.plot()
plt.show()

# %% [markdown]
# The correlation along x (rows) is about 0.8 at lag 1 and ends at lag 4, as a 5-pixel box
# makes; along y it stays near zero. Every image function takes `mask=`: `"auto"` (the
# default) runs this test and hides **whole rows** when it finds them correlated, which is
# exact for noise that is independent from one row to the next, however far it reaches
# along the row. The stand-ins of a hidden row come from the rows above and below, and the
# neighbour-mean baseline does the same. Compare with the pixel mask that `auto` used before:

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the detection is announced by a StructuredNoiseWarning
    pixel_mask = n2s.image.denoise(striped, "auto", mask="pixel", progress=False)
    row_mask, chosen = n2s.image.denoise(striped, "auto", return_calibration=True,
                                         progress=False)
print(f"noisy {psnr(truth[1], striped):.2f} dB | pixel mask {psnr(truth[1], pixel_mask):.2f} "
      f"dB | mask {chosen.settings['mask']!r} ({chosen.method}) {psnr(truth[1], row_mask):.2f} dB")
fig, axes = plt.subplots(1, 3, figsize=(11, 4))
for ax, picture, title in zip(axes, [striped, pixel_mask, row_mask],
                              ["line-scan noise", "pixel mask", "row mask (auto)"], strict=True):
    ax.imshow(picture[128:320, 128:320], cmap="gray", vmin=0, vmax=truth[1].max())
    ax.set_title(title)
    ax.axis("off")

# %% [markdown]
# The CNNs take the same `mask=` (`image train --mask`): a network trained with whole rows
# hidden predicts each row with that row hidden, which it does by default, and it is kept
# out of bioimage.io packages, whose consumers would run it without the masks.
#
# Noise correlated along *every* axis (an image that was resampled, registered or
# deconvolved) leaves no line to predict from. There `auto` hides a **block** around each
# scored pixel, as wide as the correlation reaches (`settings["reach"]`), and reads its
# stand-in just outside the block. Here the noise is a 3 x 3 box of white noise, correlated
# within 2 pixels both ways; TV alone keeps the comparison quick:

# %%
blotchy = (truth[1] + ndi.uniform_filter(white, 3) * 3).astype(np.float32)  # sd about 0.05
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pixel_mask = n2s.image.denoise(blotchy, "tv", mask="pixel", progress=False)
    block_mask, chosen = n2s.image.denoise(blotchy, "tv", return_calibration=True,
                                           progress=False)
print(n2s.image.noise_correlation(blotchy).summary())
print(f"noisy {psnr(truth[1], blotchy):.2f} dB | pixel mask {psnr(truth[1], pixel_mask):.2f} "
      f"dB | mask {chosen.settings['mask']!r}, reach {chosen.settings['reach']} "
      f"{psnr(truth[1], block_mask):.2f} dB")

# %% [markdown]
# With pixel masks the hidden pixel's noise leaks through its neighbours, the loss is too low
# for light smoothing and TV under-smooths; the blocks keep the loss unbiased and the TV
# output gains about 2 dB here. Blocks cost more phases: 36 at reach 2, against 16 pixel
# phases.
#
# ## One call, one budget: the classical methods and a CNN
#
# With `--max-time` (or `max_time=` in `image.denoise(x, "auto")`), `auto` calibrates the
# classical methods first, trains a masked UNet in the time left, and scores them all on
# the same held-out pixels with the same J-invariant loss. Each loss gives the expected error
# of that prediction mixed with the input at its best weight; the lower one wins and denoises
# the file (a UNet that hides whole rows, as here, mixed as it was judged). The table gives
# each one's seconds, held-out loss and expected error. (A minute is short for a UNet on a
# CPU; give it several for real work.)

# %%
files.write(work / "striped.ome.tif", striped, axes="YX", scale=(0.1, 0.1))
sc_noise2self("image", "calibrate", work / "striped.ome.tif", "--out",
              work / "striped_auto.ome.tif", "--method", "auto", "--max-time", "60",
              "--sample", "256", "--no-progress")
budgeted = files.read(work / "striped_auto.ome.tif").data
print(f"auto within 60 s: {psnr(truth[1], budgeted):.2f} dB")

# %% [markdown]
# ## Sharing the network: a bioimage.io package
#
# `image export` writes the saved network as a [bioimage.io](https://bioimage.io) model
# package (a `.zip`, spec 0.5) that Fiji/deepImageJ, ilastik and BiaPy run without this
# package, and that can go on the model zoo: the weights (as a PyTorch state dict with the
# network's source, and as TorchScript), the normalisation as pre- and post-processing in
# the file's own units, a test input cut from the file with the network's output on it, a
# cover, and the citations. `bioimageio.core` (the `[bioimageio]` extra) checks a package by
# rebuilding the network from it and reproducing the test output; `image.load_model` reads
# it back, and `image predict --model unet.zip` uses it like the `.pt` file.

# %%
sc_noise2self("image", "export", work / "unet.pt", "--sample", work / "bpae.ome.tif",
              "--out", work / "unet.zip", "--author", "A. Microscopist",
              "--channel-names", "nuclei,actin,mitochondria")
try:
    from bioimageio.core import test_model

    print("bioimageio.core's test:", test_model(work / "unet.zip").status)
except ImportError:
    print("pip install 'sc_noise2self[bioimageio]' to run bioimageio.core's test")
exported = n2s.image.load_model(work / "unet.zip")
saved = n2s.image.load_model(work / "unet.pt")
window = np.asarray(files.read(work / "bpae.ome.tif").data)[:, :128, :128].astype(np.float32)
print("the package predicts as the saved model:",
      np.array_equal(exported.predict(window), saved.predict(window)))

# %% [markdown]
# ## Larger than memory: block by block
#
# Inputs are read lazily and outputs written block by block with a halo: each block is read
# with enough neighbours to cover how far the denoiser reaches, on the masking grid (or the
# network's down-sampling grid), so the result equals the whole-image result up to float
# rounding. Here a 32-plane stack is denoised in 64-pixel blocks and compared with the same
# calibration applied in memory.

# %%
from sc_noise2self.image import blocks

stack = np.stack([np.roll(noisy[1], 8 * z, axis=0)[:256, :256] for z in range(32)])
files.write(work / "stack.zarr", stack.astype(np.float32), axes="ZYX")
lazy = files.read(work / "stack.zarr", lazy=True)
calibration = blocks.calibrate_sample(lazy, spatial="YX", size=128, method="gaussian")
by_blocks = blocks.denoise_blocks(lazy, calibration, block=64)
in_memory = calibration.denoise(stack[5])
print("largest difference:", np.abs(by_blocks[5] - in_memory).max())

# %% [markdown]
# The same runs from the shell on any size of file:
# `sc-noise2self image calibrate big.ome.zarr --out big_denoised.ome.zarr --block 256`.
# A 2.1 GB volume is denoised in `benchmarks/RESULTS.md` with a fraction of that in memory.
#
# ## In napari
#
# Install the plugin with `pip install "sc-noise2self[napari]"`; its two widgets are under
# *Plugins > Noise2Self*, and *File > Open Sample > Noise2Self* opens noisy images to try.
#
# **Noise2Self: calibrate.** Pick an image layer, how to read its axes (a 2D image, a z-stack,
# a stack of 2D images, channels), the method (`auto` or one) and whether to mix. It runs in
# the background with a progress bar and a Cancel button, adds the denoised layer with the
# input's scale and position, and shows the loss curve of the chosen method and the best loss
# of every method against the neighbour mean and the estimated noise variance.

# %%
images = Path("images")  # taken by tests/test_napari.py from a headless viewer
for name in ("napari_calibrate.png", "napari_train.png"):
    if (images / name).exists():
        display(Image(str(images / name), width=900))

# %% [markdown]
# **Noise2Self: train CNN.** Pick the model, a time or step budget and the device (it says
# what it found: CUDA, MPS or CPU). The training curve updates live; *Stop (keep best)* ends
# training at the next epoch and keeps the best network so far. Predict on the same layer or
# another one, and save or load the network.
#
# ## What you learned
#
# - `sc-noise2self image calibrate | train | predict` denoise TIFF and OME-Zarr files from
#   the shell, keeping axes, shape, pixel size and an integer file's dtype, and never
#   overwrite without `--overwrite`.
# - `image export` shares a trained network as a bioimage.io package that other tools run.
# - `--per-channel` calibrates each stain on its own; the report keeps every loss curve.
# - Noise correlated along rows or columns (line scanning, sCMOS) is found by
#   `image.noise_correlation`, and `mask="auto"` hides whole lines so that the loss stays
#   unbiased; `--max-time` lets `auto` weigh a masked UNet against the classical methods.
# - Files larger than memory are processed block by block, with the same result as in memory.
# - The napari widgets run the same calibration and training, with progress, cancel and the
#   loss curves, and every output is graded against the neighbour mean.
