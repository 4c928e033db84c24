"""SavedModel export: signatures, fresh-process reload, saved_model_cli, versions, tool."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, SHARED_MINI, tiny_config

from robust_ssl import export, rundir
from robust_ssl.errors import UserError

VENV_BIN = os.path.dirname(sys.executable)
SAVED_MODEL_CLI = shutil.which("saved_model_cli", path=VENV_BIN) or shutil.which("saved_model_cli")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
TASKS = "rotation,rgb,jigsaw,color"  # three probe-able heads and one decoder head


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny WRN-10-1 run with rotation, rgb, jigsaw and color, trained 2 steps."""
    from robust_ssl.train import train_and_evaluate

    path = str(tmp_path_factory.mktemp("export_run"))
    train_and_evaluate(tiny_config(tasks=TASKS, **{"train.epochs": 1, "train.steps_per_epoch": 2}), path)
    return path


@pytest.fixture(scope="module")
def model(workdir):
    return rundir.load_model(workdir)


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
    """Version 1 of an export with the ssl_heads signature."""
    base = tmp_path_factory.mktemp("exports") / "model"
    return export.export_saved_model(workdir, str(base), with_ssl_heads=True)


@pytest.fixture(scope="module")
def images():
    """20 real CIFAR-10 test images when ../shared is present, else generated ones."""
    if SHARED_MINI.is_dir():
        paths = []
        for name in sorted(os.listdir(SHARED_MINI / "test")):
            paths += sorted((SHARED_MINI / "test" / name).glob("*.jpg"))[:2]
        return np.stack([tf.io.decode_jpeg(tf.io.read_file(str(p)), channels=3).numpy() for p in paths])
    from robust_ssl.data import synthetic

    return synthetic.generate(20, seed=7)[0]


def _keras_probabilities(model, images):
    logits = model(tf.cast(images, tf.float32) / 255.0, training=False)
    return tf.nn.softmax(logits, axis=-1).numpy()


# ---------------------------------------------------------------- layout
def test_export_layout_assets_and_only_inference_variables(exported, model):
    assert os.path.basename(exported) == "1"
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    with open(os.path.join(exported, "assets", export.LABELS_FILE)) as f:
        assert f.read().splitlines() == list(model.class_names)
    # No temporary directory is left behind in the base directory.
    assert os.listdir(os.path.dirname(exported)) == ["1"]
    # Saved: trunk (incl. BN moving statistics), main head and the three probed
    # heads; not λ, not the optimiser, not the colour decoder.
    saved = [n for n, _ in tf.train.list_variables(os.path.join(exported, "variables", "variables"))]
    saved = [n for n in saved if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    probed = [h for t, h in zip(model.tasks, model.task_heads) if t.name != "color"]
    expected = model.trunk.variables + model.classifier.variables + [v for h in probed for v in h.variables]
    assert len(saved) == len(expected)
    assert [task.name for task, _ in export.probe_tasks(model)] == ["rotation", "rgb", "jigsaw"]


def test_classifier_only_export_has_no_head_variables(model, tmp_path):
    path = export.export_saved_model(model, str(tmp_path))
    saved = [n for n, _ in tf.train.list_variables(os.path.join(path, "variables", "variables"))]
    assert len(saved) - 1 == len(model.trunk.variables) + len(model.classifier.variables)
    assert export.SSL_HEADS not in tf.saved_model.load(path).signatures


def test_signatures_and_specs(exported, model):
    loaded = tf.saved_model.load(exported)
    assert set(loaded.signatures) == {"serving_default", "serving_float", "labels", "ssl_heads"}
    serve = loaded.signatures["serving_default"]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    outputs = serve.structured_outputs
    assert outputs["probabilities"].shape.as_list() == [None, 10]
    assert outputs["logits"].shape.as_list() == [None, 10]
    assert outputs["classes"].dtype == tf.int64
    assert outputs["class_names"].dtype == tf.string
    (float_spec,) = loaded.signatures["serving_float"].structured_input_signature[1].values()
    assert float_spec.dtype == tf.float32
    labels = loaded.signatures["labels"]()["labels"].numpy()
    assert [b.decode() for b in labels] == list(model.class_names)


def test_in_process_outputs_match_keras(exported, model, images):
    loaded = tf.saved_model.load(exported)
    expected = _keras_probabilities(model, images)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    assert np.max(np.abs(out["probabilities"].numpy() - expected)) <= 1e-5
    np.testing.assert_array_equal(out["classes"].numpy(), out["logits"].numpy().argmax(-1))
    names = [model.class_names[i] for i in out["classes"].numpy()]
    assert [b.decode() for b in out["class_names"].numpy()] == names
    floats = loaded.signatures["serving_float"](images=tf.constant(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(floats["probabilities"].numpy(), expected, atol=1e-5)
    assert export.verify_export(exported, model, images) <= 1e-5


# ---------------------------------------------------------------- fresh process
_RELOAD = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
np.save(sys.argv[3], out["probabilities"].numpy())
"""


def test_fresh_process_reload_matches_in_memory_model(exported, model, images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    result = _run(
        [sys.executable, "-c", _RELOAD, exported, str(tmp_path / "images.npy"), str(tmp_path / "probs.npy")]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = np.load(tmp_path / "probs.npy")
    assert reloaded.shape == (len(images), 10)
    assert np.max(np.abs(reloaded - _keras_probabilities(model, images))) <= 1e-5


@pytest.mark.skipif(SAVED_MODEL_CLI is None, reason="saved_model_cli not installed")
def test_saved_model_cli_show_lists_signatures(exported):
    result = _run([SAVED_MODEL_CLI, "show", "--all", "--dir", exported])
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("serving_default", "serving_float", "labels", "ssl_heads"):
        assert f"signature_def['{name}']" in result.stdout
    assert "dtype: DT_UINT8" in result.stdout and "shape: (-1, 32, 32, 3)" in result.stdout
    assert "outputs['probabilities']" in result.stdout


@pytest.mark.skipif(SAVED_MODEL_CLI is None, reason="saved_model_cli not installed")
def test_saved_model_cli_run_on_npy_batch(exported, model, images, tmp_path):
    np.save(tmp_path / "batch.npy", images)
    result = _run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            exported,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'batch.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities = np.load(tmp_path / "out" / "probabilities.npy")
    assert np.max(np.abs(probabilities - _keras_probabilities(model, images))) <= 1e-5


# ---------------------------------------------------------------- bad inputs
def test_wrong_dtype_is_rejected(exported, images):
    serve = tf.saved_model.load(exported).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor but is a double"):
        serve(images=tf.constant(images.astype(np.float64) / 255.0))


@pytest.mark.parametrize("shape", [(2, 28, 28, 3), (2, 32, 32, 1), (32, 32, 3)])
def test_wrong_shape_is_rejected(exported, shape):
    serve = tf.saved_model.load(exported).signatures["serving_default"]
    expected = r"images must be uint8 \[N, 32, 32, 3\]; got shape.*" + r"\D+".join(map(str, shape))
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        serve(images=tf.zeros(shape, tf.uint8))


# ---------------------------------------------------------------- ssl heads
def test_ssl_heads_shapes_and_values(exported, model, images):
    out = tf.saved_model.load(exported).signatures["ssl_heads"](images=tf.constant(images))
    n = len(images)
    assert set(out) == {f"{t}_{k}" for t in ("rotation", "rgb", "jigsaw") for k in export.SSL_OUTPUTS}
    for task, k in (("rotation", 4), ("rgb", 6), ("jigsaw", 24)):
        assert out[f"{task}_logits"].shape == (n, k, k)
        for key in ("accuracy", "confidence", "loss"):
            assert out[f"{task}_{key}"].shape == (n,)
        accuracy = out[f"{task}_accuracy"].numpy()
        assert np.all((accuracy >= 0) & (accuracy <= 1))
        np.testing.assert_allclose(accuracy * k, np.round(accuracy * k), atol=1e-5)
    # Rotation logits against an independent numpy oracle: row k is the head's
    # logits for the images rotated counter-clockwise by k * 90 degrees.
    head = model.task_heads[model.task_names.index("rotation")]
    x = images.astype(np.float32) / 255.0
    for k in range(4):
        rotated = np.ascontiguousarray(np.rot90(x, k, axes=(1, 2)))
        expected = head(model.trunk(rotated, training=False), training=False).numpy()
        np.testing.assert_allclose(out["rotation_logits"][:, k].numpy(), expected, atol=1e-4)
    probabilities = tf.nn.softmax(out["rotation_logits"], -1).numpy()
    confidence = np.mean([probabilities[:, k, k] for k in range(4)], axis=0)
    np.testing.assert_allclose(out["rotation_confidence"].numpy(), confidence, atol=1e-6)


def test_ssl_heads_need_a_classifier_headed_task(tmp_path):
    from robust_ssl.model import RobustSSLModel

    model = RobustSSLModel(depth=10, width=1, tasks=("color",))
    with pytest.raises(UserError, match="needs a model with one of the tasks rotation, rgb, jigsaw"):
        export.export_saved_model(model, str(tmp_path), with_ssl_heads=True)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- versions
def test_versions_next_refuse_and_overwrite(model, tmp_path):
    base = str(tmp_path / "exports")
    assert export.next_version(base) == 1
    assert export.export_saved_model(model, base) == os.path.join(base, "1")
    assert export.export_saved_model(model, base) == os.path.join(base, "2")
    stamp = os.path.getmtime(os.path.join(base, "2", "saved_model.pb"))
    with pytest.raises(UserError, match="version 2 already exists .*--overwrite") as error:
        export.export_saved_model(model, base, version=2)
    assert "\n" not in str(error.value)
    assert os.path.getmtime(os.path.join(base, "2", "saved_model.pb")) == stamp
    os.remove(os.path.join(base, "2", "fingerprint.pb"))  # mark the old version
    path = export.export_saved_model(model, base, version=2, overwrite=True)
    assert os.path.isfile(os.path.join(path, "fingerprint.pb"))
    assert sorted(os.listdir(base)) == ["1", "2"]  # no temporary or replaced copy left
    assert export.export_saved_model(model, base, version=7) == os.path.join(base, "7")
    assert export.next_version(base) == 8
    with pytest.raises(UserError, match="positive integer"):
        export.export_saved_model(model, base, version=0)


def test_model_comes_from_latest_checkpoint_without_model_keras(workdir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(os.path.join(workdir, "checkpoints"), run / "checkpoints")
    assert rundir.model_path(str(run)).endswith(os.path.join("checkpoints", "epoch_001.keras"))
    assert rundir.model_path(workdir) == os.path.join(workdir, "model.keras")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match="neither model.keras nor a checkpoint"):
        rundir.load_model(str(tmp_path / "empty_run"))
    with pytest.raises(UserError, match="does not exist"):
        rundir.load_model(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not found"):
        rundir.load_model(str(tmp_path / "missing.keras"))


# ---------------------------------------------------------------- the tool
def test_tool_end_to_end(workdir, tmp_path):
    base = str(tmp_path / "served")
    tool = [sys.executable, "-m", "robust_ssl.cli", "export", f"--workdir={workdir}", f"--export_dir={base}"]
    result = _run([*tool, "--with_ssl_heads"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported version 1 to {os.path.join(base, '1')}" in result.stdout
    assert "ssl_heads(images: uint8 [None, 32, 32, 3])" in result.stdout
    diff = float(result.stdout.split("vs the Keras model = ")[1].split()[0])
    assert diff <= 1e-5
    refused = _run([*tool, "--version=1", "--noverify"])
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: version 1 already exists")
    assert "Traceback" not in refused.stderr
    replaced = _run([*tool, "--version=1", "--overwrite", "--noverify"])
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "ssl_heads" not in tf.saved_model.load(os.path.join(base, "1")).signatures


# ---------------------------------------------------------------- the serving contract
def test_an_empty_batch_gets_empty_outputs(exported, model, tmp_path):
    # Was "Incompatible shapes: [16] vs. [0,32,32,3]" inside batch norm.
    loaded = tf.saved_model.load(exported)
    empty = tf.zeros([0, 32, 32, 3], tf.uint8)
    out = loaded.signatures["serving_default"](images=empty)
    assert out["probabilities"].shape == (0, 10) and out["logits"].shape == (0, 10)
    assert out["classes"].shape == (0,) and out["class_names"].shape == (0,)
    floats = loaded.signatures["serving_float"](images=tf.zeros([0, 32, 32, 3], tf.float32))
    assert floats["probabilities"].shape == (0, 10)
    heads = loaded.signatures["ssl_heads"](images=empty)
    assert heads["rotation_logits"].shape == (0, 4, 4) and heads["jigsaw_accuracy"].shape == (0,)
    batch_stats = export.export_saved_model(model, str(tmp_path), with_batch_stats=True)
    out = tf.saved_model.load(batch_stats).signatures["serving_batch_stats"](images=empty)
    assert out["probabilities"].shape == (0, 10)


def test_serving_float_refuses_values_outside_0_1(exported, images):
    serve_float = tf.saved_model.load(exported).signatures["serving_float"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"serving_float takes pixel values in \[0, 1\]"):
        serve_float(images=tf.constant(images.astype(np.float32)))  # 0..255 as floats
    for bad in (-0.5, np.nan):
        x = np.zeros((2, 32, 32, 3), np.float32)
        x[1, 0, 0, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="serving_float takes pixel values"):
            serve_float(images=tf.constant(x))
    edges = serve_float(
        images=tf.constant(np.stack([np.zeros((32, 32, 3)), np.ones((32, 32, 3))]), tf.float32)
    )
    assert edges["probabilities"].shape == (2, 10)
