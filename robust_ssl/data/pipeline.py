"""Input pipelines: augmentation, task transforms and batching in `tf.data`.

A training element is a dict:
  "image" [B, H, W, 3] float32 in [0, 1], "label" [B] int32,
  "<task>/inputs" and "<task>/targets" for every task (leading dim B), and,
  with AutoML, "meta/image" [M, H, W, 3] and "meta/label" [M] from the
  validation stream of the meta loss.

Every random choice is a stateless function of (seed, step), so a batch is a
pure function of its step: runs are reproducible and resumable.
"""

import tensorflow as tf

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


def training_dataset(
    examples,
    tasks,
    batch_size,
    seed,
    meta_examples=None,
    meta_batch_size=25,
    augment_images=True,
    shuffle_buffer=10_000,
):
    """An infinite training stream of task batches.

    Args:
      examples: `tf.data.Dataset` of (image, label) with uint8 or [0, 1] images.
      tasks: list of `Task`.
      batch_size: global batch size (drop remainder, so every step is full).
      seed: integer seed of the shuffling, augmentation and task transforms.
      meta_examples: optional (image, label) dataset for the meta loss.
      meta_batch_size: validation batch size of the meta step.
      augment_images: apply pad-4 crop + flip.
      shuffle_buffer: shuffle buffer size.

    Returns:
      A `tf.data.Dataset` of dicts, repeated forever.
    """
    ds = examples.map(lambda x, y: (to_float_images(x), y), num_parallel_calls=AUTOTUNE)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    if meta_examples is not None:
        meta = meta_examples.map(lambda x, y: (to_float_images(x), tf.cast(y, tf.int32)))
        meta = (
            meta.shuffle(shuffle_buffer, seed=seed + 1).repeat().batch(meta_batch_size, drop_remainder=True)
        )
        ds = tf.data.Dataset.zip((ds, meta))
    else:
        ds = ds.map(lambda x, y: ((x, y), None))

    def build(step, element):
        (images, labels), meta_batch = element
        batch_seed = tf.stack([tf.cast(seed, tf.int64), step])
        if augment_images:
            images = augment(images, tf.random.experimental.stateless_fold_in(batch_seed, 7))
        batch = make_task_batch(images, labels, tasks, batch_seed)
        if meta_batch is not None:
            batch["meta/image"], batch["meta/label"] = meta_batch
        return batch

    return ds.enumerate().map(build, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def evaluation_dataset(examples, batch_size):
    """(image [0, 1], label) batches for evaluation, in order, keeping the remainder."""
    ds = examples.map(lambda x, y: (to_float_images(x), tf.cast(y, tf.int32)), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)
