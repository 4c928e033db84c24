"""robust_ssl.tasks.image_ops against independent oracles (numpy, scipy, scikit-image).

Every transform is run three ways -- eagerly, inside a `tf.function` and inside
`tf.data.Dataset.map` -- and each result is compared with the oracle.
"""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from skimage.color import rgb2lab

from robust_ssl.tasks import image_ops

PERMS_3 = list(itertools.permutations(range(3)))
PERMS_4 = list(itertools.permutations(range(4)))
MODES = ("eager", "tf.function", "tf.data")


def run_three_ways(fn, *args):
    """Returns {mode: numpy result} of fn(*args) eagerly, in a tf.function and in Dataset.map."""
    args = tuple(tf.convert_to_tensor(a) for a in args)
    results = {
        "eager": fn(*args),
        "tf.function": tf.function(fn)(*args),
        "tf.data": next(iter(tf.data.Dataset.from_tensors(args).map(fn))),
    }
    return {mode: tf.nest.map_structure(np.asarray, value) for mode, value in results.items()}


def random_images(shape, seed=0):
    """Random float32 images in [0, 1] that include the extremes 0 and 1.

    The first image has pure black, white, red, green, blue and grey pixels; the
    second is all corners of the RGB cube (every channel 0 or 1).
    """
    rng = np.random.default_rng(seed)
    images = rng.random(shape).astype(np.float32)
    corners = np.array(list(itertools.product([0.0, 1.0], repeat=3)), np.float32)
    specials = np.concatenate([corners, [[0.5, 0.5, 0.5]]])
    first = images[0].reshape(-1, 3)  # a view
    first[: len(specials)] = specials
    if shape[0] > 1:
        images[1] = np.round(images[1])
    return images


# ----------------------------------------------------------------- colour
def test_rgb_to_lab_matches_skimage():
    images = random_images((3, 12, 12, 3))
    expected = np.stack([rgb2lab(image.astype(np.float64)) for image in images])
    for mode, lab in run_three_ways(image_ops.rgb_to_lab, images).items():
        assert lab.shape == images.shape, mode
        assert np.abs(lab - expected).max() < 1e-2, mode
    # The known anchors: black is L=0, white is L=100, both neutral.
    lab = run_three_ways(image_ops.rgb_to_lab, np.array([[[[0, 0, 0], [1, 1, 1]]]], np.float32))["eager"]
    np.testing.assert_allclose(lab[0, 0], [[0, 0, 0], [100, 0, 0]], atol=1e-2)


@pytest.mark.parametrize("num_bins", [32, 16])
def test_quantize_ab_matches_numpy_floor(num_bins):
    rng = np.random.default_rng(1)
    # a, b well outside [-128, 128) too, to exercise the clipping.
    lab = rng.uniform(-150, 150, (2, 8, 8, 3)).astype(np.float32)
    lab[..., 0] = rng.uniform(0, 100, (2, 8, 8))
    lab[0, 0, 0, 1:] = [-128.0, 127.999]  # the first and last bin exactly
    width = 256 // num_bins
    expected = np.clip(np.floor((lab[..., 1:] + 128) / width), 0, num_bins - 1)
    for mode, bins in run_three_ways(lambda x: image_ops.quantize_ab(x, num_bins), lab).items():
        assert bins.dtype == np.int32, mode
        assert bins.shape == (2, 8, 8, 2), mode
        np.testing.assert_array_equal(bins, expected, err_msg=mode)
    assert expected[0, 0, 0].tolist() == [0, num_bins - 1]


def test_to_grey_matches_numpy_weights():
    images = random_images((3, 6, 6, 3))
    grey = images[..., 0] * 0.2989 + images[..., 1] * 0.5870 + images[..., 2] * 0.1140
    for mode, out in run_three_ways(image_ops.to_grey, images).items():
        assert out.shape == images.shape, mode
        for c in range(3):
            np.testing.assert_allclose(out[..., c], grey, atol=1e-6, err_msg=mode)


# ------------------------------------------------------------------- blur
@pytest.mark.parametrize("sigma", [1.0, 0.7])
def test_gaussian_blur_matches_scipy(sigma):
    # Height != width catches a swapped axis.
    images = random_images((2, 12, 20, 3))
    expected = np.stack(
        [scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect") for image in images]
    )
    for mode, out in run_three_ways(lambda x: image_ops.gaussian_blur(x, sigma), images).items():
        assert out.shape == images.shape, mode
        np.testing.assert_allclose(out, expected, atol=1e-5, err_msg=mode)
    # A real blur: it changes the image a lot and lowers its variation.
    assert np.abs(expected - images).mean() > 0.05
    assert np.abs(np.diff(expected, axis=1)).mean() < 0.6 * np.abs(np.diff(images, axis=1)).mean()


@pytest.mark.parametrize("sigma, radius", [(1.0, 4), (0.7, 3), (0.1, 1)])
def test_gaussian_kernel_radius_and_normalisation(sigma, radius):
    taps = image_ops.gaussian_kernel_1d(sigma)
    assert len(taps) == 2 * radius + 1
    assert taps.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(taps, taps[::-1])
    assert np.argmax(taps) == radius


# ------------------------------------------------- rotations, permutations
def test_rotate90_matches_np_rot90():
    images = random_images((8, 10, 10, 3))
    k = np.array([0, 1, 2, 3, 3, 2, 1, 0], np.int32)
    expected = np.stack([np.rot90(image, kk, axes=(0, 1)) for image, kk in zip(images, k)])
    for mode, out in run_three_ways(image_ops.rotate90, images, k).items():
        np.testing.assert_array_equal(out, expected, err_msg=mode)


def test_permutation_tables_are_itertools_order():
    assert image_ops.PERMUTATIONS_3.tolist() == [list(p) for p in PERMS_3]
    assert image_ops.PERMUTATIONS_4.tolist() == [list(p) for p in PERMS_4]


def test_permute_channels_all_six_orders():
    images = random_images((6, 5, 5, 3))
    index = np.arange(6, dtype=np.int32)[::-1].copy()
    expected = np.stack([image[..., list(PERMS_3[i])] for image, i in zip(images, index)])
    for mode, out in run_three_ways(image_ops.permute_channels, images, index).items():
        np.testing.assert_array_equal(out, expected, err_msg=mode)
    # The identity permutation (index 0) leaves the image alone; others do not.
    assert np.array_equal(expected[5], images[5])
    assert not np.array_equal(expected[0], images[0])


def _numpy_shuffle_tiles(image, perm):
    """Output tile t = input tile perm[t], tiles numbered row-major on a 2x2 grid."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    tiles = [image[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in range(2) for c in range(2)]
    top = np.concatenate([tiles[perm[0]], tiles[perm[1]]], axis=1)
    bottom = np.concatenate([tiles[perm[2]], tiles[perm[3]]], axis=1)
    return np.concatenate([top, bottom], axis=0)


def test_numpy_tile_oracle_itself():
    image = np.arange(4 * 6).reshape(4, 6, 1)
    out = _numpy_shuffle_tiles(image, (3, 2, 1, 0))
    np.testing.assert_array_equal(out[:2, :3], image[2:, 3:])  # output tile 0 = input tile 3
    np.testing.assert_array_equal(out[2:, :3], image[:2, 3:])  # output tile 2 = input tile 1


def test_shuffle_tiles_all_24_orders():
    # Height != width catches a swapped tile axis.
    images = random_images((24, 8, 12, 3))
    index = np.roll(np.arange(24, dtype=np.int32), 5)
    expected = np.stack([_numpy_shuffle_tiles(image, PERMS_4[i]) for image, i in zip(images, index)])
    for mode, out in run_three_ways(image_ops.shuffle_tiles, images, index).items():
        assert out.shape == images.shape, mode
        np.testing.assert_array_equal(out, expected, err_msg=mode)


def test_shuffle_tiles_rejects_other_grids():
    with pytest.raises(ValueError, match="2x2"):
        image_ops.shuffle_tiles(tf.zeros([1, 6, 6, 3]), tf.zeros([1], tf.int32), grid=3)


@pytest.mark.parametrize("size, patch, box", [(32, 8, (12, 20)), (16, 8, (4, 12)), (33, 8, (12, 20))])
def test_central_box(size, patch, box):
    assert image_ops.central_box(size, patch) == box
