"""A learnable, offline, generated image-classification set for smoke runs.

Each of the 10 classes is a distinct shape drawn in a class-typical colour on a
textured background, with random position, size, colour jitter and noise. A
small network learns it within a few epochs, so a demo run shows accuracy
rising without any download. Class names describe the shapes.
"""

import numpy as np

CLASS_NAMES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "h_stripes",
    "v_stripes",
    "checker",
    "diagonal",
    "dots",
)


def _hsv_to_rgb(h, s, v):
    i = np.floor(h * 6) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.array(table[int(i)], dtype=np.float32)


def _shape_mask(label, yy, xx, cy, cx, r, rng):
    dy, dx = yy - cy, xx - cx
    if label == 0:  # disc
        return dy**2 + dx**2 <= r**2
    if label == 1:  # square
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if label == 2:  # upward triangle
        return (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if label == 3:  # cross
        w = max(1.5, r * 0.3)
        return ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    if label == 4:  # ring
        d = np.sqrt(dy**2 + dx**2)
        return (d <= r) & (d >= r * 0.55)
    period = rng.integers(4, 7)
    if label == 5:  # horizontal stripes
        return (np.abs(dy) <= r * 1.2) & (np.abs(dx) <= r * 1.2) & ((yy // (period // 2)) % 2 == 0)
    if label == 6:  # vertical stripes
        return (np.abs(dy) <= r * 1.2) & (np.abs(dx) <= r * 1.2) & ((xx // (period // 2)) % 2 == 0)
    if label == 7:  # checkerboard
        return (np.abs(dy) <= r * 1.2) & (np.abs(dx) <= r * 1.2) & (((yy // 3) + (xx // 3)) % 2 == 0)
    if label == 8:  # diagonal bar
        return (np.abs(dy - dx) <= max(1.5, r * 0.35)) & (np.abs(dy) <= r * 1.1)
    # dots
    return ((yy % period) < 2) & ((xx % period) < 2) & (np.abs(dy) <= r * 1.3) & (np.abs(dx) <= r * 1.3)


def generate(num_examples, seed=0, image_size=32, num_classes=10):
    """Generates a class-balanced set of images and labels.

    Args:
      num_examples: number of images.
      seed: integer seed; the same seed gives the same images.
      image_size: height and width.
      num_classes: at most 10.

    Returns:
      (images uint8 [N, S, S, 3], labels int32 [N]).
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}]")
    rng = np.random.default_rng(seed)
    labels = (np.arange(num_examples) % num_classes).astype(np.int32)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    for n, label in enumerate(labels):
        bg = _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.2, 0.9))
        img = np.broadcast_to(bg, (image_size, image_size, 3)).copy()
        img += rng.normal(0, 0.06, img.shape).astype(np.float32)  # background texture
        hue = (label / num_classes + rng.normal(0, 0.04)) % 1.0
        fg = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
        r = rng.uniform(image_size * 0.2, image_size * 0.33)
        cy, cx = rng.uniform(r, image_size - r, size=2)
        mask = _shape_mask(int(label), yy, xx, cy, cx, r, rng)
        img[mask] = fg + rng.normal(0, 0.04, (int(mask.sum()), 3))
        images[n] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return images, labels
