"""Figures that can be read: asserted on the matplotlib objects, not on pixels.

The λ panels of `robust-ssl compare` and `plot-lambdas`, the robustness heat
map and bar charts, the progress of an evaluation and the numbering of a λ
search's trials. Every figure function goes through `figures.save_png`; the
`drawn` fixture keeps each Figure it is given, so a test reads its axes, lines,
texts, colour limits and titles. Nothing here trains a model.
"""

import csv
import io
import json
import os

import matplotlib.colors
import numpy as np
import pytest

from robust_ssl import compare, figures
from robust_ssl.data import cifar10c
from robust_ssl.robustness import evaluation, reports
from robust_ssl.tuning import trials

TASKS = ["rotation", "color", "ir", "bir", "rgb", "jigsaw", "inpaint"]


@pytest.fixture
def drawn(monkeypatch):
    """The Figures saved during the test, by file name."""
    saved = {}
    original = figures.save_png

    def keep(fig, path, dpi):
        saved[os.path.basename(path)] = fig
        return original(fig, path, dpi)

    monkeypatch.setattr(figures, "save_png", keep)
    return saved


def texts(ax):
    return [t.get_text() for t in ax.texts]


def drawn_lines(ax):
    """Lines with data (the curves), not the warm-up marker."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("end of warm-up")]


# ----------------------------------------------------------------------- runs on disk
def write_run(root, name, automl, lambdas=None, results=True, weights=0.5):
    path = root / name
    path.mkdir()
    config = {
        "tasks": ",".join(TASKS),
        "task_weights": dict.fromkeys(TASKS, weights),
        "automl": {"enabled": automl},
        "train": {"epochs": 3},
    }
    (path / "config.json").write_text(json.dumps(config))
    if results:
        record = {"wall_time_s": 60.0, "test_accuracy": 0.8, "steps": 300, "epochs": 3}
        if automl and lambdas:
            record["lambdas"] = {t: float(v[1][-1]) for t, v in zip(TASKS, lambdas.items())}
        (path / "results.json").write_text(json.dumps(record))
    if lambdas:
        steps = list(range(0, 301, 10))
        with open(path / "lambdas.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "epoch", *lambdas])
            for i, step in enumerate(steps):
                writer.writerow([step, 1, *[lambdas[t][i] for t in lambdas]])
    return str(path)


def moving(scale):
    """λ over 31 logged steps: flat warm-up to step 100, then apart by up to `scale`; rotation = color."""
    t = np.clip((np.arange(0, 301, 10) - 100) / 200, 0, None)
    directions = {
        "rotation": 1,
        "color": 1,
        "ir": -0.75,
        "bir": -0.25,
        "rgb": 0.5,
        "jigsaw": -1,
        "inpaint": 0.1,
    }
    return {task: list(0.5 + scale * d * t) for task, d in directions.items()}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    search = root / "search"
    search.mkdir()
    best = dict(zip(TASKS, [0.27, 1.91, 0.48, 0.47, 1.0, 0.27, 0.5]))
    (search / "search.json").write_text(
        json.dumps(
            {
                "tuner": "random",
                "num_trials": 4,
                "tasks": TASKS,
                "trial_steps": 300,
                "epochs": 3,
                "steps_per_epoch": 100,
                "wall_time_s": 240.0,
                "cpu_hours": 0.05,
                "device": {"kind": "CPU", "count": 1},
                "best": {
                    "trial": "2",
                    "trial_number": 3,
                    "val_accuracy": 0.7,
                    "lambdas": best,
                    "learning_rate": None,
                    "test_accuracy": 0.85,
                },
            }
        )
    )
    return [
        write_run(root, "automl_small", True, moving(0.02)),
        write_run(root, "automl_large", True, moving(0.8)),
        write_run(root, "fixed", False, {t: [0.5] * 31 for t in TASKS}),
        write_run(root, "untrained", True, results=False),
        str(search),
    ]


# ----------------------------------------------------------------------- λ figures
def test_compare_panels_scale_their_own_y_axis_and_merge_equal_curves(runs, tmp_path, drawn):
    compare.write_report(runs, str(tmp_path / "comparison.md"))
    fig = drawn["comparison.png"]
    small, large, fixed, untrained, search = fig.axes
    assert fig._suptitle is not None and fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_title()  # run name and how λ was set
    # Own y scale per panel: the small moves (±0.02) are not drawn on the ±0.8 axis.
    low, high = small.get_ylim()
    assert high - low < 0.1
    assert large.get_ylim()[1] - large.get_ylim()[0] > 1.0
    assert small.get_ylim() != large.get_ylim()
    # rotation and color coincide: one line, labelled with both; every other task its own line.
    labels = [line.get_label() for line in drawn_lines(small)]
    assert "rotation = color" in labels and "rotation" not in labels and "color" not in labels
    assert len(labels) == len(TASKS) - 1
    assert "rotation = color" in [t.get_text() for t in small.get_legend().get_texts()]
    # The warm-up end is marked.
    assert any(line.get_label() == "end of warm-up (step 100)" for line in small.get_lines())


def test_compare_notes_instead_of_flat_lines(runs, tmp_path, drawn):
    compare.write_report(runs, str(tmp_path / "comparison.md"))
    _, _, fixed, untrained, search = drawn["comparison.png"].axes
    assert not fixed.get_lines()
    (note,) = texts(fixed)
    assert note.startswith("λ fixed at") and "0.5: rotation, color, ir, bir" in note
    assert not untrained.get_lines()
    (note,) = texts(untrained)
    assert "not trained" in note and "no λ logged" in note
    assert not search.get_lines()
    (note,) = texts(search)
    assert "best λ found" in note and "1.91: color" in note and "0.27: rotation, jigsaw" in note
    assert search.get_xlim() == (0, 300)  # one trial's steps


def test_compare_survives_a_lambda_file_without_rows(runs, tmp_path, drawn):
    with open(os.path.join(runs[3], "lambdas.csv"), "w") as f:
        f.write("step,epoch,rotation\n")
    (summary,) = compare.compare([runs[3]])
    assert summary.trajectory is None and any("no rows" in n for n in summary.notes)
    compare.plot_trajectories([summary], str(tmp_path / "one.png"))
    (ax,) = drawn["one.png"].axes
    assert "not trained" in texts(ax)[0]


def test_plot_lambdas_fixed_run_is_one_note(runs, tmp_path, drawn):
    _, end = figures.plot_lambdas(os.path.join(runs[2], "lambdas.csv"), str(tmp_path / "fixed.png"))
    assert end is None
    (ax,) = drawn["fixed.png"].axes
    assert ax.get_title()
    assert not ax.get_lines()  # not seven flat lines on top of each other
    (note,) = texts(ax)
    assert note.startswith("λ fixed at") and "0.5: rotation, color, ir, bir" in note and "inpaint" in note


def test_plot_lambdas_moving_run(runs, tmp_path, drawn):
    _, end = figures.plot_lambdas(os.path.join(runs[0], "lambdas.csv"), str(tmp_path / "moving.png"))
    assert end == 100
    (ax,) = drawn["moving.png"].axes
    assert ax.get_title() and ax.get_xlabel() == "training step" and ax.get_ylabel()
    assert [line.get_label() for line in drawn_lines(ax)][0] == "rotation = color"
    assert ax.get_ylim()[1] - ax.get_ylim()[0] < 0.1  # scaled to the data, not 0–2


def test_merge_equal_and_format_values():
    merged = figures.merge_equal({"a": [0.5, 0.6], "b": [0.5, 0.6], "c": [0.5, 0.7], "d": [0.5, 0.6000001]})
    assert [(label, names) for label, names, _ in merged] == [("a = b = d", ["a", "b", "d"]), ("c", ["c"])]
    assert figures.format_values({"a": 0.5, "b": 1.0, "c": 0.5}) == ["1: b", "0.5: a, c"]
    assert figures.is_constant({"a": [1, 1], "b": [2, 2]}) and not figures.is_constant({"a": [1, 2]})


def trajectory_runs(root, steps_of_seed=lambda seed: range(0, 301, 10)):
    """{label: [seed runs]}: lookahead (small moves), GradNorm (large) × 2 seeds, and a fixed-λ run."""
    runs = {}
    for label, method, scale in (("automl4 (lookahead)", "lookahead", 0.02), ("gradnorm4", "gradnorm", 0.8)):
        for seed in (0, 1):
            run = root / label.split()[0] / f"seed_{seed}"
            run.mkdir(parents=True)
            steps = list(steps_of_seed(seed))
            t = np.clip((np.array(steps) - 100) / 200, 0, None)
            with open(run / "lambdas.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", "epoch", "rotation", "color", "ir"])
                for i, step in enumerate(steps):
                    moved = (1 + 0.2 * seed) * scale * t[i]
                    writer.writerow([step, 1, 0.5 + moved, 0.5 + moved, 0.5 - moved])
            (run / "results.json").write_text(json.dumps({"weighting": method}))
            runs.setdefault(label, []).append(str(run))
    fixed = write_run(root, "fixed4", False, {t: [0.5] * 31 for t in TASKS[:3]})
    runs["fixed4"] = [fixed]
    return runs


def test_lambda_trajectories_name_the_method_and_keep_task_colours_across_panels(tmp_path, drawn):
    figures.plot_lambda_trajectories(trajectory_runs(tmp_path), str(tmp_path / "lambdas.png"))
    fig = drawn["lambdas.png"]
    assert fig._suptitle is not None and "λ" in fig._suptitle.get_text()
    lookahead, gradnorm, fixed = fig.axes
    # The method in every title (not repeated where the label names it), and what the lines are.
    assert lookahead.get_title().splitlines() == ["automl4 (lookahead)", "2 seeds: mean, band: min–max"]
    assert gradnorm.get_title().splitlines()[0] == "gradnorm4 (gradnorm)"
    assert fixed.get_title().splitlines() == ["fixed4 (fixed λ)", "1 run"]
    for ax in (lookahead, gradnorm):
        assert ax.get_xlabel() == "training step" and ax.get_ylabel().startswith("λ")
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["rotation = color", "ir", "end of warm-up (step 100)"]
        assert len(ax.collections) == 2  # one min–max band per drawn line
    # The same task in the same colour in every panel.
    colours = [
        {line.get_label(): line.get_color() for line in drawn_lines(ax)} for ax in (lookahead, gradnorm)
    ]
    assert colours[0] == colours[1] and len(set(colours[0].values())) == 2
    # Own y scale per panel: the lookahead's ±0.02 is not drawn on GradNorm's ±1.
    assert lookahead.get_ylim()[1] - lookahead.get_ylim()[0] < 0.2
    assert gradnorm.get_ylim()[1] - gradnorm.get_ylim()[0] > 1.0
    # A fixed-λ run: one note, not flat lines.
    assert not fixed.get_lines() and texts(fixed)[0].startswith("λ fixed at")


def test_lambda_trajectories_of_seeds_logged_at_different_steps_draw_one_line_per_seed(tmp_path, drawn):
    runs = trajectory_runs(tmp_path, steps_of_seed=lambda seed: range(0, 301, 10 + 5 * seed))
    figures.plot_lambda_trajectories(
        {"automl4 (lookahead)": runs["automl4 (lookahead)"]}, str(tmp_path / "l.png")
    )
    (ax,) = drawn["l.png"].axes
    assert ax.get_title().splitlines()[1] == "2 seeds: one thin line per seed"
    curves = [line for line in ax.get_lines() if "end of warm-up" not in line.get_label()]
    assert len(curves) == 4 and not ax.collections  # 2 lines × 2 seeds, no band
    # The seeds' warm-ups end at different logged steps: both marked, one legend entry.
    ends = [line for line in ax.get_lines() if "end of warm-up" in line.get_label()]
    assert [line.get_xdata()[0] for line in ends] == [90, 100]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "rotation = color",
        "ir",
        "end of warm-up (steps 90, 100)",
    ]


# ----------------------------------------------------------------------- robustness figures
def result_of(low, high, corruptions=cifar10c.ALL_CORRUPTIONS, severities=(1, 2, 3, 4, 5), seed=0):
    """A results dict whose cells fall from `high` (severity 1) to `low` (severity 5)."""
    rng = np.random.default_rng(seed)
    cells = []
    for corruption in corruptions:
        for severity in severities:
            accuracy = high - (high - low) * (severity - 1) / 4 + rng.uniform(-0.01, 0.01)
            cells.append(
                {
                    "corruption": corruption,
                    "severity": severity,
                    "accuracy": accuracy,
                    "error": 1 - accuracy,
                    "ece": 0.1,
                    "nll": 1.0,
                    "num_images": 100,
                }
            )
    clean = {"accuracy": high + 0.05, "error": 0.0, "ece": 0.1, "nll": 1.0, "num_images": 100}
    result = {"cells": cells, "clean": clean, "settings": {}}
    result["summary"] = evaluation.summarize(result)
    return result


def heatmap_parts(fig):
    ax, bar = fig.axes
    return ax, bar, ax.get_images()[0]


def test_heatmap_of_a_weak_model_spans_the_colours(tmp_path, drawn):
    weak = result_of(0.10, 0.22)
    reports.plot_heatmap(weak, str(tmp_path / "heatmap.png"))
    ax, bar, image = heatmap_parts(drawn["heatmap.png"])
    accuracies = [100 * c["accuracy"] for c in weak["cells"]]
    assert image.get_clim() == (np.floor(min(accuracies)), np.ceil(max(accuracies)))
    assert image.get_clim() != (0, 100)
    assert bar.get_ylabel() == "accuracy (%)"
    assert ax.get_title().startswith("Accuracy (%) under corruption") and "clean" in ax.get_title()
    assert ax.get_xlabel().startswith("severity\n(below the line") and ax.get_ylabel() == "corruption"
    width, height = drawn["heatmap.png"].get_size_inches()
    assert width >= reports.HEATMAP_MIN_INCHES[0] and height >= reports.HEATMAP_MIN_INCHES[1]


def test_heatmap_divides_benchmark_and_extra_corruptions(tmp_path, drawn):
    reports.plot_heatmap(result_of(0.3, 0.9), str(tmp_path / "heatmap.png"))
    ax, _, _ = heatmap_parts(drawn["heatmap.png"])
    dividers = [line for line in ax.get_lines() if line.get_gid() == "benchmark-divider"]
    assert len(dividers) == 1
    assert dividers[0].get_ydata()[0] == pytest.approx(len(cifar10c.BENCHMARK_CORRUPTIONS) - 0.5)
    styles = {t.get_text(): t.get_fontstyle() for t in ax.get_yticklabels()}
    assert styles["saturate"] == "italic" and styles["fog"] == "normal"
    # Only benchmark corruptions: nothing to divide.
    benchmark = result_of(0.3, 0.9, corruptions=cifar10c.BENCHMARK_CORRUPTIONS[:3])
    reports.plot_heatmap(benchmark, str(tmp_path / "bench.png"))
    assert not [line for line in drawn["bench.png"].axes[0].get_lines() if line.get_gid()]


def test_heatmap_text_colour_follows_the_background(tmp_path, drawn):
    result = result_of(0.05, 0.95, corruptions=("fog",))
    reports.plot_heatmap(result, str(tmp_path / "heatmap.png"))
    ax, _, image = heatmap_parts(drawn["heatmap.png"])
    colours = {t.get_text(): matplotlib.colors.to_rgb(t.get_color()) for t in ax.texts}
    best, worst = max(colours, key=float), min(colours, key=float)
    assert colours[best] == (0, 0, 0)  # black on viridis' yellow
    assert colours[worst] == (1, 1, 1)  # white on its dark purple
    for text in ax.texts:  # every cell: the text colour contrasts with its background
        background = image.cmap(image.norm(float(text.get_text())))
        luminance = np.dot(background[:3], [0.2126, 0.7152, 0.0722])
        assert (luminance > 0.45) == (matplotlib.colors.to_rgb(text.get_color()) == (0, 0, 0))


def test_heatmap_of_one_cell_has_a_sensible_size_and_scale(tmp_path, drawn):
    one = result_of(0.5, 0.5, corruptions=("fog",), severities=(3,))
    reports.plot_heatmap(one, str(tmp_path / "one.png"))
    ax, _, image = heatmap_parts(drawn["one.png"])
    low, high = image.get_clim()
    assert high - low == reports.MIN_COLOUR_SPAN and low <= 100 * one["cells"][0]["accuracy"] <= high
    width, height = drawn["one.png"].get_size_inches()
    assert (width, height) >= reports.HEATMAP_MIN_INCHES
    assert reports.colour_limits(result_of(0.97, 0.99, corruptions=("fog",))) == (90.0, 100.0)


def test_adaptation_heatmaps_share_one_scale(tmp_path, drawn):
    modes = {"none": result_of(0.1, 0.3), "bn": result_of(0.3, 0.5, seed=1)}
    for entry in modes.values():
        entry["seconds_per_image"] = 0.001
    result = {**modes["none"], "modes": modes}
    result["adaptation"] = evaluation.adaptation_summary(result)
    paths = reports.write_reports(result, str(tmp_path / "out"), labels=("tiny", "baseline"))
    assert {"heatmap", "heatmap_bn", "comparison"} <= set(paths)
    assert all(os.path.exists(p) for p in paths.values())
    none_ax, _, none_image = heatmap_parts(drawn["heatmap.png"])
    bn_ax, _, bn_image = heatmap_parts(drawn["heatmap_bn.png"])
    assert none_image.get_clim() == bn_image.get_clim() == reports.colour_limits(*modes.values())
    assert "adaptation: none" in none_ax.get_title() and "adaptation: bn" in bn_ax.get_title()
    assert drawn["comparison.png"].axes[0].get_title()


def test_comparison_chart_has_a_title_and_axis_labels(tmp_path, drawn):
    run = result_of(0.4, 0.9)
    reports.plot_comparison(run, str(tmp_path / "alone.png"), labels=("wrn", "baseline"))
    (ax,) = drawn["alone.png"].axes
    assert ax.get_title() == "Accuracy under corruption: wrn"
    assert ax.get_xlabel() and ax.get_ylabel() == "accuracy (%)"
    reports.plot_comparison(run, str(tmp_path / "both.png"), baseline=result_of(0.2, 0.5), labels=("a", "b"))
    assert drawn["both.png"].axes[0].get_title() == "Accuracy under corruption: a vs b"


def test_reports_say_how_many_images_each_cell_used(tmp_path, drawn):
    run = result_of(0.4, 0.9, corruptions=("fog", "snow"), severities=(1, 5))
    assert reports.image_counts(run) == "100 images per cell, 100 clean"
    paths = reports.write_reports(run, str(tmp_path / "out"), labels=("wrn", "baseline"))
    assert "- images scored: 100 images per cell, 100 clean" in open(paths["markdown"]).read().splitlines()
    assert "100 images per cell" in drawn["heatmap.png"].axes[0].get_title()
    assert drawn["comparison.png"].axes[0].get_xlabel().endswith("\n100 images per cell, 100 clean")
    run["cells"][0]["num_images"] = 90  # cells of different sizes: the range, and where each is
    run["clean"] = None
    assert reports.image_counts(run) == (
        "90–100 images per cell (each cell's count: num_images in robustness.csv), no clean set"
    )


# ----------------------------------------------------------------------- progress
def test_progress_shows_the_running_mean_one_line_per_corruption_off_a_terminal():
    stream = io.StringIO()
    progress = evaluation.CellProgress(5, stream=stream)
    assert not progress.interactive  # StringIO is not a terminal
    progress.add_clean({"none": 0.9})
    progress.add_cell("fog", 1, {"none": 0.8}, False)
    progress.add_cell("fog", 5, {"none": 0.4}, True)
    progress.add_cell("saturate", 1, {"none": 0.7}, False)
    progress.add_cell("saturate", 5, {"none": 0.1}, True)
    progress.finish()
    out = stream.getvalue()
    assert "\r" not in out
    lines = out.splitlines()
    assert lines[0].startswith("[1/5 cells] clean accuracy 90.0%")
    assert lines[1].startswith("[3/5 cells] fog: 60.0% over 2 severities; running mean accuracy 60.0%")
    # The last line: the mean over all cells, not the last cell's 10%.
    assert lines[2].startswith("[5/5 cells] saturate: 40.0% over 2 severities; running mean accuracy 50.0%")
    assert lines[3].startswith("scored 4 cells: mean accuracy 50.0%; clean 90.0%")
    assert len(lines) == 4


def test_progress_on_a_terminal_redraws_one_line_with_every_mode():
    stream = io.StringIO()
    progress = evaluation.CellProgress(2, stream=stream, interactive=True)
    progress.add_cell("fog", 1, {"none": 0.8, "bn": 0.9}, False)
    progress.add_cell("fog", 5, {"none": 0.2, "bn": 0.5}, True)
    progress.finish()
    out = stream.getvalue()
    assert out.count("\r") == 2
    assert "[2/2 cells] fog s5: 20.0%; running mean accuracy none 50.0%, bn 70.0%" in out
    assert out.endswith("scored 2 cells: mean accuracy none 50.0%, bn 70.0% (0s)\n")


def test_evaluation_prints_the_running_mean(capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(8) % 2

    def model(x):  # right on the even images only: accuracy 50% everywhere
        return np.tile([[4.0, 0.0]], (len(x), 1))

    result = evaluation.evaluate_robustness(
        model, "generate", clean=(images, labels), corruptions=("fog", "saturate"), severities=(1, 2)
    )
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == ["[1/5 cells", "[3/5 cells", "[5/5 cells"]
    assert "running mean accuracy 50.0%" in lines[-1]
    assert f"scored 4 cells: mean accuracy {100 * result['summary']['mean_accuracy_all']:.1f}%" in out


# ----------------------------------------------------------------------- trial numbers
def test_trials_are_numbered_as_keras_tuner_prints_them(tmp_path, capsys):
    """keras-tuner prints "Running Trial #1" for id "00": trial_number, the table and the id agree."""
    import keras
    import keras_tuner

    def build(hp):
        hp.Float("lambda_rotation", 0.0, 2.0)
        return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    tuner = keras_tuner.RandomSearch(
        build, objective="val_accuracy", max_trials=12, directory=str(tmp_path), project_name="kt", seed=1
    )
    tuner.oracle.verbose = 1
    for n in range(3):
        tuner.oracle.create_trial(f"tuner{n}")
    printed = [
        int(line.split("#")[1]) for line in capsys.readouterr().out.splitlines() if "Running Trial #" in line
    ]
    rows = trials.trial_rows(tuner, ["rotation"])
    assert [r["trial"] for r in rows] == ["00", "01", "02"]  # keras-tuner's ids: from 0, zero-padded
    assert [r["trial_number"] for r in rows] == printed == [1, 2, 3]
    table = trials.results_table(rows, ["rotation"], 0.1, best_trial="01").splitlines()
    assert table[0].startswith("| trial | id | λ rotation |")
    assert [line.split("|")[1:3] for line in table[2:]] == [
        [" 1 ", " 00 "],
        [" 2 * ", " 01 "],
        [" 3 ", " 02 "],
    ]
    assert trials.trial_number("x", position=4) == 5
