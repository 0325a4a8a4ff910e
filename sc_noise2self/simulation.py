"""Realistic simulated UMI counts with known groups, for truth tests and benchmarks.

Constant-depth Poisson counts hide the two things real cells do that break self-supervised
clustering: library sizes that vary several-fold between cells, and biological
overdispersion (a negative binomial per gene). :func:`simulate_counts` draws counts with
both, in the spirit of Splatter (Zappia et al., Genome Biology 2017):

- gene means from a gamma distribution with a heavy tail, as real genes' means are;
- library sizes log-normal around ``depth`` with spread ``depth_sd``;
- each group up- or down-regulates a share of genes, by log fold changes of scale ``effect``
  (large to barely detectable);
- optional subtypes nested in each group that differ in a few genes only (``sub_effect``);
- group sizes as given (unequal, 1% to 60%);
- counts ``Poisson(Gamma(b_g, mu / b_g))``: NB with a per-gene size ``b_g`` drawn
  log-uniformly from ``nb_size``; ``nb_size=None`` draws Poisson counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._rng import RandomState, make_rng
from ._validation import check_real, check_whole

__all__ = ["expected_counts", "simulate_counts"]


def simulate_counts(
    n_obs: int = 2000,
    n_vars: int = 1000,
    group_sizes: Sequence[float] = (1.0,),
    *,
    depth: float = 2000.0,
    depth_sd: float = 0.5,
    nb_size: tuple[float, float] | float | None = (0.5, 50.0),
    effect: float = 1.0,
    de_share: float = 0.08,
    n_subtypes: int = 1,
    sub_effect: float = 1.0,
    sub_genes: int = 10,
    random_state: RandomState = 0,
) -> ad.AnnData:
    """Overdispersed counts of cells in known (optionally nested) groups.

    Parameters
    ----------
    n_obs, n_vars
        Numbers of cells and genes.
    group_sizes
        Relative sizes of the groups (normalised to sum to 1); ``(1.0,)`` is one population,
        the null. E.g. ``(0.6, 0.25, 0.1, 0.04, 0.01)`` for unequal groups.
    depth
        Median library size (UMIs per cell).
    depth_sd
        Standard deviation of the log library size (0.2 to 0.8 in real data).
    nb_size
        The NB size ``b`` per gene: a ``(low, high)`` range drawn log-uniformly, one number
        for every gene, or None for Poisson counts.
    effect
        Scale of the groups' log fold changes (natural log): 2 is large, 0.3 barely
        detectable at usual depths.
    de_share
        Share of genes that each group regulates.
    n_subtypes
        Subtypes nested in every group (1: none).
    sub_effect
        Log fold change of each subtype's own genes.
    sub_genes
        Genes that each subtype regulates.
    random_state
        Seed; the same seed gives identical counts.

    Returns
    -------
    AnnData with CSR int32 counts in ``X``; ``obs['group']`` and ``obs['subgroup']``
    (categorical), ``obs['library_size']`` (the expected total), ``obs['type_index']`` (the
    cell's column of ``varm['profile']``); ``var['mean']`` (the population's share of each
    gene), ``var['nb_size']`` (inf for Poisson) and ``varm['profile']`` (each type's share
    of every gene: the truth, see :func:`expected_counts`); ``uns['simulation']`` with the
    settings.
    """
    check_whole(n_obs, name="n_obs", minimum=2, hint="cells to simulate")
    check_whole(n_vars, name="n_vars", minimum=2, hint="genes to simulate")
    check_real(depth, name="depth", minimum=1.0, hint="median UMIs per cell")
    check_real(depth_sd, name="depth_sd", minimum=0.0, hint="sd of the log library size")
    check_whole(n_subtypes, name="n_subtypes", minimum=1, hint="subtypes per group (1: none)")
    shares = _group_shares(group_sizes)
    rng = make_rng(random_state)
    base = _gene_means(n_vars, rng)
    profiles = base * np.exp(_group_effects(shares.size, n_vars, effect, de_share, rng))
    n_types = shares.size * n_subtypes
    sub = np.exp(_subtype_effects(n_types, n_vars, n_subtypes, sub_effect, sub_genes, rng))
    profiles = np.repeat(profiles, n_subtypes, axis=0) * sub
    profiles /= profiles.sum(axis=1, keepdims=True)
    groups = _labels(shares, n_obs, rng)
    subtypes = groups * n_subtypes + rng.integers(n_subtypes, size=n_obs)
    library = depth * np.exp(rng.normal(0.0, depth_sd, n_obs))
    sizes = _nb_sizes(nb_size, n_vars, rng)
    counts = _draw_counts(profiles, subtypes, library, sizes, rng)
    adata = ad.AnnData(counts)
    adata.obs_names = [f"cell{i}" for i in range(n_obs)]
    adata.var_names = [f"gene{j}" for j in range(n_vars)]
    adata.obs["group"] = pd.Categorical(groups.astype(str))
    adata.obs["subgroup"] = pd.Categorical([f"{g}.{s % n_subtypes}"
                                            for g, s in zip(groups, subtypes, strict=True)])
    adata.obs["library_size"] = library
    adata.var["mean"] = base / base.sum()
    adata.var["nb_size"] = sizes
    adata.varm["profile"] = profiles.T  # each type's share of every gene (columns sum to 1)
    adata.obs["type_index"] = subtypes  # which column of varm['profile'] a cell draws from
    adata.uns["simulation"] = dict(
        n_obs=n_obs, n_vars=n_vars, group_sizes=[float(s) for s in shares], depth=depth,
        depth_sd=depth_sd, nb_size="poisson" if nb_size is None else str(nb_size),
        effect=effect, de_share=de_share, n_subtypes=n_subtypes, sub_effect=sub_effect,
        sub_genes=sub_genes)
    return adata


def expected_counts(adata: ad.AnnData, scale: float = 1.0) -> np.ndarray:
    """The truth of :func:`simulate_counts`' cells: each count's expectation, dense.

    Parameters
    ----------
    adata
        The output of :func:`simulate_counts` (or a subset of its cells).
    scale
        A share of the molecules: ``1 - p`` gives the expectation of half B of a split with
        half A's share ``p`` (binomial and NB splits keep each half's share of the mean).

    Returns
    -------
    float64 array, cells x genes: ``scale * library_size * profile of the cell's type``.
    """
    if "profile" not in adata.varm or "type_index" not in adata.obs:
        raise ValueError(
            "adata has no simulated truth (varm['profile'], obs['type_index']); pass the "
            "output of simulate_counts, or a subset of its cells."
        )
    check_real(scale, name="scale", minimum=0.0, hint="the share of molecules, e.g. 1 - p")
    profile = np.asarray(adata.varm["profile"], dtype=np.float64).T
    library = adata.obs["library_size"].to_numpy(dtype=np.float64)
    return scale * library[:, None] * profile[adata.obs["type_index"].to_numpy()]


def _group_shares(group_sizes) -> np.ndarray:
    shares = np.asarray(group_sizes, dtype=np.float64).ravel()
    if shares.size == 0 or not np.all(np.isfinite(shares)) or np.any(shares <= 0):
        raise ValueError(
            f"group_sizes={list(group_sizes)!r} must be one or more positive numbers, the "
            "groups' relative sizes, e.g. (0.6, 0.3, 0.1)."
        )
    return shares / shares.sum()


def _gene_means(n_vars: int, rng: np.random.Generator) -> np.ndarray:
    """Genes' relative means: Splatter's gamma(0.6, 1/0.3) with 5% high outliers."""
    means = rng.gamma(0.6, 1 / 0.3, n_vars)
    outliers = rng.random(n_vars) < 0.05
    means[outliers] *= np.exp(rng.normal(2.0, 0.5, outliers.sum()))
    return np.maximum(means, 1e-3)


def _group_effects(n_groups: int, n_vars: int, effect: float, share: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Log fold changes per group: a share of genes, up or down, of scale ``effect``."""
    if n_groups == 1:
        return np.zeros((1, n_vars))
    regulated = rng.random((n_groups, n_vars)) < share
    signs = np.where(rng.random((n_groups, n_vars)) < 0.5, -1.0, 1.0)
    sizes = effect * rng.lognormal(0.0, 0.3, (n_groups, n_vars))
    return regulated * signs * sizes


def _subtype_effects(n_types: int, n_vars: int, n_subtypes: int, effect: float, n_genes: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Each subtype raises ``n_genes`` genes of its own by ``effect`` (none with one subtype)."""
    effects = np.zeros((n_types, n_vars))
    if n_subtypes == 1:
        return effects
    for row in range(n_types):
        effects[row, rng.choice(n_vars, size=min(n_genes, n_vars), replace=False)] = effect
    return effects


def _labels(shares: np.ndarray, n_obs: int, rng: np.random.Generator) -> np.ndarray:
    """Group of each cell: exact sizes (rounded), shuffled, so a 1% group is 1% of cells."""
    counts = np.floor(shares * n_obs).astype(np.int64)
    counts[np.argsort(-(shares * n_obs - counts))[: n_obs - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(shares.size), counts))


def _nb_sizes(nb_size, n_vars: int, rng: np.random.Generator) -> np.ndarray:
    if nb_size is None:
        return np.full(n_vars, np.inf)
    if np.isscalar(nb_size):
        check_real(nb_size, name="nb_size", minimum=1e-6, hint="the NB size of every gene")
        return np.full(n_vars, float(nb_size))
    low, high = (float(v) for v in nb_size)
    if not 0 < low <= high:
        raise ValueError(f"nb_size={nb_size!r} must be (low, high) with 0 < low <= high.")
    return np.exp(rng.uniform(np.log(low), np.log(high), n_vars))


def _draw_counts(profiles: np.ndarray, types: np.ndarray, library: np.ndarray,
                 sizes: np.ndarray, rng: np.random.Generator, block: int = 4096):
    """NB (gamma-Poisson) counts by blocks of cells, as int32 CSR."""
    parts = []
    finite = np.isfinite(sizes)
    for start in range(0, types.size, block):
        rows = slice(start, start + block)
        mean = profiles[types[rows]] * library[rows, None]
        rate = mean.copy()
        rate[:, finite] = rng.gamma(sizes[finite], mean[:, finite] / sizes[finite])
        parts.append(sparse.csr_matrix(rng.poisson(rate).astype(np.int32)))
    return sparse.vstack(parts, format="csr")
