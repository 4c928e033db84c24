"""robust_ssl.figures and the two figure commands (`robust-ssl show-tasks`, `robust-ssl plot-lambdas`).

The library functions are tested directly; each tool also runs end to end as
a subprocess in a temporary directory, and its PNG is read back.
"""

import csv
import os

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_cli

from robust_ssl import figures
from robust_ssl.callbacks import LambdaLogger
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tasks import TASKS, make_tasks

SHOW_TASKS = "show-tasks"
PLOT_LAMBDAS = "plot-lambdas"
LAMBDA_PIXELS = tuple(int(round(x * figures.LAMBDA_DPI)) for x in figures.LAMBDA_FIGSIZE[::-1])


def run_tool(command, *args, cwd):
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    return run_cli(command, *args, cwd=cwd, env=env, timeout=300)


def read_png(path):
    """The PNG as float [H, W, C]; asserts it is a real, non-blank image."""
    assert os.path.getsize(path) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[-1] in (3, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    return image


def assert_one_line_error(result, *fragments):
    """Exit status 2, no traceback, and one `error: …` line last on stderr.

    `import robust_ssl` loads TensorFlow (it registers the model class with
    Keras), whose start-up log lines may come before the error.
    """
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


def write_lambda_csv(path, steps, rows, names=("rotation", "color", "ir", "bir")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", *names])
        for step, values in zip(steps, rows):
            writer.writerow([step, step // 50 + 1, *values])
    return path


def warmup_then_moving_csv(path, warmup_steps=50):
    """λ = 0.5 until `warmup_steps`, then drifting apart, logged every 10 steps."""
    steps = [1, *range(10, 201, 10)]
    rows = []
    for step in steps:
        t = max(0, step - warmup_steps) / 150
        rows.append([0.5 + 0.3 * t, 0.5 - 0.2 * t, 0.5 + 0.1 * t, max(0.0, 0.5 - 0.6 * t)])
    return write_lambda_csv(path, steps, rows), steps, rows


# ------------------------------------------------------------- task grid
def test_task_grid_size_and_content(tmp_path):
    images = np.zeros((2, 16, 16, 3), np.uint8)
    images[:, :8, :, 0] = 255  # top half red
    path = figures.task_grid(images, ["rotation", "color"], seed=0, path=str(tmp_path / "sub" / "grid.png"))
    image = read_png(path)
    height, width = figures.grid_size_pixels(2, 3)
    assert image.shape[:2] == (height, width)
    assert figures.grid_size_pixels(2, 3) == (270, 360)
    # Columns left to right: original (red on top), rotation (90° counter-
    # clockwise: red on the left), colour (grey). Probe pixels of the first row.
    column = width / 3
    top = figures.GRID_TITLE_INCHES * figures.GRID_DPI
    cell = (height - top) / 2
    upper, middle = int(top + cell / 4), int(top + cell / 2)
    original = image[upper, int(column / 2), :3]
    rotated_left = image[middle, int(1.5 * column) - 12, :3]
    rotated_right = image[middle, int(1.5 * column) + 12, :3]
    grey = image[upper, int(2.5 * column), :3]
    np.testing.assert_allclose(original, [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(rotated_left, [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(rotated_right, [0, 0, 0], atol=0.02)
    np.testing.assert_allclose(grey, [0.2989] * 3, atol=0.02)


def test_task_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="'nope'"):
        figures.task_grid(np.zeros((1, 8, 8, 3)), "rotation,nope", 0, str(tmp_path / "x.png"))
    with pytest.raises(UserError, match="RGB"):
        figures.task_grid(np.zeros((1, 8, 8)), make_tasks("rotation"), 0, str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def _write_png(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(tf.constant(rgb, tf.uint8)))


def test_load_folder_images_reads_nested_folders(tmp_path):
    for i, (split, cls) in enumerate([("train", "cat"), ("train", "dog"), ("test", "cat")]):
        _write_png(str(tmp_path / split / cls / f"{i}.png"), np.full((8, 12, 3), 40 * (i + 1)))
    (tmp_path / "notes.txt").write_text("not an image")
    images = figures.load_folder_images(str(tmp_path), num_images=10, seed=0, image_size=(16, 16))
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.float32
    np.testing.assert_allclose(sorted(images[:, 0, 0, 0] * 255), [40, 80, 120], atol=0.5)
    a = figures.load_folder_images(str(tmp_path), 2, seed=1)
    b = figures.load_folder_images(str(tmp_path), 2, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 32, 32, 3)


def test_load_folder_images_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        figures.load_folder_images(str(tmp_path / "missing"), 2)
    with pytest.raises(UserError, match="no images"):
        figures.load_folder_images(str(tmp_path), 2)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        figures.load_folder_images(str(tmp_path), 2)


def test_show_tasks_tool_on_generated_images(tmp_path):
    result = run_tool(SHOW_TASKS, "--output=out/fig.png", "--num_images=3", "--seed=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    image = read_png(tmp_path / "out" / "fig.png")
    assert image.shape[:2] == figures.grid_size_pixels(3, 1 + len(TASKS))
    assert "fig.png" in result.stdout


def test_show_tasks_tool_on_real_images(tmp_path, shared_mini):
    result = run_tool(
        SHOW_TASKS,
        "--output=fig.png",
        f"--folder={shared_mini}",
        "--num_images=2",
        "--tasks=rotation,bir,jigsaw",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    image = read_png(tmp_path / "fig.png")
    height, width = figures.grid_size_pixels(2, 4)
    assert image.shape[:2] == (height, width)
    assert width > 1.5 * height  # four columns, two rows


def test_show_tasks_tool_missing_folder(tmp_path):
    result = run_tool(SHOW_TASKS, "--output=fig.png", "--folder=no/such/dir", cwd=tmp_path)
    assert_one_line_error(result, "no/such/dir", "does not exist")
    assert not (tmp_path / "fig.png").exists()


def test_show_tasks_tool_bad_flags(tmp_path):
    result = run_tool(SHOW_TASKS, "--output=fig.png", "--num_images=0", cwd=tmp_path)
    assert_one_line_error(result, "--num_images")
    result = run_tool(
        SHOW_TASKS, "--output=fig.png", "--num_images=1", "--tasks=rotation,jigsw", cwd=tmp_path
    )
    assert_one_line_error(result, "'jigsw'")
    assert not (tmp_path / "fig.png").exists()


# ------------------------------------------------------------ λ plots
def test_read_lambda_csv_and_warmup_end(tmp_path):
    path, steps, rows = warmup_then_moving_csv(str(tmp_path / "lambdas.csv"))
    read_steps, lambdas = figures.read_lambda_csv(path)
    np.testing.assert_array_equal(read_steps, steps)
    assert list(lambdas) == ["rotation", "color", "ir", "bir"]
    np.testing.assert_allclose(lambdas["color"], [r[1] for r in rows])
    assert figures.warmup_end(read_steps, lambdas) == 50
    fixed = {"rotation": np.full(5, 0.5)}
    assert figures.warmup_end(np.arange(5), fixed) is None


def test_read_lambda_csv_keeps_the_last_row_of_a_replayed_step(tmp_path):
    path = write_lambda_csv(
        str(tmp_path / "l.csv"),
        [10, 20, 30, 20, 30, 40],
        [[0.5], [0.6], [0.7], [0.61], [0.71], [0.8]],
        ("ir",),
    )
    steps, lambdas = figures.read_lambda_csv(path)
    np.testing.assert_array_equal(steps, [10, 20, 30, 40])
    np.testing.assert_allclose(lambdas["ir"], [0.5, 0.61, 0.71, 0.8])


def test_plot_lambdas_reads_what_lambda_logger_writes(tmp_path):
    """LambdaLogger's CSV format and the plot's reader agree."""

    class FakeModel:
        def __init__(self):
            self.optimizer = type("Opt", (), {})()
            self.optimizer.iterations = tf.Variable(0, dtype=tf.int64)
            self.values = {"rotation": 0.5, "bir": 0.5}

        def lambda_values(self):
            return dict(self.values)

    csv_path = str(tmp_path / "lambdas.csv")
    logger = LambdaLogger(csv_path, ["rotation", "bir"], every=5)
    model = FakeModel()
    logger.set_model(model)
    for step in range(1, 31):
        model.optimizer.iterations.assign(step)
        if step > 15:
            model.values = {"rotation": 0.5 + 0.01 * (step - 15), "bir": 0.5 - 0.01 * (step - 15)}
        logger.on_train_batch_end(step - 1)
    png, end = figures.plot_lambdas(csv_path, str(tmp_path / "lambdas.png"))
    assert end == 15
    assert read_png(png).shape[:2] == LAMBDA_PIXELS


def test_plot_lambdas_errors(tmp_path):
    out = str(tmp_path / "x.png")
    with pytest.raises(UserError, match="does not exist"):
        figures.plot_lambdas(str(tmp_path / "none.csv"), out)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        figures.plot_lambdas(str(tmp_path / "empty.csv"), out)
    (tmp_path / "notasks.csv").write_text("step,epoch\n1,1\n")
    with pytest.raises(UserError, match="no task columns"):
        figures.plot_lambdas(str(tmp_path / "notasks.csv"), out)
    (tmp_path / "norows.csv").write_text("step,epoch,rotation\n")
    with pytest.raises(UserError, match="no rows"):
        figures.plot_lambdas(str(tmp_path / "norows.csv"), out)
    (tmp_path / "bad.csv").write_text("step,epoch,rotation\n1,1,0.5\n2,1,oops\n")
    with pytest.raises(UserError, match=r"bad.csv:3"):
        figures.plot_lambdas(str(tmp_path / "bad.csv"), out)
    (tmp_path / "nostep.csv").write_text("epoch,rotation\n1,0.5\n")
    with pytest.raises(UserError, match="'step'"):
        figures.plot_lambdas(str(tmp_path / "nostep.csv"), out)
    assert not os.path.exists(out)


def test_plot_lambdas_tool_with_workdir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    warmup_then_moving_csv(str(run_dir / "lambdas.csv"), warmup_steps=50)
    result = run_tool(PLOT_LAMBDAS, f"--workdir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "step 50" in result.stdout
    image = read_png(run_dir / "lambdas.png")
    assert image.shape[:2] == LAMBDA_PIXELS
    ratio = figures.LAMBDA_FIGSIZE[0] / figures.LAMBDA_FIGSIZE[1]
    assert image.shape[1] / image.shape[0] == pytest.approx(ratio, rel=0.01)


def test_plot_lambdas_tool_with_csv_and_output(tmp_path):
    csv_path = write_lambda_csv(str(tmp_path / "l.csv"), [1, 10, 20], [[0.5], [0.5], [0.5]], ("rgb",))
    result = run_tool(PLOT_LAMBDAS, f"--csv={csv_path}", "--output=plots/l.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warm-up" not in result.stdout  # λ never moves: no warm-up line
    assert read_png(tmp_path / "plots" / "l.png").shape[:2] == LAMBDA_PIXELS
    # Without --output the PNG goes beside the CSV.
    result = run_tool(PLOT_LAMBDAS, f"--csv={csv_path}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "l.png").exists()


def test_plot_lambdas_tool_errors(tmp_path):
    result = run_tool(PLOT_LAMBDAS, f"--workdir={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert_one_line_error(result, "lambdas.csv", "does not exist")
    (tmp_path / "notasks.csv").write_text("step,epoch\n1,1\n")
    result = run_tool(PLOT_LAMBDAS, "--csv=notasks.csv", cwd=tmp_path)
    assert_one_line_error(result, "no task columns")
    result = run_tool(PLOT_LAMBDAS, cwd=tmp_path)
    assert_one_line_error(result, "--workdir", "--csv")
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------- λ of several runs side by side
def write_run(root, name, method, steps, rows, names=("rotation", "color", "ir", "bir")):
    """A run directory with lambdas.csv and the results.json naming its weighting method."""
    run = root / name
    run.mkdir(parents=True)
    write_lambda_csv(str(run / "lambdas.csv"), steps, rows, names)
    (run / "results.json").write_text(f'{{"weighting": "{method}"}}')
    return str(run)


def two_methods_two_seeds(root):
    """{label: [seed_0, seed_1]} of a lookahead and a GradNorm recipe, laid out as a study lays them out."""
    runs = {}
    for label, method, scale in (("automl4", "lookahead", 0.05), ("gradnorm4", "gradnorm", 0.6)):
        for seed in (0, 1):
            _, steps, rows = warmup_then_moving_csv(str(root / "tmp.csv"))
            rows = [[0.5 + (seed + 1) * scale * (v - 0.5) for v in row] for row in rows]
            run = write_run(root, f"{label}/seed_{seed}", method, steps, rows)
            runs.setdefault(f"{label} ({method})", []).append(run)
    return runs


def trajectory_pixels(panels):
    columns = min(figures.TRAJECTORY_COLUMNS, panels)
    rows = -(-panels // columns)
    width, height = figures.TRAJECTORY_PANEL_INCHES
    return int(round((height * rows + 0.5) * figures.TRAJECTORY_DPI)), int(
        round(width * columns * figures.TRAJECTORY_DPI)
    )


def test_plot_lambda_trajectories_of_two_methods_and_two_seeds(tmp_path):
    runs = two_methods_two_seeds(tmp_path)
    path = figures.plot_lambda_trajectories(runs, str(tmp_path / "out" / "lambdas.png"))
    assert read_png(path).shape[:2] == trajectory_pixels(2)
    # One run directory per label works too, and five panels wrap onto two rows.
    five = {f"run {i}": runs["automl4 (lookahead)"][0] for i in range(5)}
    path = figures.plot_lambda_trajectories(five, str(tmp_path / "five.png"), title="five")
    assert read_png(path).shape[:2] == trajectory_pixels(5)


def test_plot_lambda_trajectories_refuses_a_run_without_lambdas(tmp_path):
    runs = two_methods_two_seeds(tmp_path)
    (tmp_path / "baseline" / "seed_0").mkdir(parents=True)
    out = str(tmp_path / "lambdas.png")
    with pytest.raises(UserError, match=r"baseline: .*baseline/seed_0.* holds no lambdas.csv"):
        figures.plot_lambda_trajectories({**runs, "baseline": [str(tmp_path / "baseline" / "seed_0")]}, out)
    with pytest.raises(UserError, match="run directory .*nowhere.* does not exist"):
        figures.plot_lambda_trajectories({"x": str(tmp_path / "nowhere")}, out)
    with pytest.raises(UserError, match="no run to plot"):
        figures.plot_lambda_trajectories({}, out)
    other = write_run(tmp_path, "other", "lookahead", [1, 2], [[0.5], [0.6]], names=("jigsaw",))
    with pytest.raises(UserError, match="log different tasks"):
        figures.plot_lambda_trajectories({"mixed": [runs["automl4 (lookahead)"][0], other]}, out)
    assert not os.path.exists(out)  # every run is read before anything is drawn


def test_group_runs_labels_a_studys_seeds_by_their_recipe(tmp_path):
    (tmp_path / "a=b").mkdir()
    specs = [
        "runs/study/automl4/seed_0",
        "runs/study/automl4/seed_1",
        "GN=runs/study/gradnorm4/seed_0",
        "runs/solo",
        str(tmp_path / "a=b"),
    ]
    assert figures.group_runs(specs) == {
        "automl4": ["runs/study/automl4/seed_0", "runs/study/automl4/seed_1"],
        "GN": ["runs/study/gradnorm4/seed_0"],
        "solo": ["runs/solo"],
        "a=b": [str(tmp_path / "a=b")],
    }
    assert figures.split_run_spec("runs/x") == (None, "runs/x")
    with pytest.raises(UserError, match="label=.*run directory"):
        figures.split_run_spec("=runs/x")
    with pytest.raises(UserError, match="label=.*run directory"):
        figures.split_run_spec("x=")


def test_plot_lambdas_tool_with_several_workdirs(tmp_path):
    runs = two_methods_two_seeds(tmp_path)
    flags = [f"--workdir={run}" for run in runs["automl4 (lookahead)"]]
    flags.append(f"--workdir=GradNorm={runs['gradnorm4 (gradnorm)'][0]}")
    result = run_tool(PLOT_LAMBDAS, *flags, "--output=plots/all.png", "--title=two methods", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "automl4: 2 run(s)" in result.stdout and "GradNorm: 1 run(s)" in result.stdout
    assert read_png(tmp_path / "plots" / "all.png").shape[:2] == trajectory_pixels(2)
    # Several runs need --output; a run without lambdas.csv is one error line; nothing is written.
    result = run_tool(PLOT_LAMBDAS, *flags, cwd=tmp_path)
    assert_one_line_error(result, "--output")
    (tmp_path / "empty").mkdir()
    result = run_tool(PLOT_LAMBDAS, *flags, "--workdir=empty", "--output=bad.png", cwd=tmp_path)
    assert_one_line_error(result, "empty", "holds no lambdas.csv")
    assert not (tmp_path / "bad.png").exists() and not list(tmp_path.glob("*.png"))
