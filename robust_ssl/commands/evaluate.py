r"""Scores a trained model on CIFAR-10-C: accuracy, CE/mCE and calibration per cell.

  robust-ssl evaluate --workdir=runs/smoke --cifar10c=generate
  robust-ssl evaluate --workdir=runs/rot --cifar10c=tfds --baseline=runs/base/robustness
  robust-ssl evaluate --checkpoint=runs/rot/checkpoints/epoch_010.keras \
      --cifar10c=/data/CIFAR-10-C --corruptions=benchmark --severities=3,5 --max_images=1000

--cifar10c=generate corrupts the run's own clean test set with
robust_ssl.data.corruptions (offline). Outputs (CSV, JSON, markdown table,
heat map, bar chart) go to --output_dir (default <workdir>/robustness).
"""

from absl import flags

from robust_ssl import cli

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training run directory (model, config, meta-validation record)."
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A .keras model file to score instead of the run's model."
)
_SAVED_MODEL = flags.DEFINE_string("saved_model", None, "A SavedModel directory to score instead.")
_CIFAR10C = flags.DEFINE_string(
    "cifar10c", None, "'tfds', 'generate' or a directory of official CIFAR-10-C .npy files."
)
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "tfds data_dir for --cifar10c=tfds.")
_BASELINE = flags.DEFINE_string(
    "baseline", None, "robustness.json/.csv (or its directory) of a run to compare with."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where reports go (default <workdir>/robustness).")
_CORRUPTIONS = flags.DEFINE_string("corruptions", "all", "Comma list of names or all|benchmark|extra.")
_SEVERITIES = flags.DEFINE_string("severities", "1-5", "Severities, e.g. '1-5' or '1,3,5'.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Images per cell (0 = all).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 500, "Forward-pass batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of generated corruptions.")
_INCLUDE_META = flags.DEFINE_boolean(
    "include_meta_images",
    False,
    "Score the meta-validation images too (refused if the run's meta loss used them).",
)
_PROGRESS = flags.DEFINE_boolean("progress", True, "Show a progress bar over the cells.")
flags.mark_flag_as_required("cifar10c")


def main(argv):
    from robust_ssl.data import cifar10c
    from robust_ssl.robustness import evaluation

    with cli.user_errors():
        cli.no_arguments(argv)
        _, paths = evaluation.evaluate_run(
            _CIFAR10C.value,
            workdir=_WORKDIR.value,
            checkpoint=_CHECKPOINT.value,
            saved_model=_SAVED_MODEL.value,
            output_dir=_OUTPUT_DIR.value,
            baseline=_BASELINE.value,
            corruptions=cifar10c.parse_corruptions(_CORRUPTIONS.value),
            severities=cifar10c.parse_severities(_SEVERITIES.value),
            max_images=_MAX_IMAGES.value or None,
            batch_size=_BATCH_SIZE.value,
            seed=_SEED.value,
            include_meta_images=_INCLUDE_META.value,
            tfds_data_dir=_TFDS_DATA_DIR.value,
            progress=_PROGRESS.value,
        )
    with open(paths["markdown"]) as f:
        print(f.read())
    print("outputs:")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
