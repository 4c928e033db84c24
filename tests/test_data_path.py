"""The data path: folders stream from disk exactly, bad data is named, evaluation data is checked."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli, tiny_config
from PIL import Image

from robust_ssl import train
from robust_ssl.data import cifar10c, datasets, folders, pipeline
from robust_ssl.errors import UserError
from robust_ssl.tasks import make_tasks

CLASSES = ("cat", "dog", "frog")


def make_folder(root, per_class=12, test_per_class=4, size=40):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.normal(70 * c + 40, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "images")


def folder_config(root, **overrides):
    config = tiny_config("rotation", **overrides)
    config.data.source = "folder"
    config.data.folder = str(root)
    return config


def test_streamed_batches_equal_in_memory_batches_and_resume_exactly(folder):
    streamed = datasets.load_folder(str(folder), in_memory=False)
    loaded = datasets.load_folder(str(folder), in_memory=True)
    assert isinstance(streamed.train_source, folders.ImageFiles)
    assert isinstance(loaded.train_source, tuple)
    tasks = make_tasks(["rotation"])

    def batches(source, start_step=0, n=4):
        ds = pipeline.training_dataset(source, tasks, 8, seed=3, start_step=start_step)
        return [(b["image"].numpy(), b["label"].numpy()) for b in ds.take(n)]

    a, b = batches(streamed.train_source), batches(loaded.train_source)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    resumed = batches(streamed.train_source, start_step=2, n=2)
    np.testing.assert_array_equal(resumed[0][0], a[2][0])  # a batch is a function of its step
    np.testing.assert_array_equal(resumed[1][1], a[3][1])


def test_training_streams_a_folder_with_automl(folder, tmp_path):
    config = folder_config(
        folder, **{"data.in_memory": False, "automl.enabled": True, "automl.validation.holdout": 9}
    )
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["num_train"] == 36 - 9
    record = json.loads((tmp_path / "run" / "meta_validation.json").read_text())
    assert record["holdout_class_counts"] == {name: 3 for name in CLASSES}


def test_config_json_records_only_what_the_source_reads(folder, tmp_path):
    train.train_and_evaluate(folder_config(folder, **{"train.epochs": 1}), str(tmp_path / "run"))
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["source"] == "folder" and "folder" in data
    for key in ("num_train", "num_test", "num_classes", "name", "data_dir"):
        assert key not in data, key


def test_unreadable_images_are_named_in_one_line_or_skipped_with_a_count(folder, tmp_path):
    for name in ("broken_a.jpg", "broken_b.png"):
        (folder / "train" / "dog" / name).write_bytes(b"this is not an image")
    with pytest.raises(UserError) as info:
        datasets.load_folder(str(folder))
    message = str(info.value)
    assert "2 unreadable image(s)" in message and "broken_a.jpg" in message and "broken_b.png" in message
    assert "data.skip_bad_images=True" in message and "\n" not in message
    result = run_cli(
        "train", "--config=smoke", f"--workdir={tmp_path / 'cli'}", "--config.data.source=folder",
        f"--config.data.folder={folder}", timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: 2 unreadable image(s)")
    skipped = datasets.load_folder(str(folder), skip_bad=True)
    assert skipped.skipped == 2 and skipped.num_train == 36


def test_an_empty_class_folder_is_refused(folder):
    (folder / "train" / "zebra").mkdir()
    with pytest.raises(UserError, match="zebra .*hold no images"):
        datasets.load_folder(str(folder))


def test_images_are_resized_to_the_configured_size(folder):
    data = datasets.load_folder(str(folder), image_size=(16, 24), in_memory=False)
    images, _ = pipeline.to_arrays(data.test)
    assert images.shape == (12, 16, 24, 3) and images.dtype == np.uint8


# ---------------------------------------------------------------- evaluation inputs
@pytest.fixture
def npy_dir(tmp_path):
    directory = tmp_path / "c"
    directory.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * 6, 32, 32, 3)).astype(np.uint8)
    np.save(directory / "fog.npy", images)
    np.save(directory / "labels.npy", np.tile(np.arange(6) % 3, 5).astype(np.uint8))
    return directory


def test_npy_blocks_must_match_labels(npy_dir):
    images, labels = cifar10c.load_npy_block(str(npy_dir), "fog", 2)
    assert images.shape == (6, 32, 32, 3) and labels.shape == (6,)
    full = np.load(npy_dir / "fog.npy")
    np.save(npy_dir / "fog.npy", full[::2])  # subsampled images, labels kept
    with pytest.raises(UserError, match="15 images but .*30 labels") as info:
        cifar10c.load_npy_block(str(npy_dir), "fog", 1)
    assert "\n" not in str(info.value)
    np.save(npy_dir / "fog.npy", full[:28])
    np.save(npy_dir / "labels.npy", np.zeros(28, np.uint8))
    with pytest.raises(UserError, match="not 5 whole severity blocks"):
        cifar10c.load_npy_block(str(npy_dir), "fog", 1)


def test_a_model_outside_a_run_says_what_was_assumed(npy_dir, tmp_path):
    import keras

    from robust_ssl.model import RobustSSLModel

    keras.utils.set_random_seed(0)
    path = tmp_path / "alone" / "model.keras"
    path.parent.mkdir()
    RobustSSLModel(depth=10, width=1, num_classes=3).save(path)
    result = run_cli(
        "evaluate", f"--checkpoint={path}", f"--cifar10c={npy_dir}", "--corruptions=fog", timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    notes = [
        line for line in result.stdout.splitlines() + result.stderr.splitlines() if line.startswith("note:")
    ]
    assert notes and "assumed the paper's meta-validation protocol" in notes[0]
    assert "--include_meta_images" in notes[0]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no fog severity 1 images are left") and "--include_meta_images" in last
    ok = run_cli(
        "evaluate", f"--checkpoint={path}", f"--cifar10c={npy_dir}", "--corruptions=fog",
        "--include_meta_images", f"--output_dir={tmp_path / 'out'}", timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert os.path.exists(tmp_path / "out" / "robustness.json")


def test_image_files_decode_in_tf_data(folder):
    files = folders.scan_folder(str(folder / "test"), (32, 32))
    assert files.class_names == list(CLASSES) and len(files) == 12
    first = next(iter(files.dataset()))
    assert first[0].shape == (32, 32, 3) and first[0].dtype == tf.uint8
