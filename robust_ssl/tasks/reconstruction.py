"""Image reconstruction (IR) and blurred-image reconstruction (BIR)."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.networks import decoder_plan, deconv_decoder
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task, loss_dtype, mean_over_non_batch_axes, register_task

# The reference code multiplies reconstruction MSE losses by 30 so that they are
# of the same order as the cross-entropy losses.
RECONSTRUCTION_LOSS_SCALE = 30.0


def reconstruction_loss(targets, predictions, scale):
    """Per-example scaled mean squared error."""
    dtype = loss_dtype(predictions)
    diff = tf.cast(predictions, dtype) - tf.cast(targets, dtype)
    return scale * mean_over_non_batch_axes(tf.square(diff))


@register_task
class ReconstructionTask(Task):
    """IR: an autoencoder; the clean image is both input and target.

    Options:
      loss_scale: factor on the MSE (30 in the reference code).
    """

    name = "ir"
    order = 3
    uses_clean_input = True
    DEFAULT_OPTIONS = {"loss_scale": RECONSTRUCTION_LOSS_SCALE}

    def validate_options(self):
        scale = self.options["loss_scale"]
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise ConfigError(f"{self.name} loss_scale must be > 0; got {scale!r}")

    def make_batch(self, images, seed):
        del seed
        return {"targets": images}

    def head_output_shape(self, image_shape):
        decoder_plan(image_shape[0], image_shape[1])  # raises for sizes it cannot reach
        return (image_shape[0], image_shape[1], 3)

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return deconv_decoder(
            feature_dim, self.head_output_shape(image_shape), "sigmoid", name=f"{self.name}_head"
        )

    def per_example_loss(self, targets, predictions):
        return reconstruction_loss(targets, predictions, self.options["loss_scale"])


@register_task
class DeblurTask(ReconstructionTask):
    """BIR: reconstruct the clean image from a Gaussian-blurred copy.

    Deviation from the reference code: it blurs with sigma 7/255 px, which
    changes no pixel visibly; we use a real blur (sigma 1 px by default).

    Options:
      sigma: blur standard deviation in pixels.
      loss_scale: factor on the MSE.
    """

    name = "bir"
    order = 4
    uses_clean_input = False
    DEFAULT_OPTIONS = {"sigma": 1.0, "loss_scale": RECONSTRUCTION_LOSS_SCALE}

    def validate_options(self):
        super().validate_options()
        sigma = self.options["sigma"]
        if not isinstance(sigma, (int, float)) or sigma <= 0:
            raise ConfigError(f"bir sigma must be > 0 pixels; got {sigma!r}")

    def make_batch(self, images, seed):
        del seed
        return {"inputs": image_ops.gaussian_blur(images, float(self.options["sigma"])), "targets": images}
