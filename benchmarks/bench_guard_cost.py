"""What the trust guards cost on paul15: input checks and the gene-mean referee (issue 15).

Times, in one process and alternating ``--repeat`` times (each keeps its fastest):
- ``tl.calibrate_pca`` and ``tl.calibrate_knn`` as shipped (guards on);
- the same with the guards switched off by monkeypatching: the counts check of
  ``SplitSettings.validate`` and the referee's baseline (PCA reads it off rank 0, so only
  the kNN family pays for scoring it).
Prints the seconds and the guard's share.

Run:  SC_NOISE2SELF_DATA=../shared/data python benchmarks/bench_guard_cost.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from unittest import mock

import numpy as np

import sc_noise2self as n2s
from sc_noise2self import calibration, referee, tl


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def unguarded():
    """Patches that remove the guards: no counts check, no baseline."""
    return [
        mock.patch.object(calibration, "check_counts", lambda X, **k: None),
        mock.patch.object(calibration, "check_no_empty_cells", lambda totals, **k: None),
        mock.patch.object(referee, "baseline_loss", lambda means, halves, loss: np.nan),
        mock.patch.object(referee, "column_means", lambda values: None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    adata = n2s.datasets.paul15()
    print(f"paul15: {adata.n_obs} cells x {adata.n_vars} genes; load {os.getloadavg()}")
    runs = {
        "calibrate_pca(max_comps=100)": lambda: tl.calibrate_pca(adata, copy=True),
        "calibrate_knn (default ks)": lambda: tl.calibrate_knn(adata, copy=True),
    }
    best = {(name, guarded): np.inf for name in runs for guarded in (True, False)}
    for _ in range(args.repeat):
        for name, run in runs.items():
            best[name, True] = min(best[name, True], timed(run))
            patches = unguarded()
            for patch in patches:
                patch.start()
            try:
                best[name, False] = min(best[name, False], timed(run))
            finally:
                for patch in patches:
                    patch.stop()
    print("| call | with guards (s) | without (s) | guard share |")
    print("|---|---|---|---|")
    for name in runs:
        on, off = best[name, True], best[name, False]
        print(f"| {name} | {on:.2f} | {off:.2f} | {(on - off) / on:+.1%} |")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
