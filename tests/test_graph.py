import numpy as np
import pytest
from conftest import to_dense

import sc_noise2self as n2s
from sc_noise2self.calibration import SplitSettings
from sc_noise2self.denoisers.diffusion import calibrate_diffusion_counts
from sc_noise2self.denoisers.graph import (
    build_graph,
    diffusion_loss_curve,
    diffusion_operator,
    knn_loss_curve,
    knn_operator,
)
from sc_noise2self.denoisers.knn import calibrate_knn_counts
from sc_noise2self.losses import prepare_halves


@pytest.fixture(scope="module")
def halves(synthetic):
    return prepare_halves(synthetic.X, p=0.7, transform="sqrt", random_state=4)


def brute_force(operator_power, halves, loss="mse"):
    a, b = to_dense(halves.a), to_dense(halves.b)
    table = halves.conversion_table()
    return np.mean((halves.conversion.convert(operator_power @ a, table) - b) ** 2)


def test_graph_sees_half_a_only(synthetic, halves):
    graph = build_graph(halves.a, 10)
    other = prepare_halves(synthetic.X, p=0.7, transform="sqrt", random_state=4)
    other.b = other.b[::-1]  # a different half B must not move the graph
    again = build_graph(other.a, 10)
    assert knn_loss_curve(again, other, [5])[0] != knn_loss_curve(graph, halves, [5])[0]
    np.testing.assert_array_equal(graph.indices, again.indices)
    assert np.all(graph.indices[:, 0] == np.arange(synthetic.n_obs))


def test_knn_sweep_equals_brute_force(halves):
    graph = build_graph(halves.a, 12)
    ks = [1, 2, 5, 12]
    curve = knn_loss_curve(graph, halves, ks)
    expected = [brute_force(knn_operator(graph, k).toarray(), halves) for k in ks]
    np.testing.assert_allclose(curve, expected, rtol=1e-9)


def test_diffusion_sweep_equals_step_by_step_brute_force(halves):
    operator = diffusion_operator(build_graph(halves.a, 10))
    np.testing.assert_allclose(operator.sum(axis=1), 1.0)
    curve = diffusion_loss_curve(operator, halves, 4)
    dense = operator.toarray()
    expected = [brute_force(np.linalg.matrix_power(dense, t), halves) for t in range(5)]
    np.testing.assert_allclose(curve, expected, rtol=1e-9)


def test_diffusion_at_t0_returns_the_input(synthetic):
    adata = synthetic.copy()
    n2s.tl.denoise_diffusion(adata, t=0)
    depth = adata.uns["noise2self_diffusion"]["params"]["depth"]
    raw = np.sqrt(to_dense(n2s.transforms.normalize_to_depth(adata.X, depth)))
    np.testing.assert_allclose(adata.layers["noise2self_diffusion"], raw, rtol=1e-5)


def test_smoothing_has_an_interior_optimum_and_beats_no_smoothing(synthetic):
    knn = calibrate_knn_counts(synthetic.X, ks=[1, 3, 10, 30, 100, 300])
    diffusion = calibrate_diffusion_counts(synthetic.X, t_max=30)
    for result in (knn, diffusion):
        assert 0 < result.best_index < len(result.grid) - 1
        assert result.loss.min() < result.loss[0]


def test_denoise_knn_calibrates_then_stores_operator(synthetic):
    adata = synthetic.copy()
    n2s.tl.denoise_knn(adata, ks=[1, 5, 20])
    record = adata.uns["noise2self_knn"]
    k = record["params"]["n_neighbors"]
    assert k == record["best"] and record["method"] == "knn"
    operator = adata.obsp["noise2self_knn_operator"]
    assert np.all(np.diff(operator.indptr) == k)
    np.testing.assert_allclose(
        n2s.tl.denoised_values(adata, ["gene0", "gene7"], key="noise2self_knn"),
        adata.layers["noise2self_knn"][:, [0, 7]], rtol=1e-5,
    )


def test_denoised_diffusion_is_closer_to_truth_than_raw(synthetic):
    adata = synthetic.copy()
    n2s.tl.denoise_diffusion(adata, t_max=10)
    depth = adata.uns["noise2self_diffusion"]["params"]["depth"]
    rate = adata.layers["rate"]
    truth = np.sqrt(rate / rate.sum(1, keepdims=True) * depth)
    raw = np.sqrt(to_dense(n2s.transforms.normalize_to_depth(adata.X, depth)))
    smooth = adata.layers["noise2self_diffusion"]
    assert np.mean((smooth - truth) ** 2) < 0.5 * np.mean((raw - truth) ** 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X: calibrate_knn_counts(X, ks=[1, 5000]), "n_cells - 1"),
        (lambda X: calibrate_knn_counts(X, ks=[0, 3]), "between 1"),
        (lambda X: calibrate_diffusion_counts(X, n_neighbors=10_000), "n_neighbors"),
        (lambda X: calibrate_diffusion_counts(X, t_max=-1), "t_max"),
        (lambda X: calibrate_knn_counts(X, settings=SplitSettings(loss="l2")), "loss"),
    ],
)
def test_bad_graph_options(synthetic, call, message):
    with pytest.raises(ValueError, match=message):
        call(synthetic.X)
