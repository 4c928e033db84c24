"""Image folders: scanned once, checked, then read into memory or streamed from disk.

Layout (keras' `image_dataset_from_directory`): `<folder>/<class>/<image>`,
classes in alphabetical order, images with the extensions below at any depth
under their class folder, in sorted order.

`scan_folder` lists the files and checks every image once (PIL's `verify`,
which reads the header and the structure without decoding the pixels): an
unreadable image is named, with a count of the others, in one error line, or
skipped with a count (`skip_bad=True`); an empty class folder is refused (it
would silently add a class without examples).

`ImageFiles` is a scanned folder: the paths and labels, and TensorFlow ops
that decode and resize a batch of files in `tf.data` — the training stream
decodes each batch from disk, so memory stays flat whatever the number of
images. `read_folder` decodes a whole folder into memory instead, which is
faster where it fits (see `robust_ssl.data.datasets.load_folder` for the rule).
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from robust_ssl.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Bad images named in the error line before "and N more".
NAMED_BAD_IMAGES = 3


@dataclasses.dataclass
class ImageFiles:
    """Paths and labels of a folder's images, decoded on demand at `image_size`.

    Attributes:
      paths: str [N] file paths.
      labels: int32 [N] class indices.
      class_names: class names by index.
      image_size: (H, W) every image is resized to (bilinear, as keras' reader).
      skipped: paths of unreadable images left out (with `skip_bad`).
      ignored: paths of files that are not images (by their extension) found
        where images are read: in the class folders and beside them. Hidden
        files (a leading dot, e.g. .DS_Store) are not counted.
    """

    paths: np.ndarray
    labels: np.ndarray
    class_names: list
    image_size: tuple
    skipped: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.paths)

    def take(self, index):
        """The files at `index` (an int array), as another `ImageFiles`."""
        index = np.asarray(index, np.int64)
        return dataclasses.replace(
            self, paths=self.paths[index], labels=self.labels[index], skipped=[], ignored=[]
        )

    def decode_one(self, path):
        """uint8 [H, W, 3] image of one file path (a string tensor), in TF."""
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), self.image_size, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

    def decode(self, paths):
        """uint8 [B, H, W, 3] images of a batch of file paths (a string tensor), in TF."""
        spec = tf.TensorSpec([*self.image_size, 3], tf.uint8)
        return tf.map_fn(self.decode_one, paths, fn_output_signature=spec)

    def dataset(self):
        """(uint8 image, int32 label) examples, decoded as they are read."""
        ds = tf.data.Dataset.from_tensor_slices((self.paths, self.labels))
        return ds.map(lambda p, y: (self.decode_one(p), y), num_parallel_calls=tf.data.AUTOTUNE)

    def to_arrays(self):
        """Every image decoded into memory: (uint8 [N, H, W, 3], int32 [N])."""
        # The streamed pipeline's parallel, in-order map: the same `decode_one`
        # per file (so the same pixels), on every core instead of one by one.
        batches = tf.data.Dataset.from_tensor_slices(self.paths).map(
            self.decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        chunks = [chunk.numpy() for chunk in batches.batch(256).prefetch(2)]
        height, width = self.image_size
        images = np.concatenate(chunks) if chunks else np.zeros((0, height, width, 3), np.uint8)
        return images, self.labels


def image_files(folder, ignored=None):
    """The image files under `folder`, sorted; other (not hidden) files are appended to `ignored`."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                out.append(os.path.join(root, f))
            elif ignored is not None and not f.startswith("."):
                ignored.append(os.path.join(root, f))
    return out


def ignored_text(paths, named=NAMED_BAD_IMAGES):
    """`N file(s) that are not images (…) ignored: a, b, c and M more`, or "" without any."""
    if not paths:
        return ""
    shown = ", ".join(os.path.basename(p) for p in paths[:named])
    more = f" and {len(paths) - named} more" if len(paths) > named else ""
    return f"{len(paths)} file(s) that are not {'/'.join(IMAGE_EXTENSIONS)} images ignored: {shown}{more}"


def is_readable(path):
    """Whether PIL reads an image file's header and structure (`verify`, no decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many kinds for a broken file
        return False


def scan_folder(path, image_size, class_names=None, labels="inferred", skip_bad=False):
    """Lists and checks the images of a folder (see the module docstring).

    Args:
      path: the folder.
      image_size: (H, W) the images will be resized to.
      class_names: class sub-folders to read, in label order (default: all, alphabetically).
      labels: "inferred" (<path>/<class>/<image>) or None (every image under
        `path`, label 0).
      skip_bad: leave unreadable images out (counted in `skipped`) instead of failing.

    Returns:
      `ImageFiles`.

    Raises:
      UserError: no folder, no image, an empty class folder, or unreadable
        images (without `skip_bad`), in one line.
    """
    if not path or not os.path.isdir(path):
        raise UserError(f"image folder {path!r} does not exist")
    ignored = []
    if labels:
        found = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        names = list(class_names) if class_names is not None else found
        missing = [n for n in names if n not in found]
        if missing:
            raise UserError(f"{path} has no class folder {', '.join(missing)} (it has {', '.join(found)})")
        ignored += [
            os.path.join(path, f)
            for f in sorted(os.listdir(path))
            if os.path.isfile(os.path.join(path, f)) and not f.startswith(".")
        ]  # files beside the class folders
        per_class = [image_files(os.path.join(path, n), ignored) for n in names]
        empty = [n for n, files in zip(names, per_class) if not files]
        if names and len(empty) == len(names):
            raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}")
        if empty:
            raise UserError(
                f"class folder(s) {', '.join(empty)} under {path} hold no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); remove them or add images"
            )
        paths = [p for files in per_class for p in files]
        targets = [c for c, files in enumerate(per_class) for _ in files]
    else:
        names = []
        paths = image_files(path, ignored)
        targets = [0] * len(paths)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}")
    readable = [is_readable(p) for p in paths]
    bad = [p for p, ok in zip(paths, readable) if not ok]
    if bad and not skip_bad:
        shown = ", ".join(bad[:NAMED_BAD_IMAGES])
        more = f" and {len(bad) - NAMED_BAD_IMAGES} more" if len(bad) > NAMED_BAD_IMAGES else ""
        raise UserError(
            f"{len(bad)} unreadable image(s) under {path}: {shown}{more}; "
            f"remove them or set data.skip_bad_images=True"
        )
    keep = [i for i, ok in enumerate(readable) if ok]
    return ImageFiles(
        paths=np.asarray([paths[i] for i in keep]),
        labels=np.asarray([targets[i] for i in keep], np.int32),
        class_names=names,
        image_size=tuple(image_size),
        skipped=bad,
        ignored=ignored,
    )


def read_folder(path, image_size, class_names=None, labels="inferred", skip_bad=False):
    """Reads the images of a folder into memory, resized to `image_size` (bilinear).

    The one image-folder reader of the package (training data, `robust-ssl
    make-cifar10c`, `robust-ssl show-tasks`).

    Args:
      path, image_size, class_names, labels, skip_bad: see `scan_folder`.

    Returns:
      (uint8 [N, H, W, 3] images, int32 [N] labels, class names; [] with labels=None).

    Raises:
      UserError: see `scan_folder`; also an image TensorFlow cannot decode, named.
    """
    files = scan_folder(path, image_size, class_names, labels, skip_bad)
    try:
        images, targets = files.to_arrays()
    except tf.errors.InvalidArgumentError as e:
        raise UserError(f"cannot decode an image under {path}: {e.message.splitlines()[0]}") from None
    return images, targets, files.class_names
