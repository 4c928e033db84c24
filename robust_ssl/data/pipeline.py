"""Input pipelines: augmentation, task transforms and batching in `tf.data`.

A training element is a dict:
  "image" [B, H, W, 3] float32 in [0, 1], "label" [B] int32,
  "<task>/inputs" and "<task>/targets" for every task (leading dim B), and,
  with AutoML, "meta/image" [M, H, W, 3] and "meta/label" [M] from the
  validation stream of the meta loss.

Every choice (which images, crop, flip, task transforms) is a stateless
function of (seed, step), so a batch is a pure function of its step: runs are
reproducible, resumable exactly, and the same under any distribution strategy.
"""

import numpy as np
import tensorflow as tf

from robust_ssl.data import folders

AUTOTUNE = tf.data.AUTOTUNE


def augment(images, seed, pad=4):
    """Pad-4 random crop and random horizontal flip (standard CIFAR augmentation).

    Args:
      images: float32 [B, H, W, C].
      seed: int [2] stateless seed.
      pad: padding in pixels on each side before the crop.

    Returns:
      Augmented images of the same shape.
    """
    shape = tf.shape(images)
    batch, h, w = shape[0], images.shape[1], images.shape[2]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # Zero padding, as torchvision's RandomCrop(32, padding=4).
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, 0, 2 * pad + 1, dtype=tf.int32)
    rows = offsets[:, 0:1] + tf.range(h)[None, :]  # [B, H]
    cols = offsets[:, 1:2] + tf.range(w)[None, :]  # [B, W]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    cropped = tf.gather(cropped, cols, axis=2, batch_dims=1)
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)


def make_task_batch(images, labels, tasks, seed):
    """Builds the training dict of one batch (see module docstring).

    Args:
      images: float32 [B, H, W, 3] in [0, 1] (already augmented).
      labels: int [B].
      tasks: list of `Task`.
      seed: int [2] stateless seed of this batch.

    Returns:
      The dict with "image", "label" and every task's inputs and targets.
    """
    batch = {"image": images, "label": tf.cast(labels, tf.int32)}
    for task in tasks:
        for part, value in task.make_batch(images, seed).items():
            batch[f"{task.name}/{part}"] = value
    return batch


def to_float_images(images):
    """uint8 [0, 255] (or float) images -> float32 [0, 1]."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def to_arrays(examples):
    """Reads examples into numpy arrays (uint8 images stay uint8).

    Args:
      examples: an (image, label) dataset, a `folders.ImageFiles` (decoded
        here) or (images, labels) arrays (returned as they are).

    Returns:
      (images, int32 labels).
    """
    if isinstance(examples, tuple):
        return examples
    if isinstance(examples, folders.ImageFiles):
        return examples.to_arrays()
    images, labels = [], []
    for x, y in examples.batch(1024).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError("the dataset is empty")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def labels_of(examples):
    """The int labels of (images, labels) arrays or of a `folders.ImageFiles`."""
    return np.asarray(examples.labels if isinstance(examples, folders.ImageFiles) else examples[1])


def take(examples, index):
    """The examples at `index` of (images, labels) arrays or of a `folders.ImageFiles`."""
    if isinstance(examples, folders.ImageFiles):
        return examples.take(index)
    images, labels = examples
    return images[index], labels[index]


def _indexed_batches(examples, batch_size, seed, start_step):
    """Batches that are a pure function of the step: (step, images, labels).

    Each pass over the data is a stateless permutation seeded by (seed, pass);
    step s takes slice s mod (N // B) of permutation s // (N // B). So a run
    resumed at step s sees exactly the batches an uninterrupted run sees, and
    any distribution rewrite of the pipeline cannot change which images form a
    batch (a stateful `shuffle` guarantees neither).

    Args:
      examples: (images, labels) arrays in memory, or a `folders.ImageFiles`
        whose batches are read and decoded from disk step by step.
    """
    labels = tf.constant(labels_of(examples))
    n = int(labels.shape[0])
    steps_per_pass = n // batch_size
    if steps_per_pass < 1:
        raise ValueError(f"{n} examples are fewer than one batch of {batch_size}")
    if isinstance(examples, folders.ImageFiles):
        paths = tf.constant(examples.paths)

        def images_at(index):
            return examples.decode(tf.gather(paths, index))

    else:
        images = tf.constant(examples[0])

        def images_at(index):
            return tf.gather(images, index)

    def batch(step):
        permutation = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), step // steps_per_pass])
        )
        offset = (step % steps_per_pass) * batch_size
        index = permutation[offset : offset + batch_size]
        return step, to_float_images(images_at(index)), tf.gather(labels, index)

    return tf.data.Dataset.range(start_step, 2**62).map(
        batch, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def training_dataset(
    examples,
    tasks,
    batch_size,
    seed,
    meta_examples=None,
    meta_batch_size=25,
    augment_images=True,
    start_step=0,
):
    """An infinite training stream of task batches, a pure function of the step.

    In-memory examples are gathered per batch; a `folders.ImageFiles` is read
    and decoded from disk per batch (memory stays flat); a dataset is read into
    memory first (fine for 32x32 sets: CIFAR-10's train split is 150 MB as uint8).

    Args:
      examples: (images, labels) arrays (uint8 or [0, 1] images), a
        `folders.ImageFiles`, or a `tf.data.Dataset` of (image, label).
      tasks: list of `Task`.
      batch_size: global batch size (every step is full).
      seed: integer seed of the shuffling, augmentation and task transforms.
      meta_examples: optional (image, label) dataset for the meta loss.
      meta_batch_size: validation batch size of the meta step.
      augment_images: apply pad-4 crop + flip.
      start_step: global step of the first batch (to resume a run exactly).

    Returns:
      A `tf.data.Dataset` of dicts.
    """
    if not isinstance(examples, (tuple, folders.ImageFiles)):
        examples = to_arrays(examples)
    train = _indexed_batches(examples, batch_size, seed, start_step)
    if meta_examples is not None:
        meta = _indexed_batches(to_arrays(meta_examples), meta_batch_size, seed + 1, start_step)
        ds = tf.data.Dataset.zip((train, meta))
    else:
        ds = train.map(lambda *element: (element, None))

    def build(element, meta_batch):
        step, images, labels = element
        batch_seed = tf.stack([tf.cast(seed, tf.int64), step])
        if augment_images:
            images = augment(images, tf.random.experimental.stateless_fold_in(batch_seed, 7))
        batch = make_task_batch(images, labels, tasks, batch_seed)
        if meta_batch is not None:
            _, batch["meta/image"], batch["meta/label"] = meta_batch
        return batch

    return ds.map(build, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def evaluation_dataset(examples, batch_size):
    """(image [0, 1], label) batches for evaluation, in order, keeping the remainder."""
    ds = examples.map(lambda x, y: (to_float_images(x), tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
