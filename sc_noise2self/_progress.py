"""Leaf: progress bars that follow the user's wish and scanpy's verbosity.

Steps that can take more than a few seconds (splits, widths, image grids, CNN epochs) wrap
their loop in :func:`progress_bar`. ``progress=True`` always shows the bar, ``False`` never;
``None`` (the default) shows it when scanpy's verbosity is at least ``info`` and the output
is a terminal or a notebook, so scripts and logs stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable


def _verbose_enough() -> bool:
    scanpy = sys.modules.get("scanpy")  # never import scanpy just to read a setting
    if scanpy is None:
        return False
    try:
        return int(scanpy.settings.verbosity) >= 2  # 2 is Verbosity.info
    except (AttributeError, TypeError, ValueError):
        return False


def _interactive() -> bool:
    if "ipykernel" in sys.modules:  # a Jupyter notebook: tqdm.auto draws a widget
        return True
    return shows_progress_on_a_terminal()


def shows_progress_on_a_terminal() -> bool:
    """Whether stderr is a terminal: where a command-line tool draws its bars."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def shows_progress(progress: bool | None) -> bool:
    """Whether a bar is drawn for ``progress`` (True, False, or None for the default)."""
    if progress is not None:
        return bool(progress)
    return _verbose_enough() and _interactive()


def progress_bar(iterable: Iterable, *, desc: str, total: int | None = None,
                 progress: bool | None = None):
    """``iterable`` wrapped in a tqdm bar when :func:`shows_progress` says so.

    Parameters
    ----------
    iterable
        The loop.
    desc
        What the bar counts.
    total
        Its length, when ``iterable`` has none.
    progress
        True, False, or None for the default rule.

    Returns
    -------
    An iterable over the same items.
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not shows_progress(progress))
