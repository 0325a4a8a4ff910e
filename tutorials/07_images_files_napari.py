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
# **Time:** about a minute on 2 CPU cores (the CNN gets 20 s; use minutes for real work).

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
# - Files larger than memory are processed block by block, with the same result as in memory.
# - The napari widgets run the same calibration and training, with progress, cancel and the
#   loss curves, and every output is graded against the neighbour mean.
