"""The kNN family: average each cell over its k nearest cells, k chosen by the loss."""

from __future__ import annotations

import numpy as np

from .._validation import check_whole
from ..calibration import Family, Knob, counts_calibrator
from ..embedding import build_graph
from ..losses import Halves
from .graph import (
    N_PCS_DOC,
    SMOOTHER_WRITES,
    Smoother,
    check_n_pcs,
    knn_loss_curve,
    knn_operator,
    neighbour_graph,
    smoothed_values,
    store_smoother,
)

DEFAULT_KS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)


def _knn_grid(ks, shape: tuple[int, int], options: dict) -> np.ndarray:
    n_cells = shape[0]
    if ks is None:
        ks = [k for k in DEFAULT_KS if k < n_cells]
    for k in np.atleast_1d(ks):
        check_whole(k if not isinstance(k, np.integer) else int(k), name="ks (each value)",
                    hint="a number of neighbours")
    ks = np.unique(np.asarray(ks, dtype=int))
    if ks.size == 0 or ks.min() < 1 or ks.max() >= n_cells:
        raise ValueError(
            f"ks must hold neighbour counts between 1 and n_cells - 1 = {n_cells - 1}; "
            f"got {ks.tolist()}."
        )
    return ks


def _score_knn(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
               progress: bool | None = None) -> np.ndarray:
    graph = build_graph(halves.a, int(grid.max()), n_pcs=options["n_pcs"], random_state=seed)
    return knn_loss_curve(graph, halves, grid, loss)


def _fit_knn(counts, k: int, options: dict, *, transform: str, random_state,
             max_layer_gb: float) -> Smoother:
    check_whole(k, name="n_neighbors", minimum=1, maximum=counts.shape[0],
                hint="the cell itself included")
    graph, depth = neighbour_graph(counts, int(k), options, transform, random_state)
    return Smoother(knn_operator(graph, int(k)), 1, depth, int(k))


KNN = Family(
    name="knn",
    grid=Knob("n_neighbors", grid_arg="ks", default=None, make_grid=_knn_grid),
    score=_score_knn, check_options=check_n_pcs,
    fit=_fit_knn, store=store_smoother, values=smoothed_values,
    options={"n_pcs": 30},
    fit_options=("n_pcs",),
    option_docs={
        "ks": "Neighbour counts to score, the cell itself included (1 = no smoothing). None "
              "uses 1, 2, 3, 5, 8, 10, 15, 20, 30, 50 below the number of cells.",
        "n_neighbors": "Neighbours to average over, the cell itself included. None calibrates "
                       "it first (or reuses a matching calibration stored under "
                       "``key_added``).",
        "n_pcs": N_PCS_DOC,
    },
    summary="Choose the number of neighbours to average over by molecular cross-validation."
            "\n\nThe kNN graph is built from half A alone; each cell's prediction is the mean "
            "of half A over its k nearest cells (itself first), scored against half B.",
    denoise_summary="Denoise by averaging each cell over its nearest cells, at a calibrated "
                    "(or given) k.",
    writes=SMOOTHER_WRITES,
)


calibrate_knn_counts = counts_calibrator(KNN)



