"""The lookahead hypergradient: fast == naive == closed form == finite differences."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_model, train_steps
from harness import training_batch as make_batch
from task_fixtures import FlipConsistencyTask, registered

from robust_ssl import meta, steps
from robust_ssl.model import RobustSSLModel
from robust_ssl.tasks import TASKS

ALL_TASKS = tuple(TASKS)
# Self-supervised heads and a classifier objective (its gradient reaches the
# classifier, as AugMix's consistency loss does).
WITH_CLASSIFIER_OBJECTIVE = ("rotation", "ir", FlipConsistencyTask.name)
FOUR_TASKS = ("rotation", "color", "ir", "bir")


def make_model(tasks=FOUR_TASKS, meta_mode="fast", meta_lr=0.01, seed=1, **kwargs):
    return tiny_model(tasks, seed=seed, meta_mode=meta_mode, meta_lr=meta_lr, **kwargs)


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# ----------------------------------------------------------- pure functions
def hypergradient_by_inner_products(meta_loss_fn, params, main_grads, task_grads, lambdas, alpha):
    """∂L_meta/∂λ by the closed form −α ⟨∇_ψ' L_meta, g_i⟩: the oracle of `meta.hypergradient`.

    Args and Returns as `meta.hypergradient`.
    """
    new_params = meta.lookahead(params, meta.combine_gradients(main_grads, task_grads, lambdas), alpha)
    new_params = [tf.convert_to_tensor(p) for p in new_params]
    with tf.GradientTape() as tape:
        tape.watch(new_params)
        meta_loss = meta_loss_fn(new_params)
    outer = tape.gradient(meta_loss, new_params)
    d_lambda = []
    for grads in task_grads:
        dot = tf.add_n(
            [tf.reduce_sum(o * g) for o, g in zip(outer, grads) if g is not None and o is not None]
            or [tf.constant(0.0)]
        )
        d_lambda.append(-alpha * dot)
    return tf.stack(d_lambda) if d_lambda else tf.zeros([0]), meta_loss


def test_hypergradient_on_a_linear_model_matches_numpy_closed_form():
    """ψ = w (vector), losses quadratic: everything is checkable in float64 numpy."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=5)
    a_main, a1, a2, a_val = (rng.normal(size=5) for _ in range(4))
    g_main, g1, g2 = 2 * (w - a_main), 2 * (w - a1), 2 * (w - a2)  # ∇ of ||w − a||²
    lambdas = np.array([0.3, 0.7])
    alpha = 0.1

    def meta_loss(params):
        return tf.reduce_sum(tf.square(params[0] - a_val))

    def to_tf(x):
        return [tf.constant(x, tf.float64)]

    d_tape, loss = meta.hypergradient(
        meta_loss, to_tf(w), to_tf(g_main), [to_tf(g1), to_tf(g2)], tf.constant(lambdas, tf.float64), alpha
    )
    d_dot, _ = hypergradient_by_inner_products(
        meta_loss, to_tf(w), to_tf(g_main), [to_tf(g1), to_tf(g2)], tf.constant(lambdas, tf.float64), alpha
    )
    w_new = w - alpha * (g_main + lambdas[0] * g1 + lambdas[1] * g2)
    expected = np.array([-alpha * np.dot(2 * (w_new - a_val), g) for g in (g1, g2)])
    np.testing.assert_allclose(d_tape.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(d_dot.numpy(), expected, rtol=1e-10)
    assert float(loss) == pytest.approx(np.sum((w_new - a_val) ** 2))


def test_combine_gradients_skips_missing_terms():
    main = [tf.constant(1.0), None]
    tasks = [[tf.constant(2.0), None], [None, tf.constant(3.0)]]
    out = meta.combine_gradients(main, tasks, tf.constant([0.5, 2.0]))
    assert float(out[0]) == 2.0 and float(out[1]) == 6.0


# ----------------------------------------------------------- on the model
@pytest.fixture(scope="module")
def seven_task_model():
    return make_model(ALL_TASKS)


def test_fast_equals_naive_lambda_gradient_all_seven_tasks(seven_task_model):
    model = seven_task_model
    batch = make_batch(model)
    fast, fast_loss = model.lambda_gradient(batch, "fast")
    naive, naive_loss = model.lambda_gradient(batch, "naive")
    assert fast.shape == (len(ALL_TASKS),)
    assert np.all(np.isfinite(fast.numpy())) and np.any(fast.numpy() != 0)
    assert rel_diff(fast, naive) < 1e-4
    assert float(fast_loss) == pytest.approx(float(naive_loss), rel=1e-5)


@pytest.fixture
def classifier_objective():
    with registered(FlipConsistencyTask):
        yield


def test_fast_equals_naive_with_a_classifier_objective(classifier_objective):
    model = make_model(WITH_CLASSIFIER_OBJECTIVE)
    batch = make_batch(model)
    fast, fast_loss = model.lambda_gradient(batch, "fast")
    naive, naive_loss = model.lambda_gradient(batch, "naive")
    assert np.all(np.isfinite(fast.numpy())) and fast.numpy()[2] != 0
    assert rel_diff(fast, naive) < 1e-4
    assert float(fast_loss) == pytest.approx(float(naive_loss), rel=1e-5)
    # The objective's gradient reaches the classifier; the heads' do not.
    _, _, _, psi_task_grads, head_task_grads = steps.per_task_gradients(model, batch, update_stats=False)
    n_classifier = len(model.classifier.trainable_variables)
    assert all(g is None for g in psi_task_grads[0][-n_classifier:])  # rotation
    assert all(
        g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in psi_task_grads[2][-n_classifier:]
    )
    assert head_task_grads[2] == []


@pytest.fixture(params=["all_tasks", "classifier_objective"])
def float64_model(request):
    """A model in float64, so that finite differences are precise."""
    tasks = ALL_TASKS if request.param == "all_tasks" else WITH_CLASSIFIER_OBJECTIVE
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        with registered(FlipConsistencyTask):
            model = make_model(tasks)
            # α = lr / base lr = 0.1: a lookahead step small enough for L_meta(λ)
            # to be smooth at the scale of the finite-difference step.
            model.optimizer.learning_rate.assign(0.01)
            yield model
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)


def test_lambda_gradient_matches_central_finite_differences(float64_model):
    model = float64_model
    batch = {
        k: tf.cast(v, tf.float64) if v.dtype == tf.float32 else v
        for k, v in make_batch(model, seed=3).items()
    }
    grad, _ = model.lambda_gradient(batch, "fast")
    naive, _ = model.lambda_gradient(batch, "naive")
    base = model.lambdas.numpy()
    assert base.dtype == np.float64
    eps = 1e-6
    fd = []
    for i in range(len(base)):
        up, down = base.copy(), base.copy()
        up[i] += eps
        down[i] -= eps
        fd.append(
            (float(model.meta_objective(batch, up)) - float(model.meta_objective(batch, down))) / (2 * eps)
        )
    assert rel_diff(grad, fd) < 1e-4, (grad.numpy(), fd)
    assert rel_diff(naive, fd) < 1e-4
    assert rel_diff(grad, naive) < 1e-8


def test_lambda_gradient_changes_nothing(seven_task_model):
    model = seven_task_model
    before = [v.numpy().copy() for v in model.weights]
    model.lambda_gradient(make_batch(model), "fast")
    model.lambda_gradient(make_batch(model), "naive")
    for b, v in zip(before, model.weights):
        np.testing.assert_array_equal(b, v.numpy())


@pytest.mark.parametrize(
    "tasks", [FOUR_TASKS, ("rotation", "inpaint", "rgb", "jigsaw"), WITH_CLASSIFIER_OBJECTIVE]
)
def test_fast_and_naive_train_steps_give_the_same_weights_and_lambdas(tasks, classifier_objective):
    """One meta step from the same state: same λ and same updated weights.

    One step is the unit compared: over several steps, float round-off (1e-7)
    in these tiny random-data nets grows by ~10-100x per step in *either* mode,
    eager or graph, fast or naive, so multi-step agreement measures chaos, not
    the algorithm.
    """
    fast, naive = make_model(tasks, "fast"), make_model(tasks, "naive")
    for a, b in zip(fast.weights, naive.weights):  # same initialisation
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    batch = make_batch(fast, seed=5)
    train_steps(fast, batch)
    train_steps(naive, batch)
    moved_fast, moved_naive = fast.lambdas.numpy() - 0.5, naive.lambdas.numpy() - 0.5
    assert np.all(moved_fast != 0)
    # λ is float32 near 0.5 (resolution 6e-8) and moves by ~1e-4 here.
    np.testing.assert_allclose(moved_fast, moved_naive, rtol=1e-3, atol=2e-7)
    worst = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(fast.weights, naive.weights))
    assert worst < 1e-6


def test_lambda_is_fixed_during_warm_up_and_moves_after():
    model = make_model(("rotation", "ir"), meta_start_step=3)
    history = []
    for seed in range(5):
        train_steps(model, make_batch(model, seed=seed))
        history.append(model.lambdas.numpy().copy())
    for h in history[:3]:
        np.testing.assert_array_equal(h, [0.5, 0.5])
    assert not np.array_equal(history[3], history[2])
    assert not np.array_equal(history[4], history[3])


def test_meta_every_k_steps():
    model = make_model(("rotation", "ir"), meta_every=2)
    history = [model.lambdas.numpy().copy()]
    for seed in range(4):
        train_steps(model, make_batch(model, seed=seed))
        history.append(model.lambdas.numpy().copy())
    changed = [not np.array_equal(history[i + 1], history[i]) for i in range(4)]
    assert changed == [True, False, True, False]


def test_lambda_is_clamped_at_zero():
    # A huge meta step in either direction: whatever the sign of the
    # hypergradient on these batches, one of the two runs drives λ below 0,
    # where the constraint must hold it at exactly 0 (without the constraint
    # the ">= 0" check fails).
    hit_bound = []
    for meta_lr in (1e4, -1e4):
        model = make_model(("rotation", "color", "ir", "bir"), meta_lr=meta_lr)
        for seed in range(3):
            train_steps(model, make_batch(model, seed=seed))
            assert np.all(model.lambdas.numpy() >= 0)
        hit_bound.append(model.lambdas.numpy() == 0)
    assert np.any(np.logical_or(*hit_bound))  # the bound was reached


def test_main_optimizer_never_touches_lambda_and_adam_meta_optimizer_works():
    model = tiny_model(
        ("rotation",), seed=0, optimizer=keras.optimizers.SGD(0.1), meta_optimizer=keras.optimizers.Adam(0.05)
    )
    assert all(v is not model.lambdas for v in model.network_variables)
    assert model.lambdas.trainable
    train_steps(model, make_batch(model))
    # Adam's first step moves by ~lr whatever the gradient's size.
    assert abs(float(model.lambdas.numpy()[0]) - 0.5) == pytest.approx(0.05, rel=1e-3)


def test_fixed_lambda_model_has_non_trainable_lambda():
    keras.utils.set_random_seed(0)
    model = RobustSSLModel(depth=10, width=1, tasks=("rotation",), automl=False, lambdas=[0.25])
    model.compile(keras.optimizers.SGD(0.1))
    assert not model.lambdas.trainable
    batch = make_batch(model)
    del batch["meta/image"], batch["meta/label"]
    train_steps(model, batch)
    assert model.lambda_values() == {"rotation": 0.25}
