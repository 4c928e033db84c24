"""The robustness study tool on two tiny recipes: table, figure, resumption."""

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
