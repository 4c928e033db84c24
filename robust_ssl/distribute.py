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

# A lost worker: its peers' collectives fail at once when its connection is
# reset; a worker that hangs is found by TensorFlow's own health check of the
# strategy (every 30 s; its period has no public option, so it is left as
# it is); a collective that waits longer than COLLECTIVE_TIMEOUT_S is aborted
# (long enough for a slow peer's first step, which traces and compiles).
COLLECTIVE_TIMEOUT_S = 600
# What TensorFlow raises when a collective loses a peer.
LOST_PEER_ERRORS = ("UnavailableError", "DeadlineExceededError", "CancelledError", "AbortedError")


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
        parse_tf_config()  # one that does not parse is named here, not deep inside TensorFlow
        return _multi_worker_strategy()
    raise ConfigError(f"distribute must be one of {STRATEGIES}; got {kind!r}")


def parse_tf_config(text=None):
    """TF_CONFIG, parsed: the one place its JSON is read.

    Args:
      text: TF_CONFIG's JSON text (default: the environment variable).

    Returns:
      The parsed object (its "cluster" and "task"); {} where TF_CONFIG is unset.

    Raises:
      ConfigError: text that is not JSON, or JSON that is not an object.
    """
    text = os.environ.get("TF_CONFIG", "") if text is None else text
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"TF_CONFIG is not a JSON object: {text[:80]}")
    return parsed


def check_batch_sizes(strategy, batch_size, meta_batch_size=None):
    """Raises ConfigError unless the batch sizes divide by the strategy's replica count.

    Args:
      strategy: a `tf.distribute.Strategy` (its `num_replicas_in_sync`).
      batch_size: the global training batch.
      meta_batch_size: the meta step's batch (None: no meta step).
    """
    check_divisible(strategy.num_replicas_in_sync, batch_size, meta_batch_size)


def check_divisible(replicas, batch_size, meta_batch_size=None, kind=None):
    """Raises ConfigError unless the batch sizes divide by `replicas`: the one rule, before and after the strategy.

    Args:
      replicas: the replica count (built, or expected by `robust_ssl.preflight`).
      batch_size: the global training batch.
      meta_batch_size: the meta step's batch (None: no meta step).
      kind: `config.distribute`, named in the message where given.
    """
    of = f" of distribute={kind}" if kind else ""
    for name, size in (("train.batch_size", batch_size), ("automl.meta_batch_size", meta_batch_size)):
        if size is not None and size % replicas:
            raise ConfigError(
                f"{name}={size} does not divide by the {replicas} replicas{of}; use a multiple of {replicas}"
            )


def is_chief(strategy):
    """Whether this process writes the run's files (always true on one worker).

    TensorFlow's rule: the `chief` task where TF_CONFIG's cluster has one,
    else worker 0 — never both, so that one process writes the workdir.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def broadcast_from_chief(strategy, variables):
    """Gives every worker the chief's values of `variables` (multi-worker only).

    Each worker of a multi-worker run resumes from the newest checkpoint in
    its own folder, and a kill can leave those folders a step apart (a worker
    killed between its λ row and its checkpoint, or time-triggered
    checkpoints taken at different steps). Resuming from different steps
    would pair different batches in every all-reduce; so after the restore
    the chief's weights, λ and optimiser states (its step count included) are
    sent to every worker. The values travel as one float64 vector summed over
    the replicas, with replica 0 (the chief's first: TensorFlow numbers the
    chief, or worker 0 without one, first) contributing them and every other
    replica zeros, so they arrive bit-exact (x + 0 = x; float32 and int64
    step counts below 2**53 are exact in float64).

    Args:
      strategy: the run's `tf.distribute` strategy; nothing happens unless it
        is a `MultiWorkerMirroredStrategy` over several tasks.
      variables: the variables to share (built; same order on every worker).

    Returns:
      Whether values were exchanged.
    """
    import numpy as np

    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    if sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) < 2:
        return False
    variables = list(variables)
    values = [np.asarray(v.numpy()) for v in variables]
    flat = np.concatenate([value.astype(np.float64).ravel() for value in values]) if values else np.zeros(0)
    zeros = np.zeros_like(flat)
    shared = strategy.experimental_distribute_values_from_function(
        lambda context: flat if context.replica_id_in_sync_group == 0 else zeros
    )
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, shared, axis=None).numpy()
    offset = 0
    for variable, value in zip(variables, values):
        size = value.size
        variable.assign(total[offset : offset + size].reshape(value.shape).astype(value.dtype))
        offset += size
    return True


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy with a collective timeout."""
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_S)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_lost_peer_error(error):
    """Whether a TensorFlow error means that a peer worker of a collective is gone.

    Args:
      error: an exception.

    Returns:
      True for UnavailableError, DeadlineExceededError, CancelledError and
      AbortedError, and for InternalError/UnknownError mentioning an aborted
      collective or a lost connection.
    """
    if not isinstance(error, tf.errors.OpError):
        return False
    if type(error).__name__ in LOST_PEER_ERRORS:
        return True
    text = str(error).lower()
    return isinstance(error, (tf.errors.InternalError, tf.errors.UnknownError)) and any(
        word in text for word in ("collective", "abort", "connection reset", "socket closed", "peer")
    )


def lost_worker(error, tf_config=None):
    """The worker a lost-peer error names: "worker 1 (127.0.0.1:2223)", or None if it names none.

    Args:
      error: the TensorFlow error (its message names `/job:<type>/.../task:<index>`).
      tf_config: TF_CONFIG's JSON text (default: the environment variable).

    Returns:
      A short description of the other worker, or None.
    """
    import re

    try:
        parsed = parse_tf_config(tf_config)
    except ConfigError:  # naming the worker is a courtesy: the error is reported without it
        parsed = {}
    cluster, me = parsed.get("cluster", {}), parsed.get("task", {})
    mine = (me.get("type"), me.get("index"))
    for job, index in re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", str(error)):
        if (job, int(index)) == mine:
            continue
        addresses = cluster.get(job, [])
        address = f" ({addresses[int(index)]})" if int(index) < len(addresses) else ""
        return f"{job} {index}{address}"
    for address in re.findall(r"\b[\w.-]+:\d{2,5}\b", str(error)):
        for job, addresses in cluster.items():
            if address in addresses and (job, addresses.index(address)) != mine:
                return f"{job} {addresses.index(address)} ({address})"
    return None


def lost_worker_message(error, checkpoint_epoch=None):
    """The one line a surviving worker prints when a peer is lost.

    Args:
      error: the TensorFlow error.
      checkpoint_epoch: the epoch of the newest checkpoint (None or 0: none yet).

    Returns:
      The message, naming the lost worker where the error does, and saying that
      restarting every worker with the same command resumes the run.
    """
    who = lost_worker(error)
    where = (
        f"from the last checkpoint (epoch {checkpoint_epoch})"
        if checkpoint_epoch
        else "from the last checkpoint (none yet: from the start)"
    )
    return (
        f"lost contact with {who or 'another worker'} of the multi-worker run "
        f"({type(error).__name__}); restart every worker with the same command to resume {where}"
    )
