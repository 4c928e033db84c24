"""Checks that run before a command writes anything: config, data, devices, batches.

`check(config)` raises a `UserError` (one line) for every mistake it can see
without training: an invalid setting (`config_utils.validate`), a data
folder that is missing or unreadable, an unknown or unavailable tfds set,
`config.devices` naming devices this machine does not have, and batch sizes
that do not divide by the replica count the strategy will have. It reads no
images and builds no strategy, so it is cheap and safe before
`MultiWorkerMirroredStrategy` (which must be the first thing TensorFlow runs)
and in `robust-ssl train --dry_run`. What it resolved comes back as one frozen
`RunSpec`, which the run reads instead of resolving the same settings again.
"""

import dataclasses
import os

from robust_ssl import config_utils, distribute
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import parse_task_names


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """A run's settings as preflight resolved them, before anything ran.

    Attributes:
      strategy: `config.distribute` ("none", "mirrored", "multi_worker").
      devices: the named devices of a mirrored run (() = all GPUs, or the CPU).
      replicas: the replica count the strategy will have.
      workers: TF_CONFIG's cluster as (task type, index, address), chief first.
      image_shape: (height, width, channels) of the inputs.
      tasks: the auxiliary tasks' names, in order.
      lambdas: their initial λ.
      epochs: training epochs.
      batch_size: the global labelled batch.
      meta_batch_size: the global meta-validation batch (None without AutoML).
      precision: `train.precision` as configured ("auto" is resolved against
        the workdir when the run starts, `robust_ssl.precision.use_precision`).
    """

    strategy: str
    devices: tuple
    replicas: int
    workers: tuple
    image_shape: tuple
    tasks: tuple
    lambdas: tuple
    epochs: int
    batch_size: int
    meta_batch_size: object
    precision: str

    @property
    def devices_text(self):
        """The devices as `config.devices` spells them (comma-separated)."""
        return ",".join(self.devices)


def check(config):
    """Validates everything about a run that can be checked before it starts.

    Args:
      config: the experiment ConfigDict.

    Returns:
      The `RunSpec`: strategy, devices, replicas, workers, image shape, tasks,
      λ, schedule, precision.

    Raises:
      ConfigError: an invalid setting, devices that do not exist, batch sizes
        that do not divide by the replicas.
      UserError: data that cannot be found or read.
    """
    config_utils.validate(config)
    check_data(config.data)
    kind = config.get("distribute", "none")
    devices = str(config.get("devices", "") or "")
    check_devices(kind, devices)
    workers = tuple(cluster_workers()) if kind == "multi_worker" else ()
    replicas = expected_replicas(kind, devices, workers)
    check_batches(config, replicas)
    return RunSpec(
        strategy=kind,
        devices=tuple(device_names(devices)),
        replicas=replicas,
        workers=workers,
        image_shape=tuple(config_utils.image_shape(config)),
        tasks=tuple(parse_task_names(config.tasks)),
        lambdas=tuple(config_utils.task_lambdas(config)),
        epochs=int(config.train.epochs),
        batch_size=int(config.train.batch_size),
        meta_batch_size=int(config.automl.meta_batch_size) if config.automl.enabled else None,
        precision=str(config.train.get("precision", "auto")),
    )


def check_data(data_config):
    """Checks that the data a config names can be found, without reading images.

    Args:
      data_config: `config.data`.

    Raises:
      UserError: a missing or unreadable folder, an unknown tfds name, a tfds
        set that is neither prepared nor downloadable.
    """
    source = data_config.get("source", "tfds")
    if source == "folder":
        folder = str(data_config.get("folder", "") or "")
        if not folder:
            raise UserError("data.source=folder needs --config.data.folder=<dir of class folders>")
        if not os.path.isdir(folder):
            what = "is not a folder" if os.path.exists(folder) else "does not exist"
            raise UserError(f"image folder {folder!r} (data.folder) {what}")
        if not os.access(folder, os.R_OK | os.X_OK):
            raise UserError(f"image folder {folder!r} (data.folder) is not readable")
    elif source == "tfds":
        _check_tfds(data_config)
    elif source != "synthetic":
        from robust_ssl.data.datasets import SOURCES

        raise UserError(f"unknown data source {source!r}; choose from {', '.join(SOURCES)}")


def _check_tfds(data_config):
    import difflib

    import tensorflow_datasets as tfds

    name = data_config.get("name", "cifar10")
    builders = tfds.list_builders()
    if name not in builders:
        close = difflib.get_close_matches(name, builders, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (tfds.list_builders() lists them)"
        raise UserError(f"unknown tfds dataset {name!r} (data.name){hint}")
    data_dir = data_config.get("data_dir") or None
    if data_dir and not os.path.isdir(data_dir):
        raise UserError(f"tfds data_dir {data_dir!r} (data.data_dir) does not exist")
    manual_dir = data_config.get("manual_dir") or None
    if manual_dir and not os.path.isdir(manual_dir):
        raise UserError(f"tfds manual_dir {manual_dir!r} (data.manual_dir) does not exist")
    if not data_config.get("download", True) and not manual_dir:
        if not tfds.builder(name, data_dir=data_dir).is_prepared():
            from robust_ssl.data.datasets import _no_data_message

            raise UserError(_no_data_message(name, "not prepared and downloads are off"))


def device_names(devices):
    """The device names of a `config.devices` string ("" → [])."""
    return [d.strip() for d in str(devices).split(",") if d.strip()]


def _key(name):
    """(TYPE, index) of a device name such as "/gpu:0" or "/job:x/device:GPU:0"."""
    import tensorflow as tf

    try:
        spec = tf.DeviceSpec.from_string(name)
    except ValueError:
        raise ConfigError(f"config.devices: {name!r} is not a device name such as /gpu:0 or /cpu:0") from None
    if not spec.device_type:
        raise ConfigError(f"config.devices: {name!r} is not a device name such as /gpu:0 or /cpu:0")
    return spec.device_type.upper(), spec.device_index or 0


def check_devices(kind, devices):
    """Checks `config.devices` against the logical devices of this machine.

    Args:
      kind: `config.distribute`.
      devices: `config.devices` (comma-separated names).

    Raises:
      ConfigError: devices given without distribute=mirrored, a malformed
        name, a repeated device, or a device this machine does not have (the
        message names those it has).
    """
    names = device_names(devices)
    if not names:
        return
    if kind != "mirrored":
        raise ConfigError(f"config.devices={devices!r} is read only with --config.distribute=mirrored")
    import tensorflow as tf

    have = {_key(d.name): d.name for d in tf.config.list_logical_devices()}
    wanted = [_key(name) for name in names]
    if len(set(wanted)) != len(wanted):
        raise ConfigError(f"config.devices={devices!r} names a device twice")
    missing = [name for name, key in zip(names, wanted) if key not in have]
    if missing:
        existing = ", ".join(f"/{t.lower()}:{i}" for t, i in sorted(have))
        raise ConfigError(
            f"config.devices names {', '.join(missing)}, which this machine does not have; "
            f"its devices: {existing}"
        )


def cluster_workers(tf_config=None):
    """The (task type, index, address) of every worker in TF_CONFIG's cluster.

    Args:
      tf_config: the TF_CONFIG JSON text (default: the environment variable).

    Returns:
      A list, chief first; [] without TF_CONFIG or a cluster.

    Raises:
      ConfigError: TF_CONFIG that is not a JSON object (`distribute.parse_tf_config`).
    """
    cluster = distribute.parse_tf_config(tf_config).get("cluster", {})
    return [
        (kind, index, address)
        for kind in ("chief", "worker")
        for index, address in enumerate(cluster.get(kind, []))
    ]


def expected_replicas(kind, devices="", workers=None):
    """The replica count the strategy of a config will have, without building it.

    Args:
      kind: `config.distribute`.
      devices: `config.devices`.
      workers: `cluster_workers()`, where the caller has read it already.

    Returns:
      1 for "none"; the named devices or local GPUs (at least 1) for
      "mirrored"; workers × local GPUs (at least 1 each) for "multi_worker".
    """
    import tensorflow as tf

    if kind == "mirrored":
        # Physical GPUs: listing them does not initialise the runtime.
        return len(device_names(devices)) or max(1, len(tf.config.list_physical_devices("GPU")))
    if kind == "multi_worker":
        workers = cluster_workers() if workers is None else workers
        return max(1, len(workers)) * max(1, len(tf.config.list_physical_devices("GPU")))
    return 1


def check_batches(config, replicas):
    """Raises ConfigError unless the batch sizes divide by `replicas` and one batch fits the data.

    Args:
      config: the experiment ConfigDict.
      replicas: the replica count (`expected_replicas`).
    """
    meta_batch_size = config.automl.meta_batch_size if config.automl.enabled else None
    kind = config.get("distribute", "none")
    distribute.check_divisible(replicas, config.train.batch_size, meta_batch_size, kind=kind)
    source = config.data.get("source")
    if source == "synthetic" and config.data.num_train < config.train.batch_size:
        raise ConfigError(
            f"the training set has {config.data.num_train} images, fewer than one batch of "
            f"{config.train.batch_size}"
        )


def describe(config):
    """The resolved config, one `key=value` per line (dotted keys, sorted).

    As the run records it (`config_utils.recorded`): of `config.data`, only
    the keys its source reads.

    Args:
      config: a ConfigDict.

    Returns:
      A string.
    """
    flat = config_utils.flatten(config_utils.recorded(config))
    return "\n".join(
        f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"
        for key, value in sorted(flat.items())
    )


def summary(config, workdir, name=None, overrides=()):
    """The few lines `robust-ssl train` prints when it starts (the full config goes to config.json).

    Args:
      config: the resolved ConfigDict.
      workdir: the run's directory.
      name: the config's name or file (None: not shown).
      overrides: the dotted keys overridden on the command line.

    Returns:
      A string of about seven lines: config, model, tasks and λ, AutoML, data,
      training, workdir.
    """

    def plural(n, word):
        return f"{n:,} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")

    shown = ", ".join(overrides[:4]) + (f" and {len(overrides) - 4} more" if len(overrides) > 4 else "")
    lines = [f"config: {name or 'default'}" + (f", overriding {shown}" if overrides else "")]
    height, width, _ = config_utils.image_shape(config)
    from robust_ssl import networks

    train, automl, data = config.train, config.automl, config.data
    model = f"model: {networks.describe(config_utils.backbone(config))} at {height}x{width}"
    precision = train.get("precision", "float32")
    model += ", precision auto" if precision == "auto" else f", {precision}"
    if config.get("distribute", "none") != "none":
        model += f", distribute={config.distribute}"
    lines.append(model)
    names = parse_task_names(config.tasks)
    if names:
        lines.append("tasks: " + ", ".join(f"{n} (λ {config.task_weights[n]:g})" for n in names))
    else:
        lines.append("tasks: none (the baseline: the main classifier alone)")
    if automl.enabled:
        lines.append(
            f"AutoML: on, λ learned ({automl.get('method', 'lookahead')}"
            f"{', ' + automl.mode if automl.get('method', 'lookahead') == 'lookahead' else ''}, "
            f"after {plural(automl.warmup_epochs, 'warm-up epoch')}; "
            f"meta-validation {automl.validation.source})"
        )
    else:
        lines.append("AutoML: off (λ fixed)")
    source = data.get("source")
    if source == "synthetic":
        what = (
            f"synthetic, {data.num_train:,} training and {data.num_test:,} test images, "
            f"{plural(data.num_classes, 'class')}"
        )
    elif source == "folder":
        what = f"folder {data.folder} (images and classes are counted when it is read: see `found`)"
    else:
        what = f"tfds {data.get('name')}"
    lines.append(f"data: {what}")
    steps = f"{train.steps_per_epoch} steps" if train.steps_per_epoch else "one pass over the training images"
    lines.append(
        f"training: {plural(train.epochs, 'epoch')} of {steps}, batch {train.batch_size}, "
        f"learning rate {train.learning_rate:g} (cosine to {train.min_learning_rate:g})"
    )
    lines.append(
        f"workdir: {workdir} (the full config: {os.path.join(workdir, 'config.json')}; --dry_run prints it)"
    )
    return "\n".join(lines)
