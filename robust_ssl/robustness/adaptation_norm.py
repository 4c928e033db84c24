"""Batch norm at test time: the batch-statistics trunk, the weights TENT updates, its entropy.

"Batch statistics" means: every batch-norm layer normalises with the mean and
variance of the batch it is given (mixed with the training statistics by a
prior strength N, `bn`'s `bn_prior`), while dropout and stochastic depth stay
off. `batch_statistics_trunk` builds such a copy of a trunk, called in
inference mode; it never updates the training (moving) statistics. The
adaptation modes that run it: `robust_ssl.robustness.adaptation`.
"""

import warnings

import keras
import tensorflow as tf


def layers(model):
    """Every layer of a Keras model, nested models' layers included.

    Args:
      model: a Keras model (or any layer with `.layers`).

    Yields:
      Its layers, depth first, each nested model followed by its own layers.
    """
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from layers(layer)


def batch_norm_affine(trunk):
    """Where the batch-norm scales and shifts are among a trunk's trainable weights.

    Args:
      trunk: a Keras model.

    Returns:
      Indices into `trunk.trainable_variables` (what TENT and `ttt_params="bn"` update).
    """
    wanted = {
        id(v)
        for layer in layers(trunk)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.trainable_variables
    }
    return [i for i, v in enumerate(trunk.trainable_variables) if id(v) in wanted]


def entropy(logits):
    """Per-example Shannon entropy of softmax(logits) (nats): TENT's loss.

    Args:
      logits: [B, classes] logits, any float dtype.

    Returns:
      float32 [B] entropies.
    """
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


class PriorBatchNormalization(keras.layers.BatchNormalization):
    """Batch norm that always normalises with batch statistics mixed with the
    training ones by a prior N (N = 0: the batch's alone), in any mode; it
    never updates its moving averages."""

    def __init__(self, prior=0.0, **kwargs):
        super().__init__(**kwargs)
        self.prior = float(prior)

    def call(self, inputs, training=None, mask=None):
        axes = [i for i in range(len(inputs.shape)) if i != self.axis % len(inputs.shape)]
        x = tf.cast(inputs, tf.float32)
        mean, variance = tf.nn.moments(x, axes=axes)
        if self.prior > 0:
            n = tf.cast(tf.shape(x)[0], tf.float32)
            w = self.prior / (self.prior + n)
            mean = w * tf.cast(self.moving_mean, tf.float32) + (1 - w) * mean
            variance = w * tf.cast(self.moving_variance, tf.float32) + (1 - w) * variance
        beta = None if self.beta is None else tf.cast(self.beta, tf.float32)
        gamma = None if self.gamma is None else tf.cast(self.gamma, tf.float32)
        out = tf.nn.batch_normalization(x, mean, variance, beta, gamma, self.epsilon)
        return tf.cast(out, inputs.dtype)


def with_prior_batch_norm(trunk, prior):
    """A copy of a trunk whose batch norms are `PriorBatchNormalization`s.

    Args:
      trunk: a Keras model.
      prior: the prior strength N of every batch norm.

    Returns:
      The copy, holding the trunk's weights (copied, not shared).
    """

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return PriorBatchNormalization(prior=prior, **layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(trunk, clone_function=clone, recursive=True)
    copy.set_weights(trunk.get_weights())
    return copy


def batch_statistics_trunk(trunk, prior=0.0):
    """`with_prior_batch_norm`, checked to take the trunk's weights in its order.

    Args:
      trunk: a Keras model.
      prior: the prior strength N (0: the batch's statistics alone).

    Returns:
      The copy, or None (with a warning) for a trunk Keras cannot clone; the
      forwards then run the trunk in training mode (batch statistics, and
      dropout if it has any).
    """
    try:
        copy = with_prior_batch_norm(trunk, prior)
    except Exception as e:  # noqa: BLE001 - any failure of cloning a user's trunk
        warnings.warn(
            f"test-time adaptation: cannot clone the trunk ({type(e).__name__}: {e}); batch statistics "
            f"come from the trunk in training mode (dropout, if any, is on)",
            stacklevel=3,
        )
        return None
    for kind in ("trainable_variables", "non_trainable_variables"):
        ours = [tuple(v.shape) for v in getattr(copy, kind)]
        theirs = [tuple(v.shape) for v in getattr(trunk, kind)]
        assert ours == theirs, f"the batch-statistics trunk's {kind} differ from the trunk's"
    return copy
