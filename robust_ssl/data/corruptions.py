"""The 19 CIFAR-10-C corruptions, re-implemented with numpy, scipy and Pillow.

`corrupt(images, name, severity, seed)` applies one corruption of Hendrycks &
Dietterich (ICLR 2019) at one of its five CIFAR severities to a batch of 32x32
RGB uint8 images, with the parameters of their CIFAR generator (`make_cifar_c.py`
in github.com/hendrycks/robustness). It builds CIFAR-10-C-style test sets from
any 32x32 dataset (`write_corrupted_set`, `tools/make_cifar10c.py`) and a
meta-validation stream of corrupted held-out training images
(`corrupted_holdout`).

Randomness: every image draws from its own `numpy.random.Generator`, seeded by
(seed, corruption, index of the image); no global RNG is touched. Hence

- the same seed gives the same images, whatever the batching
  (`corrupt(x, ..., start_index=k)[i]` depends only on `x[i]` and `k + i`);
- an image gets the same random draws at every severity (common random
  numbers), so the five severities of one image differ by the parameters only.
  The original drew from one global stream; each severity's distribution is the
  same, only the correlation across severities differs.

Where this implementation differs from the original generator, and why (the
original needs ImageMagick, OpenCV and six frost photographs):

=================  ==========================================================
corruption         difference to `make_cifar_c.py`
=================  ==========================================================
gaussian_noise,    none (same formulas; float output truncated to uint8 as
shot_noise,        the original's `np.uint8(...)`)
speckle_noise,
contrast
impulse_noise      none in distribution: every value is flipped with
                   probability `amount`, to salt or pepper 50/50, as
                   scikit-image's `random_noise(mode="s&p")`; drawn here
                   directly (no skimage dependency)
gaussian_blur      none: skimage's `gaussian` is scipy's `gaussian_filter`
                   (mode "nearest", truncate 4), called directly
glass_blur         none in effect. Note what the original does: its "swap"
                   `x[h, w], x[h', w'] = x[h', w'], x[h, w]` acts on numpy
                   pixel views and copies (h', w') into (h, w) instead of
                   swapping, and `randint(-1, 1)` gives offsets in {-1, 0}
                   only; so each pass moves every pixel of rows/columns 2..31
                   by (0 or -1, 0 or -1) from the image before the pass. That
                   behaviour is reproduced (vectorised), not the comment's
defocus_blur       none in effect: same anti-aliased disk kernel; OpenCV's
                   `GaussianBlur`/`filter2D` replaced by scipy correlation
                   with the same reflect-101 border
motion_blur        ImageMagick's `MotionBlurImage` re-implemented: the same
                   one-sided Gaussian kernel of width 2*ceil(radius)+1, the
                   same integer offsets along the angle, edge-replicated
                   border, rounded to uint8 (ImageMagick rounds when it writes
                   the PNG)
zoom_blur          none (scipy `zoom`, order 1, same crops)
snow               the snow layer's motion blur as motion_blur above; the
                   grey value is OpenCV's (0.299, 0.587, 0.114) weighting
frost              the six frost photographs are replaced by five procedural
                   frost textures (ridged multi-scale noise veins, feathery
                   dendrites and sparkle, tinted blue-white; mean about
                   0.54, std 0.15, see `frost_textures`), made once from a fixed seed as fixed
                   files would be; as in the original, each image takes one of
                   the five at random and a random 32x32 crop, and the blend
                   weights are the original's. Distortion magnitudes follow
                   the textures' statistics, which only approximate the photos
fog                none (diamond-square plasma fractal of the same size, decay
                   and noise amplitude)
brightness,        none in effect: HSV conversion by matplotlib instead of
saturate           scikit-image (same formulas; tests compare the two)
elastic_transform  OpenCV's `getAffineTransform`/`warpAffine` replaced by a
                   least-squares affine solve and scipy bilinear sampling with
                   reflect-101 border (OpenCV quantises sample positions to
                   1/32 px); elastic field as the original
pixelate,          none: the same Pillow calls (BOX resampling; JPEG at the
jpeg_compression   same qualities)
spatter            OpenCV steps re-implemented: Canny (Sobel 3x3, L1
                   magnitude, non-maximum suppression, hysteresis 50/150),
                   exact Euclidean distance instead of OpenCV's 5x5-mask
                   approximation (the distance is truncated at 20 and blurred
                   right after), histogram equalisation, 3x3 box blurs and the
                   emboss filter with OpenCV's rounding and reflect-101 border;
                   values above 1 of the liquid layer are clipped before the
                   uint8 cast (the original wraps them, which is rare), and an
                   image without droplets is left as is (the original divides
                   by zero there)
=================  ==========================================================
"""

import functools
import io
import os
import sys
import zlib

import numpy as np
from scipy import ndimage

from robust_ssl import rundir
from robust_ssl.data.cifar10c import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

__all__ = [
    "ALL_CORRUPTIONS",
    "BENCHMARK_CORRUPTIONS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "IMAGE_SHAPE",
    "SEVERITIES",
    "corrupt",
    "corrupted_holdout",
    "frost_textures",
    "load_clean_images",
    "write_corrupted_set",
]

IMAGE_SHAPE = (32, 32, 3)
_SIZE = 32


# --------------------------------------------------------------------------- helpers
def _image_rngs(seed, name, count, start_index):
    """One Generator per image, keyed by (seed, corruption, image index)."""
    key = zlib.crc32(name.encode())  # stable across processes, unlike hash()
    return [
        np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key, int(start_index) + i)))
        for i in range(count)
    ]


def _unit(images):
    """uint8 [0, 255] -> float64 [0, 1], as the original's `np.array(x) / 255.`."""
    return images.astype(np.float64) / 255.0


def _blur(x, sigma, mode="nearest", truncate=4.0):
    """skimage.filters.gaussian over the two spatial axes of [N, H, W(, C)]."""
    sigmas = (0, sigma, sigma) + (0,) * (x.ndim - 3)
    return ndimage.gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def _zoom_matrix(size_in, factor):
    """scipy.ndimage.zoom(order=1) along one axis, as a [size_out, size_in] matrix.

    scipy maps output index i to input coordinate i * (in - 1) / (out - 1) with
    out = round(in * factor) and interpolates linearly; as a matrix the zoom of
    a whole batch is two small matrix products instead of a generic N-d spline.
    """
    size_out = int(round(size_in * factor))
    coords = np.arange(size_out) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    lo = np.minimum(np.floor(coords).astype(int), size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = coords - lo
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), lo), 1 - frac)
    np.add.at(matrix, (np.arange(size_out), hi), frac)
    return matrix


def _clipped_zoom(x, factor):
    """Zooms the centre of [N, H, W, C] by `factor` and crops back to H x W.

    Same result as the original's scipy `zoom(order=1)` of the centre crop.
    """
    h = x.shape[1]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    matrix = _zoom_matrix(crop, factor)
    trim = (matrix.shape[0] - h) // 2
    matrix = matrix[trim : trim + h].astype(x.dtype)
    centre = np.moveaxis(x[:, top : top + crop, top : top + crop], 3, 1)  # [N, C, crop, crop]
    return np.moveaxis(matrix @ centre @ matrix.T, 1, 3)


def _motion_kernel(radius, sigma, angle_degrees):
    """ImageMagick's MotionBlurImage kernel: weights and integer (dy, dx) offsets.

    ImageMagick blurs along one direction only: output(x) = sum_i w_i
    input(x + offset_i), i = 0 .. 2*ceil(radius), with w_i a half Gaussian of
    standard deviation `sigma` starting at the pixel itself.
    """
    width = int(2 * np.ceil(radius) + 1)
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i**2) / (2.0 * max(sigma, 1e-12) ** 2))
    weights /= weights.sum()
    angle = np.deg2rad(angle_degrees)
    dx = np.ceil(i * np.cos(angle) - 0.5).astype(int)
    dy = np.ceil(i * np.sin(angle) - 0.5).astype(int)
    return weights, dy, dx


def _motion_blur_image(image, radius, sigma, angle_degrees):
    """Motion blur of one [H, W] or [H, W, C] image with edge-replicated border."""
    weights, dys, dxs = _motion_kernel(radius, sigma, angle_degrees)
    h, w = image.shape[:2]
    rows, cols = np.arange(h), np.arange(w)
    out = np.zeros(image.shape, np.float64)
    for weight, dy, dx in zip(weights, dys, dxs):
        r = np.clip(rows + dy, 0, h - 1)
        c = np.clip(cols + dx, 0, w - 1)
        out += weight * image[r[:, None], c[None, :]]
    return out


def _rgb_to_hsv(x):
    from matplotlib.colors import rgb_to_hsv

    return rgb_to_hsv(x)


def _hsv_to_rgb(x):
    from matplotlib.colors import hsv_to_rgb

    return hsv_to_rgb(x)


def _per_image(fn, images, rngs):
    return np.stack([fn(image, rng) for image, rng in zip(images, rngs)])


# --------------------------------------------------------------------------- noise
def _gaussian_noise(images, severity, rngs):
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    noise = np.stack([rng.normal(size=IMAGE_SHAPE) for rng in rngs])
    return np.clip(_unit(images) + c * noise, 0, 1) * 255


def _shot_noise(images, severity, rngs):
    c = (500, 250, 100, 75, 50)[severity - 1]
    x = _unit(images)
    counts = np.stack([rng.poisson(xi * c) for xi, rng in zip(x, rngs)])
    return np.clip(counts / c, 0, 1) * 255


def _impulse_noise(images, severity, rngs):
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    x = _unit(images)
    # Per value: flipped with probability `amount`, then salt or pepper 50/50.
    draws = np.stack([rng.random((2, *IMAGE_SHAPE)) for rng in rngs])
    flipped, salted = draws[:, 0] < amount, draws[:, 1] < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return np.clip(x, 0, 1) * 255


def _speckle_noise(images, severity, rngs):
    c = (0.06, 0.1, 0.12, 0.16, 0.2)[severity - 1]
    x = _unit(images)
    noise = np.stack([rng.normal(size=IMAGE_SHAPE) for rng in rngs])
    return np.clip(x + x * c * noise, 0, 1) * 255


# --------------------------------------------------------------------------- blur
def _gaussian_blur(images, severity, rngs):
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    return np.clip(_blur(_unit(images), sigma), 0, 1) * 255


def _glass_blur(images, severity, rngs):
    sigma, delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[
        severity - 1
    ]
    x = (_blur(_unit(images), sigma) * 255).astype(np.uint8)  # truncates, as the original
    # The original visits h, w = 31..2 (descending) and means to swap pixel
    # (h, w) with (h + dy, w + dx), dx, dy = randint(-1, 1) in {-1, 0}. Its
    # tuple swap on numpy pixel views copies instead: (h, w) takes the value of
    # (h + dy, w + dx) and that pixel keeps its own. The source is always a
    # pixel not yet visited in this pass, so one pass is a gather from the image
    # before the pass. We reproduce what the original does.
    span = np.arange(_SIZE - delta, delta, -1)
    shifts = np.stack(
        [rng.integers(-delta, delta, size=(iterations, len(span), len(span), 2)) for rng in rngs]
    )
    batch = np.arange(len(x))[:, None, None]
    rows, cols = span[None, :, None], span[None, None, :]
    lo, hi = span.min(), span.max() + 1
    for it in range(iterations):
        dx, dy = shifts[:, it, ..., 0], shifts[:, it, ..., 1]
        x[:, lo:hi, lo:hi] = x[batch, rows + dy, cols + dx][:, ::-1, ::-1]
    return np.clip(_blur(x / 255.0, sigma), 0, 1) * 255


def _defocus_kernel(radius, alias_blur):
    """The original's anti-aliased disk: a binary disk, Gaussian-smoothed 3x3."""
    half = 8 if radius <= 8 else int(np.ceil(radius))
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - ksize // 2
    g = np.exp(-(t**2) / (2.0 * alias_blur**2))
    g /= g.sum()
    kernel = ndimage.correlate1d(disk, g, axis=0, mode="mirror")
    kernel = ndimage.correlate1d(kernel, g, axis=1, mode="mirror")
    # Only the disk and its one-pixel halo are non-zero: crop the zeros away
    # (same result, far fewer multiplications).
    rows, cols = np.nonzero(kernel.any(axis=1))[0], np.nonzero(kernel.any(axis=0))[0]
    return kernel[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _defocus_blur(images, severity, rngs):
    radius, alias_blur = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    kernel = _defocus_kernel(radius, alias_blur)
    out = ndimage.correlate(_unit(images), kernel[None, :, :, None], mode="mirror")  # reflect-101
    return np.clip(out, 0, 1) * 255


def _motion_blur(images, severity, rngs):
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    out = np.stack(
        [
            _motion_blur_image(image.astype(np.float64), radius, sigma, rng.uniform(-45, 45))
            for image, rng in zip(images, rngs)
        ]
    )
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _zoom_blur(images, severity, rngs):
    stop = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    factors = np.arange(1, stop, 0.01)
    x = _unit(images).astype(np.float32)
    total = np.zeros_like(x)
    for factor in factors:
        total += _clipped_zoom(x, factor)
    return np.clip((x + total) / (len(factors) + 1), 0, 1) * 255


# --------------------------------------------------------------------------- weather
def _snow(images, severity, rngs):
    loc, scale, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    x = images.astype(np.float32) / 255.0
    layers = np.stack([rng.normal(loc, scale, size=(_SIZE, _SIZE)) for rng in rngs])
    layers = _clipped_zoom(layers[..., None], zoom)[..., 0]
    layers[layers < threshold] = 0
    layers = (np.clip(layers, 0, 1) * 255).astype(np.uint8)
    # Flakes streak downwards-ish: angle in (-135, -45) degrees.
    blurred = np.stack(
        [
            _motion_blur_image(layer.astype(np.float64), radius, sigma, rng.uniform(-135, -45))
            for layer, rng in zip(layers, rngs)
        ]
    )
    snow = (np.clip(np.round(blurred), 0, 255) / 255.0)[..., None]
    grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    x = keep * x + (1 - keep) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + snow + snow[:, ::-1, ::-1], 0, 1) * 255


# Frost textures: the original blends with crops of frost photographs (not
# redistributable here, and an image download is what we avoid). These are made
# procedurally, once, from a fixed seed, so they act as fixed files would.
_FROST_SEED = 20190101
_FROST_SHAPES = ((140, 200), (160, 160), (128, 192), (180, 150), (150, 170))


def _band_noise(rng, shape, sigma):
    """White noise low-passed at scale `sigma`, normalised to zero mean, unit std."""
    n = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (n - n.mean()) / n.std()


def _frost_texture(rng, shape):
    h, w = shape
    # Ridged multi-scale noise: 1 - |n| peaks along the zero lines of smooth
    # noise, which gives the thin bright vein network of ice crystals.
    veins = np.zeros(shape)
    for sigma, weight in ((6.0, 0.5), (3.0, 0.3), (1.5, 0.2)):
        veins += weight * np.clip(1.0 - np.abs(_band_noise(rng, shape, sigma)) / 0.6, 0, 1) ** 3
    # Feathery dendrites: short random walks that branch, drawn additively.
    dendrites = np.zeros(shape)
    for _ in range(h * w // 250):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        for step in range(int(rng.integers(6, 20))):
            angle += rng.normal(0, 0.35)
            y, x = y + np.sin(angle), x + np.cos(angle)
            dendrites[int(y) % h, int(x) % w] += 1.0
            if step % 4 == 3:  # a side branch
                side = angle + rng.choice((-1, 1)) * rng.uniform(0.6, 1.2)
                for k in range(1, 4):
                    dendrites[int(y + k * np.sin(side)) % h, int(x + k * np.cos(side)) % w] += 0.6
    dendrites = np.clip(ndimage.gaussian_filter(dendrites, 0.6, mode="wrap") * 2.0, 0, 1)
    base = 0.5 + 0.5 * np.tanh(_band_noise(rng, shape, 12.0))  # uneven frosting, haze
    sparkle = (rng.random(shape) > 0.995).astype(np.float64)
    sparkle = np.clip(ndimage.gaussian_filter(sparkle, 0.7, mode="wrap") * 4.0, 0, 1)
    value = np.clip(0.32 + 0.3 * base + 0.55 * veins + 0.35 * dendrites + 0.4 * sparkle, 0, 1)
    tint = np.array([0.86, 0.93, 1.0])  # cold blue-white, as frost photographs
    return np.clip(value[..., None] * tint * 255.0, 0, 255)


@functools.lru_cache(maxsize=1)
def frost_textures():
    """The five procedural frost textures that replace the original's photographs.

    Returns:
      A tuple of five float64 RGB arrays in [0, 255], each at least 128 px per
      side (the original resizes its photographs by 0.2 before cropping 32x32).
      They are the same in every process (fixed seed).
    """
    rng = np.random.default_rng(_FROST_SEED)
    return tuple(_frost_texture(rng, shape) for shape in _FROST_SHAPES)


def _frost(images, severity, rngs):
    keep, amount = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    textures = frost_textures()

    def crop(rng):
        texture = textures[int(rng.integers(len(textures)))]
        top = int(rng.integers(0, texture.shape[0] - _SIZE))
        left = int(rng.integers(0, texture.shape[1] - _SIZE))
        return texture[top : top + _SIZE, left : left + _SIZE]

    frost = np.stack([crop(rng) for rng in rngs])
    return np.clip(keep * images.astype(np.float64) + amount * frost, 0, 255)


def _plasma_fractal(rng, size=_SIZE, decay=3.0):
    """Diamond-square height map in [0, 1] (the original's fog texture).

    The original perturbs each new point by `wibble * U(-wibble, wibble)`, i.e.
    with amplitude wibble², starting from wibble = 100 and dividing by `decay`
    per level; kept as is.
    """
    grid = np.zeros((size, size))
    wibble = 100.0
    step = size
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        # Square step: centre of each square = mean of its four (wrapped) corners.
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        grid[half:size:step, half:size:step] = around / 4 + wibble * rng.uniform(
            -wibble, wibble, around.shape
        )
        # Diamond step: edge midpoints = mean of two corners and two centres.
        centres = grid[half:size:step, half:size:step]
        left_right = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = left_right / 4 + wibble * rng.uniform(
            -wibble, wibble, left_right.shape
        )
        up_down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = up_down / 4 + wibble * rng.uniform(-wibble, wibble, up_down.shape)
        step = half
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def _fog(images, severity, rngs):
    amount, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    x = _unit(images)
    top = x.max(axis=(1, 2, 3), keepdims=True)
    fog = np.stack([_plasma_fractal(rng, decay=decay) for rng in rngs])[..., None]
    return np.clip((x + amount * fog) * top / (top + amount), 0, 1) * 255


# --------------------------------------------------------------------------- digital
def _brightness(images, severity, rngs):
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    hsv = _rgb_to_hsv(_unit(images))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(_hsv_to_rgb(hsv), 0, 1) * 255


def _saturate(images, severity, rngs):
    scale, shift = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))[severity - 1]
    hsv = _rgb_to_hsv(_unit(images))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return np.clip(_hsv_to_rgb(hsv), 0, 1) * 255


def _contrast(images, severity, rngs):
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = _unit(images)
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _jpeg_compression(images, severity, rngs):
    from PIL import Image

    quality = (80, 65, 58, 50, 40)[severity - 1]

    def encode_decode(image, rng):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return _per_image(encode_decode, images, rngs)


def _pixelate(images, severity, rngs):
    from PIL import Image

    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    small = int(_SIZE * c)

    def down_up(image, rng):
        pil = Image.fromarray(image).resize((small, small), Image.BOX)
        return np.asarray(pil.resize((_SIZE, _SIZE), Image.BOX))

    return _per_image(down_up, images, rngs)


def _affine_from_points(src, dst):
    """2x3 matrix A with A @ [x, y, 1] = dst for each of three (x, y) pairs."""
    design = np.concatenate([src, np.ones((3, 1))], axis=1)
    return np.linalg.solve(design, dst).T


def _elastic_transform(images, severity, rngs):
    s = float(_SIZE)
    alpha, sigma, jitter = (
        (s * 0, s * 0, s * 0.08),
        (s * 0.05, s * 0.2, s * 0.07),
        (s * 0.08, s * 0.06, s * 0.06),
        (s * 0.1, s * 0.04, s * 0.05),
        (s * 0.1, s * 0.03, s * 0.03),
    )[severity - 1]
    x = images.astype(np.float32) / 255.0
    centre, side = _SIZE // 2, _SIZE // 3
    # Three (x, y) anchor points around the centre, as the original.
    anchors = np.array(
        [[centre + side, centre + side], [centre + side, centre - side], [centre - side, centre - side]],
        np.float64,
    )
    rows, cols = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float64)
    out = np.empty_like(x)
    for n, (image, rng) in enumerate(zip(x, rngs)):
        moved = anchors + rng.uniform(-jitter, jitter, size=anchors.shape)
        # warpAffine(M) samples the source at M^-1 (destination pixel).
        inverse = _affine_from_points(moved, anchors)
        src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
        src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]
        warped = np.stack(
            [
                ndimage.map_coordinates(image[..., ch], (src_y, src_x), order=1, mode="mirror")
                for ch in range(3)
            ],
            axis=-1,
        )
        # Elastic field: smoothed uniform noise, `alpha` px at most.
        dx = ndimage.gaussian_filter(
            rng.uniform(-1, 1, size=(_SIZE, _SIZE)), sigma, mode="reflect", truncate=3
        )
        dy = ndimage.gaussian_filter(
            rng.uniform(-1, 1, size=(_SIZE, _SIZE)), sigma, mode="reflect", truncate=3
        )
        coords = (rows + alpha * dy, cols + alpha * dx)
        out[n] = np.stack(
            [ndimage.map_coordinates(warped[..., ch], coords, order=1, mode="reflect") for ch in range(3)],
            axis=-1,
        )
    return np.clip(out, 0, 1) * 255


# --------------------------------------------------------------------------- spatter
def _box3(x):
    """OpenCV's cv2.blur(x, (3, 3)): 3x3 mean, reflect-101 border, float."""
    return ndimage.uniform_filter(x.astype(np.float64), 3, mode="mirror")


def _canny(image, low=50.0, high=150.0):
    """OpenCV's Canny on a uint8 image: Sobel 3x3, L1 magnitude, NMS, hysteresis."""
    img = image.astype(np.float64)
    gx = ndimage.correlate(img, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float), mode="nearest")
    gy = ndimage.correlate(img, np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float), mode="nearest")
    mag = np.abs(gx) + np.abs(gy)
    m = np.pad(mag, 1)  # OpenCV pads the magnitude with zeros
    c = m[1:-1, 1:-1]
    left, right = m[1:-1, :-2], m[1:-1, 2:]
    up, down = m[:-2, 1:-1], m[2:, 1:-1]
    ax, ay = np.abs(gx), np.abs(gy)
    tan22 = np.tan(np.deg2rad(22.5))
    horizontal = ay < ax * tan22
    vertical = ay > ax / tan22
    same_sign = gx * gy >= 0
    # Diagonal neighbours along the gradient: (y-1, x-s) and (y+1, x+s).
    diag_a = np.where(same_sign, m[:-2, :-2], m[:-2, 2:])
    diag_b = np.where(same_sign, m[2:, 2:], m[2:, :-2])
    maximum = np.where(
        horizontal,
        (c > left) & (c >= right),
        np.where(vertical, (c > up) & (c >= down), (c > diag_a) & (c > diag_b)),
    )
    candidates = maximum & (mag > low)
    strong = candidates & (mag > high)
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros(image.shape, np.uint8)
    keep = np.zeros(count + 1, bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def _equalize_hist(image):
    """OpenCV's equalizeHist for uint8."""
    hist = np.bincount(image.ravel(), minlength=256)
    first = int(np.nonzero(hist)[0][0])
    total = image.size
    if hist[first] == total:
        return np.full_like(image, first)
    scale = 255.0 / (total - hist[first])
    cumulative = np.cumsum(hist)
    lut = np.clip(np.round((cumulative - hist[first]) * scale), 0, 255).astype(np.uint8)
    lut[: first + 1] = 0
    return lut[image]


def _water(x, liquid, fade):
    """The original's water branch (severities 1-3): pale turquoise droplets."""
    layer = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)
    edges = _canny(layer)
    if edges.any():
        dist = ndimage.distance_transform_edt(edges == 0)
    else:
        dist = np.full(layer.shape, 20.0)
    dist = np.minimum(dist, 20.0)
    dist = _box3(dist).astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], np.float64)
    dist = np.clip(np.round(ndimage.correlate(dist.astype(np.float64), emboss, mode="mirror")), 0, 255)
    dist = np.clip(np.round(_box3(dist)), 0, 255)
    m = layer.astype(np.float64) * dist
    peak = m.max()
    m = m / peak * fade if peak > 0 else m  # the original divides by zero here
    colour = np.array([175, 238, 238]) / 255.0
    return np.clip(x + m[..., None] * colour, 0, 1) * 255


def _mud(x, liquid, threshold, sigma):
    """The original's mud branch (severities 4-5): opaque brown blots."""
    m = ndimage.gaussian_filter((liquid > threshold).astype(np.float64), sigma, mode="nearest")
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20]) / 255.0
    return np.clip(x * (1 - m[..., None]) + colour * m[..., None], 0, 1) * 255


def _spatter(images, severity, rngs):
    loc, scale, sigma, threshold, fade, mud = (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    )[severity - 1]
    x = images.astype(np.float32) / 255.0
    out = np.empty(x.shape, np.float64)
    for n, (image, rng) in enumerate(zip(x, rngs)):
        liquid = rng.normal(loc, scale, size=(_SIZE, _SIZE))
        liquid = ndimage.gaussian_filter(liquid, sigma, mode="nearest")
        liquid[liquid < threshold] = 0
        out[n] = _mud(image, liquid, threshold, fade) if mud else _water(image, liquid, fade)
    return out


# --------------------------------------------------------------------------- registry
_IMPLEMENTATIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "spatter": _spatter,
    "saturate": _saturate,
}
assert tuple(_IMPLEMENTATIONS) == ALL_CORRUPTIONS


def _check(images, name, severity, seed):
    if name not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(ALL_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}; got {severity!r}")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError("images must be a uint8 numpy array with values 0..255")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"images must have shape [N, 32, 32, 3] (the CIFAR parameters assume 32x32 RGB); "
            f"got {images.shape}"
        )
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0; got {seed}")


def corrupt(images, name, severity, seed=0, start_index=0):
    """Applies one CIFAR-10-C corruption to a batch of images.

    Args:
      images: uint8 [N, 32, 32, 3] RGB images.
      name: one of `ALL_CORRUPTIONS` (official file names, e.g. "glass_blur").
      severity: 1..5.
      seed: non-negative integer; with `start_index`, fixes the result.
      start_index: index of `images[0]` in a larger set: image i uses the
        random stream of index `start_index + i`, so corrupting a set in
        chunks gives the same images as corrupting it at once.

    Returns:
      uint8 [N, 32, 32, 3] corrupted images (a new array).

    Raises:
      ValueError: unknown name, severity outside 1..5, wrong dtype or shape.
    """
    _check(images, name, severity, seed)
    images = np.ascontiguousarray(images)
    rngs = _image_rngs(seed, name, len(images), start_index)
    out = _IMPLEMENTATIONS[name](images, int(severity), rngs)
    if out.dtype != np.uint8:
        # The original stores np.uint8(float image in [0, 255]): truncation.
        out = np.clip(out, 0, 255).astype(np.uint8)
    return out


def _public(name):
    def apply(images, severity=1, seed=0, start_index=0):
        return corrupt(images, name, severity, seed, start_index)

    apply.__name__ = name
    apply.__doc__ = f"`corrupt(images, {name!r}, severity, seed, start_index)`."
    return apply


# name -> function(images uint8 [N,32,32,3], severity=1, seed=0, start_index=0) -> uint8.
CORRUPTIONS = {name: _public(name) for name in ALL_CORRUPTIONS}


# --------------------------------------------------------------------------- data sets
def corrupted_holdout(images, labels, corruptions=EXTRA_CORRUPTIONS, severities=SEVERITIES, seed=0):
    """Corrupted copies of held-out training images, for AutoML meta-validation.

    A leak-free alternative to the paper's CIFAR-10-C meta-validation set: the
    caller holds out some training images (and trains without them, as the
    "train_holdout" source does) and validates λ on corrupted copies of them.
    By default only the four extra corruptions are used, so that the 15
    benchmark corruptions stay unseen by the meta loss. Suggested
    meta_validation.json record: {"source": "corrupted_holdout", "holdout": N,
    "corruptions": [...], "severities": [...], "seed": seed}.

    Args:
      images: uint8 [N, 32, 32, 3] held-out training images.
      labels: [N] integer labels.
      corruptions: corruption names (default: the 4 extra ones).
      severities: severities to include (default 1..5).
      seed: seed of the corruptions' randomness.

    Returns:
      (images uint8 [C*S*N, 32, 32, 3], labels int32 [C*S*N]), ordered like the
      CIFAR-10-C files: corruption, then severity, then image.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int32)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    parts = [corrupt(images, name, s, seed) for name in corruptions for s in severities]
    if not parts:
        raise ValueError("corrupted_holdout needs at least one corruption and severity")
    return np.concatenate(parts), np.tile(labels, len(parts))


def _to_32(images):
    """Resizes uint8 images to 32x32 (area-averaging down, bilinear up) if needed."""
    if images.shape[1:3] == (_SIZE, _SIZE):
        return images
    import tensorflow as tf

    method = "area" if min(images.shape[1:3]) > _SIZE else "bilinear"
    resized = tf.image.resize(tf.convert_to_tensor(images, tf.float32), (_SIZE, _SIZE), method=method)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def load_clean_images(folder=None, tfds_name=None, split="test", data_dir=None):
    """Clean source images for `write_corrupted_set`, as 32x32 RGB uint8.

    Args:
      folder: an image folder: <folder>/<class>/<image> (labels = class index in
        alphabetical order, as keras' `image_dataset_from_directory`), or
        images directly in <folder> (label 0). If <folder>/test exists, that
        is used (the clean test set of a train/test folder).
      tfds_name: a tfds dataset name instead (e.g. "cifar100").
      split: the tfds split.
      data_dir: the tfds data_dir.

    Returns:
      (uint8 [N, 32, 32, 3], int64 [N]); other sizes are resized to 32x32.

    Raises:
      UserError: not exactly one source, or no images there.
    """
    from robust_ssl.errors import UserError

    if bool(folder) == bool(tfds_name):
        raise UserError("give exactly one of --folder=<image folder> or --tfds=<dataset name>")
    if folder:
        if os.path.isdir(os.path.join(folder, "test")):
            folder = os.path.join(folder, "test")
        from robust_ssl.data.folders import read_folder

        has_classes = os.path.isdir(folder) and any(
            os.path.isdir(os.path.join(folder, d)) for d in os.listdir(folder)
        )
        images, labels, _ = read_folder(folder, (_SIZE, _SIZE), labels="inferred" if has_classes else None)
        return images, labels.astype(np.int64)
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(tfds_name, split=split, as_supervised=True, data_dir=data_dir, shuffle_files=False)
    except Exception as e:
        raise UserError(
            f"cannot load tfds {tfds_name}:{split} ({type(e).__name__}); offline, use --folder"
        ) from None
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(_to_32(x[None])[0] if x.shape[:2] != (_SIZE, _SIZE) else x)
        labels.append(y)
    if not images:
        raise UserError(f"no images found in {tfds_name}")
    images = np.stack(images)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images, np.asarray(labels, np.int64)


def write_corrupted_set(
    images, labels, output_dir, corruptions=ALL_CORRUPTIONS, seed=0, chunk_size=500, progress=True
):
    """Writes a CIFAR-10-C-style directory of `.npy` files from clean images.

    The layout is the official one (readable by `cifar10c.load_npy_block`):
    `<corruption>.npy` uint8 [5*N, 32, 32, 3] with severities 1..5 stacked in
    order, and `labels.npy` [5*N] (the labels repeated per severity; uint8 as the
    official file when they fit, int32 otherwise). Each file is written to a
    temporary name first and renamed when complete (`rundir.atomic_path`).

    Args:
      images: uint8 [N, 32, 32, 3] clean images.
      labels: [N] integer labels.
      output_dir: directory to create or fill.
      corruptions: names to write (default all 19).
      seed: seed of the corruptions' randomness.
      chunk_size: images corrupted per call (memory bound, not results).
      progress: show a progress bar (keras.utils.Progbar) over all images.

    Returns:
      The list of written file paths.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"need the same, non-zero number of images and labels; got {len(images)}, {len(labels)}"
        )
    os.makedirs(output_dir, exist_ok=True)
    n = len(images)
    label_dtype = np.uint8 if labels.min() >= 0 and labels.max() < 256 else np.int32
    bar = None
    total = len(corruptions) * len(SEVERITIES) * n
    # A bar redrawn in place on a terminal; in a log file or a pipe, one plain
    # line per corruption (no carriage returns or colour codes).
    on_terminal = progress and sys.stdout.isatty()
    if on_terminal:
        import keras

        bar = keras.utils.Progbar(total, unit_name="image")
    written = []
    done = 0
    for name in corruptions:
        path = os.path.join(output_dir, f"{name}.npy")
        with rundir.atomic_path(path, suffix=".npy") as tmp:
            array = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(SEVERITIES) * n, *IMAGE_SHAPE)
            )
            for s_index, severity in enumerate(SEVERITIES):
                for start in range(0, n, chunk_size):
                    chunk = images[start : start + chunk_size]
                    lo = s_index * n + start
                    array[lo : lo + len(chunk)] = corrupt(chunk, name, severity, seed, start_index=start)
                    done += len(chunk)
                    if bar is not None:
                        bar.update(done)
            array.flush()
            del array
        written.append(path)
        if progress and not on_terminal:
            print(f"{name}: written ({done:,} of {total:,} images)", flush=True)
    labels_path = os.path.join(output_dir, "labels.npy")
    with rundir.atomic_path(labels_path, suffix=".npy") as tmp:
        np.save(tmp, np.tile(labels.astype(label_dtype), len(SEVERITIES)))
    written.append(labels_path)
    return written
