"""Comparing runs: how λ was set, what it cost, and how accurate the result is.

`compare(paths)` reads run workdirs of three kinds and returns one `RunSummary`
each:

- a training run with fixed λ (`robust-ssl train`, AutoML off): λ from its
  config.json, the trajectory (constant) from lambdas.csv;
- an AutoML run: the initial λ from config.json, the final λ from results.json
  and the trajectory from lambdas.csv;
- a λ search (`robust-ssl tune`, recognised by search.json): the best λ, the
  whole search's time (all trials, all sessions) and the clean test accuracy of
  the best trial's model.

Cost is device-hours: the wall time × the devices used (results.json's
`wall_time_s` × `replicas`, 1 where the run did not record it; for a search
search.json's wall time of all sessions). Clean accuracy is results.json's
`test_accuracy`; the corruption accuracy is the mean accuracy over the cells of
a robustness evaluation (`robust-ssl evaluate`, <run>/robustness/robustness.json)
where the run has one. `markdown_table` and `plot_trajectories` make the report;
`write_report` writes both.

Nothing here computes with TensorFlow: a comparison of finished runs reads files only.
"""

import dataclasses
import os

from robust_ssl import rundir
from robust_ssl.errors import UserError

FIGSIZE_PER_RUN = (4.2, 3.6)
DPI = 100


@dataclasses.dataclass
class RunSummary:
    """What the comparison shows of one run.

    Attributes:
      name: a short label (the workdir's base name).
      path: the workdir.
      kind: "fixed", "automl", "search" or "baseline" (no tasks).
      method: how λ was set, in words.
      tasks: task names in the run's order.
      lambdas: task -> λ used (fixed), learned (final, AutoML) or found (best, search).
      initial_lambdas: task -> λ at the start (AutoML), else None.
      trajectory: (steps list, task -> list of λ) from lambdas.csv, or None.
      budget_steps: training steps of one trial (search) or the run, or None.
      device: e.g. "CPU ×1"; "? ×1" where the run did not record its device.
      wall_time_s: training (or whole search) wall time, None if unknown.
      device_hours: wall time × devices / 3600, None if unknown.
      cpu_hours: process CPU hours where recorded (a search), else None.
      clean_accuracy: clean test accuracy, None if unknown.
      corruption_accuracy: mean accuracy over the robustness cells, or None.
      corruption_cells: how many (corruption, severity) cells that mean covers.
      corruption_source: where the corrupted images came from ("generate", "tfds", a path).
      notes: extra remarks for the report.
      finished: False for a training run without results.json (not finished,
        or never started).
    """

    name: str
    path: str
    kind: str
    method: str
    tasks: list
    lambdas: dict
    initial_lambdas: dict = None
    trajectory: tuple = None
    budget_steps: int = None
    device: str = "? ×1"
    wall_time_s: float = None
    device_hours: float = None
    cpu_hours: float = None
    clean_accuracy: float = None
    corruption_accuracy: float = None
    corruption_cells: int = None
    corruption_source: str = None
    notes: list = dataclasses.field(default_factory=list)
    finished: bool = True


def _task_names(tasks):
    """Task names of a config's comma-separated `tasks` string.

    Not `robust_ssl.tasks.parse_task_names`: that imports TensorFlow and refuses
    names this version does not know, and a comparison reads other versions' runs.
    """
    return [t.strip() for t in str(tasks or "").split(",") if t.strip()]


def _trajectory(path, notes):
    """(steps, task -> λ list) of the run's lambdas.csv; None (and a note) where it holds no rows."""
    from robust_ssl import figures

    csv_path = os.path.join(path, rundir.LAMBDAS)
    if not os.path.isfile(csv_path):
        return None
    try:
        steps, lambdas = figures.read_lambda_csv(csv_path)
    except UserError as e:  # an empty or cut-off file of a run that stopped early
        notes.append(f"λ trajectory not drawn: {e}")
        return None
    return [int(s) for s in steps], {k: [float(x) for x in v] for k, v in lambdas.items()}


def _robustness(path, summary):
    """Fills the corruption accuracy from a robustness evaluation of the run, if any."""
    from robust_ssl.robustness import evaluation

    found = rundir.robustness_results(path)
    if found is None:
        return
    result = evaluation.load_results(found)
    summary.corruption_accuracy = result["summary"]["mean_accuracy_all"]
    summary.corruption_cells = len(result["cells"])
    summary.corruption_source = result["settings"].get("source")


def _device(record):
    """'CPU ×1'-style text and the device count of a results/search record."""
    device = record.get("device")
    if isinstance(device, dict):
        kind, count = device.get("kind", "?"), int(device.get("count", 1))
    else:
        kind = device or "?"
        # train.py records its strategy's replica count as "replicas".
        count = int(record.get("num_devices") or record.get("replicas") or record.get("num_replicas") or 1)
    return f"{kind} ×{count}", count


def _trial_number(best):
    """The best trial's number as keras-tuner prints it (from 1); older searches recorded only the id."""
    if best.get("trial_number") is not None:
        return best["trial_number"]
    try:
        return int(best["trial"]) + 1
    except (KeyError, TypeError, ValueError):
        return best.get("trial", "?")


def _load_search(path, name):
    state = rundir.read_json(os.path.join(path, rundir.SEARCH))
    best = state.get("best")
    tasks = list(state.get("tasks") or [])
    device, count = _device(state)
    trials = state.get("num_trials") or len(state.get("trials", {}))
    epochs, steps = state.get("epochs"), state.get("steps_per_epoch")
    summary = RunSummary(
        name=name,
        path=path,
        kind="search",
        method=f"search ({state.get('tuner', '?')}, {trials} trials)",
        tasks=tasks,
        lambdas=dict(best["lambdas"]) if best else {},
        budget_steps=state.get("trial_steps") or (int(epochs * steps) if epochs and steps else None),
        device=device,
        wall_time_s=state.get("wall_time_s"),
        device_hours=(state["wall_time_s"] * count / 3600) if state.get("wall_time_s") is not None else None,
        cpu_hours=state.get("cpu_hours"),
        clean_accuracy=best.get("test_accuracy") if best else None,
    )
    if best:
        validation = state.get("validation") or {}
        summary.notes.append(
            f"best of {trials} trials: trial #{_trial_number(best)}, val_accuracy {best['val_accuracy']:.4f} on "
            f"{validation.get('source', '?')} ({validation.get('num_images', '?')} images); "
            f"clean accuracy of that trial's model (trial budget: {epochs} epoch(s)"
            f"{f' of {steps} steps' if steps else ''}); "
            f"cost = all trials of all sessions ({len(state.get('sessions', []))}), "
            f"{state.get('cpu_hours', 0):.4f} CPU hours of process time"
        )
        if best.get("learning_rate") is not None:
            summary.notes.append(f"best learning rate {best['learning_rate']:.4g}")
    else:
        summary.notes.append("no completed trial yet (search interrupted?)")
    return summary


def _load_training_run(path, name):
    config_path = os.path.join(path, rundir.CONFIG)
    if not os.path.isfile(config_path):
        raise UserError(
            f"{path} holds neither a training run ({rundir.CONFIG}) nor a λ search ({rundir.SEARCH})"
        )
    config = rundir.read_json(config_path)
    tasks = _task_names(config.get("tasks"))
    weights = config.get("task_weights") or {}
    configured = {t: float(weights[t]) for t in tasks if t in weights}
    automl = bool((config.get("automl") or {}).get("enabled")) and bool(tasks)
    results_path = os.path.join(path, rundir.RESULTS)
    results = rundir.read_json(results_path) if os.path.isfile(results_path) else None
    notes = []
    trajectory = _trajectory(path, notes)
    if not tasks:
        kind, method = "baseline", "no tasks"
    elif automl:
        kind, method = "automl", "learned (AutoML)"
    else:
        kind, method = "fixed", "fixed"
    if automl and results and results.get("lambdas"):
        lambdas = {t: float(results["lambdas"][t]) for t in tasks if t in results["lambdas"]}
    elif automl and trajectory:
        lambdas = {t: trajectory[1][t][-1] for t in tasks if t in trajectory[1]}
    else:
        lambdas = configured
    train = config.get("train") or {}
    summary = RunSummary(
        name=name,
        path=path,
        kind=kind,
        method=method,
        tasks=tasks,
        lambdas=lambdas,
        initial_lambdas=configured if automl else None,
        trajectory=trajectory,
        budget_steps=(results or {}).get("steps"),
        notes=notes,
        finished=results is not None,
    )
    if results is None:
        summary.notes.append(f"no {rundir.RESULTS}: the run has not finished")
    else:
        summary.device, count = _device(results)
        wall = results.get("wall_time_s")
        summary.wall_time_s = wall
        summary.device_hours = wall * count / 3600 if wall is not None else None
        summary.clean_accuracy = results.get("test_accuracy")
        if results.get("cpu_time_s") is not None:
            summary.cpu_hours = results["cpu_time_s"] / 3600
        summary.notes.append(
            f"{results.get('epochs', train.get('epochs', '?'))} epoch(s), {results.get('steps', '?')} steps"
        )
    if automl and summary.initial_lambdas:
        start = ", ".join(f"{t}={v:.3g}" for t, v in summary.initial_lambdas.items())
        summary.notes.append(f"λ learned from {start}" + ("; trajectory in the figure" if trajectory else ""))
    return summary


def load_run(path, name=None):
    """Reads one run or search workdir.

    Args:
      path: the workdir.
      name: label in the report (default: the directory's base name).

    Returns:
      `RunSummary`.

    Raises:
      UserError: not a directory, or neither a run nor a search, or an
        unreadable file.
    """
    if not os.path.isdir(path):
        raise UserError(f"run directory {path} does not exist")
    name = name or os.path.basename(os.path.normpath(os.path.abspath(path)))
    if os.path.isfile(os.path.join(path, rundir.SEARCH)):
        summary = _load_search(path, name)
    else:
        summary = _load_training_run(path, name)
    _robustness(path, summary)
    return summary


def compare(paths, names=None):
    """Reads every run of a comparison.

    Args:
      paths: run or search workdirs.
      names: optional labels, one per path (default: directory names; a
        repeated name gets its parent directory prefixed).

    Returns:
      list of `RunSummary`, in the order given.

    Raises:
      UserError: no path, a wrong number of names, or an unreadable run.
    """
    if not paths:
        raise UserError("give at least one run directory to compare")
    if names is not None and len(names) != len(paths):
        raise UserError(f"got {len(names)} names for {len(paths)} runs")
    if names is None:
        names = [os.path.basename(os.path.normpath(os.path.abspath(p))) for p in paths]
        if len(set(names)) < len(names):
            names = [os.path.join(*os.path.abspath(p).split(os.sep)[-2:]) for p in paths]
    return [load_run(p, n) for p, n in zip(paths, names)]


def _all_tasks(runs):
    return list(dict.fromkeys(t for run in runs for t in run.tasks))


def _pct(value):
    return "–" if value is None else f"{100 * value:.2f}"


def _hours(value):
    if value is None:
        return "–"
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


def table_rows(runs):
    """The report table as a header and rows of strings.

    Columns: run, λ set by, λ <task> for every task of any run, device,
    device-hours, clean acc (%), corruption acc (%).

    Args:
      runs: list of `RunSummary`.

    Returns:
      (header list, list of row lists).
    """
    tasks = _all_tasks(runs)
    header = ["run", "λ set by", *[f"λ {t}" for t in tasks], "device", "device-hours"]
    header += ["clean acc (%)", "corruption acc (%)"]
    rows = []
    for run in runs:
        row = [run.name, run.method]
        row += [f"{run.lambdas[t]:.3f}" if t in run.lambdas else "–" for t in tasks]
        row += [run.device, _hours(run.device_hours), _pct(run.clean_accuracy), _pct(run.corruption_accuracy)]
        rows.append(row)
    return header, rows


def savings(runs):
    """Sentences putting each search's cost next to each AutoML run's.

    Args:
      runs: list of `RunSummary`.

    Returns:
      list of strings (empty without both a search and an AutoML run with known cost).
    """
    out = []
    for search in (r for r in runs if r.kind == "search" and r.device_hours):
        for automl in (r for r in runs if r.kind == "automl" and r.device_hours):
            out.append(
                f"Search `{search.name}` took {search.device_hours / automl.device_hours:.1f}× the "
                f"device-hours of AutoML run `{automl.name}` ({_hours(search.device_hours)} vs "
                f"{_hours(automl.device_hours)})."
            )
    return out


def markdown_table(runs, title="Runs compared"):
    """The comparison as markdown: the table, the cost comparison and notes per run.

    Args:
      runs: list of `RunSummary`.
      title: heading.

    Returns:
      The markdown text.
    """
    header, rows = table_rows(runs)
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "λ: fixed (config), final (AutoML) or best found (search). Device-hours: wall time × devices "
        "of the training run, or of the whole search (all trials). Corruption accuracy: mean over the "
        "cells of the run's robustness evaluation, where it has one.",
    ]
    saved = savings(runs)
    if saved:
        lines += ["", *saved]
    notes = []
    for run in runs:
        items = list(run.notes)
        if run.corruption_accuracy is not None:
            items.append(
                f"corruption accuracy over {run.corruption_cells} cells ({run.corruption_source or '?'})"
            )
        if run.device.startswith("?"):
            items.append("device not recorded: counted as one")
        if items:
            notes.append(f"- {run.name}: " + "; ".join(items))
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def _panel(ax, run, colours):
    """One run's λ panel: its trajectory, or a note where there is no curve to draw."""
    from robust_ssl import figures

    subtitle = f"{run.method}: best λ" if run.kind == "search" else run.method
    ax.set_title(f"{run.name}\n{subtitle}", fontsize=9)
    if not run.tasks:
        ax.set_xticks([])
        figures.note(ax, "no tasks: no λ")
        return
    if run.kind == "search":
        if not run.lambdas:
            ax.set_xticks([])
            figures.note(ax, "no completed trial:\nno best λ yet")
            return
        ax.set_xlabel("training step")
        ax.set_xlim(0, run.budget_steps or 1)
        lines = figures.format_values(run.lambdas)
        figures.note(
            ax, f"best λ found, fixed for a\ntrial of {run.budget_steps or '?'} steps:\n" + "\n".join(lines)
        )
        return
    if run.trajectory:
        steps, values = run.trajectory
        lambdas = {task: values[task] for task in run.tasks if task in values}
        if lambdas:
            fixed = "λ fixed at" if run.kind == "fixed" else "λ did not move:"
            end = figures.warmup_end(steps, lambdas)
            if figures.draw_lambdas(
                ax, steps, lambdas, colours, warmup_end_step=end, fontsize=8, fixed_text=fixed
            ):
                ax.set_ylabel("λ")
            return
    # No λ logged: the run never trained (or predates lambdas.csv).
    ax.set_xticks([])
    head = "not trained: no λ logged" if not run.finished else f"no λ logged (no {rundir.LAMBDAS})"
    values = run.lambdas if run.kind == "fixed" else (run.initial_lambdas or {})
    what = "λ set to" if run.kind == "fixed" else "λ starts at"
    lines = figures.format_values(values) if values else []
    figures.note(ax, head + (f"\n{what}:\n" + "\n".join(lines) if lines else ""))


def plot_trajectories(runs, path, title="λ of each task against the training step, per run"):
    """λ of every task against the training step, one panel per run, side by side.

    Each panel scales its own y axis, so that a small move of a learned λ shows.
    AutoML runs draw their lambdas.csv; tasks with coinciding trajectories draw
    as one line labelled "a = b". Where no λ moves (a fixed-λ run, a search's
    best λ), the panel lists the values in a note instead of flat lines; a run
    with no λ logged (not trained) gets a note saying so. Each task has the
    same colour in every panel.

    Args:
      runs: list of `RunSummary`.
      path: PNG file to write (its folder is created).
      title: the figure's title.

    Returns:
      path.
    """
    from robust_ssl import figures

    tasks = _all_tasks(runs)
    colours = {t: f"C{i % 10}" for i, t in enumerate(tasks)}
    fig = figures.new_figure((FIGSIZE_PER_RUN[0] * len(runs), FIGSIZE_PER_RUN[1] + 0.4), DPI)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        _panel(ax, run, colours)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return figures.save_png(fig, path, DPI)


def write_report(paths, output, names=None):
    """Compares runs and writes <output> (markdown) and the λ figure beside it.

    Args:
      paths: run or search workdirs.
      output: the markdown file; the PNG gets the same name with .png.
      names: optional labels.

    Returns:
      (markdown text, markdown path, png path).
    """
    runs = compare(paths, names)
    if not output.endswith(".md"):
        output += ".md"
    png = os.path.splitext(output)[0] + ".png"
    text = markdown_table(runs) + f"\n![λ of each run against the training step]({os.path.basename(png)})\n"
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        rundir.write_text(output, text)
    except OSError as e:
        raise UserError(f"cannot write {output!r}: {e.strerror or e}") from None
    plot_trajectories(runs, png)
    return text, output, png
