"""The diffusion family: t steps of a lazy random walk on the kNN graph, t chosen by the loss."""

from __future__ import annotations

import numpy as np

from .._validation import check_whole
from ..calibration import Family, Knob, counts_calibrator, largest
from ..embedding import build_graph
from ..losses import Halves
from .graph import (
    N_PCS_DOC,
    SMOOTHER_WRITES,
    Smoother,
    check_n_pcs,
    diffusion_loss_curve,
    diffusion_operator,
    neighbour_graph,
    smoothed_values,
    store_smoother,
)


def _diffusion_grid(t_max: int, shape: tuple[int, int], options: dict) -> np.ndarray:
    check_whole(t_max, name="t_max", minimum=0, hint="the most diffusion steps scored")
    return np.arange(t_max + 1)


def _check_diffusion(options: dict, X) -> None:
    check_n_pcs(options, X)
    check_whole(options["n_neighbors"], name="n_neighbors", minimum=2,
                maximum=X.shape[0] - 1, hint="neighbours per cell in the graph")


def _score_diffusion(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                     progress: bool | None = None) -> np.ndarray:
    graph = build_graph(halves.a, options["n_neighbors"], n_pcs=options["n_pcs"],
                        random_state=seed)
    return diffusion_loss_curve(diffusion_operator(graph), halves, int(grid[-1]), loss)


def _fit_diffusion(counts, t: int, options: dict, *, transform: str, random_state,
                   max_layer_gb: float) -> Smoother:
    check_whole(t, name="t", minimum=0, hint="the number of diffusion steps")
    graph, depth = neighbour_graph(counts, options["n_neighbors"], options, transform, random_state)
    return Smoother(diffusion_operator(graph), int(t), depth, options["n_neighbors"])


DIFFUSION = Family(
    name="diffusion",
    grid=Knob("t", grid_arg="t_max", default=12, make_grid=_diffusion_grid, from_values=largest),
    score=_score_diffusion, check_options=_check_diffusion,
    fit=_fit_diffusion, store=store_smoother, values=smoothed_values,
    options={"n_neighbors": 15, "n_pcs": 30},
    fit_options=("n_neighbors", "n_pcs"),
    option_docs={
        "t_max": "Largest number of diffusion steps scored (the grid is ``0..t_max``).",
        "t": "Number of diffusion steps. None calibrates it first (or reuses a matching "
             "calibration stored under ``key_added``).",
        "n_neighbors": "Neighbours per cell in the graph, the cell itself included.",
        "n_pcs": N_PCS_DOC,
    },
    summary="Choose the number of diffusion steps (MAGIC-style smoothing) by molecular "
            "cross-validation.\n\nThe lazy random walk ``(P + I) / 2`` on an adaptive Gaussian "
            "kNN graph of half A is applied ``t`` times to half A and scored against half B, "
            "for every t in ``0..t_max``.",
    denoise_summary="Denoise by ``t`` steps of lazy diffusion on the kNN graph, ``t`` "
                    "calibrated or given.",
    writes=SMOOTHER_WRITES,
)


calibrate_diffusion_counts = counts_calibrator(DIFFUSION)
