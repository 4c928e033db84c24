"""The interface every self-supervision task implements."""

import zlib

import tensorflow as tf

from robust_ssl.errors import ConfigError


class Task:
    """A self-supervised auxiliary task: its inputs, targets, head and loss.

    A task turns a clean batch of images in [0, 1] into task inputs and targets
    (`make_batch`, pure TensorFlow, stateless-seeded so it runs the same eagerly,
    in `tf.data` and in a graph), owns a head (`build_head`) and a per-example
    loss. Tasks whose input is the clean image itself set `uses_clean_input` and
    reuse the main task's forward pass instead of running the trunk again.

    Subclasses set `name`, `uses_clean_input` and `DEFAULT_OPTIONS`, and
    implement `make_batch`, `build_head` and `per_example_loss`.
    """

    name = None
    uses_clean_input = False
    DEFAULT_OPTIONS = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.DEFAULT_OPTIONS))
        if unknown:
            raise ConfigError(
                f"task {self.name!r} has no option(s) {unknown}; known: {sorted(self.DEFAULT_OPTIONS)}"
            )
        self.options = {**self.DEFAULT_OPTIONS, **options}
        self.validate_options()

    def validate_options(self):
        """Raises ConfigError for invalid option values (override to check)."""

    @property
    def seed_salt(self):
        """A stable integer that makes this task's random stream its own."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF

    def task_seed(self, seed):
        """Derives this task's stateless seed from the batch seed."""
        return tf.random.experimental.stateless_fold_in(seed, self.seed_salt)

    def make_batch(self, images, seed):
        """Makes the task's inputs and targets from a clean batch.

        Args:
          images: float32 [B, H, W, 3] in [0, 1].
          seed: int32/int64 [2] stateless seed of this batch.

        Returns:
          A dict with "targets" and, unless `uses_clean_input`, "inputs"; every
          tensor's leading dimension is B so batches split across replicas.
        """
        raise NotImplementedError

    def build_head(self, feature_dim):
        """Returns this task's head as a built Keras model."""
        raise NotImplementedError

    def predict(self, head, clean_features, encode, inputs, training=True):
        """Runs the head on the right features.

        Args:
          head: the model returned by `build_head`.
          clean_features: trunk features of the clean batch, [B, F].
          encode: callable images -> features that runs the trunk on another
            input (batch statistics, no moving-average update).
          inputs: the "inputs" tensor from `make_batch` (None if clean input).
          training: forwarded to the head.

        Returns:
          The head's predictions.
        """
        features = clean_features if self.uses_clean_input else encode(inputs)
        return head(features, training=training)

    def per_example_loss(self, targets, predictions):
        """Returns the loss of each example, float32 [B]."""
        raise NotImplementedError

    def display_inputs(self, images, seed):
        """Returns one [B, H, W, 3] image per example to show what the task sees."""
        batch = self.make_batch(images, seed)
        return batch.get("inputs", images)


def mean_over_non_batch_axes(x):
    """Averages everything but the leading (batch) axis."""
    axes = list(range(1, len(x.shape)))
    return tf.reduce_mean(x, axis=axes) if axes else x


def loss_dtype(x):
    """Losses are computed in float32 (also under mixed precision), float64 stays."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def sparse_ce(labels, logits):
    """Per-element sparse softmax cross-entropy in `loss_dtype(logits)`."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, loss_dtype(logits))
    )


def random_indices(seed, batch_size, num_classes):
    """Uniform int32 labels in [0, num_classes) from a stateless seed."""
    return tf.random.stateless_uniform([batch_size], seed=seed, minval=0, maxval=num_classes, dtype=tf.int32)
