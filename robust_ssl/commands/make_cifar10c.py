r"""Builds a CIFAR-10-C-style corrupted test set from any 32x32 image data.

  robust-ssl make-cifar10c --tfds=cifar100 --output=data/CIFAR-100-C
  robust-ssl make-cifar10c --folder=data/my-images --output=/tmp/my-images-C

Writes the official layout: <corruption>.npy (uint8 [5*N, 32, 32, 3], severities
1..5 stacked) and labels.npy, readable by `--cifar10c=<output>` of
`robust-ssl evaluate`. The corruptions are robust_ssl.data.corruptions (the CIFAR
parameters of Hendrycks & Dietterich; see docs/robustness.md for differences).
Images are written in a seeded random order (a class-stratified sample with
--max_images), so that no prefix of a block is one class.
"""

from absl import flags

from robust_ssl import cli

_FOLDER = flags.DEFINE_string(
    "folder", None, "Image folder, <folder>/<class>/*.jpg (a test/ sub-folder, if present, is used)."
)
_TFDS = flags.DEFINE_string("tfds", None, "tfds dataset name, e.g. cifar100.")
_SPLIT = flags.DEFINE_string("split", "test", "tfds split.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir.")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory.")
_CORRUPTIONS = flags.DEFINE_string("corruptions", "all", "Comma list of names or all|benchmark|extra.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the corruptions.")
_MAX_IMAGES = flags.DEFINE_integer(
    "max_images", 0, "Use only N images, a class-stratified sample drawn by --seed (0 = all)."
)
flags.mark_flag_as_required("output")


def main(argv):
    from robust_ssl.data import cifar10c, corruptions, splits

    with cli.user_errors():
        cli.no_arguments(argv)
        images, labels = corruptions.load_clean_images(
            folder=_FOLDER.value, tfds_name=_TFDS.value, split=_SPLIT.value, data_dir=_DATA_DIR.value
        )
        # A seeded, class-stratified order: folders are read class by class, and
        # the first images of each block are what a meta-validation head takes.
        order = splits.stratified_shuffle(labels, _MAX_IMAGES.value, seed=_SEED.value)
        images, labels = images[order], labels[order]
        names = cifar10c.parse_corruptions(_CORRUPTIONS.value)
        print(f"{len(images)} clean images -> {len(names)} corruptions x 5 severities in {_OUTPUT.value}")
        paths = corruptions.write_corrupted_set(images, labels, _OUTPUT.value, names, seed=_SEED.value)
    print("wrote:")
    for path in paths:
        print(f"  {path}")
