"""The leak guard: which test images a run's AutoML meta loss saw, and so must not be scored.

A run whose AutoML meta loss validated on the first P images of every
CIFAR-10-C block (meta_validation.json with source "cifar10c") is scored on
the rest of each block only; asking to include those images raises a
UserError. As every block corrupts the CIFAR-10 test set in order, the first P
clean CIFAR-10 test images are left out too (of the clean accuracy and of
generated corruptions) when the run's clean test set is tfds cifar10. Without
a meta_validation.json the paper's P = 100 is assumed. A meta loss on training
images (a hold-out) excludes nothing.
"""

import dataclasses

from robust_ssl import config_utils
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError
from robust_ssl.robustness.loading import GENERATE

# meta_validation.json sources that draw on the training set only.
TRAINING_SOURCES = config_utils.HOLDOUT_SOURCES


@dataclasses.dataclass
class Exclusion:
    """What is left out of scoring so that no scored image was seen by the meta loss.

    Attributes:
      per_block: images dropped at the head of every real CIFAR-10-C block.
      clean_skip: leading clean test images dropped (from the clean accuracy
        and, with source="generate", from the images that get corrupted).
      note: one line saying why, for the report.
    """

    per_block: int = 0
    clean_skip: int = 0
    note: str = ""


def is_cifar10_test(data_config):
    """Whether a run's `config.data` is tfds CIFAR-10, whose test set underlies every CIFAR-10-C block."""
    return bool(data_config) and data_config.get("source") == "tfds" and data_config.get("name") == "cifar10"


def leak_guard(record, source, include_meta_images=False, data_config=None):
    """Decides which images must not be scored, given what the meta loss saw.

    Args:
      record: the run's meta_validation.json dict, or None when unknown.
      source: "generate", "tfds" or a CIFAR-10-C directory.
      include_meta_images: the user asks to score the meta-validation images.
      data_config: the run's `config.data` (dict-like) or None; tells whether
        the clean test set is CIFAR-10's, whose first images underlie the
        first images of every CIFAR-10-C block.

    Returns:
      An `Exclusion`.

    Raises:
      UserError: the user asks to include images the meta loss used, or the
        record names a source this function does not know.
    """
    real = source != GENERATE
    note = ""
    if record is None:
        if include_meta_images:
            return Exclusion(0, 0, "no meta_validation.json; all images scored (--include_meta_images)")
        record = {"source": "cifar10c", "per_block": cifar10c.PAPER_PER_BLOCK}
        note = "no meta_validation.json: assumed the paper's meta-validation images and left them out; "
    kind = record.get("source")
    if kind is None or kind in TRAINING_SOURCES or str(kind).endswith("holdout"):
        what = "no meta-validation" if kind is None else f"meta-validation on training images ({kind})"
        note = f"{what}: no test image is excluded"
        if record.get("corruptions") and kind is not None:
            # Not a leak of images, but these corruption types were not unseen.
            note += f"; the meta loss saw {', '.join(record['corruptions'])}"
        return Exclusion(0, 0, note)
    if kind != "cifar10c":
        raise UserError(
            f"meta_validation.json names source {kind!r}, unknown to the evaluation; "
            f"it cannot tell which test images the meta loss saw"
        )
    per_block = int(record.get("per_block", cifar10c.PAPER_PER_BLOCK))
    clean_skip = per_block if is_cifar10_test(data_config) else 0
    used = per_block if real else clean_skip
    if include_meta_images and used > 0:
        what = (
            f"the first {per_block} images of every CIFAR-10-C block"
            if real
            else f"corruptions of the first {clean_skip} CIFAR-10 test images"
        )
        raise UserError(
            f"refusing to score {what}: the run's AutoML meta-validation used them "
            f"(meta_validation.json: source cifar10c, per_block {per_block}); drop --include_meta_images"
        )
    if real:
        note += f"left out the first {per_block} images of every block (meta-validation)"
    else:
        note += f"left out the first {clean_skip} clean test images (their CIFAR-10-C copies were meta-validation)"
    if clean_skip and real:
        note += f" and the first {clean_skip} clean test images"
    return Exclusion(per_block if real else 0, clean_skip, note)


def assumption(run_dir, source, include_meta_images, config):
    """One line on what is assumed when a model has no meta_validation.json beside it.

    Args:
      run_dir: the run directory looked in, or None.
      source: "generate", "tfds" or a CIFAR-10-C directory.
      include_meta_images: the user asks to score every image.
      config: the run's config (ConfigDict) or None.

    Returns:
      The note (no trailing period).
    """
    where = f"in {run_dir}" if run_dir else "beside the model"
    if include_meta_images:
        return f"no meta_validation.json {where}; every image is scored (--include_meta_images)"
    exclusion = leak_guard(None, source, False, config.data if config is not None else None)
    if not exclusion.per_block and not exclusion.clean_skip:
        return f"no meta_validation.json {where}; no image is left out"
    return (
        f"no meta_validation.json {where}: assumed the paper's meta-validation protocol and left out "
        f"the first {exclusion.per_block or exclusion.clean_skip} images of every CIFAR-10-C block"
        + (f" and the first {exclusion.clean_skip} clean test images" if exclusion.clean_skip else "")
        + "; pass --include_meta_images to score them (if the model's meta loss never saw CIFAR-10-C)"
    )
