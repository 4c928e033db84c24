"""Inpainting: predict the central patch that was painted over."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.models import deconv_decoder
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task
from robust_ssl.tasks.reconstruction import RECONSTRUCTION_LOSS_SCALE, reconstruction_loss

# The reference code paints the hole almost white.
FILL_VALUE = 0.9999
PATCH = 8


class InpaintTask(Task):
    """Fill the central 8x8 pixels (12:20 x 12:20 on 32x32) with 0.9999; predict them.

    Options:
      loss_scale: factor on the MSE of the patch (30 in the reference code).
    """

    name = "inpaint"
    DEFAULT_OPTIONS = {"loss_scale": RECONSTRUCTION_LOSS_SCALE}

    def validate_options(self):
        if self.options["loss_scale"] <= 0:
            raise ConfigError("inpaint loss_scale must be > 0")

    def make_batch(self, images, seed):
        del seed
        h, w = images.shape[1], images.shape[2]
        (y0, y1), (x0, x1) = image_ops.central_box(h, PATCH), image_ops.central_box(w, PATCH)
        row = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
        col = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
        hole = tf.logical_and(row[:, None], col[None, :])[None, :, :, None]
        masked = tf.where(hole, tf.cast(FILL_VALUE, images.dtype), images)
        return {"inputs": masked, "targets": images[:, y0:y1, x0:x1, :]}

    def build_head(self, feature_dim):
        # TransposedConv(64, k4, s1, p0) -> BN -> ReLU -> TransposedConv(3, k4, s2, p1) -> sigmoid.
        return deconv_decoder(feature_dim, (64,), 3, "sigmoid", name="inpaint_head")

    def per_example_loss(self, targets, predictions):
        return reconstruction_loss(targets, predictions, self.options["loss_scale"])
