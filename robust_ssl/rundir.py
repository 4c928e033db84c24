"""A run's directory: the names of its files, how they are written and read, and its model.

The checkpoints' own names and their order are `robust_ssl.checkpoints`', the
lock is `robust_ssl.lock`'s; the names they define (`checkpoint_path`,
`checkpoints`, `checkpoint_epoch`, `checkpoint_step`, `LOCK`, `workdir_lock`)
are importable from here too, with the run's other files.

A training run (`robust-ssl train`, `robust_ssl.train`) writes into its workdir:

  config.json           CONFIG           the resolved config (`write_config`)
  metrics.csv           METRICS          per epoch, numbered from 1 (`callbacks.EpochCSVLogger`):
                                         losses per task, meta loss, λ per task, accuracy,
                                         val_accuracy, images/s
  lambdas.csv           LAMBDAS          λ every `train.log_every_steps` steps: step, epoch,
                                         one column per task (`robust_ssl.callbacks.LambdaLogger`)
  tensorboard/          TENSORBOARD      TensorBoard logs (λ in tensorboard/lambdas/)
  checkpoints/          CHECKPOINTS      epoch_NNN.keras after NNN epochs and
                                         epoch_NNN_step_SSSSSSS.keras at global step SSSSSSS
                                         within epoch NNN+1 (`checkpoints.checkpoint_path`):
                                         the whole model with λ and both optimisers' states
  run_state.json        RUN_STATE        the sessions of the run (`record_session`): start,
                                         host, pid, resumed_from_step, steps, wall, CPU time
  .lock                 LOCK             pid, host and start of the process training in the
                                         folder (`lock.workdir_lock`)
  model.keras           MODEL            the final model
  results.json          RESULTS          clean test accuracy and loss, λ, tasks, epochs, steps,
                                         replicas, wall and CPU time (all
                                         sessions of the run), device
  meta_validation.json  META_VALIDATION  what the AutoML meta loss saw: {"source": …} and the
                                         hold-out or CIFAR-10-C block settings
  robustness/           ROBUSTNESS       `robust-ssl evaluate`'s outputs (ROBUSTNESS_FILES)

A λ search (`robust-ssl tune`, `robust_ssl.tuning`) writes into its workdir
SEARCH, TRIALS, BEST_LAMBDAS, BEST_CONFIG, TUNER_PROJECT/ and TENSORBOARD/,
and CONFIG, META_VALIDATION and MODEL of its best trial, so that the
evaluation reads a search like a run.

Files rewritten whole are written atomically (`atomic_write`, `atomic_path`,
`write_json`, …: `robust_ssl.atomic`, whose names are importable from here
too), so that neither a reader nor a crash ever sees half a file.
"""

import csv
import json
import os

from robust_ssl.atomic import atomic_path as atomic_path
from robust_ssl.atomic import atomic_write as atomic_write
from robust_ssl.atomic import remove_stale_temporaries as remove_stale_temporaries
from robust_ssl.atomic import save_model as save_model
from robust_ssl.atomic import write_csv as write_csv
from robust_ssl.atomic import write_json as write_json
from robust_ssl.atomic import write_text as write_text
from robust_ssl.checkpoints import KERAS_SUFFIX, latest_checkpoint
from robust_ssl.checkpoints import checkpoint_epoch as checkpoint_epoch
from robust_ssl.checkpoints import checkpoint_path as checkpoint_path
from robust_ssl.checkpoints import checkpoint_step as checkpoint_step
from robust_ssl.checkpoints import checkpoints as checkpoints
from robust_ssl.errors import UserError
from robust_ssl.lock import LOCK as LOCK
from robust_ssl.lock import workdir_lock as workdir_lock

CONFIG = "config.json"
METRICS = "metrics.csv"
LAMBDAS = "lambdas.csv"
RESULTS = "results.json"
MODEL = "model.keras"
META_VALIDATION = "meta_validation.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
RUN_STATE = "run_state.json"
# Files an overwriting run removes along with the checkpoints (its config is rewritten).
RUN_LOGS = (METRICS, LAMBDAS, RESULTS, RUN_STATE)

# Outputs of a robustness evaluation (<run>/robustness/ by default).
ROBUSTNESS = "robustness"
ROBUSTNESS_CSV = "robustness.csv"
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_MARKDOWN = "robustness.md"
HEATMAP = "heatmap.png"
COMPARISON_CHART = "comparison.png"
# kind -> file name, in the order an evaluation writes them.
ROBUSTNESS_FILES = {
    "csv": ROBUSTNESS_CSV,
    "json": ROBUSTNESS_JSON,
    "markdown": ROBUSTNESS_MARKDOWN,
    "heatmap": HEATMAP,
    "comparison": COMPARISON_CHART,
}

# A λ search's own files.
SEARCH = "search.json"
TRIALS = "trials.csv"
BEST_LAMBDAS = "best_lambdas.json"
BEST_CONFIG = "best_config.py"
TUNER_PROJECT = "keras_tuner"


# --------------------------------------------------------------------------- reading
def read_json(path):
    """Reads a JSON file; a missing or broken file is one `UserError` line."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def _optional_json(run_dir, name):
    path = os.path.join(run_dir, name) if run_dir else None
    return read_json(path) if path and os.path.exists(path) else None


def read_meta_validation(run_dir):
    """<run_dir>/meta_validation.json as a dict; None without a run directory or the file."""
    return _optional_json(run_dir, META_VALIDATION)


def read_config(run_dir):
    """<run_dir>/config.json as an ml_collections ConfigDict; None without a run directory or the file."""
    data = _optional_json(run_dir, CONFIG)
    if data is None:
        return None
    import ml_collections

    return ml_collections.ConfigDict(data)


# The weighting method of a run whose config.json predates `automl.method`
# (robust_ssl.weighting.DEFAULT_METHOD; not imported here: it loads TensorFlow).
DEFAULT_WEIGHTING = "lookahead"
# What results.json says of a run whose λ was not learned.
FIXED_WEIGHTING = "fixed"


def weighting_method(run_dir):
    """How a run learned λ: the name of its weighting method, or None where λ was not learned.

    results.json names the method (key "weighting", "fixed" without AutoML).
    A run without results.json (not finished), or finished before
    results.json named it, is read from config.json: `automl.enabled` with
    tasks means `automl.method`, the lookahead where the config predates that
    key.

    Args:
      run_dir: a training run's directory.

    Returns:
      The method's name ("lookahead", "uncertainty", "gradnorm",
      "auto_lambda", …), or None for fixed λ, no tasks, or neither file.

    Raises:
      UserError: an unreadable results.json or config.json.
    """
    results = _optional_json(run_dir, RESULTS) or {}
    name = results.get("weighting")
    if name is None:
        config = _optional_json(run_dir, CONFIG) or {}
        automl = config.get("automl") or {}
        if automl.get("enabled") and config.get("tasks"):
            name = automl.get("method") or DEFAULT_WEIGHTING
    return None if name in (None, FIXED_WEIGHTING) else str(name)


def write_config(config_dict, workdir):
    """Writes a run's resolved config (a JSON-safe dict) to <workdir>/config.json; returns the path."""
    return write_json(os.path.join(workdir, CONFIG), config_dict, sort_keys=True)


def robustness_results(path):
    """The robustness results file in `path` (an evaluation's output or a run directory), or None.

    Looks for robustness.json, then robustness.csv, in `path` and in
    `path`/robustness/.
    """
    for directory in (path, os.path.join(path, ROBUSTNESS)):
        for name in (ROBUSTNESS_JSON, ROBUSTNESS_CSV):
            if os.path.isfile(os.path.join(directory, name)):
                return os.path.join(directory, name)
    return None


def run_dir_of(workdir=None, checkpoint=None):
    """The training-run directory that holds config.json and meta_validation.json.

    Args:
      workdir: a run's workdir (wins when given).
      checkpoint: a .keras file; its run is its directory, or the parent of a
        `checkpoints/` directory.

    Returns:
      The directory, or None.
    """
    if workdir:
        return workdir
    if checkpoint:
        parent = os.path.dirname(os.path.abspath(checkpoint))
        return os.path.dirname(parent) if os.path.basename(parent) == CHECKPOINTS else parent
    return None


# --------------------------------------------------------------------------- resuming
def _cut_csv(path, keep):
    """Rewrites a CSV log keeping one header and the rows `keep(row)` accepts.

    Rows repeated by an earlier session (beyond its checkpoint), repeated
    headers and a half-written last line are dropped. A file left without
    rows is removed (its writer starts it again).

    Returns:
      The number of rows dropped.
    """
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines:
        os.remove(path)
        return 0
    header, kept, dropped = lines[0], [], 0
    for line in lines[1:]:
        if line == header:
            continue
        row = dict(zip(header, line))
        try:
            ok = len(line) == len(header) and keep(row)
        except (KeyError, ValueError):
            ok = False
        if ok:
            kept.append(line)
        else:
            dropped += 1
    if not kept:
        os.remove(path)
        return dropped
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(kept)
    return dropped


def _number_epochs_from_one(path):
    """Renumbers a metrics.csv of an earlier version (epochs from 0) from 1, as they are now."""
    if not os.path.isfile(path):
        return
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    if not lines or "epoch" not in lines[0]:
        return
    column = lines[0].index("epoch")
    rows = [line for line in lines[1:] if line != lines[0]]
    if not rows or len(rows[0]) <= column or rows[0][column] != "0":
        return
    with atomic_write(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(lines[0])
        for line in rows:
            if len(line) > column and line[column].isdigit():
                line = [*line[:column], str(int(line[column]) + 1), *line[column + 1 :]]
            writer.writerow(line)


def cut_logs(workdir, epochs, step):
    """Cuts a run's CSV logs back to its checkpoint, before training resumes.

    Args:
      workdir: the run's folder.
      epochs: completed epochs of the checkpoint (metrics.csv keeps epochs
        1 … epochs, numbered as the console and the checkpoints number them;
        a file of an earlier version, numbered from 0, is renumbered first).
      step: global step of the checkpoint (lambdas.csv keeps steps <= step).

    Returns:
      {file name: rows dropped} for the files that lost rows.
    """
    _number_epochs_from_one(os.path.join(workdir, METRICS))
    dropped = {
        METRICS: _cut_csv(os.path.join(workdir, METRICS), lambda row: int(row["epoch"]) <= epochs),
        LAMBDAS: _cut_csv(os.path.join(workdir, LAMBDAS), lambda row: int(row["step"]) <= step),
    }
    return {name: n for name, n in dropped.items() if n}


def record_session(workdir, session):
    """Adds or updates this session in <workdir>/run_state.json; returns the run's totals.

    A session is one process training the run (the first one, or one that
    resumed it). The file lists them all, so a run's wall and CPU time add up
    across interruptions and re-runs. When a session is recorded for the
    first time, the temporary files of killed processes are removed from the
    workdir and its checkpoints (`remove_stale_temporaries`).

    Args:
      workdir: the run's folder.
      session: dict with at least "id" (unique per session), "wall_time_s"
        and "cpu_time_s"; also start, host, pid, resumed_from_step, steps.

    Returns:
      {"sessions": [...], "wall_time_s": total, "cpu_time_s": total}.
    """
    path = os.path.join(workdir, RUN_STATE)
    state = {"sessions": []}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state = {"sessions": []}
    sessions = [s for s in state.get("sessions", []) if s.get("id") != session["id"]]
    if len(sessions) == len(state.get("sessions", [])):
        # A new session: the temporary copies a killed one left (its files are whole) go.
        remove_stale_temporaries(workdir)
        remove_stale_temporaries(os.path.join(workdir, CHECKPOINTS))
    sessions.append(dict(session))
    state = {
        "sessions": sessions,
        "wall_time_s": round(sum(float(s.get("wall_time_s", 0)) for s in sessions), 1),
        "cpu_time_s": round(sum(float(s.get("cpu_time_s", 0)) for s in sessions), 1),
    }
    write_json(path, state)
    return state


# --------------------------------------------------------------------------- the model
def model_path(workdir):
    """Finds the model of a training run.

    Args:
      workdir: a run's workdir, or directly a `.keras` file.

    Returns:
      <workdir>/model.keras if present, else the newest
      <workdir>/checkpoints/epoch_NNN.keras.

    Raises:
      UserError: when neither exists.
    """
    if os.path.isfile(workdir):
        if not workdir.endswith(KERAS_SUFFIX):
            raise UserError(f"{workdir} is not a .keras model file")
        return workdir
    if workdir.endswith(KERAS_SUFFIX):
        raise UserError(f"model file {workdir} not found")
    if not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir} does not exist")
    final = os.path.join(workdir, MODEL)
    if os.path.isfile(final):
        return final
    latest = latest_checkpoint(os.path.join(workdir, CHECKPOINTS))
    if latest:
        return latest
    raise UserError(
        f"{workdir} holds neither {MODEL} nor a checkpoint in {os.path.join(workdir, CHECKPOINTS)}"
    )


def load_model(model_or_path, compile=False, robust_ssl_only=True):
    """Returns a `RobustSSLModel` from a model, a `.keras` file or a run's workdir.

    Args:
      model_or_path: a `RobustSSLModel` (returned as it is), a `.keras` path
        or a workdir (see `model_path`).
      compile: restore the optimisers' states too (resuming a run); without,
        the model is loaded for inference.
      robust_ssl_only: refuse any other Keras model (False: accept one, e.g.
        a classifier to score for robustness).

    Returns:
      The model.

    Raises:
      UserError: no model found, an unreadable file, or one that is not a
        robust_ssl model.
    """
    import keras

    from robust_ssl.model import RobustSSLModel  # registers the class for loading

    if isinstance(model_or_path, keras.Model):
        model, what = model_or_path, "the model"
    else:
        path = model_path(os.fspath(model_or_path))
        try:
            model = keras.saving.load_model(path, compile=compile)
        except (ValueError, OSError, TypeError) as e:
            raise UserError(
                f"cannot load {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        what = path
    if robust_ssl_only and not isinstance(model, RobustSSLModel):
        raise UserError(f"{what} is a {type(model).__name__}, not a robust_ssl RobustSSLModel")
    return model
