"""Searching fixed λ with keras-tuner: the baseline that AutoML competes with.

`search(config, workdir, tuner="random", max_trials=10)` runs a keras-tuner
search over the fixed λ_i of `config.tasks` (and optionally the learning rate).
Every trial trains a fresh model with fixed λ for the trial budget and is
scored by its accuracy on the *same* validation images the AutoML meta loss of
`config.automl.validation` would use (`train.meta_validation`): the held-out
training images (clean or corrupted) are removed from the trial's training set
exactly as an AutoML run removes them, so a search and an AutoML run see the
same data and compete fairly.

The workdir of a search holds:
  keras_tuner/        keras-tuner's project (oracle.json, trial_<id>/trial.json,
                      best-epoch weights); an interrupted search resumes from it
  tensorboard/        per-trial logs with the HParams dashboard
  search.json         settings, sessions (wall time, CPU time), per-trial times,
                      the best trial; read by `robust_ssl.compare`
  trials.csv          one row per trial: λ, learning rate, val accuracy, time
  best_lambdas.json   the best λ (and learning rate)
  best_config.py      the base config file + its overrides + the best λ, ready
                      for `robust-ssl train --config=<workdir>/best_config.py`
  model.keras, config.json, meta_validation.json
                      the best trial's model and config, so that
                      `robust-ssl evaluate --workdir=<workdir>` scores it
"""

import copy
import dataclasses
import datetime
import os
import time

from robust_ssl import config_utils, configs, rundir
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import parse_task_names

OBJECTIVE = "val_accuracy"
TUNERS = ("random", "bayesian", "hyperband")
SAMPLINGS = ("linear", "log")
LEARNING_RATE = "learning_rate"


def lambda_hp_name(task):
    """The keras-tuner hyper-parameter name of the λ of `task`."""
    return f"lambda_{task}"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What a search varies.

    Attributes:
      lambda_min, lambda_max: range of every λ_i (default [0, 2]).
      lambda_sampling: "linear" (uniform) or "log" (log-uniform; needs
        lambda_min > 0).
      tune_learning_rate: also search the initial learning rate.
      lr_min, lr_max: its range, always sampled log-uniformly.
    """

    lambda_min: float = 0.0
    lambda_max: float = 2.0
    lambda_sampling: str = "linear"
    tune_learning_rate: bool = False
    lr_min: float = 0.01
    lr_max: float = 0.3

    def validate(self):
        """Raises ConfigError with one line for an empty or impossible range."""
        if self.lambda_sampling not in SAMPLINGS:
            raise ConfigError(f"λ sampling must be one of {SAMPLINGS}; got {self.lambda_sampling!r}")
        if not 0 <= self.lambda_min < self.lambda_max:
            raise ConfigError(
                f"λ range must satisfy 0 <= min < max; got [{self.lambda_min}, {self.lambda_max}]"
            )
        if self.lambda_sampling == "log" and self.lambda_min <= 0:
            raise ConfigError(
                f"log sampling of λ needs a minimum > 0 (log 0 is undefined); got {self.lambda_min}"
            )
        if self.tune_learning_rate and not 0 < self.lr_min < self.lr_max:
            raise ConfigError(
                f"learning-rate range must satisfy 0 < min < max; got [{self.lr_min}, {self.lr_max}]"
            )

    def to_dict(self):
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- data
@dataclasses.dataclass
class SearchData:
    """The data every trial shares (loaded once per search).

    Attributes:
      train: (images, labels) arrays of the training examples without the
        held-out ones (`pipeline.to_arrays`), read once for all trials.
      num_train: their number.
      validation: (image, label) examples of the objective: the AutoML
        meta-validation set of the config.
      num_validation: their number (None if unknown).
      record: what `meta_validation.json` of an AutoML run would say.
      test: the clean test set; num_test: its size.
      num_classes, class_names, image_shape: of the data set.
    """

    train: object
    num_train: int
    validation: object
    num_validation: object
    record: dict
    test: object
    num_test: int
    num_classes: int
    class_names: list
    image_shape: tuple


def _copy(config):
    """A deep, unlocked copy of a ConfigDict (config files are locked by config_flags)."""
    clone = copy.deepcopy(config)
    if hasattr(clone, "unlock"):
        clone.unlock()
    return clone


def load_search_data(config):
    """Loads the data and splits off the validation set the AutoML meta loss would use.

    The split is made by `train.meta_validation` itself, on a copy of the
    config with `automl.enabled=True`, so that the objective of a fixed-λ trial
    is measured on exactly the images (held out, corrupted, or CIFAR-10-C) an
    AutoML run with the same `automl.validation` settings validates λ on, and
    the trial trains on exactly the images that run trains on.

    Args:
      config: the experiment ConfigDict.

    Returns:
      `SearchData`.

    Raises:
      UserError: data not available, bad hold-out size.
    """
    from robust_ssl import train as train_lib
    from robust_ssl.data import datasets

    meta_config = _copy(config)
    meta_config.automl.enabled = True
    # validate() checks automl.validation only where AutoML is on: check it here.
    config_utils.validate(meta_config)
    data = datasets.load_data(config.data)
    train_arrays, validation, record = train_lib.meta_validation(meta_config, data)
    cardinality = int(validation.cardinality())
    num_validation = cardinality if cardinality >= 0 else None
    record = dict(record, num_images=num_validation)
    return SearchData(
        train=train_arrays,  # read once for all trials
        num_train=len(train_arrays[1]),
        validation=validation,
        num_validation=num_validation,
        record=record,
        test=data.test,
        num_test=int(data.num_test),
        num_classes=data.num_classes,
        class_names=list(data.class_names) if data.class_names else None,
        image_shape=tuple(data.image_shape),
    )


# --------------------------------------------------------------------------- the hypermodel
def _keras_tuner():
    try:
        import keras_tuner
    except ImportError as e:  # pragma: no cover - a packaging problem
        raise UserError(f"keras-tuner is not installed ({e}); pip install keras-tuner") from None
    return keras_tuner


def make_hypermodel(config, space=None, epochs=None, steps_per_epoch=None, data=None, on_epoch_end=None):
    """The keras-tuner HyperModel of a λ search (see `LambdaHyperModel`).

    Args:
      config: the base experiment ConfigDict (its tasks are searched).
      space: a `SearchSpace` (default: λ in [0, 2], linear, fixed learning rate).
      epochs: trial budget in epochs (None: config.train.epochs).
      steps_per_epoch: trial steps per epoch (None: config.train.steps_per_epoch,
        where 0 means one pass over the training images).
      data: `SearchData` to reuse (None: loaded on first use).
      on_epoch_end: optional function called after every trial epoch (the
        search uses it to keep search.json's time up to date).

    Returns:
      A `keras_tuner.HyperModel`.
    """
    keras_tuner = _keras_tuner()

    class LambdaHyperModel(keras_tuner.HyperModel):
        """Builds a fixed-λ model from hyper-parameters and trains it for the trial budget.

        Hyper-parameters: `lambda_<task>` for every task of the config, and
        `learning_rate` when the space says so. The objective is
        `val_accuracy` on the AutoML meta-validation set, per epoch; keras-tuner
        scores a trial by its best epoch (with the cosine schedule normally the
        last).
        """

        def __init__(self):
            super().__init__(name="robust_ssl_lambda_search")
            self.base_config = _copy(config)
            self.space = space or SearchSpace()
            self.space.validate()
            self.task_names = parse_task_names(config.tasks)
            if not self.task_names:
                raise ConfigError("a λ search needs at least one task in config.tasks")
            self.epochs = int(epochs or config.train.epochs)
            self._steps = steps_per_epoch
            self._data = data
            self.on_epoch_end = on_epoch_end

        def data(self):
            if self._data is None:
                self._data = load_search_data(self.base_config)
            return self._data

        def steps_per_epoch(self):
            steps = self._steps if self._steps else self.base_config.train.steps_per_epoch
            batch = self.base_config.train.batch_size
            if not steps:
                if self.data().num_train < batch:
                    raise ConfigError(
                        f"the training set has {self.data().num_train} images, fewer than one batch of {batch}"
                    )
                steps = self.data().num_train // batch
            return int(steps)

        def trial_config(self, hp):
            """The experiment config of one trial: the base config with fixed λ from `hp`."""
            trial = _copy(self.base_config)
            # Trials train with fixed λ; the meta-validation images are still
            # held out (see `load_search_data`), as in an AutoML run.
            trial.automl.enabled = False
            trial.train.epochs = self.epochs
            trial.train.steps_per_epoch = self.steps_per_epoch()
            s = self.space
            for name in self.task_names:
                trial.task_weights[name] = hp.Float(
                    lambda_hp_name(name), s.lambda_min, s.lambda_max, sampling=s.lambda_sampling
                )
            if s.tune_learning_rate:
                lr = hp.Float(LEARNING_RATE, s.lr_min, s.lr_max, sampling="log")
                trial.train.learning_rate = lr
                trial.train.min_learning_rate = min(trial.train.min_learning_rate, lr)
            return trial

        def build(self, hp):
            import keras

            from robust_ssl import train as train_lib

            trial = self.trial_config(hp)
            data = self.data()
            # Same initial weights in every trial: trials differ by their
            # hyper-parameters only (common random numbers).
            keras.utils.set_random_seed(trial.seed)
            return train_lib.build_model(
                trial, data.num_classes, trial.train.steps_per_epoch, data.class_names
            )

        def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, verbose=None, **kwargs):
            import keras

            from robust_ssl.data import pipeline

            trial = self.trial_config(hp)
            data = self.data()
            steps = trial.train.steps_per_epoch
            # Hyperband continues a trial from the weights of an earlier one:
            # resume the cosine schedule and the data stream where it stopped.
            start_step = int(initial_epoch or 0) * steps
            train_ds = pipeline.training_dataset(
                data.train,
                model.tasks,
                trial.train.batch_size,
                seed=trial.seed,
                augment_images=trial.data.augment,
                start_step=start_step,
            )
            val_ds = pipeline.evaluation_dataset(data.validation, trial.train.eval_batch_size)
            if start_step:
                model.optimizer.iterations.assign(start_step)
            callbacks = list(callbacks or [])
            if self.on_epoch_end is not None:
                callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: self.on_epoch_end()))
            return model.fit(
                train_ds,
                epochs=int(epochs or trial.train.epochs),
                initial_epoch=int(initial_epoch),
                steps_per_epoch=steps,
                validation_data=val_ds,
                callbacks=callbacks,
                verbose=trial.train.verbose if verbose is None else verbose,
                shuffle=False,  # the pipeline shuffles; Keras cannot shuffle a tf.data stream (and warns)
            )

    return LambdaHyperModel()


def _check_tuner_dependencies(kind):
    """keras-tuner's Bayesian oracle needs scikit-learn, an optional dependency of keras-tuner."""
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
    keras_tuner = _keras_tuner()
    if kind not in TUNERS:
        raise ConfigError(f"tuner must be one of {', '.join(TUNERS)}; got {kind!r}")
    if int(max_trials) < 1:
        raise ConfigError(f"max_trials must be >= 1; got {max_trials}")
    _check_tuner_dependencies(kind)
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
    return tuner


# --------------------------------------------------------------------------- bookkeeping
def _device():
    """Which device the trials run on: model.fit without a strategy uses one."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"kind": "GPU" if gpus else "CPU", "count": 1}


class _Recorder:
    """Keeps <workdir>/search.json current: sessions, wall and CPU time, trial times.

    Time is accumulated over sessions (a resumed search adds to it) and written
    at every trial start, epoch end and trial end, so a killed search loses at
    most one epoch of its account.
    """

    def __init__(self, path, header, wall0=None, cpu0=None):
        self.path = path
        self.state = rundir.read_json(path) if os.path.exists(path) else {}
        self.state.update(header)
        self.state.setdefault("sessions", [])
        self.state.setdefault("trials", {})
        self._wall0 = time.time() if wall0 is None else wall0
        self._cpu0 = time.process_time() if cpu0 is None else cpu0
        self.session = {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "wall_time_s": 0.0,
            "cpu_time_s": 0.0,
            "trials_run": [],
        }
        self.state["sessions"].append(self.session)
        self._trial = None
        self.save()

    def trial_begin(self, trial_id):
        self._trial = (trial_id, time.time(), time.process_time())
        if trial_id not in self.session["trials_run"]:
            self.session["trials_run"].append(trial_id)
        self.save()

    def trial_end(self, trial_id):
        if self._trial and self._trial[0] == trial_id:
            _, wall0, cpu0 = self._trial
            # A retried trial (interrupted earlier) keeps its latest, complete run's time.
            self.state["trials"][trial_id] = {
                "wall_time_s": round(time.time() - wall0, 2),
                "cpu_time_s": round(time.process_time() - cpu0, 2),
            }
        self._trial = None
        self.save()

    def save(self):
        self.session["wall_time_s"] = round(time.time() - self._wall0, 2)
        self.session["cpu_time_s"] = round(time.process_time() - self._cpu0, 2)
        wall = sum(s["wall_time_s"] for s in self.state["sessions"])
        cpu = sum(s["cpu_time_s"] for s in self.state["sessions"])
        devices = self.state.get("device", {}).get("count", 1)
        self.state.update(
            wall_time_s=round(wall, 2),
            cpu_hours=round(cpu / 3600, 6),
            device_hours=round(wall * devices / 3600, 6),
        )
        rundir.write_json(self.path, self.state)


def _recorded(base):
    """A subclass of the tuner class `base` that reports trial starts and ends to `.recorder`."""

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

    Recorded.__name__ = Recorded.__qualname__ = base.__name__
    return Recorded


def _check_resumable(state, header, workdir):
    """Refuses to continue a search with other settings (the oracle would mix them)."""
    changed = []
    for key in ("tuner", "space", "epochs", "steps_per_epoch", "seed"):
        if key in state and state[key] != header[key]:
            changed.append(key)
    changed += [f"config.{k}" for k in config_utils.changed_keys(state.get("config", {}), header["config"])]
    if changed:
        raise UserError(
            f"{workdir} holds a search with other settings ({', '.join(changed[:5])}"
            f"{', …' if len(changed) > 5 else ''}); use another --workdir or --overwrite to start afresh"
        )


# --------------------------------------------------------------------------- results
def trial_rows(tuner, task_names, recorder_state=None):
    """One dict per trial, in start order.

    Args:
      tuner: a tuner after (or during) a search.
      task_names: the searched tasks.
      recorder_state: the search.json dict (for trial times), optional.

    Returns:
      list of dicts: trial, status, lambda_<task>..., learning_rate,
      val_accuracy (None if unfinished or failed), wall_time_s.
    """
    times = (recorder_state or {}).get("trials", {})
    rows = []
    oracle = tuner.oracle
    order = list(oracle.start_order) or sorted(oracle.trials)
    for trial_id in order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial": trial_id, "status": str(trial.status)}
        for name in task_names:
            row[lambda_hp_name(name)] = values.get(lambda_hp_name(name))
        row[LEARNING_RATE] = values.get(LEARNING_RATE)
        if "tuner/epochs" in values:
            row["epochs"] = values["tuner/epochs"]
        score = trial.score if trial.status == "COMPLETED" else None
        row[OBJECTIVE] = float(score) if score is not None else None
        row["wall_time_s"] = times.get(trial_id, {}).get("wall_time_s")
        rows.append(row)
    return rows


def _fmt(value, digits=4):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def results_table(rows, task_names, base_learning_rate, best_trial=None):
    """A markdown table of the trials: λ per task, learning rate, val accuracy, time.

    Args:
      rows: from `trial_rows`.
      task_names: the searched tasks.
      base_learning_rate: shown for trials that did not search the learning rate.
      best_trial: id of the best trial (marked with *).

    Returns:
      The table as a string.
    """
    hyperband = any("epochs" in r for r in rows)
    header = ["trial", *[f"λ {n}" for n in task_names], "lr", *(["epochs"] if hyperband else [])]
    header += ["val accuracy", "time (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lr = r[LEARNING_RATE] if r[LEARNING_RATE] is not None else base_learning_rate
        cells = [r["trial"] + (" *" if r["trial"] == best_trial else "")]
        cells += [_fmt(r[lambda_hp_name(n)], 3) for n in task_names]
        cells += [_fmt(float(lr), 4)]
        if hyperband:
            cells.append(str(r.get("epochs", "–")))
        cells += [_fmt(r[OBJECTIVE]), _fmt(r["wall_time_s"], 1), r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_trials_csv(path, rows):
    rundir.write_csv(path, rows, dict.fromkeys(k for r in rows for k in r))


# --------------------------------------------------------------------------- best config file
def split_config_path(config_file):
    """(absolute path, argument or None) of a config given by name or file, `name|path[:arg]`."""
    path, _, arg = configs.resolve(config_file).partition(":")
    return path, (arg or None)


def load_config_file(config_file):
    """Calls `get_config()` of a config, as the `--config` flag does.

    Args:
      config_file: a packaged config's name or a file, `name|path.py[:argument]`.

    Returns:
      The ConfigDict.
    """
    return configs.load(config_file)


def config_overrides(base, config):
    """Settings of `config` that differ from `base` (e.g. command-line overrides).

    Args:
      base: the config file's `get_config()`.
      config: the config the search ran with.

    Returns:
      list of (dotted key, value), in key order.
    """
    old, new = config_utils.flatten(base), config_utils.flatten(config)
    return [(k, new[k]) for k in sorted(new) if k not in old or old[k] != new[k]]


_LITERALS = (bool, int, float, str, type(None))


def _assignment(key, value):
    if isinstance(value, (list, tuple)):
        ok = all(isinstance(v, _LITERALS) for v in value)
    else:
        ok = isinstance(value, _LITERALS)
    if not ok:
        raise UserError(
            f"cannot write setting {key}={value!r} of type {type(value).__name__} to a config file"
        )
    parts = key.split(".")
    if all(p.isidentifier() for p in parts):
        target = "config." + key
    else:
        target = "config" + "".join(f"[{p!r}]" for p in parts)
    return f"    {target} = {value!r}"


def render_best_config(config_file, config, best, description="", output_path=None):
    """The text of a config file: the base file + the search's overrides + the best values.

    Args:
      config_file: the base config, by name or file (`name|path.py[:arg]`); a
        packaged config is imported as `from robust_ssl.configs import name`
        (as the packaged configs import each other), any other file by its
        absolute path, so the result works from any directory.
      config: the config the search ran with (the file's config plus overrides).
      best: dict with "lambdas" (task -> λ) and "learning_rate" (or None).
      description: first docstring lines.
      output_path: where the file will be written (named in its docstring).

    Returns:
      Python source.
    """
    path, arg = split_config_path(config_file)
    base = load_config_file(config_file)
    # Run-time switches (progress bar, overwrite) are not part of the experiment.
    searched = {f"task_weights.{t}" for t in best["lambdas"]} | {
        "automl.enabled",
        *config_utils.RESUME_FREE_KEYS,
    }
    if best.get("learning_rate") is not None:
        searched |= {"train.learning_rate", "train.min_learning_rate"}
    overrides = [(k, v) for k, v in config_overrides(base, config) if k not in searched]

    lines = ['"""' + (description or "The best λ of a keras-tuner search."), ""]
    lines += [
        "Generated by robust_ssl.tuning; train with",
        f"  robust-ssl train --config={output_path or '<this file>'} --workdir=<run directory>",
        '"""',
        "",
    ]
    packaged = configs.name_of(path)
    if packaged is not None:
        lines += [f"from robust_ssl.configs import {packaged} as _base", ""]
    else:
        lines += [
            "import importlib.util",
            "",
            f"_BASE_FILE = {path!r}",
            '_spec = importlib.util.spec_from_file_location("_best_config_base", _BASE_FILE)',
            "_base = importlib.util.module_from_spec(_spec)",
            "_spec.loader.exec_module(_base)",
            "",
        ]
    lines += ["", "def get_config():", f"    config = _base.get_config({repr(arg) if arg else ''})"]
    if overrides:
        lines.append("    # Settings the search ran with that differ from the base file.")
        lines += [_assignment(k, v) for k, v in overrides]
    lines.append("    # The best values of the search; trained with fixed λ.")
    lines.append("    config.automl.enabled = False")
    for task, value in best["lambdas"].items():
        lines.append(_assignment(f"task_weights.{task}", float(value)))
    if best.get("learning_rate") is not None:
        lr = float(best["learning_rate"])
        lines.append(_assignment("train.learning_rate", lr))
        lines.append(_assignment("train.min_learning_rate", min(float(config.train.min_learning_rate), lr)))
    lines += ["    return config", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the search
def search(
    config,
    workdir,
    tuner="random",
    max_trials=10,
    space=None,
    epochs=None,
    steps_per_epoch=None,
    config_file=None,
    overwrite=False,
    hyperband_factor=3,
    log=print,
):
    """Runs (or resumes) a keras-tuner search of fixed λ and writes its results.

    Args:
      config: the base experiment ConfigDict; its tasks are searched, its
        `automl.validation` settings choose the validation set of the objective
        (AutoML itself is off in every trial).
      workdir: output directory; a search already there is resumed.
      tuner: "random", "bayesian" or "hyperband".
      max_trials: total number of trials, counting those of earlier sessions.
      space: a `SearchSpace` (default λ in [0, 2], linear; fixed learning rate).
      epochs, steps_per_epoch: trial budget (None: the config's). The best
        config file keeps the config's own budget for the final training.
      config_file: the base config by name or file (`name|path[:arg]`),
        imported by best_config.py; None: the packaged `default`.
      overwrite: discard a search already in workdir.
      hyperband_factor: Hyperband's reduction factor.
      log: function for one-line notes.

    Returns:
      The search.json dict (settings, sessions, times, "best", "rows", "table").

    Raises:
      ConfigError / UserError: bad settings, unavailable data, a workdir holding
        a search with other settings, or no trial completing.
    """
    import keras

    # The search's cost counts from here, data loading included (as a training
    # run's wall_time_s does).
    wall0, cpu0 = time.time(), time.process_time()
    space = space or SearchSpace()
    space.validate()
    config_utils.validate(config)
    task_names = parse_task_names(config.tasks)
    if not task_names:
        raise ConfigError("a λ search needs at least one task in config.tasks")
    if tuner not in TUNERS:
        raise ConfigError(f"tuner must be one of {', '.join(TUNERS)}; got {tuner!r}")
    if int(max_trials) < 1:
        raise ConfigError(f"max_trials must be >= 1; got {max_trials}")
    _check_tuner_dependencies(tuner)
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if value is not None and int(value) < 0:
            raise ConfigError(f"{name} must be >= 0; got {value}")
    config_file = config_file or configs.DEFAULT
    os.makedirs(workdir, exist_ok=True)
    search_path = os.path.join(workdir, rundir.SEARCH)
    if overwrite and os.path.exists(search_path):
        os.remove(search_path)
    header = {
        "tuner": tuner,
        "objective": OBJECTIVE,
        "max_trials": int(max_trials),
        "space": space.to_dict(),
        "epochs": int(epochs or config.train.epochs),
        "steps_per_epoch": int(steps_per_epoch or config.train.steps_per_epoch),
        "seed": int(config.seed),
        "tasks": task_names,
        "base_config_file": split_config_path(config_file)[0],
        "config": config_utils.to_dict(config),
    }
    if os.path.exists(search_path):
        _check_resumable(rundir.read_json(search_path), header, workdir)
    elif not overwrite and os.path.isdir(os.path.join(workdir, rundir.TUNER_PROJECT)):
        raise UserError(
            f"{workdir} holds a keras-tuner project but no {rundir.SEARCH}; use --overwrite to start afresh"
        )

    # Everything that can fail on user input fails here, before any trial.
    data = load_search_data(config)
    log(
        f"validation of the objective: {data.record['source']} ({data.num_validation} images); "
        f"trials train on {data.num_train} images"
    )
    header.update(validation=data.record, num_train=data.num_train, device=_device())
    recorder = _Recorder(search_path, header, wall0, cpu0)
    hypermodel = make_hypermodel(
        config, space, epochs=epochs, steps_per_epoch=steps_per_epoch, data=data, on_epoch_end=recorder.save
    )
    # Steps one full trial trains (for plots next to the λ trajectories of runs).
    recorder.state["trial_steps"] = hypermodel.epochs * hypermodel.steps_per_epoch()
    kt = make_tuner(
        tuner,
        hypermodel,
        workdir,
        max_trials,
        # keras-tuner treats seed 0 as "draw a seed at random"; keep the search reproducible.
        seed=int(config.seed) + 1,
        overwrite=overwrite,
        hyperband_factor=hyperband_factor,
        recorder=recorder,
    )
    done = len(kt.oracle.trials)
    if done:
        log(f"resuming the search in {workdir}: {done} trial(s) there, max_trials={max_trials}")
    tensorboard = keras.callbacks.TensorBoard(os.path.join(workdir, rundir.TENSORBOARD), write_graph=False)
    try:
        kt.search(callbacks=[tensorboard], verbose=config.train.verbose)
    except RuntimeError as e:  # keras-tuner gives up after consecutive failed trials
        if "consecutive failures" not in str(e):
            raise
        recorder.save()
        detail = [line for line in str(e).splitlines() if line.strip()]
        raise UserError(f"the search stopped: {detail[0]} Last error: {detail[-1][:300]}") from None
    recorder.save()
    return _finish(kt, recorder, hypermodel, data, config, config_file, workdir, task_names, log)


def _finish(kt, recorder, hypermodel, data, config, config_file, workdir, task_names, log):
    """After the search: best trial, its test accuracy and files, the table."""
    from robust_ssl.data import pipeline

    state = recorder.state
    rows = trial_rows(kt, task_names, state)
    best_trials = kt.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].status != "COMPLETED":
        _write_trials_csv(os.path.join(workdir, rundir.TRIALS), rows)
        raise UserError(f"no trial of the search in {workdir} completed; see {rundir.TRIALS}")
    best_trial = best_trials[0]
    hp = best_trial.hyperparameters
    lambdas = {name: float(hp.get(lambda_hp_name(name))) for name in task_names}
    lr = float(hp.get(LEARNING_RATE)) if LEARNING_RATE in hp.values else None
    trial_config = hypermodel.trial_config(hp)

    # The best trial's model on the clean test set, with the same budget and
    # training images as an AutoML run: the number to put next to its accuracy.
    model = kt.get_best_models(1)[0]
    test_ds = pipeline.evaluation_dataset(data.test, config.train.eval_batch_size)
    evaluation = model.evaluate(test_ds, return_dict=True, verbose=0)
    rundir.save_model(model, os.path.join(workdir, rundir.MODEL))
    config_utils.write(trial_config, workdir)
    rundir.write_json(os.path.join(workdir, rundir.META_VALIDATION), data.record)

    best = {
        "trial": best_trial.trial_id,
        OBJECTIVE: float(best_trial.score),
        "lambdas": lambdas,
        "learning_rate": lr,
        "test_accuracy": float(evaluation["accuracy"]),
        "num_test": data.num_test,
    }
    state["best"] = best
    state["num_trials"] = len(rows)
    state["completed_trials"] = sum(r["status"] == "COMPLETED" for r in rows)
    recorder.save()
    _write_trials_csv(os.path.join(workdir, rundir.TRIALS), rows)
    rundir.write_json(
        os.path.join(workdir, rundir.BEST_LAMBDAS),
        {**best, "tasks": task_names, "validation": data.record, "tuner": state["tuner"]},
    )
    description = (
        f"The best λ of a {state['tuner']} keras-tuner search in {os.path.abspath(workdir)}\n"
        f"(trial {best_trial.trial_id} of {len(rows)}: val_accuracy {best_trial.score:.4f} on "
        f"{data.record['source']}, {data.num_validation} images)."
    )
    path = os.path.join(workdir, rundir.BEST_CONFIG)
    source = render_best_config(config_file, config, best, description, output_path=path)
    rundir.write_text(path, source)
    table = results_table(rows, task_names, float(config.train.learning_rate), best_trial.trial_id)
    return {**state, "rows": rows, "table": table}


def summary(result, workdir):
    """A short end-of-search report for the command line.

    Args:
      result: the dict `search` returns.
      workdir: the search's workdir.

    Returns:
      Text: the trials table, the best values, time spent and the files.
    """
    best = result["best"]
    session = result["sessions"][-1]
    lines = [
        result["table"],
        "",
        f"best trial {best['trial']}: val_accuracy {best[OBJECTIVE]:.4f}, "
        f"clean test accuracy {best['test_accuracy']:.4f}",
        "best λ: " + ", ".join(f"{k}={v:.4f}" for k, v in best["lambdas"].items()),
    ]
    if best["learning_rate"] is not None:
        lines.append(f"best learning rate: {best['learning_rate']:.5g}")
    lines.append(
        f"this session: {len(session['trials_run'])} trial(s), {session['wall_time_s']:.0f} s; "
        f"whole search: {result['wall_time_s']:.0f} s wall, {result['cpu_hours']:.4f} CPU hours, "
        f"{result['device_hours']:.4f} device-hours ({result['device']['kind']} ×{result['device']['count']})"
    )
    lines.append(
        f"train with the best λ: robust-ssl train --config={os.path.join(workdir, rundir.BEST_CONFIG)} --workdir=<run>"
    )
    return "\n".join(lines)
