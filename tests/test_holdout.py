"""Hold-outs are drawn by the seed and stratified by class, also on class-ordered data."""

import json

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from robust_ssl import train
from robust_ssl.data import datasets, splits
from robust_ssl.errors import ConfigError

CLASSES = ("ant", "bee", "cat", "dog")


def class_ordered_labels(sizes):
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])


@pytest.mark.parametrize("sizes, count", [((50, 50, 50, 50), 40), ((7, 30, 13, 50), 17), ((3, 3, 94), 10)])
def test_stratified_split_of_class_ordered_labels(sizes, count):
    labels = class_ordered_labels(sizes)
    rest, sample = splits.stratified_split(labels, count, seed=3)
    assert len(sample) == count and len(rest) == len(labels) - count
    assert len(np.intersect1d(rest, sample)) == 0
    assert sorted(np.concatenate([rest, sample]).tolist()) == list(range(len(labels)))
    expected = np.asarray(sizes) * count / len(labels)
    taken = np.bincount(labels[sample], minlength=len(sizes))
    # Within one image of the exact stratified share, for every class.
    assert np.all(np.abs(taken - expected) < 1.0), (taken, expected)


def test_every_class_is_on_both_sides_of_a_class_ordered_split():
    labels = class_ordered_labels((20, 20, 20, 20))
    rest, sample = splits.stratified_split(labels, 20, seed=0)
    assert set(labels[rest]) == set(labels[sample]) == {0, 1, 2, 3}
    np.testing.assert_array_equal(np.bincount(labels[sample]), [5, 5, 5, 5])


def test_split_is_a_pure_function_of_the_seed():
    labels = class_ordered_labels((30, 30, 30))
    a = splits.stratified_split(labels, 12, seed=5)
    b = splits.stratified_split(labels, 12, seed=5)
    c = splits.stratified_split(labels, 12, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratified_counts_tie_break_depends_on_the_seed_not_the_class_index():
    # 3 equal classes, 1 image to give: every class must win for some seed.
    winners = {int(np.argmax(splits.stratified_counts([10, 10, 10], 1, seed=s))) for s in range(30)}
    assert winners == {0, 1, 2}


def test_stratified_shuffle_interleaves_classes():
    labels = class_ordered_labels((25, 25, 25, 25))
    order = splits.stratified_shuffle(labels, 40, seed=1)
    assert len(set(order.tolist())) == 40
    np.testing.assert_array_equal(np.bincount(labels[order]), [10, 10, 10, 10])
    assert len(set(labels[order[:10]].tolist())) > 1  # the head is not one class


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """<root>/train/<class>/*.png, 24 images per class, and a small test/ folder."""
    root = tmp_path_factory.mktemp("class_folder")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 24), ("test", 4)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(60 * c + 20, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def folder_config(root, source="train_holdout", holdout=16):
    config = tiny_config("rotation", automl=True)
    config.data.source = "folder"
    config.data.folder = str(root)
    config.automl.validation.source = source
    config.automl.validation.holdout = holdout
    return config


@pytest.mark.parametrize("source", ["train_holdout", "corrupted_holdout"])
def test_meta_validation_of_a_class_ordered_folder_is_stratified(class_folder, source):
    config = folder_config(class_folder, source)
    config.automl.validation.corruptions = "fog"
    config.automl.validation.severities = "1"
    data = datasets.load_data(config.data)
    (images, labels), meta, record = train.meta_validation(config, data)
    assert record["holdout_class_counts"] == {name: 4 for name in CLASSES}
    assert record["train_class_counts"] == {name: 20 for name in CLASSES}
    np.testing.assert_array_equal(np.bincount(labels), [20, 20, 20, 20])
    meta_labels = np.asarray([int(y) for _, y in meta])
    np.testing.assert_array_equal(np.bincount(meta_labels), [4, 4, 4, 4])
    # The held-out images are not among the training images.
    meta_images = np.stack([x.numpy() for x, _ in meta]) if source == "train_holdout" else None
    if meta_images is not None:
        flat_train = {im.tobytes() for im in images}
        assert not any(im.astype(images.dtype).tobytes() in flat_train for im in meta_images)
    # The same seed gives the same split; another seed another one.
    _, _, record_again = train.meta_validation(config, data)
    assert record_again == record
    config.seed = 1
    (images_other, _), _, _ = train.meta_validation(config, data)
    assert not np.array_equal(images_other, images)


def test_automl_run_on_a_class_ordered_folder_records_class_counts(class_folder, tmp_path):
    config = folder_config(class_folder)
    results = train.train_and_evaluate(config, str(tmp_path))
    record = json.loads((tmp_path / "meta_validation.json").read_text())
    assert record["holdout_class_counts"] == {name: 4 for name in CLASSES}
    assert record["train_class_counts"] == {name: 20 for name in CLASSES}
    assert results["num_train"] == 80


def test_holdout_that_empties_a_class_is_refused(class_folder):
    # 4 classes x 24 images; a hold-out of 95 leaves one image in training, so
    # at least three classes lose every training image.
    config = folder_config(class_folder, holdout=95)
    data = datasets.load_data(config.data)
    with pytest.raises(ConfigError, match="without training images"):
        train.meta_validation(config, data)


def test_holdout_smaller_than_the_meta_batch_is_refused(tmp_path):
    config = tiny_config("rotation", automl=True, **{"automl.validation.holdout": 4})
    with pytest.raises(ConfigError, match="fewer images than one meta batch"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_folder_test_split_is_stratified(class_folder):
    data = datasets.load_folder(str(class_folder / "train"), test_fraction=0.25, seed=0)
    labels = np.asarray([int(y) for _, y in data.test])
    np.testing.assert_array_equal(np.bincount(labels), [6, 6, 6, 6])
