"""Training end to end: loss goes down, outputs are written, errors are clear."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, tiny_config

from robust_ssl import meta, steps, train
from robust_ssl.data import datasets, pipeline
from robust_ssl.errors import ConfigError, TrainingDivergedError, UserError
from robust_ssl.tasks import TASKS
from robust_ssl.tasks.rotation import RotationTask


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_twenty_fixed_lambda_steps_lower_the_training_loss():
    config = tiny_config("rotation,ir", **{"train.learning_rate": 0.05})
    data = datasets.load_synthetic(512, 64)
    model = train.build_model(config, data.num_classes, steps_per_epoch=20)
    ds = pipeline.training_dataset(data.train, model.tasks, 32, seed=0)
    probe = next(iter(ds))

    def probe_loss():
        losses, _ = steps.task_losses(model, probe, update_stats=False)
        return float(losses[0] + 0.5 * losses[1] + 0.5 * losses[2])

    before = probe_loss()
    model.fit(ds, epochs=1, steps_per_epoch=20, verbose=0)
    after = probe_loss()
    assert after < 0.8 * before, (before, after)
    assert model.lambda_values() == {"rotation": 0.5, "ir": 0.5}  # fixed λ


def test_train_and_evaluate_writes_every_output(tmp_path):
    config = tiny_config("rotation,color")
    results = train.train_and_evaluate(config, str(tmp_path))
    for name in ("config.json", "metrics.csv", "lambdas.csv", "results.json", "model.keras"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "tensorboard").is_dir()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch_001.keras", "epoch_002.keras"]
    rows = read_csv(tmp_path / "metrics.csv")
    assert len(rows) == 2
    for column in ("loss", "main_loss", "rotation_loss", "color_loss", "accuracy", "val_accuracy"):
        assert column in rows[0]
    assert float(rows[-1]["lambda_rotation"]) == 0.5
    assert float(rows[-1]["images_per_sec"]) > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["steps"] == 4
    assert json.loads((tmp_path / "config.json").read_text())["tasks"] == "rotation,color"
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.task_names == ["rotation", "color"]


@pytest.mark.parametrize("source", ["train_holdout", "corrupted_holdout"])
def test_automl_run_keeps_lambda_during_warm_up_then_learns_it(tmp_path, source):
    config = tiny_config("rotation,ir", automl=True, **{"automl.validation.source": source})
    results = train.train_and_evaluate(config, str(tmp_path))
    rows = read_csv(tmp_path / "lambdas.csv")
    steps = [int(r["step"]) for r in rows]
    assert steps == [1, 2, 3, 4]
    for row in rows[:2]:  # warm-up: 1 epoch of 2 steps
        assert float(row["rotation"]) == 0.5 and float(row["ir"]) == 0.5
    assert float(rows[2]["rotation"]) != 0.5 and float(rows[3]["rotation"]) != float(rows[2]["rotation"])
    assert all(v >= 0 for v in results["lambdas"].values())
    record = json.loads((tmp_path / "meta_validation.json").read_text())
    assert record["source"] == source and record["holdout"] == 64
    assert results["num_train"] == 256 - 64  # held-out images are not trained on
    assert "meta_loss" in read_csv(tmp_path / "metrics.csv")[-1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tasks": "rotation,colour"}, "unknown task 'colour'"),
        ({"task_weights.rotation": -0.5}, "λ of task 'rotation' must be"),
        ({"model.depth": 12}, "6n+4"),
        ({"task_options.rotation.mode": "sometimes"}, "rotation mode"),
        ({"automl.enabled": True, "automl.mode": "slow"}, "automl.mode"),
        ({"train.batch_size": 0}, "train.batch_size"),
    ],
)
def test_bad_config_fails_before_anything_is_written(tmp_path, overrides, message):
    config = tiny_config("rotation")
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_workdir_holding_another_run_is_refused_unless_overwrite(tmp_path):
    train.train_and_evaluate(tiny_config("rotation", **{"train.epochs": 1}), str(tmp_path))
    other = tiny_config("ir", **{"train.epochs": 1})
    with pytest.raises(ConfigError, match="different config.*tasks"):
        train.train_and_evaluate(other, str(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["tasks"] == "rotation"
    other.train.overwrite = True
    results = train.train_and_evaluate(other, str(tmp_path))
    assert results["tasks"] == ["ir"]


# XLA drops tf.debugging.Assert: with jit_compile the checks must stay outside it.
@pytest.mark.parametrize("jit_compile", [False, True])
def test_nan_lambda_gradient_stops_with_a_clear_error_and_keeps_the_checkpoint(
    tmp_path, monkeypatch, jit_compile
):
    def nan_hypergradient(meta_loss_fn, params, main_grads, task_grads, lambdas, alpha):
        return lambdas * np.nan, tf.constant(0.0)

    monkeypatch.setattr(meta, "hypergradient", nan_hypergradient)
    config = tiny_config("rotation", automl=True, **{"train.epochs": 3, "train.jit_compile": jit_compile})
    with pytest.raises(TrainingDivergedError, match=r"λ gradient.*'lambdas'.*step.*2"):
        train.train_and_evaluate(config, str(tmp_path))
    checkpoint = tmp_path / "checkpoints" / "epoch_001.keras"
    assert checkpoint.is_file()
    assert not (tmp_path / "checkpoints" / "epoch_002.keras").exists()
    restored = keras.saving.load_model(checkpoint)
    assert restored.lambda_values() == {"rotation": 0.5}


@pytest.mark.parametrize("jit_compile", [False, True])
def test_nan_task_loss_names_the_task(tmp_path, monkeypatch, jit_compile):
    def nan_loss(self, targets, predictions):
        return tf.fill([tf.shape(targets)[0]], np.nan)

    monkeypatch.setattr(RotationTask, "per_example_loss", nan_loss)
    config = tiny_config("rotation,ir", **{"train.jit_compile": jit_compile})
    with pytest.raises(TrainingDivergedError, match="loss of 'rotation' at step"):
        train.train_and_evaluate(config, str(tmp_path))


# ---------------------------------------------------------------- data sources
def test_tfds_source_takes_class_count_from_dataset_info(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=96):
        data = datasets.load_tfds("cifar100", data_dir=str(tmp_path))
        assert data.num_classes == 100 and len(data.class_names) == 100
        config = tiny_config("rotation", **{"data.source": "tfds", "data.name": "cifar10", "train.epochs": 1})
        results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["steps"] == 2


def test_missing_tfds_data_offline_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="not available.*data_dir.*folder"):
        datasets.load_tfds("cifar10", data_dir=str(tmp_path), download=False)


def test_image_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                keras.utils.save_img(folder / f"{i}.png", image)
    data = datasets.load_folder(str(tmp_path))
    assert data.class_names == ["cat", "dog"]
    assert (data.num_train, data.num_test, data.num_classes) == (12, 4, 2)
    image, label = next(iter(data.train))
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8
    with pytest.raises(UserError, match="does not exist"):
        datasets.load_folder(str(tmp_path / "nope"))


def test_augment_is_a_padded_crop_and_maybe_a_flip():
    rng = np.random.default_rng(1)
    images = rng.random((6, 32, 32, 3)).astype(np.float32)
    out = pipeline.augment(tf.constant(images), tf.constant([3, 4], tf.int64)).numpy()
    padded = np.pad(images, [(0, 0), (4, 4), (4, 4), (0, 0)])
    for image, result in zip(padded, out):
        candidates = [
            crop
            for dy in range(9)
            for dx in range(9)
            for crop in (image[dy : dy + 32, dx : dx + 32], image[dy : dy + 32, dx : dx + 32][:, ::-1])
        ]
        assert any(np.array_equal(result, c) for c in candidates)


def test_training_stream_is_a_function_of_the_seed():
    data = datasets.load_synthetic(128, 16)
    tasks = train.build_model(tiny_config("rotation,rgb"), 10, 2).tasks

    def first_batches(seed):
        ds = pipeline.training_dataset(data.train, tasks, 16, seed=seed)
        return [b["rgb/targets"].numpy() for b in ds.take(3)]

    a, b, c = first_batches(0), first_batches(0), first_batches(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


# ---------------------------------------------------------------- the tool
def run_tool(*args):
    return run_cli("train", *args)


TINY_FLAGS = [
    "--config.model.depth=10",
    "--config.data.num_train=160",
    "--config.data.num_test=64",
    "--config.train.epochs=2",
    "--config.train.steps_per_epoch=2",
    "--config.train.batch_size=16",
    "--config.train.verbose=2",
]


@pytest.mark.parametrize("config_file", ["smoke", "smoke_automl"])
def test_train_tool_runs_end_to_end(tmp_path, config_file):
    extra = ["--config.automl.warmup_epochs=1", "--config.automl.validation.holdout=32"]
    proc = run_tool(
        f"--config={config_file}",
        f"--workdir={tmp_path}",
        *TINY_FLAGS,
        *(extra if "automl" in config_file else []),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clean test accuracy" in proc.stdout and str(tmp_path) in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 4
    if "automl" in config_file:
        assert results["lambdas"]["rotation"] != 0.5


def test_train_tool_bad_input_is_one_error_line(tmp_path):
    proc = run_tool("--config=smoke", f"--workdir={tmp_path}", "--config.tasks=rotation,nope")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: unknown task 'nope'; choose from {', '.join(TASKS)}"]
    assert errors[0].startswith("error: unknown task 'nope'; choose from rotation, color, ir, bir,")


def test_deterministic_runs_of_the_same_config_end_with_identical_weights(tmp_path):
    """train.deterministic: two fresh processes, same seed and config -> the same bits."""
    from conftest import write_config_file

    config = write_config_file(tmp_path / "tiny.py", tasks="rotation,color,ir,bir", automl=True)
    weights = []
    for name in ("a", "b"):
        result = run_cli(
            "train", f"--config={config}", f"--workdir={tmp_path / name}", "--config.train.deterministic=True"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads((tmp_path / name / "config.json").read_text())["train"]["deterministic"] is True
        model = keras.saving.load_model(tmp_path / name / "model.keras")
        weights.append([w.numpy() for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    assert train.make_deterministic(tiny_config()) is None  # off by default: nothing changed
