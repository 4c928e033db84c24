"""`preflight.check`: the run's settings resolved once, into a frozen `RunSpec`."""

import dataclasses
import json

import pytest
from conftest import tiny_config

from robust_ssl import preflight
from robust_ssl.errors import ConfigError


def test_check_returns_the_resolved_run():
    config = tiny_config(tasks="rotation,color", automl=True, **{"task_weights.color": 0.25})
    spec = preflight.check(config)
    assert spec.strategy == "none" and spec.replicas == 1 and spec.workers == () and spec.devices == ()
    assert spec.tasks == ("rotation", "color")
    assert spec.lambdas == (float(config.task_weights.rotation), 0.25)
    assert spec.image_shape == (32, 32, 3)
    assert spec.batch_size == config.train.batch_size and spec.epochs == config.train.epochs
    assert spec.meta_batch_size == config.automl.meta_batch_size
    assert spec.precision == config.train.precision
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.replicas = 2


def test_check_reads_the_cluster_once_into_the_spec(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    spec = preflight.check(tiny_config(tasks="", distribute="multi_worker", **{"train.batch_size": 8}))
    assert spec.workers == (("worker", 0, "127.0.0.1:1"), ("worker", 1, "127.0.0.1:2"))
    assert spec.replicas == 2 and spec.meta_batch_size is None
    # The same cluster with an odd batch: refused before anything runs.
    with pytest.raises(ConfigError, match="divid"):
        preflight.check(tiny_config(tasks="", distribute="multi_worker", **{"train.batch_size": 7}))
