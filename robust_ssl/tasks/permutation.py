"""Permutation-guessing tasks: RGB channel order and 2x2 jigsaw."""

import tensorflow as tf

from robust_ssl.models import linear_head
from robust_ssl.tasks import image_ops
from robust_ssl.tasks.base import Task, random_indices, sparse_ce


class RGBGuessTask(Task):
    """Guess which of the 3! = 6 channel orders an image was shuffled with."""

    name = "rgb"

    def make_batch(self, images, seed):
        index = random_indices(self.task_seed(seed), tf.shape(images)[0], 6)
        return {"inputs": image_ops.permute_channels(images, index), "targets": index}

    def build_head(self, feature_dim):
        return linear_head(feature_dim, 6, name="rgb_head")

    def per_example_loss(self, targets, predictions):
        return sparse_ce(targets, predictions)


class JigsawTask(Task):
    """Guess which of the 4! = 24 orders a 2x2 tiling of an image was shuffled with."""

    name = "jigsaw"

    def make_batch(self, images, seed):
        index = random_indices(self.task_seed(seed), tf.shape(images)[0], 24)
        return {"inputs": image_ops.shuffle_tiles(images, index), "targets": index}

    def build_head(self, feature_dim):
        return linear_head(feature_dim, 24, name="jigsaw_head")

    def per_example_loss(self, targets, predictions):
        return sparse_ce(targets, predictions)
