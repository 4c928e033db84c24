"""Scaling across the replicas of the current `tf.distribute` strategy.

Every scaling of a loss or a gradient across replicas goes through here. A
loss is a mean over the *global* batch (local sum / (local batch × n)); sums
over replicas are all-reduces; and since `optimizer.apply` sums what the
replicas hand it, each replica hands over its 1/n share of an all-reduced
gradient. A metric of a replica's share × n is the global value on every
replica. Without a strategy, n = 1 and every rule is the identity.
"""

import tensorflow as tf


class Replicas:
    """The scaling rules (static methods; the strategy is the current one)."""

    @staticmethod
    def count():
        """Number of replicas in sync (1 without a strategy)."""
        return tf.distribute.get_strategy().num_replicas_in_sync

    @classmethod
    def global_mean(cls, per_example):
        """Mean over the global batch: the local sum / (local batch × replicas)."""
        local = tf.cast(tf.shape(per_example)[0], per_example.dtype)
        return tf.reduce_sum(per_example) / (local * cls.count())

    @classmethod
    def global_value(cls, share):
        """A global figure from this replica's share of it (× replicas)."""
        return share * cls.count()

    @staticmethod
    def all_reduce(tensors):
        """Sums a structure of tensors over replicas (identity on one device)."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return tensors
        return context.all_reduce(tf.distribute.ReduceOp.SUM, tensors)

    @classmethod
    def share(cls, grads):
        """This replica's share of all-reduced gradients (the optimiser sums them)."""
        n = cls.count()
        return [None if g is None else g / n for g in grads]
