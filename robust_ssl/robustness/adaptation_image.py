"""`ttt`, test-time training one image at a time (Sun et al., ICML 2020).

The image is replicated into `ttt_batch_size` copies, each randomly cropped
(4-pixel zero padding) and flipped (`crops_and_flips`), each transformed by a
random class of a task that classifies transformations (`probe_batch`); SGD
steps on the mean cross-entropy of those labels update the trunk and the
task's head (`ImageTTT`). The mode itself, its reset and its prediction: the
`Adapter` of `robust_ssl.robustness.adaptation`, whose docstring says where
this differs from the official code.
"""

import tensorflow as tf

from robust_ssl.errors import UserError
from robust_ssl.tasks.base import random_indices, sparse_ce

CROP_PADDING = 4  # the official TTT code's RandomCrop(32, padding=4)


def crops_and_flips(image, copies, seed, padding=CROP_PADDING):
    """Random crops of one image, each flipped horizontally with probability 1/2.

    Args:
      image: [H, W, C] image.
      copies: how many crops.
      seed: int64 [2] stateless seed of the offsets and flips.
      padding: zero padding on each side before cropping H × W.

    Returns:
      [copies, H, W, C] crops.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [copies, 2],
        seed=tf.random.experimental.stateless_fold_in(seed, 0),
        minval=0,
        maxval=2 * padding + 1,
        dtype=tf.int32,
    )
    rows = offsets[:, :1] + tf.range(height)[None]  # [n, H]
    cols = offsets[:, 1:] + tf.range(width)[None]  # [n, W]
    crops = tf.gather(tf.gather(padded, rows), cols, axis=2, batch_dims=1)  # [n, H, W, C]
    flip = tf.random.stateless_uniform([copies], seed=tf.random.experimental.stateless_fold_in(seed, 1)) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(crops, axis=[2]), crops)


def probe_batch(task, images, labels):
    """Each image transformed by its own class (`task.probe_inputs` of every class, gathered).

    Args:
      task: a task with `probe_classes > 0`.
      images: [N, H, W, C] images.
      labels: int [N] classes of the transformation, in [0, probe_classes).

    Returns:
      [N, H, W, C] transformed images.
    """
    stacked = tf.stack([task.probe_inputs(images, k) for k in range(task.probe_classes)], axis=1)
    return tf.gather(stacked, labels, axis=1, batch_dims=1)


class ImageTTT:
    """The heads `ttt` adapts, its loss on one image's copies and its SGD steps.

    Args:
      tasks: [(task, its trained head)], each task classifying a transformation.
      settings: the adaptation `Settings` (`ttt_batch_size`, `ttt_steps`, `ttt_lr`).

    Attributes:
      head_params: {task name: the head's adapted weights (`tf.Variable`s)}.
      state: [(variable, the value a reset assigns)] of the heads' weights.

    Raises:
      UserError: a task that classifies no transformation, or has no head.
    """

    def __init__(self, tasks, settings):
        self.settings = settings
        self.tasks = []  # (task, head, adapted head weights, head's non-trainable values)
        for task, head in tasks:
            if not task.probe_classes or head is None:
                raise UserError(
                    f"--adapt=ttt adapts with tasks that classify a transformation of the image with their "
                    f"own head (e.g. rotation); {task.name!r} does not (--adapt=ttt_batch takes any task)"
                )
            variables = [tf.Variable(v.value, trainable=True) for v in head.trainable_variables]
            self.tasks.append((task, head, variables, [v.value for v in head.non_trainable_variables]))
        self.head_params = {task.name: variables for task, _, variables, _ in self.tasks}
        self.state = [(v, tf.identity(v)) for _, _, variables, _ in self.tasks for v in variables]

    def loss(self, params, features, image, seed):
        """`ttt`'s loss on the augmented, transformed copies of one image.

        Args:
          params: the adapted trunk weights (`tf.Variable`s), read here so a tape records them.
          features: (trunk values, images, batch_stats) -> the trunk's features.
          image: float32 [H, W, C].
          seed: int64 [2] stateless seed of the copies and their labels.

        Returns:
          The scalar loss, summed over the tasks.
        """
        s = self.settings
        copies = crops_and_flips(image, s.ttt_batch_size, tf.random.experimental.stateless_fold_in(seed, 0))
        values = [tf.convert_to_tensor(p) for p in params]
        total = 0.0
        for task, head, variables, head_non_trainable in self.tasks:
            labels = random_indices(task.task_seed(seed), s.ttt_batch_size, task.probe_classes)
            task_features = features(values, probe_batch(task, copies, labels), True)
            logits, _ = head.stateless_call(
                [tf.convert_to_tensor(v) for v in variables],
                head_non_trainable,
                task_features,
                training=False,
            )
            total += tf.reduce_mean(sparse_ce(labels, logits))
        return total

    def steps(self, params, features, image, seed):
        """`ttt_steps` plain SGD steps on one image, updating the trunk's and the heads' weights.

        Args:
          params: the adapted trunk weights (`tf.Variable`s), updated in place.
          features: as in `loss`.
          image: float32 [H, W, C].
          seed: int64 [2] stateless seed; step k uses its fold-in k.

        Returns:
          The last step's loss.
        """
        s = self.settings
        variables = params + [v for _, _, head_vars, _ in self.tasks for v in head_vars]
        loss = tf.constant(0.0)
        for step in range(s.ttt_steps):
            with tf.GradientTape() as tape:
                loss = self.loss(
                    params, features, image, tf.random.experimental.stateless_fold_in(seed, step)
                )
            for variable, grad in zip(variables, tape.gradient(loss, variables)):
                if grad is not None:
                    variable.assign_sub(s.ttt_lr * tf.cast(grad, variable.dtype))
        return loss
