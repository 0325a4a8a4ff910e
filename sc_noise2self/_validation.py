"""Input checks shared by every entry point, with messages that say what to pass instead."""

from __future__ import annotations

import numbers
import sys

import numpy as np
from scipy import sparse

_COUNTS_HINT = (
    "Noise2Self splits raw UMI counts, so pass the raw integer counts, for example "
    "`layer='counts'` (adata.layers['counts']) or an AnnData built from `adata.raw`, "
    "not normalised or log-transformed values."
)


def is_dask_array(X) -> bool:
    """True for a ``dask.array.Array``; never imports dask (it is optional and slow to load)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def stored_values(X) -> np.ndarray:
    """Return the explicitly stored values of a dense or sparse matrix, without copying."""
    if sparse.issparse(X):
        return X.data
    return np.asarray(X)


def check_counts(X, *, name: str = "X") -> None:
    """Raise a ValueError unless ``X`` holds finite, non-negative integer counts.

    Parameters
    ----------
    X
        A numpy array or scipy.sparse matrix; a float dtype is accepted when every value is
        integral.
    name
        How to call the matrix in error messages.

    Returns
    -------
    None; raises ``ValueError`` or ``TypeError`` on bad input.
    """
    check_matrix(X, name=name)
    values = stored_values(X)
    if values.dtype.kind not in "iuf":
        raise TypeError(f"{name} has dtype {values.dtype}; expected integer or float counts.")
    if values.dtype == np.float16:  # sparse kernels and BLAS have no float16 path
        raise TypeError(
            f"{name} has dtype float16, which the split and the PCA cannot use (and which "
            "holds integers exactly only up to 2048). Convert the counts first, e.g. "
            "adata.X = adata.X.astype(np.float32)."
        )
    if values.dtype.kind == "f":
        if not all(np.all(np.isfinite(block)) for block in _blocks(values)):
            raise ValueError(f"{name} contains NaN or infinite values. {_COUNTS_HINT}")
        if any(np.any(block != np.round(block)) for block in _blocks(values)):
            raise ValueError(f"{name} contains non-integer values. {_COUNTS_HINT}")
    if values.size and values.min() < 0:
        raise ValueError(f"{name} contains negative values. {_COUNTS_HINT}")


# Values per block of the checks: rounding all of a million cells' counts at once made a
# copy of them (0.4 GB at 200,000 cells, the workflow's peak; issue 28).
_CHECK_BLOCK = 1 << 22


def _blocks(values: np.ndarray):
    flat = values.reshape(-1)
    return (flat[start:start + _CHECK_BLOCK] for start in range(0, flat.size, _CHECK_BLOCK))


def check_fraction(p: float, *, name: str = "p") -> float:
    """Return ``p`` as a float after checking it lies strictly between 0 and 1."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < float(p) < 1.0:
        raise ValueError(
            f"{name}={p!r} must lie strictly between 0 and 1: it is the share of each cell's "
            "molecules that goes to half A (0.5 as in the paper, 0.9 as in MCV's code)."
        )
    return float(p)


def check_choice(value: str, choices, *, name: str) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise with the list of choices."""
    if value not in choices:
        known = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Unknown {name}={value!r}. Choose one of: {known}.")
    return value


def check_no_empty_cells(totals: np.ndarray, *, name: str = "X") -> None:
    """Raise if any cell has no counts at all: it carries no signal to split or score."""
    empty = np.flatnonzero(np.asarray(totals).ravel() == 0)
    if empty.size:
        raise ValueError(
            f"{name} has {empty.size} cell(s) with zero total counts (first at row {empty[0]}). "
            "Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )


def check_whole(value, *, name: str, minimum: int | None = None, maximum: int | None = None,
                hint: str = "") -> int:
    """Return ``value`` as an int after checking it is a whole number within bounds.

    Parameters
    ----------
    value
        What the user passed (bools and non-integral floats are refused).
    name
        The argument's name, for the message.
    minimum, maximum
        Inclusive bounds, or None.
    hint
        What the number means, appended to the message.

    Returns
    -------
    The integer.
    """
    note = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}={value!r} must be a whole number{note}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (f"at least {minimum}" if maximum is None else
                  f"between {minimum} and {maximum}" if minimum is not None else
                  f"at most {maximum}")
        raise ValueError(f"{name}={value} must be {bounds}{note}.")
    return int(value)


def check_real(value, *, name: str, minimum: float | None = None, allow_none: bool = False,
               hint: str = "") -> float | None:
    """Return ``value`` as a float after checking it is a finite number of at least ``minimum``.

    Parameters
    ----------
    value
        What the user passed.
    name
        The argument's name, for the message.
    minimum
        Inclusive lower bound, or None.
    allow_none
        Accept None (returned as None).
    hint
        What the number means, appended to the message.

    Returns
    -------
    The float, or None.
    """
    if value is None and allow_none:
        return None
    note = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a number{note}.")
    if not np.isfinite(value) or (minimum is not None and value < minimum):
        floor = "" if minimum is None else f" of at least {minimum}"
        raise ValueError(f"{name}={value} must be a finite number{floor}{note}.")
    return float(value)


def check_matrix(X, *, name: str = "X") -> None:
    """Raise unless ``X`` is a 2-D cells x genes matrix (numpy, scipy.sparse or dask)."""
    ndim = getattr(X, "ndim", None)
    if ndim is None or not hasattr(X, "shape"):
        raise TypeError(
            f"{name} is a {type(X).__name__}; pass a cells x genes numpy array, scipy.sparse "
            "matrix or dask array (or an AnnData to the tl/pp functions)."
        )
    if ndim != 2:
        raise ValueError(
            f"{name} has {ndim} dimension(s) (shape {X.shape}); counts must be a cells x genes "
            "matrix. Reshape a single cell to (1, n_genes)."
        )
