"""What a robustness evaluation scores: the model as a predictor, and the CIFAR-10-C images.

The model: `make_predictor` wraps a Keras model or a callable as uint8 images
-> class probabilities; `load_saved_model` reads a TensorFlow SavedModel (or
TF Serving's versioned layout) as such a callable; `model_input` tells the
image shape and classes a model takes; `check_inputs` checks, before anything
is scored, that the images fit it.

The images: a source is real CIFAR-10-C from tfds (`TFDS`), the official
`.npy` directory, or corruptions generated from the clean test set
(`GENERATE`, `robust_ssl.data.corruptions`); `source_kind` tells which,
`load_real_block` reads one (corruption, severity) block, `corrupt` generates
one, and `even_subset` picks the images of a cell capped by --max_images.
"""

import os

import numpy as np

from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError

GENERATE = "generate"
TFDS = "tfds"
# The kind of a directory of the official .npy files (`source_kind`).
NPY = "npy"


def softmax(logits):
    """Row-wise softmax of logits [N, C], computed stably (the row maximum subtracted first)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _looks_like_probabilities(values):
    return (
        values.size > 0
        and values.min() >= 0
        and values.max() <= 1
        and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
    )


def make_predictor(model, batch_size=500, outputs="auto"):
    """Wraps a model as a function uint8 images -> class probabilities.

    Args:
      model: a Keras model (images in [0, 1] -> logits, as `RobustSSLModel`),
        or any callable taking float32 [N, H, W, 3] in [0, 1].
      batch_size: images per forward pass.
      outputs: "logits", "probabilities" or "auto" (probabilities when every
        row of the first batch is a distribution, else logits).

    Returns:
      predict(images uint8 [N, H, W, 3]) -> float64 [N, C] probabilities.
    """
    if outputs not in ("auto", "logits", "probabilities"):
        raise ValueError(f"outputs must be auto, logits or probabilities; got {outputs!r}")
    import keras

    if isinstance(model, keras.Model):
        forward = model.predict_on_batch
    else:
        forward = model
    kind = {"value": None if outputs == "auto" else outputs}

    def predict(images):
        parts = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].astype(np.float32) / 255.0
            y = forward(x)
            if isinstance(y, dict):
                y = y.get("logits", y.get("probabilities", next(iter(y.values()))))
            y = np.asarray(y, np.float64)
            if kind["value"] is None:
                kind["value"] = "probabilities" if _looks_like_probabilities(y) else "logits"
            parts.append(y if kind["value"] == "probabilities" else softmax(y))
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    predict.is_predictor = True
    predict.image_shape, predict.num_classes = model_input(model)
    return predict


def model_input(model):
    """(image shape (H, W, C), number of classes) a model takes and gives; None where unknown.

    Args:
      model: a `RobustSSLModel`, another Keras model, or a callable or
        predictor with `image_shape` / `num_classes` attributes
        (`load_saved_model`, `make_predictor`).
    """
    shape = getattr(model, "image_shape", None)
    classes = getattr(model, "num_classes", None)
    try:
        if shape is None and isinstance(getattr(model, "input_shape", None), tuple):
            shape = tuple(model.input_shape[1:]) if len(model.input_shape) == 4 else None
        if classes is None and isinstance(getattr(model, "output_shape", None), tuple):
            classes = model.output_shape[-1]
    except (AttributeError, ValueError):  # a model that was never built
        pass
    return (tuple(shape) if shape is not None else None), (int(classes) if classes else None)


def _check_fits(what, shape, expected):
    """UserError (one line naming `what`) unless images of `shape` fit a model taking `expected`."""
    if expected is None:
        return
    if len(shape) != len(expected) or any(e is not None and e != a for e, a in zip(expected, shape)):
        size = "x".join("?" if d is None else str(d) for d in expected)
        raise UserError(f"{what} are {'x'.join(map(str, shape))} images, but the model takes {size} images")


def check_inputs(model, kind, source, corruptions, clean=None):
    """Checks, before anything is scored, that the images and labels fit the model.

    Official `.npy` files: every file's shape, dtype and count
    (`cifar10c.check_npy_directory`); tfds CIFAR-10-C: 32x32x3 images; the
    clean test set (and so generated corruptions): its image size and labels.

    Raises:
      UserError: the first set or file that does not fit, named, in one line.
    """
    shape, classes = model_input(model)
    if kind == NPY:
        cifar10c.check_npy_directory(source, corruptions, shape, classes)
    elif kind == TFDS:
        _check_fits("tfds cifar10_corrupted images", (32, 32, 3), shape)
    if clean is not None:
        images, labels = clean
        _check_fits("the clean test images", tuple(np.shape(images)[1:]), shape)
        if classes is not None and len(labels) and (np.min(labels) < 0 or np.max(labels) >= classes):
            raise UserError(
                f"the clean test labels reach {int(np.max(labels))}, but the model has {classes} classes"
            )


def load_saved_model(path):
    """A callable float images [0, 1] -> logits from a TensorFlow SavedModel.

    Accepts a SavedModel directory or TF Serving's versioned layout
    (<dir>/<version>/saved_model.pb, newest version taken). Uses the signature
    `serving_float` (float32 in [0, 1]) when present, else `serving_default`
    (uint8 inputs are fed 0..255), else the Keras export endpoint `serve`.

    Args:
      path: directory.

    Returns:
      A callable suitable for `make_predictor` (its outputs are taken as
      "logits" when the signature has them, else auto-detected).

    Raises:
      UserError: no SavedModel there.
    """
    import tensorflow as tf

    if not os.path.isdir(path):
        raise UserError(f"SavedModel directory {path} does not exist")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
        for version in versions:
            candidate = os.path.join(path, str(version))
            if os.path.exists(os.path.join(candidate, "saved_model.pb")):
                path = candidate
                break
        else:
            raise UserError(f"{path} holds no saved_model.pb (nor a versioned <dir>/<n>/saved_model.pb)")
    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, "signatures", {})
    function = None
    for name in ("serving_float", "serving_default"):
        if name in signatures:
            function = signatures[name]
            break
    if function is None and hasattr(loaded, "serve"):
        function = loaded.serve
    if function is None:
        raise UserError(f"the SavedModel in {path} has no serving_default signature nor a serve endpoint")
    specs = function.structured_input_signature[1] if hasattr(function, "structured_input_signature") else {}
    if specs:
        (input_name, spec), *_ = specs.items()
    else:
        input_name, spec = None, None
    wants_uint8 = spec is not None and spec.dtype == tf.uint8

    def call(images01):
        x = np.clip(np.round(images01 * 255.0), 0, 255).astype(np.uint8) if wants_uint8 else images01
        try:
            out = function(**{input_name: tf.constant(x)}) if input_name else function(tf.constant(x))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            detail = str(getattr(e, "message", e)).strip().splitlines()
            raise UserError(
                f"the SavedModel in {path} refused a batch of {list(x.shape)} {x.dtype} images: "
                f"{detail[0] if detail else type(e).__name__}"
            ) from None
        if isinstance(out, dict):
            out = out["logits"] if "logits" in out else out.get("probabilities", next(iter(out.values())))
        return np.asarray(out)

    call.loaded = loaded  # keep the trackable object (and its variables) alive
    call.image_shape = tuple(spec.shape[1:]) if spec is not None and spec.shape.rank == 4 else None
    outputs = getattr(function, "structured_outputs", None)
    logits = outputs.get("logits") if isinstance(outputs, dict) else None
    call.num_classes = logits.shape[-1] if logits is not None and logits.shape.rank == 2 else None
    return call


def source_kind(source):
    """What kind of CIFAR-10-C source `source` names.

    Args:
      source: "tfds", "generate" or a directory of the official `.npy` files.

    Returns:
      TFDS, GENERATE or NPY.

    Raises:
      UserError: anything else (one line naming the --cifar10c choices).
    """
    if source in (GENERATE, TFDS):
        return source
    if isinstance(source, str) and os.path.isdir(source):
        return NPY
    raise UserError(
        f"--cifar10c must be 'tfds', 'generate' or an existing directory of CIFAR-10-C .npy files; got {source!r}"
    )


def load_real_block(kind, source, corruption, severity, tfds_data_dir):
    """One block of real CIFAR-10-C: (images uint8 [N, 32, 32, 3], labels [N]).

    Args:
      kind: NPY or TFDS (`source_kind`).
      source: the `.npy` directory (NPY).
      corruption, severity: the cell.
      tfds_data_dir: tfds data directory (TFDS).

    Raises:
      UserError: the block cannot be read (offline tfds: one line naming the
        other sources).
    """
    if kind == NPY:
        return cifar10c.load_block("npy", corruption, severity, source)
    try:
        return cifar10c.load_block("tfds", corruption, severity, tfds_data_dir)
    except UserError:
        raise UserError(
            f"cannot load tfds cifar10_corrupted/{cifar10c.tfds_config_name(corruption, severity)}; "
            f"offline, pass --cifar10c=<directory of the official .npy files> or --cifar10c=generate"
        ) from None


def even_subset(n, max_images):
    """Indices of an evenly spaced subset of `max_images` of n (all if None/0/>= n).

    Evenly spaced rather than the first ones: folder data sets are read class by
    class, so a prefix would hold one class only.
    """
    if not max_images or max_images >= n:
        return np.arange(n)
    return np.floor(np.arange(max_images) * (n / max_images)).astype(int)


def corrupt(images, corruption, severity, seed):
    """Generated CIFAR-10-C images of one cell (`robust_ssl.data.corruptions.corrupt`).

    Args:
      images: clean uint8 [N, 32, 32, 3] images.
      corruption, severity: the cell.
      seed: seed of the corruption's randomness.

    Returns:
      The corrupted uint8 images.

    Raises:
      UserError: images that are not 32x32 RGB.
    """
    from robust_ssl.data import corruptions as corruptions_lib

    if images.shape[1:] != corruptions_lib.IMAGE_SHAPE:
        raise UserError(
            f"--cifar10c=generate needs 32x32 RGB test images (the CIFAR-10-C parameters); got {images.shape[1:]}"
        )
    return corruptions_lib.corrupt(images, corruption, severity, seed)
