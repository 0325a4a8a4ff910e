"""Each family's choice on realistic counts, judged against the truth (issue 24).

Counts from :func:`sc_noise2self.simulation.simulate_counts`: library sizes log-normal,
per-gene NB sizes (or Poisson), unequal groups. For every family (PCA, kNN, diffusion) and
every set of split/loss options, the self-supervised choice is compared with the setting
that is best against the truth.

The truth loss of a setting is its loss against half B's *expectation* given the truth,
``(1 - p) * library * profile``, instead of half B's molecules: the Poisson deviance is
linear in the observed counts except for a term free of the prediction, so this is the
expected loss against a fresh half B minus a constant. It is computed on the halves of the
count loss with the NB split at estimated sizes (half A fitted once, scored twice), and
every option set's choice is read off that one truth curve: the truth is the same biology
whatever the options. On a null the truth-best setting is the baseline (index 0, or the
gene-mean predictor); a choice elsewhere is a false discovery.

"gain kept" is (truth(baseline) - truth(chosen)) / (truth(baseline) - truth(best)): 1 when the
choice is the truth-best setting, 0 when it is no better than the baseline, negative when it
is worse. On a null (best = baseline) the column shows the excess truth loss instead.

Run:  python benchmarks/bench_families_realistic.py [--seeds 3] [--families pca,knn,diffusion]
      (``--families autoencoder`` adds the autoencoder: three widths, 40 epochs, on the CPU;
      ``scvi`` adds scVI: n_latent 2, 5 and 10, 30 epochs, on the CPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings

import numpy as np

from sc_noise2self.calibration import calibrate_counts
from sc_noise2self.denoisers.autoencoder import AUTOENCODER
from sc_noise2self.denoisers.diffusion import DIFFUSION
from sc_noise2self.denoisers.knn import KNN
from sc_noise2self.denoisers.pca import PCA
from sc_noise2self.denoisers.scvi_vae import SCVI
from sc_noise2self.losses import baseline_loss, column_means
from sc_noise2self.simulation import expected_counts, simulate_counts

FAMILIES = {
    "pca": (PCA, {"max_comps": 30}), "knn": (KNN, {}), "diffusion": (DIFFUSION, {}),
    # Three widths and a short budget on the CPU (the default grid takes minutes per call).
    "autoencoder": (AUTOENCODER, {"widths": [1, 4, 16], "max_epochs": 40, "device": "cpu"}),
    # Three latent sizes, 30 epochs each, on the CPU (needs the [scvi] extra).
    "scvi": (SCVI, {"n_latent": [2, 5, 10], "max_epochs": 30, "accelerator": "cpu"}),
}
OPTIONS = {
    "mse, binomial": dict(loss="mse", split="binomial"),
    "mse, NB": dict(loss="mse", split="negative_binomial", overdispersion="estimate"),
    "poisson, binomial": dict(loss="poisson", split="binomial"),
    "poisson, NB": dict(loss="poisson", split="negative_binomial", overdispersion="estimate"),
}
TRUTH_OPTIONS = OPTIONS["poisson, NB"]
DATA = {
    "null, NB": dict(group_sizes=(1.0,), nb_size=(0.5, 50.0)),
    "null, Poisson": dict(group_sizes=(1.0,), nb_size=None),
    "5 groups, NB": dict(group_sizes=(0.45, 0.3, 0.15, 0.07, 0.03), nb_size=(0.5, 50.0),
                         effect=2.0),
    "5 weaker groups, NB": dict(group_sizes=(0.45, 0.3, 0.15, 0.07, 0.03),
                                nb_size=(0.5, 50.0), effect=1.0),
    "5 groups, Poisson": dict(group_sizes=(0.45, 0.3, 0.15, 0.07, 0.03), nb_size=None,
                              effect=1.0),
}


def with_truth(family, adata, out: dict):
    """``family`` whose scoring also scores each split against half B's expectation."""

    def score(halves, grid, seed, options, loss, progress=None):
        truth = expected_counts(adata, 1.0 - halves.p)
        against_truth = dataclasses.replace(halves, b_counts=truth)
        out["baseline"] = baseline_loss(column_means(halves.a), against_truth, "poisson")
        curve = family.score(against_truth, grid, seed, options, loss, progress=progress)
        out["curve"] = np.asarray(curve[0] if isinstance(curve, tuple) else curve)
        return family.score(halves, grid, seed, options, loss, progress=progress)

    return dataclasses.replace(family, score=score)


def chosen_index(result, family) -> int | None:
    """Index of the chosen setting on the grid; None when the gene-mean baseline wins."""
    baseline = result.params.get("baseline_loss")
    best = int(np.nanargmin(result.loss))
    if baseline is not None and not result.loss[best] < baseline:
        return None
    return None if best == baseline_index(family, result.grid) else best


def baseline_index(family, grid) -> int | None:
    """Where the family's own grid holds the gene-mean baseline (PCA's rank 0), if anywhere."""
    return None if family.baseline_index is None else family.baseline_index(grid, {"center": True})


def truth_at(index: int | None, truth: dict) -> float:
    return truth["baseline"] if index is None else float(truth["curve"][index])


def gain_kept(index: int | None, truth: dict) -> str:
    base, curve = truth["baseline"], truth["curve"]
    best = min(base, float(np.min(curve)))
    chosen = truth_at(index, truth)
    if base - best <= 1e-9 * abs(base):
        return f"excess {chosen - best:.2e}"
    return f"{(base - chosen) / (base - best):.2f}"


def describe(index: int | None, grid) -> str:
    return "baseline" if index is None else str(grid[index])


def row(data_name: str, spec: dict, family_name: str, seed: int, n_obs: int) -> list[str]:
    adata = simulate_counts(n_obs, 1000, depth=1500.0, depth_sd=0.5, random_state=seed,
                            **spec)
    family, extra = FAMILIES[family_name]
    truth: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        reference = calibrate_counts(adata.X, with_truth(family, adata, truth), random_state=seed,
                                     **TRUTH_OPTIONS, **extra)
        seconds = time.perf_counter() - start
        grid = reference.grid
        base, curve = truth["baseline"], truth["curve"]
        best = int(np.argmin(curve))
        if base <= curve[best] * (1 + 1e-9) or best == baseline_index(family, grid):
            best = None
        cells = [data_name, family_name, str(seed), describe(best, grid)]
        for options in OPTIONS.values():
            if options == TRUTH_OPTIONS:
                result = reference
            else:
                result = calibrate_counts(adata.X, family, random_state=seed, **options, **extra)
            index = chosen_index(result, family)
            cells.append(f"{describe(index, grid)} ({gain_kept(index, truth)})")
    cells.append(f"{seconds:.1f}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--families", default="pca,knn,diffusion")
    parser.add_argument("--data", default=";".join(DATA), help="names separated by ;")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{args.cells} cells x 1,000 genes, median depth 1,500, depth sd 0.5, default p")
    print("| data | family | seed | truth-best | " + " | ".join(OPTIONS) + " | s (truth run) |")
    print("|---" * (5 + len(OPTIONS)) + "|")
    for data_name in args.data.split(";"):
        for family_name in args.families.split(","):
            for seed in range(args.seeds):
                cells = row(data_name, DATA[data_name], family_name, seed, args.cells)
                print("| " + " | ".join(cells) + " |", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
