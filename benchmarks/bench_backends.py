"""Each two-backend kernel on the CPU: the compiled (numba) or numpy kernel against its torch twin.

``docs/architecture.md`` ("One algorithm, two backends") lists the kernels kept both for the
torch-free core and for torch devices. Issue 26 keeps a CPU kernel beside a torch one only
where a benchmark shows it must stay. This one times each pair on the same data, on the CPU,
both sides with the same threads (numba's and torch's thread counts set alike; BLAS as it
is), best of ``--repeats``, and checks that the pair gives the same values while it is at it.
A torch twin much slower on the CPU than its CPU kernel means the kernel must stay: the
torch-free core would otherwise run the slower arithmetic.

Rows:
1. binomial split draws (``split_values``);
2. split + normalise + transform both halves (``normalised_halves``);
3. normalise + transform one matrix (``normalised_values`` against ``normalised_matrix``);
4. the whole PCA calibration (``calibrate_pca_counts``, numpy path against ``device="cpu"``),
   which holds the rank curve's pair (``rank_curve_sums`` against ``_table_curve``);
5. the image neighbour mean (``replacement_values`` against ``neighbour_mean_torch``).

Run:  python benchmarks/bench_backends.py [--cells 20000] [--genes 2000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from sc_noise2self import simulation
from sc_noise2self._rng import row_stream_key


def best_seconds(function, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls (after one untimed call that compiles)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def count_rows(counts: sparse.csr_matrix, repeats: int) -> list[tuple[str, float, float, bool]]:
    """Rows 1-4: the single-cell pairs on the same counts."""
    import torch

    from sc_noise2self import _count_kernels, _count_kernels_torch
    from sc_noise2self.denoisers.pca import calibrate_pca_counts
    from sc_noise2self.splitting import half_a_values
    from sc_noise2self.transforms import normalised_values

    key = row_stream_key(3)
    values, crow, col = _count_kernels_torch.csr_to_device(counts, torch.device("cpu"))
    a_numpy = half_a_values(counts, 0.7, key)[0]
    a_torch = _count_kernels_torch.split_values(values, crow, col, key, 0.7)
    rows = [("binomial split draws", best_seconds(lambda: half_a_values(counts, 0.7, key),
                                                  repeats),
             best_seconds(lambda: _count_kernels_torch.split_values(values, crow, col, key, 0.7),
                          repeats),
             bool(np.array_equal(a_numpy, a_torch.numpy())))]
    depths = (1000.0, 400.0)
    numpy_halves = _count_kernels.normalised_halves(counts.data, a_numpy, counts.indptr,
                                                    counts.indices, depths, "sqrt")
    torch_halves = _count_kernels_torch.normalised_halves(values, a_torch, crow, col, depths,
                                                          "sqrt", counts.shape)
    rows.append(("split + normalise + sqrt, both halves", best_seconds(
        lambda: _count_kernels.normalised_halves(counts.data, a_numpy, counts.indptr,
                                                 counts.indices, depths, "sqrt"), repeats),
        best_seconds(lambda: _count_kernels_torch.normalised_halves(
            values, a_torch, crow, col, depths, "sqrt", counts.shape), repeats),
        bool(np.array_equal(numpy_halves[1][0], torch_halves[1].values().numpy()))))
    one = normalised_values(counts, 1000.0, "log1p")
    other = _count_kernels_torch.normalised_matrix(values, crow, col, 1000.0, "log1p",
                                                   counts.shape)
    rows.append(("normalise + log1p, one matrix", best_seconds(
        lambda: normalised_values(counts, 1000.0, "log1p"), repeats),
        best_seconds(lambda: _count_kernels_torch.normalised_matrix(
            values, crow, col, 1000.0, "log1p", counts.shape), repeats),
        bool(np.allclose(one.data, other.values().numpy(), rtol=3e-7))))
    # The device path scores the binomial split by MSE (its one loss); both sides alike.
    options = dict(max_comps=30, p=0.7, random_state=0, progress=False, loss="mse",
                   split="binomial")
    numpy_curve = calibrate_pca_counts(counts, **options)
    torch_curve = calibrate_pca_counts(counts, device="cpu", **options)
    rows.append(("PCA calibration (rank curve), whole call", best_seconds(
        lambda: calibrate_pca_counts(counts, **options), repeats),
        best_seconds(lambda: calibrate_pca_counts(counts, device="cpu", **options), repeats),
        bool(numpy_curve.best == torch_curve.best
             and np.allclose(numpy_curve.loss, torch_curve.loss, rtol=1e-4))))
    return rows


def image_row(size: int, repeats: int) -> tuple[str, float, float, bool]:
    """Row 5: the neighbour mean of one noisy image."""
    import torch

    from sc_noise2self.image.masking import replacement_values
    from sc_noise2self.image.masking_torch import neighbour_mean_torch

    image = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
    tensor = torch.from_numpy(image)[None, None]
    same = np.allclose(replacement_values(image), neighbour_mean_torch(tensor)[0, 0].numpy(),
                       atol=1e-5)
    return (f"image neighbour mean, {size} x {size}",
            best_seconds(lambda: replacement_values(image), repeats),
            best_seconds(lambda: neighbour_mean_torch(tensor), repeats), bool(same))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--image", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numba
    import torch

    # The simulated groups want more than 30 components: the grid-edge notice is not news here.
    warnings.filterwarnings("ignore", message="The self-supervised loss is lowest")
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    counts = sparse.csr_matrix(simulation.simulate_counts(
        args.cells, args.genes, (0.5, 0.3, 0.2), depth_sd=0.5, nb_size=(0.5, 50.0),
        random_state=0).X)
    print(f"load {os.getloadavg()}; numba, torch, BLAS and OpenMP threads {args.threads}; counts "
          f"{counts.shape[0]} x {counts.shape[1]}, {counts.nnz} stored; float32 values on "
          "both sides (the split's counts int64)")
    print("| kernel | CPU kernel s | torch on CPU s | torch / CPU kernel | same values |")
    print("|---|---|---|---|---|")
    with threadpool_limits(args.threads):  # BLAS and OpenMP too, for both sides
        rows = (*count_rows(counts, args.repeats), image_row(args.image, args.repeats))
    for name, mine, theirs, same in rows:
        print(f"| {name} | {mine:.3f} | {theirs:.3f} | {theirs / mine:.2f} | {same} |",
              flush=True)
    print(f"load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
