"""Test-time adaptation of a trained model: BN statistics, TENT and TTT.

An `Adapter` predicts test batches one after the other and may adapt the
model to them as it goes; `reset()` restores the trained model (robustness
evaluation resets it at the start of every corruption cell, so nothing leaks
from one cell to the next). The model itself is never changed: the adapted
weights are the adapter's own copies, run through the trunk functionally
(`stateless_call`).

Modes:
- `none`: the trained model as it is (batch norm with its training statistics).
- `bn`: batch norm with the statistics of the test batch (Schneider et al.,
  NeurIPS 2020); with a prior strength N > 0, each layer normalises with
  (N · training + n · test-batch) / (N + n) statistics, n the batch size.
- `tent`: TENT (Wang et al., ICLR 2021): test-batch statistics, and per batch
  one Adam step (lr 1e-3) on the mean entropy of the predictions, updating
  only the batch-norm scale and shift; the batch's predictions are those of
  the forward that computed the loss (as the TENT code). Online within a cell
  (reset between cells); `episodic` resets before every batch.
- `ttt`: test-time training (Sun et al., ICML 2020) with the run's own
  self-supervised heads: per batch a few SGD steps on Σ λ_i L_i of the chosen
  tasks (by default the run's tasks that classify a transformation of the
  image — rotation, RGB, jigsaw — weighted by the run's final λ), updating the
  trunk (or only its batch-norm scale and shift), then the prediction with the
  adapted weights and the training statistics. Episodic by default (reset
  before every batch); `online` keeps the adaptation within a cell.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from robust_ssl.errors import UserError
from robust_ssl.model import stateless
from robust_ssl.tasks import Forward

MODES = ("none", "bn", "tent", "ttt")


@dataclasses.dataclass
class Settings:
    """Options of the adaptation modes (defaults: the papers' CIFAR settings).

    Attributes:
      batch_size: test batch size (TENT: 200).
      bn_prior: `bn`'s prior strength N (0: test-batch statistics only).
      tent_lr, tent_steps, tent_episodic: TENT's Adam learning rate, steps
        per batch, and whether to reset before every batch.
      ttt_tasks: task names for `ttt` ("" = the run's transformation tasks).
      ttt_lr, ttt_momentum, ttt_steps: TTT's SGD settings and steps per batch.
      ttt_params: "trunk" (all trunk weights, as TTT) or "bn" (BN scale/shift).
      ttt_online: keep TTT's adaptation within a cell (default: episodic).
      seed: seed of the tasks' random transforms at test time and of the
        order of the test stream.
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
    ttt_momentum: float = 0.9
    ttt_steps: int = 3
    ttt_params: str = "trunk"
    ttt_online: bool = False
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
    """Batch norm whose statistics mix the training ones with the batch's (prior N)."""

    def __init__(self, prior=0.0, **kwargs):
        super().__init__(**kwargs)
        self.prior = float(prior)

    def call(self, inputs, training=None, mask=None):
        axes = [i for i in range(len(inputs.shape)) if i != self.axis % len(inputs.shape)]
        x = tf.cast(inputs, tf.float32)
        mean, variance = tf.nn.moments(x, axes=axes)
        n = tf.cast(tf.shape(x)[0], tf.float32)
        w = self.prior / (self.prior + n)
        mean = w * tf.cast(self.moving_mean, tf.float32) + (1 - w) * mean
        variance = w * tf.cast(self.moving_variance, tf.float32) + (1 - w) * variance
        out = tf.nn.batch_normalization(
            x, mean, variance, tf.cast(self.beta, tf.float32), tf.cast(self.gamma, tf.float32), self.epsilon
        )
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


class Adapter:
    """Predicts test batches with one adaptation mode (see the module docstring).

    Args:
      model: a trained `RobustSSLModel`.
      mode: one of `MODES`.
      settings: `Settings`.
      lambdas: {task: λ} weighting TTT's losses (default: the model's λ).

    Raises:
      UserError: `ttt` on a model without the heads it needs.
    """

    def __init__(self, model, mode, settings=None, lambdas=None):
        if mode not in MODES:
            raise UserError(f"unknown adaptation mode {mode!r}; choose from {', '.join(MODES)}")
        self.model, self.mode, self.settings = model, mode, settings or Settings()
        self.trunk, self.classifier = model.trunk, model.classifier
        self._initial = [tf.identity(v.value) for v in self.trunk.trainable_variables]
        self._non_trainable = [v.value for v in self.trunk.non_trainable_variables]
        self.params = [tf.Variable(v, trainable=True) for v in self._initial]
        self.batches = 0
        self.seconds = 0.0
        self.images = 0
        if mode == "bn" and self.settings.bn_prior > 0:
            self._prior_trunk = _with_prior_batch_norm(self.trunk, self.settings.bn_prior)
        if mode == "tent":
            self._updated = _batch_norm_affine(self.trunk)
            self._new_optimizer = lambda: keras.optimizers.Adam(self.settings.tent_lr)
        if mode == "ttt":
            self._tasks = self._ttt_tasks(lambdas)
            if self.settings.ttt_params not in ("trunk", "bn"):
                raise UserError(f"ttt_params must be 'trunk' or 'bn'; got {self.settings.ttt_params!r}")
            self._updated = (
                list(range(len(self.params)))
                if self.settings.ttt_params == "trunk"
                else _batch_norm_affine(self.trunk)
            )
            self._new_optimizer = lambda: keras.optimizers.SGD(
                self.settings.ttt_lr, momentum=self.settings.ttt_momentum
            )
        self.reset()

    def _ttt_tasks(self, lambdas):
        model = self.model
        lambdas = lambdas or model.lambda_values()
        heads = dict(zip(model.task_names, model.heads_by_task))
        tasks = {t.name: t for t in model.tasks}
        wanted = [n.strip() for n in self.settings.ttt_tasks.split(",") if n.strip()]
        if not wanted:
            wanted = [t.name for t in model.tasks if t.probe_classes]
        if not wanted:
            raise UserError(
                f"--adapt=ttt needs a run trained with a task that classifies a transformation "
                f"(e.g. rotation) or --ttt_tasks; this run has {', '.join(model.task_names) or 'no task'}"
            )
        missing = [n for n in wanted if n not in tasks]
        if missing:
            raise UserError(
                f"--adapt=ttt: the run has no trained head for {', '.join(missing)} "
                f"(its tasks: {', '.join(model.task_names) or 'none'})"
            )
        return [(tasks[n], heads[n], float(lambdas.get(n, 1.0))) for n in wanted]

    # ------------------------------------------------------------------ state
    def reset(self):
        """Restores the trained weights (and a fresh optimiser)."""
        for variable, value in zip(self.params, self._initial):
            variable.assign(value)
        if self.mode in ("tent", "ttt"):
            self._optimizer = self._new_optimizer()
            self._optimizer.build([self.params[i] for i in self._updated])
            self._step = self._compile_step()

    # ------------------------------------------------------------------ forwards
    def values(self):
        """The adapted trunk weights as tensors (a read the gradient tape records)."""
        return [tf.convert_to_tensor(p) for p in self.params]

    def _features(self, params, images, training):
        features, _ = self.trunk.stateless_call(params, self._non_trainable, images, training=training)
        return features

    def _logits(self, params, images, training):
        return self.classifier(self._features(params, images, training), training=False)

    def _ttt_loss(self, params, images, seed):
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

    def _compile_step(self):
        updated = [self.params[i] for i in self._updated]

        def step(images, seed):
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

        return tf.function(step, reduce_retracing=True)

    # ------------------------------------------------------------------ predict
    def predict(self, images):
        """Logits of one test batch (float32 [N, H, W, 3] in [0, 1]), adapting as the mode says."""
        images = tf.convert_to_tensor(images, tf.float32)
        start = time.perf_counter()
        s = self.settings
        if self.mode == "none":
            logits = self.model(images, training=False)
        elif self.mode == "bn":
            if s.bn_prior > 0:
                logits = self.classifier(self._prior_trunk(images, training=False), training=False)
            else:
                logits = self._logits(self.values(), images, True)
        elif self.mode == "tent":
            if s.tent_episodic:
                self.reset()
            for _ in range(s.tent_steps):
                logits, _ = self._step(images, tf.constant([s.seed, self.batches], tf.int64))
        else:  # ttt
            if not s.ttt_online:
                self.reset()
            for k in range(s.ttt_steps):
                self._step(images, tf.constant([s.seed, self.batches * 1000 + k], tf.int64))
            logits = self._logits(self.values(), images, False)
        logits = np.asarray(logits)
        self.seconds += time.perf_counter() - start
        self.batches += 1
        self.images += len(logits)
        return logits


def predict_cell(adapter, images, batch_size=None):
    """Logits of a whole cell in test batches, the adapter reset first.

    The batches follow a fixed permutation of the cell (by the settings'
    seed) unless `settings.shuffle` is off; the logits are returned in the
    images' own order either way.

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
