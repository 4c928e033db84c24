"""The pieces of one mode's training step, timed apart, to show what bounds it.

`run_breakdown` times the forward of all tasks, one backward of the weighted
loss, one backward per task, the meta batch's forward and backward, and
`model.lambda_gradient` (fast and naive), each its own `tf.function` that
changes nothing in the model.
"""

import time

from robust_ssl.bench.flops import count_flops
from robust_ssl.bench.measure import load_average, summarize
from robust_ssl.bench.runner import build


def _step_pieces(model, batch):
    """name -> (description, callable(batch)) of the pieces of a training step.

    None of them changes the model (batch statistics only, no updates).
    """
    import tensorflow as tf

    from robust_ssl import steps

    lambdas = tf.convert_to_tensor(model.lambdas)

    def total(grads):
        return tf.add_n([tf.reduce_sum(g) for g in grads if g is not None])

    def forward(b):
        losses, _ = steps.task_losses(model, b, update_stats=False)
        return steps.weighted_loss(losses, lambdas)

    def fixed_gradients(b):
        # As `steps.fixed_gradients`, but without updating the BN statistics.
        with tf.GradientTape() as tape:
            losses, _ = steps.task_losses(model, b, update_stats=False)
            loss = steps.weighted_loss(losses, lambdas)
        return total(tape.gradient(loss, model.network_variables))

    def per_task_gradients(b):
        _, _, main_grads, trunk_task_grads, head_task_grads = steps.local_per_task_gradients(
            model, b, update_stats=False
        )
        return total([*main_grads, *(g for gs in trunk_task_grads + head_task_grads for g in gs)])

    def meta_forward_backward(b):
        # The lookahead's functional forward (the model's meta loss) at ψ.
        params = [v.value for v in model.psi_variables]
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = steps.meta_loss_fn(model, b)(params)
        return total(tape.gradient(loss, params))

    pieces = {
        "forward": ("forward of all tasks (losses only)", forward),
        "fixed_gradients": ("forward + one backward of the λ-weighted loss", fixed_gradients),
    }
    if model.tasks:
        pieces["per_task_gradients"] = (
            "forward + one backward per task (persistent tape)",
            per_task_gradients,
        )
    if "meta/image" in batch:
        pieces["meta_forward_backward"] = (
            "meta batch forward + backward at ψ (stateless)",
            meta_forward_backward,
        )
        pieces["lambda_gradient_fast"] = (
            "per-task gradients + lookahead hypergradient (model.lambda_gradient fast)",
            lambda b: tf.reduce_sum(model.lambda_gradient(b, "fast")[0]),
        )
        pieces["lambda_gradient_naive"] = (
            "double-backprop hypergradient (model.lambda_gradient naive)",
            lambda b: tf.reduce_sum(model.lambda_gradient(b, "naive")[0]),
        )
    return pieces


def run_breakdown(mode_name, settings, config_dict):
    """Times the pieces of one mode's training step (forward, backward(s), lookahead).

    Args:
      mode_name: key in `MODES` (its tasks and AutoML setting are used).
      settings: `Settings` (`steps` timed calls per piece after one warm-up).
      config_dict: the base experiment config as a plain dict.

    Returns:
      dict piece name -> {description, median_ms, min_ms, max_ms, flops}.
    """
    import tensorflow as tf

    _, config, model, batch = build(mode_name, settings, config_dict)
    jit = bool(config.train.jit_compile)
    out = {"mode": mode_name, "pieces": {}, "load_start": load_average()}
    pieces = _step_pieces(model, batch)
    compiled, flops, times = {}, {}, {}
    for name, (_, fn) in pieces.items():
        compiled[name] = tf.function(fn, jit_compile=jit)
        flops[name] = count_flops(compiled[name].get_concrete_function(batch).graph)["total"]
        float(compiled[name](batch))  # warm-up (and tracing)
        times[name] = []
    # Round-robin, so that a drifting machine load affects every piece alike.
    for _ in range(settings.steps):
        for name, fn in compiled.items():
            start = time.perf_counter()
            float(fn(batch))
            times[name].append(time.perf_counter() - start)
    for name, (description, _) in pieces.items():
        out["pieces"][name] = {"description": description, **summarize(times[name]), "flops": flops[name]}
    out["load_end"] = load_average()
    return out
