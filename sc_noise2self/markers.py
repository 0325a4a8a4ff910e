"""Marker tests of groups against the rest from sparse group sums and sparse ranks.

``sc.tl.rank_genes_groups`` ranks every cell of every gene (dense chunks of cells x genes)
and, with ``tie_correct=True``, sorts each chunk again for every group. On split counts,
where most values are 0, the ranks follow from the non-zeros alone: the zeros of a gene
are one tie whose average rank is known, so each gene sorts only its stored values, and a
group's rank sum is its non-zeros' ranks plus its zeros times the zeros' rank. Means and
variances are group sums of the values and their squares. Nothing is densified, the cost
grows with the non-zeros, and the statistics are scanpy's (equal to its output; tested).
The results are written in scanpy's format, so ``sc.get.rank_genes_groups_df`` and the
dotplots read them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse, stats

from ._dask import row_offsets, rows_chunked, tree_reduce
from ._validation import check_choice, is_dask_array

# The tests this module runs; any other (logreg) is scanpy's.
FAST_METHODS = ("wilcoxon", "t-test", "t-test_overestim_var")
# The options of sc.tl.rank_genes_groups that the fast path takes as scanpy does.
FAST_OPTIONS = ("n_genes", "corr_method", "mask_var", "pts", "rankby_abs", "tie_correct",
                "reference")
CORRECTIONS = ("benjamini-hochberg", "bonferroni")


def takes(method: str, options: dict) -> bool:
    """Whether :func:`rank_genes_groups` runs ``method`` with these scanpy options."""
    return (method in FAST_METHODS and set(options) <= set(FAST_OPTIONS)
            and options.get("reference", "rest") == "rest"
            and options.get("corr_method", "benjamini-hochberg") in CORRECTIONS)


def rank_genes_groups(values, labels: pd.Categorical, var_names: pd.Index, *, method: str,
                      key_params: dict, n_genes: int | None = None,
                      corr_method: str = "benjamini-hochberg", mask_var=None,
                      pts: bool = False, rankby_abs: bool = False, tie_correct: bool = False,
                      reference: str = "rest") -> dict:
    """Each group against the rest, in ``sc.tl.rank_genes_groups``'s record format.

    Parameters
    ----------
    values
        Cells x genes, sparse (log1p-normalised values ``>= 0`` as scanpy tests them) or
        dense.
    labels
        Each cell's group.
    var_names
        The genes' names.
    method
        ``"wilcoxon"``, ``"t-test"`` or ``"t-test_overestim_var"``.
    key_params
        The ``params`` entry of the record (groupby, method, ...).
    n_genes, corr_method, mask_var, pts, rankby_abs, tie_correct
        As in ``sc.tl.rank_genes_groups`` (``mask_var`` a boolean array here).
    reference
        ``"rest"`` only.

    Returns
    -------
    The record: ``params``, ``names``, ``scores``, ``pvals``, ``pvals_adj``,
    ``logfoldchanges`` (and ``pts``, ``pts_rest``).
    """
    _check_test(method, reference, corr_method, values, labels, mask_var)
    columns = (np.arange(values.shape[1]) if mask_var is None
               else np.flatnonzero(np.asarray(mask_var, dtype=bool)))
    var_names = var_names[columns]
    codes = np.asarray(labels.codes, dtype=np.int64)
    sizes = np.bincount(codes, minlength=len(labels.categories)).astype(np.float64)
    if np.any(sizes < 2):
        small = [str(labels.categories[g]) for g in np.flatnonzero(sizes < 2)]
        raise ValueError(
            f"groups {', '.join(small)} have fewer than 2 cells, and a test needs at least 2 "
            "in each group; merge or drop them (or remove unused categories) first.")
    if is_dask_array(values) and method != "wilcoxon":
        chosen = values if columns.size == values.shape[1] else values[:, columns]
        sums = _group_sums_by_row_chunks(chosen, codes, sizes.size)
        scores, pvals = _welch(sums, sizes, overestimate=method == "t-test_overestim_var")
    elif is_dask_array(values):
        scores, pvals, sums = _statistics_by_gene_blocks(values, columns, codes, sizes,
                                                         method, tie_correct)
    else:
        X = values if mask_var is None else values[:, columns]
        scores, pvals, sums = _statistics(X, codes, sizes, method, tie_correct)
    n_top = len(var_names) if n_genes is None or n_genes > len(var_names) else int(n_genes)
    record = {"params": key_params}
    record.update(_top_columns(scores, pvals, _log_fold_changes(sums, sizes), var_names,
                               [str(name) for name in labels.categories], n_top, rankby_abs,
                               corr_method))
    if pts:
        record["pts"], record["pts_rest"] = _expressed_shares(sums, sizes, var_names,
                                                              labels.categories)
    return record


def _canonical(X):
    """``X`` (CSR or CSC) with duplicates summed and stored zeros dropped, in place."""
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


def _statistics(values, codes: np.ndarray, sizes: np.ndarray, method: str,
                tie_correct: bool) -> tuple[np.ndarray, np.ndarray, GroupSums]:
    """Scores, p-values (groups x genes) and group sums of values held in memory."""
    # The ranks need each gene's values together (CSC); the t-tests only group sums, which
    # rows give as well, without the transposed copy (200,000 cells: 0.9x scanpy with it).
    X = _canonical(sparse.csc_matrix(values, dtype=np.float64) if method == "wilcoxon"
                   else sparse.csr_matrix(values))
    sums = group_sums(X, codes, sizes.size)
    if method == "wilcoxon":
        return (*_wilcoxon(X, codes, sizes, tie_correct), sums)
    return (*_welch(sums, sizes, overestimate=method == "t-test_overestim_var"), sums)


# Stored values per gene block of a dask matrix: a block is read into memory whole (as CSC
# for the ranks), so about 16 bytes per value, plus its transposed copy.
DASK_BLOCK_VALUES = 2**25


def _statistics_by_gene_blocks(values, columns: np.ndarray, codes: np.ndarray,
                               sizes: np.ndarray, method: str, tie_correct: bool):
    """:func:`_statistics` of a dask matrix, a block of genes at a time.

    A rank needs every cell of its gene, and every statistic here is computed gene by gene
    (Wilcoxon's sums and ranks over a column's stored values in row order), so a block of
    whole columns read into memory gives each gene exactly its in-memory statistics. The
    blocks are sized by the non-zeros (counted in one pass; dense chunks count every
    cell) to about :data:`DASK_BLOCK_VALUES` stored values each. Each block is one pass
    over the lazy matrix, its graph included (a lazy half B is split again per block):
    persist it, or write it to a store and read it back, where that costs more than
    reading.
    """
    import dask

    if sparse.issparse(values._meta):
        per_chunk = values.map_blocks(_stored_per_column, dtype=np.int64,
                                      chunks=((1,) * values.numblocks[0], values.chunks[1]))
        per_gene = np.asarray(dask.compute(per_chunk.sum(axis=0))[0]).ravel()[columns]
    else:  # dense chunks are read whole: every cell of a gene takes memory
        per_gene = np.full(columns.size, values.shape[0], dtype=np.int64)
    parts = []
    for block in _gene_blocks(per_gene, DASK_BLOCK_VALUES):
        chunk = values[:, columns[block]].compute()
        parts.append(_statistics(sparse.csc_matrix(chunk), codes, sizes, method,
                                 tie_correct))
    scores = np.concatenate([part[0] for part in parts], axis=1)
    pvals = np.concatenate([part[1] for part in parts], axis=1)
    sums = GroupSums(*(np.concatenate([getattr(part[2], name) for part in parts], axis=1)
                       for name in ("values", "squares", "nonzeros")))
    return scores, pvals, sums


def _group_sums_by_row_chunks(values, codes: np.ndarray, n_groups: int) -> GroupSums:
    """:class:`GroupSums` of a dask matrix: each row chunk's, added in a tree.

    The t-tests need group sums only, which row chunks give without reading a gene's
    cells together; the sums are added in another order than in memory (about 1e-16
    relative).
    """
    import dask

    X = rows_chunked(values)
    starts = row_offsets(X)
    parts = [dask.delayed(_chunk_group_sums)(block, codes[start:start + size], n_groups)
             for block, start, size in zip(X.to_delayed().ravel(), starts, X.chunks[0],
                                           strict=True)]
    (total,) = dask.compute(tree_reduce(parts, _added_group_sums))
    return GroupSums(*total)


def _chunk_group_sums(chunk, codes: np.ndarray, n_groups: int) -> tuple:
    sums = group_sums(_canonical(sparse.csr_matrix(chunk, dtype=np.float64)), codes, n_groups)
    return sums.values, sums.squares, sums.nonzeros


def _added_group_sums(parts: list) -> tuple:
    return tuple(sum(part[i] for part in parts) for i in range(3))


def _stored_per_column(chunk) -> np.ndarray:
    """Non-zero values per column of one chunk, as a 1 x genes row."""
    if sparse.issparse(chunk):
        return np.asarray(sparse.csr_matrix(chunk).getnnz(axis=0), dtype=np.int64)[None, :]
    return np.count_nonzero(np.asarray(chunk), axis=0).astype(np.int64)[None, :]


def _gene_blocks(per_gene: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive positions whose stored values add up to about ``budget`` (at least one)."""
    blocks, start, total = [], 0, 0
    for position, count in enumerate(per_gene):
        if total and total + count > budget:
            blocks.append(np.arange(start, position))
            start, total = position, 0
        total += int(count)
    blocks.append(np.arange(start, per_gene.size))
    return [block for block in blocks if block.size]


def _check_test(method: str, reference: str, corr_method: str, values, labels,
                mask_var) -> None:
    """Refuse, before any work, what this test cannot run or would run wrong."""
    check_choice(method, FAST_METHODS, name="method")
    check_choice(corr_method, CORRECTIONS, name="corr_method")
    if reference != "rest":
        raise ValueError(
            f"reference={reference!r}: this test compares each group with the rest only; "
            "use sc.tl.rank_genes_groups for a reference group.")
    if len(labels) != values.shape[0]:
        raise ValueError(
            f"labels has {len(labels)} entries for {values.shape[0]} cells; give one group "
            "per cell.")
    if mask_var is not None and np.asarray(mask_var).shape != (values.shape[1],):
        raise ValueError(
            f"mask_var has shape {np.asarray(mask_var).shape} for {values.shape[1]} genes; "
            "give one True or False per gene.")


class GroupSums:
    """Per group and gene: the sum of values, of their squares and the non-zeros (K x genes)."""

    def __init__(self, values: np.ndarray, squares: np.ndarray, nonzeros: np.ndarray) -> None:
        self.values, self.squares, self.nonzeros = values, squares, nonzeros

    def rest(self) -> GroupSums:
        """The same sums over every cell outside each group."""
        return GroupSums(*(part.sum(axis=0) - part for part in
                           (self.values, self.squares, self.nonzeros)))


def group_sums(X, codes: np.ndarray, n_groups: int) -> GroupSums:
    """:class:`GroupSums` of the stored values of ``X`` (CSC or CSR) by the groups ``codes``."""
    from ._sparse_kernels import column_group_sums, row_group_sums  # numba: when used

    if X.format == "csr":
        return GroupSums(*row_group_sums(X.data, X.indices, X.indptr, codes, n_groups,
                                         X.shape[1]))
    return GroupSums(*column_group_sums(X.data, X.indices, X.indptr, codes, n_groups))


def _mean_var(values: np.ndarray, squares: np.ndarray, n: np.ndarray):
    """Means and variances (ddof 1, as scanpy's) from sums over ``n`` cells."""
    n = n[:, None]
    mean = values / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (squares / n - mean**2) * (n / (n - 1))
    return mean, var


def _welch(sums: GroupSums, sizes: np.ndarray, *, overestimate: bool):
    """Welch's t-test of each group against the rest, as scanpy runs it."""
    rest, n_rest = sums.rest(), sizes.sum() - sizes
    mean, var = _mean_var(sums.values, sums.squares, sizes)
    mean_rest, var_rest = _mean_var(rest.values, rest.squares, n_rest)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores, pvals = stats.ttest_ind_from_stats(
            mean1=mean, std1=np.sqrt(var), nobs1=sizes[:, None], mean2=mean_rest,
            std2=np.sqrt(var_rest), nobs2=(sizes if overestimate else n_rest)[:, None],
            equal_var=False)
    scores, pvals = np.asarray(scores), np.asarray(pvals)
    scores[np.isnan(scores)] = 0
    pvals[np.isnan(pvals)] = 1
    return scores, pvals


def _wilcoxon(X: sparse.csc_matrix, codes: np.ndarray, sizes: np.ndarray, tie_correct: bool):
    """Rank-sum z-scores and two-sided p-values of each group against the rest."""
    from ._sparse_kernels import column_rank_sums  # numba: imported when used

    n = float(codes.size)
    rank_sums, ties = column_rank_sums(X.data, X.indices, X.indptr, codes, sizes.size)
    correction = 1.0 - ties / (n**3 - n) if tie_correct and n >= 2 else 1.0
    n_in, n_out = sizes[:, None], n - sizes[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (rank_sums - n_in * (n + 1) / 2.0) / np.sqrt(
            correction * n_in * n_out * (n + 1) / 12.0)
    scores[np.isnan(scores)] = 0
    return scores, 2 * stats.norm.sf(np.abs(scores))


def _log_fold_changes(sums: GroupSums, sizes: np.ndarray) -> np.ndarray:
    """log2 of the groups' over the rest's mean expm1 values, as scanpy computes it."""
    rest = sums.rest()
    mean = sums.values / sizes[:, None]
    mean_rest = rest.values / (sizes.sum() - sizes)[:, None]
    with np.errstate(invalid="ignore"):  # NaN where values below 0 make a mean negative
        return np.log2((np.expm1(mean) + 1e-9) / (np.expm1(mean_rest) + 1e-9))


def _top_columns(scores, pvals, log_fold, var_names, groups: list[str], n_top: int,
                 rankby_abs: bool, corr_method: str) -> dict:
    """The record's columns: per group, its ``n_top`` genes by score, as scanpy orders them."""
    columns: dict[str, dict[str, np.ndarray]] = {
        name: {} for name in ("names", "scores", "pvals", "pvals_adj", "logfoldchanges")}
    names = np.asarray(var_names, dtype=object)
    for g, group in enumerate(groups):
        top = _top_n(np.abs(scores[g]) if rankby_abs else scores[g], n_top)
        if corr_method == "benjamini-hochberg":
            adjusted = stats.false_discovery_control(pvals[g], method="bh")
        else:
            adjusted = np.minimum(pvals[g] * pvals.shape[1], 1.0)
        for name, column in (("names", names), ("scores", scores[g]), ("pvals", pvals[g]),
                             ("pvals_adj", adjusted), ("logfoldchanges", log_fold[g])):
            columns[name][group] = column[top]
    dtypes = {"names": "O", "scores": "float32", "logfoldchanges": "float32",
              "pvals": "float64", "pvals_adj": "float64"}
    return {name: pd.DataFrame(table).to_records(index=False, column_dtypes=dtypes[name])
            for name, table in columns.items()}


def _top_n(scores: np.ndarray, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` highest scores, highest first (ties as scanpy breaks them)."""
    partition = np.argpartition(scores, -n_top)[-n_top:]
    return partition[np.argsort(scores[partition])[::-1]]


def _expressed_shares(sums: GroupSums, sizes: np.ndarray, var_names, categories):
    """Share of each group's (and the rest's) cells with a non-zero value, genes x groups."""
    names = [str(name) for name in categories]
    rest = sums.rest().nonzeros / (sizes.sum() - sizes)[:, None]
    return (pd.DataFrame((sums.nonzeros / sizes[:, None]).T, index=var_names, columns=names),
            pd.DataFrame(rest.T, index=var_names, columns=names))
