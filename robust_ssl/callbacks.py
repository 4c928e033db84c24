"""Keras callbacks of a training run: throughput, λ trajectory, atomic checkpoints."""

import csv
import os
import time

import keras

from robust_ssl import killpoints, rundir


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_sec` (labelled images per second of training) to the epoch logs.

    Place it before the loggers so that they record the value.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self._first_step_done = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        if not self._first_step_done:  # the benchmark's time to the first step
            self._first_step_done = True
            killpoints.mark("train.first_step")
        # Exclude evaluation time from the measurement.
        self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._steps:
            logs["images_per_sec"] = self._steps * self.batch_size / max(self._train_seconds, 1e-9)


class LambdaLogger(keras.callbacks.Callback):
    """Records λ: per step to a CSV and TensorBoard, per epoch into the logs.

    Every `every` training steps it appends step, epoch and every λ to `path`
    (the λ trajectory, the paper's Fig. 2b; see `robust-ssl plot-lambdas`) and
    writes `lambda/<task>` scalars to `tensorboard_dir`. At each epoch end it
    adds `lambda_<task>` to the epoch logs, so place it before the CSV logger.
    Steps are global (they continue across epochs and a resumed run).
    """

    def __init__(self, path, task_names, every=10, tensorboard_dir=None):
        super().__init__()
        self.path, self.task_names, self.every = path, list(task_names), max(1, int(every))
        self._epoch = 0
        self._writer = None
        if tensorboard_dir and self.task_names:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(tensorboard_dir)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for name, value in self.model.lambda_values().items():
                logs[f"lambda_{name}"] = value

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.task_names:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every and step != 1:
            return
        new = not os.path.exists(self.path)
        values = self.model.lambda_values()
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "epoch", *self.task_names])
            writer.writerow([step, self._epoch + 1, *[f"{values[n]:.6g}" for n in self.task_names]])
        killpoints.reached(f"train.lambdas.step_{step}")
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(f"lambda/{name}", value)


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with the epochs numbered from 1.

    As the progress output ("Epoch 1/3") and the checkpoints (epoch_001.keras
    after the first epoch) number them: the row of epoch E is the one the
    checkpoint epoch_E.keras ends.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)
        killpoints.reached(f"train.metrics.epoch_{epoch + 1}")


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights, λ, optimiser state) after every epoch, and within epochs.

    Each file is written to a temporary name, synced and renamed into place
    (`rundir.save_model`), so a crash never leaves a half-written checkpoint;
    the newest `keep` (of both kinds) are kept. Besides the end of every epoch
    (`rundir.checkpoint_path(directory, epoch)`) it saves mid-epoch, at global
    step S within epoch E + 1 (`rundir.checkpoint_path(directory, E, S)`),
    whenever `every_steps` steps or `every_minutes` minutes have passed since
    the last checkpoint; a run resumes from one exactly.

    Args:
      directory: the checkpoints/ folder.
      keep: how many checkpoints to keep (at least 1).
      every_steps: a mid-epoch checkpoint every that many global steps (0: off).
      every_minutes: a mid-epoch checkpoint once that many minutes passed
        since the last checkpoint (0: off).
      steps_per_epoch: steps of one epoch (to name mid-epoch checkpoints and
        to leave the end of an epoch to the epoch's own checkpoint).
      on_save: optional callable(step) run after each checkpoint (records the session).
    """

    def __init__(self, directory, keep=2, every_steps=0, every_minutes=0.0, steps_per_epoch=0, on_save=None):
        super().__init__()
        self.directory, self.keep = directory, max(1, int(keep))
        self.every_steps = max(0, int(every_steps))
        self.every_seconds = max(0.0, float(every_minutes)) * 60.0
        self.steps_per_epoch = int(steps_per_epoch)
        self.on_save = on_save
        self._last = time.monotonic()

    def on_train_begin(self, logs=None):
        self._last = time.monotonic()

    def _save(self, path, step):
        os.makedirs(self.directory, exist_ok=True)
        rundir.save_model(self.model, path)
        self._last = time.monotonic()
        for old in rundir.checkpoints(self.directory)[: -self.keep]:
            os.remove(old)
        if self.on_save is not None:
            self.on_save(step)
        killpoints.reached(f"train.checkpoint.step_{step}")

    def on_train_batch_end(self, batch, logs=None):
        if not (self.every_steps or self.every_seconds) or self.steps_per_epoch <= 0:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.steps_per_epoch == 0:
            return  # the epoch's own checkpoint follows
        due = (self.every_steps and step % self.every_steps == 0) or (
            self.every_seconds and time.monotonic() - self._last >= self.every_seconds
        )
        if due:
            epoch = step // self.steps_per_epoch
            self._save(rundir.checkpoint_path(self.directory, epoch, step), step)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self._save(rundir.checkpoint_path(self.directory, epoch + 1), step)
