"""The training steps, as functions of a `RobustSSLModel` and a batch.

Two kinds of step, chosen on the host before each step (`step_kind`), never
inside the graph:
- "fixed": minimise L_main + Σ λ_i L_i with the current λ;
- "meta": a step of the model's task-weighting method (`model.weighting`,
  `config.automl.method`, see `robust_ssl.weighting`), which updates λ and
  hands back the network gradients. The default, the lookahead
  (`robust_ssl.weighting.lookahead`), runs with `model.meta_mode == "fast"`:
  per-task gradients from one forward, the exact first-order hypergradient
  (`robust_ssl.meta`), a λ update, then the weight update reusing the
  per-task gradients with the new λ; with `meta_mode == "naive"`: Algorithm 1
  literally (double backprop through the inner gradient, then the loss
  recomputed with the new λ).

This module holds the step whole and what the methods share: the losses of
every task on a batch (`task_losses`), the per-task gradients, the
lookahead's validation loss as a function of ψ, the λ update, the weight
update from per-task gradients, and the step's metrics. The model
(`robust_ssl.model`) holds the networks, λ and the trackers these read and
update.

Replicas. Under a `tf.distribute` strategy every function here runs once per
replica on its share of the batch, and scales by `robust_ssl.replicas`'
rules only: losses are means over the *global* batch, the per-task
gradients are all-reduced before the lookahead and the λ gradient after it,
and each replica hands the optimiser its 1/n share of an all-reduced
gradient.

XLA. With `model.jit_compile`, the step's computations (forwards, backwards,
the lookahead) are compiled by XLA per replica (`compiled`); the collectives,
the optimiser updates and the NaN/Inf checks stay outside: XLA drops
`tf.debugging.Assert`, and whole-step XLA cannot reach other replicas'
variables under `MirroredStrategy` (keras-team/keras#19005).
"""

import functools

import tensorflow as tf

from robust_ssl import meta
from robust_ssl.errors import SYNC_BN_XLA_ERROR, ConfigError
from robust_ssl.networks import stateless
from robust_ssl.replicas import Replicas as Replicas
from robust_ssl.tasks import Forward
from robust_ssl.tasks.base import flatten_views, sparse_ce

FIXED, META = "fixed", "meta"


# --------------------------------------------------------------------- the host's choice
def step_kind(model, step):
    """The kind of training step `step` (0-based, global) is: FIXED or META.

    Args:
      model: the `RobustSSLModel`.
      step: a Python int.

    Returns:
      "meta" where AutoML is on, there are tasks, warm-up is over and the step
      is one of every `meta_every`; else "fixed".
    """
    if not (model.automl and model.tasks):
        return FIXED
    if step >= model.meta_start_step and (step - model.meta_start_step) % model.meta_every == 0:
        return META
    return FIXED


# --------------------------------------------------------------------- XLA
def compiled(model, fn):
    """`fn` bound to `model`, compiled by XLA when `model.jit_compile` says so.

    Args:
      model: the model; its `jit_compile`, `run_eagerly` and `sync_batch_norm`
        decide, and `model.step_functions` caches the compiled functions.
      fn: a function of (model, …) computing on one replica's data, with no
        collectives inside.

    Returns:
      A callable taking `fn`'s arguments after `model`.
    """
    if not model.jit_compile or model.run_eagerly:
        return functools.partial(fn, model)
    if model.sync_batch_norm and Replicas.count() > 1:
        raise ConfigError(SYNC_BN_XLA_ERROR)
    cache = model.step_functions
    if fn not in cache:
        cache[fn] = tf.function(functools.partial(fn, model), jit_compile=True, reduce_retracing=True)
    return cache[fn]


# --------------------------------------------------------------------- the forward
def encode(model, images):
    """Trunk forward with batch statistics that leaves the moving averages alone."""
    return stateless(model.trunk)(images, training=True)


def task_losses(model, batch, update_stats=True):
    """Losses of the main task and of every auxiliary objective on one batch.

    Each loss is this replica's share of the mean over the global batch.

    Args:
      model: the `RobustSSLModel`.
      batch: dict with "image", "label" and each task's "<name>/inputs" and
        "<name>/targets" (see `robust_ssl.data.pipeline`).
      update_stats: let the clean forward update BN moving averages.

    Returns:
      (list [L_main, L_1, …, L_k] of scalars, main-task logits).
    """
    images = batch["image"]
    # Tasks that join the clean forward (AugMix's joint batch norm) are run
    # through the trunk in one batch with the clean images.
    joint = [t for t in model.tasks if t.joins_clean_forward()]
    parts = [images] + [flatten_views(batch[f"{t.name}/inputs"]) for t in joint]
    stacked = tf.concat(parts, axis=0) if joint else images
    features = model.trunk(stacked, training=True) if update_stats else encode(model, stacked)
    if joint:
        pieces = tf.split(features, [tf.shape(p)[0] for p in parts], axis=0)
        clean, joint_features = pieces[0], {t.name: f for t, f in zip(joint, pieces[1:])}
    else:
        clean, joint_features = features, {}
    logits = model.classifier(clean, training=True)
    forward = Forward(
        clean,
        logits,
        functools.partial(encode, model),
        functools.partial(model.classifier, training=True),
        joint_features,
    )
    losses = [Replicas.global_mean(sparse_ce(batch["label"], logits))]
    for task, head in zip(model.tasks, model.heads_by_task):
        if head is not None and not update_stats:  # the heads' own batch norms must not move either
            head = stateless(head)
        predictions = task.predict(head, forward, batch.get(f"{task.name}/inputs"), training=True)
        targets = batch[f"{task.name}/targets"]
        losses.append(Replicas.global_mean(task.per_example_loss(targets, predictions)))
    return losses, logits


# --------------------------------------------------------------------- pieces
def weighted_loss(losses, lambdas):
    """L_λ = L_main + Σ_i λ_i L_i.

    Args:
      losses: [L_main, L_1, …, L_k] scalars.
      lambdas: [k] task weights.
    """
    total = losses[0]
    for i, loss in enumerate(losses[1:]):
        total = total + lambdas[i] * loss
    return total


def check_finite(model, values, names, what):
    """Fails the step with "robust_ssl: non-finite <what> of <name>" on NaN/Inf."""
    step = model.optimizer.iterations
    for value, name in zip(values, names):
        tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(value)),
            [f"robust_ssl: non-finite {what} of {name!r} at step", step],
        )


def after(tensors, dependencies):
    """The same tensors, computed only once `dependencies` have run.

    Makes explicit that the weight update follows the lookahead: the main
    head's gradient does not involve λ, so without this nothing in the data
    flow says its update must wait for the lookahead's read of that weight.
    """
    with tf.control_dependencies([d for d in dependencies if d is not None]):
        return [None if t is None else tf.identity(t) for t in tensors]


def fixed_gradients(model, batch):
    """∇ L_λ over every network weight at the current λ (one replica).

    Returns:
      (gradients over `model.network_variables`, losses, main logits).
    """
    lambdas = tf.convert_to_tensor(model.lambdas)
    with tf.GradientTape() as tape:
        losses, logits = task_losses(model, batch)
        total = weighted_loss(losses, lambdas)
    return tape.gradient(total, model.network_variables), losses, logits


def local_per_task_gradients(model, batch, update_stats=True):
    """One forward, then one backward per task, on this replica.

    The tasks share forwards (main, rotation 0°, IR use the clean batch), so
    their gradients must be taken apart. A head task reaches the trunk and its
    own head; a classifier objective (`Task.uses_classifier`) reaches the
    trunk and the main classifier.

    Returns:
      (losses, logits, main grads over ψ, per-task grads over what ψ each task
      reaches (the trunk, plus the classifier for classifier objectives),
      per-task grads over each task's own head).
    """
    trunk_vars = model.trunk.trainable_variables
    classifier_vars = model.classifier.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        losses, logits = task_losses(model, batch, update_stats=update_stats)
    main_grads = tape.gradient(losses[0], trunk_vars + classifier_vars)
    reach_grads, head_task_grads = [], []
    for task, loss, head_vars in zip(model.tasks, losses[1:], model.task_head_variables):
        reach = trunk_vars + classifier_vars if task.uses_classifier else trunk_vars
        grads = tape.gradient(loss, reach + head_vars)
        reach_grads.append(grads[: len(reach)])
        head_task_grads.append(grads[len(reach) :])
    del tape
    return losses, logits, main_grads, reach_grads, head_task_grads


def per_task_gradients(model, batch, update_stats=True):
    """`local_per_task_gradients` summed over replicas, task gradients over all of ψ.

    Returns:
      (losses, logits, main grads over ψ, per-task grads over ψ with None where
      a task does not reach, per-task grads over each task's own head).
    """
    losses, logits, *grads = compiled(model, local_per_task_gradients)(batch, update_stats)
    main_grads, reach_grads, head_task_grads = Replicas.all_reduce(tuple(grads))
    missing = [None] * len(model.classifier.trainable_variables)
    psi_task_grads = [
        list(g) if task.uses_classifier else list(g) + missing for task, g in zip(model.tasks, reach_grads)
    ]
    return losses, logits, main_grads, psi_task_grads, head_task_grads


# How the lookahead step α is read from the learning rate (`automl.alpha`,
# `RobustSSLModel(alpha_mode=…)`), the default first.
ALPHA_MODES = ("multiplier", "lr")


def alpha(model):
    """The lookahead step α: lr / base lr ("multiplier", the reference code) or lr."""
    lr = tf.cast(model.optimizer.learning_rate, model.lambdas.dtype)
    return lr / model.base_learning_rate if model.alpha_mode == "multiplier" else lr


def meta_loss_fn(model, batch):
    """L_main on the validation batch as a function of ψ (functional forward)."""
    images, labels = batch["meta/image"], batch["meta/label"]
    non_trainable = [v.value for v in model.trunk.non_trainable_variables]
    n_trunk = len(model.trunk.trainable_variables)

    def meta_loss(params):
        features, _ = model.trunk.stateless_call(params[:n_trunk], non_trainable, images, training=True)
        logits, _ = model.classifier.stateless_call(params[n_trunk:], [], features)
        return Replicas.global_mean(sparse_ce(labels, logits))

    return meta_loss


def apply_lambda_gradient(model, d_lambda):
    """One meta-optimiser step on λ (clamped at 0 by its NonNeg constraint)."""
    check_finite(model, [d_lambda], ["lambdas"], "λ gradient")
    model.meta_optimizer.apply(Replicas.share([d_lambda]), [model.lambdas])
    return tf.convert_to_tensor(model.lambdas)


def weighted_gradients(main_grads, psi_task_grads, head_task_grads, lambdas):
    """This replica's share of ∇ L_λ over the network weights, from all-reduced per-task gradients.

    Args:
      main_grads: ∂L_main/∂ψ (all replicas).
      psi_task_grads: per task, ∂L_i/∂ψ (None where a task does not reach).
      head_task_grads: per task, ∂L_i over its own head's weights.
      lambdas: [k] the λ to weight them with.

    Returns:
      Gradients over `model.network_variables` (ψ, then the heads; None = zero),
      each divided by the replica count (the optimiser sums the replicas').
    """
    psi_grads = meta.combine_gradients(main_grads, psi_task_grads, lambdas)
    head_grads = [
        None if g is None else lambdas[i] * g for i, grads in enumerate(head_task_grads) for g in grads
    ]
    return Replicas.share(psi_grads + head_grads)


def assign_lambdas(model, values):
    """Sets λ to `values` (identical on every replica) and returns them.

    For methods that set λ outside the meta optimiser (a renormalisation, a
    reparametrisation). Each replica writes its own copy of the mirrored
    variable with the same all-reduced value.
    """
    model.lambdas.assign(values)
    return tf.convert_to_tensor(model.lambdas)


# --------------------------------------------------------------------- the step kinds
def update_step_metrics(model, labels, losses, logits, meta_loss=None):
    """Updates the model's per-epoch means after a training step on this replica.

    Losses are this replica's share of the global mean, so × replicas gives
    the global value on every replica.

    Args:
      model: the `RobustSSLModel` (its trackers).
      labels: the batch's labels.
      losses: [L_main, L_1, …] of the step.
      logits: main-task logits.
      meta_loss: the meta step's validation loss (None on fixed-λ steps).
    """
    trackers = model.trackers
    total = weighted_loss(losses, tf.convert_to_tensor(model.lambdas))
    trackers.loss.update_state(Replicas.global_value(total))
    trackers.main_loss.update_state(Replicas.global_value(losses[0]))
    for tracker, loss in zip(trackers.task_losses, losses[1:]):
        tracker.update_state(Replicas.global_value(loss))
    if meta_loss is not None:
        trackers.meta_loss.update_state(Replicas.global_value(meta_loss))
    trackers.accuracy.update_state(labels, logits)


def fixed_step(model, batch):
    """Returns (this replica's gradients, losses, logits, meta loss 0)."""
    grads, losses, logits = compiled(model, fixed_gradients)(batch)
    return grads, losses, logits, tf.zeros([], model.lambdas.dtype)


def train_step(model, batch, kind):
    """One training step of `kind` on this replica: gradients, update, metrics.

    Args:
      model: the compiled `RobustSSLModel`.
      batch: a training dict (see `robust_ssl.data.pipeline`).
      kind: FIXED or META (`step_kind`).

    Returns:
      A dict of metric results.
    """
    step = model.weighting.meta_step if kind == META else fixed_step
    grads, losses, logits, meta_loss = step(model, batch)
    variables = model.network_variables
    grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, variables)]
    check_finite(model, losses, ["main", *model.task_names], "loss")
    n = Replicas.count()
    if model.weight_decay:
        # Coupled L2 (PyTorch SGD's weight_decay): each replica adds its 1/n
        # share, as the optimiser sums the replicas' gradients.
        grads = [g + (model.weight_decay / n) * v for g, v in zip(grads, variables)]
    model.optimizer.apply(grads, variables)
    update_step_metrics(model, batch["label"], losses, logits, meta_loss if kind == META else None)
    return model.metric_results()
