"""Test-time adaptation of a trained model: BN statistics, TENT and TTT.

An `Adapter` predicts test batches one after the other and may adapt the
model to them as it goes; `reset()` restores the trained model (robustness
evaluation resets it at the start of every corruption cell, so nothing leaks
from one cell to the next). The model itself is never changed: the adapted
weights are the adapter's own copies (`tf.Variable`s), run through the trunk
and heads functionally (`stateless_call`). Resetting assigns the saved values
to those copies and to the optimiser's state; every step is a `tf.function`
traced once per adapter, so episodic modes do not pay for retracing.

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
import dataclasses
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from robust_ssl.errors import UserError
from robust_ssl.model import stateless
from robust_ssl.tasks import Forward
from robust_ssl.tasks.base import random_indices, sparse_ce

MODES = ("none", "bn", "tent", "ttt", "ttt_batch", "ttt_bn")
_BATCH_TTT = ("ttt_batch", "ttt_bn")
_CROP_PADDING = 4  # the official TTT code's RandomCrop(32, padding=4)


@dataclasses.dataclass
class Settings:
    """Options of the adaptation modes (see the module docstring for each mode).

    The defaults are TENT's CIFAR settings for `tent` and the settings of the
    TTT paper's standard version for `ttt`; `ttt_batch` and `ttt_bn` are this
    package's own variants and their defaults are ours.

    Attributes:
      batch_size: test batch size of `bn`, `tent`, `ttt_batch` and `ttt_bn`
        (TENT: 200); `ttt` predicts one image at a time whatever it is.
      bn_prior: `bn`'s prior strength N (0: test-batch statistics only).
      tent_lr, tent_steps, tent_episodic: TENT's Adam learning rate, steps
        per batch, and whether to reset before every batch.
      ttt_tasks: task names for `ttt`, `ttt_batch` and `ttt_bn` ("" = the
        run's tasks with `probe_classes > 0`, e.g. rotation); `ttt` accepts
        only such tasks.
      ttt_lr: SGD learning rate of `ttt`, `ttt_batch` and `ttt_bn` (1e-3).
      ttt_steps: `ttt`'s SGD steps per image (the paper: 1, and 10).
      ttt_batch_size: `ttt`'s augmented copies per image (the paper: 32).
      ttt_online: keep the TTT modes' adaptation across a cell's images or
        batches (default: reset before every image / batch).
      ttt_batch_steps: SGD steps per test batch of `ttt_batch` and `ttt_bn`.
      ttt_momentum: SGD momentum of `ttt_batch` and `ttt_bn` (`ttt` has none).
      ttt_params: what `ttt_batch` and `ttt_bn` update: "trunk" (all trunk
        weights) or "bn" (batch-norm scale and shift).
      seed: seed of the random transforms at test time and of the order of
        the test stream.
      shuffle: feed a cell's images in an order shuffled by `seed` (the
        outputs come back in the original order). Test sets read from image
        folders are sorted by class, and a batch of one or two classes has
        batch statistics no deployed stream has: `bn` and `tent` would be
        measured on a failure case of theirs instead of on i.i.d. batches.
    """

    batch_size: int = 200
    bn_prior: float = 0.0
    tent_lr: float = 1e-3
    tent_steps: int = 1
    tent_episodic: bool = False
    ttt_tasks: str = ""
    ttt_lr: float = 1e-3
    ttt_steps: int = 1
    ttt_batch_size: int = 32
    ttt_online: bool = False
    ttt_batch_steps: int = 3
    ttt_momentum: float = 0.0
    ttt_params: str = "trunk"
    seed: int = 0
    shuffle: bool = True


def parse_modes(text):
    """("none", "bn", …) from "none,bn,…", refusing unknown modes in one line."""
    modes = [m.strip() for m in (text or "none").split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"unknown adaptation mode(s) {unknown}; choose from {', '.join(MODES)}")
    return tuple(dict.fromkeys(modes))


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _batch_norm_affine(trunk):
    """Indices into `trunk.trainable_variables` of the batch-norm scales and shifts."""
    wanted = {
        id(v)
        for layer in _layers(trunk)
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.trainable_variables
    }
    return [i for i, v in enumerate(trunk.trainable_variables) if id(v) in wanted]


def entropy(logits):
    """Per-example Shannon entropy of softmax(logits) (nats)."""
    log_p = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    return -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)


class _PriorBatchNormalization(keras.layers.BatchNormalization):
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


def _with_prior_batch_norm(trunk, prior):
    """A copy of `trunk` whose batch norms use prior-mixed statistics (weights copied)."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return _PriorBatchNormalization(prior=prior, **layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(trunk, clone_function=clone, recursive=True)
    copy.set_weights(trunk.get_weights())
    return copy


def _batch_statistics_trunk(trunk, prior=0.0):
    """`_with_prior_batch_norm`, checked to take the trunk's weights in its order.

    Returns None (with a warning) for a trunk Keras cannot clone; the forwards
    then run the trunk in training mode (batch statistics, and dropout if it
    has any).
    """
    try:
        copy = _with_prior_batch_norm(trunk, prior)
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


def _crops_and_flips(image, copies, seed, padding=_CROP_PADDING):
    """`copies` random crops (zero padding `padding`) of one [H, W, C] image, each flipped with p 1/2."""
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


def _probe_batch(task, images, labels):
    """Each image transformed by its own class (`task.probe_inputs` of every class, gathered)."""
    stacked = tf.stack([task.probe_inputs(images, k) for k in range(task.probe_classes)], axis=1)
    return tf.gather(stacked, labels, axis=1, batch_dims=1)


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
            self._batch_trunk = _batch_statistics_trunk(self.trunk, s.bn_prior if mode == "bn" else 0.0)
        image_spec = tf.TensorSpec([None, *getattr(model, "image_shape", (None, None, None))], tf.float32)
        seed_spec = tf.TensorSpec([2], tf.int64)
        if mode in ("tent", *_BATCH_TTT):
            if mode == "tent":
                self._updated = _batch_norm_affine(self.trunk)
                self._optimizer = keras.optimizers.Adam(s.tent_lr)
            else:
                self._tasks = self._batch_ttt_tasks(lambdas)
                if s.ttt_params not in ("trunk", "bn"):
                    raise UserError(f"ttt_params must be 'trunk' or 'bn'; got {s.ttt_params!r}")
                self._updated = (
                    list(range(len(self.params)))
                    if s.ttt_params == "trunk"
                    else _batch_norm_affine(self.trunk)
                )
                self._optimizer = keras.optimizers.SGD(s.ttt_lr, momentum=s.ttt_momentum)
            self._optimizer.build([self.params[i] for i in self._updated])
            self._state += [(self.params[i], self._initial[i]) for i in self._updated]
            self._state += [(v, tf.identity(v.value)) for v in self._optimizer.variables]
            self._step = tf.function(self._step_fn, input_signature=[image_spec, seed_spec])
        if mode == "ttt":
            self._image_tasks = self._image_ttt_tasks()
            self._state += list(zip(self.params, self._initial))
            for task, _, variables, _ in self._image_tasks:
                self.head_params[task.name] = variables
                self._state += [(v, tf.identity(v)) for v in variables]
            self._adapt_image = tf.function(
                self._adapt_image_fn,
                input_signature=[tf.TensorSpec(image_spec.shape[1:], tf.float32), seed_spec],
            )
        if mode in ("bn", *_BATCH_TTT):
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

    def _image_ttt_tasks(self):
        heads = dict(zip(self.model.task_names, self.model.heads_by_task))
        out = []
        for task in self._wanted_tasks():
            head = heads[task.name]
            if not task.probe_classes or head is None:
                raise UserError(
                    f"--adapt=ttt adapts with tasks that classify a transformation of the image with their "
                    f"own head (e.g. rotation); {task.name!r} does not (--adapt=ttt_batch takes any task)"
                )
            variables = [tf.Variable(v.value, trainable=True) for v in head.trainable_variables]
            out.append((task, head, variables, [v.value for v in head.non_trainable_variables]))
        return out

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

    def _image_loss(self, image, seed):
        """`ttt`'s loss on the augmented, transformed copies of one image."""
        s = self.settings
        copies = _crops_and_flips(image, s.ttt_batch_size, tf.random.experimental.stateless_fold_in(seed, 0))
        values = self.values()
        total = 0.0
        for task, head, variables, head_non_trainable in self._image_tasks:
            labels = random_indices(task.task_seed(seed), s.ttt_batch_size, task.probe_classes)
            features = self._features(values, _probe_batch(task, copies, labels), True)
            logits, _ = head.stateless_call(
                [tf.convert_to_tensor(v) for v in variables], head_non_trainable, features, training=False
            )
            total += tf.reduce_mean(sparse_ce(labels, logits))
        return total

    def _adapt_image_fn(self, image, seed):
        """`ttt` on one image: reset (episodic), the SGD steps, the prediction."""
        self.traces["image"] += 1
        s = self.settings
        if not s.ttt_online:
            self._assign_initial()
        variables = self.params + [v for _, _, head_vars, _ in self._image_tasks for v in head_vars]
        loss = tf.constant(0.0)
        for step in range(s.ttt_steps):
            with tf.GradientTape() as tape:
                loss = self._image_loss(image, tf.random.experimental.stateless_fold_in(seed, step))
            for variable, grad in zip(variables, tape.gradient(loss, variables)):
                if grad is not None:
                    variable.assign_sub(s.ttt_lr * tf.cast(grad, variable.dtype))
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
        """Logits of one test batch (float32 [N, H, W, 3] in [0, 1]), adapting as the mode says.

        `ttt` adapts to and predicts the batch's images one at a time, in order.
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
