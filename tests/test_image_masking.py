"""Grid phases and replacement values: the partition and the hiding of one phase."""

from __future__ import annotations

import numpy as np
import pytest

from sc_noise2self.image import (
    grid_masks,
    masked_inputs,
    neighbour_kernel,
    replacement_values,
)


@pytest.mark.parametrize(
    ("shape", "channel_axis", "stride", "n_phases"),
    [
        ((10, 13), None, 4, 16),
        ((9, 8, 7), None, 3, 27),
        ((3, 10, 12), 0, 4, 16),
        ((8, 9, 2), 2, 2, 4),
    ],
)
def test_phases_partition_the_image(shape, channel_axis, stride, n_phases):
    masks = grid_masks(shape, stride, channel_axis)
    assert len(masks) == n_phases
    hits = np.zeros(shape, dtype=int)
    for mask in masks:
        hits[mask] += 1
    np.testing.assert_array_equal(hits, 1)


def test_channels_of_a_pixel_share_their_phase():
    shape = (6, 3, 8)  # channels in the middle
    for mask in grid_masks(shape, 2, channel_axis=1):
        hidden = np.zeros(shape, dtype=bool)
        hidden[mask] = True
        assert np.all(hidden.all(axis=1) == hidden.any(axis=1))


@pytest.mark.parametrize("interpolation", ["mean", "kernel"])
@pytest.mark.parametrize(("ndim", "channel_axis"), [(2, None), (3, None), (3, 0)])
def test_kernels_sum_to_one_with_zero_centre(interpolation, ndim, channel_axis):
    kernel = neighbour_kernel(ndim, interpolation, channel_axis)
    assert kernel.ndim == ndim
    assert kernel.sum() == pytest.approx(1.0)
    centre = tuple(s // 2 for s in kernel.shape)
    assert kernel[centre] == 0
    if channel_axis is not None:
        assert kernel.shape[channel_axis] == 1


def test_paper_kernel_weights_diagonals_half():
    kernel = neighbour_kernel(2, "kernel") * 6  # 4 faces x 1 + 4 diagonals x 0.5
    np.testing.assert_allclose(kernel, [[0.5, 1, 0.5], [1, 0, 1], [0.5, 1, 0.5]])


@pytest.mark.parametrize("interpolation", ["mean", "kernel", "random"])
def test_replacement_on_a_phase_ignores_that_phase(interpolation):
    rng = np.random.default_rng(0)
    image = rng.random((16, 16))
    masks = grid_masks(image.shape, 4)
    before = replacement_values(image, interpolation, masks=masks)
    for mask in masks:
        changed = image.copy()
        changed[mask] = rng.random(changed[mask].shape) * 10
        after = replacement_values(changed, interpolation, masks=masks)
        np.testing.assert_array_equal(after[mask], before[mask])


def test_random_replacement_is_seeded_and_within_range():
    image = np.random.default_rng(1).random((12, 12))
    masks = grid_masks(image.shape, 3)
    first = replacement_values(image, "random", masks=masks, random_state=5)
    np.testing.assert_array_equal(
        first, replacement_values(image, "random", masks=masks, random_state=5)
    )
    assert not np.array_equal(
        first, replacement_values(image, "random", masks=masks, random_state=6)
    )
    assert image.min() <= first.min() and first.max() <= image.max()


def test_unknown_interpolation_lists_the_choices():
    with pytest.raises(ValueError, match="'mean', 'kernel', 'random'"):
        replacement_values(np.zeros((4, 4)), "bicubic")


def test_masked_inputs_replace_exactly_one_phase_each():
    image = np.arange(64.0).reshape(8, 8)
    masks = grid_masks(image.shape, 2)
    replacement = -np.ones_like(image)
    stack = masked_inputs(image, masks, replacement)
    assert stack.shape == (4, 8, 8)
    for copy, mask in zip(stack, masks, strict=True):
        expected = image.copy()
        expected[mask] = -1
        np.testing.assert_array_equal(copy, expected)
    np.testing.assert_array_equal(image, np.arange(64.0).reshape(8, 8))
