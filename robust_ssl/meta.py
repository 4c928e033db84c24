"""The lookahead hypergradient of Algorithm 1, as pure functions.

Notation (paper, Sec. 4): ψ = trunk + main-head parameters, g_main = ∂L_main/∂ψ,
g_i = ∂L_i/∂ψ (zero on the main head), L_λ = L_main + Σ_i λ_i L_i and

    ψ'(λ) = ψ − α (g_main + Σ_i λ_i g_i),        L_meta(λ) = L_main(val; ψ'(λ)).

L_λ is linear in λ and the g_i do not depend on λ, so

    ∂L_meta/∂λ_i = −α ⟨∇_ψ' L_main(val; ψ'), g_i⟩,

exact without any second-order backpropagation (docs/design.md derives it).
"""

import tensorflow as tf


def combine_gradients(main_grads, task_grads, lambdas):
    """Returns g_main + Σ_i λ_i g_i, per parameter.

    Args:
      main_grads: list over parameters of tensors (None = zero).
      task_grads: list over tasks of lists over the same parameters (None = zero).
      lambdas: float32 [k] task weights.

    Returns:
      A list of tensors (None where every term is None).
    """
    combined = []
    for p, main in enumerate(main_grads):
        total = main
        for i, grads in enumerate(task_grads):
            if grads[p] is None:
                continue
            term = lambdas[i] * grads[p]
            total = term if total is None else total + term
        combined.append(total)
    return combined


def lookahead(params, grads, alpha):
    """One plain SGD step ψ − α g (zero where g is None); no momentum, no decay."""
    return [p if g is None else p - alpha * g for p, g in zip(params, grads)]


def hypergradient(meta_loss_fn, params, main_grads, task_grads, lambdas, alpha):
    """∂L_meta/∂λ by differentiating through the lookahead step with a tape on λ.

    Args:
      meta_loss_fn: callable(list of parameter tensors) -> scalar validation loss
        of the main task (a functional forward such as `stateless_call`).
      params: current values of ψ.
      main_grads: ∂L_main/∂ψ on the training batch.
      task_grads: list over tasks of ∂L_i/∂ψ (None where a task does not reach).
      lambdas: float32 [k] current task weights.
      alpha: lookahead step size.

    Returns:
      (d_lambda [k], meta_loss scalar).
    """
    lambdas = tf.convert_to_tensor(lambdas)
    with tf.GradientTape() as tape:
        tape.watch(lambdas)
        new_params = lookahead(params, combine_gradients(main_grads, task_grads, lambdas), alpha)
        meta_loss = meta_loss_fn(new_params)
    d_lambda = tape.gradient(meta_loss, lambdas)
    if d_lambda is None:  # no task reaches ψ
        d_lambda = tf.zeros_like(lambdas)
    return d_lambda, meta_loss
