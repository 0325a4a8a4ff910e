"""The scVI family: choose scVI's latent dimension by molecular cross-validation.

scVI's ``n_latent`` is rarely tuned because the ELBO on held-out cells does not say which
width denoises best. The self-supervised loss does: one ``scvi.model.SCVI`` per width is
trained on half A's counts (batch covariates carried over), its normalised expression
(``get_normalized_expression``) times half A's library size, moved to half B's share,
predicts every cell's expected counts of half B, and the engine scores that against half B
and grades it against the gene-mean baseline, as for every family. The prediction uses half
A's library sizes, not half B's, so it sees nothing of half B.

scvi-tools is the optional ``[scvi]`` extra, imported only when this family runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._anndata import write_dense_layer
from .._device import resolve_device
from .._progress import progress_bar
from .._rng import make_rng, spawn_seeds
from .._validation import check_choice, check_whole
from ..calibration import Family, Knob
from ..losses import ALL_LOSSES, Halves, dense_rows, means_loss, row_chunks
from ..transforms import expected_transform, library_sizes

__all__ = ["DEFAULT_N_LATENT", "SCVI", "FittedSCVI", "import_scvi", "train_scvi"]

DEFAULT_N_LATENT = (2, 5, 10, 20, 30)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
LIKELIHOODS = ("nb", "zinb", "poisson")
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                  "scvi")


def import_scvi():
    """scvi-tools, or an ImportError that names the extra to install."""
    try:
        import scvi
    except ImportError as error:
        raise ImportError(
            "The scvi family needs scvi-tools, an optional extra: "
            "pip install 'sc-noise2self[scvi]'."
        ) from error
    return scvi


@contextlib.contextmanager
def scvi_session(seed: int):
    """Run scVI under ``seed`` and quietly, leaving no trace on the user's session.

    scvi-tools seeds Python's, numpy's and torch's global generators (Lightning's
    ``seed_everything``) and Lightning logs every fit. Both are undone on exit: the global
    random states, the ``PL_GLOBAL_SEED`` variable and the log levels are restored.
    """
    import torch

    scvi = import_scvi()
    # The legacy global generators are what Lightning reseeds: saved to be put back.
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),  # noqa: NPY002
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    environment = os.environ.get("PL_GLOBAL_SEED")
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    verbosity = scvi.settings.verbosity
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # Lightning's notes on logging intervals and its own deprecations are not the
            # user's business; warnings raised by scvi-tools itself still show.
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            scvi.settings.seed = int(seed)
            scvi.settings.verbosity = logging.ERROR
            yield scvi
    finally:
        scvi.settings.verbosity = verbosity
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])
        if environment is None:
            os.environ.pop("PL_GLOBAL_SEED", None)
        else:
            os.environ["PL_GLOBAL_SEED"] = environment


def counts_anndata(counts, obs, batch_key: str | None):
    """An AnnData of raw counts (CSR float32) for scVI, with the batch column when used."""
    X = sparse.csr_matrix(counts, dtype=np.float32)
    frame = pd.DataFrame(index=pd.RangeIndex(X.shape[0]).astype(str))
    if obs is not None:
        frame = pd.DataFrame(index=obs.index.astype(str))
        if batch_key is not None:
            frame[batch_key] = pd.Categorical(obs[batch_key].astype(str).to_numpy())
    return ad.AnnData(X, obs=frame)


def train_scvi(adata, n_latent: int, options: dict, seed: int, progress: bool = False):
    """Set up ``adata`` for scVI and train one model of ``n_latent`` dimensions on it.

    Parameters
    ----------
    adata
        Raw counts from :func:`counts_anndata`.
    n_latent
        Latent dimension.
    options
        The family's options (architecture, likelihood, training).
    seed
        Seed of the weights, the cells held out for validation and the batch order.
    progress
        Show Lightning's progress bar.

    Returns
    -------
    The trained ``scvi.model.SCVI``.
    """
    with scvi_session(seed) as scvi:
        scvi.model.SCVI.setup_anndata(adata, batch_key=options["batch_key"])
        architecture = {name: int(options[name]) for name in ("n_layers", "n_hidden")
                        if options[name] is not None}
        model = scvi.model.SCVI(adata, n_latent=int(n_latent),
                                gene_likelihood=options["gene_likelihood"], **architecture)
        model.train(max_epochs=options["max_epochs"], accelerator=options["accelerator"],
                    devices=1, batch_size=int(options["batch_size"]),
                    early_stopping=bool(options["early_stopping"]),
                    enable_progress_bar=bool(progress), enable_model_summary=False)
    return model


def predicted_means(model, adata, rows: slice, n_samples: int, seed: int) -> np.ndarray:
    """scVI's normalised expression of cells ``rows`` (rows sum to 1), float64.

    Averaged over ``n_samples`` draws of each cell's latent posterior, under ``seed``.
    """
    with scvi_session(seed):
        means = model.get_normalized_expression(
            adata, indices=np.arange(rows.start, rows.stop), library_size=1,
            n_samples=int(n_samples), return_mean=True, return_numpy=True)
    return np.asarray(means, dtype=np.float64)


def score_model(model, adata, halves: Halves, loss: str, n_samples: int, seed: int) -> float:
    """Mean loss of a model's predictions (from half A) against half B, over every cell."""
    target = halves.target(loss)
    table = halves.conversion_table()
    depth_a = halves.p * halves.depth
    total = 0.0
    for rows in row_chunks(*target.shape, budget_bytes=64e6 / max(1, n_samples)):
        means = predicted_means(model, adata, rows, n_samples, seed) * depth_a
        total += means_loss(means, dense_rows(target, rows), halves, rows, table, loss)
    return total / np.prod(target.shape)


def _torch_seed(seed) -> int:
    return int(np.random.default_rng(spawn_seeds(seed, 1)[0]).integers(2**31 - 1))


def score_widths(halves: Halves, grid: np.ndarray, seed, options: dict, loss: str, *,
                 progress: bool | None = None):
    """Train one scVI per ``n_latent`` on half A's counts and score each against half B.

    Every width uses the same seed (common random numbers), so the curve compares widths,
    not draws of the initial weights.
    """
    torch_seed = _torch_seed(seed)
    adata = counts_anndata(halves.a_counts, halves.obs, options["batch_key"])
    halves.a_counts = None  # the AnnData holds half A's counts now
    models, losses = [], []
    for n_latent in progress_bar(grid, desc="scVI n_latent", progress=progress):
        model = train_scvi(adata, int(n_latent), options, torch_seed)
        losses.append(score_model(model, adata, halves, loss, options["n_samples"],
                                  torch_seed))
        models.append(model)
    return np.asarray(losses), {"fitted": models}


@dataclass
class FittedSCVI:
    """An scVI model trained on the full counts, and what ``store`` needs from it."""

    model: Any
    adata: Any
    depth: float
    n_latent: int
    n_samples: int
    seed: int


def fit_scvi(counts, n_latent: int, options: dict, *, transform: str, random_state,
             max_layer_gb: float | None, obs=None) -> FittedSCVI:
    """Train the final scVI of ``n_latent`` dimensions on all of the counts."""
    n_latent = check_whole(n_latent, name="n_latent", minimum=1, maximum=counts.shape[1],
                           hint="scVI's latent dimension")
    _check(options, counts)
    depth = float(np.median(library_sizes(counts)))
    seed = int(make_rng(random_state).integers(2**31 - 1))
    adata = counts_anndata(counts, obs, options["batch_key"])
    model = train_scvi(adata, n_latent, options, seed)
    return FittedSCVI(model, adata, depth, n_latent, int(options["n_samples"]), seed)


def store_scvi(adata, fitted: FittedSCVI, key: str, max_layer_gb: float | None) -> dict:
    """Latent means to ``obsm['X_' + key]``; normalised expression to ``layers[key]``."""
    with scvi_session(fitted.seed):
        latent = fitted.model.get_latent_representation(fitted.adata)
    adata.obsm[f"X_{key}"] = np.asarray(latent, dtype=np.float32)
    if max_layer_gb is not None:
        write_dense_layer(adata, key, max_layer_gb, values=lambda: _expression(fitted),
                          way_out=f"The latent space is in obsm['X_{key}'].")
    history = fitted.model.history.get("elbo_train")
    elbo = (np.asarray(history, dtype=np.float64).ravel() if history is not None
            else np.zeros(0))
    return {"n_latent": fitted.n_latent, "history": elbo}


def _expression(fitted: FittedSCVI) -> np.ndarray:
    """Normalised expression of every cell at the median library size (float32)."""
    n_cells, n_genes = fitted.adata.shape
    out = np.empty((n_cells, n_genes), dtype=np.float32)
    for rows in row_chunks(n_cells, n_genes, budget_bytes=64e6 / max(1, fitted.n_samples)):
        out[rows] = predicted_means(fitted.model, fitted.adata, rows, fitted.n_samples,
                                    fitted.seed) * fitted.depth
    return out


def expression_values(adata, key: str, columns: np.ndarray) -> np.ndarray:
    """Chosen genes on the run's transformed scale: ``E[f(count)]`` at the stored means."""
    if key not in adata.layers:
        raise KeyError(
            f"The scVI run under {key!r} wrote no expression layer (max_layer_gb); re-run "
            "`tl.denoise_scvi` with a larger max_layer_gb."
        )
    transform = str(adata.uns[key]["params"]["transform"])
    means = np.asarray(adata.layers[key][:, columns], dtype=np.float64)
    return expected_transform(means, transform).astype(np.float32)


def check_n_latent(values, n_genes: int) -> np.ndarray:
    """Sorted unique latent dimensions, each between 1 and the number of genes."""
    values = np.atleast_1d(np.asarray(values, dtype=object))
    for value in values:
        check_whole(value if not isinstance(value, np.integer) else int(value),
                    name="n_latent (each value)", minimum=1, maximum=n_genes,
                    hint="a latent dimension of scVI, at most the number of genes")
    return np.unique(values.astype(int))


def _grid(values, shape: tuple[int, int], options: dict) -> np.ndarray:
    return check_n_latent(DEFAULT_N_LATENT if values is None else values, shape[1])


def _check(options: dict, X) -> None:
    """Refuse bad options before any work (and name the extra when scvi-tools is absent)."""
    for name in ("n_layers", "n_hidden", "max_epochs"):
        if options[name] is not None:
            check_whole(options[name], name=name, minimum=1)
    for name in ("batch_size", "n_samples"):
        check_whole(options[name], name=name, minimum=1)
    check_choice(options["gene_likelihood"], LIKELIHOODS, name="gene_likelihood")
    check_choice(options["accelerator"], ACCELERATORS, name="accelerator")
    if options["accelerator"] in ("gpu", "cuda", "mps"):
        resolve_device("mps" if options["accelerator"] == "mps" else "cuda")
    if not isinstance(options["early_stopping"], bool):
        raise TypeError(f"early_stopping={options['early_stopping']!r} must be True or False.")
    batch_key = options["batch_key"]
    if batch_key is not None and not isinstance(batch_key, str):
        raise TypeError(f"batch_key={batch_key!r} must name an obs column (a str) or be None.")
    import_scvi()


SCVI = Family(
    name="scvi",
    grid=Knob("n_latent", grid_arg="n_latent", default=DEFAULT_N_LATENT, make_grid=_grid),
    score=score_widths, check_options=_check,
    fit=fit_scvi, store=store_scvi, values=expression_values,
    options={"n_layers": None, "n_hidden": None, "gene_likelihood": "nb", "batch_key": None,
             "max_epochs": None, "batch_size": 128, "early_stopping": False,
             "accelerator": "auto", "n_samples": 10},
    fit_options=("n_layers", "n_hidden", "gene_likelihood", "batch_key", "max_epochs",
                 "batch_size", "early_stopping", "accelerator", "n_samples"),
    denoise_losses=ALL_LOSSES, losses=ALL_LOSSES, needs_counts=True,
    covariates=("batch_key",), returns_model=True,
    option_docs={
        "n_latent": "Latent dimensions to score (calibrate), each at most the number of "
                    "genes; or the one to train (denoise), None calibrating it first on the "
                    "default grid (or reusing a matching calibration under ``key_added``).",
        "n_layers": "Hidden layers of the encoder and decoder; None is scVI's default (1).",
        "n_hidden": "Units per hidden layer; None is scVI's default (128).",
        "gene_likelihood": "scVI's count model: ``\"nb\"`` (default here: its normalised "
                           "expression is then the expected count per molecule, what the "
                           "loss scores), ``\"zinb\"`` (scVI's default) or ``\"poisson\"``.",
        "batch_key": "An obs column of batch labels, carried into every model "
                     "(``SCVI.setup_anndata(batch_key=...)``); predictions use each cell's "
                     "own batch.",
        "max_epochs": "Most training epochs per model; None is scVI's rule "
                      "(``min(round(20000 / n_cells * 400), 400)``).",
        "batch_size": "Cells per minibatch.",
        "early_stopping": "Stop on scVI's validation ELBO (cells held out of half A only).",
        "accelerator": "``\"auto\"`` (a GPU when present), ``\"cpu\"``, ``\"gpu\"``/"
                       "``\"cuda\"`` or ``\"mps\"``; a missing accelerator fails before any "
                       "work.",
        "n_samples": "Draws of each cell's latent posterior averaged into its prediction.",
    },
    summary="Choose scVI's latent dimension by molecular cross-validation.\n\n"
            "For each ``n_latent``, an ``scvi.model.SCVI`` is trained on half A's counts (batch "
            "covariates carried over). Its normalised expression times each cell's half-A "
            "library size, moved to half B's share of the molecules, predicts half B's "
            "expected counts; it is scored against half B by the chosen loss (``\"mse\"`` "
            "on the transformed scale, or the ``\"poisson\"`` or ``\"nb\"`` deviance on the "
            "counts) and graded against the gene-mean baseline. Needs the ``[scvi]`` extra.",
    denoise_summary="Train scVI at a calibrated (or given) ``n_latent`` on all the counts."
                    "\n\nNeeds the ``[scvi]`` extra.",
    writes="the latent means to ``obsm['X_' + key_added]``, ``uns[key_added]`` (with the "
           "training ELBO as ``history``) and, when it fits ``max_layer_gb``, scVI's "
           "normalised expression at the median library size (mean counts) to "
           "``layers[key_added]``.",
)
