"""The seven self-supervision tasks: inputs, targets, losses and the registry.

Inputs and targets are compared with independent numpy / scipy / scikit-image
oracles, eagerly, in a `tf.function` and inside `tf.data.Dataset.map`.
"""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
from skimage.color import rgb2lab

from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import TASKS, Forward, make_tasks, parse_task_names
from robust_ssl.tasks.color import ColorTask
from robust_ssl.tasks.inpaint import InpaintTask
from robust_ssl.tasks.permutation import JigsawTask, RGBGuessTask
from robust_ssl.tasks.reconstruction import DeblurTask, ReconstructionTask
from robust_ssl.tasks.rotation import RotationTask

PERMS_3 = list(itertools.permutations(range(3)))
PERMS_4 = list(itertools.permutations(range(4)))


def seed_of(value):
    """A batch seed as the pipeline makes it: int64 [2]."""
    return tf.constant([value, 0], tf.int64)


def batch_three_ways(task, images, seed=0):
    """Returns {mode: make_batch result as numpy}: eager, tf.function and tf.data."""
    images, seed = tf.convert_to_tensor(images), seed_of(seed)
    results = {
        "eager": task.make_batch(images, seed),
        "tf.function": tf.function(task.make_batch)(images, seed),
        "tf.data": next(iter(tf.data.Dataset.from_tensors((images, seed)).map(task.make_batch))),
    }
    return {mode: {k: np.asarray(v) for k, v in batch.items()} for mode, batch in results.items()}


def random_images(n, size=8, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def np_cross_entropy(labels, logits):
    """Softmax cross-entropy in float64 numpy, per element of labels."""
    logits = logits.astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    return log_z - np.take_along_axis(logits, labels[..., None].astype(np.int64), axis=-1)[..., 0]


# ---------------------------------------------------------------- rotation
def test_rotation_all_mode_inputs_and_targets():
    images = random_images(3)
    task = RotationTask()
    for mode, batch in batch_three_ways(task, images).items():
        assert batch["inputs"].shape == (3, 3, 8, 8, 3), mode
        for j, k in enumerate((1, 2, 3)):
            expected = np.stack([np.rot90(image, k, axes=(0, 1)) for image in images])
            np.testing.assert_array_equal(batch["inputs"][:, j], expected, err_msg=mode)
        np.testing.assert_array_equal(batch["targets"], np.tile([0, 1, 2, 3], (3, 1)), err_msg=mode)


def test_rotation_random_mode_matches_rot90_of_its_label():
    images = random_images(16)
    task = RotationTask(mode="random")
    for mode, batch in batch_three_ways(task, images, seed=3).items():
        k = batch["targets"]
        assert k.shape == (16,) and k.dtype == np.int32, mode
        expected = np.stack([np.rot90(image, kk, axes=(0, 1)) for image, kk in zip(images, k)])
        np.testing.assert_array_equal(batch["inputs"], expected, err_msg=mode)


@pytest.mark.parametrize("rotation_mode", ["all", "random"])
def test_rotation_predict_lines_up_predictions_with_targets(rotation_mode):
    """An oracle head that recognises each rotation gets every target right (loss ~ 0)."""
    n = 3
    images = random_images(n, seed=5)
    task = RotationTask(mode=rotation_mode)
    # Rotation-major reference table: row j * n + b is image b rotated by j * 90 degrees.
    refs = tf.constant(
        np.stack([np.rot90(images[b], j, axes=(0, 1)).ravel() for j in range(4) for b in range(n)])
    )

    def encode(x):
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def oracle_head(features, training=True):
        del training
        distances = tf.reduce_sum(tf.square(features[:, None, :] - refs[None]), axis=-1)
        return 30.0 * tf.one_hot(tf.argmin(distances, axis=1) // n, 4)

    def run(batch_images):
        batch = task.make_batch(batch_images, seed_of(1))
        forward = Forward(encode(batch_images), None, encode, None)
        predictions = task.predict(oracle_head, forward, batch["inputs"])
        return batch["targets"], predictions, task.per_example_loss(batch["targets"], predictions)

    for fn in (run, tf.function(run)):
        targets, predictions, loss = (np.asarray(t) for t in fn(tf.constant(images)))
        assert predictions.shape == ((n, 4, 4) if rotation_mode == "all" else (n, 4))
        np.testing.assert_array_equal(np.argmax(predictions, axis=-1), targets)
        assert loss.shape == (n,)
        assert np.all(loss < 1e-6)


# ------------------------------------------------ RGB guess and jigsaw
def test_rgb_guess_matches_explicit_channel_permutations():
    images = random_images(12)
    for mode, batch in batch_three_ways(RGBGuessTask(), images, seed=4).items():
        index = batch["targets"]
        assert index.shape == (12,) and index.min() >= 0 and index.max() < 6, mode
        expected = np.stack([image[..., list(PERMS_3[i])] for image, i in zip(images, index)])
        np.testing.assert_array_equal(batch["inputs"], expected, err_msg=mode)


def _numpy_jigsaw(image, perm):
    h, w = image.shape[0] // 2, image.shape[1] // 2
    tiles = [image[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in range(2) for c in range(2)]
    rows = [np.concatenate([tiles[perm[2 * r]], tiles[perm[2 * r + 1]]], axis=1) for r in range(2)]
    return np.concatenate(rows, axis=0)


def test_jigsaw_matches_explicit_tile_permutations():
    images = random_images(12)
    for mode, batch in batch_three_ways(JigsawTask(), images, seed=4).items():
        index = batch["targets"]
        assert index.shape == (12,) and index.min() >= 0 and index.max() < 24, mode
        expected = np.stack([_numpy_jigsaw(image, PERMS_4[i]) for image, i in zip(images, index)])
        np.testing.assert_array_equal(batch["inputs"], expected, err_msg=mode)


# ------------------------------------------------------------- colour
def test_color_inputs_are_grey_and_targets_are_skimage_bins():
    images = random_images(2, size=12, seed=7)
    images[0, 0, :8] = np.array(list(itertools.product([0.0, 1.0], repeat=3)))  # extremes
    grey = images @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    ab = np.stack([rgb2lab(image.astype(np.float64)) for image in images])[..., 1:]
    expected = np.clip(np.floor((ab + 128) / 8), 0, 31)
    # Pixels within 0.01 of a bin edge may round either way between implementations.
    ratio = (ab + 128) / 8
    clear = np.abs(ratio - np.round(ratio)) * 8 > 1e-2
    assert clear.mean() > 0.95
    for mode, batch in batch_three_ways(ColorTask(), images).items():
        assert set(batch) == {"inputs", "targets"}, mode
        np.testing.assert_allclose(batch["inputs"], np.repeat(grey[..., None], 3, -1), atol=1e-6)
        assert batch["targets"].shape == (2, 12, 12, 2) and batch["targets"].dtype == np.int32
        np.testing.assert_array_equal(batch["targets"][clear], expected[clear], err_msg=mode)


# ------------------------------------------------------------ inpainting
@pytest.mark.parametrize("size, lo, hi", [(32, 12, 20), (16, 4, 12)])
def test_inpaint_fills_the_central_patch(size, lo, hi):
    images = random_images(2, size=size)
    hole = np.zeros((size, size), bool)
    hole[lo:hi, lo:hi] = True
    for mode, batch in batch_three_ways(InpaintTask(), images).items():
        inputs, targets = batch["inputs"], batch["targets"]
        assert inputs.shape == images.shape, mode
        np.testing.assert_array_equal(inputs[:, hole], np.float32(0.9999), err_msg=mode)
        np.testing.assert_array_equal(inputs[:, ~hole], images[:, ~hole], err_msg=mode)
        np.testing.assert_array_equal(targets, images[:, lo:hi, lo:hi], err_msg=mode)
    assert hole.sum() == 64


# ------------------------------------------------- reconstruction tasks
@pytest.mark.parametrize("options, sigma", [({}, 1.0), ({"sigma": 0.7}, 0.7)])
def test_deblur_input_is_scipy_blur_and_target_is_clean(options, sigma):
    images = random_images(2, size=12)
    blurred = np.stack(
        [scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect") for image in images]
    )
    task = DeblurTask(**options)
    assert not task.uses_clean_input
    for mode, batch in batch_three_ways(task, images).items():
        np.testing.assert_allclose(batch["inputs"], blurred, atol=1e-5, err_msg=mode)
        np.testing.assert_array_equal(batch["targets"], images, err_msg=mode)


def test_ir_uses_the_clean_image_as_input_and_target():
    images = random_images(2)
    task = ReconstructionTask()
    assert task.uses_clean_input
    for mode, batch in batch_three_ways(task, images).items():
        assert set(batch) == {"targets"}, mode
        np.testing.assert_array_equal(batch["targets"], images, err_msg=mode)
    # The head runs on the clean features; the trunk is not run again.
    head = lambda features, training=True: features * 2.0

    def encode(x):
        raise AssertionError("IR must not re-encode its input")

    out = task.predict(head, Forward(tf.ones([2, 5]), None, encode, None), None)
    np.testing.assert_array_equal(out, 2 * np.ones([2, 5]))


def test_display_inputs_show_what_each_network_sees():
    images = tf.constant(random_images(4, size=16))
    seed = seed_of(2)
    shown = {
        name: np.asarray(task.display_inputs(images, seed)) for name, task in zip(TASKS, make_tasks(TASKS))
    }
    for name, value in shown.items():
        assert value.shape == (4, 16, 16, 3), name
    np.testing.assert_array_equal(shown["ir"], images)
    np.testing.assert_allclose(shown["color"], ColorTask().make_batch(images, seed)["inputs"])
    np.testing.assert_array_equal(shown["rotation"], np.rot90(np.asarray(images), 1, axes=(1, 2)))
    for name in ("bir", "inpaint", "rgb", "jigsaw"):
        np.testing.assert_array_equal(
            shown[name], TASKS[name]().make_batch(images, seed)["inputs"], err_msg=name
        )
    for name in ("bir", "inpaint"):
        assert not np.array_equal(shown[name], images), name


def test_probe_inputs_number_transformations_like_the_training_targets():
    images = random_images(3, size=8, seed=4)
    for k in range(4):
        expected = np.stack([np.rot90(image, k, axes=(0, 1)) for image in images])
        np.testing.assert_array_equal(RotationTask().probe_inputs(tf.constant(images), k), expected)
    for k, perm in enumerate(PERMS_3):
        np.testing.assert_array_equal(
            RGBGuessTask().probe_inputs(tf.constant(images), k), images[..., list(perm)]
        )
    for k in (0, 5, 23):
        expected = np.stack([_numpy_jigsaw(image, PERMS_4[k]) for image in images])
        np.testing.assert_array_equal(JigsawTask().probe_inputs(tf.constant(images), k), expected)


# ------------------------------------------------ seeds and distributions
RANDOM_TASKS = [
    pytest.param(lambda: RotationTask(mode="random"), 4, id="rotation-random"),
    pytest.param(RGBGuessTask, 6, id="rgb"),
    pytest.param(JigsawTask, 24, id="jigsaw"),
]


@pytest.mark.parametrize("make_task, num_classes", RANDOM_TASKS)
def test_random_tasks_are_seeded(make_task, num_classes):
    task = make_task()
    images = tf.constant(random_images(16, size=4))
    first = task.make_batch(images, seed_of(11))
    again = task.make_batch(images, seed_of(11))
    other = task.make_batch(images, seed_of(12))
    other_step = task.make_batch(images, tf.constant([11, 1], tf.int64))
    np.testing.assert_array_equal(first["targets"], again["targets"])
    np.testing.assert_array_equal(first["inputs"], again["inputs"])
    assert not np.array_equal(first["targets"], other["targets"])
    assert not np.array_equal(first["targets"], other_step["targets"])
    assert not np.array_equal(first["inputs"], other["inputs"])


@pytest.mark.parametrize("make_task, num_classes", RANDOM_TASKS)
def test_random_labels_cover_all_classes_evenly(make_task, num_classes):
    n = 100 * num_classes
    targets = np.asarray(make_task().make_batch(tf.zeros([n, 4, 4, 3]), seed_of(0))["targets"])
    counts = np.bincount(targets, minlength=num_classes)
    assert len(counts) == num_classes
    assert counts.min() >= 50 and counts.max() <= 150, counts


def test_random_tasks_draw_independent_streams():
    """RGB and jigsaw from one batch seed do not draw the same numbers."""
    images = tf.zeros([64, 4, 4, 3])
    rgb = np.asarray(RGBGuessTask().make_batch(images, seed_of(0))["targets"])
    jigsaw = np.asarray(JigsawTask().make_batch(images, seed_of(0))["targets"])
    assert not np.array_equal(rgb, jigsaw % 6)


@pytest.mark.parametrize("name", ["color", "ir", "bir", "inpaint", "rotation"])
def test_deterministic_tasks_ignore_the_seed(name):
    task = TASKS[name]()
    images = tf.constant(random_images(2, size=16))
    a, b = task.make_batch(images, seed_of(0)), task.make_batch(images, seed_of(99))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ------------------------------------------------------------ losses
@pytest.mark.parametrize(
    "task, target_shape, logit_shape",
    [
        (RotationTask(), (3, 4), (3, 4, 4)),
        (RotationTask(mode="random"), (3,), (3, 4)),
        (RGBGuessTask(), (3,), (3, 6)),
        (JigsawTask(), (3,), (3, 24)),
    ],
    ids=["rotation-all", "rotation-random", "rgb", "jigsaw"],
)
def test_classification_losses(task, target_shape, logit_shape):
    rng = np.random.default_rng(0)
    k = logit_shape[-1]
    targets = rng.integers(0, k, target_shape).astype(np.int32)
    perfect = 50.0 * np.eye(k, dtype=np.float32)[targets]
    np.testing.assert_allclose(task.per_example_loss(targets, perfect), np.zeros(3), atol=1e-6)
    uniform = np.zeros(logit_shape, np.float32)
    np.testing.assert_allclose(task.per_example_loss(targets, uniform), np.full(3, np.log(k)), rtol=1e-6)
    logits = rng.normal(0, 3, logit_shape).astype(np.float32)
    expected = np_cross_entropy(targets, logits)
    expected = expected.mean(axis=1) if expected.ndim == 2 else expected
    loss = np.asarray(task.per_example_loss(targets, logits))
    assert loss.shape == (3,) and loss.dtype == np.float32
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_color_loss_is_ce_of_a_plus_ce_of_b():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 32, (2, 4, 4, 2)).astype(np.int32)
    logits = rng.normal(0, 2, (2, 4, 4, 64)).astype(np.float32)
    expected = np_cross_entropy(targets[..., 0], logits[..., :32]).mean(axis=(1, 2)) + np_cross_entropy(
        targets[..., 1], logits[..., 32:]
    ).mean(axis=(1, 2))
    task = ColorTask()
    np.testing.assert_allclose(task.per_example_loss(targets, logits), expected, rtol=1e-5)
    perfect = 50.0 * np.concatenate([np.eye(32)[targets[..., 0]], np.eye(32)[targets[..., 1]]], -1)
    np.testing.assert_allclose(task.per_example_loss(targets, perfect.astype(np.float32)), [0, 0], atol=1e-6)
    uniform = np.zeros_like(logits)
    np.testing.assert_allclose(task.per_example_loss(targets, uniform), np.full(2, 2 * np.log(32)), rtol=1e-6)


@pytest.mark.parametrize(
    "task, shape, scale",
    [
        (ReconstructionTask(), (3, 8, 8, 3), 30.0),
        (DeblurTask(), (3, 8, 8, 3), 30.0),
        (InpaintTask(), (3, 8, 8, 3), 30.0),
        (ReconstructionTask(loss_scale=10.0), (3, 8, 8, 3), 10.0),
        (InpaintTask(loss_scale=2.0), (3, 8, 8, 3), 2.0),
    ],
    ids=["ir", "bir", "inpaint", "ir-scale-10", "inpaint-scale-2"],
)
def test_reconstruction_losses_are_scaled_mse(task, shape, scale):
    rng = np.random.default_rng(2)
    targets = rng.random(shape).astype(np.float32)
    predictions = rng.random(shape).astype(np.float32)
    expected = scale * ((predictions.astype(np.float64) - targets) ** 2).mean(axis=(1, 2, 3))
    loss = np.asarray(task.per_example_loss(targets, predictions))
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(task.per_example_loss(targets, targets), np.zeros(3), atol=1e-7)


# ------------------------------------------------------------ registry
def test_registry_holds_the_seven_tasks_in_table_1_order():
    # The paper's seven come first, in Table 1's order; later tasks follow.
    assert list(TASKS)[:7] == ["rotation", "color", "ir", "bir", "inpaint", "rgb", "jigsaw"]
    for name, cls in TASKS.items():
        assert cls.name == name


def test_parse_task_names_accepts_strings_and_lists():
    assert parse_task_names("rotation, color ,ir") == ("rotation", "color", "ir")
    assert parse_task_names(["bir", "jigsaw"]) == ("bir", "jigsaw")
    assert parse_task_names("") == ()
    assert parse_task_names(None) == ()
    assert [t.name for t in make_tasks("rgb,inpaint")] == ["rgb", "inpaint"]


@pytest.mark.parametrize("spec, bad", [("rotation,colour", "colour"), (["jigsaw", "Rotation"], "Rotation")])
def test_unknown_task_is_a_config_error_naming_it(spec, bad):
    with pytest.raises(ConfigError) as info:
        parse_task_names(spec)
    assert repr(bad) in str(info.value)
    assert "rotation" in str(info.value)  # lists the valid choices
    assert isinstance(info.value, UserError)
    with pytest.raises(ConfigError):
        make_tasks(spec)


def test_repeated_task_is_a_config_error():
    with pytest.raises(ConfigError, match="twice"):
        parse_task_names("rotation,color,rotation")


def test_unknown_task_option_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        make_tasks(["rotation"], {"rotation": {"mdoe": "all"}})
    assert "mdoe" in str(info.value) and "rotation" in str(info.value)
    with pytest.raises(ConfigError, match="sigm"):
        DeblurTask(sigm=1.0)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("rotation", {"mode": "some"}, "mode"),
        ("color", {"bins": 10}, "bins"),
        ("color", {"bins": 0}, "bins"),
        ("bir", {"sigma": 0.0}, "sigma"),
        ("bir", {"sigma": -1.0}, "sigma"),
        ("bir", {"loss_scale": 0.0}, "loss_scale"),
        ("ir", {"loss_scale": -30.0}, "loss_scale"),
        ("inpaint", {"loss_scale": 0}, "loss_scale"),
    ],
)
def test_invalid_option_values_are_config_errors(name, options, match):
    with pytest.raises(ConfigError, match=match):
        make_tasks([name], {name: options})


def test_options_reach_the_task():
    (color,) = make_tasks(["color"], {"color": {"bins": 16}})
    assert color.options == {"bins": 16}
    images = tf.constant(random_images(1, size=8))
    assert int(tf.reduce_max(color.make_batch(images, seed_of(0))["targets"])) < 16
