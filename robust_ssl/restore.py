"""Resuming a run: its workdir checked, the newest checkpoint that loads, the line it prints.

`robust_ssl.train` resumes an interrupted run with these: `prepare_workdir`
refuses a workdir that holds another run (or clears it with
`train.overwrite`), `restore_latest` loads the newest checkpoint that loads
into the model, `resume_line` says where the run stands. `restore_latest` and
`resume_line` are importable from `robust_ssl.train` too. The checkpoints'
names and order are `robust_ssl.checkpoints`'.
"""

import os

import keras
from absl import logging

from robust_ssl import config_utils, rundir
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.model import RobustSSLModel


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


def prepare_workdir(config, workdir):
    """Checks that `workdir` holds no other run and writes the config.

    A workdir whose config.json differs from `config` (`config_utils.differences`;
    a raised `train.epochs` is the same run, continued) is refused unless
    `train.overwrite`, which drops that run's checkpoints and logs. A workdir
    with a config.json but neither a checkpoint nor a model (a run that
    stopped before its first checkpoint) is simply started again.

    Args:
      config: the run's resolved ConfigDict.
      workdir: the run's folder (created if missing).

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
