"""λ logs of training runs: a run's lambdas.csv read, its warm-up found, runs named and grouped.

The reading half of the λ figures (`robust_ssl.figures`, `robust_ssl.compare`,
`robust-ssl plot-lambdas`); nothing here draws. The names are importable from
`robust_ssl.figures` too.
"""

import csv
import os
import re

import numpy as np

from robust_ssl.errors import UserError


def read_lambda_csv(csv_path):
    """Reads a λ trajectory written by `robust_ssl.callbacks.LambdaLogger`.

    Rows logged twice for one step (a resumed run replays the steps after its
    last checkpoint) keep the later value.

    Args:
      csv_path: CSV with columns step, [epoch,] <task>...

    Returns:
      (steps int64 [T] ascending, dict task name -> float64 [T]).

    Raises:
      UserError: if the file is missing or empty, lacks a step column, holds
        no task column or no row, or holds a non-numeric value.
    """
    if not os.path.isfile(csv_path):
        raise UserError(f"λ file {csv_path!r} does not exist (written by training runs with tasks)")
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [row for row in rows if row]
    if not rows:
        raise UserError(f"λ file {csv_path!r} is empty")
    header = [name.strip() for name in rows[0]]
    if "step" not in header:
        raise UserError(f"λ file {csv_path!r} has no 'step' column (header: {','.join(header)})")
    task_columns = [i for i, name in enumerate(header) if name not in ("step", "epoch")]
    if not task_columns:
        raise UserError(f"λ file {csv_path!r} holds no task columns (header: {','.join(header)})")
    step_column = header.index("step")
    by_step = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{csv_path}:{line}: expected {len(header)} values, got {len(row)}")
        try:
            step = int(float(row[step_column]))
            by_step[step] = [float(row[i]) for i in task_columns]
        except ValueError:
            raise UserError(f"{csv_path}:{line}: not a number in {','.join(row)!r}") from None
    if not by_step:
        raise UserError(f"λ file {csv_path!r} holds no rows")
    steps = np.array(sorted(by_step), dtype=np.int64)
    values = np.array([by_step[s] for s in steps], dtype=np.float64)
    return steps, {header[i]: values[:, j] for j, i in enumerate(task_columns)}


def warmup_end(steps, lambdas):
    """The last logged step before any λ first moves (the end of the warm-up).

    Args:
      steps: int [T] ascending.
      lambdas: dict task name -> float [T].

    Returns:
      That step, or None if no λ ever changes (a fixed-λ run, or a log that
      ends within the warm-up).
    """
    values = np.stack([np.asarray(v, np.float64) for v in lambdas.values()], axis=1)  # [T, K]
    changed = np.any(values != values[0], axis=1)
    if not changed.any():
        return None
    first = int(np.argmax(changed))
    return int(steps[first - 1])


# A study's run folder, <study>/<recipe>/seed_<s>.
_SEED_FOLDER = re.compile(r"^seed_\d+$")


def run_label(run_dir):
    """The default label of a run in a λ figure: its folder's name.

    A study's run <study>/<recipe>/seed_<s> is labelled <recipe>, so that the
    seeds of one recipe share a label (and a panel).

    Args:
      run_dir: a run's directory.

    Returns:
      The label.
    """
    path = os.path.normpath(os.path.abspath(run_dir))
    name = os.path.basename(path)
    if _SEED_FOLDER.match(name):
        return os.path.basename(os.path.dirname(path)) or name
    return name


def split_run_spec(spec):
    """(label or None, directory) of "[label=]directory".

    The text is a directory alone when it holds no "=", when what comes before
    the first "=" holds a "/", or when the whole text is an existing directory.

    Args:
      spec: "directory" or "label=directory".

    Returns:
      (label, directory); label None when the text gives none.

    Raises:
      UserError: an empty label or directory.
    """
    label, sep, path = spec.partition("=")
    if not sep or "/" in label or os.path.isdir(spec):
        label, path = None, spec
    else:
        label = label.strip()
    if label == "" or not path.strip():
        raise UserError(f"expected [label=]<run directory>; got {spec!r}")
    return label, path.strip()


def group_runs(specs):
    """{label: [run directories]} from "[label=]directory" strings, in order.

    Runs under one label are the seeds of one panel; an unlabelled run takes
    `run_label` (a study's <recipe>/seed_<s> share <recipe>).

    Args:
      specs: strings "directory" or "label=directory" (`split_run_spec`).

    Returns:
      dict label -> list of directories, in the order the labels first appear.

    Raises:
      UserError: an empty label or directory.
    """
    runs = {}
    for spec in specs:
        label, path = split_run_spec(spec)
        runs.setdefault(label or run_label(path), []).append(path)
    return runs
