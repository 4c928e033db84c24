"""The keras-tuner tuner of a λ search: its kinds, its dependencies, its trial callbacks.

`make_tuner` builds a random, Bayesian or Hyperband tuner over a hypermodel
(`robust_ssl.tuning.hypermodel`), its project in <workdir>/keras_tuner,
reloading an interrupted one after mending what a kill left
(`robust_ssl.tuning.resume`). Its trial starts and ends are reported to a
recorder (`robust_ssl.tuning.recorder`); the search that runs it:
`robust_ssl.tuning.search`.
"""

import os

from robust_ssl import killpoints, rundir
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tuning.hypermodel import OBJECTIVE, import_keras_tuner
from robust_ssl.tuning.resume import (
    atomic_state_files,
    atomic_trial_files,
    mend_after_kill,
    reload_an_oracle_without_its_tuner_file,
    write_state,
)

TUNERS = ("random", "bayesian", "hyperband")


def check_tuner_dependencies(kind):
    """Refuses a tuner whose optional dependency is missing, in one line.

    keras-tuner's Bayesian oracle needs scikit-learn, an optional dependency of keras-tuner.

    Args:
      kind: one of `TUNERS`.

    Raises:
      UserError: `kind` is "bayesian" and scikit-learn is not installed.
    """
    if kind == "bayesian":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise UserError(
                "--tuner=bayesian needs scikit-learn: pip install 'keras-tuner[bayesian]' "
                "(or pip install scikit-learn)"
            ) from None


def make_tuner(
    kind, hypermodel, workdir, max_trials, seed=1, overwrite=False, hyperband_factor=3, recorder=None
):
    """A keras-tuner tuner of the given kind with its project in <workdir>/keras_tuner.

    With `overwrite=False` an existing project is reloaded: finished trials are
    kept, a trial that was running when the search stopped is run again (same
    id and values), and `max_trials` counts all trials, old and new.

    Args:
      kind: "random", "bayesian" or "hyperband".
      hypermodel: from `make_hypermodel`.
      workdir: the search's workdir.
      max_trials: total number of trials (also caps Hyperband's brackets).
      seed: the oracle's seed (keras-tuner treats 0 as "pick one at random").
      overwrite: delete an existing project first.
      hyperband_factor: Hyperband's reduction factor.
      recorder: optional object with trial_begin(id) / trial_end(id).

    Returns:
      A `keras_tuner.Tuner`.
    """
    keras_tuner = import_keras_tuner()
    if kind not in TUNERS:
        raise ConfigError(f"tuner must be one of {', '.join(TUNERS)}; got {kind!r}")
    if int(max_trials) < 1:
        raise ConfigError(f"max_trials must be >= 1; got {max_trials}")
    check_tuner_dependencies(kind)
    atomic_trial_files()
    project = os.path.join(workdir, rundir.TUNER_PROJECT)
    if not overwrite:
        reload_an_oracle_without_its_tuner_file(project)
        mend_after_kill(project)
    common = dict(
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        directory=workdir,
        project_name=rundir.TUNER_PROJECT,
        overwrite=overwrite,
        seed=int(seed),
        # A diverging λ (NaN loss) fails its trial; the search goes on.
        max_consecutive_failed_trials=3,
    )
    if kind == "random":
        tuner = _recorded(keras_tuner.RandomSearch)(hypermodel, max_trials=int(max_trials), **common)
    elif kind == "bayesian":
        tuner = _recorded(keras_tuner.BayesianOptimization)(hypermodel, max_trials=int(max_trials), **common)
    else:
        tuner = _recorded(keras_tuner.Hyperband)(
            hypermodel, max_epochs=hypermodel.epochs, factor=int(hyperband_factor), **common
        )
        # Hyperband sizes its brackets from max_epochs; the oracle's generic
        # max_trials check still applies, so --max_trials bounds it too.
        tuner.oracle.max_trials = int(max_trials)
    tuner.recorder = recorder
    atomic_state_files(tuner)
    return tuner


def _recorded(base):
    """A subclass of the tuner class `base` that reports trial starts and ends to `.recorder`.

    It also writes its own state file atomically and passes the
    `tune.trial_end` kill point after a trial's end is recorded.
    """

    class Recorded(base):
        recorder = None

        def on_trial_begin(self, trial):
            if self.recorder is not None:
                self.recorder.trial_begin(trial.trial_id)
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            if self.recorder is not None:
                self.recorder.trial_end(trial.trial_id)
            killpoints.reached("tune.trial_end")

        def save(self):
            # BaseTuner.save, with the tuner's file written atomically too.
            self.oracle.save()
            write_state(os.path.join(self.project_dir, f"{self.tuner_id}.json"), self.get_state())

    Recorded.__name__ = Recorded.__qualname__ = base.__name__
    return Recorded
