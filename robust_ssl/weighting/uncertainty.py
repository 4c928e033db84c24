"""Uncertainty weighting (Kendall, Gal & Cipolla 2018): λ_i = exp(−s_i), s_i learned.

Each auxiliary task i has a learned log-variance s_i = log σ_i², trained by
gradient descent on

    L_unc(s) = Σ_i exp(−s_i) L_i + s_i,      ∂L_unc/∂s_i = 1 − exp(−s_i) L_i,

with the network trained on L_main + Σ_i exp(−s_i) L_i at the same time, from
the same batch. λ is the weight the loss gives a task, λ_i = exp(−s_i): the
model's `lambdas` hold exp(−s) after every update (the log-variances are a
variable of their own, `log_variances`, which the meta optimiser trains), so
λ logging, checkpoints and figures see the weights. s_i starts at −log λ_i of
the config (0.5 -> s = 0.69). The fixed point of s_i is λ_i = 1 / L_i.

Choices, and where they differ from the paper:
- One form for every task, the classification-like exp(−s) L + s.
  Kendall et al.'s classification term (Eq. 10), (1/σ²) L + log σ, reads
  exp(−s) L + s/2 in s = log σ², whose fixed point is λ = 1/(2L); their
  regression term (1/2σ²) L + log σ = ½ (exp(−s) L + s) has this module's
  fixed point λ = 1/L but half the weight. The reconstruction (MSE) tasks
  get the same form as the classification tasks.
- The main loss keeps weight 1 (its s is 0 and not learned): λ are weights
  relative to the main task, as for every method of this package, and the
  network's effective learning rate stays the schedule's.
- s is trained by the meta optimiser (`automl.meta_optimizer`, `meta_lr`),
  not by the network's optimiser, and only on meta steps: after the warm-up
  (the paper has none) and every `meta_every` steps (1 = every step, as in
  the paper). The network update of a meta step uses the λ from before the
  update (simultaneous gradient descent on weights and s, as joint training
  does). The validation batch is not used.
"""

import keras
import numpy as np
import tensorflow as tf

from robust_ssl import steps
from robust_ssl.errors import ConfigError
from robust_ssl.replicas import Replicas
from robust_ssl.weighting.base import WeightingMethod, register_method


def uncertainty_gradient(log_variances, losses):
    """∂L_unc/∂s and L_unc for task losses `losses`.

    Args:
      log_variances: [k] s_i = log σ_i².
      losses: [k] the task losses L_i (means over the global batch).

    Returns:
      (d_s [k] = 1 − exp(−s) L, L_unc = Σ_i exp(−s_i) L_i + s_i).
    """
    weights = tf.exp(-log_variances)
    return 1.0 - weights * losses, tf.reduce_sum(weights * losses + log_variances)


@register_method
class Uncertainty(WeightingMethod):
    """λ_i = exp(−s_i), s_i a learned log-variance (Kendall, Gal & Cipolla 2018)."""

    name = "uncertainty"
    order = 1
    reference = "Kendall, Gal & Cipolla 2018"

    def check_lambdas(self, names, lambdas):
        """λ = exp(−s) > 0: a task cannot start at λ = 0 (s would be infinite)."""
        for name, value in zip(names, lambdas):
            if not value > 0:
                raise ConfigError(
                    f"automl.method=uncertainty needs λ > 0 (λ = exp(−s)); task {name!r} starts at {value}"
                )

    def create_state(self, model):
        """Adds `log_variances` s = −log λ (the initial λ), trained by the meta optimiser."""
        model.weighting_state["log_variances"] = model.add_weight(
            shape=(len(model.tasks),),
            # A float64 array: a list would pass through float32 on its way to a float64 variable.
            initializer=keras.initializers.Constant(-np.log(np.asarray(model.initial_lambdas, np.float64))),
            trainable=True,
            name="log_variances",
        )

    def meta_variables(self, model):
        """The log-variances (λ follows them)."""
        return [model.weighting_state["log_variances"]]

    def meta_step(self, model, batch):
        """Network gradients at the current λ; s ← meta optimiser step on ∂L_unc/∂s; λ ← exp(−s).

        Costs what a fixed-λ step costs (one backward of the weighted loss).
        """
        grads, losses, logits = steps.compiled(model, steps.fixed_gradients)(batch)
        log_variances = model.weighting_state["log_variances"]
        dtype = log_variances.dtype
        # The losses are this replica's shares of global means: their sum over
        # replicas is the global loss, the same on every replica.
        task_losses = tf.cast(Replicas.all_reduce(tf.stack(losses[1:])), dtype)
        d_s, objective = uncertainty_gradient(tf.convert_to_tensor(log_variances), task_losses)
        steps.check_finite(model, [d_s], ["lambdas"], "λ gradient")
        model.meta_optimizer.apply(Replicas.share([d_s]), [log_variances])
        new_lambdas = steps.assign_lambdas(model, tf.exp(-tf.convert_to_tensor(log_variances)))
        # The metrics count every replica's share: hand over 1/n of the global value.
        meta_loss = objective / Replicas.count()
        return steps.after(grads, [new_lambdas]), losses, logits, meta_loss
