"""Where images come from: tensorflow-datasets, an image folder, or generated.

`load_data(config.data)` returns `DataSplits` with (image uint8, label int)
datasets; the pipelines in `robust_ssl.data.pipeline` do the rest. tfds and
generated sets (32x32) are read into memory; image folders are read into
memory or streamed from disk (`load_folder`).
"""

import dataclasses
import difflib
import os

import numpy as np
import tensorflow as tf

from robust_ssl.data import folders, splits, synthetic
from robust_ssl.errors import UserError

SOURCES = ("tfds", "folder", "synthetic")
# Folder training sets up to this size (uint8 at the image size) are decoded
# into memory; larger ones stream from disk (`load_folder`).
IN_MEMORY_LIMIT_BYTES = 512 << 20


@dataclasses.dataclass
class DataSplits:
    """A training and a test set of (uint8 image, int label) examples."""

    train: tf.data.Dataset
    test: tf.data.Dataset
    num_train: int
    num_test: int
    num_classes: int
    class_names: list
    image_shape: tuple = (32, 32, 3)
    # The training examples for the indexed pipeline: (images, labels) arrays,
    # a `folders.ImageFiles` that streams from disk, or None (read `train`).
    train_source: object = None
    skipped: int = 0  # unreadable images left out (data.skip_bad_images)
    ignored: list = dataclasses.field(default_factory=list)  # files of a folder that are not images


def parse_image_size(size):
    """(height, width) from (H, W), [H, W], "H,W", "HxW" or one int S (= S x S).

    Raises:
      ValueError: anything else, or a side below 8 pixels.
    """
    try:
        if isinstance(size, str):
            size = [int(part) for part in size.replace("x", ",").split(",") if part.strip()]
        elif isinstance(size, int):
            size = [size, size]
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"expected (height, width), e.g. 64,64; got {size!r}") from None
    if min(height, width) < 8:
        raise ValueError(f"images must be at least 8x8 pixels; got {height}x{width}")
    return height, width


def resize_splits(data, image_size):
    """`data` with every image resized to `image_size` (uint8, bilinear; area when shrinking).

    Args:
      data: `DataSplits`.
      image_size: (height, width).

    Returns:
      `DataSplits` (the same object when the size already matches).
    """
    image_size = tuple(image_size)
    if tuple(data.image_shape[:2]) == image_size:
        return data
    method = "area" if min(data.image_shape[:2]) > min(image_size) else "bilinear"

    def resize(image, label):
        resized = tf.image.resize(tf.cast(image, tf.float32), image_size, method=method)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8), label

    return dataclasses.replace(
        data,
        train=data.train.map(resize, num_parallel_calls=tf.data.AUTOTUNE),
        test=data.test.map(resize, num_parallel_calls=tf.data.AUTOTUNE),
        image_shape=(*image_size, data.image_shape[2]),
    )


def _from_arrays(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))


def _no_data_message(name, cause):
    return (
        f"dataset {name!r} is not available ({cause}). Without internet, provide it: "
        f"--config.data.data_dir=<dir holding prepared tfds data>, or "
        f"--config.data.manual_dir=<dir holding the downloaded archive>, or train on a "
        f"folder of images with --config.data.source=folder --config.data.folder=<dir>, "
        f"or use generated data with --config.data.source=synthetic"
    )


def load_tfds(name, data_dir=None, manual_dir=None, download=True, train_split="train", test_split="test"):
    """Loads a 32x32 tfds classification set (cifar10, cifar100, svhn_cropped, …).

    Args:
      name: tfds name.
      data_dir: tfds data directory (None = tfds default).
      manual_dir: directory holding manually downloaded archives.
      download: allow tfds to download and prepare the data.
      train_split, test_split: split names.

    Returns:
      `DataSplits`, with the class count and names taken from the dataset info.

    Raises:
      UserError: if the data is neither prepared nor downloadable.
    """
    import tensorflow_datasets as tfds

    if name not in tfds.list_builders():
        close = difflib.get_close_matches(name, tfds.list_builders(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (tfds.list_builders() lists them)"
        raise UserError(f"unknown tfds dataset {name!r}{hint}")
    builder = tfds.builder(name, data_dir=data_dir or None)
    if not builder.is_prepared():
        if not download and not manual_dir:
            raise UserError(_no_data_message(name, "not prepared and downloads are off"))
        try:
            config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
            builder.download_and_prepare(download_config=config)
        except ImportError as e:
            # A broken install, not the network: say which module is missing.
            raise UserError(
                f"tensorflow-datasets cannot prepare {name!r}: {type(e).__name__}: {e} "
                f"(reinstall robust_ssl's dependencies: pip install -e .)"
            ) from e
        except Exception as e:
            raise UserError(
                _no_data_message(name, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            ) from e
    info = builder.info
    label = info.features["label"]
    train = builder.as_dataset(split=train_split, as_supervised=True, shuffle_files=False)
    test = builder.as_dataset(split=test_split, as_supervised=True, shuffle_files=False)
    shape = tuple(info.features["image"].shape)
    return DataSplits(
        train=train,
        test=test,
        num_train=_num_examples(info, train_split, train),
        num_test=_num_examples(info, test_split, test),
        num_classes=int(label.num_classes),
        class_names=list(label.names),
        image_shape=shape,
    )


def _num_examples(info, split, ds):
    """Split size from the dataset info, or by counting where the info has none."""
    try:
        return int(info.splits[split].num_examples)
    except (KeyError, ValueError):  # e.g. tfds.testing.mock_data
        return int(ds.reduce(0, lambda count, _: count + 1))


def load_folder(folder, image_size=(32, 32), test_fraction=0.1, seed=0, in_memory="auto", skip_bad=False):
    """Loads an image folder in `keras.utils.image_dataset_from_directory` layout.

    With `train/` and `test/` sub-folders they are the splits; otherwise one
    folder of class sub-folders is split, `test_fraction` of it held out
    (stratified by class, drawn by `seed`). The folder is scanned and checked
    once (`folders.scan_folder`).

    Memory rule: the training images are decoded into memory (fastest: once)
    when they take at most `IN_MEMORY_LIMIT_BYTES` as uint8 at `image_size`,
    else streamed: each training batch is read and decoded from disk by the
    input pipeline, so memory stays flat whatever the number of images.
    `in_memory=True`/`False` forces one or the other.

    Args:
      folder: root folder.
      image_size: (H, W) images are resized to.
      test_fraction: held-out fraction when there is no test/ folder.
      seed: seed of that split.
      in_memory: "auto", True or False (see above).
      skip_bad: leave unreadable images out (counted) instead of failing.

    Returns:
      `DataSplits` (its `train_source` is arrays or `folders.ImageFiles`).
    """
    if not folder or not os.path.isdir(folder):
        raise UserError(f"image folder {folder!r} does not exist")
    train_dir, test_dir = os.path.join(folder, "train"), os.path.join(folder, "test")
    if os.path.isdir(train_dir):
        train = folders.scan_folder(train_dir, image_size, skip_bad=skip_bad)
        if os.path.isdir(test_dir):
            test = folders.scan_folder(test_dir, image_size, class_names=train.class_names, skip_bad=skip_bad)
        else:
            train, test = _split(train, test_fraction, seed)
    else:
        train, test = _split(folders.scan_folder(folder, image_size, skip_bad=skip_bad), test_fraction, seed)
    height, width = image_size
    if in_memory == "auto":
        in_memory = len(train) * height * width * 3 <= IN_MEMORY_LIMIT_BYTES
    source = train.to_arrays() if in_memory else train
    return DataSplits(
        train=_from_arrays(*source) if in_memory else train.dataset(),
        test=test.dataset(),
        num_train=len(train),
        num_test=len(test),
        num_classes=len(train.class_names),
        class_names=train.class_names,
        image_shape=(*image_size, 3),
        train_source=source,
        skipped=len(train.skipped) + len(test.skipped),
        ignored=train.ignored + test.ignored,
    )


def _split(files, fraction, seed):
    """A seeded test split stratified by class (the folder is read class by class)."""
    n_test = max(1, int(round(len(files) * fraction)))
    train, test = splits.stratified_split(files.labels, n_test, seed)
    train = files.take(train)
    # What the scan left out is counted once, with the training part.
    train.skipped, train.ignored = list(files.skipped), list(files.ignored)
    return train, files.take(test)


def load_synthetic(num_train=2000, num_test=500, num_classes=10, seed=0, image_size=32):
    """Generated shapes data (see `robust_ssl.data.synthetic`), fully offline."""
    x_train, y_train = synthetic.generate(
        num_train, seed=seed, num_classes=num_classes, image_size=image_size
    )
    x_test, y_test = synthetic.generate(
        num_test, seed=seed + 10_000, num_classes=num_classes, image_size=image_size
    )
    return DataSplits(
        train=_from_arrays(x_train, y_train),
        test=_from_arrays(x_test, y_test),
        num_train=num_train,
        num_test=num_test,
        num_classes=num_classes,
        class_names=list(synthetic.CLASS_NAMES[:num_classes]),
        image_shape=(image_size, image_size, 3),
    )


def describe(data, data_config, names_shown=5):
    """One line on the data a run found, e.g.

    `found 2,000 training and 200 test images of 32x32 in 10 classes (airplane, …) in folder images/`,
    with the files of a folder that are not images and the unreadable images
    left out, counted.

    Args:
      data: the `DataSplits` loaded.
      data_config: the `config.data` it was loaded with.
      names_shown: class names named before "…".
    """
    source = data_config.get("source")
    where = {"folder": f"folder {data_config.get('folder')}", "tfds": f"tfds {data_config.get('name')}"}
    names = list(data.class_names or [])
    shown = ", ".join(map(str, names[:names_shown])) + (", …" if len(names) > names_shown else "")
    line = (
        f"found {data.num_train:,} training and {data.num_test:,} test images of "
        f"{data.image_shape[0]}x{data.image_shape[1]} in {data.num_classes} classes"
        + (f" ({shown})" if shown else "")
        + f" in {where.get(source, source)}"
    )
    if data.skipped:
        line += f"; {data.skipped} unreadable image(s) left out (data.skip_bad_images)"
    if data.ignored:
        line += "; " + folders.ignored_text(data.ignored)
    return line


def load_data(data_config):
    """Loads the data a config asks for, at its `image_size`.

    Args:
      data_config: the `config.data` ConfigDict (source, name, data_dir, …).

    Returns:
      `DataSplits`.
    """
    source = data_config.source
    image_size = parse_image_size(data_config.get("image_size", (32, 32)))
    if source == "tfds":
        data = load_tfds(
            data_config.name,
            data_dir=data_config.get("data_dir") or None,
            manual_dir=data_config.get("manual_dir") or None,
            download=data_config.get("download", True),
        )
        return resize_splits(data, image_size)
    if source == "folder":
        return load_folder(
            data_config.folder,
            image_size=image_size,
            test_fraction=data_config.get("test_fraction", 0.1),
            in_memory=data_config.get("in_memory", "auto"),
            skip_bad=data_config.get("skip_bad_images", False),
        )
    if source == "synthetic":
        square = image_size[0] == image_size[1]
        data = load_synthetic(
            data_config.get("num_train", 2000),
            data_config.get("num_test", 500),
            data_config.get("num_classes", 10),
            data_config.get("seed", 0),
            image_size=image_size[0] if square else 32,
        )
        return resize_splits(data, image_size)
    raise UserError(f"unknown data source {source!r}; choose from {', '.join(SOURCES)}")
