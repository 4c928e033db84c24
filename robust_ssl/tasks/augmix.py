"""AugMix consistency (Hendrycks et al., ICLR 2020) as an auxiliary objective.

Two AugMix views of every training image; the loss is the Jensen–Shannon
divergence among the main classifier's predictions on the clean image and on
the two views. Weighted by λ_augmix like any task (12 in the AugMix paper),
fixed or learned by the meta step; its gradient reaches the trunk and the
classifier.

A view (the AugMix paper's CIFAR settings): `width` = 3 chains, each of 1–3
operations drawn at random (depth 1–3 per chain), at severity 3, from the
operations that do not overlap the CIFAR-10-C corruptions — autocontrast,
equalize, posterize, rotate, solarize, shear x/y, translate x/y (the AugMix
paper's default; Keras' `AugMix(all_ops=False)`); the chains are mixed with
Dirichlet(1, 1, 1) weights, then with the original image by m ~ Beta(1, 1):
view = (1 − m) · image + m · Σ_i w_i chain_i.

Why not `keras.layers.AugMix` itself: it draws each chain's operations with
Python's `random` when the graph is traced (so inside `tf.data` every batch of
a run gets the same operations) and applies one augmentation to the whole
batch. Here every image gets its own chains and every draw is a stateless
function of the batch seed, so a batch stays a pure function of (seed, step)
and a resumed run sees the same views. The geometric operations go through
`keras.ops.image.affine_transform` (one per-image affine matrix per chain
slot, identity where the image drew a pixel operation); the pixel operations
follow PIL's `ImageOps` on 8-bit values, as the AugMix code does. Views are
made in `tf.data` with the other tasks' inputs, on the CPU, overlapping the
step.

Batch norm (`joint_bn`, default True): as the AugMix code, the clean image
and both views go through the network in one forward pass (the step
concatenates them with the clean batch), so batch norm normalises the three
together and its moving averages see the views. `joint_bn=False` gives the
views a forward of their own with their own batch statistics, and only the
clean forward moves the averages, as for every other task of the package.

Quantisation: PIL works on 8-bit images, so every operation of a chain ends
on integer levels 0..255; the geometric operations' bilinear resampling is
rounded back to integer levels here too, as PIL rounds its output.
"""

import math

import keras
import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.tasks.base import Task, flatten_views, loss_dtype, register_task

# The AugMix paper's operations for CIFAR-10-C (none of them is, or resembles,
# one of the 15 benchmark corruptions). Order = the op index drawn per image.
OPERATIONS = (
    "autocontrast",
    "equalize",
    "posterize",
    "rotate",
    "solarize",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
# Keras' all_ops=True adds these; they overlap CIFAR-10-C (brightness, contrast,
# …) and are never used here.
EXCLUDED_OPERATIONS = ("brightness", "color", "contrast", "sharpness")
_PIXEL_OPS = ("autocontrast", "equalize", "posterize", "solarize")
_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _uniform(seed, shape, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def _levels(seed, shape, severity):
    """AugMix's `sample_level`: uniform in [0.1, severity]."""
    return _uniform(seed, shape, 0.1, float(severity))


def _signs(seed, shape):
    return tf.where(_uniform(seed, shape) > 0.5, -1.0, 1.0)


# --------------------------------------------------------------------- pixel ops on 0..255
def autocontrast(pixels):
    """PIL `ImageOps.autocontrast` (cutoff 0) per image and channel; float 0..255 integers."""
    wide = tf.cast(pixels, tf.float64)  # PIL computes its table in double precision
    low = tf.reduce_min(wide, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(wide, axis=[1, 2], keepdims=True)
    scale = 255.0 / tf.maximum(high - low, 1.0)
    # PIL: lut[i] = int(i * scale + offset), offset = -low * scale, clipped to 0..255.
    stretched = tf.clip_by_value(tf.floor(wide * scale + (-low * scale)), 0.0, 255.0)
    return tf.cast(tf.where(high > low, stretched, wide), pixels.dtype)


def equalize(pixels):
    """PIL `ImageOps.equalize` per image and channel; float 0..255 integers."""
    batch, height, width, channels = (tf.shape(pixels)[i] for i in range(4))
    values = tf.cast(tf.reshape(tf.transpose(pixels, [0, 3, 1, 2]), [batch * channels, -1]), tf.int32)
    histogram = tf.math.bincount(values, minlength=256, maxlength=256, axis=-1)  # [B*C, 256]
    # PIL: step = (count − count of the last non-empty bin) // 255; lut[i] = (n_i + step // 2) // step,
    # n_i = pixels below value i; a step of 0 leaves the channel unchanged.
    last = tf.reduce_max(tf.where(histogram > 0, tf.range(256), -1), axis=-1)
    last_count = tf.gather(histogram, last, batch_dims=1)
    step = (height * width - last_count) // 255
    below = tf.cumsum(histogram, axis=-1, exclusive=True)
    safe = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((below + safe // 2) // safe, 255)
    mapped = tf.gather(lut, values, batch_dims=1)
    mapped = tf.where((step > 0)[:, None], mapped, values)
    mapped = tf.cast(tf.reshape(mapped, [batch, channels, height, width]), pixels.dtype)
    return tf.transpose(mapped, [0, 2, 3, 1])


def posterize(pixels, bits):
    """PIL `ImageOps.posterize`: keep the top `bits` [B] bits of each value."""
    drop = tf.cast(2.0 ** (8.0 - tf.cast(bits, tf.float32)), pixels.dtype)[:, None, None, None]
    return tf.floor(pixels / drop) * drop


def solarize(pixels, threshold):
    """PIL `ImageOps.solarize`: invert the values >= `threshold` [B]."""
    return tf.where(pixels >= tf.cast(threshold, pixels.dtype)[:, None, None, None], 255.0 - pixels, pixels)


# --------------------------------------------------------------------- geometry
def _affine_rows(op, levels, signs, height, width):
    """Per-image inverse affine maps [B, 8] (output -> input) for one geometric op.

    As the AugMix code (PIL, severity levels): rotate by int(level · 3) degrees
    about the centre; shear by level · 0.03; translate by int(level · side / 30)
    pixels; each with a random sign.
    """
    zeros, ones = tf.zeros_like(levels), tf.ones_like(levels)
    if op == "rotate":
        degrees = tf.floor(levels * 30.0 / 10.0) * signs
        theta = degrees * (math.pi / 180.0)
        cos, sin = tf.cos(theta), tf.sin(theta)
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        # Output (x, y) comes from the input point rotated back about the centre.
        a2 = cx - cos * cx + sin * cy
        b2 = cy - sin * cx - cos * cy
        return tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
    if op in ("shear_x", "shear_y"):
        shear = levels * 0.3 / 10.0 * signs
        if op == "shear_x":
            return tf.stack([ones, shear, zeros, zeros, ones, zeros, zeros, zeros], axis=1)
        return tf.stack([ones, zeros, zeros, shear, ones, zeros, zeros, zeros], axis=1)
    side = width if op == "translate_x" else height
    shift = tf.floor(levels * (side / 3.0) / 10.0) * signs
    if op == "translate_x":
        return tf.stack([ones, zeros, shift, zeros, ones, zeros, zeros, zeros], axis=1)
    return tf.stack([ones, zeros, zeros, zeros, ones, shift, zeros, zeros], axis=1)


# Groups of images that one call serves: each pixel op, all geometric ops (one
# affine transform with per-image matrices), and images whose chain has ended.
_GROUPS = (*_PIXEL_OPS, "geometric", "identity")
_GROUP_OF_OP = [
    (_PIXEL_OPS.index(op) if op in _PIXEL_OPS else _GROUPS.index("geometric")) for op in OPERATIONS
]


def _apply_operations(pixels, op_index, active, seed, severity):
    """Applies operation `op_index[b]` to image b where `active[b]` (float 0..255 integers).

    Images are partitioned by what they drew, so each one pays for its own
    operation only: a pixel op per group, one affine transform for every
    geometric op (per-image matrices), nothing for an ended chain.
    """
    batch = tf.shape(pixels)[0]
    height, width = pixels.shape[1], pixels.shape[2]
    level_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    levels = _levels(level_seed, [batch], severity)
    signs = _signs(sign_seed, [batch])
    group = tf.where(active, tf.gather(tf.constant(_GROUP_OF_OP, tf.int32), op_index), len(_GROUPS) - 1)
    n = len(_GROUPS)
    index = tf.dynamic_partition(tf.range(batch), group, n)
    images = tf.dynamic_partition(pixels, group, n)
    level = tf.dynamic_partition(levels, group, n)
    sign = tf.dynamic_partition(signs, group, n)
    ops = tf.dynamic_partition(op_index, group, n)
    out = list(images)
    g = {name: i for i, name in enumerate(_GROUPS)}
    out[g["autocontrast"]] = autocontrast(images[g["autocontrast"]])
    out[g["equalize"]] = equalize(images[g["equalize"]])
    # AugMix: bits = 4 − int(level · 4 / 10); threshold = 256 − int(level · 256 / 10).
    out[g["posterize"]] = posterize(
        images[g["posterize"]], 4.0 - tf.floor(level[g["posterize"]] * 4.0 / 10.0)
    )
    out[g["solarize"]] = solarize(
        images[g["solarize"]], 256.0 - tf.floor(level[g["solarize"]] * 256.0 / 10.0)
    )
    geometric = g["geometric"]
    rows = tf.zeros([tf.shape(ops[geometric])[0], 8])
    for op in _GEOMETRIC_OPS:
        chosen = tf.equal(ops[geometric], OPERATIONS.index(op))[:, None]
        rows = tf.where(chosen, _affine_rows(op, level[geometric], sign[geometric], height, width), rows)
    # PIL resamples geometric ops bilinearly and fills with black.
    # PIL resamples an 8-bit image into 8 bits: the result is rounded to levels.
    out[geometric] = tf.round(
        keras.ops.image.affine_transform(images[geometric], rows, interpolation="bilinear", fill_value=0)
    )
    return tf.dynamic_stitch(index, out)


def augmix_views(images, seed, num_views=2, width=3, max_depth=3, severity=3, alpha=1.0):
    """AugMix views of a batch, a pure function of (images, seed).

    Args:
      images: float32 [B, H, W, 3] in [0, 1].
      seed: int [2] stateless seed.
      num_views: views per image.
      width: chains per view.
      max_depth: each chain has 1..max_depth operations (drawn per image and chain).
      severity: AugMix's severity (levels are drawn in [0.1, severity]).
      alpha: concentration of the Dirichlet chain weights and of the Beta mix.

    Returns:
      float32 [B, num_views, H, W, 3] in [0, 1].
    """
    batch = tf.shape(images)[0]
    pixels = tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0)
    views = []
    for v in range(num_views):
        view_seed = tf.random.experimental.stateless_fold_in(seed, v)
        weight_seed, mix_seed, depth_seed, op_seed, level_seed = tf.unstack(
            tf.random.experimental.stateless_split(view_seed, 5)
        )
        gamma = tf.random.stateless_gamma([batch, width], weight_seed, alpha=alpha)
        weights = gamma / tf.reduce_sum(gamma, axis=1, keepdims=True)  # Dirichlet(alpha)
        g1, g2 = tf.unstack(tf.random.stateless_gamma([2, batch], mix_seed, alpha=alpha))
        m = g1 / (g1 + g2)  # Beta(alpha, alpha)
        depths = tf.random.stateless_uniform([batch, width], depth_seed, 1, max_depth + 1, dtype=tf.int32)
        ops = tf.random.stateless_uniform(
            [batch, width, max_depth], op_seed, 0, len(OPERATIONS), dtype=tf.int32
        )
        mix = tf.zeros_like(images)
        for c in range(width):
            chain = pixels
            for d in range(max_depth):
                slot_seed = tf.random.experimental.stateless_fold_in(level_seed, c * max_depth + d)
                chain = _apply_operations(chain, ops[:, c, d], depths[:, c] > d, slot_seed, severity)
            mix += weights[:, c, None, None, None] * (chain / 255.0)
        m = m[:, None, None, None]
        views.append(tf.clip_by_value((1.0 - m) * images + m * mix, 0.0, 1.0))
    return tf.stack(views, axis=1)


def jensen_shannon(logits):
    """Per-example JSD among K predictive distributions, as the AugMix code.

    JSD = (1/K) Σ_k KL(p_k ‖ M), M = mean_k p_k (clamped at 1e-7 before the log).

    Args:
      logits: [B, K, classes].

    Returns:
      [B] divergences (natural log), in float32 (float64 stays).
    """
    logits = tf.cast(logits, loss_dtype(logits))
    log_p = tf.nn.log_softmax(logits, axis=-1)
    p = tf.exp(log_p)
    log_m = tf.math.log(tf.clip_by_value(tf.reduce_mean(p, axis=1, keepdims=True), 1e-7, 1.0))
    return tf.reduce_mean(tf.reduce_sum(p * (log_p - log_m), axis=-1), axis=1)


@register_task
class AugMixTask(Task):
    """AugMix's Jensen–Shannon consistency between the clean image and two views.

    Options:
      width: chains per view (3).
      max_depth: operations per chain, drawn in 1..max_depth (3).
      severity: operation strength, 1..10 (3).
      alpha: Dirichlet / Beta concentration (1).
      joint_bn: clean image and views in one forward, normalised together
        (True, the AugMix code), or the views in a forward of their own.
    """

    name = "augmix"
    order = 10
    uses_classifier = True
    default_weight = 12.0  # the AugMix paper's JSD weight
    DEFAULT_OPTIONS = {"width": 3, "max_depth": 3, "severity": 3, "alpha": 1.0, "joint_bn": True}

    def validate_options(self):
        o = self.options
        for key in ("width", "max_depth"):
            if not isinstance(o[key], int) or o[key] < 1:
                raise ConfigError(f"augmix {key} must be an integer >= 1; got {o[key]!r}")
        if not isinstance(o["severity"], (int, float)) or not 0.1 < o["severity"] <= 10:
            raise ConfigError(f"augmix severity must be in (0.1, 10]; got {o['severity']!r}")
        if not isinstance(o["alpha"], (int, float)) or o["alpha"] <= 0:
            raise ConfigError(f"augmix alpha must be > 0; got {o['alpha']!r}")
        if not isinstance(o["joint_bn"], bool):
            raise ConfigError(f"augmix joint_bn must be True or False; got {o['joint_bn']!r}")

    def joins_clean_forward(self):
        return self.options["joint_bn"]

    def make_batch(self, images, seed):
        o = self.options
        views = augmix_views(
            images, self.task_seed(seed), 2, o["width"], o["max_depth"], o["severity"], o["alpha"]
        )
        return {"inputs": views, "targets": tf.zeros([tf.shape(images)[0]], tf.int32)}

    def head_output_shape(self, image_shape):
        return None

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return None

    def predict(self, head, forward, inputs, training=True):
        batch = tf.shape(inputs)[0]
        features = forward.joint_features.get(self.name)
        if features is None:
            # [B, 2, H, W, C] -> [2B, …] view-major: one trunk pass for both views.
            features = forward.encode(flatten_views(inputs))
        logits = forward.classify(features)
        views = tf.transpose(tf.reshape(logits, [2, batch, -1]), [1, 0, 2])  # [B, 2, classes]
        return tf.concat([forward.clean_logits[:, None], tf.cast(views, forward.clean_logits.dtype)], axis=1)

    def per_example_loss(self, targets, predictions):
        del targets
        return jensen_shannon(predictions)

    def display_inputs(self, images, seed):
        return self.make_batch(images, seed)["inputs"][:, 0]
