r"""Searches fixed λ with keras-tuner (the baseline AutoML competes with).

  robust-ssl tune --config=smoke_tune --workdir=runs/tune \
      --tuner=random --max_trials=4
  robust-ssl tune --config=automl4 --workdir=runs/tune4 \
      --tuner=bayesian --max_trials=20 --epochs=10 --tune_learning_rate

Every trial trains with fixed λ (AutoML off) and is scored by `val_accuracy` on
the validation set the config's `automl.validation` settings give the AutoML
meta loss. Running the same command again continues an interrupted search,
also one killed at any moment: finished trials are kept, the trial that was
running is run again (a larger --max_trials extends a finished one). Writes the trials table,
search.json (wall time, CPU hours), best_lambdas.json and best_config.py
(train it with `robust-ssl train --config=<workdir>/best_config.py`).
"""

from absl import flags
from ml_collections import config_flags

from robust_ssl import cli, configs

# robust_ssl.cli resolves a config name given to this flag into its file. No
# default file here: ml_collections would load it now, and the configs import
# TensorFlow; robust_ssl.cli gives the default config where none is named.
CONFIG_FLAG = configs.FLAG
_CONFIG = config_flags.DEFINE_config_file(CONFIG_FLAG, None, configs.help_text("Base experiment config"))
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the search; an existing search there resumes.")
_TUNER = flags.DEFINE_enum("tuner", "random", ["random", "bayesian", "hyperband"], "keras-tuner oracle.")
_MAX_TRIALS = flags.DEFINE_integer("max_trials", 10, "Total number of trials, counting earlier sessions.")
_EPOCHS = flags.DEFINE_integer("epochs", 0, "Trial budget in epochs (0: config.train.epochs).")
_STEPS = flags.DEFINE_integer(
    "steps_per_epoch", 0, "Trial steps per epoch (0: config.train.steps_per_epoch, 0 there = one pass)."
)
_LAMBDA_MIN = flags.DEFINE_float("lambda_min", 0.0, "Lower end of every λ's range.")
_LAMBDA_MAX = flags.DEFINE_float("lambda_max", 2.0, "Upper end of every λ's range.")
_SAMPLING = flags.DEFINE_enum("lambda_sampling", "linear", ["linear", "log"], "How λ is sampled.")
_TUNE_LR = flags.DEFINE_bool("tune_learning_rate", False, "Also search the initial learning rate (log).")
_LR_MIN = flags.DEFINE_float("lr_min", 0.01, "Lower end of the learning-rate range.")
_LR_MAX = flags.DEFINE_float("lr_max", 0.3, "Upper end of the learning-rate range.")
_FACTOR = flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Discard a search already in --workdir.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    from robust_ssl.tuning import hypermodel, search

    with cli.user_errors():
        cli.no_arguments(argv)
        space = hypermodel.SearchSpace(
            lambda_min=_LAMBDA_MIN.value,
            lambda_max=_LAMBDA_MAX.value,
            lambda_sampling=_SAMPLING.value,
            tune_learning_rate=_TUNE_LR.value,
            lr_min=_LR_MIN.value,
            lr_max=_LR_MAX.value,
        )
        result = search.search(
            _CONFIG.value,
            _WORKDIR.value,
            tuner=_TUNER.value,
            max_trials=_MAX_TRIALS.value,
            space=space,
            epochs=_EPOCHS.value or None,
            steps_per_epoch=_STEPS.value or None,
            config_file=config_flags.get_config_filename(flags.FLAGS[CONFIG_FLAG]),
            overwrite=_OVERWRITE.value,
            hyperband_factor=_FACTOR.value,
        )
    print(search.summary(result, _WORKDIR.value))
