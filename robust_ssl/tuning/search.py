"""The λ search: the command's run from settings to the best trial's files.

`search(config, workdir, tuner="random", max_trials=10)` runs (or resumes) a
keras-tuner search over the fixed λ_i of `config.tasks` (and optionally the
learning rate) with the hypermodel of `robust_ssl.tuning.hypermodel` and the
tuner of `robust_ssl.tuning.tuner`, keeps search.json's account of time
current (`robust_ssl.tuning.recorder`), and at the end writes the best
trial's files (`trials`, `best_config`).

Killed at any moment (SIGKILL, a power cut), the same command resumes: a
finished trial is not run again, the trial that was running is run again
with the same values. keras-tuner's state files are written whole, and the
state of a kill between two of them is mended before it is reloaded
(`robust_ssl.tuning.resume`). A workdir holding a search with other
settings is refused (`_check_resumable`).

The workdir of a search holds (names: `robust_ssl.rundir`):
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

import os
import time

from robust_ssl import config_utils, configs, rundir
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import parse_task_names
from robust_ssl.tuning import best_config, trials
from robust_ssl.tuning.hypermodel import (
    LEARNING_RATE,
    OBJECTIVE,
    SearchSpace,
    lambda_hp_name,
    load_search_data,
    make_hypermodel,
)
from robust_ssl.tuning.recorder import Recorder, device
from robust_ssl.tuning.tuner import TUNERS, check_tuner_dependencies, make_tuner


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
    check_tuner_dependencies(tuner)
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if value is not None and int(value) < 0:
            raise ConfigError(f"{name} must be >= 0; got {value}")
    config_file = config_file or configs.DEFAULT
    os.makedirs(workdir, exist_ok=True)
    # A search killed inside a write left a temporary copy beside a whole file.
    rundir.remove_stale_temporaries(workdir)
    rundir.remove_stale_temporaries(os.path.join(workdir, rundir.TUNER_PROJECT), recursive=True)
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
        "base_config_file": best_config.split_config_path(config_file)[0],
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
    header.update(validation=data.record, num_train=data.num_train, device=device())
    recorder = Recorder(search_path, header, wall0, cpu0)
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
    from robust_ssl._quiet import keras_verbose

    tensorboard = keras.callbacks.TensorBoard(os.path.join(workdir, rundir.TENSORBOARD), write_graph=False)
    try:
        kt.search(callbacks=[tensorboard], verbose=keras_verbose(config.train.verbose))
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
    rows = trials.trial_rows(kt, task_names, state)
    best_trials = kt.oracle.get_best_trials(1)
    if not best_trials or best_trials[0].status != "COMPLETED":
        trials.write_trials_csv(os.path.join(workdir, rundir.TRIALS), rows)
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

    number = next(
        (r["trial_number"] for r in rows if r["trial"] == best_trial.trial_id),
        trials.trial_number(best_trial.trial_id),
    )
    best = {
        "trial_number": number,
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
    trials.write_trials_csv(os.path.join(workdir, rundir.TRIALS), rows)
    rundir.write_json(
        os.path.join(workdir, rundir.BEST_LAMBDAS),
        {**best, "tasks": task_names, "validation": data.record, "tuner": state["tuner"]},
    )
    description = (
        f"The best λ of a {state['tuner']} keras-tuner search in {os.path.abspath(workdir)}\n"
        f"(trial #{number} of {len(rows)}, keras_tuner/trial_{best_trial.trial_id}: "
        f"val_accuracy {best_trial.score:.4f} on {data.record['source']}, {data.num_validation} images)."
    )
    path = os.path.join(workdir, rundir.BEST_CONFIG)
    source = best_config.render_best_config(config_file, config, best, description, output_path=path)
    rundir.write_text(path, source)
    table = trials.results_table(rows, task_names, float(config.train.learning_rate), best_trial.trial_id)
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
        f"best trial #{best.get('trial_number', best['trial'])} (keras_tuner/trial_{best['trial']}): "
        f"val_accuracy {best[OBJECTIVE]:.4f}, "
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
