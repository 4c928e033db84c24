"""Figures a user opens: what each task sees (the paper's Fig. 1) and λ over training (Fig. 2b).

`plot_lambdas` draws one run's λ; `plot_lambda_trajectories` draws several
runs side by side (one panel per recipe or weighting method, seeds as mean
and band), as a study's lambdas.png does.

Everything draws on `matplotlib.figure.Figure` with the Agg canvas, never on
pyplot's global state, so the functions are safe in scripts, tests and
notebooks alike and need no display. TensorFlow is imported only where images
are read or transformed, so plotting λ stays light.
"""

import csv
import os
import re

import numpy as np

from robust_ssl.errors import UserError

# Task grid geometry: square cells of CELL_INCHES plus a band for column titles.
GRID_CELL_INCHES = 1.2
GRID_TITLE_INCHES = 0.3
GRID_DPI = 100
# λ plot geometry.
LAMBDA_FIGSIZE = (7.0, 4.2)
LAMBDA_DPI = 100


def grid_size_pixels(num_rows, num_columns):
    """Pixel size of a `task_grid` PNG.

    Args:
      num_rows: number of images (rows).
      num_columns: number of columns (1 + number of tasks).

    Returns:
      (height, width) in pixels.
    """
    height = (num_rows * GRID_CELL_INCHES + GRID_TITLE_INCHES) * GRID_DPI
    width = num_columns * GRID_CELL_INCHES * GRID_DPI
    return int(round(height)), int(round(width))


def new_figure(figsize, dpi):
    """A matplotlib Figure on its own Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _makedirs_for(path):
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of {path!r}: {e.strerror}") from None


def save_png(fig, path, dpi):
    """Writes `fig` as a PNG (its folder created); a UserError line where it cannot. Returns the path."""
    _makedirs_for(path)
    try:
        fig.savefig(path, dpi=dpi, format="png")
    except OSError as e:
        raise UserError(f"cannot write {path!r}: {e.strerror or e}") from None
    return path


def _as_float_images(images):
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def load_folder_images(folder, num_images, seed=0, image_size=(32, 32)):
    """Picks images at random from a folder (searched recursively), resized.

    Any layout works, including `keras.utils.image_dataset_from_directory`'s
    <folder>/<class>/<image> and <folder>/{train,test}/<class>/<image>; the
    folder is read by `robust_ssl.data.folders.read_folder`.

    Args:
      folder: root folder.
      num_images: how many images to pick (fewer if the folder holds fewer).
      seed: seed of the random choice.
      image_size: (H, W) the images are resized to (bilinear).

    Returns:
      float32 [N, H, W, 3] in [0, 1].

    Raises:
      UserError: if the folder does not exist, holds no image, or an image
        cannot be decoded.
    """
    if num_images < 1:
        raise UserError(f"number of images must be >= 1; got {num_images}")
    from robust_ssl.data.folders import read_folder

    images, _, _ = read_folder(folder, image_size, labels=None)
    order = np.random.default_rng(seed).permutation(len(images))[:num_images]
    return images[order].astype(np.float32) / 255.0


def task_grid(images, tasks, seed, path):
    """Draws the paper's Fig. 1: each image and what every task's network sees.

    One row per image; the first column is the image, then one column per task
    with `task.display_inputs` (the grey input of colour, the blurred input of
    BIR, the clean image for IR, a rotated, channel-shuffled or tile-shuffled
    copy, the painted-over image of inpainting).

    Args:
      images: [N, H, W, 3] uint8 or float in [0, 1] (square, as the tasks need).
      tasks: a list of `Task` objects, or task names (a list or "a,b" string).
      seed: integer seed of the random tasks' choices.
      path: PNG file to write (its folder is created).

    Returns:
      The path written.

    Raises:
      UserError: on an unknown task name or an unwritable path.
    """
    import tensorflow as tf

    from robust_ssl.tasks import make_tasks

    if isinstance(tasks, str) or (tasks and all(isinstance(t, str) for t in tasks)):
        tasks = make_tasks(tasks)
    images = _as_float_images(images)
    if images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        raise UserError(f"expected a non-empty batch of RGB images [N, H, W, 3]; got shape {images.shape}")
    batch_seed = tf.constant([int(seed), 0], tf.int64)
    columns = [("original", images)]
    for task in tasks:
        shown = task.display_inputs(tf.constant(images), batch_seed)
        columns.append((task.name, np.clip(np.asarray(shown, np.float32), 0.0, 1.0)))

    rows, cols = len(images), len(columns)
    height, width = grid_size_pixels(rows, cols)
    fig = new_figure((width / GRID_DPI, height / GRID_DPI), GRID_DPI)
    pad = 0.04 * GRID_CELL_INCHES
    fig.subplots_adjust(
        left=pad / (width / GRID_DPI),
        right=1 - pad / (width / GRID_DPI),
        bottom=pad / (height / GRID_DPI),
        top=1 - GRID_TITLE_INCHES / (height / GRID_DPI),
        wspace=0.06,
        hspace=0.06,
    )
    axes = fig.subplots(rows, cols, squeeze=False)
    for c, (title, shown) in enumerate(columns):
        axes[0, c].set_title(title, fontsize=10)
        for r in range(rows):
            ax = axes[r, c]
            ax.imshow(shown[r], interpolation="nearest", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
    return save_png(fig, path, GRID_DPI)


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


def plot_lambdas(csv_path, png_path, title=None):
    """Plots λ of every task against the training step (the paper's Fig. 2b).

    A dashed vertical line marks the end of the warm-up, where λ first moves,
    when the trajectory shows it. Tasks whose trajectories coincide share one
    line ("rotation = color"); when no λ ever moves (fixed λ), the plot holds
    one note listing the values instead of overlapping flat lines.

    Args:
      csv_path: the λ CSV of a run (<workdir>/lambdas.csv).
      png_path: PNG file to write (its folder is created).
      title: the figure's title (default: says what is drawn).

    Returns:
      (png_path, warm-up end step or None).

    Raises:
      UserError: on a missing or malformed CSV (see `read_lambda_csv`).
    """
    steps, lambdas = read_lambda_csv(csv_path)
    end = warmup_end(steps, lambdas)
    fig = new_figure(LAMBDA_FIGSIZE, LAMBDA_DPI)
    ax = fig.add_subplot(1, 1, 1)
    drawn = draw_lambdas(ax, steps, lambdas, warmup_end_step=end)
    if drawn:
        ax.set_ylabel("λ (weight of the task loss)")
    ax.set_title(title or "λ of each self-supervision task during training")
    fig.tight_layout()
    return save_png(fig, png_path, LAMBDA_DPI), end


# Two λ curves closer than this fraction of the panel's λ range (or 1e-9) draw as one.
EQUAL_FRACTION = 1e-3


def _span(lambdas):
    values = np.concatenate([np.asarray(v, np.float64).ravel() for v in lambdas.values()])
    return float(values.max() - values.min()) if values.size else 0.0


def is_constant(lambdas):
    """Whether no λ of any task ever moves (a fixed-λ run, or a log within the warm-up)."""
    return all(np.all(np.asarray(v, np.float64) == np.asarray(v, np.float64)[0]) for v in lambdas.values())


def merge_equal(lambdas):
    """Groups tasks whose λ trajectories coincide, so that none hides another.

    Two trajectories coincide when they differ nowhere by more than
    `EQUAL_FRACTION` of the λ range of all of them (or 1e-9): drawn apart they
    would be one line on the plot.

    Args:
      lambdas: dict task name -> λ [T].

    Returns:
      list of (label, task names, values), in the order of each group's first
      task; the label joins the names with " = ".
    """
    tolerance = max(EQUAL_FRACTION * _span(lambdas), 1e-9)
    groups = []
    for name, values in lambdas.items():
        values = np.asarray(values, np.float64)
        for group in groups:
            if group[2].shape == values.shape and np.max(np.abs(group[2] - values)) <= tolerance:
                group[1].append(name)
                break
        else:
            groups.append(["", [name], values])
    return [(" = ".join(names), names, values) for _, names, values in groups]


def format_values(values, digits=3):
    """'0.5: rotation, color; 1: ir' — tasks grouped by equal λ, largest first, one group a line.

    Args:
      values: dict task name -> λ.
      digits: significant digits.

    Returns:
      list of lines.
    """
    by_value = {}
    for name, value in values.items():
        by_value.setdefault(float(f"{float(value):.{digits}g}"), []).append(name)
    return [
        f"{value:.{digits}g}: {', '.join(names)}" for value, names in sorted(by_value.items(), reverse=True)
    ]


def note(ax, text, fontsize=9):
    """Writes `text` in the middle of a panel that draws no curve, and clears its y axis."""
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        transform=ax.transAxes,
        bbox=dict(boxstyle="round,pad=0.5", facecolor="0.96", edgecolor="0.7"),
    )
    ax.set_yticks([])


def draw_lambdas(
    ax,
    steps,
    lambdas,
    colours=None,
    linestyle="-",
    markers=True,
    warmup_end_step=None,
    fontsize=9,
    fixed_text="λ fixed at",
):
    """Draws λ of each task against the training step into `ax`.

    The λ plot of `plot_lambdas` and of every panel of `robust_ssl.compare`.
    Tasks whose trajectories coincide (`merge_equal`) draw as one line labelled
    "a = b". When no λ moves at all (`is_constant`), no line is drawn: a note
    lists the values ("λ fixed at" + `format_values`) so that flat lines do not
    hide each other. The y axis scales to the data.

    Args:
      ax: matplotlib Axes.
      steps: the training steps [T].
      lambdas: dict task name -> λ [T], drawn in this order.
      colours: optional dict task name -> colour (the same task in the same
        colour across panels; a merged line takes its first task's).
      linestyle: matplotlib line style.
      markers: mark the points of a short trajectory (30 steps or fewer).
      warmup_end_step: a step to mark with a dashed vertical line (the end of
        the warm-up, see `warmup_end`), or None.
      fontsize: of the legend.
      fixed_text: the first words of the note of a constant λ.

    Returns:
      True when curves were drawn, False when the panel holds the note.
    """
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    steps = np.asarray(steps)
    if is_constant(lambdas):
        first = {name: np.asarray(v, np.float64)[0] for name, v in lambdas.items()}
        lines = format_values(first)
        where = f"steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else f"step {steps[0]}"
        text = fixed_text + "\n" + "\n".join(lines)
        note(ax, f"{text}\n({where}, {len(steps)} logged)", fontsize=fontsize + 1)
        if len(steps) > 1:
            ax.set_xlim(steps[0], steps[-1])
        return False
    marker = "o" if markers and len(steps) <= 30 else None
    for label, names, values in merge_equal(lambdas):
        colour = (colours or {}).get(names[0])
        ax.plot(
            steps, values, linestyle, color=colour, label=label, marker=marker, markersize=3, linewidth=1.6
        )
    if warmup_end_step is not None:
        ax.axvline(
            warmup_end_step,
            color="0.3",
            linestyle="--",
            linewidth=1.0,
            label=f"end of warm-up (step {warmup_end_step})",
        )
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=fontsize)
    return True


# λ trajectories of several runs side by side: panel geometry, panels per row.
TRAJECTORY_PANEL_INCHES = (5.0, 3.6)
TRAJECTORY_COLUMNS = 3
TRAJECTORY_DPI = 100
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


def _read_run_lambdas(label, run):
    if not os.path.isdir(run):
        raise UserError(f"{label}: run directory {run!r} does not exist")
    from robust_ssl import rundir

    csv_path = os.path.join(run, rundir.LAMBDAS)
    if not os.path.isfile(csv_path):
        raise UserError(
            f"{label}: {run!r} holds no {rundir.LAMBDAS} (written while a run with tasks trains); "
            f"is it a training run's directory?"
        )
    return read_lambda_csv(csv_path)


def _panel_title(label, methods, num_seeds, steps_agree):
    """The label, how λ was learned unless the label says it, and what the lines are."""
    method = " / ".join(dict.fromkeys(m or "fixed λ" for m in methods))
    head = label if f"({method})" in label else f"{label} ({method})"
    if num_seeds == 1:
        return f"{head}\n1 run"
    drawn = "mean, band: min–max" if steps_agree else "one thin line per seed"
    return f"{head}\n{num_seeds} seeds: {drawn}"


def draw_seeds(ax, trajectories, colours=None, fontsize=8):
    """Draws λ of each task of one recipe's seeds into `ax`.

    One seed draws as `draw_lambdas` does. Several seeds logged at the same
    steps draw as the mean over seeds with a band from the lowest to the
    highest seed; seeds logged at different steps draw one thin line each.
    Tasks whose trajectories coincide in every seed draw as one line "a = b"
    (`merge_equal`); the end of the warm-up is a dashed vertical line; when no
    λ of any seed moves, a note lists the values.

    Args:
      ax: matplotlib Axes.
      trajectories: list of (steps [T], dict task -> λ [T]), one per seed,
        with the same tasks.
      colours: optional dict task name -> colour.
      fontsize: of the legend.

    Returns:
      True when curves were drawn, False when the panel holds the note.
    """
    from matplotlib.ticker import MaxNLocator

    if len(trajectories) == 1 or all(is_constant(lambdas) for _, lambdas in trajectories):
        steps, lambdas = trajectories[0]
        return draw_lambdas(
            ax, steps, lambdas, colours=colours, warmup_end_step=warmup_end(steps, lambdas), fontsize=fontsize
        )
    ax.set_xlabel("training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    tasks = list(trajectories[0][1])
    steps_agree = all(np.array_equal(steps, trajectories[0][0]) for steps, _ in trajectories)
    every_seed = {
        t: np.concatenate([np.asarray(lambdas[t], np.float64) for _, lambdas in trajectories]) for t in tasks
    }
    for label, names, _ in merge_equal(every_seed):
        colour = (colours or {}).get(names[0])
        if steps_agree:
            stack = np.stack([np.asarray(lambdas[names[0]], np.float64) for _, lambdas in trajectories])
            steps = trajectories[0][0]
            ax.fill_between(steps, stack.min(axis=0), stack.max(axis=0), color=colour, alpha=0.2, linewidth=0)
            ax.plot(steps, stack.mean(axis=0), color=colour, label=label, linewidth=1.6)
        else:
            for i, (steps, lambdas) in enumerate(trajectories):
                ax.plot(
                    steps,
                    lambdas[names[0]],
                    color=colour,
                    label=label if i == 0 else None,
                    linewidth=0.9,
                    alpha=0.8,
                )
    ends = sorted({e for e in (warmup_end(s, lam) for s, lam in trajectories) if e is not None})
    where = f"step {ends[0]}" if len(ends) == 1 else "steps " + ", ".join(map(str, ends))
    for i, end in enumerate(ends):  # one legend entry ("_": not in the legend) for all seeds
        label = f"end of warm-up ({where})"
        ax.axvline(end, color="0.3", linestyle="--", linewidth=1.0, label=label if i == 0 else "_" + label)
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=fontsize)
    return True


def plot_lambda_trajectories(runs, path, title=None):
    """λ trajectories of several runs side by side: one panel per label.

    Each panel draws λ of every task against the training step, in the same
    colour for a task in every panel, with its own y scale (the methods move λ
    on very different scales). The panel's title gives the label, the
    weighting method that learned λ (results.json's "weighting", see
    `rundir.weighting_method`; "fixed λ" without one) unless the label holds
    it as "(<method>)", and how the seeds are drawn (`draw_seeds`: one seed
    as is, several as mean and min–max band). Every run is read before
    anything is drawn, so a bad run writes no file.

    Args:
      runs: dict label -> a run directory or a list of them (the seeds of one
        recipe), in panel order; e.g. {"automl4 (lookahead)":
        ["runs/study/automl4/seed_0", "runs/study/automl4/seed_1"]}.
      path: PNG file to write (its folder is created).
      title: the figure's title (default: says what is drawn).

    Returns:
      The path written.

    Raises:
      UserError: no runs; a run directory that does not exist or holds no
        lambdas.csv; a malformed lambdas.csv (`read_lambda_csv`); seeds of one
        label that log different tasks.
    """
    from robust_ssl import rundir

    panels = []
    for label, dirs in dict(runs or {}).items():
        dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
        if not dirs:
            raise UserError(f"{label}: no run directory given")
        trajectories = [_read_run_lambdas(label, os.fspath(d)) for d in dirs]
        tasks = [list(lambdas) for _, lambdas in trajectories]
        if any(t != tasks[0] for t in tasks):
            raise UserError(
                f"{label}: its runs log different tasks ({'; '.join(','.join(t) for t in tasks)}); "
                f"give each its own label"
            )
        methods = [rundir.weighting_method(os.fspath(d)) for d in dirs]
        panels.append((str(label), methods, trajectories))
    if not panels:
        raise UserError("no run to plot: give at least one run directory")
    colours = {}
    for _, _, trajectories in panels:
        for task in trajectories[0][1]:
            colours.setdefault(task, f"C{len(colours) % 10}")

    columns = min(TRAJECTORY_COLUMNS, len(panels))
    rows = -(-len(panels) // columns)
    width, height = TRAJECTORY_PANEL_INCHES
    fig = new_figure((width * columns, height * rows + 0.5), TRAJECTORY_DPI)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (label, methods, trajectories) in zip(axes, panels):
        steps_agree = all(np.array_equal(s, trajectories[0][0]) for s, _ in trajectories)
        if draw_seeds(ax, trajectories, colours=colours):
            ax.set_ylabel("λ (weight of the task loss)")
        ax.set_title(_panel_title(label, methods, len(trajectories), steps_agree), fontsize=10)
    for ax in axes[len(panels) :]:
        ax.remove()
    fig.suptitle(title or "λ of each self-supervision task during training", fontsize=12)
    return save_png(fig, path, TRAJECTORY_DPI)
