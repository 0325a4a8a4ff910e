"""What the image guards cost on camera: the code before them against this checkout.

``image.calibrate(noisy, "tv")`` and ``image.denoise(noisy, "auto")`` (camera, Gaussian noise
0.1) run in fresh processes, alternating between an older source tree (e.g. made with
``git worktree add /tmp/before <commit>``) and this checkout; medians of wall and CPU time.

Run:  python benchmarks/bench_image_guard_cost.py /tmp/before [--repeat 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CODE = r"""
import sys, time, json, warnings
sys.path.insert(0, sys.argv[1])
import numpy as np
from skimage import data
from skimage.util import img_as_float
from sc_noise2self import image as im
warnings.simplefilter("ignore")
clean = img_as_float(data.camera())
noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
began, cpu = time.perf_counter(), time.process_time()
if sys.argv[2] == "tv":
    im.calibrate(noisy, "tv", progress=False)
else:
    im.denoise(noisy, "auto", progress=False)
print(json.dumps([time.perf_counter() - began, time.process_time() - cpu]))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", help="source tree of the code without the guards")
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    roots = {"before": args.before, "after": str(Path(__file__).resolve().parents[1])}
    print(f"load {os.getloadavg()}")
    print("| call | runs | wall, before -> after | CPU, before -> after |")
    print("|---|---|---|---|")
    for what, runs in (("tv", args.repeat), ("auto", max(1, args.repeat // 2))):
        times = {label: [] for label in roots}
        for _ in range(runs):
            for label, root in roots.items():
                out = subprocess.run([sys.executable, "-c", CODE, root, what],
                                     capture_output=True, text=True, check=True).stdout
                times[label].append(json.loads(out.strip().splitlines()[-1]))
        wall = [statistics.median(t[0] for t in times[k]) for k in roots]
        cpu = [statistics.median(t[1] for t in times[k]) for k in roots]
        print(f"| {what} | {runs} each | {wall[0]:.2f} -> {wall[1]:.2f} s | "
              f"{cpu[0]:.2f} -> {cpu[1]:.2f} s ({cpu[1] / cpu[0]:.3f}x) |")
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
