"""Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG)
finish with identical weights and λ, equal to a single-process run; (slow)
worker 1 killed mid-epoch and both restarted end as the uninterrupted run."""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO, temporaries

import robust_ssl.model  # noqa: F401  (registers RobustSSLModel for loading)

FLAGS = [
    "--config=smoke_automl",
    "--config.model.depth=10",
    "--config.model.sync_batch_norm=True",
    "--config.train.precision=float64",  # equality up to float64 round-off
    "--config.data.num_train=160",
    "--config.data.num_test=64",
    "--config.automl.validation.holdout=32",
    "--config.automl.meta_batch_size=8",
    "--config.automl.warmup_epochs=1",
    "--config.train.epochs=2",
    "--config.train.steps_per_epoch=3",
    "--config.train.batch_size=16",
    "--config.train.verbose=2",
]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_command(workdir, *extra):
    return [sys.executable, "-m", "robust_ssl.cli", "train", f"--workdir={workdir}", *FLAGS, *extra]


def load(path):
    return keras.saving.load_model(path)


def max_diff(a, b):
    return max(float(np.max(np.abs(x.numpy() - y.numpy()))) for x, y in zip(a.weights, b.weights))


def test_two_workers_match_each_other_and_a_single_process(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        # Output goes to files: a full pipe would block a worker, and with it
        # its peer waiting in a collective.
        log = open(tmp_path / f"worker_{index}.log", "w")
        procs.append(
            subprocess.Popen(
                train_command(tmp_path / "multi", "--config.distribute=multi_worker"),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    for index, proc in enumerate(procs):
        assert proc.wait(timeout=600) == 0, (tmp_path / f"worker_{index}.log").read_text()[-3000:]
    single = subprocess.run(train_command(tmp_path / "single"), cwd=REPO, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]

    chief = load(tmp_path / "multi" / "model.keras")
    other = load(tmp_path / "multi" / "worker_1" / "model.keras")
    reference = load(tmp_path / "single" / "model.keras")
    assert max_diff(chief, other) == 0.0
    np.testing.assert_array_equal(chief.lambdas.numpy(), other.lambdas.numpy())
    assert max_diff(chief, reference) < 1e-10
    np.testing.assert_allclose(chief.lambdas.numpy(), reference.lambdas.numpy(), rtol=0, atol=1e-12)
    assert not np.allclose(reference.lambdas.numpy(), 0.5)
    results = json.loads((tmp_path / "multi" / "results.json").read_text())
    assert results["replicas"] == 2 and results["steps"] == 6
    assert (tmp_path / "multi" / "metrics.csv").is_file()


# ---------------------------------------------------------------- a worker killed mid-epoch
# A checkpoint after every step, in the chief's workdir and in worker_1/.
STEP_CHECKPOINTS = ["--config.train.checkpoint_every_steps=1", "--config.train.keep_checkpoints=2"]


def run_workers(workdir, logs, worker_env=({}, {}), timeout=900):
    """Runs the two workers of a multi-worker run in `workdir` to their end.

    Args:
      workdir: the run's folder (the chief's; worker 1 writes to worker_1/ in it).
      logs: folder of the workers' output, appended to `<workdir's name>_worker_<i>.log`.
      worker_env: extra environment of worker 0 and of worker 1.
      timeout: seconds each worker may run.

    Returns:
      The exit statuses of worker 0 and worker 1, and their output.
    """
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs, paths = [], []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = dict(
                os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_CONFIG=json.dumps(tf_config), **worker_env[index]
            )
            paths.append(logs / f"{workdir.name}_worker_{index}.log")
            with open(paths[-1], "a") as log:  # a file: a full pipe would block the worker
                procs.append(
                    subprocess.Popen(
                        train_command(workdir, "--config.distribute=multi_worker", *STEP_CHECKPOINTS),
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        codes = [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes, [path.read_text() for path in paths]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted two-worker run with a checkpoint after every step.

    Two such runs ended bit-identical (weights, λ, lambdas.csv) when this test
    was written: 2 workers sum in a fixed order, and float64 on a tiny model.
    So the killed run is compared bit for bit.
    """
    workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
    codes, out = run_workers(workdir, workdir.parent)
    assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        # Worker 1 has saved the checkpoint of global step 4 (epoch 2, 1 of its
        # 3 steps; λ is learned from epoch 2 on). The chief cannot finish step 5
        # without it, so its newest checkpoint is step 4's too.
        "train.checkpoint.step_4",
        # Worker 1 has logged step 4's λ, not yet saved its checkpoint; the
        # chief saves step 4's. Each worker restores the newest checkpoint of
        # its own folder (worker 1: step 3), then takes the chief's weights, λ
        # and optimiser states (distribute.broadcast_from_chief), so both
        # resume at step 4 and their all-reduces pair the same batches.
        "train.lambdas.step_4",
    ],
)
def test_a_worker_killed_mid_epoch_then_all_restarted_ends_as_the_uninterrupted_run(
    tmp_path, uninterrupted, point
):
    """Two workers on loopback; worker 1 SIGKILLs itself in epoch 2; both restart with the same commands.

    About 10 minutes on 2 busy cores (the uninterrupted run, shared by both
    kill moments, then a killed and a resumed session of about 3 minutes each).
    """
    from robust_ssl import killpoints, rundir

    workdir = tmp_path / "run"
    codes, out = run_workers(workdir, tmp_path, ({}, {killpoints.ENV: f"{point}:1"}))
    # Worker 1 is killed; its peer stops with the lost-worker line.
    assert codes == [2, -signal.SIGKILL], out[0][-3000:] + out[1][-3000:]
    assert re.search(r"^error: lost contact with worker 1 \(127\.0\.0\.1:\d+\)", out[0], re.M), out[0][-3000:]
    assert not (workdir / "model.keras").exists()

    # Both restarted with the same commands: each resumes from the same step.
    codes, out = run_workers(workdir, tmp_path)
    resumed = [re.findall(r"^resuming from (.+?): (.*)$", text, re.M)[-1:] for text in out]
    assert [r[0][0] for r in resumed] == [
        "checkpoints/epoch_001_step_0000004.keras",
        "the chief's checkpoint",
    ]
    assert all("(global step 4)" in r[0][1] for r in resumed), resumed
    assert codes == [0, 0], out[0][-3000:] + out[1][-3000:]

    reference = rundir.load_model(str(uninterrupted / "model.keras"))
    for path in (workdir / "model.keras", workdir / "worker_1" / "model.keras"):
        model = rundir.load_model(str(path))
        for x, y in zip(reference.weights, model.weights, strict=True):  # λ and the trunk, bit for bit
            np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()), err_msg=x.path)
        assert model.lambda_values() == reference.lambda_values()
    assert (workdir / "lambdas.csv").read_text() == (uninterrupted / "lambdas.csv").read_text()
    with open(workdir / "metrics.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2]  # every epoch once
    state = json.loads((workdir / "run_state.json").read_text())
    assert len(state["sessions"]) == 2 and state["sessions"][-1]["steps"] == 6
    assert json.loads((workdir / "results.json").read_text())["steps"] == 6
    assert not temporaries(workdir)  # the chief's folder and worker_1/
