"""Task-weighting methods (`robust_ssl.weighting`): each against a numpy reference,
on the model, end to end, resumed, on two replicas; Auto-Lambda's finite
difference against the exact hypergradient.

- Toy problem (float64, plain tensors): ψ ∈ R⁵, main loss ‖ψ − a₀‖², two
  quadratic auxiliary tasks c_i ‖ψ − a_i‖², validation loss ‖ψ − a_v‖²; a few
  steps of each method's update against the paper's equations in numpy.
- On a WRN-10-1 (float64): one meta step of the model moves λ and the weights
  as those equations say, from the model's own per-task gradients and losses.
- End to end: the smoke AutoML config, shrunk to 6 steps, for each method; a
  copy interrupted after step 3 resumes to the same weights, λ, method state
  and meta-optimiser state.
- Two replicas == one device (float64, synchronised batch norm), slow.
"""

import csv
import json
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, apply_settings
from harness import tiny_model, train_steps
from harness import training_batch as make_batch
from task_fixtures import FlipConsistencyTask, registered

import robust_ssl  # noqa: F401  (registers RobustSSLModel for loading)
from robust_ssl import config_utils, meta, rundir, steps, train, weighting
from robust_ssl.errors import ConfigError
from robust_ssl.model import RobustSSLModel
from robust_ssl.networks import backbone_spec
from robust_ssl.weighting import auto_lambda, gradnorm, uncertainty

NEW_METHODS = ("uncertainty", "gradnorm", "auto_lambda")
TWO_TASKS = ("rotation", "ir")


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ----------------------------------------------------------- registry and config
def test_the_registry_holds_the_four_methods_lookahead_first():
    assert list(weighting.METHODS) == ["lookahead", "uncertainty", "gradnorm", "auto_lambda"]
    assert weighting.DEFAULT_METHOD == "lookahead"
    for cls in weighting.METHODS.values():
        assert cls.reference  # every method names its paper


def test_default_config_and_the_method_configs():
    from robust_ssl.configs import auto_lambda4, automl4, default, gradnorm4, uncertainty4

    assert default.get_config().automl.method == "lookahead"
    base = automl4.get_config()
    for module, name in (
        (uncertainty4, "uncertainty"),
        (gradnorm4, "gradnorm"),
        (auto_lambda4, "auto_lambda"),
    ):
        config = module.get_config()
        assert config.automl.method == name
        # automl4 but for the method: the same tasks, λ, hold-out, warm-up, meta optimiser.
        config.automl.method = "lookahead"
        assert config_utils.changed_keys(config_utils.to_dict(base), config_utils.to_dict(config)) == []
        config_utils.validate(module.get_config())


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "automl.method",
            "pcgrad",
            "automl.method must be one of lookahead, uncertainty, gradnorm, auto_lambda",
        ),
        ("automl.method_options.gradnorm.alpha", -1.0, "gradnorm.alpha must be >= 0"),
        ("automl.method_options.auto_lambda.epsilon", 0.0, "auto_lambda.epsilon must be > 0"),
    ],
)
def test_bad_method_settings_are_config_errors(key, value, message):
    from robust_ssl.configs import gradnorm4

    config = apply_settings(gradnorm4.get_config(), {key: value})
    if key.endswith("epsilon"):
        config.automl.method = "auto_lambda"
    with pytest.raises(ConfigError, match=message):
        config_utils.validate(config)


def test_uncertainty_cannot_start_from_a_zero_lambda():
    from robust_ssl.configs import uncertainty4

    config = uncertainty4.get_config()
    config.task_weights.color = 0.0
    with pytest.raises(ConfigError, match="needs λ > 0 .* task 'color' starts at 0.0"):
        config_utils.validate(config)
    with pytest.raises(ConfigError, match="needs λ > 0"):
        RobustSSLModel(
            depth=10, width=1, tasks=TWO_TASKS, automl=True, weighting="uncertainty", lambdas=[0.5, 0]
        )


def test_unknown_option_and_a_fixed_lambda_model_ignores_the_method():
    with pytest.raises(ConfigError, match=r"no option\(s\) \['beta'\]"):
        weighting.make_method("gradnorm", {"beta": 1})
    model = RobustSSLModel(depth=10, width=1, tasks=TWO_TASKS, automl=False, weighting="uncertainty")
    model.compile(keras.optimizers.SGD(0.1))
    assert model.weighting_state == {} and model.meta_variables == [model.lambdas]


# ----------------------------------------------------------- the toy problem: numpy references
RNG = np.random.default_rng(7)
A_MAIN, A1, A2, A_VAL = (RNG.normal(size=5) for _ in range(4))
SCALES = np.array([1.0, 3.0])  # the auxiliary losses c_i ‖ψ − a_i‖²
LR, BETA, ALPHA = 0.1, 0.05, 0.1
PSI0, LAMBDA0 = RNG.normal(size=5), np.array([0.5, 0.5])


def np_losses(psi):
    """[L_main, L_1, L_2] of the toy problem."""
    return np.array(
        [np.sum((psi - A_MAIN) ** 2), *(c * np.sum((psi - a) ** 2) for c, a in zip(SCALES, (A1, A2)))]
    )


def np_grads(psi):
    """[g_main, g_1, g_2]."""
    return [2 * (psi - A_MAIN), *(2 * c * (psi - a) for c, a in zip(SCALES, (A1, A2)))]


def np_lookahead(psi, lam):
    """Algorithm 1: λ ← max(0, λ + βα ⟨∇L_val(ψ'), g_i⟩), ψ ← ψ − lr (g_main + Σ λ_new g_i)."""
    g = np_grads(psi)
    psi_ahead = psi - ALPHA * (g[0] + lam[0] * g[1] + lam[1] * g[2])
    v = 2 * (psi_ahead - A_VAL)
    lam = np.maximum(0, lam - BETA * np.array([-ALPHA * v @ g[1], -ALPHA * v @ g[2]]))
    return psi - LR * (g[0] + lam[0] * g[1] + lam[1] * g[2]), lam


def np_uncertainty(psi, s):
    """Kendall et al.: joint gradient descent on L_main + Σ exp(−s_i) L_i + s_i over ψ (lr) and s (β)."""
    g, losses = np_grads(psi), np_losses(psi)
    w = np.exp(-s)
    return psi - LR * (g[0] + w[0] * g[1] + w[1] * g[2]), s - BETA * (1 - w * losses[1:])


def np_gradnorm_lambdas(lam, norms, losses, initial, alpha=1.5, beta=BETA):
    """GradNorm's weight update (Chen et al. 2018, Algorithm 1), the main weight pinned at 1.

    G_j = w_j ‖∇_W L_j‖, targets mean(G) r_j^α held constant, one SGD step on
    Σ_j |G_j − target_j| over the auxiliary weights, clamp at 0, renormalise
    to sum to their count.
    """
    w = np.concatenate([[1.0], lam])
    big_g = w * norms
    ratio = losses / initial
    r = ratio / ratio.mean()
    target = big_g.mean() * r**alpha
    new = np.maximum(0, lam - beta * np.sign(big_g - target)[1:] * norms[1:])
    return new * len(lam) / new.sum()


def np_gradnorm(psi, lam, initial):
    """One GradNorm step on the toy problem with W = ψ: (ψ with the old weights, new λ, L(0))."""
    g, losses = np_grads(psi), np_losses(psi)
    initial = losses if initial is None else initial  # L(0): the losses of the first step
    norms = np.array([np.linalg.norm(x) for x in g])
    new = np_gradnorm_lambdas(lam, norms, losses, initial)
    return psi - LR * (g[0] + lam[0] * g[1] + lam[1] * g[2]), new, initial


def np_auto_lambda(psi, lam, epsilon=0.01):
    """Auto-Lambda's code: d_i = −α [L_i(ψ + εv) − L_i(ψ − εv)] / 2ε, ε = ε₀ / ‖v‖, then as Algorithm 1."""
    g = np_grads(psi)
    v = 2 * (psi - ALPHA * (g[0] + lam[0] * g[1] + lam[1] * g[2]) - A_VAL)
    eps = epsilon / np.linalg.norm(v)
    d = -ALPHA * (np_losses(psi + eps * v)[1:] - np_losses(psi - eps * v)[1:]) / (2 * eps)
    lam = np.maximum(0, lam - BETA * d)
    return psi - LR * (g[0] + lam[0] * g[1] + lam[1] * g[2]), lam


def tf_toy():
    """The toy problem's pieces as TensorFlow functions of [ψ]."""
    consts = [tf.constant(a, tf.float64) for a in (A_MAIN, A1, A2, A_VAL)]
    scales = tf.constant(SCALES, tf.float64)

    def losses(params):
        psi = params[0]
        return tf.stack(
            [tf.reduce_sum(tf.square(psi - consts[0]))]
            + [scales[i] * tf.reduce_sum(tf.square(psi - consts[i + 1])) for i in range(2)]
        )

    def grads(psi):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(psi)
            per_task = tf.unstack(losses([psi]))
        return [tape.gradient(loss, psi) for loss in per_task]

    def val_loss(params):
        return tf.reduce_sum(tf.square(params[0] - consts[3]))

    return losses, grads, val_loss


def tf_step(method, psi, lam, state):
    """One step of `method` on the toy problem, composed as the model's meta step composes it."""
    losses_fn, grads_fn, val_loss = tf_toy()
    g = grads_fn(psi)
    main, tasks = [g[0]], [[g[1]], [g[2]]]
    if method == "lookahead":
        d, _ = meta.hypergradient(val_loss, [psi], main, tasks, lam, ALPHA)
        lam = tf.maximum(0.0, lam - BETA * d)
        return psi - LR * meta.combine_gradients(main, tasks, lam)[0], lam, state
    if method == "uncertainty":
        d_s, _ = uncertainty.uncertainty_gradient(state, losses_fn([psi])[1:])
        new_psi = psi - LR * meta.combine_gradients(main, tasks, tf.exp(-state))[0]
        return new_psi, tf.exp(-(state - BETA * d_s)), state - BETA * d_s
    if method == "gradnorm":
        losses = losses_fn([psi])
        initial = losses if state is None else state
        norms = tf.stack([tf.norm(x) for x in g])
        d, _ = gradnorm.gradnorm_gradient(norms, losses, initial, lam, 1.5)
        new_lam = gradnorm.renormalise(tf.maximum(0.0, lam - BETA * d), 2)
        return psi - LR * meta.combine_gradients(main, tasks, lam)[0], new_lam, initial
    d, _ = auto_lambda.hypergradient(
        val_loss, lambda p: losses_fn(p)[1:], [psi], main, tasks, lam, ALPHA, epsilon=0.01
    )
    lam = tf.maximum(0.0, lam - BETA * d)
    return psi - LR * meta.combine_gradients(main, tasks, lam)[0], lam, state


@pytest.mark.parametrize("method", ["lookahead", *NEW_METHODS])
def test_each_method_follows_its_numpy_reference_for_five_steps(method):
    psi, lam = tf.constant(PSI0, tf.float64), tf.constant(LAMBDA0, tf.float64)
    state = tf.constant(-np.log(LAMBDA0), tf.float64) if method == "uncertainty" else None
    ref_psi, ref_lam, ref_state = PSI0.copy(), LAMBDA0.copy(), -np.log(LAMBDA0)
    ref_initial = None
    for _ in range(5):
        psi, lam, state = tf_step(method, psi, lam, state)
        if method == "lookahead":
            ref_psi, ref_lam = np_lookahead(ref_psi, ref_lam)
        elif method == "uncertainty":
            ref_psi, ref_state = np_uncertainty(ref_psi, ref_state)
            ref_lam = np.exp(-ref_state)
        elif method == "gradnorm":
            ref_psi, ref_lam, ref_initial = np_gradnorm(ref_psi, ref_lam, ref_initial)
        else:
            ref_psi, ref_lam = np_auto_lambda(ref_psi, ref_lam)
        np.testing.assert_allclose(psi.numpy(), ref_psi, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(lam.numpy(), ref_lam, rtol=1e-10, atol=1e-12)
    assert not np.allclose(ref_lam, LAMBDA0)  # λ was learned
    if method == "gradnorm":
        assert ref_lam.sum() == pytest.approx(2.0)  # renormalised to the auxiliary task count


def test_auto_lambda_is_the_exact_hypergradient_on_quadratic_losses():
    """A central difference is exact for a quadratic: the approximation error is round-off."""
    losses_fn, grads_fn, val_loss = tf_toy()
    psi, lam = tf.constant(PSI0, tf.float64), tf.constant(LAMBDA0, tf.float64)
    g = grads_fn(psi)
    exact, _ = meta.hypergradient(val_loss, [psi], [g[0]], [[g[1]], [g[2]]], lam, ALPHA)
    fd, _ = auto_lambda.hypergradient(
        val_loss, lambda p: losses_fn(p)[1:], [psi], [g[0]], [[g[1]], [g[2]]], lam, ALPHA
    )
    assert rel_diff(fd, exact) < 1e-10


# ----------------------------------------------------------- on the model (float64)
@pytest.fixture
def float64():
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)


def make_model(method="lookahead", tasks=TWO_TASKS, automl=True, lambdas=0.5, meta_lr=0.01, seed=1, **kwargs):
    return tiny_model(
        tasks, seed=seed, automl=automl, meta_lr=meta_lr, weighting=method, lambdas=lambdas, **kwargs
    )


def assert_same_weights(a, b, tol):
    assert len(a.network_variables) == len(b.network_variables)
    worst = max(
        float(np.max(np.abs(x.numpy() - y.numpy()))) for x, y in zip(a.network_variables, b.network_variables)
    )
    assert worst <= tol, worst


def start_state(model, batch):
    """Task losses and per-task gradients at the model's current state (changes nothing)."""
    losses, _ = steps.task_losses(model, batch, update_stats=False)
    _, _, main_grads, psi_task_grads, _ = steps.per_task_gradients(model, batch, update_stats=False)
    return np.array([float(x) for x in losses]), main_grads, psi_task_grads


def test_uncertainty_meta_step_on_the_model(float64):
    """s ← s − β (1 − exp(−s) L), λ = exp(−s); the weights move as a fixed-λ step at the old λ."""
    model, fixed = make_model("uncertainty"), make_model("uncertainty", automl=False)
    batch = make_batch(model, seed=2)
    losses, _, _ = start_state(model, batch)
    s0 = -np.log([0.5, 0.5])
    train_steps(model, batch)
    train_steps(fixed, batch)
    s1 = s0 - 0.01 * (1 - np.exp(-s0) * losses[1:])
    np.testing.assert_allclose(model.weighting_state["log_variances"].numpy(), s1, rtol=1e-10)
    np.testing.assert_allclose(model.lambdas.numpy(), np.exp(-s1), rtol=1e-10)
    assert_same_weights(model, fixed, 1e-12)


def test_gradnorm_meta_step_on_the_model(float64):
    """λ by the GradNorm equations at the trunk's last convolution; weights as a fixed-λ step at the old λ."""
    model, fixed = make_model("gradnorm"), make_model("gradnorm", automl=False)
    batch = make_batch(model, seed=2)
    w = gradnorm.shared_weight_index(model)
    assert model.psi_variables[w].path.endswith("group3_block1_conv2/kernel")  # WRN-10-1's last conv
    losses, main_grads, psi_task_grads = start_state(model, batch)
    norms = np.array([np.linalg.norm(g[w].numpy()) for g in [main_grads, *psi_task_grads]])
    expected = np_gradnorm_lambdas(np.array([0.5, 0.5]), norms, losses, losses, beta=0.01)
    train_steps(model, batch)
    train_steps(fixed, batch)
    np.testing.assert_allclose(model.lambdas.numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(model.weighting_state["initial_losses"].numpy(), losses, rtol=1e-12)
    assert_same_weights(model, fixed, 1e-12)
    # A second step keeps L(0) from the first.
    train_steps(model, make_batch(model, seed=3))
    np.testing.assert_allclose(model.weighting_state["initial_losses"].numpy(), losses, rtol=1e-12)


def test_gradnorm_layer_option_names_w():
    model = make_model("gradnorm", weighting_options={"layer": "group2_block1_conv1"})
    w = gradnorm.shared_weight_index(model, "group2_block1_conv1")
    assert model.psi_variables[w].path.endswith("group2_block1_conv1/kernel")
    with pytest.raises(ConfigError, match="needs a trunk layer 'nope' with a trainable kernel"):
        make_model("gradnorm", weighting_options={"layer": "nope"})


def test_auto_lambda_meta_step_on_the_model(float64):
    """λ ← max(0, λ − β · finite difference); the weights move as a fixed-λ step at the new λ."""
    model = make_model("auto_lambda")
    batch = make_batch(model, seed=2)
    d, _ = auto_lambda.lambda_gradient(model, batch)
    expected = np.maximum(0, 0.5 - 0.01 * d.numpy())
    fixed = make_model("auto_lambda", automl=False, lambdas=[float(x) for x in expected])
    train_steps(model, batch)
    train_steps(fixed, batch)
    np.testing.assert_allclose(model.lambdas.numpy(), expected, rtol=1e-10)
    assert_same_weights(model, fixed, 1e-12)


# ----------------------------------------------------------- Auto-Lambda vs the exact hypergradient
def smooth_trunk(image_shape):
    """A toy trunk without kinks (softplus, tanh) and without batch norm: a smooth L(ψ)."""
    inputs = keras.Input(image_shape)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="softplus")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="softplus")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(16, activation="tanh")(x), name="smooth_trunk")


def test_finite_difference_is_close_to_the_exact_hypergradient_on_a_smooth_toy_model(float64):
    """Rotation (a linear head) and a classifier objective on a smooth trunk: the central
    difference's error is second order in ε₀ (ε = ε₀ / ‖v‖); at Auto-Lambda's ε₀ = 0.01
    it is ~4e-5 relative (1e-3 in float32, where round-off adds to it)."""
    with registered(FlipConsistencyTask):
        keras.utils.set_random_seed(1)
        model = RobustSSLModel(
            backbone=backbone_spec(f"{__name__}:smooth_trunk"),
            tasks=("rotation", FlipConsistencyTask.name),
            automl=True,
            weighting="auto_lambda",
        )
        model.compile(keras.optimizers.SGD(0.1))
        batch = make_batch(model, seed=4)
        exact, exact_loss = model.lambda_gradient(batch, "fast")
        fd, fd_loss = auto_lambda.lambda_gradient(model, batch, 0.01)
        coarse, _ = auto_lambda.lambda_gradient(model, batch, 0.1)
    assert np.all(exact.numpy() != 0)
    assert rel_diff(fd, exact) < 1e-3, (fd.numpy(), exact.numpy())
    assert rel_diff(coarse, exact) > 30 * rel_diff(fd, exact)  # 10x smaller ε₀, ~100x smaller error
    assert float(fd_loss) == float(exact_loss)  # the same lookahead ψ'


def test_finite_difference_on_a_relu_network_differs_by_the_kinks(float64):
    """WRN-10-1 (ReLU, batch norm) at initialisation, float64: the finite difference
    points the same way as the exact hypergradient but differs by ~10-20 %: L(ψ ± εv)
    crosses ReLU kinks, so even without round-off it is a secant, not the derivative."""
    model = make_model("auto_lambda", tasks=("rotation", "color", "ir", "bir"))
    batch = make_batch(model, seed=3)
    exact, _ = model.lambda_gradient(batch, "fast")
    fd, _ = auto_lambda.lambda_gradient(model, batch)
    a, b = exact.numpy(), fd.numpy()
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.95, (a, b)
    assert 1e-3 < rel_diff(b, a) < 0.5, (a, b)


# ----------------------------------------------------------- end to end, resumed
SMOKE = {  # configs/smoke_automl.py (four tasks, corrupted hold-out), shrunk to 6 steps
    "model.depth": 10,
    "data.num_train": 160,
    "data.num_test": 32,
    "automl.validation.holdout": 32,
    "automl.meta_batch_size": 8,
    "automl.meta_optimizer": "adam",  # an optimiser with state, to resume
    "automl.meta_lr": 0.01,
    "automl.warmup_epochs": 1,
    "train.epochs": 3,
    "train.steps_per_epoch": 2,
    "train.batch_size": 16,
    "train.eval_batch_size": 32,
    "train.eval_every_epoch": False,
    "train.verbose": 0,
    "train.checkpoint_every_steps": 1,
    "train.keep_checkpoints": 8,
}
# Checkpoints up to step 3: the run is interrupted after the first two meta steps (2, 3).
KEEP = ("epoch_000_step_0000001.keras", "epoch_001.keras", "epoch_001_step_0000003.keras")


def smoke_config(method):
    from robust_ssl.configs import smoke_automl

    return apply_settings(smoke_automl.get_config(), {**SMOKE, "automl.method": method})


@pytest.fixture(scope="module", params=NEW_METHODS)
def finished(request, tmp_path_factory):
    """(method, workdir) of an uninterrupted smoke run."""
    workdir = tmp_path_factory.mktemp(request.param) / "run"
    train.train_and_evaluate(smoke_config(request.param), str(workdir))
    return request.param, workdir


def lambda_rows(workdir):
    with open(workdir / rundir.LAMBDAS) as f:
        return list(csv.DictReader(f))


def test_each_method_trains_end_to_end_on_the_smoke_config(finished):
    method, workdir = finished
    results = json.loads((workdir / rundir.RESULTS).read_text())
    assert results["weighting"] == method and results["steps"] == 6
    assert np.isfinite(results["test_accuracy"])
    model = keras.saving.load_model(workdir / rundir.MODEL)
    assert model.weighting.name == method and model.automl
    assert (
        sorted(model.weighting_state)
        == {
            "uncertainty": ["log_variances"],
            "gradnorm": ["initial_losses"],
            "auto_lambda": [],
        }[method]
    )
    rows = lambda_rows(workdir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    names = ("rotation", "color", "ir", "bir")
    trajectory = np.array([[float(r[n]) for n in names] for r in rows])
    np.testing.assert_array_equal(trajectory[:2], 0.5)  # warm-up: fixed λ
    assert np.all(trajectory[-1] != 0.5)  # then learned
    np.testing.assert_allclose(trajectory[-1], model.lambdas.numpy(), rtol=1e-5)  # the CSV's 6 digits
    assert results["lambdas"] == pytest.approx(dict(zip(names, model.lambdas.numpy().tolist())))
    if method == "gradnorm":
        assert float(model.lambdas.numpy().sum()) == pytest.approx(4.0, rel=1e-6)
    if method == "uncertainty":
        np.testing.assert_allclose(
            model.lambdas.numpy(), np.exp(-model.weighting_state["log_variances"].numpy()), rtol=1e-6
        )


def test_each_method_resumes_exactly(finished, tmp_path):
    method, done = finished
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir)
    for name in (rundir.MODEL, rundir.RESULTS):
        (workdir / name).unlink()
    for path in (workdir / rundir.CHECKPOINTS).iterdir():
        if path.name not in KEEP:
            path.unlink()
    results = train.train_and_evaluate(smoke_config(method), str(workdir))
    assert results["resumed_from_step"] == 3 and results["steps"] == 6
    a = keras.saving.load_model(done / rundir.MODEL)
    b = keras.saving.load_model(workdir / rundir.MODEL)
    assert [v.path.split("/", 1)[1] for v in a.weights] == [v.path.split("/", 1)[1] for v in b.weights]
    for x, y in zip(a.weights, b.weights):  # the network, λ and the method's state
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    for x, y in zip(a.meta_optimizer.variables, b.meta_optimizer.variables):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    assert lambda_rows(workdir) == lambda_rows(done)


# ----------------------------------------------------------- two replicas
REPLICAS = """
import sys
sys.path.insert(0, {tests!r})
sys.argv = ["_replica_equivalence.py", {case!r}]
import _replica_equivalence as eq

base = eq.tiny_config


def tiny_config(*args, **overrides):
    return base(*args, **{{**overrides, "automl.method": {method!r}}})


eq.tiny_config = tiny_config
eq.main()
"""


@pytest.mark.slow  # ~1-2 min per method on 2 cores
@pytest.mark.parametrize("method", NEW_METHODS)
def test_two_replicas_equal_one_device(method):
    """`tests/_replica_equivalence.py` with the method: 4 steps alternating meta and
    fixed-λ steps, float64, synchronised batch norm, 1 device vs 2 logical CPUs."""
    code = REPLICAS.format(tests=str(REPO / "tests"), case="4:automl:float64", method=method)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    r = json.loads(line)
    assert r["replicas"] == [1, 2] and r["steps"] == [4, 4] and r["finite"], r
    assert r["weights"] < 1e-10, r
    assert r["lambdas"] < 1e-12, r
    assert r["lambda_moved"] > 1e-5, r  # λ was really learned
