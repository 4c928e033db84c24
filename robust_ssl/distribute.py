"""Choosing a `tf.distribute` strategy from the config.

- "none": the default strategy (one device);
- "mirrored": `MirroredStrategy` over all local GPUs, or a device list such as
  "/gpu:0,/gpu:1" (or "/cpu:0,/cpu:1" with logical CPU devices, for tests);
- "multi_worker": `MultiWorkerMirroredStrategy`, configured by the standard
  `TF_CONFIG` environment variable (see the README).

Batch norm: by default each replica normalises with the statistics of its own
share of the batch; `config.model.sync_batch_norm=True` all-reduces them so that
N replicas compute exactly what one device computes at the same global batch.
"""

import json
import os

import tensorflow as tf

from robust_ssl.errors import ConfigError

STRATEGIES = ("none", "mirrored", "multi_worker")


def make_strategy(kind="none", devices=""):
    """Builds the strategy a config names.

    Args:
      kind: one of STRATEGIES.
      devices: for "mirrored", comma-separated device names ("" = all GPUs,
        or the CPU where there is none).

    Returns:
      A `tf.distribute.Strategy`.
    """
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        names = [d.strip() for d in devices.split(",") if d.strip()] or None
        return tf.distribute.MirroredStrategy(devices=names)
    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("distribute=multi_worker needs the TF_CONFIG environment variable (see README)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as e:
            raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"distribute must be one of {STRATEGIES}; got {kind!r}")


def check_batch_sizes(strategy, batch_size, meta_batch_size=None):
    """Raises ConfigError unless the batch sizes divide by the replica count."""
    replicas = strategy.num_replicas_in_sync
    for name, size in (("train.batch_size", batch_size), ("automl.meta_batch_size", meta_batch_size)):
        if size is not None and size % replicas:
            raise ConfigError(
                f"{name}={size} does not divide by the {replicas} replicas; use a multiple of {replicas}"
            )


def is_chief(strategy):
    """Whether this process writes the run's files (always true on one worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
