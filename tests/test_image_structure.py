"""Structured noise: the detector, line masks, and calibration that stays unbiased under them.

The paper's theorem needs the hidden pixels' noise independent of what the denoiser sees.
Noise correlated along rows breaks it for pixel masks and keeps it for whole-row masks;
these tests hold each piece of that to a property, with the mutation that breaks it named.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, img_as_float

from sc_noise2self import image as im
from sc_noise2self.image.masking import (
    MAX_REACH,
    fill_masked,
    grid_masks,
    max_reach,
    neighbour_kernel,
    replacement_values,
)
from sc_noise2self.image.referee import neighbour_mean
from sc_noise2self.image.structure import StructuredNoiseWarning, resolve_mask

QUIET = dict(n_jobs=1, progress=False)


def box_noise(shape, length: int, sigma: float, seed: int) -> np.ndarray:
    """Gaussian noise of sd ``sigma`` correlated within ``length - 1`` pixels along every axis."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, shape)
    for axis in range(len(shape)):
        noise = ndi.correlate1d(noise, np.ones(length) / np.sqrt(length), axis=axis,
                                mode="wrap")
    return noise


def line_noise(shape, length: int, sigma: float, seed: int, axis: int = -1) -> np.ndarray:
    """Gaussian noise of sd ``sigma`` correlated over ``length`` pixels along ``axis`` only."""
    white = np.random.default_rng(seed).normal(0.0, sigma, shape)
    if length == 1:
        return white
    return ndi.correlate1d(white, np.ones(length) / np.sqrt(length), axis=axis, mode="wrap")


def gaussian_widths_scored(clean: np.ndarray, noisy: np.ndarray, mask: str):
    """For Gaussian widths 0.5-3: the true errors of the J-invariant outputs under ``mask``,
    the calibrations under ``mask`` and under pixel masks, and the true noise variance."""
    grid = {"sigma": [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = [np.mean((im.denoise_invariant(noisy, ndi.gaussian_filter, sigma=s,
                                               mask=mask) - clean) ** 2)
                 for s in grid["sigma"]]
        structured = im.calibrate(noisy, ndi.gaussian_filter, grid, mask=mask, **QUIET)
        pixels = im.calibrate(noisy, ndi.gaussian_filter, grid, mask="pixel", **QUIET)
    return truth, structured, pixels, np.mean((noisy - clean) ** 2)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return img_as_float(data.camera())


# --------------------------------------------------------------------------- the detector


@pytest.mark.parametrize("seed", range(5))
def test_white_noise_on_fine_texture_shows_no_structure(camera, seed):
    """Weak white noise on camera: edges leak into any residual, the flat pixels keep them out.

    Mutation: correlate every pixel instead of the flattest quarter: the lag-1 correlation
    along y reaches 0.37 at sd 0.02 and the axis is flagged.
    """
    found = im.noise_correlation(camera + line_noise(camera.shape, 1, 0.02, seed))
    assert found.structured_axes == ()
    assert found.mask == "pixel"
    assert np.abs(found.correlation[:, 0]).max() < 0.15


@pytest.mark.parametrize(("length", "axis", "mask"), [(3, 1, "rows"), (5, 0, "columns"),
                                                      (7, 1, "rows")])
def test_line_correlated_noise_is_found_along_its_axis(camera, length, axis, mask):
    """The estimate is the noise's own correlation: (L - 1) / L at lag 1 for a box of L.

    Mutation: include the neighbours along the line in the residual: the correlation drops
    well below the box's.
    """
    noisy = camera + line_noise(camera.shape, length, 0.1, 0, axis=axis)
    found = im.noise_correlation(noisy)
    assert found.structured_axes == (axis,)
    assert found.mask == mask
    assert found.correlation[axis, 0] == pytest.approx((length - 1) / length, abs=0.06)
    assert found.extent[axis] == length - 1  # the box's correlation ends at lag L - 1
    assert found.correlation[1 - axis, 0] < found.threshold


def test_noise_correlated_along_every_axis_is_hidden_by_blocks(camera):
    """No line can hide noise correlated along every axis: blocks as wide as its extent do.

    Mutation: keep pixel masks when every axis is structured (the ninth session's rule):
    the mask is then "pixel" and the reach 0.
    """
    both = box_noise(camera.shape, 3, 0.1, 0)  # correlated within 2 pixels along y and x
    found = im.noise_correlation(camera + both)
    assert found.structured_axes == (0, 1) and found.extent == (2, 2)
    assert not found.covered and found.line_axes == ()
    assert found.mask == "blocks" and found.reach == 2
    with pytest.warns(StructuredNoiseWarning, match="hides its 5 x 5 block"):
        line_axes, reach, again = resolve_mask("auto", camera + both, None)
    assert line_axes == () and reach == 2 and again.structured_axes == (0, 1)
    longer = box_noise(camera.shape, 7, 0.1, 0)  # 6 pixels: past the largest block
    with pytest.warns(StructuredNoiseWarning, match="past the largest block"):
        assert resolve_mask("auto", camera + longer, None).reach == MAX_REACH == max_reach(2)
    # Asked for, blocks take the detector's reach (1 at least, on white noise too).
    assert resolve_mask("blocks", camera + both, None).reach == 2
    assert resolve_mask("blocks", camera + line_noise(camera.shape, 1, 0.1, 0), None).reach == 1


def test_volumes_and_channels_are_read_along_their_own_axes():
    rng = np.random.default_rng(0)
    volume = ndi.correlate1d(rng.normal(0, 0.1, (24, 48, 48)), np.ones(5) / np.sqrt(5), axis=2)
    assert im.noise_correlation(volume).structured_axes == (2,)
    assert im.noise_correlation(rng.normal(0, 0.1, (24, 48, 48))).structured_axes == ()
    # Channels last, correlated along y: the channel axis is not a spatial one.
    colour = np.stack([line_noise((64, 64), 5, 0.1, s, axis=0) for s in range(3)], axis=-1)
    found = im.noise_correlation(colour, channel_axis=-1)
    assert found.structured_axes == (0,) and found.mask == "columns"


def test_the_detection_plots_every_axis(camera):
    import matplotlib

    matplotlib.use("Agg")
    found = im.noise_correlation(camera + line_noise(camera.shape, 5, 0.1, 0))
    ax = found.plot()
    assert len(ax.lines) >= 2 + 2  # one curve per axis, the threshold and zero
    assert "rows" in ax.get_title()


# --------------------------------------------------------------------------- line masks


def test_line_phases_partition_the_image_and_hide_whole_lines():
    shape = (3, 10, 9)  # channels first
    masks = grid_masks(shape, 4, channel_axis=0, line_axes=(1,))
    assert len(masks) == 4
    count = np.zeros(shape, dtype=int)
    for mask in masks:
        count[mask] += 1
        hidden = np.zeros(shape, dtype=bool)
        hidden[mask] = True
        assert hidden.all(axis=(0, 2)).sum() == hidden.any(axis=(0, 2)).sum()  # whole rows
    assert (count == 1).all()


def test_line_stand_ins_come_from_the_neighbouring_lines_only():
    """The baseline and the stand-ins of hidden rows are the mean of the rows above and below.

    Mutation: keep the row neighbours in the kernel: the stand-ins then move with the row.
    """
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 15))
    expected = 0.5 * (np.roll(x, 1, axis=0) + np.roll(x, -1, axis=0))
    inside = slice(1, -1)
    assert np.allclose(neighbour_mean(x, None, (1,))[inside], expected[inside])
    assert np.allclose(replacement_values(x, "kernel", line_axes=(1,))[inside],
                       expected[inside])
    assert neighbour_kernel(2, "mean", line_axes=(0,)).shape == (1, 3)


def test_a_line_masked_output_ignores_its_whole_line(camera):
    """J-invariance with lines: change a whole row, and that row's output must not move.

    Mutation: build pixel phases (drop ``line_axes`` from ``grid_masks``): the row's output
    then follows its neighbours on the row.
    """
    x = camera[:64, :64] + line_noise((64, 64), 5, 0.1, 0)
    smooth = lambda image, sigma: ndi.gaussian_filter(image, sigma)  # noqa: E731
    before = im.denoise_invariant(x, smooth, sigma=2.0, mask="rows")
    changed = x.copy()
    changed[30] += np.random.default_rng(2).normal(0, 1.0, 64)
    after = im.denoise_invariant(changed, smooth, sigma=2.0, mask="rows")
    assert np.array_equal(before[30], after[30])
    assert not np.allclose(before[29], after[29])  # the neighbours do see it
    pixel = im.denoise_invariant(changed, smooth, sigma=2.0, mask="pixel")
    assert not np.allclose(pixel[30], im.denoise_invariant(x, smooth, sigma=2.0,
                                                            mask="pixel")[30])


def test_under_row_correlated_noise_the_line_loss_has_the_true_minimiser(camera):
    """The paper's claim under structured noise, for a Gaussian's width.

    With whole-row masks the self-supervised loss minus the noise variance tracks the true
    error of the same J-invariant outputs, and both pick the same width. With pixel masks
    the loss is biased low for narrow widths and picks a narrower one.
    Mutation: score line masks with pixel stand-ins (``line_axes`` dropped from
    ``replacement_values``): the hidden rows' stand-ins then carry their own noise.
    """
    clean = camera[128:384, 128:384]
    truth, lines, pixels, noise_variance = gaussian_widths_scored(
        clean, clean + line_noise(clean.shape, 5, 0.1, 0), "rows")
    assert np.argmin(lines.losses) == np.argmin(truth)
    assert np.allclose(lines.losses - noise_variance, truth, rtol=0.1, atol=2e-4)
    assert np.argmin(pixels.losses) < np.argmin(truth)
    assert lines.settings["mask"] == "rows" and pixels.settings["mask"] == "pixel"


def test_auto_denoise_finds_the_rows_and_beats_pixel_masks_by_two_db(camera):
    """The issue's case, on a 256 x 256 crop: auto finds the rows, says so, and gains >= 2 dB."""
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean = camera[128:384, 128:384]
    noisy = clean + line_noise(clean.shape, 5, 0.1, 0)
    options = dict(n_jobs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixel = im.denoise(noisy, "tv", mask="pixel", **options)
    with pytest.warns(StructuredNoiseWarning, match="mask 'rows'"):
        lines, calibration = im.denoise(noisy, "tv", return_calibration=True, **options)
    assert calibration.settings["mask"] == "rows"
    assert calibration.settings["noise_correlation"]["structured_axes"] == [1]
    gain = psnr(clean, lines, data_range=1) - psnr(clean, pixel, data_range=1)
    assert gain >= 2.0


def test_the_noise_variance_is_estimated_across_the_lines(camera):
    """Differences along a correlated axis cancel its noise; across the lines they do not.

    Mutation: filter along every axis whatever ``line_axes`` says: the estimate falls to
    about 0.4 of the truth.
    """
    noise = line_noise(camera.shape, 5, 0.1, 0)
    truth = float(np.var(noise))
    across = im.estimate_noise_variance(camera + noise, line_axes=(1,))
    assert across == pytest.approx(truth, rel=0.15)
    assert im.estimate_noise_variance(camera + noise) < 0.6 * truth


def test_white_noise_keeps_pixel_masks_and_the_same_result(camera):
    """On white noise, ``"auto"`` is the pixel mask: identical losses, no warning."""
    noisy = camera[:128, :128] + line_noise((128, 128), 1, 0.1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StructuredNoiseWarning)
        auto = im.calibrate(noisy, "gaussian", **QUIET)
    pixel = im.calibrate(noisy, "gaussian", mask="pixel", **QUIET)
    assert np.array_equal(auto.losses, pixel.losses)
    assert auto.settings["mask"] == "pixel" and auto.settings["noise_correlation"] is not None


# --------------------------------------------------------------------------- blocks


def test_block_phases_score_every_pixel_once_and_hide_its_block_with_its_stand_in():
    """Mutation: replace only a phase's own pixels (drop the block fill in ``fill_masked``):
    the hidden region is then the centres alone."""
    image = np.random.default_rng(0).random((23, 19, 2))
    masks = grid_masks(image.shape, 4, channel_axis=2, reach=2)
    assert len(masks) == 36  # spacing 2 * 2 + 2 = 6 along y and x
    stand_ins = replacement_values(image, channel_axis=2, reach=2)
    scored = np.zeros(image.shape[:2], int)
    for mask in masks:
        masked = fill_masked(np.empty_like(image), image, mask, stand_ins)
        centres = np.zeros(image.shape[:2], bool)
        centres[mask[:2]] = True
        scored += centres
        block = ndi.binary_dilation(centres, np.ones((5, 5), bool))
        np.testing.assert_array_equal((masked != image).any(axis=2), block)
        for i, j in np.argwhere(centres):  # each pixel of a block holds its centre's stand-in
            window = masked[max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
            np.testing.assert_array_equal(window, np.broadcast_to(stand_ins[i, j], window.shape))
    np.testing.assert_array_equal(scored, 1)
    # The stand-ins are read 3 pixels away, outside the block.
    kernel = neighbour_kernel(2, "mean", reach=2)
    assert kernel.shape == (7, 7) and kernel[0, 3] == kernel[3, 6] == 0.25


@pytest.mark.parametrize("interpolation", ["mean", "random"])
@pytest.mark.parametrize("reach", [1, 2, 3])
def test_no_masked_copy_depends_on_its_blocks_even_at_the_edges(interpolation, reach):
    """Brute force: for every phase, changing any pixel of any of its blocks leaves the whole
    masked copy as it was (so no denoiser output can see it), the edge pixels included.

    Mutations (the review found both): mirrored stand-ins for blocks (a tap of a pixel d
    from the edge folds back inside its own block, onto itself when reach + 1 = 2 d), and a
    random range that leaves out only the centres.
    """
    image = np.random.default_rng(1).random((12, 13))
    masks = grid_masks(image.shape, 4, reach=reach)
    for mask in masks:
        centres = np.zeros(image.shape, bool)
        centres[mask] = True
        blocks = ndi.binary_dilation(centres, np.ones((2 * reach + 1,) * 2, bool))
        copy = fill_masked(np.empty_like(image), image, mask, replacement_values(
            image, interpolation, masks=[mask], reach=reach))
        for q in map(tuple, np.argwhere(blocks)):
            changed = image.copy()
            changed[q] += 10.0
            again = fill_masked(np.empty_like(image), changed, mask, replacement_values(
                changed, interpolation, masks=[mask], reach=reach))
            np.testing.assert_array_equal(again, copy, err_msg=f"{mask} sees {q}")


def test_torch_block_stand_ins_never_read_their_blocks_at_the_edges():
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.masking_torch import neighbour_mean_torch

    x = torch.rand(1, 1, 12, 13, dtype=torch.float64)
    for reach in (1, 2, 3):
        for i, j in [(0, 0), (1, 1), (2, 5), (11, 12), (10, 3)]:  # edges, corners, inside
            changed = x.clone()
            changed[0, 0, max(i - reach, 0):i + reach + 1, max(j - reach, 0):j + reach + 1] += 5
            assert torch.equal(neighbour_mean_torch(x, reach=reach)[0, 0, i, j],
                               neighbour_mean_torch(changed, reach=reach)[0, 0, i, j])


def test_a_block_masked_output_ignores_the_block_around_each_pixel(camera):
    """J-invariance for noise correlated within 2 pixels: change every pixel within 2 of p,
    and p's output must not move.

    Mutation: pixel phases (``reach`` dropped from ``grid_masks``): p's output then follows
    its changed neighbours.
    """
    x = camera[:64, :64] + box_noise((64, 64), 3, 0.1, 0)
    smooth = lambda image, sigma: ndi.gaussian_filter(image, sigma)  # noqa: E731
    with pytest.warns(StructuredNoiseWarning):
        before = im.denoise_invariant(x, smooth, sigma=2.0)
    changed = x.copy()
    changed[28:33, 38:43] += np.random.default_rng(2).normal(0, 1.0, (5, 5))
    with pytest.warns(StructuredNoiseWarning):
        after = im.denoise_invariant(changed, smooth, sigma=2.0)
    assert before[30, 40] == after[30, 40]
    assert not np.isclose(before[30, 43], after[30, 43])  # further out, they are seen


def test_under_noise_correlated_in_2d_the_block_loss_has_the_true_minimiser(camera):
    """The paper's claim under noise correlated along both axes, for a Gaussian's width.

    With blocks the self-supervised loss minus the noise variance tracks the true error of
    the same J-invariant outputs (within 5%) and has its minimiser; with pixel masks the
    loss is far too low at narrow widths and picks the narrowest.
    Mutation: stand-ins from the face neighbours (``reach`` dropped from
    ``replacement_values``): they carry the hidden pixel's own noise.
    """
    clean = camera[128:384, 128:384]
    truth, blocks, pixels, noise_variance = gaussian_widths_scored(
        clean, clean + box_noise(clean.shape, 3, 0.1, 0), "auto")
    assert blocks.settings["mask"] == "blocks" and blocks.settings["reach"] == 2
    assert np.argmin(blocks.losses) == np.argmin(truth) > 0
    np.testing.assert_allclose(blocks.losses - noise_variance, truth, rtol=0.05)
    assert np.argmin(pixels.losses) == 0 and pixels.losses[0] < 0.5 * noise_variance


def test_the_noise_variance_is_estimated_beyond_the_correlation(camera):
    """Mutation: keep the lag at 2 whatever ``reach`` says: the estimate falls to a third."""
    noise = box_noise(camera.shape, 3, 0.1, 0)
    truth = float(np.var(noise))
    assert im.estimate_noise_variance(camera + noise, reach=2) == pytest.approx(truth, rel=0.1)
    assert im.estimate_noise_variance(camera + noise) < 0.5 * truth


def test_auto_denoise_hides_blocks_and_beats_pixel_masks(camera):
    """On a 256 x 256 crop with noise correlated within 2 pixels both ways, TV with blocks
    gains at least 1 dB over TV with pixel masks (1.9 dB measured)."""
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean = camera[128:384, 128:384]
    noisy = clean + box_noise(clean.shape, 3, 0.1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pixel = im.denoise(noisy, "tv", mask="pixel", **QUIET)
    with pytest.warns(StructuredNoiseWarning, match="mask 'blocks'"):
        blocks, calibration = im.denoise(noisy, "tv", return_calibration=True, **QUIET)
    assert calibration.settings["noise_correlation"]["reach"] == 2
    assert psnr(clean, blocks, data_range=1) - psnr(clean, pixel, data_range=1) >= 1.0


# --------------------------------------------------------------------------- the CNN


def test_the_cnn_masker_hides_whole_rows_and_its_phases_cover_the_image():
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.cnn.masker import Masker

    masker = Masker("grid", "mean", 4, 2, (1,))
    x = torch.rand(1, 2, 12, 10)
    assert masker.n_phases == 4
    total = torch.zeros(1, 1, 12, 10)
    for masked, mask in masker.every_phase(x, torch.Generator().manual_seed(0)):
        total += mask
        rows = mask[0, 0].all(dim=1)
        assert torch.equal(rows, mask[0, 0].any(dim=1))  # hidden rows are whole
        # A hidden row's stand-ins do not depend on the row itself.
        inner = rows.nonzero()[:, 0]
        inner = inner[(inner > 0) & (inner < 11)]
        expected = 0.5 * (x[0, :, inner - 1] + x[0, :, inner + 1])
        assert torch.allclose(masked[0, :, inner], expected)
    assert torch.equal(total, torch.ones_like(total))
    random_mask = Masker("random", "random", 2, 2, (1,)).sample(x, torch.Generator())
    assert torch.equal(random_mask[0, 0].all(dim=1), random_mask[0, 0].any(dim=1))


def test_a_line_model_predicts_invariantly_and_keeps_its_lines(camera, tmp_path):
    """Trained with whole-row masks: its default prediction ignores each row's own values.

    Mutation: predict with a direct pass by default: changing a row moves its output.
    """
    pytest.importorskip("torch")
    x = (camera[:64, :64] + line_noise((64, 64), 5, 0.1, 0)).astype(np.float32)
    with pytest.warns(StructuredNoiseWarning):
        model = im.train(x, "dncnn", steps=2, val_fraction=0.0, progress=False,
                         model_kwargs={"depth": 3, "features": 8})
    assert model.line_axes == (1,)
    changed = x.copy()
    changed[20] += 1.0
    assert np.allclose(model.predict(x)[20], model.predict(changed)[20], atol=1e-6)
    path = model.save(tmp_path / "lines.pt")
    assert im.load_model(path).line_axes == (1,)
    with pytest.raises(ValueError, match="hides whole lines"):
        model.export_bioimageio(tmp_path / "lines.zip", sample=x, authors=["A. Person"])


def test_denoising_with_a_cnn_keeps_the_line_model_invariant(camera):
    """``image.denoise(x, "dncnn")`` trains with whole rows hidden and returns the model's
    J-invariant prediction, not its direct pass.

    Mutation: let ``denoise_cnn`` default to a direct pass (``invariant=False``).
    """
    pytest.importorskip("torch")
    x = (camera[:64, :64] + line_noise((64, 64), 5, 0.1, 0)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        denoised, model = im.denoise(x, "dncnn", steps=2, val_fraction=0.0, progress=False,
                                     fallback=False, return_calibration=True,
                                     model_kwargs={"depth": 3, "features": 8})
    assert model.line_axes == (1,)
    invariant = model.predict(x, invariant=True, augment=True)
    np.testing.assert_allclose(denoised, invariant, atol=1e-6)
    assert not np.allclose(denoised, model.predict(x, invariant=False, augment=True),
                           atol=1e-3)


def test_the_cnn_masker_hides_blocks_with_their_centres_stand_ins():
    """Mutation: hide the centres only (no ``_hide_blocks_torch``): the hidden region shrinks."""
    torch = pytest.importorskip("torch")
    from sc_noise2self.image.cnn.masker import Masker
    from sc_noise2self.image.masking_torch import neighbour_mean_torch

    masker = Masker("grid", "mean", 4, 2, (), 2)
    assert masker.n_phases == 36
    x = torch.rand(1, 2, 20, 17)
    stand_ins = neighbour_mean_torch(x, "mean", (), 2)
    total = torch.zeros(1, 1, 20, 17)
    for masked, mask in masker.every_phase(x, torch.Generator().manual_seed(0)):
        total += mask
        block = torch.nn.functional.max_pool2d(mask.float(), 5, 1, 2) > 0
        assert torch.equal((masked != x).any(dim=1, keepdim=True), block)
        for i, j in mask[0, 0].nonzero():
            window = masked[0, :, max(i - 2, 0):i + 3, max(j - 2, 0):j + 3]
            assert torch.allclose(window, stand_ins[0, :, i, j, None, None].expand_as(window))
    assert torch.equal(total, torch.ones_like(total))
    with pytest.raises(ValueError, match="need masking='grid'"):
        Masker("random", "random", 5, 2, (), 1)


def test_a_block_model_predicts_invariantly_and_keeps_its_blocks(camera, tmp_path):
    """Trained with blocks: its default prediction at p ignores every pixel within 2 of p.

    Mutation: predict with a direct pass by default (``hides_structure`` ignoring blocks).
    """
    pytest.importorskip("torch")
    x = (camera[:64, :64] + box_noise((64, 64), 3, 0.1, 0)).astype(np.float32)
    with pytest.warns(StructuredNoiseWarning, match="mask 'blocks'"):
        model = im.train(x, "dncnn", steps=2, val_fraction=0.0, progress=False,
                         model_kwargs={"depth": 3, "features": 8})
    assert model.reach == 2 and model.line_axes == () and model.hides_structure
    changed = x.copy()
    changed[28:33, 28:33] += 1.0
    assert np.allclose(model.predict(x)[30, 30], model.predict(changed)[30, 30], atol=1e-6)
    assert im.load_model(model.save(tmp_path / "blocks.pt")).reach == 2
    with pytest.raises(ValueError, match="hides blocks"):
        model.export_bioimageio(tmp_path / "blocks.zip", sample=x, authors=["A. Person"])


def test_the_papers_random_masking_keeps_pixels_under_2d_noise_with_a_warning(camera):
    """Blocks need grid masking; chosen by the detector (not asked for), the paper's random
    masking still trains, on pixels, and says so (review: it raised after blocks came in).

    Mutation: pass the detector's reach to the Masker whatever the masking: it raises.
    """
    pytest.importorskip("torch")
    x = (camera[:64, :64] + box_noise((64, 64), 3, 0.1, 0)).astype(np.float32)
    with pytest.warns(StructuredNoiseWarning, match="cannot hide blocks"):
        model = im.train(x, "dncnn", steps=1, val_fraction=0.0, progress=False,
                         masking="random", model_kwargs={"depth": 3, "features": 8})
    assert model.reach == 0
