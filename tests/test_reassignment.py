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
    # float32 counts (what a split holds) give the same choices, read without a copy.
    single = matrix.astype(np.float32)
    np.testing.assert_array_equal(
        leiden_refine.likeliest_clusters(labels, single, counts.sum(axis=1), sizes), expected)


def test_the_reassignment_reads_half_a_counts_without_a_wider_copy():
    # A float64 copy of half A's float32 counts was the reassignment's whole rise in peak
    # memory at 200,000 cells (0.62 GB); fails when CountRows copies them again.
    targets, _, _ = halves_and_truth(0)
    assert leiden_refine.CountRows.of(targets).a is targets.a


def halves_and_truth(seed: int):
    """The calibration's targets, the true groups and half A's NB sizes of a simulation."""
    adata = n2s.simulation.simulate_counts(900, 400, (0.6, 0.3, 0.1), depth_sd=0.8,
                                           nb_size=(0.5, 50.0), effect=1.0,
                                           random_state=seed)
    sizes = n2s.diagnostics.estimate_overdispersion(adata.X, random_state=seed)
    settings = leiden.split_settings({"overdispersion": sizes}, "log1p", seed)
    halves, _ = leiden.first_split(adata.X, settings)
    scored = leiden.informative_genes(halves, 2000)
    targets = DevianceTargets.of(scored.a, scored.b, scored.totals, halves.p)
    truth = adata.obs["group"].cat.codes.to_numpy().astype(np.int64)
    return targets, truth, leiden.half_a_sizes(halves, settings, adata.X)[scored.genes]


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


def test_the_passes_stop_once_the_loss_is_worse_than_leidens(monkeypatch):
    # Pass 1 scrambles the labels (half B's loss rises above Leiden's): the passes stop
    # there and Leiden's labels stay. Fails when the passes run on (pass 2 would put the
    # misplaced cells back, and be kept).
    targets, truth, _ = halves_and_truth(0)
    wrong = truth.copy()
    wrong[:60] = (wrong[:60] + 1) % 3
    scrambled = np.random.default_rng(2).permutation(truth)
    passes = iter([scrambled, truth, truth])
    calls = []

    def scripted(*args):
        calls.append(1)
        return next(passes)

    monkeypatch.setattr(leiden_refine, "likeliest_clusters", scripted)
    result = leiden_refine.reassigned_by_likelihood(wrong, targets)
    assert len(calls) == 1
    assert result.moved == 0 and "kept" in result.verdict
    np.testing.assert_array_equal(result.labels, wrong)


def test_the_labels_and_the_record_are_the_reassignments(monkeypatch):
    # What the reassignment returns is what obs and the record get. Fails when fit_clusters
    # computes the reassignment but keeps Leiden's labels, or drops its verdict.
    adata = n2s.simulation.simulate_counts(900, 400, (0.6, 0.4), depth_sd=0.6,
                                           nb_size=(0.5, 50.0), random_state=4)
    seen = {}

    def swapped(labels, targets, sizes):
        moved = labels.copy()
        moved[:3] = 1 - moved[:3]
        seen.update(sizes=sizes, given=labels, moved=moved)
        return leiden_refine.Reassignment(moved, 3, "three cells swapped")

    monkeypatch.setattr(leiden, "reassigned_by_likelihood", swapped)
    n2s.tl.calibrate_leiden(adata, random_state=4, resolutions=[0.1])
    assert adata.uns["noise2self_leiden"]["params"]["reassignment"] == "three cells swapped"
    found = adata.obs["noise2self_leiden"].astype(int).to_numpy()
    np.testing.assert_array_equal(found, seen["moved"])
    assert np.sum(found != seen["given"]) == 3
    assert seen["sizes"] is not None and np.all(seen["sizes"] > 0)  # NB, not Poisson


def test_a_cell_without_molecules_stays_and_an_emptied_cluster_is_dropped():
    # A cell with no half-A counts has no likelier cluster: it stays. Five cells of group 0
    # labelled as a cluster of their own all leave it, so it is dropped and counted as five
    # moves (not as every cell renumbered). Fails when empty rows follow the tie-break, or
    # the moves are counted in the renumbered codes.
    targets, truth, sizes = halves_and_truth(3)
    a = targets.a.tolil()
    a[7, :] = 0
    a = canonical(a.tocsr())
    from dataclasses import replace

    totals = np.asarray(a.sum(axis=1), dtype=np.float64).ravel()
    targets = replace(targets, a=a, totals=totals)
    labels = truth.copy()
    labels[7] = (truth[7] + 1) % 3  # misplaced, but with nothing to go by
    lonely = np.flatnonzero(truth == 0)[:5]
    labels[lonely] = 3
    step = leiden_refine.likeliest_clusters(labels, a, totals, sizes)
    assert step[7] == labels[7]
    result = leiden_refine.reassigned_by_likelihood(labels, targets, sizes)
    assert result.labels.max() == 2  # three clusters left
    assert "emptied" in result.verdict
    mates = np.flatnonzero((labels == labels[7]) & (np.arange(labels.size) != 7))
    assert result.labels[7] == np.bincount(result.labels[mates]).argmax()
    assert 5 <= result.moved <= 8
