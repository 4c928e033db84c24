"""Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG)
finish with identical weights and λ, equal to a single-process run."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
from conftest import REPO

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
