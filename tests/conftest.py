"""Shared test helpers: tiny configs and models that run in seconds on a CPU."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MINI = REPO.parent / "shared" / "data" / "cifar10-jpeg-mini"
sys.path.insert(0, str(REPO))  # makes `configs` importable as in tools/*.py


def tiny_config(tasks="rotation", automl=False, **overrides):
    """A smoke-sized config: WRN-10-1, generated data, a few steps.

    Args:
      tasks: comma-separated task names.
      automl: enable the meta step (warm-up 1 epoch of 2 steps).
      **overrides: dotted keys, e.g. {"train.epochs": 2}.

    Returns:
      An ml_collections ConfigDict.
    """
    from configs import default

    config = default.get_config()
    config.data.source = "synthetic"
    config.data.num_train = 256
    config.data.num_test = 64
    config.model.depth = 10
    config.model.width = 1
    config.tasks = tasks
    config.train.epochs = 2
    config.train.batch_size = 16
    config.train.eval_batch_size = 64
    config.train.steps_per_epoch = 2
    config.train.verbose = 0
    config.train.log_every_steps = 1
    config.automl.enabled = automl
    config.automl.warmup_epochs = 1
    config.automl.meta_batch_size = 8
    config.automl.validation.holdout = 64
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(scope="session")
def shared_mini():
    """Path of ../shared/data/cifar10-jpeg-mini; skips where it is absent."""
    if not SHARED_MINI.is_dir():
        pytest.skip("../shared/data/cifar10-jpeg-mini is not available")
    return SHARED_MINI
