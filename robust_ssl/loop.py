"""A training loop of our own, for `MultiWorkerMirroredStrategy`.

Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585: `Attempt to convert a value (PerReplica…) to a
Tensor`). This loop runs the model's own train function (the one `fit`
runs: the host picks each step's kind, every replica runs it) and drives the same Keras callbacks (progress bar, CSV, TensorBoard, λ log,
checkpoints) through `keras.callbacks.CallbackList`, so a run looks and resumes
the same on every strategy.
"""

import keras
import numpy as np
import tensorflow as tf

from robust_ssl.tasks.base import sparse_ce


def per_replica_dataset(global_dataset_fn, strategy):
    """Distributes a dataset of *global* batches so replica r gets slice r.

    Every worker builds the same global stream (it is a pure function of the
    step); each replica takes its contiguous share of every tensor, exactly
    the split a single device's global batch would see.

    Args:
      global_dataset_fn: callable() -> dataset of dicts of global batches.
      strategy: the distribution strategy.

    Returns:
      A distributed dataset.
    """
    total = strategy.num_replicas_in_sync

    def dataset_fn(context):
        local = context.num_replicas_in_sync // max(1, context.num_input_pipelines) or 1
        first = context.input_pipeline_id * local

        def shares(batch):
            def share(r):
                return {k: tf.reshape(v, [total, -1, *v.shape[1:]])[first + r] for k, v in batch.items()}

            return tf.data.Dataset.range(local).map(share)

        return global_dataset_fn().flat_map(shares)

    return strategy.distribute_datasets_from_function(dataset_fn)


def evaluate_locally(model, dataset):
    """Clean accuracy and loss of `model` on (image, label) batches, on this worker."""
    correct, total, loss = 0, 0, 0.0
    for images, labels in dataset:
        logits = model(images, training=False)
        labels = labels.numpy()
        correct += int(np.sum(np.argmax(logits.numpy(), axis=-1) == labels))
        # The training loss's cross-entropy, in the same dtype (float64 models stay float64).
        loss += float(tf.reduce_sum(sparse_ce(labels, logits)))
        total += len(labels)
    return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}


def custom_fit(
    model,
    strategy,
    global_dataset_fn,
    epochs,
    steps_per_epoch,
    initial_epoch=0,
    callbacks=(),
    validation_data=None,
    verbose=1,
):
    """Trains like `model.fit`, on any strategy, with our own loop.

    Args:
      model: a compiled `RobustSSLModel` built in `strategy.scope()`.
      strategy: the distribution strategy.
      global_dataset_fn: callable() -> dataset of global training batches.
      epochs, steps_per_epoch, initial_epoch: as in `fit`.
      callbacks: Keras callbacks.
      validation_data: optional (image, label) batches evaluated after each epoch.
      verbose: 0 silent, 1 progress bar, 2 one line per epoch, "auto" (1 on a
        terminal, else 2).

    Returns:
      The `keras.callbacks.History`.
    """
    from robust_ssl._quiet import keras_verbose

    verbose = keras_verbose(verbose)
    iterator = iter(per_replica_dataset(global_dataset_fn, strategy))
    train_function = model.make_train_function()
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for metric in model.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_function(iterator).items()}
            callback_list.on_train_batch_end(step, logs)
        epoch_logs = dict(logs)
        if validation_data is not None:
            epoch_logs.update({f"val_{k}": v for k, v in evaluate_locally(model, validation_data).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history
