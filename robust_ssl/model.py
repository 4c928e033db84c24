"""The Keras model: a classifier trained with λ-weighted auxiliary objectives.

The model holds the networks (a backbone "trunk", the main classifier, one
head per self-supervised task), the task weights λ, `call()` and its config.
`call()` is the classifier alone (trunk + main head), so `predict`,
`evaluate` and exports see a plain image classifier. The training steps live
in `robust_ssl.steps`; `make_train_function` picks the kind of each step on
the host and runs it on every replica, for `fit` and for the package's own
multi-worker loop alike.

Batch norm: every distinct input (clean, rotated, grey, blurred, …) gets its own
forward pass with its own batch statistics; only the clean forward updates the
moving averages, so inference statistics are those of clean images. Other
forwards and the lookahead run through `stateless_call` and drop their updates.
"""

import functools
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from robust_ssl import networks, steps
from robust_ssl.errors import ConfigError
from robust_ssl.networks import all_layers, backbone_spec, build_backbone, linear_head
from robust_ssl.replicas import Replicas
from robust_ssl.steps import ALPHA_MODES
from robust_ssl.tasks import make_tasks
from robust_ssl.tasks.base import sparse_ce
from robust_ssl.weighting import lookahead, make_method
from robust_ssl.weighting.lookahead import META_MODES


class StepTrackers(NamedTuple):
    """The per-epoch means of training (`RobustSSLModel.trackers`)."""

    loss: keras.metrics.Mean
    main_loss: keras.metrics.Mean
    task_losses: list
    meta_loss: keras.metrics.Mean
    accuracy: keras.metrics.SparseCategoricalAccuracy


@keras.saving.register_keras_serializable(package="robust_ssl")
class RobustSSLModel(keras.Model):
    """An image classifier with auxiliary objectives and their weights λ.

    Args:
      num_classes: classes of the main task.
      backbone: backbone spec (`robust_ssl.networks.backbone_spec`); None = a
        WideResNet of `depth`, `width`, `dropout`.
      image_shape: (H, W, C) of the inputs, values in [0, 1].
      tasks: task names (comma string or sequence), see `robust_ssl.tasks.TASKS`.
      task_options: mapping task name -> options dict.
      lambdas: initial λ, one float for every task or one per task.
      weight_decay: coupled L2 factor added to every network gradient (PyTorch
        SGD's `weight_decay`, which the paper and reference code use).
      automl: learn λ after `meta_start_step` with the method `weighting`.
      weighting: how λ is learned (`robust_ssl.weighting.METHODS`):
        "lookahead" (the paper's meta-gradient, the default), "uncertainty",
        "gradnorm" or "auto_lambda" (docs/weighting.md).
      weighting_options: dict of that method's options (its defaults for the rest).
      meta_mode: the lookahead's computation: "fast" (exact, first-order;
        docs/design.md) or "naive" (Algorithm 1 literally: double backprop
        and recompute); also the validation forward of "auto_lambda".
      meta_every: take a meta step every k-th training step.
      meta_start_step: first step of meta updates (warm-up epochs × steps).
      alpha_mode: lookahead step α = "multiplier" (lr / base lr, as the
        reference code) or "lr" (the learning rate itself).
      base_learning_rate: the schedule's initial learning rate.
      class_names: optional list of class names, kept for exports.
      sync_batch_norm: all-reduce batch-norm statistics across replicas.
      depth, width, dropout: WideResNet settings where `backbone` is None
        (also how models saved before backbones were pluggable load).
    """

    def __init__(
        self,
        num_classes=10,
        backbone=None,
        image_shape=(32, 32, 3),
        tasks=(),
        task_options=None,
        lambdas=0.5,
        weight_decay=5e-4,
        automl=False,
        weighting="lookahead",
        weighting_options=None,
        meta_mode="fast",
        meta_every=1,
        meta_start_step=0,
        alpha_mode="multiplier",
        base_learning_rate=0.1,
        class_names=None,
        sync_batch_norm=False,
        depth=40,
        width=2,
        dropout=0.0,
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
        self.backbone = dict(backbone) if backbone else backbone_spec("wrn", depth, width, dropout)
        self.image_shape = tuple(image_shape)
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}
        self.tasks = make_tasks(tasks, self.task_options)
        self.task_names = [t.name for t in self.tasks]
        for task in self.tasks:
            task.check_image_shape(self.image_shape)
        self.initial_lambdas = self._initial_lambdas(lambdas)
        # The method holds its options only (out of Keras' tracking); its state
        # lives in model variables (`weighting_state`), saved with the weights.
        object.__setattr__(self, "weighting", make_method(weighting, weighting_options))
        object.__setattr__(self, "weighting_state", {})
        self.weight_decay = float(weight_decay)
        self.automl = bool(automl)
        self.meta_mode = meta_mode
        self.meta_every = int(meta_every)
        self.meta_start_step = int(meta_start_step)
        self.alpha_mode = alpha_mode
        self.base_learning_rate = float(base_learning_rate)
        self.class_names = list(class_names) if class_names else None

        try:
            self.trunk = build_backbone(self.backbone, self.image_shape, name="trunk")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        features = int(self.trunk.output_shape[-1])
        self.classifier = linear_head(features, self.num_classes, name="classifier")
        # Heads of the self-supervised tasks only (classifier objectives have none).
        self.task_heads = [
            task.build_head(features, self.image_shape) for task in self.tasks if not task.uses_classifier
        ]
        # λ lives in the model (saved with the weights); it is trainable only for
        # the meta optimiser, never for the main optimiser (see `network_variables`).
        self.lambdas = self.add_weight(
            shape=(len(self.tasks),),
            # A float64 array: a list would pass through float32 on its way to a
            # float64 variable (float32 variables get the same values either way).
            initializer=keras.initializers.Constant(np.asarray(self.initial_lambdas, np.float64)),
            trainable=self.automl,
            # λ stays non-negative: the meta optimiser applies the constraint
            # after each update (the reference code clamps after each meta step).
            constraint=keras.constraints.NonNeg(),
            name="lambdas",
        )
        if self.automl:
            self.weighting.check_lambdas(self.task_names, self.initial_lambdas)
            self.weighting.create_state(self)
        self.meta_optimizer = None
        self.sync_batch_norm = bool(sync_batch_norm)
        if self.sync_batch_norm:
            # Keras reads `synchronized` at call time: all-reduce BN moments
            # across replicas in every trunk and head forward.
            for layer in all_layers([self.trunk, *self.task_heads]):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True

        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._main_loss_tracker = keras.metrics.Mean(name="main_loss")
        self._task_loss_trackers = [keras.metrics.Mean(name=f"{n}_loss") for n in self.task_names]
        self._meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self._accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # XLA-compiled step computations (`steps.compiled`), out of Keras' tracking.
        object.__setattr__(self, "step_functions", {})
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
    def backbone_name(self):
        """A short name of the trunk, e.g. "WRN-40-2" or "ResNet50V2"."""
        return networks.describe(self.backbone)

    @property
    def heads_by_task(self):
        """One entry per task: its head, or None for a classifier objective."""
        heads = iter(self.task_heads)
        return [None if task.uses_classifier else next(heads) for task in self.tasks]

    @property
    def task_head_variables(self):
        """Per task, the trainable variables of its own head ([] without a head)."""
        return [[] if head is None else head.trainable_variables for head in self.heads_by_task]

    @property
    def psi_variables(self):
        """ψ of the paper: trunk + main head."""
        return self.trunk.trainable_variables + self.classifier.trainable_variables

    @property
    def network_variables(self):
        """All weights the main optimiser trains (everything but λ)."""
        return self.psi_variables + [v for head in self.task_heads for v in head.trainable_variables]

    @property
    def meta_variables(self):
        """What the meta optimiser trains: λ, or the weighting method's own parameters (e.g. log-variances)."""
        return self.weighting.meta_variables(self) if self.automl else [self.lambdas]

    def lambda_values(self):
        """Returns the current λ as a dict task name -> float."""
        return dict(zip(self.task_names, [float(v) for v in keras.ops.convert_to_numpy(self.lambdas)]))

    def call(self, inputs, training=False):
        return self.classifier(self.trunk(inputs, training=training), training=training)

    # ------------------------------------------------------------------ metrics
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
    def trackers(self):
        """The training metrics a step updates (`steps.update_step_metrics`)."""
        return StepTrackers(
            self._loss_tracker,
            self._main_loss_tracker,
            self._task_loss_trackers,
            self._meta_loss_tracker,
            self._accuracy,
        )

    def metric_results(self):
        """{name: value} of the training metrics (no meta loss without AutoML)."""
        logs = {m.name: m.result() for m in self.metrics}
        if not self.automl:
            logs.pop("meta_loss")
        # λ is logged by `callbacks.LambdaLogger` (per step and per epoch), not
        # here, to keep the progress bar readable.
        return logs

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="sgd", meta_optimizer=None, **kwargs):
        """Compiles with the main optimiser and (for AutoML) the λ optimiser.

        Args:
          optimizer: optimiser of the network weights.
          meta_optimizer: optimiser of λ; defaults to SGD(0.01) (β of the paper).
          **kwargs: forwarded to `keras.Model.compile` (no loss is needed).
        """
        super().compile(optimizer=optimizer, **kwargs)
        self.step_functions.clear()  # compiled for the previous settings
        # Build both optimisers now on their own variables, so that `fit` does
        # not build the main one over λ as well.
        self.optimizer.build(self.network_variables)
        self.meta_optimizer = meta_optimizer or keras.optimizers.SGD(0.01)
        self.meta_optimizer.build(self.meta_variables)

    def fit(self, *args, verbose="auto", **kwargs):
        """`keras.Model.fit`, with verbose="auto" resolved by `robust_ssl._quiet.keras_verbose`.

        "auto" is a progress bar on a terminal and one line per epoch in a
        redirected log (no carriage returns); other values are Keras' own.

        Returns:
          The `keras.callbacks.History`.
        """
        from robust_ssl._quiet import keras_verbose

        return super().fit(*args, verbose=keras_verbose(verbose), **kwargs)

    def evaluate(self, *args, verbose="auto", **kwargs):
        """`keras.Model.evaluate`, with verbose="auto" resolved as in `fit`.

        Returns:
          What `keras.Model.evaluate` returns.
        """
        from robust_ssl._quiet import keras_verbose

        return super().evaluate(*args, verbose=keras_verbose(verbose), **kwargs)

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

    # ------------------------------------------------------------------ training
    def make_train_function(self, force=False):
        """Returns `train_function(iterator)`: one step of the kind the host chooses.

        Before each step the host reads the step counter and picks the kind
        (`steps.step_kind`: fixed-λ or meta), then runs that kind's compiled
        function on every replica. Choosing in Python rather than with
        `tf.cond` keeps the optimiser's cross-replica merge and the gradient
        all-reduces out of control flow, which `tf.distribute` does not
        support, and lets a fixed-λ step pay nothing for the meta step it
        skips. `fit` and the multi-worker loop (`robust_ssl.loop`) both run
        this function.
        """
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution != 1:
            raise ConfigError("RobustSSLModel needs steps_per_execution=1 (the step kind is chosen per step)")

        def train_function(iterator):
            kind = steps.step_kind(self, int(self.optimizer.iterations.numpy()))
            return self.step_function(kind)(next(iterator))

        self.train_function = train_function
        return train_function

    def step_function(self, kind):
        """The compiled function of one training step of `kind` on every replica.

        Args:
          kind: `steps.FIXED` or `steps.META`.

        Returns:
          A function (per-replica or global batch) -> dict of metric results,
          a `tf.function` unless the model runs eagerly (cached per kind).
        """
        key = ("train_step", kind)
        if key not in self.step_functions:
            strategy = self.distribute_strategy

            def one_step(data):
                outputs = strategy.run(functools.partial(steps.train_step, self), args=(data, kind))
                return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

            self.step_functions[key] = (
                one_step if self.run_eagerly else tf.function(one_step, reduce_retracing=True)
            )
        return self.step_functions[key]

    def train_step(self, data):
        """One training step of the kind the current step calls for (eager only).

        `fit` runs `make_train_function`, which chooses the kind on the host and
        calls `steps.train_step`; inside a `tf.function` of your own, call
        `steps.train_step(model, data, kind)` with the kind from
        `steps.step_kind(model, step)`.
        """
        if not tf.executing_eagerly():
            raise RuntimeError(
                "RobustSSLModel.train_step chooses the step kind on the host: call it eagerly, or "
                "call robust_ssl.steps.train_step(model, data, kind) inside your tf.function"
            )
        kind = steps.step_kind(self, int(self.optimizer.iterations.numpy()))
        return steps.train_step(self, data, kind)

    def lambda_gradient(self, batch, mode="fast"):
        """∂L_meta/∂λ at the current weights and λ, changing nothing (`weighting.lookahead`)."""
        return lookahead.lambda_gradient(self, batch, mode)

    def meta_objective(self, batch, lambdas):
        """L_meta(λ) after one lookahead step with weights λ (`weighting.lookahead`)."""
        return lookahead.meta_objective(self, batch, lambdas)

    # ------------------------------------------------------------------ evaluation
    def _without_xla_if_distributed(self, make, force):
        # Evaluation and prediction have no per-replica split of their own:
        # whole-step XLA on one replica, none when distributed (see steps.py).
        if not (self.jit_compile and self.distribute_strategy.num_replicas_in_sync > 1):
            return make(force)
        self.jit_compile = False
        try:
            return make(force)
        finally:
            self.jit_compile = True

    def make_predict_function(self, force=False):
        return self._without_xla_if_distributed(super().make_predict_function, force)

    def make_test_function(self, force=False):
        return self._without_xla_if_distributed(super().make_test_function, force)

    def test_step(self, data):
        if isinstance(data, dict):
            images, labels = data["image"], data["label"]
        else:
            images, labels = data[0], data[1]
        logits = self(images, training=False)
        loss = Replicas.global_value(Replicas.global_mean(sparse_ce(labels, logits)))
        self._main_loss_tracker.update_state(loss)
        self._loss_tracker.update_state(loss)
        self._accuracy.update_state(labels, logits)
        return {"loss": self._loss_tracker.result(), "accuracy": self._accuracy.result()}

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            backbone=dict(self.backbone),
            image_shape=list(self.image_shape),
            tasks=list(self.task_names),
            task_options=self.task_options,
            lambdas=self.initial_lambdas,
            weight_decay=self.weight_decay,
            automl=self.automl,
            weighting=self.weighting.name,
            weighting_options=dict(self.weighting.options),
            meta_mode=self.meta_mode,
            meta_every=self.meta_every,
            meta_start_step=self.meta_start_step,
            alpha_mode=self.alpha_mode,
            base_learning_rate=self.base_learning_rate,
            class_names=self.class_names,
            sync_batch_norm=self.sync_batch_norm,
        )
        return config
