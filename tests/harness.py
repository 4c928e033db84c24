"""A tiny model, a training batch, a few training steps: what the model-level tests share.

    model = tiny_model(("rotation", "ir"), meta_every=2)
    batch = training_batch(model, seed=3)
    train_steps(model, batch, training_batch(model, seed=4))

The model is a compiled WRN-10-1 `RobustSSLModel` (seeded), the batch a
dict of `make_task_batch` over random images plus a meta-validation batch,
and `train_steps` runs the function `fit` runs, one step per batch.
"""

import keras
import numpy as np
import tensorflow as tf

from robust_ssl.data.pipeline import make_task_batch
from robust_ssl.model import RobustSSLModel


def tiny_model(tasks, seed=1, automl=True, meta_lr=0.01, optimizer=None, meta_optimizer=None, **options):
    """A compiled WRN-10-1 `RobustSSLModel`, its weights drawn from `seed`.

    Args:
      tasks: task names (a sequence or a comma string).
      seed: `keras.utils.set_random_seed` before the model is built.
      automl: learn λ (the meta step) or keep it fixed.
      meta_lr: learning rate of the default meta optimiser (plain SGD).
      optimizer: the main optimiser (default: SGD 0.1, Nesterov momentum 0.9).
      meta_optimizer: the λ optimiser (default: SGD(meta_lr)).
      **options: further `RobustSSLModel` arguments (meta_mode, weighting,
        lambdas, meta_every, …); weight decay defaults to 5e-4.

    Returns:
      The compiled model.
    """
    keras.utils.set_random_seed(seed)
    options.setdefault("weight_decay", 5e-4)
    model = RobustSSLModel(depth=10, width=1, tasks=tasks, automl=automl, **options)
    model.compile(
        optimizer or keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        meta_optimizer=meta_optimizer or keras.optimizers.SGD(meta_lr),
    )
    return model


def training_batch(model, batch_size=8, meta_size=6, seed=0):
    """A training batch of random 32×32 images for `model`'s tasks, with a meta-validation batch.

    Args:
      model: the `RobustSSLModel` whose tasks make the batch.
      batch_size: training images.
      meta_size: meta-validation images ("meta/image", "meta/label").
      seed: the numpy seed of images and labels, and the tasks' stateless seed [seed, 1].

    Returns:
      {name: tensor}; float tensors in `keras.config.floatx()` (float64 under a
      float64 policy), labels int32.
    """
    dtype = keras.config.floatx()
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.random((batch_size, 32, 32, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 10, batch_size), tf.int32)
    batch = make_task_batch(images, labels, model.tasks, tf.constant([seed, 1], tf.int64))
    batch["meta/image"] = tf.constant(rng.random((meta_size, 32, 32, 3)), tf.float32)
    batch["meta/label"] = tf.constant(rng.integers(0, 10, meta_size), tf.int32)
    return {k: tf.cast(v, dtype) if v.dtype == tf.float32 else v for k, v in batch.items()}


def train_steps(model, *batches):
    """Runs one training step per batch through the function `fit` runs.

    Args:
      model: a compiled `RobustSSLModel`.
      *batches: training batches, taken in order.

    Returns:
      The last step's logs (None without batches).
    """
    function = model.make_train_function()
    iterator = iter(batches)
    logs = None
    for _ in batches:
        logs = function(iterator)
    return logs
