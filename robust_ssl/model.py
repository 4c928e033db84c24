"""The Keras model: a WRN classifier trained with λ-weighted self-supervision.

`call()` is the classifier alone (trunk + main head), so `predict`, `evaluate`
and exports see a plain image classifier. `train_step` orchestrates the main
task, the auxiliary tasks and, with AutoML, the lookahead meta step of
Algorithm 1 (see `robust_ssl.meta` and DESIGN.md §4).

Batch norm: every distinct input (clean, rotated, grey, blurred, …) gets its own
forward pass with its own batch statistics; only the clean forward updates the
moving averages, so inference statistics are those of clean images. Other
forwards and the lookahead run through `stateless_call` and drop their updates.
"""

import contextlib
import functools

import keras
import tensorflow as tf

from robust_ssl import meta
from robust_ssl.errors import SYNC_BN_XLA_ERROR, ConfigError
from robust_ssl.models import build_wide_resnet, feature_dim, linear_head
from robust_ssl.tasks import make_tasks
from robust_ssl.tasks.base import sparse_ce

META_MODES = ("fast", "naive")
ALPHA_MODES = ("multiplier", "lr")


def _batch_key(task_name, part):
    return f"{task_name}/{part}"


def _stateless(layer):
    """Wraps a layer as a callable that discards its state updates (BN statistics)."""

    def call(inputs, training=False):
        outputs, _ = layer.stateless_call(
            [v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables],
            inputs,
            training=training,
        )
        return outputs

    return call


@keras.saving.register_keras_serializable(package="robust_ssl")
class RobustSSLModel(keras.Model):
    """WideResNet classifier with self-supervised auxiliary heads and weights λ.

    Args:
      num_classes: classes of the main task.
      depth, width, dropout: WideResNet trunk settings.
      image_shape: (H, W, C) of the inputs, values in [0, 1].
      tasks: task names (comma string or sequence), see `robust_ssl.tasks.TASKS`.
      task_options: mapping task name -> options dict.
      lambdas: initial λ, one float for every task or one per task.
      weight_decay: coupled L2 factor added to every network gradient (PyTorch
        SGD's `weight_decay`, which the paper and reference code use).
      automl: learn λ by the lookahead meta-gradient after `meta_start_step`.
      meta_mode: "fast" (exact, first-order, DESIGN.md §4) or "naive"
        (Algorithm 1 literally: double backprop and recompute).
      meta_every: take a meta step every k-th training step.
      meta_start_step: first step of meta updates (warm-up epochs × steps).
      alpha_mode: lookahead step α = "multiplier" (lr / base lr, as the
        reference code) or "lr" (the learning rate itself).
      base_learning_rate: the schedule's initial learning rate.
      class_names: optional list of class names, kept for exports.
      sync_batch_norm: all-reduce batch-norm statistics across replicas.
    """

    def __init__(
        self,
        num_classes=10,
        depth=40,
        width=2,
        dropout=0.0,
        image_shape=(32, 32, 3),
        tasks=(),
        task_options=None,
        lambdas=0.5,
        weight_decay=5e-4,
        automl=False,
        meta_mode="fast",
        meta_every=1,
        meta_start_step=0,
        alpha_mode="multiplier",
        base_learning_rate=0.1,
        class_names=None,
        sync_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if meta_mode not in META_MODES:
            raise ConfigError(f"meta mode must be one of {META_MODES}; got {meta_mode!r}")
        if alpha_mode not in ALPHA_MODES:
            raise ConfigError(f"alpha mode must be one of {ALPHA_MODES}; got {alpha_mode!r}")
        if int(meta_every) < 1:
            raise ConfigError(f"meta_every must be >= 1; got {meta_every!r}")
        self.num_classes = int(num_classes)
        self.depth, self.width, self.dropout = int(depth), int(width), float(dropout)
        self.image_shape = tuple(image_shape)
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}
        self.tasks = make_tasks(tasks, self.task_options)
        self.task_names = [t.name for t in self.tasks]
        initial = self._initial_lambdas(lambdas)
        self.initial_lambdas = initial
        self.weight_decay = float(weight_decay)
        self.automl = bool(automl)
        self.meta_mode = meta_mode
        self.meta_every = int(meta_every)
        self.meta_start_step = int(meta_start_step)
        self.alpha_mode = alpha_mode
        self.base_learning_rate = float(base_learning_rate)
        self.class_names = list(class_names) if class_names else None

        self.trunk = build_wide_resnet(depth, width, dropout, self.image_shape, name="trunk")
        features = feature_dim(width)
        self.classifier = linear_head(features, self.num_classes, name="classifier")
        self.task_heads = [task.build_head(features) for task in self.tasks]
        # λ lives in the model (saved with the weights); it is trainable only for
        # the meta optimiser, never for the main optimiser (see `network_variables`).
        self.lambdas = self.add_weight(
            shape=(len(self.tasks),),
            initializer=keras.initializers.Constant(initial),
            trainable=self.automl,
            # λ stays non-negative: the meta optimiser applies the constraint
            # after each update (the reference code clamps after each meta step).
            constraint=keras.constraints.NonNeg(),
            name="lambdas",
        )
        self.meta_optimizer = None
        self.sync_batch_norm = bool(sync_batch_norm)
        if self.sync_batch_norm:
            # Keras reads `synchronized` at call time: all-reduce BN moments
            # across replicas in every trunk and head forward.
            for layer in [*self.trunk.layers, *(layer for head in self.task_heads for layer in head.layers)]:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True

        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._main_loss_tracker = keras.metrics.Mean(name="main_loss")
        self._task_loss_trackers = [keras.metrics.Mean(name=f"{n}_loss") for n in self.task_names]
        self._meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # The step's XLA-compiled computations (see `_xla`), out of Keras' tracking.
        object.__setattr__(self, "_xla_functions", {})
        self.build((None, *self.image_shape))

    def _initial_lambdas(self, lambdas):
        values = [float(lambdas)] * len(self.tasks) if isinstance(lambdas, (int, float)) else list(lambdas)
        if len(values) != len(self.tasks):
            raise ConfigError(f"got {len(values)} λ values for {len(self.tasks)} tasks {self.task_names}")
        for name, value in zip(self.task_names, values):
            if not value >= 0:  # also catches NaN
                raise ConfigError(f"λ of task {name!r} must be >= 0; got {value}")
        return [float(v) for v in values]

    def build(self, input_shape):
        self.built = True

    # ------------------------------------------------------------------ views
    @property
    def metrics(self):
        return [
            self._loss_tracker,
            self._main_loss_tracker,
            *self._task_loss_trackers,
            self._meta_loss_tracker,
            self._accuracy,
        ]

    @property
    def psi_variables(self):
        """ψ of the paper: trunk + main head."""
        return self.trunk.trainable_variables + self.classifier.trainable_variables

    @property
    def network_variables(self):
        """All weights the main optimiser trains (everything but λ)."""
        head_vars = [v for head in self.task_heads for v in head.trainable_variables]
        return self.psi_variables + head_vars

    def lambda_values(self):
        """Returns the current λ as a dict task name -> float."""
        return dict(zip(self.task_names, [float(v) for v in keras.ops.convert_to_numpy(self.lambdas)]))

    def call(self, inputs, training=False):
        return self.classifier(self.trunk(inputs, training=training), training=training)

    # ------------------------------------------------------------- compile
    def compile(self, optimizer="sgd", meta_optimizer=None, **kwargs):
        """Compiles with the main optimiser and (for AutoML) the λ optimiser.

        Args:
          optimizer: optimiser of the network weights.
          meta_optimizer: optimiser of λ; defaults to SGD(0.01) (β of the paper).
          **kwargs: forwarded to `keras.Model.compile` (no loss is needed).
        """
        super().compile(optimizer=optimizer, **kwargs)
        # Build both optimisers now on their own variables, so that `fit` does
        # not build the main one over λ as well.
        self.optimizer.build(self.network_variables)
        self.meta_optimizer = meta_optimizer or keras.optimizers.SGD(0.01)
        self.meta_optimizer.build([self.lambdas])

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.meta_optimizer is not None:
            config["meta_optimizer"] = keras.saving.serialize_keras_object(self.meta_optimizer)
        return config

    def compile_from_config(self, config):
        """Recompiles a loaded model, so that both optimisers' states load too."""
        config = dict(config)
        meta_optimizer = config.pop("meta_optimizer", None)
        config = keras.saving.deserialize_keras_object(config)
        if meta_optimizer is not None:
            meta_optimizer = keras.saving.deserialize_keras_object(meta_optimizer)
        self.compile(meta_optimizer=meta_optimizer, **config)

    # ---------------------------------------------------------- forward
    def _num_replicas(self):
        return tf.distribute.get_strategy().num_replicas_in_sync

    def _reduce(self, per_example):
        """Mean over the global batch: per-replica sum / (local batch × replicas).

        Under a distribution strategy the optimiser sums replica gradients, so
        scaling by the global batch gives the single-device update.
        """
        local = tf.cast(tf.shape(per_example)[0], per_example.dtype)
        return tf.reduce_sum(per_example) / (local * self._num_replicas())

    def _encode(self, images):
        """Trunk forward with batch statistics that leaves the moving averages alone."""
        return _stateless(self.trunk)(images, training=True)

    def task_losses(self, batch, update_stats=True):
        """Losses of the main task and of every auxiliary task on one batch.

        Args:
          batch: dict with "image", "label" and each task's "<name>/inputs" and
            "<name>/targets" (see `robust_ssl.data.pipeline`).
          update_stats: let the clean forward update BN moving averages.

        Returns:
          (list [L_main, L_1, …, L_k] of scalars, main-task logits).
        """
        images = batch["image"]
        clean = self.trunk(images, training=True) if update_stats else self._encode(images)
        logits = self.classifier(clean, training=True)
        losses = [self._reduce(sparse_ce(batch["label"], logits))]
        for task, head in zip(self.tasks, self.task_heads):
            if not update_stats:  # the heads' own batch norms must not move either
                head = _stateless(head)
            predictions = task.predict(
                head, clean, self._encode, batch.get(_batch_key(task.name, "inputs")), training=True
            )
            targets = batch[_batch_key(task.name, "targets")]
            losses.append(self._reduce(task.per_example_loss(targets, predictions)))
        return losses, logits

    def _weighted_loss(self, losses, lambdas):
        total = losses[0]
        for i, loss in enumerate(losses[1:]):
            total = total + lambdas[i] * loss
        return total

    def _check_finite(self, values, names, what):
        step = self.optimizer.iterations
        for value, name in zip(values, names):
            tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(value)),
                [f"robust_ssl: non-finite {what} of {name!r} at step", step],
            )

    # ---------------------------------------------------------- meta step
    def _alpha(self):
        lr = tf.cast(self.optimizer.learning_rate, self.lambdas.dtype)
        return lr / self.base_learning_rate if self.alpha_mode == "multiplier" else lr

    def _meta_loss_fn(self, batch):
        """L_main on the validation batch as a function of ψ (functional forward)."""
        images, labels = batch["meta/image"], batch["meta/label"]
        non_trainable = [v.value for v in self.trunk.non_trainable_variables]
        n_trunk = len(self.trunk.trainable_variables)

        def meta_loss(params):
            features, _ = self.trunk.stateless_call(params[:n_trunk], non_trainable, images, training=True)
            logits, _ = self.classifier.stateless_call(params[n_trunk:], [], features)
            return self._reduce(sparse_ce(labels, logits))

        return meta_loss

    def _all_reduce(self, tensors):
        """Sums tensors over replicas (identity on one device)."""
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return tensors
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tensors)

    def _apply_lambda_gradient(self, d_lambda):
        self._check_finite([d_lambda], ["lambdas"], "λ gradient")
        # The optimiser sums over replicas; d_lambda is already the global value.
        # The NonNeg constraint of λ is applied by the optimiser after the update.
        self.meta_optimizer.apply([d_lambda / self._num_replicas()], [self.lambdas])
        return tf.convert_to_tensor(self.lambdas)

    @staticmethod
    def _after(tensors, dependencies):
        """The same tensors, computed only once `dependencies` have run.

        Makes explicit that the weight update follows the lookahead: the main
        head's gradient does not involve λ, so without this nothing in the data
        flow says its update must wait for the lookahead's read of that weight.
        """
        with tf.control_dependencies([d for d in dependencies if d is not None]):
            return [None if t is None else tf.identity(t) for t in tensors]

    # ---------------------------------------------------------- XLA
    def _xla(self, fn):
        """`fn` compiled by XLA (on the calling replica's device) if `jit_compile`.

        With `jit_compile`, XLA compiles the step's computation — forward and
        backward passes, the lookahead — and not the whole step, which Keras
        would compile: all-reduces, optimiser updates and the NaN/Inf checks
        stay outside XLA. Whole-step XLA cannot reach the other replicas'
        variables under `MirroredStrategy` ("Trying to access resource …
        located in device …:1 from device …:0", keras-team/keras#19005; why
        Keras' `jit_compile="auto"` turns XLA off under `tf.distribute`), and
        XLA drops `tf.debugging.Assert`, so a diverging run would go on
        silently.

        Args:
          fn: a method computing on one replica's data, without collectives.

        Returns:
          A callable with `fn`'s signature.
        """
        if not self.jit_compile or self.run_eagerly:
            return fn
        if self.sync_batch_norm and self._num_replicas() > 1:
            raise ConfigError(SYNC_BN_XLA_ERROR)
        name = fn.__name__
        if name not in self._xla_functions:
            self._xla_functions[name] = tf.function(fn, jit_compile=True, reduce_retracing=True)
        return self._xla_functions[name]

    @contextlib.contextmanager
    def _without_whole_step_xla(self, only_if_distributed=False):
        """Keras builds its step functions without XLA inside this block.

        Args:
          only_if_distributed: keep Keras' XLA on a single replica.
        """
        keep = only_if_distributed and self.distribute_strategy.num_replicas_in_sync == 1
        jit_compile = self._jit_compile
        if not keep:
            self._jit_compile = False
        try:
            yield
        finally:
            self._jit_compile = jit_compile

    # Evaluation and prediction have no per-replica split: whole-step XLA on one
    # replica (no checks to lose there), none when distributed (see `_xla`).
    def make_predict_function(self, force=False):
        with self._without_whole_step_xla(only_if_distributed=True):
            return super().make_predict_function(force)

    def make_test_function(self, force=False):
        with self._without_whole_step_xla(only_if_distributed=True):
            return super().make_test_function(force)

    # ---------------------------------------------------------- steps
    def _fixed_gradients(self, batch):
        lambdas = tf.convert_to_tensor(self.lambdas)
        with tf.GradientTape() as tape:
            losses, logits = self.task_losses(batch)
            total = self._weighted_loss(losses, lambdas)
        return tape.gradient(total, self.network_variables), losses, logits

    def _fixed_step(self, batch):
        grads, losses, logits = self._xla(self._fixed_gradients)(batch)
        return grads, losses, logits, tf.zeros([], self.lambdas.dtype)

    def _per_task_gradients(self, batch, update_stats=True):
        """One forward, then one backward per task (summed over replicas).

        The tasks share forwards (main, rotation 0°, IR use the clean batch), so
        their gradients must be taken apart.

        Returns:
          (losses, logits, main_grads over ψ, per-task grads over ψ with None on
          the main head, per-task grads over each task's own head).
        """
        losses, logits, main_grads, trunk_task_grads, head_task_grads = self._xla(
            self._local_per_task_gradients
        )(batch, update_stats)
        main_grads, trunk_task_grads, head_task_grads = self._all_reduce(
            (main_grads, trunk_task_grads, head_task_grads)
        )
        cls_vars = self.classifier.trainable_variables
        psi_task_grads = [g + [None] * len(cls_vars) for g in trunk_task_grads]
        return losses, logits, main_grads, psi_task_grads, head_task_grads

    def _local_per_task_gradients(self, batch, update_stats):
        trunk_vars = self.trunk.trainable_variables
        cls_vars = self.classifier.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            losses, logits = self.task_losses(batch, update_stats=update_stats)
        main_grads = tape.gradient(losses[0], trunk_vars + cls_vars)
        trunk_task_grads, head_task_grads = [], []
        for loss, head in zip(losses[1:], self.task_heads):
            grads = tape.gradient(loss, trunk_vars + head.trainable_variables)
            trunk_task_grads.append(grads[: len(trunk_vars)])
            head_task_grads.append(grads[len(trunk_vars) :])
        del tape
        return losses, logits, main_grads, trunk_task_grads, head_task_grads

    def _fast_hypergradient(self, batch, main_grads, psi_task_grads):
        d_lambda, meta_loss = self._xla(self._local_hypergradient)(batch, main_grads, psi_task_grads)
        return self._all_reduce(d_lambda), meta_loss

    def _local_hypergradient(self, batch, main_grads, psi_task_grads):
        """This replica's share of ∂L_meta/∂λ from the all-reduced task gradients."""
        return meta.hypergradient(
            self._meta_loss_fn(batch),
            [v.value for v in self.psi_variables],
            main_grads,
            psi_task_grads,
            tf.convert_to_tensor(self.lambdas),
            self._alpha(),
        )

    def _naive_hypergradient(self, batch, lambdas, update_stats=True):
        """Algorithm 1 literally: backprop through the inner gradient (second order).

        Never XLA-compiled (see `_xla`): its all-reduce sits inside the outer tape.
        """
        lambdas = tf.convert_to_tensor(lambdas)
        with tf.GradientTape() as outer:
            outer.watch(lambdas)
            meta_loss = self._lookahead_meta_loss(batch, lambdas, update_stats)
        d_lambda = outer.gradient(meta_loss, lambdas)
        return self._all_reduce(d_lambda), meta_loss

    def _lookahead_meta_loss(self, batch, lambdas, update_stats):
        """L_meta at ψ' = ψ - α ∇_ψ L_λ, differentiable in `lambdas` (second order)."""
        psi = self.psi_variables
        with tf.GradientTape() as inner:
            losses, _ = self.task_losses(batch, update_stats=update_stats)
            total = self._weighted_loss(losses, lambdas)
        psi_grads = self._all_reduce(inner.gradient(total, psi))
        new_psi = meta.lookahead([v.value for v in psi], psi_grads, self._alpha())
        return self._meta_loss_fn(batch)(new_psi)

    def lambda_gradient(self, batch, mode="fast"):
        """∂L_meta/∂λ at the current weights and λ, changing nothing.

        Args:
          batch: a training dict including "meta/image" and "meta/label".
          mode: "fast" (first-order, exact) or "naive" (double backprop).

        Returns:
          (d_lambda float32 [k], meta_loss scalar).
        """
        if mode == "fast":
            _, _, main_grads, psi_task_grads, _ = self._per_task_gradients(batch, update_stats=False)
            return self._fast_hypergradient(batch, main_grads, psi_task_grads)
        return self._naive_hypergradient(batch, self.lambdas, update_stats=False)

    def meta_objective(self, batch, lambdas):
        """L_meta(λ): the validation loss after one lookahead step with weights λ.

        Used to check the hypergradient by finite differences; changes nothing.

        Args:
          batch: a training dict including "meta/image" and "meta/label".
          lambdas: float [k] task weights.

        Returns:
          The scalar meta loss.
        """
        lambdas = tf.convert_to_tensor(lambdas, self.lambdas.dtype)
        return self._lookahead_meta_loss(batch, lambdas, update_stats=False)

    def _fast_meta_step(self, batch):
        losses, logits, main_grads, psi_task_grads, head_task_grads = self._per_task_gradients(batch)
        d_lambda, meta_loss = self._fast_hypergradient(batch, main_grads, psi_task_grads)
        new_lambdas = self._apply_lambda_gradient(d_lambda)
        # The final update reuses the per-task gradients with the new λ: the same
        # numbers Algorithm 1 gets by recomputing the loss.
        psi_grads = meta.combine_gradients(main_grads, psi_task_grads, new_lambdas)
        head_grads = [
            None if g is None else new_lambdas[i] * g
            for i, grads in enumerate(head_task_grads)
            for g in grads
        ]
        # The optimiser sums over replicas again: hand it the per-replica share.
        n = self._num_replicas()
        grads = [None if g is None else g / n for g in psi_grads + head_grads]
        return self._after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss

    def _naive_meta_step(self, batch):
        d_lambda, meta_loss = self._naive_hypergradient(batch, self.lambdas)
        new_lambdas = self._apply_lambda_gradient(d_lambda)
        # Algorithm 1: recompute the loss with the updated λ, then differentiate.
        with tf.GradientTape() as tape:
            losses, logits = self.task_losses(batch, update_stats=False)
            total = self._weighted_loss(losses, new_lambdas)
        grads = tape.gradient(total, self.network_variables)
        return self._after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss

    def is_meta_step(self, step):
        """Whether training step `step` (0-based) takes a meta step.

        Args:
          step: a Python int or an integer tensor.

        Returns:
          A Python bool for an int, else a boolean tensor.
        """
        if not self.automl or not self.tasks:
            return False if isinstance(step, int) else tf.constant(False)
        if isinstance(step, int):
            return step >= self.meta_start_step and (step - self.meta_start_step) % self.meta_every == 0
        step = tf.cast(step, tf.int64)
        return tf.logical_and(
            step >= self.meta_start_step, (step - self.meta_start_step) % self.meta_every == 0
        )

    # ---------------------------------------------------------- train/test
    def make_train_function(self, force=False):
        """Two compiled steps, fixed-λ and meta, chosen per step on the host.

        Choosing in Python rather than with `tf.cond` keeps the optimiser's
        cross-replica merge and the gradient all-reduces out of control flow,
        which `tf.distribute` does not support, and lets a fixed-λ step pay
        nothing for the meta step it skips.
        """
        if self.train_function is not None and not force:
            return self.train_function
        with self._without_whole_step_xla():  # XLA compiles the computation only, see `_xla`
            return self._make_train_function(force)

    def _make_train_function(self, force):
        if not (self.automl and self.tasks):
            return super().make_train_function(force)
        if self.steps_per_execution != 1:
            raise ConfigError(
                "AutoML training needs steps_per_execution=1 (the step kind is chosen per step)"
            )
        fixed = self._make_function(functools.partial(self.train_step, meta=False))
        meta_fn = self._make_function(functools.partial(self.train_step, meta=True))

        def train_function(iterator):
            step = int(self.optimizer.iterations.numpy())
            return (meta_fn if self.is_meta_step(step) else fixed)(iterator)

        self.train_function = train_function
        return train_function

    def train_step(self, data, meta=None):
        """One training step.

        Args:
          data: a training dict (see `robust_ssl.data.pipeline`).
          meta: True/False forces a meta or a fixed-λ step (as `fit` does, see
            `make_train_function`); None decides from the step counter in-graph.

        Returns:
          A dict of metric results.
        """
        meta_step = self._fast_meta_step if self.meta_mode == "fast" else self._naive_meta_step
        variables = self.network_variables

        def densify(result):
            grads, losses, logits, meta_loss = result
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
            return grads, losses, logits, meta_loss

        if not (self.automl and self.tasks) or meta is False:
            do_meta = tf.constant(False)
            grads, losses, logits, meta_loss = densify(self._fixed_step(data))
        elif meta is True:
            do_meta = tf.constant(True)
            grads, losses, logits, meta_loss = densify(meta_step(data))
        else:
            do_meta = self.is_meta_step(self.optimizer.iterations)
            grads, losses, logits, meta_loss = tf.cond(
                do_meta, lambda: densify(meta_step(data)), lambda: densify(self._fixed_step(data))
            )
        self._check_finite(losses, ["main", *self.task_names], "loss")
        n = self._num_replicas()
        if self.weight_decay:
            # Coupled L2 (PyTorch SGD's weight_decay). The optimiser sums replica
            # gradients, so each replica adds its 1/n share of the decay term.
            grads = [g + (self.weight_decay / n) * v for g, v in zip(grads, variables)]
        self.optimizer.apply(grads, variables)

        total = self._weighted_loss(losses, tf.convert_to_tensor(self.lambdas))
        self._loss_tracker.update_state(total * n)
        self._main_loss_tracker.update_state(losses[0] * n)
        for tracker, loss in zip(self._task_loss_trackers, losses[1:]):
            tracker.update_state(loss * n)
        self._meta_loss_tracker.update_state(meta_loss * n, sample_weight=tf.cast(do_meta, tf.float32))
        self._accuracy.update_state(data["label"], logits)
        logs = {m.name: m.result() for m in self.metrics}
        if not self.automl:
            logs.pop("meta_loss")
        # λ is logged by `callbacks.LambdaLogger` (per step and per epoch), not
        # here, to keep the progress bar readable.
        return logs

    def test_step(self, data):
        if isinstance(data, dict):
            images, labels = data["image"], data["label"]
        else:
            images, labels = data[0], data[1]
        logits = self(images, training=False)
        loss = self._reduce(sparse_ce(labels, logits)) * self._num_replicas()
        self._main_loss_tracker.update_state(loss)
        self._loss_tracker.update_state(loss)
        self._accuracy.update_state(labels, logits)
        return {"loss": self._loss_tracker.result(), "accuracy": self._accuracy.result()}

    # ----------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            depth=self.depth,
            width=self.width,
            dropout=self.dropout,
            image_shape=list(self.image_shape),
            tasks=list(self.task_names),
            task_options=self.task_options,
            lambdas=self.initial_lambdas,
            weight_decay=self.weight_decay,
            automl=self.automl,
            meta_mode=self.meta_mode,
            meta_every=self.meta_every,
            meta_start_step=self.meta_start_step,
            alpha_mode=self.alpha_mode,
            base_learning_rate=self.base_learning_rate,
            class_names=self.class_names,
            sync_batch_norm=self.sync_batch_norm,
        )
        return config
