"""Backbones and image sizes plug in: a run trains, saves, loads and exports with each."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from robust_ssl import config_utils, export, networks, train
from robust_ssl.errors import ConfigError
from robust_ssl.model import RobustSSLModel


def small_backbone(image_shape):
    """A user backbone for the tests: two convolutions and global pooling."""
    inputs = keras.Input(image_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def flat_backbone(image_shape):
    """Not a feature vector: refused."""
    inputs = keras.Input(image_shape)
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))


def test_wrn_spec_builds_the_paper_network():
    trunk = networks.build_backbone(networks.backbone_spec("wrn", 40, 2), (32, 32, 3))
    assert trunk.output_shape == (None, 128)


@pytest.mark.parametrize("name, shape", [("MobileNetV3Small", (32, 32, 3)), ("ResNet50V2", (64, 64, 3))])
def test_keras_applications_build_untrained_at_the_image_size(name, shape):
    trunk = networks.build_backbone(networks.backbone_spec(name), shape)
    features = trunk(tf.zeros([2, *shape]), training=False)
    assert len(features.shape) == 2 and features.shape[0] == 2


def test_user_function_backbone_and_its_errors():
    spec = networks.backbone_spec(f"{__name__}:small_backbone")
    assert networks.build_backbone(spec, (32, 32, 3)).output_shape == (None, 16)
    with pytest.raises(ValueError, match="must return \\[N, F\\] features"):
        networks.build_backbone(networks.backbone_spec(f"{__name__}:flat_backbone"), (32, 32, 3))
    with pytest.raises(ValueError, match="has no function"):
        networks.check_backbone(networks.backbone_spec(f"{__name__}:nothing_here"))
    with pytest.raises(ValueError, match="cannot import"):
        networks.check_backbone(networks.backbone_spec("no_such_module_xyz:f"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.backbone": "ResNet51"}, "unknown backbone 'ResNet51'"),
        ({"data.image_size": (64, 48), "tasks": "rotation"}, "square images"),
        ({"data.image_size": (9, 9), "tasks": "ir"}, "decoder head"),
        ({"data.image_size": (64,)}, "data.image_size"),
        (
            {
                "data.image_size": (64, 64),
                "automl.enabled": True,
                "automl.validation.source": "corrupted_holdout",
            },
            "defined for 32x32",
        ),
    ],
)
def test_sizes_and_backbones_that_cannot_serve_are_refused_in_one_line(overrides, message):
    config = tiny_config("rotation")
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    with pytest.raises(ConfigError, match=message) as info:
        config_utils.validate(config)
    assert "\n" not in str(info.value)


def test_a_64x64_run_with_decoder_tasks_trains_loads_and_exports(tmp_path):
    config = tiny_config("rotation,color,ir,bir,inpaint", **{"data.image_size": (64, 64)})
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert 0.0 <= results["test_accuracy"] <= 1.0
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert model.image_shape == (64, 64, 3)
    assert [h.output_shape[1:] for h in model.task_heads[1:]] == [
        (64, 64, 64),
        (64, 64, 3),
        (64, 64, 3),
        (16, 16, 3),
    ]
    path = export.export_saved_model(model, str(tmp_path / "export"), with_ssl_heads=True)
    loaded = tf.saved_model.load(path)
    pixels = tf.constant(np.zeros((2, 64, 64, 3), np.uint8))
    assert loaded.signatures["serving_default"](images=pixels)["logits"].shape == (2, 10)


@pytest.mark.parametrize("backbone", ["MobileNetV3Small", f"{__name__}:small_backbone"])
def test_runs_on_other_backbones_save_and_load(backbone, tmp_path):
    config = tiny_config("rotation", **{"model.backbone": backbone, "train.epochs": 1})
    train.train_and_evaluate(config, str(tmp_path))
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(model, RobustSSLModel) and model.backbone == {"name": backbone}
    images = tf.zeros([2, 32, 32, 3])
    assert model(images).shape == (2, 10)
