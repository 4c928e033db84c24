"""The AugMix objective: operations against PIL, views, the JSD against numpy, a run."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from PIL import Image, ImageOps

from robust_ssl import steps, train
from robust_ssl.tasks import augmix as A
from robust_ssl.tasks import make_tasks


def pixels(n=4, seed=0, smooth=False):
    rng = np.random.default_rng(seed)
    if smooth:  # geometric resampling is compared on smooth images
        y, x = np.mgrid[0:32, 0:32]
        base = np.stack([128 + 100 * np.sin(x / 5.0 + c) * np.cos(y / 7.0) for c in range(3)], -1)
        return np.stack([np.clip(base + 20 * k, 0, 255) for k in range(n)]).astype(np.uint8)
    images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    images[1] = images[1] // 4 + 60  # low contrast: autocontrast and equalize have work to do
    return images


def test_operations_are_the_augmix_cifar_set_without_the_corruption_like_ones():
    assert set(A.OPERATIONS) == {
        "autocontrast",
        "equalize",
        "posterize",
        "rotate",
        "solarize",
        "shear_x",
        "shear_y",
        "translate_x",
        "translate_y",
    }
    assert not set(A.OPERATIONS) & set(A.EXCLUDED_OPERATIONS)


def test_pixel_operations_match_pil_exactly():
    x = pixels()
    t = tf.constant(x, tf.float32)
    bits, thresholds = [4, 3, 4, 3], [200, 180, 254, 128]
    autocontrast, equalize = A.autocontrast(t).numpy(), A.equalize(t).numpy()
    posterized = A.posterize(t, tf.constant(bits, tf.float32)).numpy()
    solarized = A.solarize(t, tf.constant(thresholds, tf.float32)).numpy()
    for i in range(len(x)):
        image = Image.fromarray(x[i])
        np.testing.assert_array_equal(autocontrast[i], np.asarray(ImageOps.autocontrast(image)))
        np.testing.assert_array_equal(equalize[i], np.asarray(ImageOps.equalize(image)))
        np.testing.assert_array_equal(posterized[i], np.asarray(ImageOps.posterize(image, bits[i])))
        np.testing.assert_array_equal(solarized[i], np.asarray(ImageOps.solarize(image, thresholds[i])))


@pytest.mark.parametrize(
    "op, pil",
    [
        ("rotate", lambda im: im.rotate(9, resample=Image.BILINEAR)),
        ("shear_x", lambda im: im.transform((32, 32), Image.AFFINE, (1, 0.09, 0, 0, 1, 0), Image.BILINEAR)),
        ("shear_y", lambda im: im.transform((32, 32), Image.AFFINE, (1, 0, 0, 0.09, 1, 0), Image.BILINEAR)),
        ("translate_x", lambda im: im.transform((32, 32), Image.AFFINE, (1, 0, 3, 0, 1, 0), Image.BILINEAR)),
        ("translate_y", lambda im: im.transform((32, 32), Image.AFFINE, (1, 0, 0, 0, 1, 3), Image.BILINEAR)),
    ],
)
def test_geometric_operations_follow_pil(op, pil):
    import keras

    x = pixels(1, smooth=True)
    level, sign = tf.constant([3.0]), tf.constant([1.0])  # severity 3: 9°, 0.09 shear, 3 px
    rows = A._affine_rows(op, level, sign, 32, 32)
    ours = keras.ops.image.affine_transform(tf.constant(x, tf.float32), rows, "bilinear", fill_value=0)
    theirs = np.asarray(pil(Image.fromarray(x[0]))).astype(np.float32)
    inner = (slice(4, 28), slice(4, 28))  # away from the fill at the borders
    # PIL samples at pixel centres, Keras at indices: sub-pixel differences only.
    assert np.mean(np.abs(ours.numpy()[0][inner] - theirs[inner])) < 3.0


def test_views_are_a_pure_function_of_the_seed_in_range_and_float32():
    images = tf.constant(np.random.default_rng(1).random((6, 32, 32, 3)), tf.float32)
    seed = tf.constant([3, 9], tf.int64)
    a = A.augmix_views(images, seed)
    b = A.augmix_views(images, seed)
    c = next(iter(tf.data.Dataset.from_tensors((images, seed)).map(A.augmix_views)))
    other = A.augmix_views(images, tf.constant([3, 10], tf.int64))
    assert a.shape == (6, 2, 32, 32, 3) and a.dtype == tf.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, other)
    assert float(tf.reduce_min(a)) >= 0.0 and float(tf.reduce_max(a)) <= 1.0
    assert not np.array_equal(a[:, 0], a[:, 1])  # two different views
    assert not np.allclose(a[:, 0], images)  # and not the image itself


def test_each_image_gets_its_own_chains():
    image = np.random.default_rng(2).random((1, 32, 32, 3))
    images = tf.constant(np.repeat(image, 8, axis=0), tf.float32)
    views = A.augmix_views(images, tf.constant([0, 1], tf.int64)).numpy()
    distinct = {views[i, 0].tobytes() for i in range(8)}
    assert len(distinct) == 8  # one batch, eight different augmentations


def numpy_jsd(logits):
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    m = np.clip(p.mean(1, keepdims=True), 1e-7, 1)
    return np.mean(np.sum(p * (np.log(p) - np.log(m)), -1), 1)


def test_jensen_shannon_against_numpy_symmetric_and_zero_on_equal_predictions():
    logits = np.random.default_rng(3).normal(size=(5, 3, 10)) * 2
    ours = A.jensen_shannon(tf.constant(logits, tf.float64)).numpy()
    np.testing.assert_allclose(ours, numpy_jsd(logits), rtol=1e-10)
    permuted = A.jensen_shannon(tf.constant(logits[:, [2, 0, 1]], tf.float64)).numpy()
    np.testing.assert_allclose(permuted, ours, rtol=1e-12)
    same = np.repeat(logits[:, :1], 3, axis=1)
    np.testing.assert_allclose(A.jensen_shannon(tf.constant(same)).numpy(), 0.0, atol=1e-6)
    assert np.all(ours > 0) and np.all(ours <= np.log(3) + 1e-9)  # JSD of 3 is at most log 3


def test_the_loss_sees_the_clean_prediction_and_both_views():
    (task,) = make_tasks(["augmix"])
    batch = task.make_batch(tf.zeros([2, 32, 32, 3]), tf.constant([0, 0], tf.int64))
    assert batch["inputs"].shape == (2, 2, 32, 32, 3)
    from robust_ssl.tasks import Forward

    def encode(images):
        return tf.reshape(images, [tf.shape(images)[0], -1])[:, :4]

    forward = Forward(tf.zeros([2, 4]), tf.constant([[5.0, 0.0], [0.0, 5.0]]), encode, lambda f: f[:, :2] * 0)
    predictions = task.predict(None, forward, batch["inputs"])
    assert predictions.shape == (2, 3, 2)
    np.testing.assert_array_equal(predictions[:, 0], forward.clean_logits)


@pytest.mark.parametrize("bad", [{"width": 0}, {"max_depth": 0}, {"severity": 0}, {"alpha": -1.0}])
def test_bad_options_are_refused(bad):
    from robust_ssl.errors import ConfigError

    with pytest.raises(ConfigError, match="augmix"):
        make_tasks(["augmix"], {"augmix": bad})


def test_automl_with_augmix_trains_end_to_end(tmp_path):
    config = tiny_config("rotation,augmix", automl=True, **{"automl.validation.source": "corrupted_holdout"})
    config.task_weights.augmix = 12.0
    results = train.train_and_evaluate(config, str(tmp_path))
    assert set(results["lambdas"]) == {"rotation", "augmix"}
    assert results["lambdas"]["augmix"] != 12.0  # learned after the warm-up
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert "augmix_loss" in rows[0]
    assert json.loads((tmp_path / "meta_validation.json").read_text())["source"] == "corrupted_holdout"


def _first_batch_norm_input_model(model):
    """The trunk up to the input of its first batch-norm layer (an independent forward)."""
    import keras

    first = next(layer for layer in model.trunk.layers if isinstance(layer, keras.layers.BatchNormalization))
    return keras.Model(model.trunk.inputs, first.input), first


@pytest.mark.parametrize("joint_bn", [True, False])
def test_joint_bn_normalises_clean_image_and_views_together(joint_bn):
    """With joint_bn the first BN's moving mean moves by the statistics of [clean; view 1; view 2]."""
    import keras

    from robust_ssl.model import RobustSSLModel

    keras.utils.set_random_seed(0)
    model = RobustSSLModel(
        depth=10, width=1, tasks=["augmix"], task_options={"augmix": {"joint_bn": joint_bn}}
    )
    images = tf.constant(pixels(6, seed=4), tf.float32) / 255.0
    (task,) = model.tasks
    made = task.make_batch(images, tf.constant([3, 4], tf.int64))
    batch = {"image": images, "label": tf.zeros([6], tf.int32)}
    batch.update({f"augmix/{k}": v for k, v in made.items()})
    model(images)  # build
    upto, bn = _first_batch_norm_input_model(model)
    before = bn.moving_mean.numpy().copy()
    views = tf.reshape(tf.transpose(made["inputs"], [1, 0, 2, 3, 4]), [-1, 32, 32, 3])
    seen = tf.concat([images, views], 0) if joint_bn else images
    expected_mean = np.mean(upto(seen).numpy(), axis=(0, 1, 2))
    losses, logits = steps.task_losses(model, batch)
    momentum = bn.momentum
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), momentum * before + (1 - momentum) * expected_mean, rtol=1e-4, atol=1e-6
    )
    # The main loss's logits are the clean rows of that forward.
    features = model.trunk(seen, training=True)[:6]
    np.testing.assert_allclose(logits.numpy(), model.classifier(features).numpy(), rtol=1e-4, atol=1e-5)
    assert np.isfinite(losses[1].numpy())


def test_geometric_operations_end_on_integer_levels_as_pil():
    x = tf.constant(pixels(8, seed=5, smooth=True), tf.float32)
    geometric = tf.fill([8], A.OPERATIONS.index("rotate"))
    out = A._apply_operations(x, geometric, tf.ones([8], tf.bool), tf.constant([1, 2], tf.int64), 3).numpy()
    assert not np.array_equal(out, x.numpy())  # it did rotate
    np.testing.assert_array_equal(out, np.round(out))
    assert out.min() >= 0 and out.max() <= 255


def test_joint_bn_is_an_option_refused_when_not_boolean():
    from robust_ssl.errors import ConfigError

    assert make_tasks(["augmix"])[0].joins_clean_forward()
    assert not make_tasks(["augmix"], {"augmix": {"joint_bn": False}})[0].joins_clean_forward()
    with pytest.raises(ConfigError, match="joint_bn"):
        make_tasks(["augmix"], {"augmix": {"joint_bn": "yes"}})
