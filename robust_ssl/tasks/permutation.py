"""Permutation-guessing tasks: RGB channel order and 2x2 jigsaw."""

import tensorflow as tf

from robust_ssl.errors import ConfigError
from robust_ssl.networks import linear_head
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task, random_indices, register_task, sparse_ce


@register_task
class RGBGuessTask(Task):
    """Guess which of the 3! = 6 channel orders an image was shuffled with."""

    name = "rgb"
    order = 6
    probe_classes = 6

    def make_batch(self, images, seed):
        index = random_indices(self.task_seed(seed), tf.shape(images)[0], 6)
        return {"inputs": image_ops.permute_channels(images, index), "targets": index}

    def head_output_shape(self, image_shape):
        return (6,)

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return linear_head(feature_dim, 6, name="rgb_head")

    def per_example_loss(self, targets, predictions):
        return sparse_ce(targets, predictions)

    def probe_inputs(self, images, k):
        return image_ops.permute_channels(images, tf.fill([tf.shape(images)[0]], k))


@register_task
class JigsawTask(Task):
    """Guess which of the 4! = 24 orders a 2x2 tiling of an image was shuffled with."""

    name = "jigsaw"
    order = 7
    probe_classes = 24

    def check_image_shape(self, image_shape):
        if image_shape[0] % 2 or image_shape[1] % 2:
            raise ConfigError(
                f"task 'jigsaw' needs even image sides (2x2 tiles); got {image_shape[0]}x{image_shape[1]}"
            )

    def make_batch(self, images, seed):
        index = random_indices(self.task_seed(seed), tf.shape(images)[0], 24)
        return {"inputs": image_ops.shuffle_tiles(images, index), "targets": index}

    def head_output_shape(self, image_shape):
        return (24,)

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return linear_head(feature_dim, 24, name="jigsaw_head")

    def per_example_loss(self, targets, predictions):
        return sparse_ce(targets, predictions)

    def probe_inputs(self, images, k):
        return image_ops.shuffle_tiles(images, tf.fill([tf.shape(images)[0]], k))
