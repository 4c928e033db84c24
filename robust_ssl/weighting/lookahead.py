"""The lookahead meta-gradient: the paper's Algorithm 1 (Kim, Lee & Suh 2019).

With ψ = trunk + main head, g_main = ∂L_main/∂ψ and g_i = ∂L_i/∂ψ on the
training batch, one lookahead step ψ' = ψ − α (g_main + Σ_i λ_i g_i) and the
validation loss L_meta(λ) = L_main(val; ψ'(λ)):

    ∂L_meta/∂λ_i = −α ⟨∇_ψ' L_main(val; ψ'), g_i⟩,      λ ← max(0, λ − β ∂L_meta/∂λ),

exactly and without second-order backpropagation (`robust_ssl.meta`,
docs/design.md). The weight update then uses the new λ. `automl.mode=naive`
is Algorithm 1 literally (double backprop through the inner gradient, then
the loss recomputed with the new λ); both give the same numbers.
"""

import tensorflow as tf

from robust_ssl import meta, steps
from robust_ssl.replicas import Replicas
from robust_ssl.weighting.base import WeightingMethod, register_method

# The lookahead's computations (`automl.mode`, `RobustSSLModel(meta_mode=…)`),
# the default first: "fast" (first-order, exact) or "naive" (Algorithm 1 literally).
META_MODES = ("fast", "naive")


def local_hypergradient(model, batch, main_grads, psi_task_grads):
    """This replica's share of ∂L_meta/∂λ from the all-reduced task gradients."""
    return meta.hypergradient(
        steps.meta_loss_fn(model, batch),
        [v.value for v in model.psi_variables],
        main_grads,
        psi_task_grads,
        tf.convert_to_tensor(model.lambdas),
        steps.alpha(model),
    )


def fast_hypergradient(model, batch, main_grads, psi_task_grads):
    """∂L_meta/∂λ (all replicas) and this replica's meta loss, first-order and exact."""
    d_lambda, meta_loss = steps.compiled(model, local_hypergradient)(batch, main_grads, psi_task_grads)
    return Replicas.all_reduce(d_lambda), meta_loss


def lookahead_meta_loss(model, batch, lambdas, update_stats):
    """L_meta at ψ' = ψ − α ∇_ψ L_λ, differentiable in `lambdas` (second order)."""
    psi = model.psi_variables
    with tf.GradientTape() as inner:
        losses, _ = steps.task_losses(model, batch, update_stats=update_stats)
        total = steps.weighted_loss(losses, lambdas)
    psi_grads = Replicas.all_reduce(inner.gradient(total, psi))
    new_psi = meta.lookahead([v.value for v in psi], psi_grads, steps.alpha(model))
    return steps.meta_loss_fn(model, batch)(new_psi)


def naive_hypergradient(model, batch, lambdas, update_stats=True):
    """Algorithm 1 literally: backprop through the inner gradient (second order).

    Never XLA-compiled: its all-reduce sits inside the outer tape.
    """
    lambdas = tf.convert_to_tensor(lambdas)
    with tf.GradientTape() as outer:
        outer.watch(lambdas)
        meta_loss = lookahead_meta_loss(model, batch, lambdas, update_stats)
    d_lambda = outer.gradient(meta_loss, lambdas)
    return Replicas.all_reduce(d_lambda), meta_loss


def fast_meta_step(model, batch):
    """Per-task gradients, exact hypergradient, λ update, weights with the new λ."""
    losses, logits, main_grads, psi_task_grads, head_task_grads = steps.per_task_gradients(model, batch)
    d_lambda, meta_loss = fast_hypergradient(model, batch, main_grads, psi_task_grads)
    new_lambdas = steps.apply_lambda_gradient(model, d_lambda)
    # The final update reuses the per-task gradients with the new λ: the same
    # numbers Algorithm 1 gets by recomputing the loss.
    grads = steps.weighted_gradients(main_grads, psi_task_grads, head_task_grads, new_lambdas)
    return steps.after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss


def naive_meta_step(model, batch):
    """Algorithm 1: second-order hypergradient, λ update, loss recomputed with the new λ."""
    d_lambda, meta_loss = naive_hypergradient(model, batch, model.lambdas)
    new_lambdas = steps.apply_lambda_gradient(model, d_lambda)
    with tf.GradientTape() as tape:
        losses, logits = steps.task_losses(model, batch, update_stats=False)
        total = steps.weighted_loss(losses, new_lambdas)
    grads = tape.gradient(total, model.network_variables)
    return steps.after(grads, [new_lambdas, meta_loss]), losses, logits, meta_loss


@register_method
class Lookahead(WeightingMethod):
    """λ by the exact lookahead hypergradient (the paper's Algorithm 1; the default).

    `model.meta_mode` picks the computation: "fast" (first-order, exact) or
    "naive" (double backprop, then recompute). Its meta loss is the main
    loss on the validation batch at ψ'.
    """

    name = "lookahead"
    order = 0
    uses_meta_batch = True
    reference = "Kim, Lee & Suh 2019"

    def meta_step(self, model, batch):
        """One lookahead meta step (see `WeightingMethod.meta_step`)."""
        step = fast_meta_step if model.meta_mode == "fast" else naive_meta_step
        return step(model, batch)


def lambda_gradient(model, batch, mode="fast"):
    """The lookahead's ∂L_meta/∂λ at the current weights and λ, changing nothing.

    Args:
      model: the `RobustSSLModel`.
      batch: a training dict including "meta/image" and "meta/label".
      mode: "fast" (first-order, exact) or "naive" (double backprop).

    Returns:
      (d_lambda [k], meta_loss scalar).
    """
    if mode == "fast":
        _, _, main_grads, psi_task_grads, _ = steps.per_task_gradients(model, batch, update_stats=False)
        return fast_hypergradient(model, batch, main_grads, psi_task_grads)
    return naive_hypergradient(model, batch, model.lambdas, update_stats=False)


def meta_objective(model, batch, lambdas):
    """L_meta(λ): the validation loss after one lookahead step with weights λ.

    Used to check the hypergradient by finite differences; changes nothing.

    Args:
      model: the `RobustSSLModel`.
      batch: a training dict including "meta/image" and "meta/label".
      lambdas: float [k] task weights.

    Returns:
      The scalar meta loss.
    """
    lambdas = tf.convert_to_tensor(lambdas, model.lambdas.dtype)
    return lookahead_meta_loss(model, batch, lambdas, update_stats=False)
