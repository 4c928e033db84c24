"""Image transforms used by the tasks, in pure TensorFlow (graph-safe).

Each function works on float32 images in [0, 1] with shape [..., H, W, 3] and
is tested against an independent oracle (numpy, scipy, scikit-image).
"""

import itertools
import math

import numpy as np
import tensorflow as tf

# ITU-R 601 luma, as the reference code's grey input.
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)

# scikit-image's sRGB -> XYZ matrix and D65 (2°) white point.
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float32,
)
_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def to_grey(images):
    """Grey image replicated into 3 channels (0.2989 R + 0.5870 G + 0.1140 B)."""
    grey = tf.tensordot(images, tf.constant(GREY_WEIGHTS, images.dtype), axes=[[-1], [0]])
    return tf.repeat(grey[..., None], 3, axis=-1)


def rgb_to_lab(images):
    """sRGB in [0, 1] -> CIELAB (D65), the same formula as `skimage.color.rgb2lab`.

    Returns:
      float32 [..., 3] with L in [0, 100] and a, b roughly in [-128, 127].
    """
    rgb = tf.cast(images, tf.float32)
    linear = tf.where(rgb > 0.04045, tf.pow((rgb + 0.055) / 1.055, 2.4), rgb / 12.92)
    xyz = tf.tensordot(linear, tf.constant(_XYZ_FROM_RGB.T), axes=[[-1], [0]])
    xyz = xyz / tf.constant(_D65)
    f = tf.where(xyz > 0.008856, tf.pow(tf.maximum(xyz, 1e-12), 1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def quantize_ab(lab, num_bins=32):
    """Bins of the a and b channels, the reference's (value + 128) // (256 / bins).

    Returns:
      int32 [..., 2] in [0, num_bins).
    """
    width = 256.0 / num_bins
    bins = tf.floor((lab[..., 1:] + 128.0) / width)
    return tf.cast(tf.clip_by_value(bins, 0, num_bins - 1), tf.int32)


def gaussian_kernel_1d(sigma, truncate=4.0):
    """Normalised 1-D Gaussian taps with scipy's radius rule int(truncate*sigma+0.5)."""
    radius = max(1, int(truncate * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def gaussian_blur(images, sigma):
    """Separable Gaussian blur with symmetric edge padding.

    Equals `scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect")`.

    Args:
      images: float32 [B, H, W, C].
      sigma: standard deviation in pixels (a Python float).

    Returns:
      Blurred images of the same shape.
    """
    taps = gaussian_kernel_1d(sigma)
    radius = len(taps) // 2
    channels = images.shape[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    kernel_h = tf.constant(np.tile(taps[:, None, None, None], (1, 1, channels, 1)), images.dtype)
    kernel_w = tf.constant(np.tile(taps[None, :, None, None], (1, 1, channels, 1)), images.dtype)
    out = tf.nn.depthwise_conv2d(padded, kernel_h, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, kernel_w, [1, 1, 1, 1], "VALID")


def rotate90(images, k):
    """Rotates each image of [B, H, W, C] counter-clockwise by k[b] * 90 degrees.

    Same convention as `np.rot90(image, k, axes=(0, 1))`. Square images only.
    """
    stacked = tf.stack([tf.image.rot90(images, i) for i in range(4)], axis=1)  # [B, 4, H, W, C]
    return tf.gather(stacked, k, axis=1, batch_dims=1)


PERMUTATIONS_3 = np.array(list(itertools.permutations(range(3))), dtype=np.int32)
PERMUTATIONS_4 = np.array(list(itertools.permutations(range(4))), dtype=np.int32)


def permute_channels(images, index):
    """Reorders the RGB channels of each image by permutation PERMUTATIONS_3[index[b]]."""
    perms = tf.gather(tf.constant(PERMUTATIONS_3), index)  # [B, 3]
    return tf.gather(images, perms, axis=-1, batch_dims=1)


def shuffle_tiles(images, index, grid=2):
    """Rearranges each image's grid x grid tiles by PERMUTATIONS_4[index[b]].

    Tile t of the output is tile perm[t] of the input, tiles numbered row-major.
    """
    if grid != 2:
        raise ValueError("only a 2x2 jigsaw is supported")
    h, w = images.shape[1], images.shape[2]
    th, tw = h // grid, w // grid
    tiles = tf.stack(
        [images[:, r * th : (r + 1) * th, c * tw : (c + 1) * tw] for r in range(grid) for c in range(grid)],
        axis=1,
    )  # [B, 4, th, tw, C]
    perms = tf.gather(tf.constant(PERMUTATIONS_4), index)
    tiles = tf.gather(tiles, perms, axis=1, batch_dims=1)
    rows = [tf.concat([tiles[:, r * grid + c] for c in range(grid)], axis=2) for r in range(grid)]
    return tf.concat(rows, axis=1)


def central_box(size, patch):
    """Start and end of a centred patch along one axis (12:20 for 32 and 8)."""
    start = int(math.floor((size - patch) / 2))
    return start, start + patch
