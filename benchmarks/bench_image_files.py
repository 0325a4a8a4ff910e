"""The image command line on real and synthetic files, and a volume larger than memory (issue 18).

Every run is one ``sc-noise2self image ...`` process, timed, with its peak resident memory
polled (psutil, every 50 ms). PSNR is against the clean reference (FMD: the 50-frame
average; synthetic: the noise-free stack), on the [0, 1] scale of the reference.

Parts:
- ``fmd``: the three FMD BPAE confocal channels as one CYX uint8 OME-TIFF; calibrate
  (``auto``, shared and ``--per-channel``) and train a UNet (120 s).
- ``stack``: a synthetic 3D stack (48 x 192 x 192 blobs, Gaussian noise 0.15); calibrate in 3D
  (``--spatial ZYX``) and per plane, and train a 2D UNet over the planes (60 s).
- ``volume``: a 4096 x 512 x 512 float32 zarr volume (4.3 GB) written plane by plane;
  ``image calibrate --method gaussian`` (calibrated on a 256^2 sample, then block by block)
  and ``image predict`` with a 2D UNet trained on 32 of its planes (60 s).

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_image_files.py [PART ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import datasets
from sc_noise2self.image import files

COMMAND = [sys.executable, "-c", "import sys; from sc_noise2self.cli import main; "
           "sys.exit(main(sys.argv[1:]))"]


def run(args: list[str]) -> tuple[float, float, str]:
    """Seconds, peak RSS in MB and the output of one command line."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen([*COMMAND, *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "2"})
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    output = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{args} failed:\n{output}")
    return time.perf_counter() - start, peak / 1e6, output


# Images in [0, 1]; skimage takes the truth first.
psnr = partial(peak_signal_noise_ratio, data_range=1)


def row(name: str, seconds: float, peak: float, value: str) -> None:
    print(f"| {name} | {value} | {seconds:.1f} s | {peak:.0f} MB |", flush=True)


def header(title: str) -> None:
    print(f"\n{title} (load average {os.getloadavg()[0]:.2f})")
    print("| run | PSNR (dB) | time | peak RSS |")
    print("|---|---|---|---|", flush=True)


def fmd(folder: Path) -> None:
    pairs = [datasets.fmd_confocal(c) for c in "BGR"]
    noisy = np.stack([p[0] for p in pairs])
    truth = np.stack([p[1] for p in pairs])
    source = folder / "fmd.ome.tif"
    files.write(source, np.round(noisy * 255).astype(np.uint8), axes="CYX")
    header("FMD BPAE confocal, 3 x 512 x 512 uint8 (channels B, G, R)")
    print(f"| noisy input | {psnr(truth, noisy):.2f} | - | - |")

    def scored(path):
        return psnr(truth, files.read(path).data / 255.0)

    for name, extra in (("calibrate auto, shared", []), ("calibrate auto, per channel",
                                                          ["--per-channel"])):
        out = folder / f"fmd_{len(extra)}.zarr"
        seconds, peak, text = run(["image", "calibrate", source, "--out", out, *extra])
        row(name, seconds, peak, f"{scored(out):.2f}")
        print("    " + " / ".join(line for line in text.splitlines() if "method" in line))
    out = folder / "fmd_unet.zarr"
    seconds, peak, _ = run(["image", "train", source, "--out", out, "--max-time", "120"])
    row("train UNet 120 s, predict", seconds, peak, f"{scored(out):.2f}")


def synthetic_stack(shape=(48, 192, 192), sigma=0.15):
    from scipy import ndimage
    from skimage.data import binary_blobs

    blobs = binary_blobs(length=shape[1], n_dim=3, volume_fraction=0.3, rng=0)[:shape[0]]
    clean = ndimage.gaussian_filter(blobs.astype(np.float32), 1.5)
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return clean, noisy.astype(np.float32)


def stack(folder: Path) -> None:
    clean, noisy = synthetic_stack()
    source = folder / "stack.ome.tif"
    files.write(source, noisy, axes="ZYX", scale=(1.0, 0.3, 0.3))
    header("Synthetic 3D stack, 48 x 192 x 192 float32, Gaussian noise 0.15")
    print(f"| noisy input | {psnr(clean, noisy):.2f} | - | - |")
    for name, extra in (("calibrate auto, 3D (ZYX)", ["--spatial", "ZYX", "--sample", "64"]),
                        ("calibrate auto, per plane (YX)", ["--spatial", "YX"])):
        out = folder / f"stack_{extra[1]}.zarr"
        seconds, peak, text = run(["image", "calibrate", source, "--out", out, *extra])
        row(name, seconds, peak, f"{psnr(clean, files.read(out).data):.2f}")
        print("    " + " / ".join(line for line in text.splitlines() if "method" in line))
    out = folder / "stack_unet.zarr"
    seconds, peak, _ = run(["image", "train", source, "--out", out, "--spatial", "YX",
                            "--max-time", "60"])
    row("train 2D UNet 60 s over the planes, predict", seconds, peak,
        f"{psnr(clean, files.read(out).data):.2f}")


def volume(folder: Path, planes: int = 4096, size: int = 512) -> None:
    import dask.array as da

    from sc_noise2self.io import atomic_folder

    clean, _ = synthetic_stack((64, size, size), 0.0)
    rng = np.random.default_rng(1)
    like = files.ImageData(da.zeros((planes, size, size), dtype=np.float32), "ZYX")
    with atomic_folder(folder / "volume.ome.zarr") as building:
        array = files.create_zarr(building, like)
        for z in range(planes):  # written plane by plane: never held whole here either
            array[z] = clean[z % 64] + 0.15 * rng.standard_normal((size, size),
                                                                  dtype=np.float32)
    array = files.read(folder / "volume.ome.zarr", lazy=True).data
    gigabytes = planes * size * size * 4 / 1e9
    header(f"Volume {planes} x {size} x {size} float32 ({gigabytes:.1f} GB), OME-Zarr")
    sample = np.stack([np.asarray(array[z]) for z in range(0, planes, planes // 16)])
    reference = np.stack([clean[z % 64] for z in range(0, planes, planes // 16)])
    print(f"| noisy input (16 planes) | {psnr(reference, sample):.2f} | - | - |")
    out = folder / "volume_gaussian.zarr"
    seconds, peak, _ = run(["image", "calibrate", folder / "volume.ome.zarr", "--out", out,
                            "--method", "gaussian", "--spatial", "YX", "--block", "512"])
    result = files.read(out, lazy=True).data
    denoised = np.stack([np.asarray(result[z]) for z in range(0, planes, planes // 16)])
    row("calibrate gaussian, by blocks", seconds, peak, f"{psnr(reference, denoised):.2f}")
    # The network is trained here, outside the measured run (60 s on 32 planes of a 256 crop),
    # so that the row measures the block-by-block prediction of the whole volume alone.
    from sc_noise2self.image import workflows

    model = folder / "volume_unet.pt"
    workflows.train_file(folder / "volume.ome.zarr", spatial="YX", frames=32, crop=256,
                         max_time=60, save_model=model, progress=False)
    out = folder / "volume_unet.zarr"
    seconds, peak, _ = run(["image", "predict", folder / "volume.ome.zarr", "--model", model,
                            "--out", out, "--block", "256"])
    result = files.read(out, lazy=True).data
    denoised = np.stack([np.asarray(result[z]) for z in range(0, planes, planes // 16)])
    row("predict with a 2D UNet (trained on 32 planes, 60 s), by blocks", seconds, peak,
        f"{psnr(reference, denoised):.2f}")
    print(f"volume {gigabytes * 1e3:.0f} MB on disk; peak RSS above is the whole process "
          "(Python, torch, zarr) at its highest")


def main() -> None:
    parts = sys.argv[1:] or ["fmd", "stack", "volume"]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as scratch:
        for part in parts:
            {"fmd": fmd, "stack": stack, "volume": volume}[part](Path(scratch))


if __name__ == "__main__":
    main()
