"""The robustness study tool on two tiny recipes: table, figure, resumption."""

import json
import os

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
