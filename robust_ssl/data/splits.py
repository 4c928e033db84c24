"""Seeded, class-stratified splits of a labelled set.

Image folders are read class by class, so any "first N examples" of such a
set is one class (or a few). Every hold-out in the package is therefore drawn
here instead: at random by a seed, and stratified so that each class keeps the
same share on both sides of the split (within one image).
"""

import numpy as np


def stratified_counts(class_sizes, total, seed=0):
    """How many examples of each class a stratified sample of `total` takes.

    Largest-remainder apportionment: class c gets floor(total * n_c / N) and
    the remaining examples go to the classes with the largest fractional parts
    (ties broken at random by `seed`, so no class is favoured systematically).

    Args:
      class_sizes: [C] number of examples of each class.
      total: sample size, 0 <= total <= sum(class_sizes).
      seed: integer seed of the tie-break.

    Returns:
      int64 [C] counts summing to `total`, each within one of total * n_c / N
      and never above n_c.
    """
    sizes = np.asarray(class_sizes, np.int64)
    n = int(sizes.sum())
    if not 0 <= total <= n:
        raise ValueError(f"cannot take {total} of {n} examples")
    if n == 0:
        return np.zeros_like(sizes)
    exact = sizes * (total / n)
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    tie_break = np.random.default_rng([seed, 1]).permutation(len(sizes))
    # Sort by remainder (descending), then by the seeded tie-break.
    order = np.lexsort((tie_break, -remainder))
    for c in order[: total - int(counts.sum())]:
        counts[c] += 1
    return counts


def stratified_split(labels, count, seed=0):
    """Splits the indices of `labels` into a rest and a stratified sample of `count`.

    A pure function of (labels, count, seed): the same run draws the same
    hold-out every time it starts or resumes.

    Args:
      labels: [N] integer class labels, in any order (class-ordered is fine).
      count: size of the sample (the hold-out).
      seed: integer seed.

    Returns:
      (rest, sample): int64 index arrays into `labels`, each in ascending order.
    """
    labels = np.asarray(labels)
    classes, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))
    counts = stratified_counts(sizes, count, seed)
    rng = np.random.default_rng([seed, 0])
    sample = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        sample.append(rng.permutation(members)[: counts[c]])
    sample = np.sort(np.concatenate(sample)) if sample else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), sample)
    return rest.astype(np.int64), sample.astype(np.int64)


def stratified_shuffle(labels, count=None, seed=0):
    """A stratified sample of `count` indices (all when None) in a seeded random order.

    For writing a derived set (e.g. a corrupted test set) whose first images
    must not all be one class.

    Args:
      labels: [N] integer class labels.
      count: how many to keep (None or 0 = all).
      seed: integer seed.

    Returns:
      int64 [count] indices into `labels`.
    """
    labels = np.asarray(labels)
    if count and count < len(labels):
        _, index = stratified_split(labels, count, seed)
    else:
        index = np.arange(len(labels))
    return np.random.default_rng([seed, 2]).permutation(index).astype(np.int64)


def class_counts(labels, class_names):
    """{class name: count} of `labels` (every class listed, zeros included).

    Args:
      labels: [N] integer labels in [0, len(class_names)).
      class_names: names of the classes, by index.

    Returns:
      A dict in class order.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    return {str(name): int(counts[i]) for i, name in enumerate(class_names)}
