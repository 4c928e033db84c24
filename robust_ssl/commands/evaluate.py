r"""Scores a trained model on CIFAR-10-C: accuracy, CE/mCE and calibration per cell.

  robust-ssl evaluate --workdir=runs/smoke --cifar10c=generate
  robust-ssl evaluate --workdir=runs/rot --cifar10c=tfds --baseline=runs/base/robustness
  robust-ssl evaluate --checkpoint=runs/rot/checkpoints/epoch_010.keras \
      --cifar10c=/data/CIFAR-10-C --corruptions=benchmark --severities=3,5 --max_images=1000

  robust-ssl evaluate --workdir=runs/rot --cifar10c=generate --adapt=none,bn,tent,ttt

--cifar10c=generate corrupts the run's own clean test set with
robust_ssl.data.corruptions (offline). Outputs (CSV, JSON, markdown table,
heat map, bar chart) go to --output_dir (default <workdir>/robustness).

--adapt compares test-time adaptation modes in one run (each cell scored by
every mode, the model reset between cells): none (the model as trained), bn
(batch norm with the test batch's statistics; --bn_prior mixes in the training
statistics), tent (entropy minimisation on the batch-norm scale and shift),
ttt (a few SGD steps on the run's self-supervised losses per test batch).
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
_ADAPT = flags.DEFINE_string("adapt", None, "Test-time adaptation modes to compare: none,bn,tent,ttt.")
_ADAPT_BATCH = flags.DEFINE_integer("adapt_batch_size", 200, "Test batch size of the adaptation modes.")
_BN_PRIOR = flags.DEFINE_float("bn_prior", 0.0, "bn: prior strength N of the training statistics (0 = none).")
_TENT_LR = flags.DEFINE_float("tent_lr", 1e-3, "tent: Adam learning rate.")
_TENT_STEPS = flags.DEFINE_integer("tent_steps", 1, "tent: steps per test batch.")
_TENT_EPISODIC = flags.DEFINE_boolean("tent_episodic", False, "tent: reset before every batch.")
_TTT_TASKS = flags.DEFINE_string(
    "ttt_tasks", "", "ttt: tasks to adapt with (default: the run's rotation-like tasks)."
)
_TTT_LR = flags.DEFINE_float("ttt_lr", 1e-3, "ttt: SGD learning rate.")
_TTT_STEPS = flags.DEFINE_integer("ttt_steps", 3, "ttt: SGD steps per test batch.")
_TTT_PARAMS = flags.DEFINE_enum("ttt_params", "trunk", ["trunk", "bn"], "ttt: what it updates.")
_TTT_ONLINE = flags.DEFINE_boolean("ttt_online", False, "ttt: keep the adaptation within a cell.")
flags.mark_flag_as_required("cifar10c")


def main(argv):
    from robust_ssl.data import cifar10c
    from robust_ssl.robustness import adaptation, evaluation

    with cli.user_errors():
        cli.no_arguments(argv)
        adapt = adaptation.parse_modes(_ADAPT.value) if _ADAPT.value else None
        settings = adaptation.Settings(
            batch_size=_ADAPT_BATCH.value,
            bn_prior=_BN_PRIOR.value,
            tent_lr=_TENT_LR.value,
            tent_steps=_TENT_STEPS.value,
            tent_episodic=_TENT_EPISODIC.value,
            ttt_tasks=_TTT_TASKS.value,
            ttt_lr=_TTT_LR.value,
            ttt_steps=_TTT_STEPS.value,
            ttt_params=_TTT_PARAMS.value,
            ttt_online=_TTT_ONLINE.value,
            seed=_SEED.value,
        )
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
            adapt=adapt,
            adapt_settings=settings,
        )
    with open(paths["markdown"]) as f:
        print(f.read())
    print("outputs:")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
