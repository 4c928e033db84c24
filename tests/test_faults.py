"""Fault injection on a run's folder: damaged checkpoints, locks, resumption, extension.

One tiny run (WRN-10-1, rotation, 2 epochs of 2 steps, a checkpoint after
every step) is trained once; each case damages a copy of its folder and
trains again, in this process or with the `robust-ssl` tool (to see the one
line a user gets). Every case checks that earlier outputs are not lost.
"""

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import run_cli, tiny_config, write_config_file

import robust_ssl  # noqa: F401  (registers RobustSSLModel for loading)
from robust_ssl import rundir, train
from robust_ssl.errors import ConfigError

SETTINGS = {"train.checkpoint_every_steps": 1, "train.keep_checkpoints": 4, "train.eval_every_epoch": False}
# Checkpoints of the finished run, oldest first: steps 1, 2 (epoch 1), 3, 4 (epoch 2).
NAMES = ["epoch_000_step_0000001.keras", "epoch_001.keras", "epoch_001_step_0000003.keras", "epoch_002.keras"]


def config(**overrides):
    return tiny_config("rotation", **{**SETTINGS, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The uninterrupted run's folder (do not change it: copy it with `copy_run`)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train.train_and_evaluate(config(), str(workdir))
    return workdir


def copy_run(finished, tmp_path, keep=NAMES):
    """A copy of the finished run as an interrupted one: no model or results, only `keep` checkpoints."""
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    for name in (rundir.MODEL, rundir.RESULTS):
        (workdir / name).unlink()
    for path in (workdir / rundir.CHECKPOINTS).iterdir():
        if path.name not in keep:
            path.unlink()
    return workdir


def weights(path):
    model = keras.saving.load_model(path)
    return [w.numpy() for w in model.weights], model


def assert_same_model(a, b):
    (wa, ma), (wb, mb) = weights(a), weights(b)
    assert len(wa) == len(wb)
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb))
    assert diff == 0.0, diff
    assert int(ma.optimizer.iterations.numpy()) == int(mb.optimizer.iterations.numpy())


def rows(path):
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines.count(lines[0]) == 1, "more than one header"
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_logs_whole(workdir, epochs=2, steps=4):
    assert [int(r["epoch"]) for r in rows(workdir / rundir.METRICS)] == list(range(epochs))
    assert [int(r["step"]) for r in rows(workdir / rundir.LAMBDAS)] == list(range(1, steps + 1))


def tool(workdir, tmp_path, **overrides):
    config_file = write_config_file(tmp_path / "tiny.py", **{**SETTINGS, **overrides})
    return run_cli("train", f"--config={config_file}", f"--workdir={workdir}")


def error_lines(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def warning_lines(proc, text):
    return [line for line in proc.stderr.splitlines() if text in line]


def test_the_finished_run_has_checkpoints_within_and_after_epochs(finished):
    assert sorted(os.listdir(finished / rundir.CHECKPOINTS)) == NAMES
    assert_logs_whole(finished)
    state = json.loads((finished / rundir.RUN_STATE).read_text())
    assert len(state["sessions"]) == 1 and state["sessions"][0]["steps"] == 4
    assert not (finished / rundir.LOCK).exists()


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(finished, tmp_path):
    workdir = copy_run(finished, tmp_path)
    newest = workdir / rundir.CHECKPOINTS / NAMES[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    proc = tool(workdir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert error_lines(proc) == []
    warned = warning_lines(proc, "does not load")
    assert len(warned) == 1 and NAMES[-1] in warned[0] and "trying the previous one" in warned[0], warned
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)  # resumed at step 3, mid-epoch
    assert_logs_whole(workdir)
    assert json.loads((workdir / rundir.RESULTS).read_text())["resumed_from_step"] == 3


def test_garbage_inside_the_newest_checkpoint_falls_back_and_ends_like_the_uninterrupted_run(
    finished, tmp_path, caplog
):
    workdir = copy_run(finished, tmp_path)
    newest = workdir / rundir.CHECKPOINTS / NAMES[-1]
    data = bytearray(newest.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = os.urandom(64)  # same size, bad CRC inside
    newest.write_bytes(bytes(data))
    results = train.train_and_evaluate(config(), str(workdir))
    warned = [r.getMessage() for r in caplog.records if "does not load" in r.getMessage()]
    assert len(warned) == 1 and NAMES[-1] in warned[0], warned
    assert results["resumed_from_step"] == 3 and results["steps"] == 4
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)
    assert_logs_whole(workdir)


def test_no_checkpoint_loads_is_one_line_and_the_files_are_left_alone(finished, tmp_path):
    workdir = copy_run(finished, tmp_path, keep=NAMES[-2:])
    directory = workdir / rundir.CHECKPOINTS
    (directory / NAMES[-1]).write_bytes(b"not a zip file")
    (directory / NAMES[-2]).write_bytes((directory / NAMES[-2]).read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    metrics = (workdir / rundir.METRICS).read_text()
    proc = tool(workdir, tmp_path)
    assert proc.returncode == 2
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: no checkpoint in {directory} loads (")
    assert NAMES[-1] in errors[0] and NAMES[-2] in errors[0]
    assert errors[0].endswith("move that folder aside to start afresh")
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # damaged files stay
    assert (workdir / rundir.METRICS).read_text() == metrics
    assert not (workdir / rundir.LOCK).exists()  # released on the error too


def test_a_checkpoint_of_another_model_is_not_taken(finished, tmp_path, caplog):
    workdir = copy_run(finished, tmp_path)
    other = tmp_path / "other"
    train.train_and_evaluate(tiny_config("rotation", **{"train.epochs": 1, "model.width": 2}), str(other))
    shutil.copy(other / rundir.MODEL, workdir / rundir.CHECKPOINTS / NAMES[-1])
    results = train.train_and_evaluate(config(), str(workdir))
    warned = [r.getMessage() for r in caplog.records if "does not load" in r.getMessage()]
    assert len(warned) == 1 and "another model" in warned[0], warned
    assert results["resumed_from_step"] == 3
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)


def test_a_second_concurrent_run_is_refused(finished, tmp_path):
    workdir = copy_run(finished, tmp_path)
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (workdir / rundir.LOCK).write_text(json.dumps(lock))
    before = {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}
    proc = tool(workdir, tmp_path)
    assert proc.returncode == 2
    assert error_lines(proc) == [
        f"error: {workdir} is in use by pid {os.getpid()} on this host (since 2026-01-01T00:00:00+00:00); "
        f"wait for it to end or use another --workdir (lock file {workdir / rundir.LOCK})"
    ]
    assert {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()} == before  # nothing touched


def test_a_stale_lock_of_a_dead_process_is_taken_over(finished, tmp_path):
    workdir = copy_run(finished, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}
    (workdir / rundir.LOCK).write_text(json.dumps(lock))
    proc = tool(workdir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert error_lines(proc) == []
    warned = warning_lines(proc, "stale lock")
    assert len(warned) == 1 and f"pid {dead.pid}" in warned[0], proc.stderr[-3000:]
    assert not (workdir / rundir.LOCK).exists()
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)


def test_resume_cuts_the_logs_back_to_the_checkpoint(finished, tmp_path):
    workdir = copy_run(finished, tmp_path, keep=NAMES[:2])  # killed after step 4, newest checkpoint: step 2
    with open(workdir / rundir.METRICS, "a") as f:  # and a header repeated by an older version
        f.write((workdir / rundir.METRICS).read_text().splitlines()[0] + "\n")
    results = train.train_and_evaluate(config(), str(workdir))
    assert results["resumed_from_step"] == 2 and results["resumed_from_epoch"] == 1
    assert_logs_whole(workdir)
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)


def test_mid_epoch_checkpoint_resumes_exactly(finished, tmp_path):
    workdir = copy_run(finished, tmp_path, keep=NAMES[:1])  # step 1 of epoch 1
    results = train.train_and_evaluate(config(), str(workdir))
    assert results["resumed_from_step"] == 1 and results["resumed_from_epoch"] == 0
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)
    assert_logs_whole(workdir)
    # keep_checkpoints is respected across both kinds
    assert sorted(os.listdir(workdir / rundir.CHECKPOINTS)) == NAMES


def test_rerunning_a_finished_run_keeps_its_accumulated_time(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    first = json.loads((finished / rundir.RESULTS).read_text())
    results = train.train_and_evaluate(config(), str(workdir))
    assert results["sessions"] == 2 and results["steps"] == 4
    assert results["wall_time_s"] >= first["wall_time_s"] + results["session_wall_time_s"] - 0.2
    assert results["cpu_time_s"] >= first["cpu_time_s"]
    state = json.loads((workdir / rundir.RUN_STATE).read_text())
    assert [s["resumed_from_step"] for s in state["sessions"]] == [0, 4]
    assert_same_model(finished / rundir.MODEL, workdir / rundir.MODEL)
    assert_logs_whole(workdir)


def test_raising_epochs_continues_a_finished_run_and_lowering_is_refused(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    results = train.train_and_evaluate(config(**{"train.epochs": 3}), str(workdir))
    assert results["steps"] == 6 and results["epochs"] == 3 and results["resumed_from_step"] == 4
    assert json.loads((workdir / rundir.CONFIG).read_text())["train"]["epochs"] == 3
    assert_logs_whole(workdir, epochs=3, steps=6)
    with pytest.raises(ConfigError, match=r"different config \(train.epochs\)"):
        train.train_and_evaluate(config(), str(workdir))


def test_a_config_without_a_checkpoint_is_not_another_run(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    rundir.write_config({"tasks": "ir", "train": {"epochs": 7}}, str(workdir))  # stopped before a checkpoint
    (workdir / rundir.METRICS).write_text("epoch,loss\n0,1.0\n")
    results = train.train_and_evaluate(config(**{"train.epochs": 1}), str(workdir))
    assert results["steps"] == 2
    assert json.loads((workdir / rundir.CONFIG).read_text())["tasks"] == "rotation"
    assert [int(r["epoch"]) for r in rows(workdir / rundir.METRICS)] == [0]


def test_checkpoints_are_ordered_by_epoch_and_step(tmp_path):
    for name in (
        "epoch_010.keras",
        "epoch_009_step_0000950.keras",
        "epoch_009.keras",
        "epoch_002_step_0000201.keras",
    ):
        (tmp_path / name).write_text("")
    (tmp_path / ".epoch_011.keras.1-0.tmp.keras").write_text("")  # a temporary file is never one
    (tmp_path / "epoch_011.keras.tmp.keras").write_text("")
    assert [os.path.basename(p) for p in rundir.checkpoints(str(tmp_path))] == [
        "epoch_002_step_0000201.keras",
        "epoch_009.keras",
        "epoch_009_step_0000950.keras",
        "epoch_010.keras",
    ]
    assert rundir.checkpoint_epoch(str(tmp_path / "epoch_009_step_0000950.keras")) == 9
    assert rundir.checkpoint_step(str(tmp_path / "epoch_009_step_0000950.keras")) == 950
    assert rundir.checkpoint_step(str(tmp_path / "epoch_009.keras")) is None


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), rundir.workdir_lock(str(tmp_path)):
        assert json.loads((tmp_path / rundir.LOCK).read_text())["pid"] == os.getpid()
        raise RuntimeError("crash")
    assert not (tmp_path / rundir.LOCK).exists()
