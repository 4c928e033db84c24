"""The robustness study tool on two tiny recipes: table, figure, resumption."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import run_cli

from robust_ssl import study
from robust_ssl.errors import UserError

COMMON = [
    "--set=data.source=synthetic",
    "--set=data.num_train=64",
    "--set=data.num_test=24",
    "--set=model.depth=10",
    "--set=model.width=1",
    "--set=train.epochs=1",
    "--set=train.steps_per_epoch=2",
    "--set=train.batch_size=16",
    "--set=train.eval_batch_size=24",
    "--set=train.verbose=0",
    "--set=train.log_every_steps=1",
]


def test_entries_and_overrides_parse():
    entry = study.parse_entry("fixed4=automl4:automl.enabled=False,train.epochs=3")
    assert (entry.label, entry.config) == ("fixed4", "automl4")
    assert entry.overrides == {"automl.enabled": False, "train.epochs": 3}
    assert study.parse_entry("baseline") == study.Entry("baseline", "baseline", {})
    assert study.parse_entry("runs/my.py").label == "my"
    assert study.parse_overrides(["data.image_size=(64, 64)", "data.folder=/x"]) == {
        "data.image_size": (64, 64),
        "data.folder": "/x",
    }
    with pytest.raises(UserError, match="key=value"):
        study.parse_overrides(["epochs"])


def test_unknown_keys_and_repeated_labels_are_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="unknown config key 'train.epoch'"):
        study.run_study(["baseline"], str(tmp_path / "s"), {"train.epoch": 1})
    with pytest.raises(UserError, match="labels must differ"):
        study.run_study(["baseline", "baseline"], str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_study_of_two_recipes_writes_table_and_figure_and_resumes(tmp_path):
    workdir = tmp_path / "study"
    args = [
        "study",
        f"--workdir={workdir}",
        "--configs=baseline",
        "--entry=rot=rotation:task_weights.rotation=1.0",
    ]
    result = run_cli(*args, *COMMON, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in study.TABLE_FILES:
        assert (workdir / name).is_file(), name
    saved = json.loads((workdir / "study.json").read_text())
    labels = [row["label"] for row in saved["table"]]
    assert labels == ["baseline", "rot"]
    base, rot = saved["table"]
    assert base["mce_relative"] == pytest.approx(1.0)  # the first recipe is the reference
    assert 0 <= rot["mean_accuracy_all"] <= 1 and rot["lambdas"] == {"rotation": 1.0}
    assert set(rot["families"]) == set(study.FAMILIES)
    for row in saved["runs"]:  # same budget for every recipe
        config = json.loads((workdir / row["label"] / "seed_0" / "config.json").read_text())
        assert config["train"]["epochs"] == 1 and config["model"]["depth"] == 10
    table = (workdir / "study.md").read_text()
    assert "| baseline |" in table and "| rot |" in table
    # Resuming: nothing is retrained or rescored.
    stamps = {p: os.path.getmtime(p) for p in workdir.glob("*/seed_0/results.json")}
    again = run_cli(*args, *COMMON, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert stamps == {p: os.path.getmtime(p) for p in workdir.glob("*/seed_0/results.json")}


def _tiny(name, **settings):
    from conftest import apply_settings, tiny_settings

    from robust_ssl import configs

    config = configs.load(name)
    base = {k: v for k, v in tiny_settings().items() if not k.startswith(("tasks", "automl.enabled"))}
    return apply_settings(config, {**base, "data.num_train": 160, **settings})


def test_every_recipe_trains_on_the_images_the_automl_recipes_train_on():
    from robust_ssl import train
    from robust_ssl.data import datasets, pipeline

    configs = [_tiny("baseline"), _tiny("rotation"), _tiny("automl4", **{"automl.validation.holdout": 48})]
    study.align_training_images(configs)
    assert [c.data.exclude_holdout for c in configs] == [48, 48, 0]
    data = datasets.load_data(configs[0].data)
    seen = []
    for config in configs:
        examples, _, _ = train.meta_validation(config, data)
        seen.append(pipeline.to_arrays(examples))
    for images, labels in seen[1:]:
        np.testing.assert_array_equal(images, seen[0][0])
        np.testing.assert_array_equal(labels, seen[0][1])
    assert len(seen[0][1]) == 160 - 48
    # Without the alignment the baseline trains on all 160.
    examples, _, _ = train.meta_validation(_tiny("baseline"), data)
    assert len(pipeline.to_arrays(examples)[1]) == 160


def test_a_later_invocation_trains_on_the_images_of_the_runs_already_in_the_study(tmp_path):
    from robust_ssl import config_utils

    def record(label, config):
        run = tmp_path / label / "seed_0"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps(config_utils.recorded(config)))
        return run

    record("automl4", _tiny("automl4", **{"automl.validation.holdout": 48}))
    record("baseline", _tiny("baseline"))  # left nothing out: not a size
    (tmp_path / "broken" / "seed_0").mkdir(parents=True)
    (tmp_path / "broken" / "seed_0" / "config.json").write_text("{")  # skipped
    planned = record("fixed4", _tiny("fixed4", **{"data.exclude_holdout": 16}))  # this invocation's own
    assert study.recorded_holdouts(str(tmp_path), [str(planned)]) == {48}
    assert study.recorded_holdouts(str(tmp_path)) == {16, 48}
    # `fixed4` alone, in the workdir of a study whose AutoML rows held out 48 images.
    configs = [_tiny("fixed4")]
    study.align_training_images(configs, study.recorded_holdouts(str(tmp_path), [str(planned)]))
    assert configs[0].data.exclude_holdout == 48
    with pytest.raises(UserError, match="different numbers of training images"):
        study.align_training_images([_tiny("fixed4")], {16, 48})


def test_recipes_with_different_holdouts_are_refused_and_the_flag_turns_alignment_off(tmp_path):
    configs = [_tiny("automl4", **{"automl.validation.holdout": 48}), _tiny("automl4")]
    with pytest.raises(UserError, match="different numbers of training images"):
        study.align_training_images(configs)
    with pytest.raises(UserError, match="exclude_holdout=32 differs"):
        from robust_ssl import config_utils

        config_utils.validate(
            _tiny("automl4", **{"data.exclude_holdout": 32, "automl.validation.holdout": 48})
        )


def test_the_leak_guard_holds_on_the_studys_shuffled_cifar10c(tmp_path):
    """A paper-style recipe's meta loss reads the study's own (shuffled) set: exactly the images scored never."""
    from robust_ssl import train
    from robust_ssl.data import cifar10c, datasets, pipeline
    from robust_ssl.robustness import evaluation

    config = _tiny("paper_automl4", **{"automl.validation.per_block": 4, "data.num_test": 24})
    corrupted = study.ensure_corrupted_set(str(tmp_path), config, log=lambda *_: None)
    study.point_meta_validation_at([config], corrupted)
    assert config.automl.validation.cifar10c_source == "npy"
    clean_images, _ = pipeline.to_arrays(datasets.load_data(config.data).test)
    _, meta, record = train.meta_validation(config, datasets.load_data(config.data))
    assert record["cifar10c_dir"] == corrupted and record["per_block"] == 4
    meta_images = {bytes(x) for x, _ in meta.as_numpy_iterator()}
    exclusion = evaluation.leak_guard(record, corrupted, data_config=config.data)
    assert exclusion.per_block == 4
    scored = set()
    for corruption in cifar10c.ALL_CORRUPTIONS:
        for severity in cifar10c.SEVERITIES:
            x, y = cifar10c.load_npy_block(corrupted, corruption, severity)
            kept, _ = cifar10c.split_block(x, y, "test", exclusion.per_block)
            scored |= {bytes(image) for image in kept}
    assert len(meta_images) > 0 and not meta_images & scored
    assert len(clean_images) == 24


# ----------------------------------------------------------------------- the method of each row
def _fake_scored_run(run, weighting=None, lambdas=None, config=None, steps=(0, 10, 20, 30)):
    """A run directory as a finished, scored run leaves it: nothing is trained or scored again."""
    from robust_ssl.data import cifar10c
    from robust_ssl.robustness import evaluation

    run.mkdir(parents=True)
    results = {"test_accuracy": 0.5, "lambdas": {}, "num_train": 64, "wall_time_s": 60.0}
    if weighting is not None:
        results["weighting"] = weighting
    if lambdas:
        results["lambdas"] = {t: values[-1] for t, values in lambdas.items()}
        with open(run / "lambdas.csv", "w") as f:
            f.write(",".join(["step", "epoch", *lambdas]) + "\n")
            for i, step in enumerate(steps):
                f.write(",".join(map(str, [step, 1, *(v[i] for v in lambdas.values())])) + "\n")
    (run / "results.json").write_text(json.dumps(results))
    (run / "config.json").write_text(json.dumps(config or {}))
    cells = [
        {
            "corruption": c,
            "severity": s,
            "accuracy": 0.4,
            "error": 0.6,
            "ece": 0.1,
            "nll": 1.0,
            "num_images": 8,
        }
        for c in cifar10c.ALL_CORRUPTIONS
        for s in cifar10c.SEVERITIES
    ]
    result = {
        "cells": cells,
        "clean": {"accuracy": 0.5, "error": 0.5, "ece": 0.1, "nll": 1.0, "num_images": 8},
    }
    (run / "robustness").mkdir()
    (run / "robustness" / "robustness.json").write_text(json.dumps({**result, "settings": {}}))
    assert evaluation.load_results(str(run / "robustness" / "robustness.json"))["summary"]


def _fake_study(workdir, missing_lambdas=()):
    """fixed4, automl4 and gradnorm4 × seeds 0, 1 as finished runs, and the study's CIFAR-10-C set."""
    from robust_ssl.data import cifar10c

    corrupted = workdir / study.CORRUPTED_DIR
    corrupted.mkdir(parents=True)
    for name in ("labels", *cifar10c.ALL_CORRUPTIONS):  # only their presence is checked
        (corrupted / f"{name}.npy").write_bytes(b"")
    tasks = ("rotation", "color", "ir", "bir")
    for seed in (0, 1):
        _fake_scored_run(workdir / "fixed4" / f"seed_{seed}", "fixed", {t: [0.5] * 4 for t in tasks})
        for label, method, scale in (("automl4", "lookahead", 0.01), ("gradnorm4", "gradnorm", 0.5)):
            moving = {
                t: [0.5, 0.5, 0.5 + scale * (i - 1.5), 0.5 + (seed + 1) * scale * (i - 1.5)]
                for i, t in enumerate(tasks)
            }
            _fake_scored_run(
                workdir / label / f"seed_{seed}",
                method,
                None if (label, seed) in missing_lambdas else moving,
            )


def test_study_rows_name_their_weighting_method_and_the_lambda_figure_covers_every_learned_recipe(
    tmp_path, monkeypatch
):
    """Finished runs on disk: nothing trains, the tables carry `method`, lambdas.png has one panel per method."""
    from robust_ssl import figures

    drawn = {}
    original = figures.save_png

    def keep(fig, path, dpi):  # the Figures saved, by file name
        drawn[os.path.basename(path)] = fig
        return original(fig, path, dpi)

    monkeypatch.setattr(figures, "save_png", keep)
    workdir = tmp_path / "study"
    _fake_study(workdir)
    lines = []
    table, paths = study.run_study(
        ["fixed4", "automl4", "gradnorm4"], str(workdir), seeds=(0, 1), log=lines.append
    )
    assert [(row["label"], row["method"]) for row in table] == [
        ("fixed4", "–"),
        ("automl4", "lookahead"),
        ("gradnorm4", "gradnorm"),
    ]
    saved = json.loads((workdir / "study.json").read_text())
    assert [row["method"] for row in saved["table"]] == ["–", "lookahead", "gradnorm"]
    assert [row["method"] for row in saved["runs"]] == [
        "–",
        "–",
        "lookahead",
        "lookahead",
        "gradnorm",
        "gradnorm",
    ]
    markdown = (workdir / "study.md").read_text()
    assert "| recipe | method | seeds |" in markdown
    assert "| fixed4 | – | 2 |" in markdown and "| automl4 | lookahead | 2 |" in markdown
    assert "| gradnorm4 | gradnorm | 2 |" in markdown
    with open(workdir / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["label"], r["method"]) for r in rows] == [
        ("fixed4", "–"),
        ("automl4", "lookahead"),
        ("gradnorm4", "gradnorm"),
    ]
    # The λ figure: the two recipes that learned λ, both seeds, the method in each title.
    assert paths[study.LAMBDA_FIGURE] == str(workdir / "lambdas.png") and (workdir / "lambdas.png").is_file()
    titles = [ax.get_title() for ax in drawn["lambdas.png"].axes]
    assert len(titles) == 2
    assert titles[0].startswith("automl4 (lookahead)") and titles[1].startswith("gradnorm4 (gradnorm)")
    assert all("2 seeds" in t for t in titles)
    assert not any("left out" in line for line in lines)


def test_a_learned_run_without_lambdas_is_left_out_of_the_figure_with_a_line(tmp_path):
    workdir = tmp_path / "study"
    _fake_study(workdir, missing_lambdas={("gradnorm4", 0), ("gradnorm4", 1), ("automl4", 1)})
    lines = []
    table, paths = study.run_study(
        ["fixed4", "automl4", "gradnorm4"], str(workdir), seeds=(0, 1), log=lines.append
    )
    assert [row["method"] for row in table] == ["–", "lookahead", "gradnorm"]  # still named: results.json
    assert sum("lambdas.csv: left out of lambdas.png" in line for line in lines) == 3
    assert study.lambda_runs(
        json.loads((workdir / "study.json").read_text())["runs"], log=lambda _: None
    ) == {"automl4 (lookahead)": [str(workdir / "automl4" / "seed_0")]}
    assert study.LAMBDA_FIGURE in paths
    # A study without learned λ draws no λ figure.
    rows = [r for r in json.loads((workdir / "study.json").read_text())["runs"] if r["method"] == "–"]
    assert study.plot_lambdas(rows, str(tmp_path / "none.png"), log=lines.append) is None
    assert not (tmp_path / "none.png").exists()


def test_the_method_of_a_run_from_results_or_its_config(tmp_path):
    from robust_ssl import rundir, weighting

    assert rundir.DEFAULT_WEIGHTING == weighting.DEFAULT_METHOD
    tasks = {"tasks": "rotation,color"}
    cases = {
        "named": (
            {"weighting": "uncertainty"},
            {**tasks, "automl": {"enabled": True, "method": "gradnorm"}},
            "uncertainty",
        ),
        "fixed": ({"weighting": "fixed"}, tasks, None),
        "old_automl": ({}, {**tasks, "automl": {"enabled": True}}, "lookahead"),  # before automl.method
        "unfinished": (None, {**tasks, "automl": {"enabled": True, "method": "auto_lambda"}}, "auto_lambda"),
        "old_fixed": ({}, {**tasks, "automl": {"enabled": False}}, None),
        "no_tasks": ({}, {"tasks": "", "automl": {"enabled": True}}, None),
    }
    for name, (results, config, expected) in cases.items():
        run = tmp_path / name
        run.mkdir()
        if results is not None:
            (run / "results.json").write_text(json.dumps(results))
        (run / "config.json").write_text(json.dumps(config))
        assert rundir.weighting_method(str(run)) == expected, name
    assert rundir.weighting_method(str(tmp_path / "nothing")) is None
    (tmp_path / "named" / "results.json").write_text("{")
    with pytest.raises(UserError, match="cannot read"):
        rundir.weighting_method(str(tmp_path / "named"))


def test_markdown_and_plot_of_a_table_without_methods_still_work(tmp_path):
    """Tables built before rows carried the method (an older study.json) still print and plot."""
    row = {
        "label": "a",
        "config": "a",
        "seeds": [0],
        "num_train": [64],
        "clean_accuracy": 0.5,
        "clean_accuracy_std": None,
        "mean_accuracy_benchmark": 0.4,
        "mean_accuracy_benchmark_std": None,
        "mean_accuracy_all": 0.4,
        "mean_accuracy_all_std": None,
        "mce_relative": 1.0,
        "mce_relative_std": None,
        "families": dict.fromkeys(study.FAMILIES, 0.4),
        "lambdas": {},
        "meta_loss": None,
        "wall_time_s": 60.0,
    }
    assert "| a | – | 1 |" in study.markdown([row], "old")
    assert os.path.isfile(study.plot([row], str(tmp_path / "old.png"), "old"))
