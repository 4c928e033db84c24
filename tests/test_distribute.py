"""MirroredStrategy on 2 logical CPU devices computes what one device computes."""

import json
import subprocess
import sys
import types

import pytest
from conftest import REPO, tiny_config

from robust_ssl import distribute, steps
from robust_ssl.errors import ConfigError
from robust_ssl.model import RobustSSLModel


def run_case(case):
    # One process per case: logical devices must be set before TensorFlow
    # starts, and MirroredStrategy runs in one process share collective keys
    # (a float64 run then a bfloat16 run fails on a dtype mismatch).
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


@pytest.mark.slow  # ~4 min on 2 cores; float32 agreement of two replicas runs by default
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


@pytest.mark.slow
def test_xla_and_bfloat16_work_under_mirrored_strategy():
    """`train.jit_compile` with 2 replicas compiles each replica's computation
    (Keras' whole-step XLA cannot reach the other replica's variables) and
    computes what the same run without XLA computes: to float64 round-off, and
    to bfloat16 round-off with `mixed_bfloat16` (2 steps: one meta, one fixed)."""
    exact, bf16 = run_case("2:automl:float64:xla"), run_case("2:automl:mixed_bfloat16:xla")
    for r in (exact, bf16):
        assert r["replicas"] == [2, 2] and r["steps"] == [2, 2] and r["finite"], r
        assert r["xla_compiled"] == [
            "fixed_gradients",
            "local_hypergradient",
            "local_per_task_gradients",
        ], r
        assert r["lambda_moved"] > 1e-4, r
    assert exact["weights"] < 1e-10 and exact["lambdas"] < 1e-12, exact
    # bfloat16 keeps ~3 significant digits; XLA fuses and rounds differently.
    assert bf16["weights"] < 0.1 and bf16["lambdas"] < bf16["lambda_moved"], bf16


def test_sync_batch_norm_with_xla_under_replicas_is_refused(monkeypatch):
    from robust_ssl.config_utils import validate

    config = tiny_config("rotation", **{"distribute": "mirrored", "model.sync_batch_norm": True})
    config.train.jit_compile = True
    with pytest.raises(ConfigError, match="turn off train.jit_compile or model.sync_batch_norm"):
        validate(config)
    config.train.jit_compile = "auto"  # Keras turns XLA off under tf.distribute
    validate(config)
    # The model refuses it too, where it is built outside the config path.
    model = RobustSSLModel(depth=10, width=1, tasks=("rotation",), sync_batch_norm=True)
    model.compile(optimizer="sgd", jit_compile=True)
    monkeypatch.setattr(steps.Replicas, "count", staticmethod(lambda: 2))
    with pytest.raises(ConfigError, match="turn off train.jit_compile"):
        steps.compiled(model, steps.fixed_gradients)


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


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
        ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "chief", 0, True),
        ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "worker", 0, False),  # one writer only
        ({"chief": ["c:0"], "worker": ["a:1"]}, "worker", 0, False),
    ],
)
def test_exactly_one_process_is_the_chief(cluster, task_type, task_id, chief):
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
    )
    assert distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief
    assert distribute.is_chief(types.SimpleNamespace()) is True  # no cluster: one process
