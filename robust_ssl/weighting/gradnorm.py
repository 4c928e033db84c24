"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018): λ that equalise gradient norms.

With W the weights of the last shared layer (here: the kernel of the trunk's
last layer with a kernel; WRN: the last 3×3 convolution), tasks j = 0 (main),
1 … k (auxiliary), weights w_0 = 1, w_i = λ_i:

    G_j = ‖∇_W w_j L_j‖ = w_j ‖∇_W L_j‖,          Ḡ = mean_j G_j,
    L̃_j = L_j(t) / L_j(0),                         r_j = L̃_j / mean_j L̃_j,
    L_grad = Σ_j |G_j − Ḡ r_j^α|                     (targets Ḡ r_j^α held constant),
    ∂L_grad/∂λ_i = sign(G_i − Ḡ r_i^α) ‖∇_W L_i‖,

then a meta-optimiser step on λ (clamped at 0) and the renormalisation
λ ← k λ / Σ_i λ_i, so that all T = k + 1 weights sum to the task count T as
in the paper. The network update of the step uses the λ from before the
update (the paper's Algorithm 1 updates w and the network weights from the
same forward pass).

How the main task is treated: it is one of the T tasks in Ḡ and in the mean
of the loss ratios (so the auxiliary tasks' gradients are pulled towards the
main task's scale), but its weight stays 1 — only the auxiliary λ are
learned, as for every method of this package; hence Σ_i λ_i = k = T − 1.

Choices, and where they differ from the paper:
- L_j(0) are the losses of the first GradNorm step, i.e. the first step after
  the warm-up (the paper has no warm-up and takes the losses at step 0); they
  are a model variable (`gradnorm_initial_losses`), so a resumed run keeps
  them.
- The gradient norms and the losses are of the global batch (all replicas).
- λ is updated on meta steps only (`meta_every`; 1 = every step as in the
  paper), by the meta optimiser (`automl.meta_optimizer`, `meta_lr`).
- Where every λ is clamped to 0, the renormalisation restores λ = 1.
- The validation batch is not used.

Options: `alpha` (the asymmetry; 1.5 as the paper's NYUv2 runs, 0.12 its
toy example) and `layer` (the name of the trunk layer whose kernel is W;
"" = the last layer with a kernel).
"""

import keras
import tensorflow as tf

from robust_ssl import steps
from robust_ssl.errors import ConfigError
from robust_ssl.replicas import Replicas
from robust_ssl.weighting.base import WeightingMethod, register_method

UNSET = -1.0  # initial losses not recorded yet (a loss is never negative)


def gradnorm_gradient(norms, losses, initial_losses, lambdas, alpha):
    """∂L_grad/∂λ and L_grad.

    Args:
      norms: [k+1] ‖∇_W L_j‖ of the main task (first) and of each auxiliary task.
      losses: [k+1] L_j(t), main first.
      initial_losses: [k+1] L_j(0).
      lambdas: [k] the auxiliary weights (the main weight is 1).
      alpha: the asymmetry α.

    Returns:
      (d_lambda [k], L_grad scalar).
    """
    weights = tf.concat([tf.ones([1], lambdas.dtype), lambdas], axis=0)
    norms_weighted = weights * norms  # G_j
    ratios = losses / initial_losses  # L̃_j
    inverse_rates = ratios / tf.reduce_mean(ratios)  # r_j
    # The paper holds the targets constant when differentiating L_grad.
    targets = tf.stop_gradient(tf.reduce_mean(norms_weighted) * inverse_rates**alpha)
    gaps = norms_weighted - targets
    # G_i = λ_i ‖∇_W L_i‖ is linear in λ_i: the derivative of |G_i − target_i| is exact.
    return tf.sign(gaps[1:]) * norms[1:], tf.reduce_sum(tf.abs(gaps))


def renormalise(lambdas, total):
    """λ scaled to sum to `total`; λ = 1 where they sum to 0 (all clamped)."""
    scaled = lambdas * tf.math.divide_no_nan(tf.cast(total, lambdas.dtype), tf.reduce_sum(lambdas))
    return tf.where(tf.reduce_sum(lambdas) > 0, scaled, tf.ones_like(lambdas))


def _layers(layer):
    """`layer`'s sublayers, depth first in order (nested models included)."""
    for sub in getattr(layer, "layers", []):
        yield sub
        yield from _layers(sub)


def shared_weight_index(model, layer_name=""):
    """The index in `model.psi_variables` of W, the last shared layer's kernel.

    Args:
      model: the `RobustSSLModel`.
      layer_name: a trunk layer's name; "" = the trunk's last layer with a kernel.

    Returns:
      An int (ψ lists the trunk's variables first, so it indexes the
      per-task gradients over ψ too).

    Raises:
      ConfigError: no such layer, or it has no trainable kernel.
    """
    trunk_vars = model.trunk.trainable_variables
    candidates = [
        layer
        for layer in _layers(model.trunk)
        if any(getattr(layer, "kernel", None) is v for v in trunk_vars)
        and (not layer_name or layer.name == layer_name)
    ]
    if not candidates:
        what = (
            f"a trunk layer {layer_name!r} with a trainable kernel"
            if layer_name
            else "a trunk layer with a kernel"
        )
        raise ConfigError(f"automl.method=gradnorm needs {what} (automl.method_options.gradnorm.layer)")
    kernel = candidates[-1].kernel
    return next(i for i, v in enumerate(trunk_vars) if v is kernel)


def _norm(gradient, dtype):
    return tf.zeros([], dtype) if gradient is None else tf.cast(tf.norm(gradient), dtype)


@register_method
class GradNorm(WeightingMethod):
    """λ equalising the gradient norms at the last shared layer (Chen et al. 2018)."""

    name = "gradnorm"
    order = 2
    reference = "Chen, Badrinarayanan, Lee & Rabinovich 2018"
    DEFAULT_OPTIONS = {"alpha": 1.5, "layer": ""}

    def validate_options(self):
        """α >= 0; `layer` a string."""
        if not isinstance(self.options["alpha"], (int, float)) or not self.options["alpha"] >= 0:
            raise ConfigError(
                f"automl.method_options.gradnorm.alpha must be >= 0; got {self.options['alpha']!r}"
            )
        if not isinstance(self.options["layer"], str):
            raise ConfigError(
                f"automl.method_options.gradnorm.layer must be a layer name; got {self.options['layer']!r}"
            )

    def create_state(self, model):
        """Adds `gradnorm_initial_losses` L_j(0) (main first), unset until the first GradNorm step."""
        shared_weight_index(model, self.options["layer"])  # fail at build time, not at the first meta step
        model.weighting_state["initial_losses"] = model.add_weight(
            shape=(len(model.tasks) + 1,),
            initializer=keras.initializers.Constant(UNSET),
            trainable=False,
            name="gradnorm_initial_losses",
        )

    def meta_step(self, model, batch):
        """Per-task gradients; λ by one step on L_grad, renormalised; network update with the old λ."""
        losses, logits, main_grads, psi_task_grads, head_task_grads = steps.per_task_gradients(model, batch)
        dtype = model.lambdas.dtype
        w = shared_weight_index(model, self.options["layer"])
        # All-reduced gradients and losses: the norms and ratios of the global batch.
        norms = tf.stack([_norm(main_grads[w], dtype)] + [_norm(g[w], dtype) for g in psi_task_grads])
        current = tf.cast(Replicas.all_reduce(tf.stack(losses)), dtype)
        state = model.weighting_state["initial_losses"]
        initial = tf.where(tf.convert_to_tensor(state) < 0, current, tf.convert_to_tensor(state))
        state.assign(initial)
        lambdas = tf.convert_to_tensor(model.lambdas)
        d_lambda, objective = gradnorm_gradient(
            norms, current, initial, lambdas, float(self.options["alpha"])
        )
        stepped = steps.apply_lambda_gradient(model, d_lambda)
        new_lambdas = steps.assign_lambdas(model, renormalise(stepped, len(model.tasks)))
        grads = steps.weighted_gradients(main_grads, psi_task_grads, head_task_grads, lambdas)
        meta_loss = objective / Replicas.count()  # the metrics sum every replica's share
        return steps.after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss
