"""Inpainting: predict the central patch that was painted over."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.networks import decoder_plan, deconv_decoder
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task, register_task
from robust_ssl.tasks.reconstruction import RECONSTRUCTION_LOSS_SCALE, reconstruction_loss

# The reference code paints the hole almost white.
FILL_VALUE = 0.9999


@register_task
class InpaintTask(Task):
    """Fill the central patch (12:20 x 12:20 on 32x32) with 0.9999; predict it.

    Options:
      loss_scale: factor on the MSE of the patch (30 in the reference code).
      patch: side of the square patch in pixels; 0 = a quarter of the image
        side, at least 8 (8 at 32x32, as the reference code; 16 at 64x64).
    """

    name = "inpaint"
    order = 5
    DEFAULT_OPTIONS = {"loss_scale": RECONSTRUCTION_LOSS_SCALE, "patch": 0}

    def validate_options(self):
        if self.options["loss_scale"] <= 0:
            raise ConfigError("inpaint loss_scale must be > 0")
        patch = self.options["patch"]
        if not isinstance(patch, int) or patch < 0:
            raise ConfigError(f"inpaint patch must be 0 (automatic) or a size in pixels; got {patch!r}")

    def patch_size(self, height, width):
        """Side of the painted patch for (height, width) images."""
        return self.options["patch"] or max(8, min(height, width) // 4)

    def make_batch(self, images, seed):
        del seed
        h, w = images.shape[1], images.shape[2]
        patch = self.patch_size(h, w)
        (y0, y1), (x0, x1) = image_ops.central_box(h, patch), image_ops.central_box(w, patch)
        row = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
        col = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
        hole = tf.logical_and(row[:, None], col[None, :])[None, :, :, None]
        masked = tf.where(hole, tf.cast(FILL_VALUE, images.dtype), images)
        return {"inputs": masked, "targets": images[:, y0:y1, x0:x1, :]}

    def head_output_shape(self, image_shape):
        patch = self.patch_size(image_shape[0], image_shape[1])
        if patch > min(image_shape[0], image_shape[1]):
            raise ValueError(f"a {patch}-pixel patch does not fit {image_shape[0]}x{image_shape[1]} images")
        decoder_plan(patch, patch)  # raises for sizes it cannot reach
        return (patch, patch, 3)

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        # At 32x32: TransposedConv(64, k4, s1, p0) -> BN -> ReLU -> TransposedConv(3, k4, s2, p1) -> sigmoid.
        return deconv_decoder(
            feature_dim, self.head_output_shape(image_shape), "sigmoid", name="inpaint_head", widest=64
        )

    def per_example_loss(self, targets, predictions):
        return reconstruction_loss(targets, predictions, self.options["loss_scale"])
