"""robust_ssl.rundir: atomic writes, checkpoint names, the run directory of a checkpoint, the model's path."""

import json
import math
import os

import numpy as np
import pytest

from robust_ssl import rundir
from robust_ssl.errors import UserError


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "results.json"
    rundir.write_json(str(path), {"accuracy": 0.5, "nan": math.nan})
    assert json.loads(path.read_text()) == {"accuracy": 0.5, "nan": None}
    with pytest.raises(RuntimeError), rundir.atomic_write(str(path)) as f:
        f.write('{"half": ')
        raise RuntimeError("crash while writing")
    assert json.loads(path.read_text())["accuracy"] == 0.5  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["results.json"]  # and no temporary file is left


def test_text_csv_and_numpy_writes(tmp_path):
    rundir.write_text(str(tmp_path / "a.md"), "# title\n")
    assert (tmp_path / "a.md").read_text() == "# title\n"
    rundir.write_csv(str(tmp_path / "t.csv"), [{"x": 1, "y": 2, "extra": 3}], ["x", "y"])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["x,y", "1,2"]
    with rundir.atomic_path(str(tmp_path / "labels.npy"), suffix=".npy") as tmp:
        np.save(tmp, np.arange(3))
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), [0, 1, 2])
    rundir.write_config({"b": 1, "a": {"c": 2}}, str(tmp_path))
    assert list(json.loads((tmp_path / rundir.CONFIG).read_text())) == ["a", "b"]
    assert sorted(os.listdir(tmp_path)) == ["a.md", "config.json", "labels.npy", "t.csv"]


def test_checkpoints_and_the_run_directory_of_one(tmp_path):
    directory = tmp_path / rundir.CHECKPOINTS
    directory.mkdir()
    assert rundir.latest_checkpoint(str(directory)) is None
    for epoch in (2, 10, 9):
        open(rundir.checkpoint_path(str(directory), epoch), "w").close()
    (directory / "epoch_011.keras.tmp.keras").write_text("")  # a temporary file of an older version
    assert [os.path.basename(p) for p in rundir.checkpoints(str(directory))] == [
        "epoch_002.keras",
        "epoch_009.keras",
        "epoch_010.keras",
    ]
    latest = rundir.latest_checkpoint(str(directory))
    assert rundir.checkpoint_epoch(latest) == 10
    assert rundir.run_dir_of(checkpoint=latest) == str(tmp_path)
    assert rundir.run_dir_of(checkpoint=str(tmp_path / "model.keras")) == str(tmp_path)
    assert rundir.run_dir_of(workdir="w", checkpoint=latest) == "w"
    assert rundir.model_path(str(tmp_path)) == latest
    open(tmp_path / rundir.MODEL, "w").close()
    assert rundir.model_path(str(tmp_path)) == str(tmp_path / rundir.MODEL)


def test_model_path_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        rundir.model_path(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not found"):
        rundir.model_path(str(tmp_path / "missing.keras"))
    with pytest.raises(UserError, match="neither model.keras nor a checkpoint"):
        rundir.model_path(str(tmp_path))
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UserError, match="not a .keras model file"):
        rundir.model_path(str(tmp_path / "notes.txt"))
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(UserError, match="cannot load"):
        rundir.load_model(str(tmp_path / "broken.keras"))


def test_robustness_results_are_found_in_a_run_or_an_output_directory(tmp_path):
    assert rundir.robustness_results(str(tmp_path)) is None
    (tmp_path / rundir.ROBUSTNESS).mkdir()
    (tmp_path / rundir.ROBUSTNESS / rundir.ROBUSTNESS_CSV).write_text("")
    assert rundir.robustness_results(str(tmp_path)).endswith(os.path.join("robustness", "robustness.csv"))
    (tmp_path / rundir.ROBUSTNESS_JSON).write_text("{}")
    assert rundir.robustness_results(str(tmp_path)) == str(tmp_path / rundir.ROBUSTNESS_JSON)


def test_cut_logs_keeps_epochs_numbered_from_one_and_renumbers_an_older_metrics_csv(tmp_path):
    # metrics.csv numbers epochs from 1 (as the console and epoch_NNN.keras do);
    # resuming after epoch 2 keeps rows 1 and 2.
    (tmp_path / rundir.METRICS).write_text("epoch,loss\n1,3.0\n2,2.0\n3,1.0\n")
    assert rundir.cut_logs(str(tmp_path), 2, 4) == {rundir.METRICS: 1}
    assert (tmp_path / rundir.METRICS).read_text().splitlines() == ["epoch,loss", "1,3.0", "2,2.0"]
    # A file of an earlier version (epochs from 0) is renumbered before it is cut.
    (tmp_path / rundir.METRICS).write_text("epoch,loss\n0,3.0\n1,2.0\n2,1.0\n")
    assert rundir.cut_logs(str(tmp_path), 2, 4) == {rundir.METRICS: 1}
    assert (tmp_path / rundir.METRICS).read_text().splitlines() == ["epoch,loss", "1,3.0", "2,2.0"]


def test_a_run_saved_before_a_config_key_existed_resumes_at_its_default(tmp_path):
    """A config.json without a key added later (automl.method) is the same run at the default, another run otherwise."""
    import json

    from robust_ssl import config_utils, configs

    config = configs.load("smoke_automl")
    saved = config_utils.recorded(config)
    del saved["automl"]["method"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert config_utils.differences(config, str(tmp_path)) == []
    config.automl.method = "uncertainty"
    assert "automl.method" in config_utils.differences(config, str(tmp_path))
