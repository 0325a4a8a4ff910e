"""Shared fixtures: tiny synthetic count matrices, and the location of the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numba
import numpy as np
import pytest
from scipy import sparse
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")
# Tests run two per machine (pytest -n 2): one thread each avoids oversubscribing the cores,
# which slows small torch and BLAS operations by an order of magnitude.
# numba: set the threads in use, not NUMBA_NUM_THREADS: a plugin may import numba before
# this file runs, and an environment that disagrees with numba's loaded configuration makes
# every later compilation (a new dtype of a kernel) fail.
numba.set_num_threads(1)
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
threadpool_limits(1)

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "SC_NOISE2SELF_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["SC_NOISE2SELF_DATA"] = str(_SHARED)

FORMATS = ("dense", "csr", "csc", "coo")


def as_format(X: np.ndarray, fmt: str):
    """``X`` as a dense array or a scipy.sparse matrix of format ``fmt``."""
    return X if fmt == "dense" else sparse.coo_matrix(X).asformat(fmt)


def to_dense(X) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


@pytest.fixture
def counts() -> np.ndarray:
    """A small dense integer count matrix with structure, zeros and large values."""
    rng = np.random.default_rng(42)
    rate = rng.gamma(0.6, 4.0, size=(60, 40)) * rng.random((60, 1)) * 2
    return rng.poisson(rate).astype(np.int64)


@pytest.fixture(scope="session")
def synthetic():
    """Synthetic counts with a known rank-6 truth (``layers['rate']``)."""
    from sc_noise2self import datasets

    return datasets.synthetic_counts(600, 300, rank=6, depth=800, random_state=1)


def shared_file(name: str) -> Path:
    """Path of a shared dataset, or skip the test with a reason."""
    from sc_noise2self import datasets

    path = datasets.local_file(name)
    if path is None:
        pytest.skip(f"{name} not found: set SC_NOISE2SELF_DATA to the shared data folder")
    return path
