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
"""

import os
import socket
import time

import keras
import tensorflow as tf
from absl import logging

from robust_ssl import callbacks as callbacks_lib
from robust_ssl import config_utils, distribute, loop, preflight, rundir, weighting
from robust_ssl.data import cifar10c, datasets, pipeline, splits
from robust_ssl.errors import ConfigError, TrainingDivergedError, UserError
from robust_ssl.model import RobustSSLModel
from robust_ssl.precision import set_precision as set_precision
from robust_ssl.precision import use_precision
from robust_ssl.tasks import parse_task_names


def meta_validation(config, data):
    """Splits off or loads the validation stream of the meta loss.

    A `train_holdout` / `corrupted_holdout` hold-out is drawn by `config.seed`
    and stratified by class (`splits.stratified_split`): image folders are read
    class by class, so "the first N images" would be whole classes that
    training never sees. `config.data.exclude_holdout` = N leaves the same N
    images out of the training set of a run that holds none out itself (a
    study's other recipes), so that all train on the same images.

    Args:
      config: the experiment ConfigDict.
      data: `DataSplits` of the run.

    Returns:
      (the training examples — (images, labels) arrays, or the
      `folders.ImageFiles` a streamed folder is read from —, meta dataset or
      None, record dict for meta_validation.json).

    Raises:
      ConfigError: a hold-out that would leave a class without training images.
    """
    source = data.train_source if data.train_source is not None else pipeline.to_arrays(data.train)
    labels = pipeline.labels_of(source)
    val = config.automl.validation
    holdout = config_utils.training_holdout(config)
    uses_holdout = holdout > 0
    excluded = int(config.data.get("exclude_holdout", 0) or 0)
    if not config.automl.enabled and not excluded:
        return source, None, {"source": None}
    record = {"source": val.source if config.automl.enabled else None}
    if uses_holdout or excluded:
        holdout = holdout or excluded
        key = "automl.validation.holdout" if uses_holdout else "data.exclude_holdout"
        source, held, record_split = _hold_out(config, data, source, labels, holdout, key)
        record.update(record_split)
        if uses_holdout:
            meta = pipeline.to_arrays(held)
            if val.source == "corrupted_holdout":
                corruption_names, severities = config_utils.holdout_corruptions(val)
                meta = _corrupt_holdout(meta, corruption_names, severities, config.seed)
                record.update(corruptions=corruption_names, severities=severities)
            return source, tf.data.Dataset.from_tensor_slices(meta), record
        # The same images an AutoML run of this seed holds out, left out of
        # training so that recipes with and without AutoML see one set.
        record["excluded_from_training"] = True
    if not config.automl.enabled:
        return source, None, record
    meta = cifar10c.load_part(
        val.cifar10c_source,
        "meta",
        int(val.per_block),
        directory=val.cifar10c_dir or None,
    )
    record.update(
        {
            "source": "cifar10c",
            "cifar10c_source": val.cifar10c_source,
            "cifar10c_dir": val.cifar10c_dir or None,
            "per_block": int(val.per_block),
            "corruptions": list(cifar10c.ALL_CORRUPTIONS),
        }
    )
    return source, meta, record


def _hold_out(config, data, source, labels, holdout, key):
    """(the rest, the held-out examples, record) of a seeded, stratified hold-out of `holdout`."""
    if not 0 < holdout < len(labels):
        raise ConfigError(f"{key} must be in (0, {len(labels)}); got {holdout}")
    rest, held = splits.stratified_split(labels, holdout, seed=config.seed)
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    train_counts = splits.class_counts(labels[rest], names)
    held_counts = splits.class_counts(labels[held], names)
    emptied = [name for name, count in train_counts.items() if count == 0 and held_counts[name]]
    if emptied:
        raise ConfigError(
            f"{key}={holdout} leaves class(es) {', '.join(emptied[:5])} "
            f"without training images; use a smaller hold-out"
        )
    logging.info(
        "%s: %d images held out (%s); training: %d images (%s)",
        key,
        len(held),
        ", ".join(f"{k} {v}" for k, v in held_counts.items()),
        len(rest),
        ", ".join(f"{k} {v}" for k, v in train_counts.items()),
    )
    record = {
        "holdout": holdout,
        "split": "stratified by class, drawn by seed",
        "seed": int(config.seed),
        "holdout_class_counts": held_counts,
        "train_class_counts": train_counts,
    }
    return pipeline.take(source, rest), pipeline.take(source, held), record


def _corrupt_holdout(meta, names, severities, seed):
    """Corrupted copies of the held-out (images, labels) (the extra corruptions by default)."""
    from robust_ssl.data import corruptions

    images, labels = meta
    logging.info("corrupting %d held-out images with %s at severities %s", len(images), names, severities)
    return corruptions.corrupted_holdout(images.astype("uint8"), labels, names, severities, seed=seed)


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


def _short(error):
    text = str(error).strip().splitlines()
    return (text[0] if text and text[0] else type(error).__name__)[:160]


def _load_checkpoint(model, path):
    """Loads one checkpoint into `model`; the reason it cannot, or None when it did."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:  # reads every member: truncation, bad CRC
            bad = archive.testzip()
        if bad is not None:
            return f"bad CRC in {bad}"
        saved = keras.saving.load_model(path, compile=True)
    except Exception as e:  # noqa: BLE001 — any failure means "not this checkpoint"
        return f"{type(e).__name__}: {_short(e)}"
    if not isinstance(saved, RobustSSLModel):
        return f"a {type(saved).__name__}, not a RobustSSLModel"
    pairs = [
        ("weights", model.variables, getattr(saved, "variables", [])),
        ("optimizer", model.optimizer.variables, getattr(saved.optimizer, "variables", [])),
        ("meta-optimizer", model.meta_optimizer.variables, getattr(saved.meta_optimizer, "variables", [])),
    ]
    for what, targets, sources in pairs:  # check everything before changing anything
        if len(targets) != len(sources):
            return f"a checkpoint of another model ({len(sources)} {what} variables, this model has {len(targets)})"
        for target, source in zip(targets, sources):
            if tuple(target.shape) != tuple(source.shape):
                return (
                    f"a checkpoint of another model ({what} variable {target.path} has shape "
                    f"{tuple(source.shape)}, this model {tuple(target.shape)})"
                )
    for _, targets, sources in pairs:
        for target, source in zip(targets, sources):
            target.assign(source.numpy())
    return None


def restore_latest(model, directory):
    """Loads the newest checkpoint that loads into `model` (weights, λ, optimisers).

    Checkpoints are tried newest first (`rundir.checkpoints`: by epoch and
    step). One that does not load — truncated, damaged inside (bad CRC), not
    a Keras file, or a checkpoint of another model — is named in one warning
    line with the reason, left in place, and the previous one is tried.

    Args:
      model: a built, compiled model of the same config.
      directory: the run's checkpoints/ folder.

    Returns:
      The path of the checkpoint loaded, or None when there is none (the
      model is then unchanged). The step to resume from is
      `model.optimizer.iterations`.

    Raises:
      UserError: there are checkpoints but none of them loads.
    """
    found = rundir.checkpoints(directory)
    reasons = []
    for path in reversed(found):
        reason = _load_checkpoint(model, path)
        if reason is None:
            return path
        logging.warning("checkpoint %s does not load (%s); trying the previous one", path, reason)
        reasons.append(f"{os.path.basename(path)}: {reason}")
    if found:
        raise UserError(
            f"no checkpoint in {directory} loads ({'; '.join(reasons)}); "
            f"move that folder aside to start afresh"
        )
    return None


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


def _prepare_workdir(config, workdir):
    """Checks that `workdir` holds no other run and writes the config.

    A workdir whose config.json differs from `config` (`config_utils.differences`;
    a raised `train.epochs` is the same run, continued) is refused unless
    `train.overwrite`, which drops that run's checkpoints and logs. A workdir
    with a config.json but neither a checkpoint nor a model (a run that
    stopped before its first checkpoint) is simply started again.

    Raises:
      ConfigError: the workdir holds a different run.
    """
    os.makedirs(workdir, exist_ok=True)
    started = rundir.checkpoints(os.path.join(workdir, rundir.CHECKPOINTS)) or os.path.exists(
        os.path.join(workdir, rundir.MODEL)
    )
    try:
        changed = config_utils.differences(config, workdir)
    except UserError as e:  # a damaged config.json: which run this is cannot be told
        if started and not config.train.overwrite:
            raise ConfigError(
                f"{e}; restore it to resume the run in {workdir}, use another --workdir, or "
                f"--config.train.overwrite=True to start afresh there"
            ) from None
        changed = [rundir.CONFIG]
    if changed and started and not config.train.overwrite:
        raise ConfigError(
            f"{workdir} holds a run with a different config ({', '.join(changed[:5])}"
            f"{', …' if len(changed) > 5 else ''}); use another --workdir or "
            f"--config.train.overwrite=True to start afresh there"
        )
    if changed:  # overwrite, or nothing to resume: drop the other run's resume state and logs
        import shutil

        shutil.rmtree(os.path.join(workdir, rundir.CHECKPOINTS), ignore_errors=True)
        for name in rundir.RUN_LOGS:
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))
    config_utils.write(config, workdir)


def _divergence_message(error):
    text = str(getattr(error, "message", error))
    start = text.find("robust_ssl:")
    detail = text[start:].splitlines()[0] if start >= 0 else text.splitlines()[0]
    detail = detail.replace("robust_ssl: ", "").replace("\\'", "'")
    return f"training stopped: {detail[:300]}; the last epoch checkpoint is kept"


def resume_line(checkpoint, workdir, step, steps_per_epoch, epochs):
    """The line a resumed run prints: which checkpoint, where in the run it stands.

    Epochs are numbered from 1, as the progress bar and `epoch_NNN.keras`.

    Args:
      checkpoint: path of the checkpoint restored; None on a worker that took
        the chief's state (`distribute.broadcast_from_chief`).
      workdir: the run's directory (the path is shown relative to it).
      step: global steps done at the checkpoint.
      steps_per_epoch, epochs: the run's schedule.

    Returns:
      e.g. "resuming from checkpoints/epoch_002.keras: epoch 2 of 3 done (step 140); continuing with epoch 3".
    """
    name = os.path.relpath(checkpoint, workdir) if checkpoint else "the chief's checkpoint"
    done, within = divmod(step, steps_per_epoch)
    if within:
        where = f"epoch {done + 1} of {epochs} at step {within} of {steps_per_epoch} (global step {step})"
        return f"resuming from {name}: {where}; continuing from there"
    return (
        f"resuming from {name}: epoch {done} of {epochs} done (step {step}); continuing with epoch {done + 1}"
    )


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
    preflight.check(config)  # config, data, devices, batches: before anything is written
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = distribute.make_strategy(config.get("distribute", "none"), config.get("devices", ""))
    if not distribute.is_chief(strategy):
        # Other workers keep their own files apart from the chief's.
        workdir = os.path.join(workdir, f"worker_{strategy.cluster_resolver.task_id}")
    with rundir.workdir_lock(workdir):
        config = use_precision(config, workdir)  # "auto" resolved, printed and recorded in config.json
        _prepare_workdir(config, workdir)
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
            raise ConfigError(
                f"the training set has {num_train} images, fewer than one batch of {batch_size}"
            )
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
        restored = restore_latest(model, os.path.join(workdir, rundir.CHECKPOINTS))
        # Every worker resumes where the chief does (its folder may be a step behind).
        distribute.broadcast_from_chief(
            strategy, [*model.variables, *model.optimizer.variables, *model.meta_optimizer.variables]
        )
        start_step = int(model.optimizer.iterations.numpy())
        initial_epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
        if restored or start_step:
            # A worker other than the chief continues from the chief's state, whatever its own folder held.
            source = restored if distribute.is_chief(strategy) else None
            print(resume_line(source, workdir, start_step, steps_per_epoch, config.train.epochs), flush=True)
        dropped = rundir.cut_logs(workdir, initial_epoch, start_step)
        if dropped:
            logging.info(
                "cut the logs back to step %d: %s",
                start_step,
                ", ".join(f"{n} row(s) of {name}" for name, n in dropped.items()),
            )

        session = {
            "id": f"{socket.gethostname()}:{os.getpid()}:{start:.3f}",
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "resumed_from_step": start_step,
            "steps": start_step,
        }

        def record(step=None):
            if step is not None:
                session["steps"] = int(step)
            session["wall_time_s"] = round(time.time() - start, 1)
            session["cpu_time_s"] = round(time.process_time() - cpu_start, 1)
            return rundir.record_session(workdir, session)

        record()

        def train_dataset(first_step):
            return pipeline.training_dataset(
                train_examples,
                model.tasks,
                batch_size,
                seed=config.seed,
                meta_examples=meta_examples,
                meta_batch_size=config.automl.meta_batch_size,
                augment_images=config.data.augment,
                start_step=first_step,
            )

        test_ds = pipeline.evaluation_dataset(data.test, config.train.eval_batch_size)

        callbacks = [
            callbacks_lib.Throughput(batch_size),
            callbacks_lib.LambdaLogger(
                os.path.join(workdir, rundir.LAMBDAS),
                model.task_names,
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
                steps_per_epoch=steps_per_epoch,
                on_save=record,
            ),
        ]
        multi_worker = config.get("distribute", "none") == "multi_worker"

        def fit(first_epoch, epochs, steps):
            """Epochs first_epoch … epochs - 1 of `steps` steps, from global step `model.optimizer.iterations`."""
            first_step = int(model.optimizer.iterations.numpy())
            validation = test_ds if config.train.eval_every_epoch else None
            if multi_worker:  # Keras fit does not support it (keras-team/keras#20585)
                loop.custom_fit(
                    model,
                    strategy,
                    lambda: train_dataset(first_step),
                    epochs=epochs,
                    steps_per_epoch=steps,
                    initial_epoch=first_epoch,
                    callbacks=callbacks,
                    validation_data=validation,
                    verbose=config.train.verbose,
                )
            else:
                model.fit(
                    train_dataset(first_step),
                    epochs=epochs,
                    initial_epoch=first_epoch,
                    steps_per_epoch=steps,
                    shuffle=False,  # the stream is already shuffled, by step
                    validation_data=validation,
                    callbacks=callbacks,
                    verbose=config.train.verbose,
                )

        epochs = config.train.epochs
        try:
            if done_in_epoch and initial_epoch < epochs:
                # Resuming mid-epoch: the rest of that epoch, then whole epochs.
                fit(initial_epoch, initial_epoch + 1, steps_per_epoch - done_in_epoch)
                initial_epoch += 1
            if initial_epoch < epochs:
                fit(initial_epoch, epochs, steps_per_epoch)
        except tf.errors.InvalidArgumentError as e:
            record()
            if "robust_ssl:" in str(e):
                raise TrainingDivergedError(_divergence_message(e)) from None
            raise

        if multi_worker:
            evaluation = loop.evaluate_locally(model, test_ds)
        else:
            evaluation = model.evaluate(test_ds, return_dict=True, verbose=0)
        rundir.save_model(model, os.path.join(workdir, rundir.MODEL))
        steps = int(model.optimizer.iterations.numpy())
        state = record(steps)
        results = {
            "test_accuracy": float(evaluation["accuracy"]),
            "test_loss": float(evaluation["loss"]),
            "lambdas": model.lambda_values(),
            "weighting": model.weighting.name if model.automl else "fixed",  # how λ was learned
            "tasks": list(model.task_names),
            "epochs": int(config.train.epochs),
            "steps": steps,
            "num_train": int(num_train),
            "num_test": int(data.num_test),
            "skipped_images": int(data.skipped),
            "replicas": int(strategy.num_replicas_in_sync),
            "wall_time_s": state["wall_time_s"],  # all sessions of the run (run_state.json)
            "cpu_time_s": state["cpu_time_s"],
            "session_wall_time_s": session["wall_time_s"],  # this session only
            "sessions": len(state["sessions"]),
            "device": _device_kind(),
            "resumed_from_epoch": int(start_step // steps_per_epoch),
            "resumed_from_step": int(start_step),
        }
        rundir.write_json(os.path.join(workdir, rundir.RESULTS), results)
        return results
