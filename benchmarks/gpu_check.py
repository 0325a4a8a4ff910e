"""GPU check for the Noise2Self CNNs: CUDA agrees with the CPU, then train and time on CUDA.

1. Consistency: a small UNet trained briefly on the CPU predicts the same image on CPU and
   CUDA (float32, and bf16/fp16 autocast), whole and tiled, including an odd size. For the
   structured-noise masks (issue 27): the masked copies with blocks (reach 1 and 2) and
   with whole rows are the same on both devices, and so is a block model's J-invariant
   prediction.
2. Training runs on the full noisy camera image (sigma 0.1, seed 0): each ``MODEL:SECONDS``
   in ``--runs`` trains that model with AMP and torch.compile on CUDA for that budget, then
   predicts the whole image untiled and tiled, and prints steps/s, PSNR, prediction time
   and peak GPU memory, one JSON line per run.

3. ``--scvi`` (issue 17, needs the ``[scvi]`` extra): ``tl.calibrate_scvi`` on paul15 (or
   synthetic counts without the data) with ``accelerator`` set to the device; prints the
   chosen ``n_latent``, the curve and the seconds per setting as one JSON line.
4. ``--blocks`` (issue 18): a UNet predicts a 256 x 512 x 512 volume plane by plane with
   ``image.predict_blocks`` on the device; prints the time and the largest difference from
   whole-plane predictions of three planes.
5. ``--pca-cells N`` (issue 19): N x 2,000 synthetic counts (about 10% non-zero) calibrated
   by ``calibrate_pca`` with ``device`` set to the device and with the numpy path on the
   CPU, then denoised on the device from the calibration's components; prints both times,
   their ratio, the peak device memory, the largest relative difference between the two
   curves and the chosen ranks, as one JSON line.

Without CUDA it says so and exits with status 2, unless ``--cpu-fallback`` asks for the
same runs on the CPU (labelled as such).

    python benchmarks/gpu_check.py --runs unet:60 dncnn:60
    python benchmarks/gpu_check.py --runs unet:10 --cpu-fallback   # no GPU: a labelled CPU run
    python benchmarks/gpu_check.py --runs --scvi --blocks           # only the checks of 17 and 18
    python benchmarks/gpu_check.py --runs --pca-cells 1000000        # only the check of 19
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from bench_cnn_camera import camera, psnr

from sc_noise2self._device import resolve_amp, resolve_device
from sc_noise2self.image.cnn import train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=["unet:60", "dncnn:60"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cpu-fallback", action="store_true")
    parser.add_argument("--scvi", action="store_true", help="time calibrate_scvi on the device")
    parser.add_argument("--blocks", action="store_true", help="predict a volume by blocks")
    parser.add_argument("--pca-cells", type=int, default=0,
                        help="calibrate PCA on this many cells on the device and on the CPU")
    args = parser.parse_args()
    device = pick_device(args.cpu_fallback)
    if device is None:
        return 2
    if device.type == "cuda":
        check_consistency()
    check_structured_masks(device)
    clean, noisy = camera("full")
    finite = True
    for spec in args.runs:
        model_name, seconds = spec.split(":")
        row, denoised = train_and_time(model_name, float(seconds), clean, noisy, device, args)
        print(json.dumps(row), flush=True)
        finite &= bool(np.isfinite(denoised).all())
    if args.scvi:
        print(json.dumps(scvi_check(device)), flush=True)
    if args.pca_cells:
        print(json.dumps(pca_check(device, args.pca_cells)), flush=True)
    if args.blocks:
        print(json.dumps(blocks_check(device, noisy)), flush=True)
    return 0 if finite else 1


def scvi_check(device: torch.device) -> dict:
    """``tl.calibrate_scvi`` with the accelerator set to ``device``: time per setting, choice."""
    import sc_noise2self as n2s

    if n2s.datasets.local_file("paul15.h5ad") is not None:
        adata, name = n2s.datasets.paul15(), "paul15"
    else:
        adata, name = n2s.datasets.synthetic_counts(2000, 1000, rank=8), "synthetic 2000x1000"
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    start = time.perf_counter()
    n2s.tl.calibrate_scvi(adata, accelerator=accelerator)
    _sync(device)
    record = adata.uns["noise2self_scvi"]
    return {"check": "scvi", "data": name, "device": str(device),
            "n_latent": record["best"], "grid": [int(g) for g in record["grid"]],
            "loss": [round(float(v), 6) for v in record["loss"]],
            "baseline": float(record["params"]["baseline_loss"]),
            "seconds_per_setting": (time.perf_counter() - start) / len(record["grid"])}


def pca_check(device: torch.device, n_cells: int) -> dict:
    """Issue 19: the single-cell PCA path on the device against the numpy path on the CPU."""
    import tempfile
    from pathlib import Path

    import anndata as ad
    from scipy import sparse

    from sc_noise2self import datasets
    from sc_noise2self.denoisers.pca import calibrate_pca_counts, fit_ranks

    with tempfile.TemporaryDirectory() as tmp:
        store = datasets.write_synthetic_counts(Path(tmp) / "counts.zarr", n_cells, 2000,
                                                rank=20, depth=250, chunk_size=50_000)
        X = sparse.csr_matrix(ad.read_zarr(store).X)
    calibrate_pca_counts(X[:5000], max_comps=20, device=device)  # warm up kernels
    calibrate_pca_counts(X[:5000], max_comps=20)
    torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
    start = time.perf_counter()
    on_device = calibrate_pca_counts(X, max_comps=100, device=device)
    _sync(device)
    t_device = time.perf_counter() - start
    start = time.perf_counter()
    fitted = fit_ranks(X, on_device.best, {"solver": "auto", "device": device},
                       transform="sqrt", random_state=0, max_layer_gb=0, start=on_device.start)
    _sync(device)
    t_denoise = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    start = time.perf_counter()
    on_cpu = calibrate_pca_counts(X, max_comps=100)
    t_cpu = time.perf_counter() - start
    return {"check": "pca", "device": str(device), "cells": n_cells, "nnz": int(X.nnz),
            "calibrate_device_s": round(t_device, 2), "calibrate_cpu_s": round(t_cpu, 2),
            "cpu_over_device": round(t_cpu / t_device, 2),
            "denoise_device_s": round(t_denoise, 2), "peak_device_gb": peak,
            "max_rel_curve_diff": float(np.max(np.abs(on_device.loss - on_cpu.loss)
                                               / on_cpu.loss)),
            "rank_device": int(on_device.best), "rank_cpu": int(on_cpu.best),
            "scores_shape": list(fitted.fit.scores.shape)}


def blocks_check(device: torch.device, noisy: np.ndarray) -> dict:
    """A UNet predicting a 256 x 512 x 512 volume plane by plane, by blocks, on ``device``."""
    from sc_noise2self.image import ImageData, predict_blocks

    model = train(noisy, "unet", steps=50, device=device, progress=False)
    planes = np.stack([np.roll(noisy, z, axis=0) for z in range(256)]).astype(np.float32)
    start = time.perf_counter()
    out = predict_blocks(ImageData(planes, "ZYX"), model, spatial="YX", block=256,
                         progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    worst = max(float(np.abs(out[z] - model.predict(planes[z])).max()) for z in (0, 100, 255))
    return {"check": "blocks", "device": str(device), "voxels": int(planes.size),
            "seconds": seconds, "max_abs_difference_to_whole_planes": worst}


def pick_device(cpu_fallback: bool) -> torch.device | None:
    if torch.cuda.is_available():
        device = torch.device("cuda")
        print(f"device: CUDA {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
              f"amp dtype {resolve_amp(device, None)}, auto -> "
              f"{resolve_device('auto')}")  # fmt: skip
        return device
    if cpu_fallback:
        print(f"device: CPU FALLBACK (no CUDA; these are NOT GPU figures), torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
        return torch.device("cpu")
    print(f"no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
          "nothing checked. Pass --cpu-fallback for a CPU run.")  # fmt: skip
    return None


def check_consistency() -> None:
    """The same weights predict the same image on CPU and CUDA, whole, tiled and odd-sized."""
    _, noisy = camera("crop")
    model = train(noisy, "unet", steps=20, batch_size=4, patch_size=32, device="cpu",
                  model_kwargs={"channels": (8, 16)}, progress=False)  # fmt: skip
    odd = noisy[:101, :77]
    cases = (
        ("float32 whole", {}, 1e-4),
        ("float32 tiled 48", {"tile_size": 48, "tile_overlap": 8}, 1e-4),
        ("autocast whole", {"amp": True}, 5e-2),
    )
    # The CPU reference of each case: the same call, in float32 (no autocast on the CPU).
    on_cpu = {
        label: model.predict(odd, **{k: v for k, v in kwargs.items() if k != "amp"})
        for label, kwargs, _ in cases
    }
    model.to("cuda")
    for label, kwargs, tol in cases:
        diff = float(np.max(np.abs(model.predict(odd, **kwargs) - on_cpu[label])))
        verdict = "ok" if diff <= tol else "MISMATCH"
        print(f"consistency {label}: max |cuda - cpu| = {diff:.2e} (tolerance {tol}) {verdict}")


def check_structured_masks(device: torch.device) -> None:
    """Blocks and lines hide the same pixels with the same stand-ins on ``device`` as on the
    CPU, and a block model predicts the same J-invariant image there."""
    from sc_noise2self.image.masking_torch import hide_torch, phase_mask_torch

    x = torch.rand(2, 3, 37, 41, generator=torch.Generator().manual_seed(0))
    for reach, line_axes in ((1, ()), (2, ()), (0, (1,))):
        stride = 2 * reach + 2 if reach else 4
        offsets = torch.tensor([[1, 2], [0, 3]])[:, : 2 - len(line_axes)]
        shape = (2, 1, *x.shape[2:])
        on_cpu = hide_torch(x, phase_mask_torch(shape, stride, offsets, line_axes), "mean",
                            None, line_axes, reach)
        there = hide_torch(x.to(device), phase_mask_torch(shape, stride, offsets.to(device),
                                                          line_axes), "mean", None,
                           line_axes, reach).cpu()
        diff = float((there - on_cpu).abs().max())
        print(f"consistency masks reach {reach} lines {line_axes} on {device}: max |diff| = "
              f"{diff:.2e} {'ok' if diff <= 1e-6 else 'MISMATCH'}")
    _, noisy = camera("crop")
    model = train(noisy, "unet", steps=5, batch_size=4, patch_size=32, device="cpu",
                  mask="blocks", model_kwargs={"channels": (8, 16)}, progress=False)
    odd = noisy[:101, :77]
    reference = model.predict(odd)  # J-invariant by default for a block model
    diff = float(np.max(np.abs(model.to(device).predict(odd) - reference)))
    print(f"consistency block model (reach {model.reach}) invariant prediction on {device}: "
          f"max |diff| = {diff:.2e} {'ok' if diff <= 1e-4 else 'MISMATCH'}")


def train_and_time(model_name, seconds, clean, noisy, device, args) -> tuple[dict, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = train(noisy, model_name, max_time=seconds, device=device, amp=None,
                  compile=False if args.no_compile else None, batch_size=args.batch_size,
                  patch_size=args.patch_size, progress=False)  # fmt: skip
    trained = time.perf_counter() - start
    steps = model.history["step"][-1]
    row = {
        "device": str(device), "model": model_name, "max_time": seconds,
        "train_s": round(trained, 1), "steps": steps, "steps_per_s": round(steps / trained, 1),
        "stopped": model.history["stopped"], "best_epoch": model.history["best_epoch"],
        "psnr_noisy": round(psnr(noisy, clean), 2),
    }  # fmt: skip
    for tile_size in (None, 256):
        _sync(device)
        start = time.perf_counter()
        denoised = model.predict(noisy, tile_size=tile_size)
        _sync(device)
        key = "whole" if tile_size is None else f"tiled{tile_size}"
        row[f"predict_{key}_s"] = round(time.perf_counter() - start, 3)
        row[f"psnr_{key}"] = round(psnr(denoised, clean), 2)
    if device.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return row, denoised


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    sys.exit(main())
