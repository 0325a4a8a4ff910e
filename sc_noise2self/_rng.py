"""Leaf: seeds, independent child streams, and one random stream per cell.

Everything random in the package derives from a user's ``random_state`` here, so that the
same seed gives bit-identical results and independent operations never share draws.

Per-row streams. A molecule split keys every count's draws by (``key``, the row ``i``, its
total ``total_i``, the gene) in :mod:`sc_noise2self._count_kernels`:

- ``key`` (:func:`row_stream_key`) comes from the seed and a *purpose* (``"split"``,
  ``"overdispersion"``, ...), so two different operations with one seed draw differently;
- ``i`` is the row's position, so any block of rows (a dask chunk, a worker, any order)
  splits on its own into the same bits as the whole matrix;
- ``total_i`` is the row's total count. Splitting a half again with the seed that made it
  would otherwise reuse the uniforms of the first split, and the second split's deviations
  would mirror the first's (correlation -0.97 on dense Poisson(1000) counts). A half's row
  total differs from its parent's unless the half is the whole row, so the draws differ.

A zero count draws nothing, so a dense row and the same row stored sparsely split
identically.
"""

from __future__ import annotations

import hashlib
import numbers

import numpy as np

RandomState = int | np.random.Generator | np.random.SeedSequence | None


def check_random_state(random_state, *, name: str = "random_state") -> None:
    """Raise a clear error unless ``random_state`` is a seed this package accepts."""
    if random_state is None or isinstance(
        random_state, np.random.Generator | np.random.SeedSequence
    ):
        return
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral):
        raise TypeError(
            f"{name}={random_state!r} is not a seed; pass a non-negative integer (e.g. 0), a "
            "numpy SeedSequence or Generator, or None for fresh entropy."
        )
    if random_state < 0:
        raise ValueError(f"{name}={random_state} must be a non-negative integer, e.g. 0.")


def make_rng(random_state: RandomState) -> np.random.Generator:
    """Return a numpy Generator for an int, SeedSequence, Generator or None."""
    check_random_state(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    return np.random.default_rng(random_state)


def seed_sequence(random_state: RandomState) -> np.random.SeedSequence:
    """The SeedSequence behind a seed; a Generator gives its own (it is not advanced)."""
    check_random_state(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state.bit_generator.seed_seq
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    return np.random.SeedSequence(random_state)


def spawn_seeds(random_state: RandomState, n: int) -> list[np.random.SeedSequence]:
    """Return ``n`` independent child seeds, reproducible from ``random_state``.

    Unlike ``SeedSequence.spawn``, this leaves ``random_state`` untouched, so passing the
    same seed object twice gives the same children.
    """
    parent = seed_sequence(random_state)
    return [
        np.random.SeedSequence(
            parent.entropy, spawn_key=(*parent.spawn_key, i), pool_size=parent.pool_size
        )
        for i in range(n)
    ]


def purpose_word(purpose: str) -> int:
    """A stable 32-bit number for a purpose name (hashlib, not ``hash``: no per-run salt)."""
    return int.from_bytes(hashlib.blake2b(purpose.encode(), digest_size=4).digest(), "little")


def row_stream_key(random_state: RandomState, purpose: str = "split") -> np.ndarray:
    """The Philox key (two uint64) of every row stream of one operation.

    Parameters
    ----------
    random_state
        int, ``SeedSequence``, ``Generator`` or None, as in
        :func:`~sc_noise2self.split_counts`. A Generator advances by two draws; an int or a
        SeedSequence always gives the same key.
    purpose
        What the streams are for; different purposes with one seed get different keys.

    Returns
    -------
    Array of two uint64.
    """
    if isinstance(random_state, np.random.Generator):
        entropy = [int(v) for v in random_state.bit_generator.random_raw(2)]
        parent = np.random.SeedSequence(entropy)
    else:
        parent = seed_sequence(random_state)
    child = np.random.SeedSequence(
        parent.entropy, spawn_key=(*parent.spawn_key, purpose_word(purpose)),
        pool_size=parent.pool_size,
    )
    return child.generate_state(2, dtype=np.uint64)

