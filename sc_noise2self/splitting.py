"""Step 1 on count data: partition each cell's molecules into two halves.

For Poisson counts, ``Xa | X ~ Binomial(X, p)`` and ``Xb = X - Xa`` are independent given the
true expression, with means ``p * lambda`` and ``(1 - p) * lambda`` (molecular cross-validation,
Batson, Royer & Webber 2019).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse

from ._validation import check_choice, check_counts, check_fraction

SPLIT_METHODS = ("binomial",)

RandomState = int | np.random.Generator | np.random.SeedSequence | None


def make_rng(random_state: RandomState) -> np.random.Generator:
    """Return a numpy Generator for an int, SeedSequence, Generator or None."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def spawn_seeds(random_state: RandomState, n: int) -> list[np.random.SeedSequence]:
    """Return ``n`` independent child seeds, reproducible from ``random_state``.

    Unlike ``SeedSequence.spawn``, this leaves ``random_state`` untouched, so passing the
    same seed object twice gives the same children.
    """
    if isinstance(random_state, np.random.Generator):
        parent = random_state.bit_generator.seed_seq
    elif isinstance(random_state, np.random.SeedSequence):
        parent = random_state
    else:
        parent = np.random.SeedSequence(random_state)
    return [
        np.random.SeedSequence(
            parent.entropy, spawn_key=(*parent.spawn_key, i), pool_size=parent.pool_size
        )
        for i in range(n)
    ]


def split_counts(
    X,
    p: float = 0.5,
    *,
    random_state: RandomState = 0,
    method: Literal["binomial"] = "binomial",
):
    """Split count matrix ``X`` molecule by molecule into two halves that sum to ``X``.

    Parameters
    ----------
    X
        Cells x genes raw counts: a numpy array or a scipy.sparse matrix or array (CSR, CSC or
        COO). Integer dtypes, or floats whose values are all integral.
    p
        Expected share of each count that goes to the first half, strictly between 0 and 1.
    random_state
        Seed, ``SeedSequence`` or ``Generator``. The same seed gives bit-identical halves.
    method
        ``"binomial"``: ``Xa ~ Binomial(X, p)``, which makes the halves independent given the
        truth when the counts are Poisson.

    Returns
    -------
    Xa, Xb
        Two matrices of the input's type, sparse format and dtype with ``Xa + Xb == X``
        exactly. Sparse halves store no zeros, so they never hold more non-zeros than ``X``.
        The input is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> from sc_noise2self import split_counts
    >>> X = np.array([[3, 0, 10], [1, 4, 0]])
    >>> Xa, Xb = split_counts(X, random_state=0)
    >>> bool((Xa + Xb == X).all())
    True
    """
    check_choice(method, SPLIT_METHODS, name="method")
    p = check_fraction(p)
    check_counts(X)
    rng = make_rng(random_state)
    if sparse.issparse(X):
        return _split_sparse(X, p, rng)
    return _split_dense(np.asarray(X), p, rng)


def _binomial_halves(values: np.ndarray, p: float, rng: np.random.Generator, chunk: int = 1 << 20):
    """Draw ``Binomial(values, p)`` and its complement, both in the dtype of ``values``."""
    a = np.empty_like(values)
    # Chunks bound the int64 temporaries that numpy's binomial needs.
    for start in range(0, values.size, chunk):
        block = values[start : start + chunk]
        a[start : start + chunk] = rng.binomial(block.astype(np.int64), p)
    return a, values - a


def _split_dense(X: np.ndarray, p: float, rng: np.random.Generator):
    a, b = _binomial_halves(X.ravel(), p, rng)
    return a.reshape(X.shape), b.reshape(X.shape)


def _split_sparse(X, p: float, rng: np.random.Generator):
    if not X.has_canonical_format:
        # Duplicate entries must be split as one count.
        X = X.copy()
        X.sum_duplicates()
    data_a, data_b = _binomial_halves(X.data, p, rng)
    return _with_data(X, data_a), _with_data(X, data_b)


def _with_data(X, data: np.ndarray):
    """A matrix with the pattern of ``X`` (copied) and new values, its zeros removed."""
    if X.format == "coo":
        out = type(X)((data, (X.row.copy(), X.col.copy())), shape=X.shape)
    else:
        out = type(X)((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    out.eliminate_zeros()
    return out
