"""A run killed with SIGKILL and restarted ends exactly where an uninterrupted run ends."""

import csv
import json
import signal
import subprocess
import sys
import time

import keras
import numpy as np
from conftest import REPO

import robust_ssl.model  # noqa: F401  (registers RobustSSLModel for loading)

FLAGS = [
    "--config=smoke_automl",
    "--config.model.depth=10",
    "--config.data.num_train=192",
    "--config.data.num_test=64",
    "--config.automl.validation.holdout=32",
    "--config.automl.meta_batch_size=8",
    "--config.automl.warmup_epochs=1",
    "--config.train.epochs=4",
    "--config.train.steps_per_epoch=3",
    "--config.train.batch_size=16",
    "--config.train.verbose=2",
]


def command(workdir):
    return [sys.executable, "-m", "robust_ssl.cli", "train", f"--workdir={workdir}", *FLAGS]


def test_sigkill_mid_training_then_same_command_resumes_exactly(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(command(straight), capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(command(killed), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "epoch_002.keras").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before epoch 2's checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()  # it really died mid-training
    for leftover in (killed / "checkpoints").iterdir():  # nothing half-written is taken
        assert leftover.name.startswith("epoch_")

    resumed = subprocess.run(command(killed), capture_output=True, text=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads((killed / "results.json").read_text())
    assert results["resumed_from_epoch"] >= 2 and results["steps"] == 12
    said = f"resuming from checkpoints/epoch_{results['resumed_from_epoch']:03d}.keras: epoch "
    assert said in resumed.stdout, resumed.stdout[-2000:]  # the run says where it resumed

    a = keras.saving.load_model(straight / "model.keras")
    b = keras.saving.load_model(killed / "model.keras")
    diff = max(float(np.max(np.abs(x.numpy() - y.numpy()))) for x, y in zip(a.weights, b.weights))
    assert diff == 0.0, diff
    np.testing.assert_array_equal(a.lambdas.numpy(), b.lambdas.numpy())
    assert not np.allclose(a.lambdas.numpy(), 0.5)  # λ was learned across the kill
    assert int(a.optimizer.iterations.numpy()) == int(b.optimizer.iterations.numpy()) == 12
    for name in ("metrics.csv", "lambdas.csv"):
        with open(killed / name) as f:
            rows = list(csv.DictReader(f))
        assert rows, name
    with open(killed / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)][-2:] == [3, 4]  # numbered from 1


def test_the_resume_line_names_the_checkpoint_and_where_the_run_stands():
    from robust_ssl.train import resume_line

    line = resume_line("/r/checkpoints/epoch_002.keras", "/r", 140, 70, 3)
    assert (
        line
        == "resuming from checkpoints/epoch_002.keras: epoch 2 of 3 done (step 140); continuing with epoch 3"
    )
    line = resume_line("/r/checkpoints/step_000150.keras", "/r", 150, 70, 3)
    assert line.startswith("resuming from checkpoints/step_000150.keras: epoch 3 of 3 at step 10 of 70")
