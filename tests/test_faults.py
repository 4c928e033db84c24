"""Fault injection: every case of a run that goes wrong, as a test.

Start-up (each case runs `robust-ssl train` as `python -m robust_ssl.cli` in
a subprocess): every user mistake is one `error:` line and exit status 2, no
traceback, and the workdir is exactly as it was (absent, or the same files
with the same contents); --dry_run, redirected output (one line per epoch, no
carriage returns), hidden TensorFlow start-up logs, a lost worker of a
two-process multi-worker run on 127.0.0.1.

A run's folder: one tiny run (WRN-10-1, rotation, 2 epochs of 2 steps, a
checkpoint after every step) is trained once; each case damages a copy of its
folder (damaged checkpoints, locks, resumption, extension) and trains again,
in this process or with the `robust-ssl` tool (to see the one line a user
gets). Every case checks that earlier outputs are not lost.
"""

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import REPO, run_cli, tiny_config, write_config_file

import robust_ssl.model  # noqa: F401  (registers RobustSSLModel for loading)
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
    # Epochs numbered as the console and the checkpoints number them: 1 … epochs.
    assert [int(r["epoch"]) for r in rows(workdir / rundir.METRICS)] == list(range(1, epochs + 1))
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
    (workdir / rundir.METRICS).write_text("epoch,loss\n1,1.0\n")
    results = train.train_and_evaluate(config(**{"train.epochs": 1}), str(workdir))
    assert results["steps"] == 2
    assert json.loads((workdir / rundir.CONFIG).read_text())["tasks"] == "rotation"
    assert [int(r["epoch"]) for r in rows(workdir / rundir.METRICS)] == [1]  # the new run's only epoch


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


# ---------------------------------------------------------------- start-up
TINY = [
    "--config=smoke",
    "--config.tasks=rotation",
    "--config.train.epochs=2",
    "--config.train.steps_per_epoch=2",
    "--config.train.batch_size=16",
    "--config.train.eval_batch_size=32",
    "--config.data.num_train=64",
    "--config.data.num_test=32",
]
# What TensorFlow writes at start-up unless it is hidden.
STARTUP_NOISE = ("oneDNN", "cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard")


def quiet_env(**extra):
    """The environment of a user's shell: no TF_CPP_MIN_LOG_LEVEL (conftest sets one for the tests)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG")}
    env.update(extra)
    return env


def one_error(proc):
    """The single `error:` line of a failed command; asserts status 2 and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def snapshot(directory):
    """{relative path: sha256} of every file under directory (None if it does not exist)."""
    if not directory.exists():
        return None
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def image_folder(root, classes=2, per_class=24):
    """A tiny folder of PNG images in class sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


# ---------------------------------------------------------------- start-up mistakes
def test_a_missing_data_folder_writes_nothing_and_the_corrected_command_trains(tmp_path):
    folder = image_folder(tmp_path / "images")
    args = ["train", *TINY, "--workdir=run", "--config.data.source=folder"]
    proc = run_cli(*args, "--config.data.folder=imagez", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: image folder 'imagez' (data.folder) does not exist"
    assert not (tmp_path / "run").exists()
    # The same command with the folder corrected starts cleanly (no "different config").
    (folder / "class1" / "notes.txt").write_text("not an image")
    (folder / "labels.csv").write_text("not an image either")
    (folder / "class0" / ".DS_Store").write_text("hidden: not counted")
    proc = run_cli(*args, f"--config.data.folder={folder.name}", cwd=tmp_path, env=quiet_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 4
    # What was found, and what was not taken, in one line; no synthetic-only keys anywhere.
    assert (
        "found 43 training and 5 test images of 32x32 in 2 classes (class0, class1) in folder images; "
        "2 file(s) that are not .jpg/.jpeg/.png/.bmp/.gif images ignored: labels.csv, notes.txt"
    ) in proc.stdout.splitlines()
    assert "data: folder images (images and classes are counted when it is read: see `found`)" in proc.stdout
    assert (
        "num_train" not in proc.stdout and "num_train" not in (tmp_path / "run" / "config.json").read_text()
    )


def test_a_failure_found_after_start_leaves_the_workdir_as_it_was(tmp_path):
    # A folder without images is found while scanning, after config.json is written: undone.
    (tmp_path / "empty" / "class0").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path / "run")
    proc = run_cli(
        "train",
        *TINY,
        "--workdir=run",
        "--config.data.source=folder",
        "--config.data.folder=empty",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert one_error(proc).startswith("error: no images")
    assert snapshot(tmp_path / "run") == before


def test_batch_not_divisible_by_the_workers_is_refused_before_any_worker_starts(tmp_path):
    tf_config = json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}
    )
    proc = run_cli(
        "train",
        *TINY,
        "--workdir=run",
        "--config.distribute=multi_worker",
        "--config.train.batch_size=15",
        cwd=tmp_path,
        env=quiet_env(TF_CONFIG=tf_config),
        timeout=120,  # no peer exists: a check after the strategy would hang
    )
    assert one_error(proc) == (
        "error: train.batch_size=15 does not divide by the 2 replicas of distribute=multi_worker; "
        "use a multiple of 2"
    )
    assert not (tmp_path / "run").exists()


LOGICAL_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from robust_ssl import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_devices_and_batches_on_two_logical_cpus(tmp_path):
    def run(*extra):
        return subprocess.run(
            [
                sys.executable,
                "-c",
                LOGICAL_CPUS,
                "train",
                *TINY,
                "--workdir=run",
                "--config.distribute=mirrored",
                *extra,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )

    proc = run("--config.devices=/cpu:0,/cpu:1", "--config.train.batch_size=15")
    assert one_error(proc) == (
        "error: train.batch_size=15 does not divide by the 2 replicas of distribute=mirrored; use a multiple of 2"
    )
    proc = run("--config.devices=/cpu:0,/cpu:2")
    assert one_error(proc) == (
        "error: config.devices names /cpu:2, which this machine does not have; its devices: /cpu:0, /cpu:1"
    )
    assert not (tmp_path / "run").exists()


def test_devices_this_machine_does_not_have_fail_at_once(tmp_path):
    # Used to hang in the first all-reduce.
    proc = run_cli(
        "train",
        *TINY,
        "--workdir=run",
        "--config.distribute=mirrored",
        "--config.devices=/cpu:0,/cpu:1",
        cwd=tmp_path,
        env=quiet_env(),
        timeout=120,
    )
    line = one_error(proc)
    assert line.startswith(
        "error: config.devices names /cpu:1, which this machine does not have; its devices: /cpu:0"
    )
    assert not (tmp_path / "run").exists()
    proc = run_cli("train", *TINY, "--workdir=run", "--config.devices=/gpu:0", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: config.devices='/gpu:0' is read only with --config.distribute=mirrored"


def test_an_unknown_config_key_is_one_line_with_a_suggestion(tmp_path):
    proc = run_cli("train", *TINY, "--workdir=run", "--config.train.epoch=1", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: unknown config key train.epoch; did you mean train.epochs?"
    proc = run_cli("train", *TINY, "--workdir=run", "--config.trian.epochs=1", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: unknown config key trian.epochs; did you mean train.epochs?"
    proc = run_cli("train", *TINY, "--workdir=run", "--workdri=x", cwd=tmp_path, env=quiet_env())
    assert one_error(proc).startswith("error: Unknown command line flag 'workdri'")
    assert not (tmp_path / "run").exists()


def test_suggestions_match_the_last_component_of_a_key():
    from robust_ssl import config_utils
    from robust_ssl.configs import default

    base = default.get_config()
    for typed, meant in [
        ("train.lr", "train.learning_rate"),  # the initials of the last component; never just "train"
        ("train.wd", "train.weight_decay"),
        ("train.epoch", "train.epochs"),
        ("trian.epochs", "train.epochs"),
        ("learning_rate", "train.learning_rate"),  # the name, under another parent
        ("data.sorce", "data.source"),
    ]:
        assert config_utils.unknown_key(base, typed) == f"unknown config key {typed}; did you mean {meant}?"
    assert config_utils.unknown_key(base, "foo.bar") == "unknown config key foo.bar"


def test_a_config_file_that_does_not_load_and_a_bad_value_are_one_whole_line(tmp_path):
    (tmp_path / "hostname").write_text("vm\n")  # what --config=/etc/hostname reads
    proc = run_cli(
        "train", f"--config={tmp_path / 'hostname'}", "--workdir=run", cwd=tmp_path, env=quiet_env()
    )
    assert one_error(proc) == (
        f"error: config file {tmp_path / 'hostname'} does not load (NameError: name 'vm' is not defined); "
        f"a config file is Python whose get_config() returns an ml_collections ConfigDict"
    )
    (tmp_path / "none.py").write_text("x = 1\n")
    proc = run_cli("train", "--config=none.py", "--workdir=run", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == f"error: config file {tmp_path / 'none.py'} defines no get_config()"
    # The closing quote of a message is kept.
    proc = run_cli(
        "train", *TINY, "--workdir=run", "--config.train.epochs=abc", cwd=tmp_path, env=quiet_env()
    )
    assert one_error(proc) == (
        "error: flag --config.train.epochs=abc: invalid literal for int() with base 10: 'abc'"
    )
    proc = run_cli("train", *TINY, "--workdir=run", "--config.train.lr=0.05", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: unknown config key train.lr; did you mean train.learning_rate?"
    assert not (tmp_path / "run").exists()


def test_a_damaged_config_json_is_one_line_and_overwrite_starts_afresh(finished, tmp_path):
    workdir = copy_run(finished, tmp_path)
    (workdir / rundir.CONFIG).write_text('{"tasks": "rotation", "train": {')  # cut short
    before = snapshot(workdir)
    proc = tool(workdir, tmp_path)
    assert one_error(proc) == (
        f"error: cannot read {workdir / rundir.CONFIG}: JSONDecodeError: Expecting property name enclosed "
        f"in double quotes: line 1 column 33 (char 32); restore it to resume the run in {workdir}, use "
        f"another --workdir, or --config.train.overwrite=True to start afresh there"
    )
    assert snapshot(workdir) == before
    results = train.train_and_evaluate(config(**{"train.overwrite": True}), str(workdir))
    assert results["resumed_from_step"] == 0 and results["steps"] == 4
    assert json.loads((workdir / rundir.CONFIG).read_text())["tasks"] == "rotation"


def test_ctrl_c_is_one_line_saying_what_is_saved_and_how_to_resume(tmp_path):
    config_file = write_config_file(
        tmp_path / "tiny.py", **{**SETTINGS, "train.epochs": 1000, "train.verbose": 2}
    )
    command = [sys.executable, "-m", "robust_ssl.cli", "train", f"--config={config_file}", "--workdir=run"]
    proc = subprocess.Popen(
        # Unbuffered: each epoch's line reaches the pipe when printed, so the
        # SIGINT lands mid-run, not after a run that finished in the buffer.
        command,
        cwd=tmp_path,
        env=quiet_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    for line in proc.stdout:  # one line per epoch; the epoch's checkpoint is written before it
        if re.match(r"^\d+/\d+ - ", line) or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    (line,) = err.strip().splitlines()
    newest = rundir.latest_checkpoint(str(tmp_path / "run" / rundir.CHECKPOINTS))
    match = re.fullmatch(
        r"interrupted: the run is saved up to epoch (\d+)(?: and step (\d+))? in (\S+); "
        r"run the same command to resume from it",
        line,
    )
    assert match, line
    assert os.path.abspath(tmp_path / match.group(3)) == newest and int(match.group(1)) >= 1
    assert not (tmp_path / "run" / rundir.LOCK).exists()
    # Nothing half-written is left, and the same command resumes from that checkpoint.
    assert not [p for p in os.listdir(tmp_path / "run" / rundir.CHECKPOINTS) if p.startswith(".")]


def test_a_relative_config_file_from_another_directory(tmp_path):
    (tmp_path / "cfg").mkdir()
    write_config_file(tmp_path / "cfg" / "tiny.py", **{"train.epochs": 1, "train.verbose": 2})
    (tmp_path / "elsewhere").mkdir()
    proc = run_cli(
        "train", "--config=../cfg/tiny.py", "--workdir=run", cwd=tmp_path / "elsewhere", env=quiet_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "elsewhere" / "run" / "results.json").is_file()
    proc = run_cli("train", "--config=cfg/nope.py", "--workdir=run2", cwd=tmp_path, env=quiet_env())
    assert one_error(proc) == "error: config file cfg/nope.py not found"
    assert not (tmp_path / "run2").exists()


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    proc = run_cli("train", *TINY, "--workdir=run", "--dry_run", cwd=tmp_path, env=quiet_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train.epochs=2" in proc.stdout.splitlines() and "tasks='rotation'" in proc.stdout.splitlines()
    assert (
        proc.stdout.strip()
        .splitlines()[-1]
        .startswith("dry run: config, data, devices and batch sizes are valid")
    )
    assert not (tmp_path / "run").exists()
    # The checks of a real start run in a dry run too.
    proc = run_cli(
        "train",
        *TINY,
        "--workdir=run",
        "--dry_run",
        "--config.data.source=folder",
        "--config.data.folder=nowhere",
        cwd=tmp_path,
        env=quiet_env(),
    )
    assert one_error(proc) == "error: image folder 'nowhere' (data.folder) does not exist"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- output of a run
@pytest.fixture(scope="module")
def redirected_run(tmp_path_factory):
    """A 2-epoch run with the default train.verbose ("auto"), stdout and stderr redirected."""
    cwd = tmp_path_factory.mktemp("redirected")
    proc = run_cli("train", *TINY, "--workdir=run", cwd=cwd, env=quiet_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_redirected_output_is_one_line_per_epoch(redirected_run):
    _, proc = redirected_run
    assert "\r" not in proc.stdout and "\x1b[" not in proc.stdout
    lines = proc.stdout.splitlines()
    epoch_lines = [line for line in lines if re.match(r"^\d+/\d+ - ", line)]
    assert len(epoch_lines) == 2, proc.stdout
    # A short summary instead of every key (those are in config.json; --dry_run prints them).
    from robust_ssl.precision import resolve_precision

    assert lines[:9] == [
        "config: smoke, overriding tasks, train.epochs, train.steps_per_epoch, train.batch_size and 3 more",
        "model: WRN-10-1 at 32x32, precision auto",
        "tasks: rotation (λ 0.5)",
        "AutoML: off (λ fixed)",
        "data: synthetic, 64 training and 32 test images, 10 classes",
        "training: 2 epochs of 2 steps, batch 16, learning rate 0.05 (cosine to 1e-06)",
        "workdir: run (the full config: run/config.json; --dry_run prints it)",
        "precision: {} ({})".format(*resolve_precision("auto")),  # e.g. float32 (auto: this CPU has no …)
        "found 64 training and 32 test images of 32x32 in 10 classes (disc, square, triangle, cross, ring, …) "
        "in synthetic",
    ], proc.stdout
    assert not [line for line in lines if re.match(r"^[a-z_]+\.[a-z_.]+=", line)]  # no key=value dump


def test_tensorflow_startup_logs_are_hidden_by_default(redirected_run, tmp_path):
    _, proc = redirected_run
    for noise in STARTUP_NOISE:
        assert noise not in proc.stderr, proc.stderr[-3000:]
    shown = run_cli(
        "train", *TINY, "--workdir=run", "--dry_run", "--log_level=info", cwd=tmp_path, env=quiet_env()
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert re.search(r"^[IWE]\d{4} ", shown.stderr, re.M), shown.stderr[-3000:]  # TensorFlow's C++ log lines
    bad = run_cli("train", *TINY, "--workdir=run", "--log_level=loud", cwd=tmp_path, env=quiet_env())
    assert one_error(bad) == "error: --log_level must be one of warning, info, debug; got 'loud'"


def test_a_mistake_on_an_existing_run_changes_nothing(redirected_run):
    cwd, _ = redirected_run
    before = snapshot(cwd / "run")
    for extra in (
        ["--config.train.epoch=3"],
        ["--config.data.source=folder", "--config.data.folder=missing"],
        ["--config.distribute=mirrored", "--config.devices=/cpu:7"],
    ):
        one_error(run_cli("train", *TINY, "--workdir=run", *extra, cwd=cwd, env=quiet_env()))
    assert snapshot(cwd / "run") == before


# ---------------------------------------------------------------- a lost worker
def free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_lost_worker_stops_its_peer_with_one_line(tmp_path, how):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    command = [
        sys.executable,
        "-m",
        "robust_ssl.cli",
        "train",
        *TINY,
        f"--workdir={tmp_path / 'run'}",
        "--config.train.epochs=500",
        "--config.train.steps_per_epoch=4",
        "--config.distribute=multi_worker",
    ]
    procs, logs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        logs.append(tmp_path / f"worker_{index}.log")
        with open(logs[-1], "w") as log:  # a file: a full pipe would block the worker
            procs.append(
                subprocess.Popen(
                    command, cwd=REPO, env=quiet_env(TF_CONFIG=json.dumps(tf_config)), stdout=log, stderr=log
                )
            )
    try:
        deadline = time.time() + 400
        while "Epoch 3/" not in logs[0].read_text():  # a checkpoint exists after epoch 1
            assert time.time() < deadline and procs[0].poll() is None, logs[0].read_text()[-3000:]
            time.sleep(1)
        procs[1].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        lost = time.time()
        status = procs[0].wait(timeout=120)
        assert time.time() - lost < 60
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    text = logs[0].read_text()
    assert status == 2 and "Traceback" not in text, text[-3000:]
    (line,) = [line for line in text.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        rf"error: lost contact with worker 1 \({re.escape(workers[1])}\) of the multi-worker run \(\w+\); "
        r"restart every worker with the same command to resume from the last checkpoint \(epoch \d+\)",
        line,
    ), line
