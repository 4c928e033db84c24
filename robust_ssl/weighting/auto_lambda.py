"""Auto-Lambda (Liu, Liu & Davison 2022): the lookahead's hypergradient by a finite difference.

The objective is the lookahead's (`robust_ssl.weighting.lookahead`): the main
loss on the validation batch after one step ψ' = ψ − α (g_main + Σ_i λ_i g_i).
Its exact hypergradient is ∂L_meta/∂λ_i = −α ⟨v, g_i⟩ with
v = ∇_ψ' L_main(val; ψ'). Auto-Lambda's public code does not form the g_i
and the inner products; it takes the directional derivative of each task loss
along v by a central difference (DARTS' approximation):

    ε = ε₀ / ‖v‖   (ε₀ = 0.01),
    ∂L_meta/∂λ_i ≈ −α [L_i(ψ + ε v) − L_i(ψ − ε v)] / (2ε),

two extra forwards of every task at ψ ± εv; then λ ← max(0, λ − β ∂L_meta/∂λ)
and the weight update with the new λ, as the lookahead does. This module is
there to compare the approximation with the exact hypergradient on the same
objective, so everything else is the lookahead's:
- the lookahead step is plain SGD with the lookahead's α (`automl.alpha`);
  their code's virtual step also adds the momentum buffer and weight decay
  and uses the learning rate as α;
- the main loss keeps weight 1 and λ is clamped at 0; their code learns a
  weight for the main task too and does not clamp;
- the meta optimiser, β, warm-up and `meta_every` are the config's (their
  code: Adam, 1e-4, every step, no warm-up), the validation batch is the
  config's hold-out (theirs: another shuffle of the training set);
- the task losses at ψ ± εv are a functional forward (`keras.StatelessScope`):
  batch statistics as in training, but no moving-average update, and ψ is
  never written (their code adds and subtracts εv in place).
The per-task gradients g_i are taken anyway (the final update reuses them
with the new λ), so here the finite difference costs two forwards more than
the exact hypergradient, not less.
"""

import keras
import tensorflow as tf

from robust_ssl import meta, steps
from robust_ssl.errors import ConfigError
from robust_ssl.replicas import Replicas
from robust_ssl.weighting.base import WeightingMethod, register_method


def perturbation_size(direction, epsilon):
    """ε = epsilon / ‖direction‖ over all of its tensors (0 where the direction is 0)."""
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(d)) for d in direction]))
    return tf.math.divide_no_nan(tf.cast(epsilon, norm.dtype), norm)


def difference_quotient(loss_difference, eps, alpha):
    """−α [L_i(ψ + εv) − L_i(ψ − εv)] / (2ε): Auto-Lambda's ∂L_meta/∂λ (0 where ε = 0)."""
    return -alpha * tf.math.divide_no_nan(loss_difference, 2.0 * eps)


def hypergradient(meta_loss_fn, task_losses_fn, params, main_grads, task_grads, lambdas, alpha, epsilon=0.01):
    """Auto-Lambda's ∂L_meta/∂λ on plain tensors (one device): the method's equations in one place.

    Args:
      meta_loss_fn: callable(list of parameter tensors) -> validation loss of the main task.
      task_losses_fn: callable(list of parameter tensors) -> [k] task losses on the training batch.
      params: ψ.
      main_grads: ∂L_main/∂ψ.
      task_grads: per task, ∂L_i/∂ψ (None where a task does not reach).
      lambdas: [k] current λ.
      alpha: lookahead step size.
      epsilon: ε₀ of ε = ε₀ / ‖v‖.

    Returns:
      (d_lambda [k], meta loss at ψ').
    """
    direction, meta_loss = validation_gradient(meta_loss_fn, params, main_grads, task_grads, lambdas, alpha)
    eps = perturbation_size(direction, epsilon)
    plus = task_losses_fn([p + eps * d for p, d in zip(params, direction)])
    minus = task_losses_fn([p - eps * d for p, d in zip(params, direction)])
    return difference_quotient(plus - minus, eps, alpha), meta_loss


def validation_gradient(meta_loss_fn, params, main_grads, task_grads, lambdas, alpha):
    """v = ∇_ψ' L_meta(val; ψ') at the lookahead ψ' = ψ − α (g_main + Σ λ_i g_i), and L_meta.

    Returns:
      (v as a list over ψ (zeros where L_meta does not reach), meta loss).
    """
    combined = meta.combine_gradients(main_grads, task_grads, lambdas)
    new_params = [tf.convert_to_tensor(p) for p in meta.lookahead(params, combined, alpha)]
    with tf.GradientTape() as tape:
        tape.watch(new_params)
        meta_loss = meta_loss_fn(new_params)
    grads = tape.gradient(meta_loss, new_params)
    return [tf.zeros_like(p) if g is None else g for g, p in zip(grads, new_params)], meta_loss


# --------------------------------------------------------------------- on the model
def local_validation_gradient(model, batch, main_grads, psi_task_grads):
    """This replica's share of v = ∇_ψ' L_meta, and its meta loss (from all-reduced task gradients)."""
    return validation_gradient(
        steps.meta_loss_fn(model, batch),
        [v.value for v in model.psi_variables],
        main_grads,
        psi_task_grads,
        tf.convert_to_tensor(model.lambdas),
        steps.alpha(model),
    )


def local_loss_difference(model, batch, direction, eps):
    """[L_i(ψ + εv) − L_i(ψ − εv)]_i, this replica's share; ψ itself is never written."""
    psi = model.psi_variables

    def task_losses_at(sign):
        mapping = [(var, var.value + tf.cast(sign * eps, var.dtype) * d) for var, d in zip(psi, direction)]
        # Every read of a ψ variable inside the scope sees the perturbed value.
        with keras.StatelessScope(state_mapping=mapping):
            losses, _ = steps.task_losses(model, batch, update_stats=False)
        return tf.stack(losses[1:])

    return task_losses_at(1.0) - task_losses_at(-1.0)


def finite_difference_hypergradient(model, batch, main_grads, psi_task_grads, epsilon=0.01):
    """Auto-Lambda's ∂L_meta/∂λ (all replicas) and this replica's meta loss.

    Args:
      model: the `RobustSSLModel`.
      batch: a training dict including "meta/image" and "meta/label".
      main_grads, psi_task_grads: all-reduced per-task gradients over ψ
        (`steps.per_task_gradients`).
      epsilon: ε₀.

    Returns:
      (d_lambda [k], meta loss).
    """
    direction, meta_loss = steps.compiled(model, local_validation_gradient)(batch, main_grads, psi_task_grads)
    direction = Replicas.all_reduce(direction)
    eps = perturbation_size(direction, epsilon)
    difference = Replicas.all_reduce(steps.compiled(model, local_loss_difference)(batch, direction, eps))
    alpha = steps.alpha(model)
    d_lambda = difference_quotient(tf.cast(difference, alpha.dtype), tf.cast(eps, alpha.dtype), alpha)
    return d_lambda, meta_loss


def lambda_gradient(model, batch, epsilon=0.01):
    """Auto-Lambda's ∂L_meta/∂λ at the current weights and λ, changing nothing.

    Beside `model.lambda_gradient(batch, "fast")` (exact) it measures the
    approximation.

    Returns:
      (d_lambda [k], meta loss).
    """
    _, _, main_grads, psi_task_grads, _ = steps.per_task_gradients(model, batch, update_stats=False)
    return finite_difference_hypergradient(model, batch, main_grads, psi_task_grads, epsilon)


@register_method
class AutoLambda(WeightingMethod):
    """The lookahead's λ with Auto-Lambda's finite-difference hypergradient (Liu, Liu & Davison 2022)."""

    name = "auto_lambda"
    order = 3
    uses_meta_batch = True
    reference = "Liu, Liu & Davison 2022"
    DEFAULT_OPTIONS = {"epsilon": 0.01}

    def validate_options(self):
        """ε₀ > 0."""
        value = self.options["epsilon"]
        if not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"automl.method_options.auto_lambda.epsilon must be > 0; got {value!r}")

    def meta_step(self, model, batch):
        """Per-task gradients, finite-difference hypergradient, λ update, weights with the new λ."""
        losses, logits, main_grads, psi_task_grads, head_task_grads = steps.per_task_gradients(model, batch)
        d_lambda, meta_loss = finite_difference_hypergradient(
            model, batch, main_grads, psi_task_grads, float(self.options["epsilon"])
        )
        new_lambdas = steps.apply_lambda_gradient(model, d_lambda)
        grads = steps.weighted_gradients(main_grads, psi_task_grads, head_task_grads, new_lambdas)
        return steps.after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss
