"""Rotation prediction (Gidaris et al., 2018; Hendrycks et al., 2019)."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.networks import linear_head
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import (
    Task,
    flatten_views,
    mean_over_non_batch_axes,
    random_indices,
    register_task,
    sparse_ce,
)


@register_task
class RotationTask(Task):
    """Predict the rotation (0, 90, 180, 270 degrees) of an image.

    Options:
      mode: "all" uses all four rotations of every image (the reference code and
        Hendrycks et al.); the 0-degree copy is the clean image, so its forward
        pass is shared with the main task. "random" rotates each image by one
        random multiple of 90 degrees.
    """

    name = "rotation"
    order = 1
    DEFAULT_OPTIONS = {"mode": "all"}
    probe_classes = 4

    def validate_options(self):
        if self.options["mode"] not in ("all", "random"):
            raise ConfigError(f"rotation mode must be 'all' or 'random'; got {self.options['mode']!r}")

    def check_image_shape(self, image_shape):
        if image_shape[0] != image_shape[1]:
            raise ConfigError(
                f"task 'rotation' needs square images (a 90-degree turn must keep the shape); "
                f"got {image_shape[0]}x{image_shape[1]}"
            )

    def make_batch(self, images, seed):
        batch_size = tf.shape(images)[0]
        if self.options["mode"] == "all":
            # 90, 180, 270 degrees; 0 degrees is the clean image itself.
            rotated = tf.stack([tf.image.rot90(images, k) for k in (1, 2, 3)], axis=1)
            targets = tf.tile(tf.constant([[0, 1, 2, 3]], tf.int32), [batch_size, 1])
            return {"inputs": rotated, "targets": targets}
        k = random_indices(self.task_seed(seed), batch_size, 4)
        return {"inputs": image_ops.rotate90(images, k), "targets": k}

    def head_output_shape(self, image_shape):
        return (4,)

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return linear_head(feature_dim, 4, name="rotation_head")

    def predict(self, head, forward, inputs, training=True):
        if self.options["mode"] == "random":
            return head(forward.encode(inputs), training=training)
        batch = tf.shape(inputs)[0]
        # [B, 3, H, W, C] -> [3B, H, W, C] ordered rotation-major (all 90° copies,
        # then 180°, then 270°) so that one trunk pass covers them.
        rotated_features = forward.encode(flatten_views(inputs))
        features = tf.concat([forward.clean_features, rotated_features], axis=0)
        logits = head(features, training=training)  # [4B, 4], rotation-major
        return tf.transpose(tf.reshape(logits, [4, batch, 4]), [1, 0, 2])  # [B, 4, 4]

    def per_example_loss(self, targets, predictions):
        return mean_over_non_batch_axes(sparse_ce(targets, predictions))

    def probe_inputs(self, images, k):
        return tf.image.rot90(images, k)

    def display_inputs(self, images, seed):
        if self.options["mode"] == "all":
            return tf.image.rot90(images, 1)
        return self.make_batch(images, seed)["inputs"]
