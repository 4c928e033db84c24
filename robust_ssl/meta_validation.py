"""The meta loss's validation stream: a seeded, stratified hold-out of the training set, or CIFAR-10-C.

`meta_validation(config, data)` splits off (or loads) what the AutoML meta
loss is computed on, and what meta_validation.json records of it
(`robust_ssl.rundir.META_VALIDATION`): a `train_holdout` is held-out training
images as they are, a `corrupted_holdout` (the default) the same images
corrupted with the 4 extra corruptions, `cifar10c` the first `per_block`
images of every CIFAR-10-C block. `robust_ssl.train` trains on the rest; the
function is importable from there too.
"""

import tensorflow as tf
from absl import logging

from robust_ssl import config_utils
from robust_ssl.data import cifar10c, pipeline, splits
from robust_ssl.errors import ConfigError


def meta_validation(config, data):
    """Splits off or loads the validation stream of the meta loss.

    A `train_holdout` / `corrupted_holdout` hold-out is drawn by `config.seed`
    and stratified by class (`splits.stratified_split`): image folders are read
    class by class, so "the first N images" would be whole classes that
    training never sees. `config.data.exclude_holdout` = N leaves the same N
    images out of the training set of a run that holds none out itself (a
    study's other recipes), so that all train on the same images.

    Args:
      config: the experiment ConfigDict.
      data: `DataSplits` of the run.

    Returns:
      (the training examples — (images, labels) arrays, or the
      `folders.ImageFiles` a streamed folder is read from —, meta dataset or
      None, record dict for meta_validation.json).

    Raises:
      ConfigError: a hold-out that would leave a class without training images.
    """
    source = data.train_source if data.train_source is not None else pipeline.to_arrays(data.train)
    labels = pipeline.labels_of(source)
    val = config.automl.validation
    holdout = config_utils.training_holdout(config)
    uses_holdout = holdout > 0
    excluded = int(config.data.get("exclude_holdout", 0) or 0)
    if not config.automl.enabled and not excluded:
        return source, None, {"source": None}
    record = {"source": val.source if config.automl.enabled else None}
    if uses_holdout or excluded:
        holdout = holdout or excluded
        key = "automl.validation.holdout" if uses_holdout else "data.exclude_holdout"
        source, held, record_split = _hold_out(config, data, source, labels, holdout, key)
        record.update(record_split)
        if uses_holdout:
            meta = pipeline.to_arrays(held)
            if val.source == "corrupted_holdout":
                corruption_names, severities = config_utils.holdout_corruptions(val)
                meta = _corrupt_holdout(meta, corruption_names, severities, config.seed)
                record.update(corruptions=corruption_names, severities=severities)
            return source, tf.data.Dataset.from_tensor_slices(meta), record
        # The same images an AutoML run of this seed holds out, left out of
        # training so that recipes with and without AutoML see one set.
        record["excluded_from_training"] = True
    if not config.automl.enabled:
        return source, None, record
    meta = cifar10c.load_part(
        val.cifar10c_source,
        "meta",
        int(val.per_block),
        directory=val.cifar10c_dir or None,
    )
    record.update(
        {
            "source": "cifar10c",
            "cifar10c_source": val.cifar10c_source,
            "cifar10c_dir": val.cifar10c_dir or None,
            "per_block": int(val.per_block),
            "corruptions": list(cifar10c.ALL_CORRUPTIONS),
        }
    )
    return source, meta, record


def _hold_out(config, data, source, labels, holdout, key):
    """(the rest, the held-out examples, record) of a seeded, stratified hold-out of `holdout`."""
    if not 0 < holdout < len(labels):
        raise ConfigError(f"{key} must be in (0, {len(labels)}); got {holdout}")
    rest, held = splits.stratified_split(labels, holdout, seed=config.seed)
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    train_counts = splits.class_counts(labels[rest], names)
    held_counts = splits.class_counts(labels[held], names)
    emptied = [name for name, count in train_counts.items() if count == 0 and held_counts[name]]
    if emptied:
        raise ConfigError(
            f"{key}={holdout} leaves class(es) {', '.join(emptied[:5])} "
            f"without training images; use a smaller hold-out"
        )
    logging.info(
        "%s: %d images held out (%s); training: %d images (%s)",
        key,
        len(held),
        ", ".join(f"{k} {v}" for k, v in held_counts.items()),
        len(rest),
        ", ".join(f"{k} {v}" for k, v in train_counts.items()),
    )
    record = {
        "holdout": holdout,
        "split": "stratified by class, drawn by seed",
        "seed": int(config.seed),
        "holdout_class_counts": held_counts,
        "train_class_counts": train_counts,
    }
    return pipeline.take(source, rest), pipeline.take(source, held), record


def _corrupt_holdout(meta, names, severities, seed):
    """Corrupted copies of the held-out (images, labels) (the extra corruptions by default)."""
    from robust_ssl.data import corruptions

    images, labels = meta
    logging.info("corrupting %d held-out images with %s at severities %s", len(images), names, severities)
    return corruptions.corrupted_holdout(images.astype("uint8"), labels, names, severities, seed=seed)
