"""The WideResNet trunk, the Appendix A.1 heads and RobustSSLModel's plumbing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from robust_ssl import steps
from robust_ssl.data.pipeline import make_task_batch
from robust_ssl.errors import ConfigError
from robust_ssl.model import RobustSSLModel
from robust_ssl.networks import build_wide_resnet, check_depth, linear_head
from robust_ssl.tasks import make_tasks, self_supervised_task_names

# The tasks with a head of their own (the paper's seven and any added since).
ALL_TASKS = self_supervised_task_names()


def count_trainable(*models):
    return sum(int(np.prod(v.shape)) for m in models for v in m.trainable_variables)


def random_images(n, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 3)).astype(np.float32)


# ----------------------------------------------------------------- trunk
def test_wrn_40_2_with_main_head_has_the_paper_parameter_count():
    trunk = build_wide_resnet(depth=40, width=2)
    head = linear_head(trunk.output_shape[-1], 10, name="classifier")
    assert trunk.output_shape == (None, 128)
    assert count_trainable(trunk, head) == 2_243_546


@pytest.mark.parametrize("width, dim", [(1, 64), (2, 128)])
def test_trunk_feature_size(width, dim):
    trunk = build_wide_resnet(depth=10, width=width)
    assert trunk.output_shape[-1] == dim
    features = trunk(random_images(2), training=False)
    assert tuple(features.shape) == (2, dim)
    assert np.all(np.isfinite(features))


@pytest.mark.parametrize("depth", [12, 41, 4, 0, 40.0, "40"])
def test_bad_depth_is_rejected_with_a_clear_message(depth):
    with pytest.raises((ValueError, ConfigError), match=r"6n\+4"):
        check_depth(depth)
    with pytest.raises((ValueError, ConfigError), match=r"6n\+4") as info:
        build_wide_resnet(depth=depth, width=1)
    assert repr(depth) in str(info.value)


def test_bad_width_is_rejected():
    with pytest.raises(ValueError, match="width"):
        build_wide_resnet(depth=10, width=0)


def test_model_rejects_bad_depth_before_building():
    with pytest.raises((ValueError, ConfigError), match=r"6n\+4"):
        RobustSSLModel(depth=12, width=1, tasks=["rotation"])


# ----------------------------------------------------------------- heads
# Appendix A.1: output shape and the transposed convolutions' channels.
HEADS = {
    "rotation": ((4,), None),
    "color": ((32, 32, 64), (256, 128, 64, 64)),
    "ir": ((32, 32, 3), (256, 128, 64, 3)),
    "bir": ((32, 32, 3), (256, 128, 64, 3)),
    "inpaint": ((8, 8, 3), (64, 3)),
    "rgb": ((6,), None),
    "jigsaw": ((24,), None),
}


def test_main_head_is_fc_128_10():
    head = linear_head(128, 10, name="classifier")
    assert tuple(head(tf.zeros([3, 128])).shape) == (3, 10)
    assert [tuple(v.shape) for v in head.trainable_variables] == [(128, 10), (10,)]


@pytest.mark.parametrize("name", list(HEADS))
def test_head_output_shapes_follow_appendix_a1(name):
    shape, deconv_channels = HEADS[name]
    (task,) = make_tasks([name])
    head = task.build_head(128)
    features = tf.constant(np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32))
    out = np.asarray(head(features, training=False))
    assert out.shape == (3, *shape)
    deconvs = [layer for layer in head.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    if deconv_channels is None:
        # FC(128, K)
        assert not deconvs
        assert [tuple(v.shape) for v in head.trainable_variables] == [(128, shape[0]), (shape[0],)]
    else:
        assert tuple(layer.filters for layer in deconvs) == deconv_channels
        assert all(layer.kernel_size == (4, 4) for layer in deconvs)
        assert [layer.strides for layer in deconvs] == [(1, 1)] + [(2, 2)] * (len(deconvs) - 1)
        bns = [layer for layer in head.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(bns) == len(deconvs) - 1
    if name in ("ir", "bir", "inpaint"):  # images: sigmoid outputs
        assert out.min() >= 0.0 and out.max() <= 1.0


def test_heads_follow_the_trunk_width():
    for task in make_tasks(ALL_TASKS):
        head = task.build_head(64)
        assert head.input_shape == (None, 64), task.name


# ----------------------------------------------------------------- model
@pytest.fixture(scope="module")
def model():
    return RobustSSLModel(depth=10, width=1, tasks=ALL_TASKS, lambdas=0.5)


@pytest.fixture(scope="module")
def batch(model):
    images = tf.constant(random_images(4, seed=1))
    labels = tf.constant([0, 3, 5, 9])
    return make_task_batch(images, labels, model.tasks, tf.constant([0, 0], tf.int64))


def _moving_stats(model):
    variables = model.trunk.non_trainable_variables
    assert variables and all("moving" in v.path for v in variables)
    return variables, [np.array(v.numpy()) for v in variables]


def test_model_call_is_the_classifier(model):
    logits = model(random_images(3))
    assert tuple(logits.shape) == (3, 10)
    assert model.task_names == ALL_TASKS
    assert len(model.task_heads) == len(ALL_TASKS)
    np.testing.assert_allclose(model.lambda_values()["jigsaw"], 0.5)
    # λ is a model weight but never a network variable of the main optimiser.
    assert all(v is not model.lambdas for v in model.network_variables)


def test_task_losses_are_finite_scalars(model, batch):
    losses, logits = steps.task_losses(model, batch, update_stats=False)
    assert len(losses) == 1 + len(ALL_TASKS)
    assert tuple(logits.shape) == (4, 10)
    for loss in losses:
        assert loss.shape == () and np.isfinite(float(loss)) and float(loss) > 0


def test_only_the_clean_forward_updates_batch_norm_statistics(model, batch):
    variables, before = _moving_stats(model)
    images = batch["image"]
    try:
        # Another input (a rotated batch) through encode: moving averages untouched.
        steps.encode(model, batch["rotation/inputs"][:, 0])
        steps.encode(model, images)
        for v, b in zip(variables, before):
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)

        steps.task_losses(model, batch, update_stats=False)
        for v, b in zip(variables, before):
            np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)

        # task_losses with updates: the statistics move ...
        steps.task_losses(model, batch)
        after = [np.array(v.numpy()) for v in variables]
        assert all(not np.array_equal(a, b) for a, b in zip(after, before))

        # ... by exactly one clean forward: the grey, blurred, rotated, … inputs
        # of the auxiliary tasks leave no trace in them.
        for v, b in zip(variables, before):
            v.assign(b)
        model.trunk(images, training=True)
        for v, a in zip(variables, after):
            np.testing.assert_allclose(v.numpy(), a, rtol=1e-5, atol=1e-6, err_msg=v.path)
    finally:
        for v, b in zip(variables, before):
            v.assign(b)


def test_model_round_trips_through_keras_save(model, tmp_path):
    lambdas = np.linspace(0.0, 2.0, len(ALL_TASKS)).astype(np.float32)
    initial = keras.ops.convert_to_numpy(model.lambdas)
    variables, stats = _moving_stats(model)
    model.lambdas.assign(lambdas)
    # Move the BN statistics off their initial values so that the inference
    # predictions below depend on their being saved.
    model.trunk(random_images(4, seed=3), training=True)
    try:
        _check_round_trip(model, lambdas, str(tmp_path / "model.keras"))
    finally:
        model.lambdas.assign(initial)
        for v, b in zip(variables, stats):
            v.assign(b)


def _check_round_trip(model, lambdas, path):
    images = random_images(3, seed=2)
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, RobustSSLModel)
    assert loaded.task_names == ALL_TASKS
    assert loaded.backbone == {"name": "wrn", "depth": 10, "width": 1, "dropout": 0.0}
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.lambdas), lambdas)
    assert loaded.lambda_values() == model.lambda_values()
    # The task heads come back with their weights too.
    for a, b in zip(model.task_heads, loaded.task_heads):
        for va, vb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(va.numpy(), vb.numpy())
