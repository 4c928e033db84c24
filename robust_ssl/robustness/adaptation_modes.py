"""The test-time adaptation modes by name and their settings.

`MODES` is the vocabulary of `--adapt` (what each mode does: the module
docstring of `robust_ssl.robustness.adaptation`); `Settings` holds every
mode's options, and `parse_modes` reads a comma-separated list of modes.
"""

import dataclasses

from robust_ssl.errors import UserError

MODES = ("none", "bn", "tent", "ttt", "ttt_batch", "ttt_bn")
# The modes that adapt to each test batch with the tasks' losses (`ttt` adapts to each image).
BATCH_TTT = ("ttt_batch", "ttt_bn")


@dataclasses.dataclass
class Settings:
    """Options of the adaptation modes (each mode: the docstring of `robustness.adaptation`).

    The defaults are TENT's CIFAR settings for `tent` and the settings of the
    TTT paper's standard version for `ttt`; `ttt_batch` and `ttt_bn` are this
    package's own variants and their defaults are ours.

    Attributes:
      batch_size: test batch size of `bn`, `tent`, `ttt_batch` and `ttt_bn`
        (TENT: 200); `ttt` predicts one image at a time whatever it is.
      bn_prior: `bn`'s prior strength N (0: test-batch statistics only).
      tent_lr, tent_steps, tent_episodic: TENT's Adam learning rate, steps
        per batch, and whether to reset before every batch.
      ttt_tasks: task names for `ttt`, `ttt_batch` and `ttt_bn` ("" = the
        run's tasks with `probe_classes > 0`, e.g. rotation); `ttt` accepts
        only such tasks.
      ttt_lr: SGD learning rate of `ttt`, `ttt_batch` and `ttt_bn` (1e-3).
      ttt_steps: `ttt`'s SGD steps per image (the paper: 1, and 10).
      ttt_batch_size: `ttt`'s augmented copies per image (the paper: 32).
      ttt_online: keep the TTT modes' adaptation across a cell's images or
        batches (default: reset before every image / batch).
      ttt_batch_steps: SGD steps per test batch of `ttt_batch` and `ttt_bn`.
      ttt_momentum: SGD momentum of `ttt_batch` and `ttt_bn` (`ttt` has none).
      ttt_params: what `ttt_batch` and `ttt_bn` update: "trunk" (all trunk
        weights) or "bn" (batch-norm scale and shift).
      seed: seed of the random transforms at test time and of the order of
        the test stream.
      shuffle: feed a cell's images in an order shuffled by `seed` (the
        outputs come back in the original order). Test sets read from image
        folders are sorted by class, and a batch of one or two classes has
        batch statistics no deployed stream has: `bn` and `tent` would be
        measured on a failure case of theirs instead of on i.i.d. batches.
    """

    batch_size: int = 200
    bn_prior: float = 0.0
    tent_lr: float = 1e-3
    tent_steps: int = 1
    tent_episodic: bool = False
    ttt_tasks: str = ""
    ttt_lr: float = 1e-3
    ttt_steps: int = 1
    ttt_batch_size: int = 32
    ttt_online: bool = False
    ttt_batch_steps: int = 3
    ttt_momentum: float = 0.0
    ttt_params: str = "trunk"
    seed: int = 0
    shuffle: bool = True


def parse_modes(text):
    """The adaptation modes named in a comma-separated list.

    Args:
      text: e.g. "none,bn,tent"; empty or None means "none".

    Returns:
      The modes in the order given, each once.

    Raises:
      UserError: an unknown mode, or none at all (one line).
    """
    modes = [m.strip() for m in (text or "none").split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"unknown adaptation mode(s) {unknown}; choose from {', '.join(MODES)}")
    return tuple(dict.fromkeys(modes))
