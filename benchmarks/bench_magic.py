"""MAGIC (``magic-impute``) against our calibrated diffusion, on data with known truth.

MAGIC gets the same sqrt-normalised full data that our denoisers see. Reported: the true
loss (as in ``bench_families.py``) and the runtime, for MAGIC at its defaults (t=3), MAGIC with
``t="auto"``, and ``tl.calibrate_diffusion`` + ``tl.denoise_diffusion``.

Run:  python benchmarks/bench_magic.py   (needs ``pip install magic-impute``)
"""

from __future__ import annotations

import time

import numpy as np
from bench_families import true_loss

import sc_noise2self as n2s
from sc_noise2self import datasets
from sc_noise2self.transforms import apply_transform, library_sizes, normalize_to_depth


def main() -> None:
    import magic

    adata = datasets.synthetic_counts(2000, 500, rank=8, depth=500, random_state=0)
    rate = adata.layers["rate"].astype(np.float64)
    library = rate.sum(axis=1)
    profile = rate / library[:, None]
    depth = float(np.median(library_sizes(adata.X)))
    values = apply_transform(normalize_to_depth(adata.X, depth), "sqrt").toarray()

    print("| denoiser | true loss | time |")
    print("|---|---|---|")
    for label, t in (("MAGIC, defaults (t=3)", 3), ('MAGIC, t="auto"', "auto")):
        start = time.perf_counter()
        out = magic.MAGIC(t=t, random_state=0, verbose=0).fit_transform(values)
        seconds = time.perf_counter() - start
        scratch = adata.copy()
        scratch.layers["d"] = np.asarray(out)
        scratch.uns["d"] = {"params": {"depth": depth}}
        print(f"| {label} | {true_loss(scratch, profile, library):.5f} | {seconds:.1f} s |")
    start = time.perf_counter()
    scratch = adata.copy()
    n2s.tl.denoise_diffusion(scratch, key_added="d")
    seconds = time.perf_counter() - start
    t = scratch.uns["d"]["best"]
    print(f"| ours, calibrated diffusion (t={t}) | {true_loss(scratch, profile, library):.5f} "
          f"| {seconds:.1f} s |")


if __name__ == "__main__":
    main()
