"""CIFAR-10-C (Hendrycks & Dietterich, 2019): corruption names and loaders.

Two sources hold the same images:
- tfds `cifar10_corrupted/<corruption>_<severity>` (10,000 test images each);
- the official directory of `.npy` files: `<corruption>.npy` uint8
  [50000, 32, 32, 3] with severities 1..5 in order (10,000 each), plus
  `labels.npy` [50000].

The paper's meta-validation set is the first `per_block` (100) images of every
(corruption, severity) block of the 19 corruptions (9,500 images); robustness
testing must use only the rest. `split_block` returns either part so that the
two can never overlap.
"""

import os

import numpy as np

from robust_ssl.errors import UserError

BENCHMARK_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES = (1, 2, 3, 4, 5)

# tfds spells two corruptions differently from the official files.
TFDS_NAMES = {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}


def tfds_config_name(corruption, severity):
    """tfds builder config of a corruption, e.g. 'frosted_glass_blur_3'."""
    return f"{TFDS_NAMES.get(corruption, corruption)}_{severity}"


# Accepted spellings of corruption groups and names on command lines.
CORRUPTION_GROUPS = {"all": ALL_CORRUPTIONS, "benchmark": BENCHMARK_CORRUPTIONS, "extra": EXTRA_CORRUPTIONS}
_ALIASES = {tfds_name: name for name, tfds_name in TFDS_NAMES.items()}
# The paper's meta-validation head per block (and the authors' code's).
PAPER_PER_BLOCK = 100


def parse_corruptions(text):
    """Corruption names from a command-line string.

    Args:
      text: comma-separated names and/or groups ("all", "benchmark", "extra");
        tfds spellings ("frosted_glass_blur", "elastic") are accepted. A
        sequence of such strings is accepted too.

    Returns:
      A tuple of official names in the CIFAR-10-C order, without duplicates.

    Raises:
      UserError: an unknown name, or nothing selected.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item in CORRUPTION_GROUPS:
            chosen.update(CORRUPTION_GROUPS[item])
            continue
        name = _ALIASES.get(item, item)
        if name not in ALL_CORRUPTIONS:
            raise UserError(
                f"unknown corruption {item!r}; choose from all, benchmark, extra, {', '.join(ALL_CORRUPTIONS)}"
            )
        chosen.add(name)
    if not chosen:
        raise UserError("no corruption selected")
    return tuple(name for name in ALL_CORRUPTIONS if name in chosen)


def parse_severities(text):
    """Severities from a string such as "1,3,5" or "1-5" (or a sequence of ints).

    Returns:
      A sorted tuple of distinct ints in 1..5.

    Raises:
      UserError: a value outside 1..5 or not an integer.
    """
    if isinstance(text, str):
        values = []
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            try:
                if "-" in item:
                    lo, hi = (int(v) for v in item.split("-", 1))
                    values.extend(range(lo, hi + 1))
                else:
                    values.append(int(item))
            except ValueError:
                raise UserError(
                    f"severities must be integers 1..5 like '1,3,5' or '1-5'; got {text!r}"
                ) from None
    else:
        values = [int(v) for v in text]
    if not values or any(v not in SEVERITIES for v in values):
        raise UserError(f"severities must be in 1..5; got {text!r}")
    return tuple(sorted(set(values)))


def load_block(source, corruption, severity, directory=None):
    """One (corruption, severity) block from either source.

    Args:
      source: "npy" (official directory `directory`) or "tfds" (`directory` =
        tfds data_dir or None).
      corruption, severity: the block.
      directory: see `source`.

    Returns:
      (uint8 [n, 32, 32, 3], int32 [n]) in file order.
    """
    if source == "npy":
        return load_npy_block(directory, corruption, severity)
    if source == "tfds":
        return load_tfds_block(corruption, severity, directory)
    raise UserError(f"CIFAR-10-C source must be 'npy' or 'tfds'; got {source!r}")


def split_block(images, labels, part, per_block):
    """Keeps the meta-validation head or the test tail of one block.

    Args:
      images, labels: one (corruption, severity) block, in file order.
      part: "meta" (first `per_block`) or "test" (the rest).
      per_block: size of the meta-validation head (0 = no head).

    Returns:
      (images, labels) of that part.
    """
    if part == "meta":
        return images[:per_block], labels[:per_block]
    if part == "test":
        return images[per_block:], labels[per_block:]
    raise ValueError(f"part must be 'meta' or 'test'; got {part!r}")


def load_npy_block(directory, corruption, severity):
    """One (corruption, severity) block from the official `.npy` directory.

    Returns:
      (uint8 [10000, 32, 32, 3], int32 [10000]).
    """
    path = os.path.join(directory, f"{corruption}.npy")
    labels_path = os.path.join(directory, "labels.npy")
    for p in (path, labels_path):
        if not os.path.exists(p):
            raise UserError(f"CIFAR-10-C file {p} not found (expected the official .npy layout)")
    images = np.load(path, mmap_mode="r")
    labels = np.load(labels_path, mmap_mode="r")
    # The official layout: every file holds the 5 severity blocks of the same
    # N images, in the order of labels.npy; anything else would pair images
    # with the wrong labels and report wrong accuracies.
    if len(images) != len(labels):
        raise UserError(
            f"{path} holds {len(images)} images but {labels_path} {len(labels)} labels; "
            f"a CIFAR-10-C directory needs one label per image (5 severity blocks in each file)"
        )
    if len(images) % len(SEVERITIES) or not len(images):
        raise UserError(f"{path} holds {len(images)} images, not 5 whole severity blocks of the same size")
    per = len(images) // len(SEVERITIES)
    lo, hi = (severity - 1) * per, severity * per
    return np.asarray(images[lo:hi]), np.asarray(labels[lo:hi]).astype(np.int32)


def _open_npy(path):
    """A memory-mapped .npy array; a missing or unreadable file is one UserError line."""
    if not os.path.exists(path):
        raise UserError(f"CIFAR-10-C file {path} not found (expected the official .npy layout)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read CIFAR-10-C file {path}: {str(e).splitlines()[0] or type(e).__name__}"
        ) from None


def _shape_text(shape):
    return "x".join("?" if d is None else str(d) for d in shape)


def check_npy_directory(directory, corruptions, image_shape=None, num_classes=None):
    """Checks the `.npy` files of a CIFAR-10-C directory before anything is scored.

    Every file the evaluation will read is opened (memory-mapped, nothing is
    decoded): `labels.npy` must hold integer labels, one per image, 5 whole
    severity blocks, within the model's classes; each `<corruption>.npy`
    uint8 images [N, H, W, 3] of the model's input size, as many as there are
    labels.

    Args:
      directory: the CIFAR-10-C directory.
      corruptions: the corruption names that will be read.
      image_shape: (H, W, C) the model takes (None, or None entries: not checked).
      num_classes: the model's number of classes (None: not checked).

    Returns:
      The number of images per (corruption, severity) block.

    Raises:
      UserError: the first file that does not fit, named, in one line.
    """
    labels_path = os.path.join(directory, "labels.npy")
    labels = _open_npy(labels_path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{labels_path} holds {labels.dtype} {list(labels.shape)}; CIFAR-10-C labels are one integer per image"
        )
    if not len(labels) or len(labels) % len(SEVERITIES):
        raise UserError(
            f"{labels_path} holds {len(labels)} labels, not 5 whole severity blocks of the same size"
        )
    if num_classes is not None:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise UserError(
                f"{labels_path} holds labels {low}..{high}, but the model has {num_classes} classes "
                f"(0..{num_classes - 1})"
            )
    expected = tuple(image_shape) if image_shape is not None else (None, None, 3)
    for corruption in corruptions:
        path = os.path.join(directory, f"{corruption}.npy")
        images = _open_npy(path)
        shape = tuple(images.shape[1:])
        wrong_shape = images.ndim != 4 or any(e is not None and e != a for e, a in zip(expected, shape))
        if wrong_shape:
            raise UserError(
                f"{path} holds images of {_shape_text(shape)} ({images.dtype} {list(images.shape)}), "
                f"but the model takes {_shape_text(expected)} images"
            )
        if images.dtype != np.uint8:
            raise UserError(f"{path} holds {images.dtype} pixels; CIFAR-10-C files hold uint8 pixels 0..255")
        if len(images) != len(labels):
            raise UserError(
                f"{path} holds {len(images)} images but {labels_path} {len(labels)} labels; "
                f"a CIFAR-10-C directory needs one label per image (5 severity blocks in each file)"
            )
    return len(labels) // len(SEVERITIES)


def load_tfds_block(corruption, severity, data_dir=None):
    """One block from tfds `cifar10_corrupted`, in the file order of tfds."""
    import tensorflow_datasets as tfds

    name = f"cifar10_corrupted/{tfds_config_name(corruption, severity)}"
    try:
        ds = tfds.load(name, split="test", as_supervised=True, data_dir=data_dir, shuffle_files=False)
    except Exception as e:
        raise UserError(
            f"cannot load tfds {name} ({type(e).__name__}); without internet pass an "
            f"official CIFAR-10-C directory with --config.automl.validation.cifar10c_dir"
        ) from e
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.stack(images), np.asarray(labels, np.int32)


def load_part(source, part, per_block, corruptions=ALL_CORRUPTIONS, severities=SEVERITIES, directory=None):
    """Concatenates the meta or test part of many blocks.

    Args:
      source: "npy" (with `directory`) or "tfds" (`directory` = tfds data_dir).
      part: "meta" or "test".
      per_block: meta-validation head size per block.
      corruptions, severities: which blocks.
      directory: see `source`.

    Returns:
      A `tf.data.Dataset` of (uint8 image, int32 label).
    """
    images, labels = [], []
    for corruption in corruptions:
        for severity in severities:
            if source == "npy":
                x, y = load_npy_block(directory, corruption, severity)
            elif source == "tfds":
                x, y = load_tfds_block(corruption, severity, directory)
            else:
                raise UserError(f"CIFAR-10-C source must be 'npy' or 'tfds'; got {source!r}")
            x, y = split_block(x, y, part, per_block)
            images.append(x)
            labels.append(y)
    import tensorflow as tf  # here, so that the names and the numpy loaders import without TensorFlow

    return tf.data.Dataset.from_tensor_slices((np.concatenate(images), np.concatenate(labels)))
