"""SavedModel export of a trained classifier for TensorFlow Serving.

`export_saved_model(model_or_path, export_dir)` writes
`<export_dir>/<version>/` (TF Serving's versioned layout) holding a SavedModel of
the classifier alone: trunk + main head with inference-mode batch norm. λ, the
optimisers and the auxiliary heads are not in it (the heads only with
`with_ssl_heads=True`, and then only those the extra signature uses).

Signatures (tag set "serve"):

  serving_default   images: uint8 [N, H, W, 3] (pixel values 0..255, the format
                    serving clients send; the signature scales them itself)
                    -> logits float32 [N, C], probabilities float32 [N, C],
                       classes int64 [N], class_names string [N]
  serving_float     images: float32 [N, H, W, 3] in [0, 1] -> the same outputs;
                    a value outside [0, 1] (or NaN) is refused: 0..255
                    pixels sent as floats would get confident wrong answers
  labels            no input -> labels string [C] (class index -> name)
  serving_batch_stats  (with_batch_stats only) images: uint8 [N, H, W, 3] -> the
                    outputs of serving_default, with batch norm normalising by
                    the request batch's own statistics (test-time adaptation
                    "bn"). Caveat: each image's prediction then depends on the
                    other images of the request and on its size; send batches
                    of many images from one distribution (e.g. 100+ images of
                    one camera), never single images.
  ssl_heads         (with_ssl_heads only) images: uint8 [N, H, W, 3] -> for each
                    self-supervision task T the model has whose head
                    classifies a transformation (`Task.probe_classes`;
                    built in: rotation, rgb, jigsaw):
                       T_logits float32 [N, K, K] (row k: the head's logits for
                         the input transformed by transformation k),
                       T_accuracy float32 [N] (fraction of the K transformations
                         the head recognises),
                       T_confidence float32 [N] (mean probability of the true
                         transformation), T_loss float32 [N] (mean cross-entropy)
                    K = 4 rotations (0/90/180/270 degrees counter-clockwise),
                    6 RGB channel orders, 24 orders of the 2x2 jigsaw tiles.
                    The reconstruction-type tasks (color, reconstruction,
                    deblur, inpaint) have no such label-free score and are
                    left out.

An empty batch (N = 0) gets empty outputs ([0, C] logits and probabilities,
[0] classes and class names; [0, …] of every ssl_heads output).

The class names are stored as the asset file `assets/labels.txt` (one name per
line, line i = class i) and read through a lookup table at load time.

Wrong inputs raise `tf.errors.InvalidArgumentError`:
a tensor of another dtype fails before anything runs ("input #0 was expected to
be a uint8 tensor but is a double tensor"); a tensor of another shape fails at
a check inside the graph ("robust_ssl: images must be uint8 [N, 32, 32, 3]; got
shape [2 28 28 3]"), because signatures check dtypes but not shapes. Note that
Python callers converting a *numpy* array (and `saved_model_cli run` with an
.npy file) get it cast to the signature's dtype first: a float array in [0, 1]
sent to `serving_default` becomes all zeros. Send uint8 pixels there and
floats to `serving_float`.
"""

import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from robust_ssl import rundir
from robust_ssl.errors import UserError

SERVING_DEFAULT = "serving_default"
SERVING_FLOAT = "serving_float"
SERVING_BATCH_STATS = "serving_batch_stats"
LABELS = "labels"
SSL_HEADS = "ssl_heads"
LABELS_FILE = "labels.txt"
SSL_OUTPUTS = ("logits", "accuracy", "confidence", "loss")  # ssl_heads outputs: <task>_<output>

_VERSION_RE = re.compile(r"^[0-9]+$")
_TMP_PREFIX = ".tmp-export-"


def probe_tasks(model):
    """(task, head) of the model's tasks that classify a transformation of any image.

    Those are the tasks with `Task.probe_classes` (rotation, rgb and jigsaw
    among the built-in ones): their head's score on an unlabelled image needs
    no label, so a serving client can use it as a sign of distribution shift.
    """
    return [
        (task, head)
        for task, head in zip(model.tasks, model.heads_by_task)
        if task.probe_classes and head is not None
    ]


# ------------------------------------------------------------------ the model
def class_names_of(model):
    """The model's class names, or "0", "1", … when it has none."""
    names = list(model.class_names or [str(i) for i in range(model.num_classes)])
    if len(names) != model.num_classes:
        raise UserError(f"the model has {model.num_classes} classes but {len(names)} class names")
    for name in names:
        if not name or "\n" in name or "\r" in name:
            raise UserError(f"class name {name!r} cannot be stored one per line")
    return names


# ------------------------------------------------------------------ the module
def _probe_outputs(trunk, head, images, num_transforms, transform):
    """Runs trunk + head on every transformation of every image.

    Returns:
      (logits [N, K, K], accuracy [N], confidence [N], loss [N]).
    """
    n = tf.shape(images)[0]
    copies = [transform(images, k) for k in range(num_transforms)]
    features = trunk(tf.concat(copies, axis=0), training=False)  # [K*N, F], transform-major
    logits = head(features, training=False)
    logits = tf.transpose(tf.reshape(logits, [num_transforms, n, num_transforms]), [1, 0, 2])
    targets = tf.tile(tf.range(num_transforms)[tf.newaxis], [n, 1])  # [N, K]
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets), tf.float32)
    probabilities = tf.nn.softmax(logits, axis=-1)
    true_probability = tf.linalg.diag_part(probabilities)  # [N, K]
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return logits, tf.reduce_mean(correct, 1), tf.reduce_mean(true_probability, 1), tf.reduce_mean(loss, 1)


def _check_shape(images, spec):
    """Fails at run time unless images has the spec's shape.

    A signature checks the dtype of its input but not the shape: a call with
    [N, 28, 28, 3] would otherwise run (the trunk pools globally) and return
    meaningless outputs.
    """
    shape = tf.shape(images)
    expected = tf.constant(spec.shape.as_list()[1:], tf.int32)
    # Padding keeps the comparison defined for inputs of another rank.
    actual = tf.concat([shape[1:], -tf.ones_like(expected)], axis=0)[: len(spec.shape) - 1]
    ok = tf.logical_and(tf.equal(tf.rank(images), len(spec.shape)), tf.reduce_all(tf.equal(actual, expected)))
    spec_text = f"{spec.dtype.name} {spec.shape.as_list()}".replace("None", "N")
    check = tf.debugging.Assert(
        ok, [f"robust_ssl: images must be {spec_text}; got shape", shape], summarize=8
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _check_range(images):
    """Fails at run time unless every value of float images is within [0, 1] (NaN fails too).

    Pixels of 0..255 sent as floats would otherwise be answered, confidently
    and wrongly.
    """
    ok = tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0))
    check = tf.debugging.Assert(
        ok,
        [
            "robust_ssl: serving_float takes pixel values in [0, 1] (send 0..255 pixels as uint8 to "
            "serving_default); got values from",
            tf.reduce_min(images),
            "to",
            tf.reduce_max(images),
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _empty_safe(function, spec):
    """`function(images) -> {name: [N, …]}` that returns empty outputs for an empty batch.

    Batch norm and the pooling of some backbones fail on a batch of zero
    images, so an empty batch runs one blank image and keeps none of its outputs.
    """

    def call(images):
        n = tf.shape(images)[0]
        blank = tf.zeros([1, *spec.shape.as_list()[1:]], spec.dtype)
        outputs = function(tf.cond(n > 0, lambda: images, lambda: blank))
        return {name: value[:n] for name, value in outputs.items()}

    return call


def build_serving_module(model, labels_path, with_ssl_heads=False, with_batch_stats=False):
    """Builds the `tf.Module` that `tf.saved_model.save` writes.

    The module tracks only the variables its functions use (trunk, main head
    and, with `with_ssl_heads`, the probed heads): λ and optimiser state stay
    out. The Keras models are reached through closures, not attributes, so
    nothing else of them is serialised.

    Args:
      model: a `RobustSSLModel`.
      labels_path: a text file with one class name per line (becomes an asset).
      with_ssl_heads: add the `ssl_heads` signature.
      with_batch_stats: add the `serving_batch_stats` signature.

    Returns:
      (module, signatures dict name -> concrete function).

    Raises:
      UserError: `with_ssl_heads` on a model without a classifier-headed task.
    """
    trunk, classifier = model.trunk, model.classifier
    height, width, channels = model.image_shape
    num_classes = model.num_classes
    probes = []
    if with_ssl_heads:
        probes = [
            (task.name, head, task.probe_classes, task.probe_inputs) for task, head in probe_tasks(model)
        ]
        if not probes:
            from robust_ssl.tasks import probe_task_names

            raise UserError(
                f"--with_ssl_heads needs a model with one of the tasks {', '.join(probe_task_names())}; "
                f"this model has {', '.join(model.task_names) or 'none'}"
            )

    module = tf.Module(name="robust_ssl_classifier")
    module.labels_asset = tf.saved_model.Asset(labels_path)
    module.labels_table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            module.labels_asset,
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="",
    )
    table = module.labels_table

    def classify(images, batch_stats=False):
        if batch_stats:
            # The batch's own moments; stateless, so serving never moves the
            # moving averages.
            features, _ = trunk.stateless_call(
                [v.value for v in trunk.trainable_variables],
                [v.value for v in trunk.non_trainable_variables],
                images,
                training=True,
            )
        else:
            features = trunk(images, training=False)
        logits = classifier(features, training=False)
        logits = tf.cast(logits, tf.float32)
        classes = tf.argmax(logits, axis=-1, output_type=tf.int64)
        return {
            "logits": logits,
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "classes": classes,
            "class_names": table.lookup(classes),
        }

    def scale(images):
        return tf.cast(images, tf.float32) / 255.0

    uint8_spec = tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")
    float_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")

    classify_uint8 = _empty_safe(lambda images: classify(scale(images)), uint8_spec)

    def serve(images):
        return classify_uint8(_check_shape(images, uint8_spec))

    def serve_float(images):
        return _empty_safe(classify, float_spec)(_check_range(_check_shape(images, float_spec)))

    def labels():
        return {"labels": table.lookup(tf.range(num_classes, dtype=tf.int64))}

    module.serve = tf.function(serve, input_signature=[uint8_spec])
    module.serve_float = tf.function(serve_float, input_signature=[float_spec])
    module.labels = tf.function(labels, input_signature=[])
    signatures = {
        SERVING_DEFAULT: module.serve.get_concrete_function(),
        SERVING_FLOAT: module.serve_float.get_concrete_function(),
        LABELS: module.labels.get_concrete_function(),
    }
    if with_batch_stats:

        def serve_batch_stats(images):
            return _empty_safe(lambda x: classify(scale(x), batch_stats=True), uint8_spec)(
                _check_shape(images, uint8_spec)
            )

        module.serve_batch_stats = tf.function(serve_batch_stats, input_signature=[uint8_spec])
        signatures[SERVING_BATCH_STATS] = module.serve_batch_stats.get_concrete_function()
    if probes:

        def probe_all(images):
            images = scale(images)
            outputs = {}
            for name, head, num_transforms, transform in probes:
                values = _probe_outputs(trunk, head, images, num_transforms, transform)
                outputs.update({f"{name}_{key}": value for key, value in zip(SSL_OUTPUTS, values)})
            return outputs

        def ssl_heads(images):
            return _empty_safe(probe_all, uint8_spec)(_check_shape(images, uint8_spec))

        module.ssl_heads = tf.function(ssl_heads, input_signature=[uint8_spec])
        signatures[SSL_HEADS] = module.ssl_heads.get_concrete_function()
    # Track exactly the (backing tf.) variables the functions read. Tracking the
    # Keras variables instead loads in TF2 but not in the TF1 session loader of
    # TF Serving and saved_model_cli ("Could not find variable …").
    used = {}
    for function in signatures.values():
        for variable in function.variables:
            used.setdefault(id(variable), variable)
    module.model_variables = list(used.values())
    return module, signatures


# ------------------------------------------------------------------ versions
def existing_versions(export_dir):
    """Sorted integer versions (numeric sub-directories) in export_dir."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(export_dir)
        if _VERSION_RE.match(name) and os.path.isdir(os.path.join(export_dir, name))
    )


def next_version(export_dir):
    """The version a new export gets by default: max existing + 1, starting at 1."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def _check_version(version):
    if isinstance(version, str) and _VERSION_RE.match(version.strip()):
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise UserError(f"export version must be a positive integer; got {version!r}")
    return int(version)


# ------------------------------------------------------------------ export
def export_saved_model(
    model_or_path, export_dir, version=None, with_ssl_heads=False, overwrite=False, with_batch_stats=False
):
    """Writes a versioned SavedModel of the classifier for TF Serving.

    The SavedModel is written into a temporary directory inside `export_dir`
    and renamed to `<export_dir>/<version>` when complete, so TF Serving (which
    ignores non-numeric directories) never sees a partial export.

    Args:
      model_or_path: a `RobustSSLModel`, a `.keras` file or a run's workdir
        (<workdir>/model.keras, else its latest checkpoint).
      export_dir: the model's base directory for TF Serving.
      version: positive integer version; default: max existing + 1 (1 at first).
      with_ssl_heads: add the `ssl_heads` signature (see the module docstring).
      with_batch_stats: add the `serving_batch_stats` signature (see the module
        docstring for its caveat).
      overwrite: replace an existing version instead of refusing.

    Returns:
      The path of the written version directory.

    Raises:
      UserError: no model, an existing version without `overwrite`, an invalid
        version, or `with_ssl_heads` on a model without a classifier-headed task.
    """
    model = rundir.load_model(model_or_path)
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"export dir {export_dir} exists and is not a directory")
    version = next_version(export_dir) if version is None else _check_version(version)
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise UserError(
            f"version {version} already exists in {export_dir}; pass --overwrite to replace it "
            f"or omit --version to write version {next_version(export_dir)}"
        )
    names = class_names_of(model)
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=export_dir)
    try:
        labels_dir = os.path.join(tmp, "labels")
        os.makedirs(labels_dir)
        labels_path = os.path.join(labels_dir, LABELS_FILE)
        rundir.write_text(labels_path, "\n".join(names) + "\n")
        module, signatures = build_serving_module(model, labels_path, with_ssl_heads, with_batch_stats)
        staged = os.path.join(tmp, "saved_model")
        tf.saved_model.save(module, staged, signatures=signatures)
        _move_into_place(staged, target, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _move_into_place(staged, target, overwrite):
    old = None
    if os.path.exists(target):
        if not overwrite:  # another export took this version meanwhile
            raise UserError(
                f"version {os.path.basename(target)} appeared in {os.path.dirname(target)} meanwhile"
            )
        old = os.path.join(os.path.dirname(staged), "replaced")
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except OSError as e:
        if old is not None:
            os.rename(old, target)
        raise UserError(f"cannot move the export to {target}: {e.strerror or e}") from None


# ------------------------------------------------------------------ checks
def describe(export_path):
    """One line per signature of an export: name, inputs and outputs.

    Args:
      export_path: a version directory written by `export_saved_model`.

    Returns:
      A list of strings.
    """
    loaded = tf.saved_model.load(export_path)
    lines = []
    for name, fn in sorted(loaded.signatures.items()):
        inputs = fn.structured_input_signature[1]
        outputs = fn.structured_outputs
        ins = ", ".join(f"{k}: {v.dtype.name} {v.shape.as_list()}" for k, v in sorted(inputs.items()))
        outs = ", ".join(f"{k}: {v.dtype.name} {v.shape.as_list()}" for k, v in sorted(outputs.items()))
        lines.append(f"{name}({ins}) -> {outs}")
    return lines


def verify_export(export_path, model_or_path, images):
    """Compares the export's probabilities with the in-memory model's.

    Args:
      export_path: a version directory written by `export_saved_model`.
      model_or_path: the model it was exported from (see `rundir.load_model`).
      images: uint8 [N, H, W, 3] images.

    Returns:
      The max absolute difference of the probabilities.
    """
    model = rundir.load_model(model_or_path)
    images = np.asarray(images, dtype=np.uint8)
    expected = tf.nn.softmax(model(tf.cast(images, tf.float32) / 255.0, training=False), axis=-1)
    loaded = tf.saved_model.load(export_path)
    got = loaded.signatures[SERVING_DEFAULT](images=tf.constant(images))["probabilities"]
    return float(np.max(np.abs(got.numpy() - expected.numpy())))


def sample_images(model_or_shape, count=16, seed=0):
    """Random uint8 images of a model's input shape (for a quick check)."""
    shape = model_or_shape.image_shape if hasattr(model_or_shape, "image_shape") else tuple(model_or_shape)
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)
