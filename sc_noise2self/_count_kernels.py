"""Leaf: compiled loops that split counts and build the normalised halves (numba).

Counter-based draws. Every count is split by inversion from uniforms that are a pure
function of (seed key, row, row total, gene, draw): entry ``n`` of a SplitMix64 sequence
(Steele, Lea & Flood 2014) whose start is mixed from the key, the row and the row's total.
So any block of rows, in any order, on any device, splits into the same bits as the whole
matrix; a dense row and the same row stored sparsely split identically (zeros draw
nothing); and a half split again with the seed that made it draws anew (its row total
differs). :mod:`sc_noise2self._count_kernels_torch` computes the same draws with torch.

Binomial(n, q) is drawn by inversion on ``min(q, 1 - q)``, in pieces of at most
:data:`PIECE` counts (a sum of independent binomials with one probability is binomial), so
the probability of zero never underflows. This module imports numba: import it lazily.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# SplitMix64's increment and finaliser constants.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
PIECE = 1000  # counts per inversion; 0.5**1000 is still a normal float64
DRAWS_PER_STAGE = 2048  # pieces per entry and stage: up to 2,048,000 counts per entry
MAX_COUNT = PIECE * DRAWS_PER_STAGE
TRANSFORM_CODES = {"none": 0, "sqrt": 1, "log1p": 2}
_S11, _S27, _S30, _S31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)


@njit(inline="always", cache=True)
def _mix(x):
    x = (x ^ (x >> _S30)) * MIX_1
    x = (x ^ (x >> _S27)) * MIX_2
    return x ^ (x >> _S31)


@njit(inline="always", cache=True)
def row_state(k0, k1, row, total):
    """The SplitMix64 start of one row's draws: key, row position and row total mixed."""
    s = _mix(k0 + GOLDEN * (np.uint64(row) + np.uint64(1)))
    return _mix(s ^ (k1 + GOLDEN * (np.uint64(total) + np.uint64(1))))


@njit(inline="always", cache=True)
def _uniform(state, gene, draw):
    bits = _mix(state + GOLDEN * (np.uint64(gene) * np.uint64(2 * DRAWS_PER_STAGE)
                                  + np.uint64(draw) + np.uint64(1)))
    return (np.float64(bits >> _S11) + 0.5) * (1.0 / 9007199254740992.0)


def zero_probabilities(q: float) -> np.ndarray:
    """``(1 - q) ** m`` for m = 0..PIECE, where the inversion starts (q <= 1/2).

    Tabulated once per split, so each draw costs no exponential; the torch kernels index
    the same table, so both devices start every inversion from the same float.
    """
    return np.exp(np.arange(PIECE + 1) * np.log1p(-q))


@njit(inline="always", cache=True)
def _inverse_binomial(m, q, u, start):
    # Smallest k with CDF(k) >= u for Binomial(m, q), q <= 1/2; start[m] = (1 - q)**m, or
    # computed here when no table was made (a share drawn per count: the NB split).
    ratio = q / (1.0 - q)
    f = start[m] if start.size else np.exp(m * np.log1p(-q))
    cdf = f
    k = 0
    while u > cdf and k < m:
        f *= (m - k) / (k + 1.0) * ratio
        k += 1
        cdf += f
    return k


@njit(inline="always", cache=True)
def binomial(n, q, state, gene, stage, start):
    """Binomial(n, q) from the entry's uniforms of one stage (0 or 1).

    ``start`` is :func:`zero_probabilities` of ``min(q, 1 - q)``, or empty when ``q`` is
    drawn per count (each inversion then computes its own start).
    """
    if n <= 0 or q <= 0.0:
        return 0
    if q >= 1.0:
        return n
    flip = q > 0.5
    small = 1.0 - q if flip else q
    drawn = 0
    left = n
    piece = 0
    while left > 0:
        m = min(left, PIECE)
        u = _uniform(state, gene, stage * DRAWS_PER_STAGE + piece)
        drawn += _inverse_binomial(m, small, u, start)
        left -= m
        piece += 1
    return n - drawn if flip else drawn


def split_values(values, indptr, indices, n_dense_cols, totals, first_row, key, p, both,
                 only_a, out, sizes=None):
    """Half A of every stored count, into ``out`` (row-major; dense when ``n_dense_cols``).

    With ``both < 0`` each count goes to A with probability ``p``, the rest to B; the
    second array returned is empty. With per-gene NB ``sizes`` (``inf``: Poisson) the
    probability is itself drawn per count, ``Beta(p b, (1 - p) b)``: the beta-binomial
    split. Otherwise (MCV's overlap model) a count lies in both halves with probability
    ``both``, and the rest in A only with probability ``only_a``; A gets both kinds, and the
    second array holds the counts in both halves.
    """
    shared = np.zeros(values.size if both >= 0.0 else 0, dtype=out.dtype)
    tables = [zero_probabilities(min(q, 1.0 - q)) for q in ((p, p) if both < 0 else
                                                             (both, only_a))]
    sizes = np.zeros(0) if sizes is None else np.asarray(sizes, dtype=np.float64)
    _split_values(values, indptr, indices, n_dense_cols, totals, first_row, key[0], key[1], p,
                  both, only_a, sizes, out, shared, *tables)
    return out, shared


@njit(parallel=True, cache=True)
def _split_values(values, indptr, indices, n_dense_cols, totals, first_row, k0, k1, p, both,
                  only_a, sizes, out, shared, start_0, start_1):
    # ``sizes`` empty: binomial (or overlap) shares; else per-gene NB sizes, inf for Poisson.
    drawn = np.zeros(0)  # no table: a share drawn per count computes its own start
    for i in prange(indptr.size - 1):
        state = row_state(k0, k1, first_row + i, totals[i])
        for idx in range(indptr[i], indptr[i + 1]):
            n = np.int64(values[idx])
            if n <= 0:
                continue
            gene = idx - indptr[i] if n_dense_cols > 0 else indices[idx]
            if sizes.size and np.isfinite(sizes[gene]):
                share = beta_share(p * sizes[gene], (1.0 - p) * sizes[gene], state, gene)
                out[idx] = binomial(n, share, state, gene, 0, drawn)
            elif both < 0.0:
                out[idx] = binomial(n, p, state, gene, 0, start_0)
            else:
                in_both = binomial(n, both, state, gene, 0, start_0)
                out[idx] = in_both + binomial(n - in_both, only_a, state, gene, 1, start_1)
                shared[idx] = in_both


# Mixed into a row's state for the draws of the beta shares, so that they never meet the
# binomial draws' uniforms (which use every address of a gene's two stages).
BETA_SALT = np.uint64(0x5851F42D4C957F2D)


@njit(inline="always", cache=True)
def _log_gamma_variate(shape, state, gene, stage):
    """log of a Gamma(shape, 1) variate (Marsaglia & Tsang 2000) from the entry's uniforms.

    Below shape 1 it draws Gamma(shape + 1) times ``U ** (1 / shape)``, kept in logs, so
    that tiny shapes (very overdispersed genes) do not underflow to zero.
    """
    base = stage * DRAWS_PER_STAGE
    draw = 0
    boost = 0.0
    if shape < 1.0:
        boost = np.log(_uniform(state, gene, base)) / shape
        draw = 1
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    while draw < DRAWS_PER_STAGE - 3:
        u1 = _uniform(state, gene, base + draw)
        u2 = _uniform(state, gene, base + draw + 1)
        u3 = _uniform(state, gene, base + draw + 2)
        draw += 3
        x = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller normal
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        if np.log(u3) < 0.5 * x * x + d - d * v + d * np.log(v):
            return np.log(d * v) + boost
    return np.log(d) + boost  # not reached in practice (an acceptance rate above 95%)


@njit(inline="always", cache=True)
def beta_share(a, b, state, gene):
    """A Beta(a, b) share from two gamma variates, drawn apart from the binomial's uniforms."""
    shares = _mix(state ^ BETA_SALT)
    log_x = _log_gamma_variate(a, shares, gene, 0)
    log_y = _log_gamma_variate(b, shares, gene, 1)
    return 1.0 / (1.0 + np.exp(log_y - log_x))


@njit(inline="always", cache=True)
def transformed(value, code):
    """The package's transforms of a float32: none, sqrt or log1p.

    sqrt is correctly rounded in float32; log1p runs in float64 and is rounded once, as the
    torch kernels do (within one ulp of numpy's float32 log1p).
    """
    if code == 1:
        return np.sqrt(value)
    if code == 2:
        return np.float32(np.log1p(np.float64(value)))
    return value


@njit(parallel=True, cache=True)
def _row_sums(values, a_values, indptr):
    n_rows = indptr.size - 1
    in_a = np.zeros(n_rows + 1, dtype=np.int64)
    in_b = np.zeros(n_rows + 1, dtype=np.int64)
    totals = np.zeros((n_rows, 2))
    for i in prange(n_rows):
        for idx in range(indptr[i], indptr[i + 1]):
            a = a_values[idx]
            b = values[idx] - a
            totals[i, 0] += a
            totals[i, 1] += b
            if a > 0:
                in_a[i + 1] += 1
            if b > 0:
                in_b[i + 1] += 1
    return totals, np.cumsum(in_a), np.cumsum(in_b)


@njit(parallel=True, cache=True)
def _fill_halves(values, a_values, indptr, indices, scale_a, scale_b, code, a_ptr, b_ptr):
    a_data = np.empty(a_ptr[-1], dtype=np.float32)
    a_idx = np.empty(a_ptr[-1], dtype=indices.dtype)
    b_data = np.empty(b_ptr[-1], dtype=np.float32)
    b_idx = np.empty(b_ptr[-1], dtype=indices.dtype)
    for i in prange(indptr.size - 1):
        ia, ib = a_ptr[i], b_ptr[i]
        sa, sb = scale_a[i], scale_b[i]
        for idx in range(indptr[i], indptr[i + 1]):
            a = a_values[idx]
            b = values[idx] - a
            if a > 0:
                a_data[ia] = transformed(np.float32(a) * sa, code)
                a_idx[ia] = indices[idx]
                ia += 1
            if b > 0:
                b_data[ib] = transformed(np.float32(b) * sb, code)
                b_idx[ib] = indices[idx]
                ib += 1
    return a_data, a_idx, b_data, b_idx


def normalised_halves(values, a_values, indptr, indices, depths: tuple[float, float],
                      transform: str):
    """CSR parts of both halves, each row scaled to its half's depth and transformed.

    Parameters
    ----------
    values, indptr, indices
        A canonical CSR matrix of counts.
    a_values
        Half A's share of each stored count (:func:`split_values`).
    depths
        The totals each row of half A and of half B is scaled to.
    transform
        ``"none"``, ``"sqrt"`` or ``"log1p"``.

    Returns
    -------
    ``(totals_a, (a_data, a_indices, a_indptr), (b_data, b_indices, b_indptr))``: half A's
    row totals (float64) and both halves in float32, zeros not stored. The float32 products
    and transforms are those of ``normalize_to_depth`` then ``apply_transform``.
    """
    totals, a_ptr, b_ptr = _row_sums(values, a_values, indptr)
    scales = [np.divide(depth, totals[:, j], out=np.zeros(len(totals)), where=totals[:, j] > 0)
              .astype(np.float32) for j, depth in enumerate(depths)]
    a_data, a_idx, b_data, b_idx = _fill_halves(values, a_values, indptr, indices, *scales,
                                                TRANSFORM_CODES[transform], a_ptr, b_ptr)
    return totals[:, 0].copy(), (a_data, a_idx, a_ptr), (b_data, b_idx, b_ptr)


@njit(parallel=True, cache=True)
def _scaled_values(values, indptr, scale, code):
    out = np.empty(values.size, dtype=np.float32)
    for i in prange(indptr.size - 1):
        factor = scale[i]
        for idx in range(indptr[i], indptr[i + 1]):
            out[idx] = transformed(np.float32(values[idx]) * factor, code)
    return out


def normalised_data(values, indptr, scale: np.ndarray, transform: str) -> np.ndarray:
    """A CSR matrix's values times each row's float32 ``scale``, transformed, in one pass.

    The arithmetic of ``normalize_to_depth`` then ``apply_transform`` (float32 product,
    then the transform), with no intermediate copy of the values.
    """
    return _scaled_values(values, indptr, np.asarray(scale, dtype=np.float32),
                          TRANSFORM_CODES[transform])


@njit(parallel=True, cache=True)
def partition_deviance_sums(b_indptr, genes, observed, own_a, labels, totals, sums,
                            cluster_totals, gene_sums, population_total, prior, b_share):
    """Each cell's ``sum b log(b / mu)`` over its half-B non-zeros (``cluster_loss``).

    One pass per cell over its entries, with the leave-one-out cluster rate shrunk towards
    the leave-one-out population rate, as :func:`~sc_noise2self.denoisers.cluster_loss.
    partition_deviances` defines ``mu``; the entries are summed in their stored order.
    """
    n_cells = b_indptr.size - 1
    out = np.zeros(n_cells)
    for i in prange(n_cells):
        own_total = totals[i]
        left = max(population_total - own_total, 1.0)
        cluster = labels[i]
        denominator = cluster_totals[cluster] - own_total + prior
        total = 0.0
        for e in range(b_indptr[i], b_indptr[i + 1]):
            g = genes[e]
            population = (gene_sums[g] - own_a[e]) / left
            rate = (sums[cluster, g] - own_a[e] + prior * population) / denominator
            mean = max(rate * own_total * b_share, 1e-12)
            total += observed[e] * np.log(observed[e] / mean)
        out[i] = total
    return out


@njit(parallel=True, cache=True)
def values_at_entries(a_data, a_indices, a_indptr, b_indices, b_indptr):
    """``a``'s value at each of ``b``'s stored entries (0 where ``a`` has none).

    Both are canonical CSR (sorted column indices), so each row is one merge of two sorted
    lists.
    """
    out = np.zeros(b_indices.size, dtype=np.float32)  # counts: exact below 2^24
    for i in prange(b_indptr.size - 1):
        k = a_indptr[i]
        stop = a_indptr[i + 1]
        for e in range(b_indptr[i], b_indptr[i + 1]):
            column = b_indices[e]
            while k < stop and a_indices[k] < column:
                k += 1
            if k < stop and a_indices[k] == column:
                out[e] = a_data[k]
    return out


@njit(cache=True)
def labelled_row_sums(data, indices, indptr, labels, n_labels, n_cols):
    """Sums of a CSR matrix's rows by label: ``n_labels x n_cols``, dense, float64."""
    out = np.zeros((n_labels, n_cols))
    for i in range(indptr.size - 1):
        row = out[labels[i]]
        for e in range(indptr[i], indptr[i + 1]):
            row[indices[e]] += data[e]
    return out


# Genes per parallel task of :func:`moment_sums`: the task's scratch column (a float per
# cell) is allocated once and reused for each of its genes.
GENES_PER_TASK = 64


@njit(parallel=True, cache=True)
def moment_sums(data, indices, indptr, size, reverse_indptr, reverse_indices, half_of, noise,
                gene_means, k):
    """The five per-gene sums over cells of ``estimate_overdispersion``, without dense blocks.

    ``data, indices, indptr``: the counts ``x`` in CSC, cells sorted in each column. The
    expected count ``m`` of cell ``i`` and gene ``g`` is ``size[i] * gene_means[g]`` when
    ``gene_means`` is given (non-empty), else ``size[i] / k`` times the sum of ``x_jg /
    size[j]`` over the cell's ``k`` neighbours in gene ``g``'s half ``h = half_of[g]``: each
    non-zero ``x_jg`` is added to the cells that have ``j`` as a neighbour (row ``h`` of the
    reverse graph, ``reverse_indptr`` / ``reverse_indices``), so the work follows the
    non-zeros. With ``o = m^2 - noise[h, i] m`` (``m^2`` less ``m``'s Poisson noise) and
    ``e = x (x - 2m) + o - m`` (the excess), returns the sums of ``e, o, e^2, e o, o^2``
    (5 x genes). Each gene is summed over cells in order by one thread: the result does not
    depend on the thread count.
    """
    n_cells = size.size
    n_genes = indptr.size - 1
    sums = np.zeros((5, n_genes))
    per_gene = gene_means.size > 0
    for task in prange((n_genes + GENES_PER_TASK - 1) // GENES_PER_TASK):
        scratch = np.zeros(n_cells)
        for g in range(task * GENES_PER_TASK, min((task + 1) * GENES_PER_TASK, n_genes)):
            h = half_of[g]
            if not per_gene:
                for e in range(indptr[g], indptr[g + 1]):
                    value = data[e] / size[indices[e]]
                    j = indices[e]
                    for r in range(reverse_indptr[h, j], reverse_indptr[h, j + 1]):
                        scratch[reverse_indices[h, r]] += value
            e = indptr[g]
            stop = indptr[g + 1]
            s_e = s_o = s_ee = s_eo = s_oo = 0.0
            for i in range(n_cells):
                if per_gene:
                    m = size[i] * gene_means[g]
                else:
                    m = size[i] * scratch[i] / k
                    scratch[i] = 0.0
                x = 0.0
                if e < stop and indices[e] == i:
                    x = data[e]
                    e += 1
                own = m * m - noise[h, i] * m
                excess = x * (x - 2.0 * m) + own - m
                s_e += excess
                s_o += own
                s_ee += excess * excess
                s_eo += excess * own
                s_oo += own * own
            sums[0, g] = s_e
            sums[1, g] = s_o
            sums[2, g] = s_ee
            sums[3, g] = s_eo
            sums[4, g] = s_oo
    return sums


@njit(cache=True)
def nb_log_likelihood(x, mean, size):
    """``log NB(x; mean, size)`` up to terms that do not depend on ``mean`` (size inf: Poisson)."""
    if np.isinf(size):
        return x * np.log(mean) - mean
    shrink = np.log1p(mean / size)
    return x * (np.log(mean) - shrink) - size * shrink


@njit(inline="always", cache=True)
def log_mean_shrunk(mean, size):
    """``log(mean) - log(1 + mean / size)``: ``nb_log_likelihood(x, m) - (x = 0)`` over ``x``."""
    if np.isinf(size):
        return np.log(mean)
    return np.log(mean) - np.log1p(mean / size)


@njit(parallel=True, cache=True)
def likeliest_labels(data, indices, indptr, labels, rates, sums, prior_counts, totals,
                     cluster_totals, prior, sizes, zero_terms, closed, fallback):
    """Each row's cluster of highest NB log-likelihood (``leiden_refine``).

    Row ``i`` in cluster ``k`` expects ``rates[k] * totals[i]``; its own cluster's rate is
    taken without its own counts, ``(sums - x + prior_counts) / (cluster_total - total +
    prior)``. ``zero_terms[i, k]`` is the sum over every gene of the likelihood of a zero at
    the cluster's rates times the row's depth (its own cluster's at ``totals[i]`` times
    ``(cluster_total + prior) / (cluster_total - total + prior)``, the zeros' leave-one-out
    depth); the row's non-zeros replace their zero terms. Ties go to the lowest cluster;
    no row goes to a ``closed`` cluster; a row without counts stays where it is, or goes to
    ``fallback`` from a closed one.
    """
    n_clusters = rates.shape[0]
    out = np.empty(indptr.size - 1, dtype=np.int64)
    for i in prange(indptr.size - 1):
        own = labels[i]
        depth = totals[i]
        if depth <= 0.0:  # no molecules: no cluster is likelier, and the cell stays
            out[i] = fallback if closed[own] else own
            continue
        left = cluster_totals[own] - depth + prior
        scores = zero_terms[i].copy()
        for e in range(indptr[i], indptr[i + 1]):
            g = indices[e]
            x = np.float64(data[e])  # float32 counts are exact; the likelihood is float64
            for k in range(n_clusters):
                if k == own:
                    mean = (sums[k, g] - x + prior_counts[g]) / left * depth
                    zero_mean = (sums[k, g] + prior_counts[g]) / left * depth
                    scores[k] += (nb_log_likelihood(x, mean, sizes[g])
                                  - nb_log_likelihood(0.0, zero_mean, sizes[g]))
                else:  # the zero term's mean is the same: its shrink cancels, one log1p
                    mean = rates[k, g] * depth
                    scores[k] += x * log_mean_shrunk(mean, sizes[g])
        for k in range(n_clusters):
            if closed[k]:
                scores[k] = -np.inf
        out[i] = np.argmax(scores)
    return out
