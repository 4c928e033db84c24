"""λ search with keras-tuner (robust_ssl.tuning: hypermodel, search, trials, best_config; `robust-ssl tune`) and run comparison (robust_ssl.compare).

The expensive pieces run once per module: a search of 1 trial that a second
invocation extends to 2 (both through `robust-ssl tune`), and a `robust-ssl
train` run, in a directory outside the repository, of the best config it writes. Every trial trains WRN-10-1 on generated data for
1 epoch of 2 steps.
"""

import csv
import json
import os

import numpy as np
import pytest
from conftest import run_cli, tiny_config, write_config_file

from robust_ssl import compare, configs
from robust_ssl.errors import ConfigError, UserError
from robust_ssl.tuning import best_config, hypermodel
from robust_ssl.tuning import search as search_lib

# The objective's validation set: corrupted held-out training images, a small
# version of the default corrupted_holdout settings (64 images x 2 x 2 = 256).
VALIDATION = {
    "automl.validation.source": "corrupted_holdout",
    "automl.validation.corruptions": "gaussian_blur,saturate",
    "automl.validation.severities": "1,5",
}
TASKS = "rotation,ir"
TRIAL_FLAGS = ["--epochs=1", "--steps_per_epoch=2"]


def small_config(tasks=TASKS, **overrides):
    return tiny_config(tasks, **{**VALIDATION, **overrides})


def run_tool(command, *args, cwd=None):
    return run_cli(command, *args, **({"cwd": cwd} if cwd else {}))


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- the shared search
@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """A config file outside the package that returns `small_config()`."""
    return write_config_file(tmp_path_factory.mktemp("configs") / "tiny_search.py", TASKS, **VALIDATION)


@pytest.fixture(scope="module")
def search(tmp_path_factory, config_file):
    """A random search run with max_trials=1, then continued with max_trials=2."""
    workdir = tmp_path_factory.mktemp("search")
    args = [f"--config={config_file}", f"--workdir={workdir}", "--tuner=random", *TRIAL_FLAGS]
    first = run_tool("tune", *args, "--max_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    after_first = {
        "trial_0": (workdir / "keras_tuner" / "trial_0" / "trial.json").read_text(),
        "trials": sorted(os.listdir(workdir / "keras_tuner")),
        "search": read_json(workdir / "search.json"),
    }
    second = run_tool("tune", *args, "--max_trials=2")
    assert second.returncode == 0, second.stderr[-3000:]
    return {"workdir": workdir, "first": first, "second": second, "after_first": after_first}


@pytest.fixture(scope="module")
def best_run(tmp_path_factory, search):
    """`robust-ssl train` of the search's best_config.py (tiny budget), run outside the repository."""
    workdir = tmp_path_factory.mktemp("best_run")
    proc = run_tool(
        "train",
        f"--config={search['workdir'] / 'best_config.py'}",
        f"--workdir={workdir}",
        "--config.train.epochs=1",
        "--config.train.steps_per_epoch=2",
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_rerunning_a_search_continues_it(search):
    workdir, before = search["workdir"], search["after_first"]
    assert [n for n in before["trials"] if n.startswith("trial_")] == ["trial_0"]
    assert "resuming the search" in search["second"].stdout
    # Only one new trial ran, and trial 0 was not touched.
    trials = sorted(n for n in os.listdir(workdir / "keras_tuner") if n.startswith("trial_"))
    assert trials == ["trial_0", "trial_1"]
    assert (workdir / "keras_tuner" / "trial_0" / "trial.json").read_text() == before["trial_0"]
    state = read_json(workdir / "search.json")
    assert [s["trials_run"] for s in state["sessions"]] == [["0"], ["1"]]
    assert state["sessions"][0] == before["search"]["sessions"][0]
    assert state["wall_time_s"] == pytest.approx(sum(s["wall_time_s"] for s in state["sessions"]), abs=0.02)
    cpu_s = sum(s["cpu_time_s"] for s in state["sessions"])
    assert state["cpu_hours"] == pytest.approx(cpu_s / 3600, abs=1e-5) and cpu_s > 0
    assert state["device"] == {"kind": "CPU", "count": 1}
    assert state["device_hours"] == pytest.approx(state["wall_time_s"] / 3600, abs=1e-5)


def test_search_reports_every_trial_and_the_best_one(search):
    workdir = search["workdir"]
    rows = read_csv(workdir / "trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1"]
    # Numbered from 1 as keras-tuner prints them ("Running Trial #1"); the id names the folder.
    assert [r["trial_number"] for r in rows] == ["1", "2"]
    assert list(rows[0])[:2] == ["trial_number", "trial"]
    assert all(r["status"] == "COMPLETED" for r in rows)
    for r in rows:  # the default space: λ in [0, 2]
        for task in ("rotation", "ir"):
            assert 0.0 <= float(r[f"lambda_{task}"]) <= 2.0
    # The oracle's own record of each trial agrees with trials.csv.
    for r in rows:
        trial = read_json(workdir / "keras_tuner" / f"trial_{r['trial']}" / "trial.json")
        assert trial["score"] == pytest.approx(float(r["val_accuracy"]))
        assert trial["hyperparameters"]["values"]["lambda_ir"] == pytest.approx(float(r["lambda_ir"]))
    best_row = max(rows, key=lambda r: float(r["val_accuracy"]))
    best = read_json(workdir / "best_lambdas.json")
    assert best["trial"] == best_row["trial"]
    assert best["trial_number"] == int(best_row["trial_number"]) == int(best["trial"]) + 1
    assert read_json(workdir / "search.json")["best"]["trial_number"] == best["trial_number"]
    assert best["lambdas"] == {t: pytest.approx(float(best_row[f"lambda_{t}"])) for t in ("rotation", "ir")}
    assert best["learning_rate"] is None
    assert 0.0 <= best["test_accuracy"] <= 1.0
    # The printed table: one row per trial, the best one starred.
    out = search["second"].stdout
    assert "| trial | id | λ rotation | λ ir | lr | val accuracy | time (s) | status |" in out
    for r in rows:
        star = " *" if r["trial"] == best["trial"] else ""
        line = next(line for line in out.splitlines() if line.startswith(f"| {r['trial_number']}{star} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == r["trial"]
        assert cells[2:5] == [f"{float(r['lambda_rotation']):.3f}", f"{float(r['lambda_ir']):.3f}", "0.1000"]
        assert cells[5] == f"{float(r['val_accuracy']):.4f}"
    assert f"best trial #{best['trial_number']} (keras_tuner/trial_{best['trial']})" in out


def test_trials_are_scored_on_the_automl_meta_validation_set(search):
    state = read_json(search["workdir"] / "search.json")
    validation = dict(state["validation"])
    held, trained = validation.pop("holdout_class_counts"), validation.pop("train_class_counts")
    assert validation == {
        "source": "corrupted_holdout",
        "holdout": 64,
        "split": "stratified by class, drawn by seed",
        "corruptions": ["gaussian_blur", "saturate"],
        "severities": [1, 5],
        "seed": 0,
        "num_images": 64 * 2 * 2,
    }
    assert sum(held.values()) == 64 and sum(trained.values()) == 256 - 64
    assert state["num_train"] == 256 - 64  # trials never train on the held-out images
    assert read_json(search["workdir"] / "meta_validation.json")["source"] == "corrupted_holdout"


def test_validation_set_is_the_one_train_builds_for_automl():
    from robust_ssl import train
    from robust_ssl.data import datasets

    config = small_config()
    assert not config.automl.enabled
    data = hypermodel.load_search_data(config)
    (_, train_labels), meta, record = train.meta_validation(
        small_config(**{"automl.enabled": True}), datasets.load_data(config.data)
    )
    num_train = len(train_labels)
    ours = list(data.validation.as_numpy_iterator())
    theirs = list(meta.as_numpy_iterator())
    assert len(ours) == len(theirs) == data.num_validation == 256
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(ours, theirs))
    assert data.num_train == num_train == 192
    assert {k: v for k, v in data.record.items() if k != "num_images"} == record


def test_best_config_file_trains_with_the_best_lambdas(search, best_run):
    best = read_json(search["workdir"] / "best_lambdas.json")
    text = (search["workdir"] / "best_config.py").read_text()
    assert "importlib" in text  # the base file lives outside the package: imported by path
    saved = read_json(best_run / "config.json")
    assert saved["automl"]["enabled"] is False
    assert saved["tasks"] == TASKS
    for task, value in best["lambdas"].items():
        assert saved["task_weights"][task] == pytest.approx(value)
    results = read_json(best_run / "results.json")
    assert results["lambdas"] == {t: pytest.approx(v, rel=1e-6) for t, v in best["lambdas"].items()}
    assert results["steps"] == 2


@pytest.mark.parametrize("by", ["name", "file"])
def test_best_config_of_a_packaged_config_imports_it_and_keeps_overrides(tmp_path, by):
    base_config = "smoke" if by == "name" else configs.path("smoke")
    base = configs.load(base_config)
    config = configs.load(base_config)
    config.tasks = "rotation,color"
    config.train.epochs = 7
    config.train.verbose = 0  # a run-time switch: not carried over
    best = {"lambdas": {"rotation": 0.25, "color": 1.5}, "learning_rate": 0.02}
    text = best_config.render_best_config(base_config, config, best)
    assert "from robust_ssl.configs import smoke as _base" in text
    assert "importlib" not in text and "sys.path" not in text
    path = tmp_path / "best_config.py"
    path.write_text(text)
    loaded = configs.load(str(path))
    assert loaded.tasks == "rotation,color" and loaded.train.epochs == 7
    assert loaded.train.verbose == base.train.verbose
    assert loaded.task_weights.rotation == 0.25 and loaded.task_weights.color == 1.5
    assert (
        loaded.train.learning_rate == 0.02 and loaded.train.min_learning_rate == base.train.min_learning_rate
    )
    assert loaded.automl.enabled is False
    assert loaded.model.depth == base.model.depth


def test_an_interrupted_trial_is_run_again_with_the_same_values(tmp_path, monkeypatch):
    from robust_ssl.model import RobustSSLModel

    config = small_config()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the first trial

    monkeypatch.setattr(RobustSSLModel, "fit", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        search_lib.search(config, str(tmp_path), max_trials=2, epochs=1, log=lambda _: None)
    monkeypatch.undo()
    started = read_json(tmp_path / "keras_tuner" / "trial_0" / "trial.json")
    assert started["status"] == "RUNNING"

    result = search_lib.search(config, str(tmp_path), max_trials=2, epochs=1, log=lambda _: None)
    assert [r["trial"] for r in result["rows"]] == ["0", "1"]
    assert [r["trial_number"] for r in result["rows"]] == [1, 2]  # the retried trial keeps its number
    assert all(r["status"] == "COMPLETED" for r in result["rows"])
    finished = read_json(tmp_path / "keras_tuner" / "trial_0" / "trial.json")
    assert finished["hyperparameters"]["values"] == started["hyperparameters"]["values"]
    assert [s["trials_run"] for s in result["sessions"]] == [["0"], ["0", "1"]]
    # Without a config file, best_config.py builds on the packaged `default` plus every setting that differs.
    assert "from robust_ssl.configs import default as _base" in (tmp_path / "best_config.py").read_text()
    loaded = configs.load(str(tmp_path / "best_config.py"))
    assert loaded.model.depth == 10 and loaded.data.source == "synthetic" and loaded.tasks == TASKS
    assert loaded.task_weights.ir == pytest.approx(result["best"]["lambdas"]["ir"])


# ---------------------------------------------------------------- search space and bad input
def test_hyperparameters_are_the_lambdas_and_optionally_the_learning_rate():
    import keras_tuner

    space = hypermodel.SearchSpace(
        lambda_min=0.01, lambda_max=4.0, lambda_sampling="log", tune_learning_rate=True
    )
    model = hypermodel.make_hypermodel(small_config(**{"automl.enabled": True}), space, epochs=3)
    hp = keras_tuner.HyperParameters()
    trial = model.trial_config(hp)
    by_name = {p.name: p.get_config() for p in hp.space}
    assert sorted(by_name) == ["lambda_ir", "lambda_rotation", "learning_rate"]
    assert (by_name["lambda_ir"]["min_value"], by_name["lambda_ir"]["max_value"]) == (0.01, 4.0)
    assert by_name["lambda_ir"]["sampling"] == "log" and by_name["learning_rate"]["sampling"] == "log"
    assert trial.automl.enabled is False and trial.train.epochs == 3
    hp.values.update(lambda_rotation=1.25, lambda_ir=0.125, learning_rate=0.02)
    trial = model.trial_config(hp)
    assert (trial.task_weights.rotation, trial.task_weights.ir, trial.train.learning_rate) == (
        1.25,
        0.125,
        0.02,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"space": hypermodel.SearchSpace(lambda_sampling="log")}, "log sampling of λ needs a minimum > 0"),
        ({"space": hypermodel.SearchSpace(lambda_min=2.0, lambda_max=1.0)}, "λ range must satisfy"),
        ({"tuner": "grid"}, "tuner must be one of random, bayesian, hyperband"),
        ({"max_trials": 0}, "max_trials must be >= 1"),
    ],
)
def test_bad_search_settings_fail_before_anything_is_written(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        search_lib.search(small_config(), str(tmp_path / "w"), **kwargs)
    assert not (tmp_path / "w").exists()


def test_resuming_with_other_settings_is_refused(tmp_path, search):
    (tmp_path / "search.json").write_text((search["workdir"] / "search.json").read_text())
    with pytest.raises(UserError, match=r"other settings \(epochs, config.tasks\)"):
        search_lib.search(small_config(tasks="rotation"), str(tmp_path), max_trials=3, epochs=2)


def test_tune_tool_bad_input_is_one_error_line(tmp_path):
    proc = run_tool(
        "tune",
        "--config=smoke",
        f"--workdir={tmp_path}",
        "--lambda_sampling=log",
        "--max_trials=2",
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: log sampling of λ needs a minimum > 0 (log 0 is undefined); got 0.0"]


# ---------------------------------------------------------------- comparison
@pytest.fixture(scope="module")
def automl_run(tmp_path_factory):
    """A tiny AutoML run (train.train_and_evaluate) with a robustness evaluation of 2 cells."""
    from robust_ssl import train
    from robust_ssl.robustness import evaluation

    workdir = tmp_path_factory.mktemp("automl")
    train.train_and_evaluate(tiny_config(TASKS, automl=True, **VALIDATION), str(workdir))
    evaluation.evaluate_run(
        "generate",
        workdir=str(workdir),
        corruptions=("gaussian_noise", "fog"),
        severities=(2,),
        max_images=32,
        progress=False,
        log=lambda _: None,
    )
    return workdir


def test_compare_tool_reports_lambdas_cost_and_accuracy(tmp_path, search, best_run, automl_run):
    output = tmp_path / "report" / "cmp.md"
    proc = run_tool(
        "compare",
        str(automl_run),
        str(search["workdir"]),
        str(best_run),
        f"--output={output}",
        "--names=automl,search,tuned",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert output.read_text() in proc.stdout
    lines = [line for line in output.read_text().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "run",
        "λ set by",
        "λ rotation",
        "λ ir",
        "device",
        "device-hours",
        "clean acc (%)",
        "corruption acc (%)",
    ]
    table = {
        cells[0]: dict(zip(header, cells))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }
    assert list(table) == ["automl", "search", "tuned"]

    results = read_json(automl_run / "results.json")
    robustness = read_json(automl_run / "robustness" / "robustness.json")
    assert table["automl"]["λ set by"] == "learned (AutoML)"
    assert table["automl"]["λ rotation"] == f"{results['lambdas']['rotation']:.3f}"
    assert table["automl"]["clean acc (%)"] == f"{100 * results['test_accuracy']:.2f}"
    expected = np.mean([c["accuracy"] for c in robustness["cells"]])
    assert table["automl"]["corruption acc (%)"] == f"{100 * expected:.2f}"
    assert table["automl"]["device-hours"] == f"{results['wall_time_s'] / 3600:.4f}"

    state = read_json(search["workdir"] / "search.json")
    assert table["search"]["λ set by"] == "search (random, 2 trials)"
    assert table["search"]["λ ir"] == f"{state['best']['lambdas']['ir']:.3f}"
    assert table["search"]["device"] == "CPU ×1"
    assert table["search"]["device-hours"] == f"{state['wall_time_s'] / 3600:.4f}"
    assert table["search"]["clean acc (%)"] == f"{100 * state['best']['test_accuracy']:.2f}"
    assert table["search"]["corruption acc (%)"] == "–"

    tuned = read_json(best_run / "results.json")
    assert table["tuned"]["λ set by"] == "fixed"
    assert table["tuned"]["λ ir"] == table["search"]["λ ir"]
    assert table["tuned"]["clean acc (%)"] == f"{100 * tuned['test_accuracy']:.2f}"
    ratio = state["wall_time_s"] / results["wall_time_s"]
    assert f"Search `search` took {ratio:.1f}× the device-hours of AutoML run `automl`" in proc.stdout

    from matplotlib.image import imread

    png = imread(output.with_suffix(".png"))
    assert png.shape[1] == round(3 * compare.FIGSIZE_PER_RUN[0] * compare.DPI)  # one panel per run


def test_compare_reads_the_lambda_trajectory_of_an_automl_run(automl_run):
    (run,) = compare.compare([str(automl_run)])
    steps, values = run.trajectory
    assert steps == [1, 2, 3, 4]
    assert values["rotation"][:2] == [0.5, 0.5]  # warm-up
    assert values["rotation"][-1] == pytest.approx(run.lambdas["rotation"], abs=1e-5)
    assert run.initial_lambdas == {"rotation": 0.5, "ir": 0.5}
    assert run.corruption_cells == 2 and run.corruption_source == "generate"


def test_compare_refuses_a_directory_that_is_no_run(tmp_path):
    proc = run_tool("compare", str(tmp_path))
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path} holds neither a training run (config.json) nor a λ search (search.json)"
    ]


def test_validation_settings_are_checked_although_automl_is_off():
    config = small_config(**{"automl.validation.corruptions": "gaussian_blur,nope"})
    with pytest.raises(ConfigError, match="automl.validation.corruptions: unknown corruption 'nope'"):
        hypermodel.load_search_data(config)


def test_device_hours_count_every_replica(tmp_path):
    # A fixed-λ run on 2 replicas for an hour (files as train.py writes them).
    (tmp_path / "config.json").write_text(
        json.dumps({"tasks": "rotation", "task_weights": {"rotation": 0.25}, "automl": {"enabled": False}})
    )
    (tmp_path / "results.json").write_text(
        json.dumps({"test_accuracy": 0.5, "wall_time_s": 3600.0, "replicas": 2, "epochs": 1, "steps": 10})
    )
    (run,) = compare.compare([str(tmp_path)])
    assert (run.kind, run.lambdas, run.device, run.device_hours) == ("fixed", {"rotation": 0.25}, "? ×2", 2.0)
    header, rows = compare.table_rows([run])
    assert dict(zip(header, rows[0]))["device-hours"] == "2.0000"
