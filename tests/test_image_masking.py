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


@pytest.mark.parametrize("reach", [0, 1, 2])
def test_torch_masked_copies_are_the_numpy_masked_copies(reach):
    # A grid phase hidden by the neighbour mean (with reach, a block around each of its
    # pixels): the CNN's torch copy is the classical path's numpy copy. Fails when either
    # side fills the hidden pixels otherwise (the pixel's own value, another phase, a block
    # of another size or with other stand-ins).
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking import (
        block_stride,
        fill_masked,
        phase_offsets,
        replacement_values,
    )
    from sc_noise2self.image.masking_torch import hide_torch, phase_mask_torch

    image = np.random.default_rng(5).random((15, 13)).astype(np.float32)
    stand_ins = replacement_values(image, "mean", reach=reach)
    generator = torch.Generator().manual_seed(0)
    stride = block_stride(3, reach)
    for offsets, mask in zip(phase_offsets(stride, 2), grid_masks(image.shape, 3, reach=reach),
                             strict=True):
        expected = fill_masked(np.empty_like(image), image, mask, stand_ins)
        hidden = phase_mask_torch((1, 1, *image.shape), stride, torch.tensor([offsets]))
        got = hide_torch(torch.from_numpy(image)[None, None], hidden, "mean", generator,
                         reach=reach)
        np.testing.assert_allclose(got[0, 0].numpy(), expected, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(expected, image)


def test_torch_block_copies_are_the_numpy_ones_in_3d_with_channels():
    # Blocks in a volume with two channels (channels first, as the CNNs hold them): the
    # torch copy of each phase is the numpy one, and each phase hides 3 x 3 x 3 cubes.
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking import fill_masked, phase_offsets, replacement_values
    from sc_noise2self.image.masking_torch import hide_torch, phase_mask_torch

    volume = np.random.default_rng(6).random((2, 9, 10, 11)).astype(np.float32)
    stand_ins = replacement_values(volume, "mean", channel_axis=0, reach=1)
    generator = torch.Generator().manual_seed(0)
    masks = grid_masks(volume.shape, 4, channel_axis=0, reach=1)
    assert len(masks) == 64
    for offsets, mask in zip(phase_offsets(4, 3), masks, strict=True):
        expected = fill_masked(np.empty_like(volume), volume, mask, stand_ins)
        hidden = phase_mask_torch((1, 1, *volume.shape[1:]), 4, torch.tensor([offsets]))
        got = hide_torch(torch.from_numpy(volume)[None], hidden, "mean", generator, reach=1)
        np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-6, atol=1e-7)
        centres = hidden[0, 0].numpy()
        cubes = np.zeros_like(centres)
        for z, y, x in np.argwhere(centres):
            cubes[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = True
        np.testing.assert_array_equal((expected != volume).any(axis=0), cubes)


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


def test_masked_phases_stream_the_same_copies_one_buffer_at_a_time():
    from sc_noise2self.image.masking import masked_phases

    image = np.random.default_rng(2).random((9, 10))
    masks = grid_masks(image.shape, 3)
    replacement = replacement_values(image, "kernel")
    stack = masked_inputs(image, masks, replacement)
    buffers = set()
    for index, (masked, mask) in enumerate(masked_phases(image, masks, replacement)):
        np.testing.assert_array_equal(masked, stack[index])
        assert mask == masks[index]
        buffers.add(id(masked))
        masked[...] = np.nan  # a denoiser that writes into its input spoils nothing
    assert len(buffers) == 1
    as32 = [m.copy() for m, _ in masked_phases(image, masks, replacement, dtype=np.float32)]
    np.testing.assert_array_equal(np.stack(as32), stack.astype(np.float32))


# --- the torch twins, used by the masked CNNs ------------------------------------------------


@pytest.mark.parametrize(("shape", "stride"), [((2, 1, 9, 11), 3), ((1, 1, 5, 6, 7), 2)])
def test_torch_phases_are_the_numpy_phases(shape, stride):
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking import phase_offsets
    from sc_noise2self.image.masking_torch import phase_mask_torch

    spatial = shape[2:]
    for offsets, mask in zip(phase_offsets(stride, len(spatial)),
                             grid_masks(spatial, stride), strict=True):  # fmt: skip
        expected = np.zeros(spatial, dtype=bool)
        expected[mask] = True
        got = phase_mask_torch(shape, stride, torch.tensor([offsets] * shape[0]))
        assert got.shape == shape
        for sample in got[:, 0].numpy():
            np.testing.assert_array_equal(sample, expected)


@pytest.mark.parametrize("interpolation", ["mean", "kernel"])
@pytest.mark.parametrize("spatial", [(7, 9), (4, 5, 6)])
def test_torch_neighbour_mean_is_the_numpy_replacement(interpolation, spatial):
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking_torch import neighbour_mean_torch

    image = np.random.default_rng(3).random((2, *spatial))  # channels first
    expected = replacement_values(image, interpolation, channel_axis=0)
    got = neighbour_mean_torch(torch.as_tensor(image)[None], interpolation)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_torch_random_mask_density_and_mirror_pad_of_short_axes():
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking_torch import mirror_pad_torch, random_mask_torch

    mask = random_mask_torch((4, 1, 50, 50), 1 / 25, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and abs(mask.float().mean().item() - 1 / 25) < 0.01
    row = torch.arange(3.0).view(1, 1, 1, 3)
    padded = mirror_pad_torch(row, [(0, 0), (4, 4)])  # pads longer than the axis
    expected = np.pad(np.arange(3.0), 4, mode="reflect")
    np.testing.assert_array_equal(padded[0, 0, 0].numpy(), expected)
    np.testing.assert_array_equal(mirror_pad_torch(row[..., :1], [(0, 0), (2, 1)]).numpy(),
                                  np.zeros((1, 1, 1, 4)))  # fmt: skip
