"""Step 3 for images, scored: each phase's masked copy serves the whole grid while it exists.

The calibration's unit of work is one phase and a chunk of the parameter grid. A worker
builds the phase's masked copy once, runs every parameter set of its chunk on it (all at
once where :mod:`.batched` can share the work), keeps only the squared errors on the
phase's pixels, and frees the copy. Each worker so holds one masked copy, one denoiser
output and the phase's targets (a ``stride ** n_spatial``-th of the image) at a time.
The sums are added per parameter set over the phases in phase order, whatever the number of
workers, so that serial and parallel runs give bit-identical losses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._cores import worker_count
from .._progress import progress_bar
from .batched import Batch
from .invariant import checked_output
from .masking import Mask, fill_masked
from .units import Units

Denoiser = Callable[..., np.ndarray]


@dataclass(frozen=True)
class PhaseScoring:
    """What every (phase, chunk) task shares: the image, the stand-ins and the denoisers.

    Attributes
    ----------
    image
        Float image, in its own units.
    replacement
        Stand-ins in working units and ``work_dtype``.
    work_dtype
        Float type of the masked copies.
    units
        The working units the denoisers run in.
    denoisers
        One-argument denoisers, one per parameter set.
    grid
        The parameter sets in working units (what ``batch`` receives).
    channel_axis
        Non-negative channel axis, or None.
    batch
        Evaluates a chunk of the grid at once on a phase's pixels, or None.
    refill
        Rebuild the masked copy before each parameter set after the first: a user's
        callable may write into its input. The built-in methods never do.
    """

    image: np.ndarray
    replacement: np.ndarray
    work_dtype: np.dtype
    units: Units
    denoisers: list[Denoiser]
    grid: list[dict]
    channel_axis: int | None
    batch: Batch | None = None
    refill: bool = True

    def phase_errors(self, mask: Mask, chunk: slice) -> tuple[np.ndarray, int]:
        """Squared errors on phase ``mask`` of each parameter set of ``chunk``.

        Parameters
        ----------
        mask
            The phase.
        chunk
            The parameter sets scored, as a slice of the grid.

        Returns
        -------
        The sums of squared errors (float64, in working units) and the phase's size.
        """
        masked = self._fill(np.empty(self.image.shape, dtype=self.work_dtype), mask)
        target = self.units.forward(self.image[mask], np.float64)
        if self.batch is not None:
            outputs = self.batch(masked, mask, self.grid[chunk], self.channel_axis)
            return np.array([_squared_error(out, target) for out in outputs]), target.size
        sums = []
        for i, denoise in enumerate(self.denoisers[chunk]):
            if i and self.refill:
                self._fill(masked, mask)
            sums.append(_phase_error(denoise, masked, mask, target))
        return np.array(sums, dtype=np.float64), target.size

    def _fill(self, buffer: np.ndarray, mask: Mask) -> np.ndarray:
        return fill_masked(buffer, self.image, mask, self.replacement,
                           offset=self.units.offset, scale=self.units.scale)


def _phase_error(denoise: Denoiser, masked: np.ndarray, mask: Mask, target: np.ndarray) -> float:
    # A function of its own, so that the output is freed before the next parameter set runs.
    output = checked_output(denoise(masked), masked.shape)
    return _squared_error(output[mask], target)


def _squared_error(values: np.ndarray, target: np.ndarray) -> float:
    errors = values.astype(np.float64) - target
    return float(np.sum(errors**2))


def phase_tasks(n_phases: int, n_params: int, n_workers: int) -> list[tuple[int, slice]]:
    """The (phase, chunk of the grid) units of work, in phase order.

    Parameters
    ----------
    n_phases, n_params, n_workers
        Numbers of phases, parameter sets and workers.

    Returns
    -------
    ``(phase index, slice of the grid)`` pairs. A phase keeps the whole grid (one masked
    copy, one batch) unless there are too few phases to give every worker two tasks, as
    with ``approximate_loss`` (one phase): then the grid is split in even chunks.
    """
    n_chunks = max(1, min(n_params, -(-2 * n_workers // n_phases)))
    bounds = np.linspace(0, n_params, n_chunks + 1).round().astype(int)
    chunks = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return [(phase, chunk) for phase in range(n_phases) for chunk in chunks]


def score_phases(scoring: PhaseScoring, masks: list[Mask], *, n_jobs: int | None,
                 progress: bool | None, name: str) -> np.ndarray:
    """Self-supervised loss of every parameter set over the phases ``masks``.

    Parameters
    ----------
    scoring
        The shared inputs.
    masks
        The phases scored.
    n_jobs
        Worker threads (None or -1: every core).
    progress
        Show a progress bar over the tasks (None: follow scanpy's verbosity).
    name
        The denoiser's name, for the bar.

    Returns
    -------
    Mean squared error per parameter set, in working units.
    """
    from joblib import Parallel, delayed

    n_params = len(scoring.denoisers)
    workers = worker_count(n_jobs, len(masks) * n_params)
    tasks = phase_tasks(len(masks), n_params, workers)
    jobs = (delayed(scoring.phase_errors)(masks[phase], chunk) for phase, chunk in tasks)
    # Threads share the image and the stand-ins without copies, and scikit-image's and
    # numpy's inner loops release the GIL (measured faster than processes).
    results = Parallel(n_jobs=min(workers, len(tasks)), return_as="generator",
                       prefer="threads")(jobs)  # fmt: skip
    bar = progress_bar(results, desc=f"calibrate {name}", total=len(tasks), progress=progress)
    totals, counts = np.zeros(n_params), np.zeros(n_params, dtype=np.int64)
    for (_, chunk), (sums, size) in zip(tasks, bar, strict=True):
        totals[chunk] += sums
        counts[chunk] += size
    return totals / counts
