"""``sc-noise2self image train --max-time T`` from the shell: wall time idle and at load 4.

Run: SC_NOISE2SELF_DATA=/work/shared/data python benchmarks/bench_cli_train_budget.py

Files (written to a temporary folder first): the FMD confocal BPAE green channel's noisy
frame as a uint8 OME-TIFF (512 x 512), and a 48 x 192 x 192 float32 stack of uniform noise
(``--spatial ZYX``: a 3D UNet; its time, not its quality, is measured). Each row runs the
command line in a fresh Python process, as a user would, with the package defaults (the UNet,
the CPU, every core). "load 4" runs four busy-looping processes beside it for the whole run.
Reported: the training time the command prints against ``--max-time``, the whole command's
wall time, the held-out loss against the neighbour mean's, and for FMD the PSNR of the written
output against the 50-frame average.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from sc_noise2self import datasets
from sc_noise2self.image import files


def spin(stop) -> None:
    while not stop.is_set():
        pass


def run(arguments: list[str], load: int) -> tuple[float, str]:
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(load)]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sc_noise2self.cli", *arguments],
                          capture_output=True, text=True)
    wall = time.perf_counter() - began
    stop.set()
    for worker in workers:
        worker.join()
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return wall, done.stdout


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    noisy, average = datasets.fmd_confocal("G")
    fmd = folder / "fmd_g.ome.tif"
    files.write(fmd, np.round(np.asarray(noisy) * 255).astype(np.uint8), axes="YX")
    stack = folder / "stack.ome.tif"
    files.write(stack, np.random.default_rng(0).random((48, 192, 192)).astype(np.float32),
                axes="ZYX")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.2f} at the start, "
          f"{os.cpu_count()} cores")
    print("| file | --max-time | load | training (s) | command (s) | held-out loss vs "
          "neighbour mean | PSNR (dB) |")
    print("|---|---|---|---|---|---|---|")
    runs = [(fmd, "60", 0), (fmd, "60", 4), (stack, "60", 0), (stack, "60", 4),
            (fmd, None, 0)]
    for index, (source, budget, load) in enumerate(runs):
        out = folder / f"out{index}.ome.tif"
        arguments = ["image", "train", str(source), "--out", str(out), "--no-progress"]
        arguments += [] if budget is None else ["--max-time", budget]
        arguments += ["--spatial", "ZYX"] if source == stack else []
        wall, text = run(arguments, load)
        trained = re.search(r"trained .*?held-out loss ([\d.e-]+) against ([\d.e-]+)", text)
        took = re.search(r" in ([\d.]+) s \((\d+) steps\)", text)
        psnr = "-"
        if source == fmd:
            written = np.asarray(files.read(out).data, float) / 255
            truth = np.asarray(average, float)
            psnr = f"{peak_signal_noise_ratio(truth, written, data_range=1):.2f}"
        losses = f"{trained.group(1)} vs {trained.group(2)}" if trained else "?"
        print(f"| {source.name} | {budget or 'default (120)'} | {load} | "
              f"{took.group(1) + ' (' + took.group(2) + ' steps)' if took else '?'} | "
              f"{wall:.1f} | {losses} | {psnr} |",
              flush=True)
    print(f"# load {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
