"""Tasks defined by tests only, registered for the duration of a test."""

import contextlib

import tensorflow as tf

from robust_ssl.tasks import TASKS
from robust_ssl.tasks.base import Task, loss_dtype, register_task


class FlipConsistencyTask(Task):
    """A classifier objective for tests: the classifier's log-probabilities on the
    clean and on the horizontally flipped image should agree (squared difference).

    Its gradient reaches the trunk and the main classifier, like AugMix's
    consistency loss, which is what the hypergradient tests need.
    """

    name = "test_flip_consistency"
    order = 1000
    uses_classifier = True

    def make_batch(self, images, seed):
        del seed
        return {"inputs": tf.reverse(images, axis=[2]), "targets": tf.zeros([tf.shape(images)[0]], tf.int32)}

    def head_output_shape(self, image_shape):
        return None

    def build_head(self, feature_dim, image_shape=(32, 32, 3)):
        return None

    def predict(self, head, forward, inputs, training=True):
        flipped = forward.classify(forward.encode(inputs))
        return tf.stack([forward.clean_logits, flipped], axis=1)  # [B, 2, K]

    def per_example_loss(self, targets, predictions):
        del targets
        log_p = tf.nn.log_softmax(tf.cast(predictions, loss_dtype(predictions)), axis=-1)
        return tf.reduce_sum(tf.square(log_p[:, 0] - log_p[:, 1]), axis=-1)


@contextlib.contextmanager
def registered(*classes):
    """Registers task classes for the duration of the block, then removes them."""
    for cls in classes:
        register_task(cls)
    try:
        yield
    finally:
        for cls in classes:
            TASKS.pop(cls.name, None)
