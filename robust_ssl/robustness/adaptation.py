"""Test-time adaptation of a trained model: BN statistics, TENT and TTT.

An `Adapter` predicts test batches one after the other and may adapt the
model to them as it goes; `reset()` restores the trained model (robustness
evaluation resets it at the start of every corruption cell, so nothing leaks
from one cell to the next). The model itself is never changed: the adapted
weights are the adapter's own copies (`tf.Variable`s), run through the trunk
and heads functionally (`stateless_call`). Resetting assigns the saved values
to those copies and to the optimiser's state; every step is a `tf.function`
traced once per adapter, so episodic modes do not pay for retracing.

The modes' names and settings live in `adaptation_modes` (`MODES`,
`Settings`, `parse_modes`, importable from here too), the batch-statistics
trunk and TENT's entropy in `adaptation_norm`, `ttt`'s per-image steps in
`adaptation_image`; this module holds the `Adapter` that runs a mode and
`predict_cell`.

"Batch statistics" below means: every batch-norm layer normalises with the
mean and variance of the batch it is given, while dropout and stochastic
depth stay off (a copy of the trunk whose batch-norm layers always use batch
statistics, called in inference mode). The training (moving) statistics are
never updated by any mode.

Modes:
- `none`: the trained model as it is (batch norm with its training statistics).
- `bn`: batch norm with the statistics of the test batch (Schneider et al.,
  NeurIPS 2020); with a prior strength N > 0, each layer normalises with
  (N · training + n · test-batch) / (N + n) statistics, n the batch size.
  Nothing else changes (no dropout), so it is deterministic.
- `tent`: TENT (Wang et al., ICLR 2021): test-batch statistics, and per batch
  one Adam step (lr 1e-3) on the mean entropy of the predictions, updating
  only the batch-norm scale and shift; the batch's predictions are those of
  the forward that computed the loss (as the TENT code). Online within a cell
  (reset between cells); `episodic` resets before every batch.
- `ttt`: test-time training, the standard version of Sun et al. (ICML 2020,
  the ttt_cifar_release code), one test image at a time: the image is
  replicated into a batch of `ttt_batch_size` (32) copies, each randomly
  cropped (4-pixel zero padding) and flipped horizontally (the official
  `tr_transforms`), each copy transformed by a random class k of a task that
  classifies transformations (rotation: k · 90°, label k); `ttt_steps` (1)
  plain SGD steps (lr 1e-3, no momentum) on the mean cross-entropy of those
  labels, loss weight 1 per task (not the run's λ), updating the trunk and the
  task's head; the copies' forward uses their batch statistics (the official
  `ssh.train()`). Fresh copies and labels at every step. Then the image is
  predicted with the adapted trunk and the training statistics (the official
  `net.eval()`). Episodic: trunk and head are reset before every image;
  `ttt_online` keeps them across a cell's images (reset between cells). The
  tasks: `ttt_tasks`, by default the run's tasks with `probe_classes > 0`
  (rotation, RGB permutation, jigsaw), each with its own trained head.
  Where this differs from the official code: (1) with batch norm, PyTorch's
  `train()` mode also updates the running statistics from the copies
  (momentum 0.1) at every step, so the official prediction uses statistics
  moved towards the test image; we predict with the trained statistics,
  unchanged; (2) the paper's headline models use group norm, ours batch
  norm; (3) the head is the run's own head on the trunk's features (the
  official default shares the network up to layer 2 and the head holds a
  copy of layer 3); (4) the random crops, flips and labels come from
  stateless seeds (the adapter's seed and the image's position in the cell's
  stream), so a run is reproducible.
- `ttt_batch`: a batch variant of TTT (not the paper's protocol): per test
  batch `ttt_batch_steps` (3) SGD steps (lr 1e-3, momentum `ttt_momentum`, 0)
  on Σ λ_i L_i of the chosen tasks (by default the run's `probe_classes`
  tasks, each loss as in training, weighted by the run's final λ), with batch
  statistics, updating the trunk (or only its batch-norm scale and shift,
  `ttt_params="bn"`), then predicting the batch with the adapted weights and
  the training statistics. Episodic by default (reset before every batch);
  `ttt_online` keeps the adaptation within a cell.
- `ttt_bn`: `ttt_batch`'s adaptation, then predicting the batch with the
  adapted weights and the test batch's statistics (as `bn`).
"""

import collections
import time

import keras
import numpy as np
import tensorflow as tf

from robust_ssl.errors import UserError
from robust_ssl.networks import stateless
from robust_ssl.robustness.adaptation_image import ImageTTT
from robust_ssl.robustness.adaptation_modes import BATCH_TTT, MODES, Settings
from robust_ssl.robustness.adaptation_modes import parse_modes as parse_modes
from robust_ssl.robustness.adaptation_norm import batch_norm_affine, batch_statistics_trunk, entropy
from robust_ssl.tasks import Forward


class Adapter:
    """Predicts test batches with one adaptation mode (see the module docstring).

    Args:
      model: a trained `RobustSSLModel`.
      mode: one of `MODES`.
      settings: `Settings`.
      lambdas: {task: λ} weighting `ttt_batch`'s losses (default: the model's λ).

    Attributes:
      params: the adapted trunk weights (`tf.Variable`s, trunk order).
      head_params: {task: its head's adapted weights} (`ttt` only).
      traces: how often each compiled function was traced ({name: count}).

    Raises:
      UserError: a TTT mode on a model without the heads it needs, or
        invalid settings.
    """

    def __init__(self, model, mode, settings=None, lambdas=None):
        if mode not in MODES:
            raise UserError(f"unknown adaptation mode {mode!r}; choose from {', '.join(MODES)}")
        self.model, self.mode, self.settings = model, mode, settings or Settings()
        s = self.settings
        for name in ("tent_steps", "ttt_steps", "ttt_batch_size", "ttt_batch_steps"):
            if int(getattr(s, name)) < 1:
                raise UserError(f"{name} must be at least 1; got {getattr(s, name)}")
        self.trunk, self.classifier = model.trunk, model.classifier
        self._initial = [tf.identity(v.value) for v in self.trunk.trainable_variables]
        self._non_trainable = [v.value for v in self.trunk.non_trainable_variables]
        self.params = [tf.Variable(v, trainable=True) for v in self._initial]
        self.head_params = {}
        self.batches = 0
        self.seconds = 0.0
        self.images = 0
        self.traces = collections.Counter()
        self._position = 0  # images (ttt) or batches (the others) since the last reset
        self._state = []  # (variable, value it is reset to)
        self._batch_trunk = None
        if mode != "none":
            self._batch_trunk = batch_statistics_trunk(self.trunk, s.bn_prior if mode == "bn" else 0.0)
        image_spec = tf.TensorSpec([None, *getattr(model, "image_shape", (None, None, None))], tf.float32)
        seed_spec = tf.TensorSpec([2], tf.int64)
        if mode in ("tent", *BATCH_TTT):
            if mode == "tent":
                self._updated = batch_norm_affine(self.trunk)
                self._optimizer = keras.optimizers.Adam(s.tent_lr)
            else:
                self._tasks = self._batch_ttt_tasks(lambdas)
                if s.ttt_params not in ("trunk", "bn"):
                    raise UserError(f"ttt_params must be 'trunk' or 'bn'; got {s.ttt_params!r}")
                self._updated = (
                    list(range(len(self.params)))
                    if s.ttt_params == "trunk"
                    else batch_norm_affine(self.trunk)
                )
                self._optimizer = keras.optimizers.SGD(s.ttt_lr, momentum=s.ttt_momentum)
            self._optimizer.build([self.params[i] for i in self._updated])
            self._state += [(self.params[i], self._initial[i]) for i in self._updated]
            self._state += [(v, tf.identity(v.value)) for v in self._optimizer.variables]
            self._step = tf.function(self._step_fn, input_signature=[image_spec, seed_spec])
        if mode == "ttt":
            heads = dict(zip(model.task_names, model.heads_by_task))
            self._image_ttt = ImageTTT([(t, heads[t.name]) for t in self._wanted_tasks()], s)
            self.head_params = self._image_ttt.head_params
            self._state += list(zip(self.params, self._initial))
            self._state += self._image_ttt.state
            self._adapt_image = tf.function(
                self._adapt_image_fn,
                input_signature=[tf.TensorSpec(image_spec.shape[1:], tf.float32), seed_spec],
            )
        if mode in ("bn", *BATCH_TTT):
            self._predict = tf.function(self._predict_fn, input_signature=[image_spec])
        if self._state:
            self._reset = tf.function(self._reset_fn, input_signature=[])
        self.reset()

    # ------------------------------------------------------------------ tasks
    def _wanted_tasks(self):
        model = self.model
        tasks = {t.name: t for t in model.tasks}
        wanted = [n.strip() for n in self.settings.ttt_tasks.split(",") if n.strip()]
        if not wanted:
            wanted = [t.name for t in model.tasks if t.probe_classes]
        if not wanted:
            raise UserError(
                f"--adapt={self.mode} needs a run trained with a task that classifies a transformation "
                f"(e.g. rotation) or --ttt_tasks; this run has {', '.join(model.task_names) or 'no task'}"
            )
        missing = [n for n in wanted if n not in tasks]
        if missing:
            raise UserError(
                f"--adapt={self.mode}: the run has no trained head for {', '.join(missing)} "
                f"(its tasks: {', '.join(model.task_names) or 'none'})"
            )
        return [tasks[n] for n in wanted]

    def _batch_ttt_tasks(self, lambdas):
        lambdas = lambdas or self.model.lambda_values()
        heads = dict(zip(self.model.task_names, self.model.heads_by_task))
        return [(t, heads[t.name], float(lambdas.get(t.name, 1.0))) for t in self._wanted_tasks()]

    # ------------------------------------------------------------------ state
    def _assign_initial(self):
        for variable, value in self._state:
            variable.assign(value)

    def _reset_fn(self):
        self.traces["reset"] += 1
        self._assign_initial()

    def reset(self):
        """Restores the trained weights and the optimiser's initial state (no retracing)."""
        if self._state:
            self._reset()
        self._position = 0

    # ------------------------------------------------------------------ forwards
    def values(self):
        """The adapted trunk weights as tensors (a read the gradient tape records)."""
        return [tf.convert_to_tensor(p) for p in self.params]

    def _features(self, params, images, batch_stats):
        """Trunk features, in inference mode; `batch_stats`: batch norm with batch statistics."""
        if not batch_stats:
            trunk, training = self.trunk, False
        elif self._batch_trunk is not None:
            trunk, training = self._batch_trunk, False
        else:  # a trunk that could not be cloned
            trunk, training = self.trunk, True
        features, _ = trunk.stateless_call(params, self._non_trainable, images, training=training)
        return features

    def _logits(self, params, images, batch_stats):
        return self.classifier(self._features(params, images, batch_stats), training=False)

    def _ttt_loss(self, params, images, seed):
        """Σ λ_i L_i of `ttt_batch`'s tasks on one batch (batch statistics)."""

        def encode(x):
            return self._features(params, x, True)

        clean = encode(images)
        forward = Forward(clean, self.classifier(clean), encode, self.classifier)
        total = 0.0
        for task, head, weight in self._tasks:
            batch = task.make_batch(images, seed)
            predictions = task.predict(
                None if head is None else stateless(head), forward, batch.get("inputs"), training=True
            )
            total += weight * tf.reduce_mean(task.per_example_loss(batch["targets"], predictions))
        return total

    def _step_fn(self, images, seed):
        """One optimiser step of `tent` or `ttt_batch`/`ttt_bn` on a batch."""
        self.traces["step"] += 1
        updated = [self.params[i] for i in self._updated]
        with tf.GradientTape() as tape:
            values = self.values()
            if self.mode == "tent":
                logits = self._logits(values, images, True)
                loss = tf.reduce_mean(entropy(logits))
            else:
                logits = tf.zeros([tf.shape(images)[0], self.model.num_classes])
                loss = self._ttt_loss(values, images, seed)
        grads = tape.gradient(loss, updated)
        self._optimizer.apply(grads, updated)
        return logits, loss

    def _adapt_image_fn(self, image, seed):
        """`ttt` on one image: reset (episodic), the SGD steps, the prediction."""
        self.traces["image"] += 1
        if not self.settings.ttt_online:
            self._assign_initial()
        loss = self._image_ttt.steps(self.params, self._features, image, seed)
        return self._logits(self.values(), image[None], False)[0], loss

    def _predict_fn(self, images):
        self.traces["predict"] += 1
        return self._logits(self.values(), images, self.mode != "ttt_batch")

    def adapt_image(self, image, seed):
        """`ttt` on one image with a given seed: adapts (as the settings say) and predicts.

        Args:
          image: float32 [H, W, 3] in [0, 1].
          seed: (int, int) stateless seed of the image's crops, flips and labels.

        Returns:
          (float32 [classes] logits, the last step's loss); `params` and
          `head_params` hold the adapted weights afterwards.
        """
        logits, loss = self._adapt_image(tf.convert_to_tensor(image, tf.float32), tf.constant(seed, tf.int64))
        return logits.numpy(), float(loss)

    # ------------------------------------------------------------------ predict
    def predict(self, images):
        """Logits of one test batch, adapting as the mode says.

        `ttt` adapts to and predicts the batch's images one at a time, in order.

        Args:
          images: float32 [N, H, W, 3] in [0, 1].

        Returns:
          float32 [N, classes] logits (numpy).
        """
        images = tf.convert_to_tensor(images, tf.float32)
        start = time.perf_counter()
        s = self.settings
        if self.mode == "none":
            logits = self.model(images, training=False)
        elif self.mode == "bn":
            logits = self._predict(images)
        elif self.mode == "tent":
            if s.tent_episodic:
                self.reset()
            for k in range(s.tent_steps):
                logits, _ = self._step(images, tf.constant([s.seed, self._position * 1000 + k], tf.int64))
            self._position += 1
        elif self.mode == "ttt":
            logits = []
            for image in tf.unstack(images):
                seed = tf.constant([s.seed, self._position], tf.int64)
                logits.append(self._adapt_image(image, seed)[0])
                self._position += 1
            logits = tf.stack(logits) if logits else tf.zeros([0, self.model.num_classes])
        else:  # ttt_batch, ttt_bn
            if not s.ttt_online:
                self.reset()
            for k in range(s.ttt_batch_steps):
                self._step(images, tf.constant([s.seed, self._position * 1000 + k], tf.int64))
            self._position += 1
            logits = self._predict(images)
        logits = np.asarray(logits)
        self.seconds += time.perf_counter() - start
        self.batches += 1
        self.images += len(logits)
        return logits


def predict_cell(adapter, images, batch_size=None):
    """Logits of a whole cell in test batches, the adapter reset first.

    The batches follow a fixed permutation of the cell (by the settings'
    seed) unless `settings.shuffle` is off; the logits are returned in the
    images' own order either way. `ttt` takes the same stream image by image.

    Args:
      adapter: an `Adapter`.
      images: float32 or uint8 [N, H, W, 3] (uint8 is scaled to [0, 1]).
      batch_size: test batch size (default: the adapter's settings).

    Returns:
      float32 [N, classes] logits.
    """
    adapter.reset()
    batch_size = batch_size or adapter.settings.batch_size
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    if not len(images):
        return np.zeros((0, adapter.model.num_classes), np.float32)
    order = np.arange(len(images))
    if adapter.settings.shuffle:
        order = np.random.default_rng(adapter.settings.seed).permutation(len(images))
    stream = images[order]
    outputs = np.concatenate(
        [adapter.predict(stream[i : i + batch_size]) for i in range(0, len(stream), batch_size)]
    )
    logits = np.empty_like(outputs)
    logits[order] = outputs
    return logits
