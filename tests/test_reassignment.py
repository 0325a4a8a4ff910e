"""Cells moved to their likeliest cluster after Leiden, and the referee's veto (issue 24)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import sc_noise2self as n2s
from sc_noise2self.denoisers import leiden, leiden_refine
from sc_noise2self.denoisers.cluster_loss import DevianceTargets, canonical


def brute_force_likeliest(counts: np.ndarray, labels: np.ndarray, sizes: np.ndarray,
                          leave_one_out: bool = True) -> np.ndarray:
    """Each row's cluster of highest NB log-likelihood, written out densely over every gene."""
    from scipy import stats

    totals = counts.sum(axis=1)
    n_clusters = labels.max() + 1
    sums = np.stack([counts[labels == k].sum(axis=0) for k in range(n_clusters)])
    prior = leiden_refine.REASSIGN_PRIOR_CELLS * np.median(totals)
    prior_counts = prior * counts.sum(axis=0) / counts.sum()
    best = np.empty(labels.size, dtype=np.int64)
    for i, row in enumerate(counts):
        scores = []
        for k in range(n_clusters):
            own = leave_one_out and labels[i] == k
            rate = (sums[k] - own * row + prior_counts) / (sums[k].sum() - own * totals[i]
                                                         + prior)
            mean = rate * totals[i]
            scores.append(stats.nbinom.logpmf(row, sizes, sizes / (sizes + mean)).sum())
        best[i] = int(np.argmax(scores))
    return best


def test_each_cell_goes_to_the_cluster_where_its_molecules_are_likeliest():
    # The compiled pass (zeros' terms splined over depth) equals the dense NB formula over
    # every gene, own cluster without the cell's molecules. Fails when the cell's own counts
    # stay in its cluster's rate (the data are chosen so that this changes some cells'
    # choice), when the sizes are ignored (Poisson), or the zeros' terms are dropped.
    rng = np.random.default_rng(3)
    sizes = rng.uniform(0.3, 20.0, size=15)
    counts = rng.poisson(rng.gamma(1.0, 2.0, size=(60, 15))).astype(np.float64)
    counts[counts.sum(axis=1) == 0, 0] = 1
    labels = np.repeat([0, 1, 2], [40, 15, 5])
    expected = brute_force_likeliest(counts, labels, sizes)
    assert not np.array_equal(expected, brute_force_likeliest(counts, labels, sizes,
                                                              leave_one_out=False))
    assert not np.array_equal(expected, brute_force_likeliest(counts, labels,
                                                              np.full(15, 1e9)))
    matrix = canonical(sparse.csr_matrix(counts))
    found = leiden_refine.likeliest_clusters(labels, matrix, counts.sum(axis=1), sizes)
    np.testing.assert_array_equal(found, expected)


def halves_and_truth(seed: int):
    """The calibration's targets, the true groups and half A's NB sizes of a simulation."""
    adata = n2s.simulation.simulate_counts(900, 400, (0.6, 0.3, 0.1), depth_sd=0.8,
                                           nb_size=(0.5, 50.0), effect=1.0,
                                           random_state=seed)
    sizes = n2s.diagnostics.estimate_overdispersion(adata.X, random_state=seed)
    halves, _ = leiden.first_split(adata.X, leiden.split_settings(
        {"overdispersion": sizes}, "log1p", seed))
    scored = leiden.informative_genes(halves, 2000)
    targets = DevianceTargets.of(scored.a, scored.b, scored.totals, halves.p)
    truth = adata.obs["group"].cat.codes.to_numpy().astype(np.int64)
    return targets, truth, leiden.half_a_sizes(halves)[scored.genes]


def test_misplaced_cells_go_back_to_their_groups_and_the_loss_keeps_it():
    # A tenth of the cells put in a wrong group: the reassignment brings them back, and the
    # half-B loss says the moved labels are better. Fails when no cell is moved, when the
    # passes stop after one without converging on the rest, or when the referee's sign is
    # turned round.
    targets, truth, sizes = halves_and_truth(0)
    rng = np.random.default_rng(1)
    wrong = truth.copy()
    moved = rng.choice(truth.size, size=truth.size // 10, replace=False)
    wrong[moved] = (wrong[moved] + 1) % 3
    result = leiden_refine.reassigned_by_likelihood(wrong, targets, sizes)
    assert result.moved >= 0.8 * moved.size
    assert "standard errors better" in result.verdict
    assert adjusted_rand_score(truth, result.labels) > 0.95 > adjusted_rand_score(truth, wrong)


def test_the_loss_vetoes_a_reassignment_that_predicts_half_b_worse(monkeypatch):
    # Moves that the likelihood would make but half B's loss rejects leave Leiden's labels
    # as they were. Fails when the veto is dropped.
    targets, truth, _ = halves_and_truth(1)
    scrambled = np.random.default_rng(2).permutation(truth)
    monkeypatch.setattr(leiden_refine, "likeliest_clusters", lambda *args: scrambled)
    result = leiden_refine.reassigned_by_likelihood(truth, targets)
    assert result.moved == 0 and "kept" in result.verdict
    np.testing.assert_array_equal(result.labels, truth)


def test_the_record_says_what_the_reassignment_did():
    adata = n2s.simulation.simulate_counts(900, 400, (0.6, 0.4), depth_sd=0.6,
                                           nb_size=(0.5, 50.0), random_state=4)
    n2s.tl.calibrate_leiden(adata, random_state=4)
    params = adata.uns["noise2self_leiden"]["params"]
    assert adata.obs["noise2self_leiden"].nunique() == 2
    assert any(words in params["reassignment"]
               for words in ("cells moved", "no cell is likelier", "kept"))


def test_one_cluster_is_never_reassigned():
    # One cluster has nowhere to move its cells: the labels come back as they were.
    targets, _, _ = halves_and_truth(2)
    result = leiden_refine.reassigned_by_likelihood(
        np.zeros(targets.totals.size, dtype=np.int64), targets)
    assert result.moved == 0 and result.labels.max() == 0
