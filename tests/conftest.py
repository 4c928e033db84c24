"""Shared test helpers: tiny configs and models that run in seconds on a CPU."""

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MINI = REPO.parent / "shared" / "data" / "cifar10-jpeg-mini"


def tiny_settings(tasks="rotation", automl=False, **overrides):
    """The settings `tiny_config` applies to the packaged `default` config, as dotted keys."""
    return {
        "data.source": "synthetic",
        "data.num_train": 256,
        "data.num_test": 64,
        "model.depth": 10,
        "model.width": 1,
        "tasks": tasks,
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.eval_batch_size": 64,
        "train.steps_per_epoch": 2,
        "train.verbose": 0,
        "train.log_every_steps": 1,
        "automl.enabled": automl,
        "automl.warmup_epochs": 1,
        "automl.meta_batch_size": 8,
        "automl.validation.holdout": 64,
        # float32 unless a test asks otherwise: `auto` would pick bfloat16 on a CPU
        # with AMX, and the tests' tolerances are float32's on every machine.
        "train.precision": "float32",
        **overrides,
    }


def apply_settings(config, settings):
    """Sets dotted keys of a ConfigDict; returns it."""
    for key, value in settings.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def tiny_config(tasks="rotation", automl=False, **overrides):
    """A smoke-sized config: WRN-10-1, generated data, a few steps, float32.

    Args:
      tasks: comma-separated task names.
      automl: enable the meta step (warm-up 1 epoch of 2 steps).
      **overrides: dotted keys, e.g. {"train.epochs": 2}.

    Returns:
      An ml_collections ConfigDict.
    """
    from robust_ssl.configs import default

    return apply_settings(default.get_config(), tiny_settings(tasks, automl, **overrides))


def write_config_file(path, tasks="rotation", automl=False, **overrides):
    """A stand-alone config file (outside the package) whose get_config() is `tiny_config(...)`."""
    settings = tiny_settings(tasks, automl, **overrides)
    pathlib.Path(path).write_text(
        '"""A tiny test config."""\n\n'
        "from robust_ssl.configs import default\n\n"
        f"SETTINGS = {settings!r}\n\n\n"
        "def get_config():\n"
        "    config = default.get_config()\n"
        "    for key, value in SETTINGS.items():\n"
        "        node = config\n"
        '        *path, leaf = key.split(".")\n'
        "        for part in path:\n"
        "            node = node[part]\n"
        "        node[leaf] = value\n"
        "    return config\n"
    )
    return str(path)


def run_cli(*args, cwd=REPO, timeout=600, env=None):
    """Runs `robust-ssl <args>` (as `python -m robust_ssl.cli`) in a subprocess; the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "robust_ssl.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(scope="session")
def shared_mini():
    """Path of ../shared/data/cifar10-jpeg-mini; skips where it is absent."""
    if not SHARED_MINI.is_dir():
        pytest.skip("../shared/data/cifar10-jpeg-mini is not available")
    return SHARED_MINI


def temporaries(directory):
    """Hidden temporary files (`rundir.atomic_path`'s) under `directory`."""
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(directory)
        for name in names
        if name.startswith(".") and ".tmp" in name
    )


@pytest.fixture(autouse=True)
def float32_policy_afterwards():
    """Every test starts from Keras' float32 policy, whatever the one before it set.

    Training with `train.precision=auto` sets the global policy to what the
    machine computes natively (mixed_bfloat16 on a CPU with AMX); a test that
    builds a model of its own afterwards would inherit it.
    """
    yield
    import keras

    if keras.config.dtype_policy().name != "float32":
        keras.config.set_dtype_policy("float32")
