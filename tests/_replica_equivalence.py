"""Run in a subprocess by test_distribute.py: 1 replica vs 2 replicas on 2 logical CPUs.

Prints one JSON line: the max abs differences of weights and λ after training.
Logical devices must be set before TensorFlow initialises, hence the subprocess.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402


def set_precision(name):
    """float64 shows the equivalence itself; in float32 the order of the
    cross-replica sums changes round-off, which the λ gradient (a small inner
    product of large gradients) amplifies to ~1e-3 relative."""
    keras.config.set_floatx(name)
    keras.config.set_dtype_policy(name)


from conftest import tiny_config  # noqa: E402  (tests/ is this script's sys.path[0])

from robust_ssl import steps  # noqa: E402
from robust_ssl.train import train_and_evaluate  # noqa: E402

XLA_COMPILED = set()  # names of the step's computations XLA compiled
_compiled = steps.compiled


def _recording_compiled(model, fn):
    compiled = _compiled(model, fn)
    if isinstance(compiled, tf.types.experimental.PolymorphicFunction):
        XLA_COMPILED.add(fn.__name__)
    return compiled


steps.compiled = _recording_compiled


def run(distribute, steps, automl, precision, jit_compile=False, sync_batch_norm=True):
    config = tiny_config(
        "rotation,color,ir,bir" if automl else "rotation,ir",
        automl=automl,
        **{
            "distribute": distribute,
            "devices": "/cpu:0,/cpu:1" if distribute == "mirrored" else "",
            "model.sync_batch_norm": sync_batch_norm,
            "train.epochs": 1,
            "train.steps_per_epoch": steps,
            "train.eval_every_epoch": False,
            "train.precision": precision,
            "train.jit_compile": jit_compile,
            "automl.warmup_epochs": 0,
            "automl.meta_every": 2,  # alternate meta and fixed-λ steps
            "train.learning_rate": float(os.environ.get("EQ_LR", "0.1")),
            "train.batch_size": 32,
            "automl.meta_batch_size": 16,
        },
    )
    workdir = tempfile.mkdtemp()
    results = train_and_evaluate(config, workdir)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    return model, results


def compare(steps, automl, precision, jit_compile=False):
    """1 device vs 2 replicas; with `jit_compile`, 2 replicas without vs with XLA.

    Synchronised batch norm all-reduces inside the forward, which per-replica
    XLA cannot hold, so the XLA comparison runs without it (and so cannot
    compare against one device).
    """
    # for loading the saved models; training sets the policy from the config
    set_precision("float64" if precision == "float64" else "float32")
    if jit_compile:
        single, r1 = run("mirrored", steps, automl, precision, False, sync_batch_norm=False)
        double, r2 = run("mirrored", steps, automl, precision, True, sync_batch_norm=False)
    else:
        single, r1 = run("none", steps, automl, precision)
        double, r2 = run("mirrored", steps, automl, precision)
    weights = max(
        float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(single.weights, double.weights)
    )
    return {
        "case": f"{steps}:{'automl' if automl else 'fixed'}:{precision}:{jit_compile}",
        "weights": weights,
        "lambdas": float(np.max(np.abs(single.lambdas.numpy() - double.lambdas.numpy()))),
        "lambda_moved": float(np.max(np.abs(single.lambdas.numpy() - 0.5))),
        "finite": bool(
            all(np.all(np.isfinite(w.numpy())) for w in list(single.weights) + list(double.weights))
        ),
        "test_accuracy": [r1["test_accuracy"], r2["test_accuracy"]],
        "xla_compiled": sorted(XLA_COMPILED),
        "steps": [r1["steps"], r2["steps"]],
        "replicas": [r1["replicas"], r2["replicas"]],
    }


def main():
    """Args: cases like `1:fixed:float64 10:automl:float32 2:automl:mixed_bfloat16:xla`."""
    for case in sys.argv[1:]:
        steps, kind, precision, *xla = case.split(":")
        result = compare(int(steps), kind == "automl", precision, jit_compile=xla == ["xla"])
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
