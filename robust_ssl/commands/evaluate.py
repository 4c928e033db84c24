r"""Scores a trained model on CIFAR-10-C: accuracy, CE/mCE and calibration per cell.

  robust-ssl evaluate --workdir=runs/smoke --cifar10c=generate
  robust-ssl evaluate --workdir=runs/rot --cifar10c=tfds --baseline=runs/base/robustness
  robust-ssl evaluate --checkpoint=runs/rot/checkpoints/epoch_010.keras \
      --cifar10c=/data/CIFAR-10-C --corruptions=benchmark --severities=3,5 --max_images=1000

  robust-ssl evaluate --workdir=runs/rot --cifar10c=generate --adapt=none,bn,tent,ttt

--cifar10c=generate corrupts the run's own clean test set with
robust_ssl.data.corruptions (offline). Outputs (CSV, JSON, markdown table,
heat map, bar chart) go to --output_dir (default <workdir>/robustness).

Every finished cell is kept in <output_dir>/robustness_partial.json as it
finishes: killed or interrupted, the same command reuses those cells (it says
how many) and scores the rest, ending with the report an uninterrupted
evaluation writes. Other settings (model, source, --max_images, --seed,
--batch_size, adaptation flags) are refused there; --overwrite starts afresh.

--adapt compares test-time adaptation modes in one run (each cell scored by
every mode, the model reset between cells; a cell is fed in an order shuffled
by --seed, in test batches of --adapt_batch_size):
  none       the model as trained.
  bn         batch norm with each test batch's statistics (dropout stays off);
             --bn_prior=N mixes in the training statistics.
  tent       TENT: per test batch, --tent_steps Adam steps (--tent_lr) on the
             mean entropy of the predictions, updating only the batch-norm
             scale and shift, with the batch's statistics; online within a
             cell (--tent_episodic: reset before every batch).
  ttt        TTT, the standard version of Sun et al. 2020, one image at a
             time: --ttt_batch_size (32) randomly cropped and flipped copies
             of the image, each rotated by a random multiple of 90 degrees
             (or transformed by the --ttt_tasks task), --ttt_steps (1) plain
             SGD steps (--ttt_lr 1e-3, loss weight 1) on the rotation
             classification loss with the copies' batch statistics, updating
             the trunk and the task's head; then the image is predicted with
             the training statistics. Reset before every image
             (--ttt_online: only between cells). Differences from the official
             code: see robust_ssl/robustness/adaptation.py.
  ttt_batch  not the paper's protocol: per test batch, --ttt_batch_steps (3)
             SGD steps (--ttt_lr, --ttt_momentum 0) on the run's weighted loss
             Σ λ_i L_i of the --ttt_tasks tasks with the batch's statistics,
             updating the trunk (--ttt_params=bn: only batch norm's scale and
             shift), then predicting the batch with the training statistics;
             reset before every batch (--ttt_online: between cells).
  ttt_bn     ttt_batch's adaptation, then predicting the batch with its own
             batch-norm statistics (as bn).
"""

import dataclasses

from absl import flags

from robust_ssl import cli

FLAGS = flags.FLAGS
# Each flag sets the field of `EvaluationSpec` or `adaptation.Settings` of its
# name; these fields take a flag of another name.
SPEC_FLAGS = {"source": "cifar10c"}
ADAPT_FLAGS = {"batch_size": "adapt_batch_size"}

flags.DEFINE_string("workdir", None, "Training run directory (model, config, meta-validation record).")
flags.DEFINE_string("checkpoint", None, "A .keras model file to score instead of the run's model.")
flags.DEFINE_string("saved_model", None, "A SavedModel directory to score instead.")
flags.DEFINE_string("cifar10c", None, "'tfds', 'generate' or a directory of official CIFAR-10-C .npy files.")
flags.DEFINE_string("tfds_data_dir", None, "tfds data_dir for --cifar10c=tfds.")
flags.DEFINE_string("baseline", None, "robustness.json/.csv (or its directory) of a run to compare with.")
flags.DEFINE_string("output_dir", None, "Where reports go (default <workdir>/robustness).")
flags.DEFINE_string("corruptions", "all", "Comma list of names or all|benchmark|extra.")
flags.DEFINE_string("severities", "1-5", "Severities, e.g. '1-5' or '1,3,5'.")
flags.DEFINE_integer("max_images", 0, "Images per cell (0 = all).")
flags.DEFINE_integer("batch_size", 500, "Forward-pass batch size.")
flags.DEFINE_integer("seed", 0, "Seed of generated corruptions.")
flags.DEFINE_boolean(
    "include_meta_images",
    False,
    "Score the meta-validation images too (refused if the run's meta loss used them).",
)
flags.DEFINE_boolean("progress", True, "Show a progress bar over the cells.")
flags.DEFINE_boolean(
    "overwrite",
    False,
    "Replace a report in the output folder that has cells this evaluation does not score, or discard "
    "the finished cells of an interrupted evaluation with other settings.",
)
flags.DEFINE_string(
    "adapt", None, "Test-time adaptation modes to compare: none,bn,tent,ttt,ttt_batch,ttt_bn."
)
flags.DEFINE_integer(
    "adapt_batch_size",
    200,
    "Test batch size of bn, tent, ttt_batch and ttt_bn (ttt adapts to one image at a time).",
    lower_bound=1,
)
flags.DEFINE_float("bn_prior", 0.0, "bn: prior strength N of the training statistics (0 = none).")
flags.DEFINE_float("tent_lr", 1e-3, "tent: Adam learning rate.")
flags.DEFINE_integer("tent_steps", 1, "tent: Adam steps per test batch.", lower_bound=1)
flags.DEFINE_boolean("tent_episodic", False, "tent: reset before every batch.")
flags.DEFINE_string(
    "ttt_tasks",
    "",
    "ttt, ttt_batch, ttt_bn: tasks to adapt with (default: the run's tasks that classify a "
    "transformation, e.g. rotation; ttt takes only such tasks).",
)
flags.DEFINE_float("ttt_lr", 1e-3, "ttt, ttt_batch, ttt_bn: SGD learning rate.")
flags.DEFINE_integer(
    "ttt_steps", 1, "ttt: plain SGD steps per test image (the paper reports 1 and 10).", lower_bound=1
)
flags.DEFINE_integer(
    "ttt_batch_size", 32, "ttt: augmented copies of each test image per step.", lower_bound=1
)
flags.DEFINE_boolean(
    "ttt_online",
    False,
    "ttt, ttt_batch, ttt_bn: keep the adaptation across a cell's images or batches (reset between "
    "cells only; default: reset before every image or batch).",
)
flags.DEFINE_integer("ttt_batch_steps", 3, "ttt_batch, ttt_bn: SGD steps per test batch.", lower_bound=1)
flags.DEFINE_float("ttt_momentum", 0.0, "ttt_batch, ttt_bn: SGD momentum.")
flags.DEFINE_enum(
    "ttt_params",
    "trunk",
    ["trunk", "bn"],
    "ttt_batch, ttt_bn: what they update (all trunk weights, or batch norm's scale and shift).",
)
flags.mark_flag_as_required("cifar10c")


def _from_flags(cls, renamed):
    """{field: flag value} for the fields of the dataclass `cls` that a flag sets.

    Args:
      cls: `EvaluationSpec` or `adaptation.Settings`.
      renamed: field -> flag name, where they differ.

    Returns:
      A dict of keyword arguments of `cls`.
    """
    values = {}
    for field in dataclasses.fields(cls):
        name = renamed.get(field.name, field.name)
        if name in FLAGS:
            values[field.name] = FLAGS[name].value
    return values


def spec_from_flags():
    """The evaluation's settings, built once from the flags.

    Returns:
      An `evaluation.EvaluationSpec`.

    Raises:
      UserError: an unknown corruption, severity or adaptation mode.
    """
    from robust_ssl.data import cifar10c
    from robust_ssl.robustness import adaptation, evaluation

    values = _from_flags(evaluation.EvaluationSpec, SPEC_FLAGS)
    adapt = values["adapt"]
    return evaluation.EvaluationSpec(
        **{
            **values,
            "corruptions": cifar10c.parse_corruptions(values["corruptions"]),
            "severities": cifar10c.parse_severities(values["severities"]),
            "max_images": values["max_images"] or None,
            "adapt": adaptation.parse_modes(adapt) if adapt else None,
            "adapt_settings": adaptation.Settings(**_from_flags(adaptation.Settings, ADAPT_FLAGS)),
        }
    )


def main(argv):
    from robust_ssl.robustness import evaluation

    with cli.user_errors():
        cli.no_arguments(argv)
        _, paths = evaluation.evaluate(spec_from_flags())
    with open(paths["markdown"]) as f:
        print(f.read())
    print("outputs:")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
