"""The parallel kernels give bit-identical results on 1 and on 2 threads (issue 26).

The rest of the suite pins numba, torch and BLAS to one thread (``conftest.py``), so no
parallel loop ever ran in parallel there. Here each kernel runs both ways. A kernel whose
result depends on the thread count (a ``prange`` reduction into one shared sum, blocks sized
by ``numba.get_num_threads()``) fails these tests.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
import pytest
from scipy import sparse
from threadpoolctl import threadpool_limits

from sc_noise2self import split_counts
from sc_noise2self._sparse_kernels import csr_times, csr_transposed_times
from sc_noise2self.embedding import randomized_pca
from sc_noise2self.losses import prepare_halves

THREADS = min(2, numba.config.NUMBA_NUM_THREADS)
pytestmark = pytest.mark.skipif(THREADS < 2, reason="one core: nothing runs in parallel")


@contextmanager
def threads(n: int):
    """numba, torch and BLAS on ``n`` threads, restored afterwards."""
    import torch

    before = (numba.get_num_threads(), torch.get_num_threads())
    numba.set_num_threads(n)
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        numba.set_num_threads(before[0])
        torch.set_num_threads(before[1])


def both_ways(run):
    """``run()`` on one thread and on two."""
    with threads(1):
        one = run()
    with threads(THREADS):
        two = run()
    return one, two


@pytest.fixture(scope="module")
def counts() -> sparse.csr_matrix:
    rng = np.random.default_rng(0)
    depth = rng.lognormal(7.0, 0.6, 3000)
    profile = rng.gamma(0.4, 1.0, 800)
    mean = np.outer(depth, profile / profile.sum())
    return sparse.csr_matrix(rng.poisson(rng.gamma(2.0, mean / 2.0)).astype(np.float32))


@pytest.mark.parametrize("split", ["binomial", "negative_binomial"])
def test_the_split_is_the_same_on_any_number_of_threads(counts, split):
    options = {"overdispersion": 2.0} if split == "negative_binomial" else {}
    one, two = both_ways(lambda: split_counts(counts, 0.7, split=split, random_state=3,
                                              **options))
    for a, b in zip(one, two, strict=True):
        assert (a != b).nnz == 0


@pytest.mark.parametrize("transform", ["sqrt", "log1p"])
def test_the_fused_halves_are_the_same_on_any_number_of_threads(counts, transform):
    one, two = both_ways(lambda: prepare_halves(counts, p=0.7, transform=transform,
                                                random_state=1, split="binomial"))
    assert (one.a != two.a).nnz == 0 and (one.b != two.b).nnz == 0
    np.testing.assert_array_equal(one.totals_a, two.totals_a)


def test_the_sparse_products_are_the_same_on_any_number_of_threads(counts):
    dense = np.random.default_rng(2).standard_normal((counts.shape[1], 24)).astype(np.float32)
    tall = np.random.default_rng(3).standard_normal((counts.shape[0], 24)).astype(np.float32)
    parts = (counts.data, counts.indices, counts.indptr)
    one, two = both_ways(lambda: (csr_times(*parts, dense),
                                  csr_transposed_times(*parts, tall, counts.shape[1])))
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_randomized_pca_differs_across_threads_only_in_blas_rounding(counts):
    # Its sparse products are ours and bit-identical (above); the thin dense steps (QR, the
    # small eigenproblem) are BLAS/LAPACK's, whose threaded sums round differently: the
    # components agree to float32 rounding, not bit for bit (guide, "Reproducibility").
    values = counts.copy()
    values.data = np.sqrt(values.data)
    one, two = both_ways(lambda: randomized_pca(values, 10, 0))
    np.testing.assert_allclose(np.abs(one.components), np.abs(two.components), atol=1e-5)
    np.testing.assert_allclose(one.scores, two.scores, rtol=1e-4, atol=1e-4)


def test_the_torch_split_is_the_same_on_any_number_of_threads(counts):
    pytest.importorskip("torch")
    from sc_noise2self._device import resolve_device
    from sc_noise2self.losses import device_halves

    cpu = resolve_device("cpu")
    one, two = both_ways(lambda: device_halves(counts, p=0.7, transform="sqrt",
                                               random_state=5, depth=1000.0, device=cpu))
    for name in ("a", "b"):
        first, second = getattr(one, name), getattr(two, name)
        first = first.to_dense().cpu().numpy() if hasattr(first, "to_dense") else first
        second = second.to_dense().cpu().numpy() if hasattr(second, "to_dense") else second
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
