"""The trials of a λ search as rows: a markdown table and trials.csv.

`trial_rows(tuner, task_names)` reads keras-tuner's oracle: per trial its λ,
learning rate, val accuracy, status and time (from search.json).

Trials are numbered from 1, as keras-tuner prints them ("Running Trial #1"):
`trial_number` in trials.csv, best_lambdas.json, search.json's "best" and the
table. keras-tuner's own id (from 0, zero-padded: the folder
keras_tuner/trial_<id>) stays beside it as `trial`.
"""

from robust_ssl import rundir
from robust_ssl.tuning.hypermodel import LEARNING_RATE, OBJECTIVE, lambda_hp_name


def trial_rows(tuner, task_names, recorder_state=None):
    """One dict per trial, in start order.

    Args:
      tuner: a tuner after (or during) a search.
      task_names: the searched tasks.
      recorder_state: the search.json dict (for trial times), optional.

    Returns:
      list of dicts: trial_number (from 1, as keras-tuner prints it), trial
      (keras-tuner's id), status, lambda_<task>..., learning_rate,
      val_accuracy (None if unfinished or failed), wall_time_s.
    """
    times = (recorder_state or {}).get("trials", {})
    rows = []
    oracle = tuner.oracle
    order = list(oracle.start_order) or sorted(oracle.trials)
    for position, trial_id in enumerate(order):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {
            "trial_number": trial_number(trial_id, position),
            "trial": trial_id,
            "status": str(trial.status),
        }
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


def trial_number(trial_id, position=None):
    """The number keras-tuner prints for a trial ("Running Trial #1"): its id + 1.

    keras-tuner makes the id of the n-th trial it creates from n - 1 (zero-padded)
    and prints n. An id that is not a number (another oracle) falls back to
    `position` + 1 (the trial's place in start order).
    """
    try:
        return int(trial_id) + 1
    except (TypeError, ValueError):
        return None if position is None else position + 1


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
      best_trial: keras-tuner id of the best trial (marked with *).

    Returns:
      The table as a string; "trial" is the number keras-tuner prints (from 1),
      "id" its folder's id (keras_tuner/trial_<id>).
    """
    hyperband = any("epochs" in r for r in rows)
    header = ["trial", "id", *[f"λ {n}" for n in task_names], "lr", *(["epochs"] if hyperband else [])]
    header += ["val accuracy", "time (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lr = r[LEARNING_RATE] if r[LEARNING_RATE] is not None else base_learning_rate
        cells = [f"{r['trial_number']}" + (" *" if r["trial"] == best_trial else ""), r["trial"]]
        cells += [_fmt(r[lambda_hp_name(n)], 3) for n in task_names]
        cells += [_fmt(float(lr), 4)]
        if hyperband:
            cells.append(str(r.get("epochs", "–")))
        cells += [_fmt(r[OBJECTIVE]), _fmt(r["wall_time_s"], 1), r["status"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_trials_csv(path, rows):
    """Writes the rows of `trial_rows` to a CSV file (trials.csv), one column per key."""
    return rundir.write_csv(path, rows, dict.fromkeys(k for r in rows for k in r))
