"""Figures a user opens: what each task sees (the paper's Fig. 1) and λ over training (Fig. 2b).

`plot_lambdas` draws one run's λ; `plot_lambda_trajectories` draws several
runs side by side (one panel per recipe or weighting method, seeds as mean
and band), as a study's lambdas.png does. The λ logs are read by
`robust_ssl.lambda_logs` and drawn into each panel by `robust_ssl.lambda_panels`;
their names are importable from here too. Every figure is saved by `save_png`.

Everything draws on `matplotlib.figure.Figure` with the Agg canvas, never on
pyplot's global state, so the functions are safe in scripts, tests and
notebooks alike and need no display. TensorFlow is imported only where images
are read or transformed, so plotting λ stays light.
"""

import os

import numpy as np

from robust_ssl.errors import UserError
from robust_ssl.lambda_logs import group_runs as group_runs
from robust_ssl.lambda_logs import read_lambda_csv as read_lambda_csv
from robust_ssl.lambda_logs import run_label as run_label
from robust_ssl.lambda_logs import split_run_spec as split_run_spec
from robust_ssl.lambda_logs import warmup_end as warmup_end
from robust_ssl.lambda_panels import EQUAL_FRACTION as EQUAL_FRACTION
from robust_ssl.lambda_panels import draw_lambdas as draw_lambdas
from robust_ssl.lambda_panels import draw_seeds as draw_seeds
from robust_ssl.lambda_panels import format_values as format_values
from robust_ssl.lambda_panels import is_constant as is_constant
from robust_ssl.lambda_panels import merge_equal as merge_equal
from robust_ssl.lambda_panels import note as note

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


# λ trajectories of several runs side by side: panel geometry, panels per row.
TRAJECTORY_PANEL_INCHES = (5.0, 3.6)
TRAJECTORY_COLUMNS = 3
TRAJECTORY_DPI = 100


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
