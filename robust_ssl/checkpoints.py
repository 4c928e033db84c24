"""A run's checkpoint files: their names, what a name says, and finding the newest.

`callbacks.AtomicCheckpoint` saves into a run's checkpoints/ folder

  epoch_NNN.keras                 after NNN completed epochs
  epoch_NNN_step_SSSSSSS.keras    at global step SSSSSSS within epoch NNN+1

(`checkpoint_path`): the whole model with λ and both optimisers' states.
`checkpoints` lists them oldest first, by epoch and step (not by file time),
and `latest_checkpoint` gives the one to resume from. Any other file
(temporary files, `<name>.tmp.keras` of earlier versions) is never taken for a
checkpoint. The folder's name and the run's other files are `robust_ssl.rundir`'s.
"""

import glob
import os
import re

KERAS_SUFFIX = ".keras"
_CHECKPOINT_PREFIX = "epoch_"
_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)(?:_step_(\d+))?\.keras$")


def checkpoint_path(directory, epoch, step=None):
    """The checkpoint file after `epoch` completed epochs.

    Args:
      directory: the run's checkpoints/ folder.
      epoch: completed epochs.
      step: the global step of a mid-epoch checkpoint (within epoch `epoch` + 1);
        None for the end of epoch `epoch`.

    Returns:
      <directory>/epoch_NNN.keras, or <directory>/epoch_NNN_step_SSSSSSS.keras.
    """
    name = f"{_CHECKPOINT_PREFIX}{epoch:03d}"
    if step is not None:
        name += f"_step_{step:07d}"
    return os.path.join(directory, name + KERAS_SUFFIX)


def _checkpoint_key(path):
    match = _CHECKPOINT_NAME.match(os.path.basename(path))
    if not match:
        return None
    epoch, step = match.groups()
    # An epoch's own checkpoint comes before the mid-epoch ones of the next epoch.
    return (int(epoch), 0 if step is None else 1, int(step or 0))


def checkpoint_epoch(path):
    """The number of completed epochs a checkpoint file holds (epoch_012.keras -> 12).

    A mid-epoch checkpoint epoch_012_step_0000500.keras also gives 12.
    """
    return _checkpoint_key(path)[0]


def checkpoint_step(path):
    """The global step in a mid-epoch checkpoint's name, or None for an end-of-epoch one."""
    key = _checkpoint_key(path)
    return key[2] if key[1] else None


def checkpoints(directory):
    """The checkpoints in `directory` (end-of-epoch and mid-epoch), oldest first."""
    paths = glob.glob(os.path.join(directory, f"{_CHECKPOINT_PREFIX}*{KERAS_SUFFIX}"))
    return sorted((p for p in paths if _checkpoint_key(p) is not None), key=_checkpoint_key)


def latest_checkpoint(directory):
    """The newest checkpoint in `directory` (by epoch and step, not by time), or None."""
    found = checkpoints(directory)
    return found[-1] if found else None
