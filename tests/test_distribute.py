"""MirroredStrategy on 2 logical CPU devices computes what one device computes."""

import json
import subprocess
import sys
import types

import pytest

from robust_ssl import distribute
from robust_ssl.errors import ConfigError
from tests.conftest import REPO


def run_case(case):
    # One process per case: logical devices must be set before TensorFlow
    # starts, and two MirroredStrategy runs in one process share collectives.
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "_replica_equivalence.py"), case],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(line)


def test_two_replicas_equal_one_device_for_ten_mixed_automl_steps():
    """Synchronised batch norm, global-batch loss scaling, all-reduced per-task
    gradients and λ gradient: over 10 steps alternating meta and fixed-λ steps,
    2 replicas == 1 device up to float64 round-off."""
    r = run_case("10:automl:float64")
    assert r["replicas"] == [1, 2] and r["steps"] == [10, 10]
    assert r["weights"] < 1e-10, r
    assert r["lambdas"] < 1e-12, r
    assert r["lambda_moved"] > 1e-4  # λ was really learned


def test_two_replicas_in_float32_agree_to_round_off():
    r = run_case("1:fixed:float32")
    assert r["replicas"] == [1, 2]
    assert r["weights"] < 1e-4, r


def test_batch_sizes_must_divide_by_replicas():
    strategy = types.SimpleNamespace(num_replicas_in_sync=3)
    distribute.check_batch_sizes(strategy, 63, 24)
    with pytest.raises(ConfigError, match="train.batch_size=64 does not divide by the 3 replicas"):
        distribute.check_batch_sizes(strategy, 64, 24)
    with pytest.raises(ConfigError, match="automl.meta_batch_size=25"):
        distribute.check_batch_sizes(strategy, 63, 25)


def test_unknown_strategy_and_missing_tf_config(monkeypatch):
    with pytest.raises(ConfigError, match="distribute must be one of"):
        distribute.make_strategy("ring")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
