"""The contract every registered task meets, run over the registry.

A new task module is covered here without editing any test: shapes of its
head, its batch eagerly == in a `tf.function` == in `tf.data`, finite
per-example losses, a training step and the exact hypergradient with the task
on, its image-size checks, and (for tasks with transformation probes) the
exported `ssl_heads` signature.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import tiny_model, train_steps

from robust_ssl import steps
from robust_ssl.data.pipeline import make_task_batch
from robust_ssl.errors import ConfigError
from robust_ssl.model import RobustSSLModel
from robust_ssl.tasks import TASKS, Forward, make_tasks, probe_task_names

NAMES = list(TASKS)
SHAPE = (32, 32, 3)


def images(n=4, shape=SHAPE, seed=0):
    return tf.constant(np.random.default_rng(seed).random((n, *shape)), tf.float32)


def seed_of(value):
    return tf.constant([value, 7], tf.int64)


def as_numpy(batch):
    return {k: np.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("name", NAMES)
def test_batch_is_the_same_eagerly_in_a_function_and_in_tf_data(name):
    (task,) = make_tasks([name])
    x, seed = images(), seed_of(3)
    eager = as_numpy(task.make_batch(x, seed))
    traced = as_numpy(tf.function(task.make_batch)(x, seed))
    mapped = as_numpy(next(iter(tf.data.Dataset.from_tensors((x, seed)).map(task.make_batch))))
    assert "targets" in eager and (("inputs" in eager) != task.uses_clean_input)
    for key, value in eager.items():
        assert value.shape[0] == 4, key  # batches split across replicas by the leading axis
        np.testing.assert_allclose(traced[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(mapped[key], value, rtol=1e-6, atol=1e-6, err_msg=key)
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), key


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [SHAPE, (64, 64, 3)])
def test_head_output_matches_the_declared_shape(name, shape):
    (task,) = make_tasks([name])
    head = task.build_head(16, shape)
    if task.uses_classifier:
        assert head is None and task.head_output_shape(shape) is None
        return
    out = head(tf.zeros([2, 16]), training=False)
    assert tuple(out.shape) == (2, *task.head_output_shape(shape))


@pytest.mark.parametrize("name", NAMES)
def test_predictions_score_to_finite_per_example_losses(name):
    (task,) = make_tasks([name])
    trunk = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)]
    )
    classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10)])
    x = images()
    batch = task.make_batch(x, seed_of(1))
    features = trunk(x)
    forward = Forward(features, classifier(features), trunk, classifier)
    head = task.build_head(8, SHAPE)
    loss = task.per_example_loss(batch["targets"], task.predict(head, forward, batch.get("inputs")))
    assert tuple(loss.shape) == (4,) and np.all(np.isfinite(loss.numpy()))
    assert task.display_inputs(x, seed_of(1)).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_a_training_step_and_the_hypergradient_with_the_task(name):
    model = tiny_model([name], seed=0, optimizer=keras.optimizers.SGD(0.05))
    rng = np.random.default_rng(0)
    batch = make_task_batch(images(8), tf.constant(rng.integers(0, 10, 8), tf.int32), model.tasks, seed_of(0))
    batch["meta/image"], batch["meta/label"] = (
        images(4, seed=1),
        tf.constant(rng.integers(0, 10, 4), tf.int32),
    )
    fast, _ = model.lambda_gradient(batch, "fast")
    naive, _ = model.lambda_gradient(batch, "naive")
    # float32: the two paths round differently (float64 agreement: test_meta.py).
    np.testing.assert_allclose(fast.numpy(), naive.numpy(), rtol=2e-2, atol=1e-6)
    before = [v.numpy().copy() for v in model.network_variables]
    logs = train_steps(model, batch)  # a meta step (no warm-up)
    assert np.isfinite(float(logs["loss"])) and f"{name}_loss" in logs
    assert steps.step_kind(model, 0) == steps.META
    assert model.lambdas.numpy()[0] != 0.5
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.network_variables)]
    assert all(moved[: len(model.trunk.trainable_variables)])


@pytest.mark.parametrize("name", NAMES)
def test_image_shape_is_accepted_or_refused_in_one_line(name):
    cls = TASKS[name]
    for shape in [SHAPE, (64, 64, 3), (48, 64, 3), (10, 10, 3)]:
        try:
            cls().check_image_shape(shape)
        except ConfigError as e:
            assert "\n" not in str(e) and name in str(e)
        else:
            cls().make_batch(images(2, shape), seed_of(0))  # what it accepts, it serves


@pytest.mark.parametrize("name", probe_task_names())
def test_probe_inputs_keep_the_shape_and_differ_per_transformation(name):
    (task,) = make_tasks([name])
    x = images(2)
    outputs = [task.probe_inputs(x, k).numpy() for k in range(task.probe_classes)]
    assert all(o.shape == x.shape for o in outputs)
    np.testing.assert_array_equal(outputs[0], x.numpy())  # transformation 0 is the identity
    assert len({o.tobytes() for o in outputs}) == task.probe_classes


@pytest.mark.parametrize("name", probe_task_names())
def test_exported_ssl_heads_signature_scores_the_task(name, tmp_path):
    from robust_ssl import export

    keras.utils.set_random_seed(0)
    model = RobustSSLModel(depth=10, width=1, tasks=[name])
    path = export.export_saved_model(model, str(tmp_path / "export"), with_ssl_heads=True)
    loaded = tf.saved_model.load(path)
    pixels = tf.constant(np.random.default_rng(0).integers(0, 256, (2, *SHAPE)), tf.uint8)
    out = loaded.signatures["ssl_heads"](images=pixels)
    k = TASKS[name].probe_classes
    assert tuple(out[f"{name}_logits"].shape) == (2, k, k)
    assert np.all((out[f"{name}_accuracy"].numpy() >= 0) & (out[f"{name}_accuracy"].numpy() <= 1))
