"""`train_and_evaluate(config, workdir)`: one training run, end to end.

A run writes into its workdir (file names and formats: `robust_ssl.rundir`):
  config.json          the resolved config
  metrics.csv          per-epoch losses per task, λ per task, accuracy, images/s
  lambdas.csv          the λ trajectory every `train.log_every_steps` steps
  tensorboard/         TensorBoard logs
  checkpoints/         epoch_<NNN>.keras after each epoch and
                       epoch_<NNN>_step_<SSSSSSS>.keras within one (every
                       train.checkpoint_every_steps steps or
                       train.checkpoint_every_minutes minutes): weights, λ, both
                       optimisers' states (atomically written); the same
                       command resumes from the newest one that loads, exactly
                       (the data stream is a function of the step)
  run_state.json       the sessions of the run (wall and CPU time add up)
  .lock                held while a process trains in the folder
  model.keras          the final model
  results.json         final clean test accuracy and the run's summary
  meta_validation.json what the AutoML meta loss saw (so evaluation can exclude it)

`train_and_evaluate` holds the workdir's lock around three steps on one `Run`:
`prepare_run` (the workdir checked, the config written, the data, the model),
`fit_with_resume` (the newest checkpoint restored, the logs cut back to it,
training to `train.epochs`) and `finish_run` (the clean test set, model.keras,
results.json). The meta loss's hold-out is `robust_ssl.meta_validation`'s,
checkpoints are restored by `robust_ssl.restore`; `meta_validation`,
`restore_latest` and `resume_line` are importable from here too.
"""

import dataclasses
import os
import socket
import time

import keras
import tensorflow as tf
from absl import logging

from robust_ssl import callbacks as callbacks_lib
from robust_ssl import config_utils, distribute, loop, preflight, rundir, weighting
from robust_ssl.data import datasets, pipeline
from robust_ssl.errors import ConfigError, TrainingDivergedError
from robust_ssl.meta_validation import meta_validation as meta_validation
from robust_ssl.model import RobustSSLModel
from robust_ssl.precision import set_precision as set_precision
from robust_ssl.precision import use_precision
from robust_ssl.restore import prepare_workdir
from robust_ssl.restore import restore_latest as restore_latest
from robust_ssl.restore import resume_line as resume_line
from robust_ssl.tasks import parse_task_names


def make_deterministic(config):
    """With `config.train.deterministic`: TF op determinism and one-thread op pools.

    Op determinism makes TensorFlow pick deterministic kernels (and tf.data
    deterministic orders); the one-thread pools fix the order in which a
    kernel's partial sums are added. The thread pools can only be set before
    TensorFlow's runtime starts (the command line does it first thing); set
    later, they are left as they are, with a warning.

    Args:
      config: the experiment ConfigDict.

    Returns:
      Whether the thread pools are single-threaded now (None: not asked).
    """
    if not config.train.get("deterministic", False):
        return None
    tf.config.experimental.enable_op_determinism()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    single = (
        tf.config.threading.get_intra_op_parallelism_threads() == 1
        and tf.config.threading.get_inter_op_parallelism_threads() == 1
    )
    if not single:
        logging.warning(
            "train.deterministic: TensorFlow had started, so its thread pools stay as they are; "
            "op determinism is on (set it before TensorFlow runs anything for single-threaded pools)"
        )
    return single


def _device_kind():
    gpus = tf.config.list_logical_devices("GPU")
    return f"GPU x{len(gpus)}" if gpus else "CPU"


def build_model(config, num_classes, steps_per_epoch, class_names=None):
    """Builds and compiles the model a config describes.

    Args:
      config: the experiment ConfigDict (its backbone, image size, tasks, …).
      num_classes: classes of the main task.
      steps_per_epoch: training steps per epoch (sets the schedule and warm-up).
      class_names: optional class names stored in the model.

    Returns:
      A compiled `RobustSSLModel`.
    """
    names = parse_task_names(config.tasks)
    train = config.train
    total_steps = max(1, train.epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        train.learning_rate, decay_steps=total_steps, alpha=train.min_learning_rate / train.learning_rate
    )
    method = config.automl.get("method", weighting.DEFAULT_METHOD)  # how λ is learned
    model = RobustSSLModel(
        num_classes=num_classes,
        backbone=config_utils.backbone(config),
        image_shape=config_utils.image_shape(config),
        tasks=names,
        task_options={n: dict(config.task_options.get(n, {})) for n in names},
        lambdas=config_utils.task_lambdas(config),
        weight_decay=train.weight_decay,
        automl=config.automl.enabled,
        weighting=method,
        weighting_options=weighting.method_options(config.automl, method),
        meta_mode=config.automl.mode,
        meta_every=config.automl.meta_every,
        meta_start_step=config.automl.warmup_epochs * steps_per_epoch,
        alpha_mode=config.automl.alpha,
        base_learning_rate=train.learning_rate,
        class_names=class_names,
        sync_batch_norm=config.model.get("sync_batch_norm", False),
    )
    meta_cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[config.automl.meta_optimizer]
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=train.momentum, nesterov=train.nesterov),
        meta_optimizer=meta_cls(config.automl.meta_lr),
        jit_compile=train.jit_compile,
    )
    return model


def _divergence_message(error):
    text = str(getattr(error, "message", error))
    start = text.find("robust_ssl:")
    detail = text[start:].splitlines()[0] if start >= 0 else text.splitlines()[0]
    detail = detail.replace("robust_ssl: ", "").replace("\\'", "'")
    return f"training stopped: {detail[:300]}; the last epoch checkpoint is kept"


@dataclasses.dataclass
class Run:
    """One session of a training run: set up by `prepare_run`, trained by `fit_with_resume`, closed by `finish_run`.

    Attributes:
      config: the resolved ConfigDict (precision "auto" resolved).
      workdir: the run's folder (a worker's own folder on a worker other than the chief).
      strategy: the `tf.distribute` strategy.
      data: the run's `DataSplits`.
      train_examples: what it trains on (`meta_validation`: all but a hold-out).
      meta_examples: the meta loss's validation stream, or None.
      num_train: training images.
      steps_per_epoch: training steps per epoch.
      model: the compiled model.
      start, cpu_start: wall and CPU clock when this session began.
      start_step: global step this session resumed from (set by `fit_with_resume`).
      session: this session's entry of run_state.json (set by `fit_with_resume`).
      test_ds: the clean test set (set by `fit_with_resume`).
    """

    config: object
    workdir: str
    strategy: object
    data: object
    train_examples: object
    meta_examples: object
    num_train: int
    steps_per_epoch: int
    model: RobustSSLModel
    start: float
    cpu_start: float
    start_step: int = 0
    session: dict = None
    test_ds: object = None

    @property
    def multi_worker(self):
        """Whether the run trains with the package's own multi-worker loop (Keras fit does not support it)."""
        return self.config.get("distribute", "none") == "multi_worker"

    def record(self, step=None):
        """Records this session in run_state.json: steps, wall and CPU time so far.

        Args:
          step: global steps done (None: as last recorded).

        Returns:
          The run's totals over all its sessions (`rundir.record_session`).
        """
        if step is not None:
            self.session["steps"] = int(step)
        self.session["wall_time_s"] = round(time.time() - self.start, 1)
        self.session["cpu_time_s"] = round(time.process_time() - self.cpu_start, 1)
        return rundir.record_session(self.workdir, self.session)


def prepare_run(config, workdir, strategy):
    """Sets a session up: the workdir checked and its config written, the data, the model.

    Call it holding the workdir's lock.

    Args:
      config: the experiment ConfigDict (checked by `preflight.check`).
      workdir: the run's folder.
      strategy: the distribution strategy (`distribute.make_strategy`).

    Returns:
      The `Run`, its model built but not yet restored.

    Raises:
      ConfigError: the workdir holds a different run; a training set smaller
        than one batch, or batches that do not divide by the replicas.
      UserError: data not available.
    """
    config = use_precision(config, workdir)  # "auto" resolved, printed and recorded in config.json
    prepare_workdir(config, workdir)
    keras.utils.set_random_seed(config.seed)
    start, cpu_start = time.time(), time.process_time()

    data = datasets.load_data(config.data)
    if data.skipped:
        logging.warning("left out %d unreadable image(s) (data.skip_bad_images)", data.skipped)
    print(datasets.describe(data, config.data), flush=True)
    train_examples, meta_examples, meta_record = meta_validation(config, data)
    num_train = len(pipeline.labels_of(train_examples))
    rundir.write_json(os.path.join(workdir, rundir.META_VALIDATION), meta_record)
    batch_size = config.train.batch_size
    if num_train < batch_size:
        raise ConfigError(f"the training set has {num_train} images, fewer than one batch of {batch_size}")
    steps_per_epoch = config.train.steps_per_epoch or num_train // batch_size

    distribute.check_batch_sizes(
        strategy, batch_size, config.automl.meta_batch_size if config.automl.enabled else None
    )
    with strategy.scope():
        model = build_model(config, data.num_classes, steps_per_epoch, data.class_names)
    logging.info(
        "%s at %dx%d, tasks %s: %d parameters (trunk + main head: %d)",
        model.backbone_name,
        *model.image_shape[:2],
        model.task_names or "none",
        sum(int(v.numpy().size) for v in model.network_variables),
        sum(int(v.numpy().size) for v in model.psi_variables),
    )
    return Run(
        config,
        workdir,
        strategy,
        data,
        train_examples,
        meta_examples,
        num_train,
        steps_per_epoch,
        model,
        start,
        cpu_start,
    )


def _resume(run):
    """Restores the newest checkpoint, cuts the logs back to it, records the session; (epoch, step in it)."""
    model, steps_per_epoch = run.model, run.steps_per_epoch
    restored = restore_latest(model, os.path.join(run.workdir, rundir.CHECKPOINTS))
    # Every worker resumes where the chief does (its folder may be a step behind).
    distribute.broadcast_from_chief(
        run.strategy, [*model.variables, *model.optimizer.variables, *model.meta_optimizer.variables]
    )
    start_step = int(model.optimizer.iterations.numpy())
    initial_epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
    if restored or start_step:
        # A worker other than the chief continues from the chief's state, whatever its own folder held.
        source = restored if distribute.is_chief(run.strategy) else None
        print(
            resume_line(source, run.workdir, start_step, steps_per_epoch, run.config.train.epochs), flush=True
        )
    dropped = rundir.cut_logs(run.workdir, initial_epoch, start_step)
    if dropped:
        logging.info(
            "cut the logs back to step %d: %s",
            start_step,
            ", ".join(f"{n} row(s) of {name}" for name, n in dropped.items()),
        )
    run.start_step = start_step
    run.session = {
        "id": f"{socket.gethostname()}:{os.getpid()}:{run.start:.3f}",
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.start)),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "resumed_from_step": start_step,
        "steps": start_step,
    }
    run.record()
    return initial_epoch, done_in_epoch


def _callbacks(run):
    """The run's Keras callbacks: throughput, λ and metric logs, TensorBoard, checkpoints."""
    config, workdir = run.config, run.workdir
    return [
        callbacks_lib.Throughput(config.train.batch_size),
        callbacks_lib.LambdaLogger(
            os.path.join(workdir, rundir.LAMBDAS),
            run.model.task_names,
            config.train.log_every_steps,
            tensorboard_dir=os.path.join(workdir, rundir.TENSORBOARD, "lambdas"),
        ),
        callbacks_lib.EpochCSVLogger(os.path.join(workdir, rundir.METRICS), append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, rundir.TENSORBOARD), update_freq="epoch"),
        callbacks_lib.AtomicCheckpoint(
            os.path.join(workdir, rundir.CHECKPOINTS),
            config.train.keep_checkpoints,
            every_steps=config.train.get("checkpoint_every_steps", 0),
            every_minutes=config.train.get("checkpoint_every_minutes", 0),
            steps_per_epoch=run.steps_per_epoch,
            on_save=run.record,
        ),
    ]


def _train_dataset(run, first_step):
    config = run.config
    return pipeline.training_dataset(
        run.train_examples,
        run.model.tasks,
        config.train.batch_size,
        seed=config.seed,
        meta_examples=run.meta_examples,
        meta_batch_size=config.automl.meta_batch_size,
        augment_images=config.data.augment,
        start_step=first_step,
    )


def _fit(run, callbacks, first_epoch, epochs, steps):
    """Epochs first_epoch … epochs - 1 of `steps` steps, from global step `model.optimizer.iterations`."""
    config, model = run.config, run.model
    first_step = int(model.optimizer.iterations.numpy())
    validation = run.test_ds if config.train.eval_every_epoch else None
    if run.multi_worker:  # Keras fit does not support it (keras-team/keras#20585)
        loop.custom_fit(
            model,
            run.strategy,
            lambda: _train_dataset(run, first_step),
            epochs=epochs,
            steps_per_epoch=steps,
            initial_epoch=first_epoch,
            callbacks=callbacks,
            validation_data=validation,
            verbose=config.train.verbose,
        )
    else:
        model.fit(
            _train_dataset(run, first_step),
            epochs=epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=steps,
            shuffle=False,  # the stream is already shuffled, by step
            validation_data=validation,
            callbacks=callbacks,
            verbose=config.train.verbose,
        )


def fit_with_resume(run):
    """Trains a prepared run to `train.epochs`, from its newest checkpoint that loads.

    A run resumed mid-epoch first trains the rest of that epoch, then whole
    epochs; the logs are cut back to the checkpoint first (`rundir.cut_logs`)
    and the session is recorded in run_state.json.

    Args:
      run: the `Run` of `prepare_run`; its start_step, session and test_ds
        are set here.

    Raises:
      UserError: there are checkpoints but none of them loads.
      TrainingDivergedError: a loss or the λ gradient became NaN/Inf.
    """
    initial_epoch, done_in_epoch = _resume(run)
    run.test_ds = pipeline.evaluation_dataset(run.data.test, run.config.train.eval_batch_size)
    callbacks = _callbacks(run)
    epochs, steps_per_epoch = run.config.train.epochs, run.steps_per_epoch
    try:
        if done_in_epoch and initial_epoch < epochs:
            # Resuming mid-epoch: the rest of that epoch, then whole epochs.
            _fit(run, callbacks, initial_epoch, initial_epoch + 1, steps_per_epoch - done_in_epoch)
            initial_epoch += 1
        if initial_epoch < epochs:
            _fit(run, callbacks, initial_epoch, epochs, steps_per_epoch)
    except tf.errors.InvalidArgumentError as e:
        run.record()
        if "robust_ssl:" in str(e):
            raise TrainingDivergedError(_divergence_message(e)) from None
        raise


def finish_run(run):
    """Evaluates a trained run on the clean test set, saves its model and writes results.json.

    Args:
      run: the `Run`, trained by `fit_with_resume`.

    Returns:
      The results dict written to <workdir>/results.json.
    """
    model, data, workdir = run.model, run.data, run.workdir
    if run.multi_worker:
        evaluation = loop.evaluate_locally(model, run.test_ds)
    else:
        evaluation = model.evaluate(run.test_ds, return_dict=True, verbose=0)
    rundir.save_model(model, os.path.join(workdir, rundir.MODEL))
    steps = int(model.optimizer.iterations.numpy())
    state = run.record(steps)
    results = {
        "test_accuracy": float(evaluation["accuracy"]),
        "test_loss": float(evaluation["loss"]),
        "lambdas": model.lambda_values(),
        "weighting": model.weighting.name if model.automl else "fixed",  # how λ was learned
        "tasks": list(model.task_names),
        "epochs": int(run.config.train.epochs),
        "steps": steps,
        "num_train": int(run.num_train),
        "num_test": int(data.num_test),
        "skipped_images": int(data.skipped),
        "replicas": int(run.strategy.num_replicas_in_sync),
        "wall_time_s": state["wall_time_s"],  # all sessions of the run (run_state.json)
        "cpu_time_s": state["cpu_time_s"],
        "session_wall_time_s": run.session["wall_time_s"],  # this session only
        "sessions": len(state["sessions"]),
        "device": _device_kind(),
        "resumed_from_epoch": int(run.start_step // run.steps_per_epoch),
        "resumed_from_step": int(run.start_step),
    }
    rundir.write_json(os.path.join(workdir, rundir.RESULTS), results)
    return results


def train_and_evaluate(config, workdir):
    """Trains a model as `config` says and evaluates it on the clean test set.

    The same call on the same workdir resumes an interrupted run from its
    newest checkpoint that loads (`restore_latest`), exactly, also from a
    mid-epoch checkpoint; on a finished run it only evaluates again (or, with
    a raised `train.epochs`, continues training). One process at a time
    trains in a workdir (`rundir.workdir_lock`).

    Args:
      config: an ml_collections ConfigDict (see configs/default.py).
      workdir: directory for all outputs; an interrupted run in it resumes.

    Returns:
      The results dict also written to <workdir>/results.json.

    Raises:
      ConfigError: invalid config (before any data is read).
      UserError: data not available, workdir holding another run or in use
        by another process, no checkpoint that loads.
      TrainingDivergedError: a loss or the λ gradient became NaN/Inf.
    """
    make_deterministic(config)  # before TensorFlow's runtime starts, where it has not yet
    spec = preflight.check(config)  # config, data, devices, batches: before anything is written
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = distribute.make_strategy(spec.strategy, spec.devices_text)
    if not distribute.is_chief(strategy):
        # Other workers keep their own files apart from the chief's.
        workdir = os.path.join(workdir, f"worker_{strategy.cluster_resolver.task_id}")
    with rundir.workdir_lock(workdir):
        run = prepare_run(config, workdir, strategy)
        fit_with_resume(run)
        return finish_run(run)
