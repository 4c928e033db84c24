"""The λ search's hypermodel: what a trial varies, the data it trains on, how it trains.

`make_hypermodel(config, space)` is the keras-tuner HyperModel: a trial takes
the fixed λ_i of `config.tasks` (and optionally the learning rate) from its
hyper-parameters (`SearchSpace`), trains a fresh model with fixed λ for the
trial budget and reports `val_accuracy` on the *same* validation images the
AutoML meta loss of `config.automl.validation` would use
(`load_search_data`, by `train.meta_validation`): the held-out training images
(clean or corrupted) are removed from the trial's training set exactly as an
AutoML run removes them, so a search and an AutoML run see the same data and
compete fairly.
"""

import copy
import dataclasses

from robust_ssl import config_utils
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import parse_task_names

OBJECTIVE = "val_accuracy"  # what a trial's fit reports and the search maximises
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
    from robust_ssl.data import datasets, pipeline

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
        train=train_arrays,  # read (or scanned) once for all trials
        num_train=len(pipeline.labels_of(train_arrays)),
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
def import_keras_tuner():
    """The keras_tuner module; a UserError line where it is not installed."""
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
    keras_tuner = import_keras_tuner()

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
