"""Classifying image files with a trained model: what `robust-ssl predict` does.

`predict_files(paths, workdir=…)` (or `saved_model=…`) reads each image file
as training reads a folder's images (decoded, 3 channels, resized bilinearly
to the model's image size), runs the classifier and returns, per file, the
`top_k` classes with their probabilities. The model is a run's (its
model.keras, else its newest checkpoint, or a .keras file) or a SavedModel
written by `robust-ssl export`.
"""

import dataclasses
import os

import numpy as np

from robust_ssl.data import folders
from robust_ssl.errors import UserError


@dataclasses.dataclass
class Classifier:
    """A model as a function of uint8 images.

    Attributes:
      predict: uint8 [N, H, W, 3] -> float [N, C] class probabilities.
      class_names: the C class names.
      image_shape: (H, W, 3) the model takes.
    """

    predict: object
    class_names: list
    image_shape: tuple


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_classifier(workdir=None, saved_model=None, batch_size=256):
    """A `Classifier` of a run (or .keras file) or of an exported SavedModel.

    Args:
      workdir: a run's directory or a .keras file.
      saved_model: an export directory (`<dir>` with numbered versions, or one version).
      batch_size: images per forward pass.

    Raises:
      UserError: neither or both given, or no model there.
    """
    if bool(workdir) == bool(saved_model):
        raise UserError("give one of --workdir=<run or .keras file> and --saved_model=<export dir>")
    if workdir:
        from robust_ssl import rundir

        model = rundir.load_model(workdir)
        names = list(model.class_names or [str(i) for i in range(model.num_classes)])

        def forward(x):
            return _softmax(np.asarray(model(x, training=False), np.float64))

        shape = tuple(model.image_shape)
    else:
        from robust_ssl.robustness import evaluation

        call = evaluation.load_saved_model(saved_model)
        shape = call.image_shape
        if shape is None or None in shape:
            raise UserError(f"the SavedModel in {saved_model} does not say its image size")
        labels = getattr(call.loaded, "signatures", {}).get("labels")
        names = [b.decode() for b in labels()["labels"].numpy()] if labels is not None else None

        def forward(x):
            return _softmax(np.asarray(call(x), np.float64))

    def predict(images):
        parts = [
            forward(images[i : i + batch_size].astype(np.float32) / 255.0)
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(names or [])))

    if not workdir and names is None:
        names = [str(i) for i in range(predict(np.zeros((1, *shape), np.uint8)).shape[1])]
    return Classifier(predict, names, tuple(shape))


def image_paths(arguments):
    """The image files named on the command line: files as given, folders' images sorted.

    Raises:
      UserError: nothing given, a path that does not exist, or a folder without images.
    """
    if not arguments:
        raise UserError("no images given: robust-ssl predict --workdir=<run> IMAGE [IMAGE|FOLDER ...]")
    out = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = folders.image_files(argument)
            if not found:
                raise UserError(f"folder {argument} holds no images ({', '.join(folders.IMAGE_EXTENSIONS)})")
            out += found
        elif os.path.isfile(argument):
            out.append(argument)
        else:
            raise UserError(f"image file {argument} not found")
    return out


def read_images(paths, image_size):
    """uint8 [N, H, W, 3] of image files, decoded and resized as training reads a folder.

    Raises:
      UserError: files that are not readable images, the first three named, with a count.
    """
    bad = [p for p in paths if not folders.is_readable(p)]
    if bad:
        shown = ", ".join(bad[: folders.NAMED_BAD_IMAGES])
        more = (
            f" and {len(bad) - folders.NAMED_BAD_IMAGES} more" if len(bad) > folders.NAMED_BAD_IMAGES else ""
        )
        raise UserError(f"{len(bad)} file(s) are not readable images: {shown}{more}")
    files = folders.ImageFiles(np.asarray(paths), np.zeros(len(paths), np.int32), [], tuple(image_size))
    import tensorflow as tf

    try:
        return files.to_arrays()[0]
    except tf.errors.InvalidArgumentError as e:
        raise UserError(f"cannot decode an image: {e.message.splitlines()[0]}") from None


def predict_files(paths, workdir=None, saved_model=None, top_k=1, batch_size=256):
    """The top classes of each image file.

    Args:
      paths: image files.
      workdir, saved_model, batch_size: see `load_classifier`.
      top_k: classes per file (at most the model's number of classes).

    Returns:
      [(path, [(class name, probability), …])], in the order of `paths`.

    Raises:
      UserError: see `load_classifier`, `read_images`; top_k below 1.
    """
    if top_k < 1:
        raise UserError(f"--top_k must be >= 1; got {top_k}")
    classifier = load_classifier(workdir, saved_model, batch_size)
    probabilities = classifier.predict(read_images(paths, classifier.image_shape[:2]))
    k = min(top_k, probabilities.shape[1])
    rows = []
    for path, p in zip(paths, probabilities):
        best = np.argsort(-p, kind="stable")[:k]
        rows.append((path, [(classifier.class_names[i], float(p[i])) for i in best]))
    return rows


def format_row(path, top):
    """One output line: path, then class name and probability for each of the top classes, tab-separated."""
    return "\t".join([path, *(f"{name}\t{probability:.4f}" for name, probability in top)])
