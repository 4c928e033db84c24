"""A run's directory: the names of its files, how they are written and read, and its model.

A training run (`robust-ssl train`, `robust_ssl.train`) writes into its workdir:

  config.json           CONFIG           the resolved config (`write_config`)
  metrics.csv           METRICS          per epoch (Keras' CSVLogger): losses per task, meta
                                         loss, λ per task, accuracy, val_accuracy, images/s
  lambdas.csv           LAMBDAS          λ every `train.log_every_steps` steps: step, epoch,
                                         one column per task (`robust_ssl.callbacks.LambdaLogger`)
  tensorboard/          TENSORBOARD      TensorBoard logs (λ in tensorboard/lambdas/)
  checkpoints/          CHECKPOINTS      epoch_NNN.keras (`checkpoint_path`): the whole model
                                         with λ and both optimisers' states
  model.keras           MODEL            the final model
  results.json          RESULTS          clean test accuracy and loss, λ, tasks, epochs, steps,
                                         replicas, wall and CPU time, device
  meta_validation.json  META_VALIDATION  what the AutoML meta loss saw: {"source": …} and the
                                         hold-out or CIFAR-10-C block settings
  robustness/           ROBUSTNESS       `robust-ssl evaluate`'s outputs (ROBUSTNESS_FILES)

A λ search (`robust-ssl tune`, `robust_ssl.tuning`) writes into its workdir
SEARCH, TRIALS, BEST_LAMBDAS, BEST_CONFIG, TUNER_PROJECT/ and TENSORBOARD/,
and CONFIG, META_VALIDATION and MODEL of its best trial, so that the
evaluation reads a search like a run.

Files rewritten whole are written atomically (`atomic_write`, `atomic_path`):
into a temporary file in the same directory, flushed and synced, then renamed
over the target, so that neither a reader nor a crash ever sees half a file.
"""

import contextlib
import csv
import glob
import itertools
import json
import math
import os

from robust_ssl.errors import UserError

CONFIG = "config.json"
METRICS = "metrics.csv"
LAMBDAS = "lambdas.csv"
RESULTS = "results.json"
MODEL = "model.keras"
META_VALIDATION = "meta_validation.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
# Files an overwriting run removes along with the checkpoints (its config is rewritten).
RUN_LOGS = (METRICS, LAMBDAS, RESULTS)

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

_CHECKPOINT_PREFIX = "epoch_"
_KERAS = ".keras"
# Temporary files of earlier versions (`<name>.tmp.keras`), never a checkpoint.
_OLD_TMP_SUFFIX = ".tmp.keras"
_tmp_counter = itertools.count()


# --------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside `path`; renames it onto `path` when the block succeeds.

    The temporary file is in the same directory (so the rename is atomic) and
    hidden (a leading dot). After the block it is synced to disk and renamed
    over `path`; if the block raises, it is removed and `path` is untouched.

    Args:
      path: the file to write.
      suffix: ending of the temporary name, for writers that insist on one
        (Keras on `.keras`, numpy on `.npy`).
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_tmp_counter)}.tmp{suffix}")
    try:
        yield tmp
        if os.path.isfile(tmp):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """`open(path, mode)` that replaces `path` only once the file is complete (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()


def write_text(path, text):
    """Writes `text` to `path` atomically; returns the path."""
    with atomic_write(path, encoding="utf-8") as f:
        f.write(text)
    return path


def _finite(value):
    """`value` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path, data, sort_keys=False):
    """Writes `data` as indented JSON atomically (NaN and infinity as null); returns the path."""
    with atomic_write(path) as f:
        json.dump(_finite(data), f, indent=2, sort_keys=sort_keys)
    return path


def write_csv(path, rows, fields):
    """Writes dict rows under the header `fields` atomically (other keys left out); returns the path."""
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_model(model, path):
    """`model.save(path)` atomically: a crash never leaves a half-written `.keras` file."""
    with atomic_path(path, suffix=_KERAS) as tmp:
        model.save(tmp)
    return path


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


# --------------------------------------------------------------------------- checkpoints
def checkpoint_path(directory, epoch):
    """<directory>/epoch_NNN.keras, the checkpoint after `epoch` completed epochs."""
    return os.path.join(directory, f"{_CHECKPOINT_PREFIX}{epoch:03d}{_KERAS}")


def checkpoint_epoch(path):
    """The number of completed epochs a checkpoint file holds (epoch_012.keras -> 12)."""
    return int(os.path.basename(path)[len(_CHECKPOINT_PREFIX) : -len(_KERAS)])


def checkpoints(directory):
    """The epoch checkpoints in `directory`, oldest first."""
    paths = glob.glob(os.path.join(directory, f"{_CHECKPOINT_PREFIX}*{_KERAS}"))
    return sorted(p for p in paths if not p.endswith(_OLD_TMP_SUFFIX))


def latest_checkpoint(directory):
    """The newest epoch checkpoint in `directory`, or None."""
    found = checkpoints(directory)
    return found[-1] if found else None


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
        if not workdir.endswith(_KERAS):
            raise UserError(f"{workdir} is not a .keras model file")
        return workdir
    if workdir.endswith(_KERAS):
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
