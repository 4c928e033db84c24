"""tensorflow-datasets' real prepare path for cifar10, offline, from a local archive.

The suite's other tfds tests use `tfds.testing.mock_data`, which bypasses
`download_and_prepare`; a dependency that the prepare path needs (e.g.
`importlib_resources` through etils' epath) would then be missed. Here the
builder prepares the dataset for real from files in the official binary
layout; only the download itself is replaced by a local folder.
"""

import numpy as np
import pytest

from robust_ssl.data import datasets
from robust_ssl.errors import UserError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_binary(root, per_file=3):
    """<root>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin + batches.meta.txt.

    Each record: one label byte, then 3072 bytes (R, G, B planes of 32x32).

    Returns:
      {file name: (images uint8 [n, 32, 32, 3], labels [n])}.
    """
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "batches.meta.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, per_file).astype(np.uint8)
        images = rng.integers(0, 256, (per_file, 32, 32, 3)).astype(np.uint8)
        planes = images.transpose(0, 3, 1, 2).reshape(per_file, -1)
        (folder / name).write_bytes(np.concatenate([labels[:, None], planes], axis=1).tobytes())
        written[name] = (images, labels)
    return written


def test_cifar10_prepares_for_real_from_a_local_archive(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    source = tmp_path / "download"
    written = write_cifar10_binary(source)
    # Only the download is replaced: tfds' own split generation, example
    # encoding and file writing run as they would after a real download.
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, url: str(source))
    data = datasets.load_tfds("cifar10", data_dir=str(tmp_path / "tfds"))
    assert data.num_train == 15 and data.num_test == 3 and data.class_names == CLASSES
    test_images, test_labels = written["test_batch.bin"]
    # tfds shuffles records by key when it writes them: compare as sets of pairs.
    got = sorted((x.tobytes(), int(y)) for x, y in data.test.as_numpy_iterator())
    assert got == sorted((x.tobytes(), int(y)) for x, y in zip(test_images, test_labels))
    # Prepared once: a second load reads the prepared files, no download.
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", None)
    assert datasets.load_tfds("cifar10", data_dir=str(tmp_path / "tfds")).num_train == 15


def test_a_missing_module_is_named_not_blamed_on_the_network(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    def missing(self, url):
        raise ModuleNotFoundError("No module named 'importlib_resources'")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", missing)
    with pytest.raises(UserError) as info:
        datasets.load_tfds("cifar10", data_dir=str(tmp_path / "tfds"))
    message = str(info.value)
    assert "importlib_resources" in message and "internet" not in message and "\n" not in message


def test_a_typo_gets_one_line_with_the_closest_names():
    with pytest.raises(UserError) as info:
        datasets.load_tfds("cifar101")
    message = str(info.value)
    assert "\n" not in message and "cifar10" in message and len(message) < 200
