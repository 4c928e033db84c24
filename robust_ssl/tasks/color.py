"""Colourisation (Zhang et al., 2016): predict quantised CIELAB a/b from grey."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.networks import decoder_plan, deconv_decoder
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task, register_task, sparse_ce


@register_task
class ColorTask(Task):
    """Predict each pixel's a and b bins from a grey image.

    The loss is CE(a) + CE(b), each averaged over pixels, as the reference code
    (the paper's formula has an extra 1/2; a constant factor only rescales λ).

    Options:
      bins: number of bins per channel (32 in the paper).
    """

    name = "color"
    order = 2
    DEFAULT_OPTIONS = {"bins": 32}

    def validate_options(self):
        bins = self.options["bins"]
        if not isinstance(bins, int) or bins < 2 or 256 % bins:
            raise ConfigError(f"color bins must divide 256 (e.g. 32); got {bins!r}")

    def make_batch(self, images, seed):
        del seed  # deterministic
        lab = image_ops.rgb_to_lab(images)
        return {
            "inputs": image_ops.to_grey(images),
            "targets": image_ops.quantize_ab(lab, self.options["bins"]),
        }

    def head_output_shape(self, image_shape):
        decoder_plan(image_shape[0], image_shape[1])  # raises for sizes it cannot reach
        return (image_shape[0], image_shape[1], 2 * self.options["bins"])

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return deconv_decoder(feature_dim, self.head_output_shape(image_shape), None, name="color_head")

    def per_example_loss(self, targets, predictions):
        bins = self.options["bins"]
        ce_a = sparse_ce(targets[..., 0], predictions[..., :bins])
        ce_b = sparse_ce(targets[..., 1], predictions[..., bins:])
        return tf.reduce_mean(ce_a, axis=[1, 2]) + tf.reduce_mean(ce_b, axis=[1, 2])
