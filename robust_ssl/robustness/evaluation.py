"""Robustness of a trained classifier on CIFAR-10-C (Hendrycks & Dietterich, 2019).

`evaluate_robustness(model, source, …)` scores a model on every chosen
(corruption, severity) cell of

- real CIFAR-10-C from tfds (`source="tfds"`) or the official `.npy`
  directory (`source=<directory>`), or
- corruptions generated on the fly from a clean test set
  (`source="generate"`, `robust_ssl.data.corruptions`), which works offline
  and for any 32x32 dataset;

and reports per cell accuracy, error, expected calibration error (15 bins) and
NLL; the clean accuracy; the mean accuracy over the 15 benchmark corruptions
and over all 19 (the paper's number); the corruption error CE_c (mean error
over severities) and its mean mCE over the 15 benchmark corruptions. Given the
results of a baseline run, `compare` adds the normalised CE/mCE
(sum_s E_s,c / sum_s E^base_s,c) and the relative CE/mCE
(sum_s (E_s,c - E_clean) / sum_s (E^base_s,c - E^base_clean)) of Hendrycks &
Dietterich.

Leak-free scoring (`leak_guard`): a run whose AutoML meta loss validated on the
first P images of every CIFAR-10-C block (meta_validation.json with source
"cifar10c") is scored on the rest of each block only; asking to include those
images raises a UserError. As every block corrupts the CIFAR-10 test set in
order, the first P clean CIFAR-10 test images are left out too (of the clean
accuracy and of generated corruptions) when the run's clean test set is
tfds cifar10. Without a meta_validation.json the paper's P = 100 is assumed.
"""

import dataclasses
import os
import sys
import time

import numpy as np

from robust_ssl import config_utils, rundir
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError
from robust_ssl.robustness import reports

NUM_BINS = 15
GENERATE = "generate"
TFDS = "tfds"
# meta_validation.json sources that draw on the training set only.
TRAINING_SOURCES = config_utils.HOLDOUT_SOURCES


# --------------------------------------------------------------------------- leak guard
@dataclasses.dataclass
class Exclusion:
    """What is left out of scoring so that no scored image was seen by the meta loss.

    Attributes:
      per_block: images dropped at the head of every real CIFAR-10-C block.
      clean_skip: leading clean test images dropped (from the clean accuracy
        and, with source="generate", from the images that get corrupted).
      note: one line saying why, for the report.
    """

    per_block: int = 0
    clean_skip: int = 0
    note: str = ""


def _is_cifar10_test(data_config):
    return bool(data_config) and data_config.get("source") == "tfds" and data_config.get("name") == "cifar10"


def leak_guard(record, source, include_meta_images=False, data_config=None):
    """Decides which images must not be scored, given what the meta loss saw.

    Args:
      record: the run's meta_validation.json dict, or None when unknown.
      source: "generate", "tfds" or a CIFAR-10-C directory.
      include_meta_images: the user asks to score the meta-validation images.
      data_config: the run's `config.data` (dict-like) or None; tells whether
        the clean test set is CIFAR-10's, whose first images underlie the
        first images of every CIFAR-10-C block.

    Returns:
      An `Exclusion`.

    Raises:
      UserError: the user asks to include images the meta loss used, or the
        record names a source this function does not know.
    """
    real = source != GENERATE
    note = ""
    if record is None:
        if include_meta_images:
            return Exclusion(0, 0, "no meta_validation.json; all images scored (--include_meta_images)")
        record = {"source": "cifar10c", "per_block": cifar10c.PAPER_PER_BLOCK}
        note = "no meta_validation.json: assumed the paper's meta-validation images and left them out; "
    kind = record.get("source")
    if kind is None or kind in TRAINING_SOURCES or str(kind).endswith("holdout"):
        what = "no meta-validation" if kind is None else f"meta-validation on training images ({kind})"
        note = f"{what}: no test image is excluded"
        if record.get("corruptions") and kind is not None:
            # Not a leak of images, but these corruption types were not unseen.
            note += f"; the meta loss saw {', '.join(record['corruptions'])}"
        return Exclusion(0, 0, note)
    if kind != "cifar10c":
        raise UserError(
            f"meta_validation.json names source {kind!r}, unknown to the evaluation; "
            f"it cannot tell which test images the meta loss saw"
        )
    per_block = int(record.get("per_block", cifar10c.PAPER_PER_BLOCK))
    clean_skip = per_block if _is_cifar10_test(data_config) else 0
    used = per_block if real else clean_skip
    if include_meta_images and used > 0:
        what = (
            f"the first {per_block} images of every CIFAR-10-C block"
            if real
            else f"corruptions of the first {clean_skip} CIFAR-10 test images"
        )
        raise UserError(
            f"refusing to score {what}: the run's AutoML meta-validation used them "
            f"(meta_validation.json: source cifar10c, per_block {per_block}); drop --include_meta_images"
        )
    if real:
        note += f"left out the first {per_block} images of every block (meta-validation)"
    else:
        note += f"left out the first {clean_skip} clean test images (their CIFAR-10-C copies were meta-validation)"
    if clean_skip and real:
        note += f" and the first {clean_skip} clean test images"
    return Exclusion(per_block if real else 0, clean_skip, note)


# --------------------------------------------------------------------------- prediction
def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _looks_like_probabilities(values):
    return (
        values.size > 0
        and values.min() >= 0
        and values.max() <= 1
        and np.allclose(values.sum(axis=1), 1.0, atol=1e-3)
    )


def make_predictor(model, batch_size=500, outputs="auto"):
    """Wraps a model as a function uint8 images -> class probabilities.

    Args:
      model: a Keras model (images in [0, 1] -> logits, as `RobustSSLModel`),
        or any callable taking float32 [N, H, W, 3] in [0, 1].
      batch_size: images per forward pass.
      outputs: "logits", "probabilities" or "auto" (probabilities when every
        row of the first batch is a distribution, else logits).

    Returns:
      predict(images uint8 [N, H, W, 3]) -> float64 [N, C] probabilities.
    """
    if outputs not in ("auto", "logits", "probabilities"):
        raise ValueError(f"outputs must be auto, logits or probabilities; got {outputs!r}")
    import keras

    if isinstance(model, keras.Model):
        forward = model.predict_on_batch
    else:
        forward = model
    kind = {"value": None if outputs == "auto" else outputs}

    def predict(images):
        parts = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].astype(np.float32) / 255.0
            y = forward(x)
            if isinstance(y, dict):
                y = y.get("logits", y.get("probabilities", next(iter(y.values()))))
            y = np.asarray(y, np.float64)
            if kind["value"] is None:
                kind["value"] = "probabilities" if _looks_like_probabilities(y) else "logits"
            parts.append(y if kind["value"] == "probabilities" else _softmax(y))
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    predict.is_predictor = True
    predict.image_shape, predict.num_classes = model_input(model)
    return predict


def model_input(model):
    """(image shape (H, W, C), number of classes) a model takes and gives; None where unknown.

    Args:
      model: a `RobustSSLModel`, another Keras model, or a callable or
        predictor with `image_shape` / `num_classes` attributes
        (`load_saved_model`, `make_predictor`).
    """
    shape = getattr(model, "image_shape", None)
    classes = getattr(model, "num_classes", None)
    try:
        if shape is None and isinstance(getattr(model, "input_shape", None), tuple):
            shape = tuple(model.input_shape[1:]) if len(model.input_shape) == 4 else None
        if classes is None and isinstance(getattr(model, "output_shape", None), tuple):
            classes = model.output_shape[-1]
    except (AttributeError, ValueError):  # a model that was never built
        pass
    return (tuple(shape) if shape is not None else None), (int(classes) if classes else None)


def _check_fits(what, shape, expected):
    """UserError (one line naming `what`) unless images of `shape` fit a model taking `expected`."""
    if expected is None:
        return
    if len(shape) != len(expected) or any(e is not None and e != a for e, a in zip(expected, shape)):
        size = "x".join("?" if d is None else str(d) for d in expected)
        raise UserError(f"{what} are {'x'.join(map(str, shape))} images, but the model takes {size} images")


def check_inputs(model, kind, source, corruptions, clean=None):
    """Checks, before anything is scored, that the images and labels fit the model.

    Official `.npy` files: every file's shape, dtype and count
    (`cifar10c.check_npy_directory`); tfds CIFAR-10-C: 32x32x3 images; the
    clean test set (and so generated corruptions): its image size and labels.

    Raises:
      UserError: the first set or file that does not fit, named, in one line.
    """
    shape, classes = model_input(model)
    if kind == "npy":
        cifar10c.check_npy_directory(source, corruptions, shape, classes)
    elif kind == TFDS:
        _check_fits("tfds cifar10_corrupted images", (32, 32, 3), shape)
    if clean is not None:
        images, labels = clean
        _check_fits("the clean test images", tuple(np.shape(images)[1:]), shape)
        if classes is not None and len(labels) and (np.min(labels) < 0 or np.max(labels) >= classes):
            raise UserError(
                f"the clean test labels reach {int(np.max(labels))}, but the model has {classes} classes"
            )


def load_saved_model(path):
    """A callable float images [0, 1] -> logits from a TensorFlow SavedModel.

    Accepts a SavedModel directory or TF Serving's versioned layout
    (<dir>/<version>/saved_model.pb, newest version taken). Uses the signature
    `serving_float` (float32 in [0, 1]) when present, else `serving_default`
    (uint8 inputs are fed 0..255), else the Keras export endpoint `serve`.

    Args:
      path: directory.

    Returns:
      A callable suitable for `make_predictor` (its outputs are taken as
      "logits" when the signature has them, else auto-detected).

    Raises:
      UserError: no SavedModel there.
    """
    import tensorflow as tf

    if not os.path.isdir(path):
        raise UserError(f"SavedModel directory {path} does not exist")
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        versions = sorted((int(d) for d in os.listdir(path) if d.isdigit()), reverse=True)
        for version in versions:
            candidate = os.path.join(path, str(version))
            if os.path.exists(os.path.join(candidate, "saved_model.pb")):
                path = candidate
                break
        else:
            raise UserError(f"{path} holds no saved_model.pb (nor a versioned <dir>/<n>/saved_model.pb)")
    loaded = tf.saved_model.load(path)
    signatures = getattr(loaded, "signatures", {})
    function = None
    for name in ("serving_float", "serving_default"):
        if name in signatures:
            function = signatures[name]
            break
    if function is None and hasattr(loaded, "serve"):
        function = loaded.serve
    if function is None:
        raise UserError(f"the SavedModel in {path} has no serving_default signature nor a serve endpoint")
    specs = function.structured_input_signature[1] if hasattr(function, "structured_input_signature") else {}
    if specs:
        (input_name, spec), *_ = specs.items()
    else:
        input_name, spec = None, None
    wants_uint8 = spec is not None and spec.dtype == tf.uint8

    def call(images01):
        x = np.clip(np.round(images01 * 255.0), 0, 255).astype(np.uint8) if wants_uint8 else images01
        try:
            out = function(**{input_name: tf.constant(x)}) if input_name else function(tf.constant(x))
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as e:
            detail = str(getattr(e, "message", e)).strip().splitlines()
            raise UserError(
                f"the SavedModel in {path} refused a batch of {list(x.shape)} {x.dtype} images: "
                f"{detail[0] if detail else type(e).__name__}"
            ) from None
        if isinstance(out, dict):
            out = out["logits"] if "logits" in out else out.get("probabilities", next(iter(out.values())))
        return np.asarray(out)

    call.loaded = loaded  # keep the trackable object (and its variables) alive
    call.image_shape = tuple(spec.shape[1:]) if spec is not None and spec.shape.rank == 4 else None
    outputs = getattr(function, "structured_outputs", None)
    logits = outputs.get("logits") if isinstance(outputs, dict) else None
    call.num_classes = logits.shape[-1] if logits is not None and logits.shape.rank == 2 else None
    return call


# --------------------------------------------------------------------------- metrics
def expected_calibration_error(probabilities, labels, bins=NUM_BINS):
    """ECE with equal-width confidence bins (Guo et al., 2017).

    Args:
      probabilities: [N, C].
      labels: [N] integer labels.
      bins: number of bins over (0, 1]; a confidence c falls into bin
        ceil(c * bins) - 1.

    Returns:
      sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)| (0.0 for N = 0).
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(labels))


def cell_metrics(probabilities, labels):
    """Accuracy, error, ECE (15 bins) and NLL of one set of predictions.

    Returns:
      dict with accuracy, error, ece, nll, num_images.
    """
    labels = np.asarray(labels).astype(np.int64)
    n = len(labels)
    if n == 0:
        raise UserError("a cell has no images left to score")
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    picked = probabilities[np.arange(n), labels]
    return {
        "accuracy": accuracy,
        "error": 1.0 - accuracy,
        "ece": expected_calibration_error(probabilities, labels),
        "nll": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "num_images": int(n),
    }


# --------------------------------------------------------------------------- evaluation
def _source_kind(source):
    if source in (GENERATE, TFDS):
        return source
    if isinstance(source, str) and os.path.isdir(source):
        return "npy"
    raise UserError(
        f"--cifar10c must be 'tfds', 'generate' or an existing directory of CIFAR-10-C .npy files; got {source!r}"
    )


def _load_real_block(kind, source, corruption, severity, tfds_data_dir):
    if kind == "npy":
        return cifar10c.load_block("npy", corruption, severity, source)
    try:
        return cifar10c.load_block("tfds", corruption, severity, tfds_data_dir)
    except UserError:
        raise UserError(
            f"cannot load tfds cifar10_corrupted/{cifar10c.tfds_config_name(corruption, severity)}; "
            f"offline, pass --cifar10c=<directory of the official .npy files> or --cifar10c=generate"
        ) from None


def _subset(n, max_images):
    """Indices of an evenly spaced subset of `max_images` of n (all if None/0/>= n).

    Evenly spaced rather than the first ones: folder data sets are read class by
    class, so a prefix would hold one class only.
    """
    if not max_images or max_images >= n:
        return np.arange(n)
    return np.floor(np.arange(max_images) * (n / max_images)).astype(int)


class CellProgress:
    """Progress over the cells of an evaluation, with the running mean accuracy.

    On a terminal, one line redrawn in place (`\\r`): cells done, the mean
    accuracy over the corruption cells so far (of every adaptation mode), the
    last cell and the time left. Elsewhere (a log file, a pipe), one line per
    corruption once its last severity is scored, and no `\\r`. The clean
    accuracy is shown on its own and left out of the mean.

    Args:
      total: number of updates expected (the cells, plus one for the clean set).
      stream: where to write (default: sys.stdout at each write).
      interactive: force the terminal (True) or line (False) form; None: the
        stream's `isatty()`.
    """

    def __init__(self, total, stream=None, interactive=None):
        self.total = int(total)
        self._stream = stream
        self.interactive = self._isatty() if interactive is None else bool(interactive)
        self.done = 0
        self.clean = {}
        self.sums = {}
        self.counts = {}
        self._corruption = {}  # mode -> accuracies of the current corruption's severities
        self._start = time.time()
        self._width = 0

    @property
    def stream(self):
        return self._stream or sys.stdout

    def _isatty(self):
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def mean(self, mode=None):
        """Running mean accuracy over the corruption cells so far (the first mode's by default)."""
        mode = mode or next(iter(self.sums), None)
        return self.sums[mode] / self.counts[mode] if self.counts.get(mode) else None

    def _means(self):
        parts = [f"{m} {100 * self.mean(m):.1f}%" for m in self.sums if self.counts[m]]
        if len(parts) == 1:
            return "mean accuracy " + parts[0].split(" ", 1)[1]
        return "mean accuracy " + ", ".join(parts)

    def _elapsed(self):
        elapsed = time.time() - self._start
        if not self.done or self.done >= self.total:
            return f"{elapsed:.0f}s"
        left = elapsed / self.done * (self.total - self.done)
        return f"{elapsed:.0f}s, ~{left:.0f}s left"

    def _write(self, text, end="\n"):
        self.stream.write(text + end)
        self.stream.flush()

    def add_clean(self, accuracies):
        """The clean set scored: {mode: accuracy}."""
        self.done += 1
        self.clean = dict(accuracies)
        shown = ", ".join(f"{m} {100 * a:.1f}%" for m, a in self.clean.items())
        if len(self.clean) == 1:
            shown = f"{100 * next(iter(self.clean.values())):.1f}%"
        self._show(f"clean accuracy {shown}", line=True)

    def add_cell(self, corruption, severity, accuracies, last_of_corruption):
        """One cell scored: {mode: accuracy}; `last_of_corruption` after its last severity."""
        self.done += 1
        for mode, accuracy in accuracies.items():
            self.sums[mode] = self.sums.get(mode, 0.0) + float(accuracy)
            self.counts[mode] = self.counts.get(mode, 0) + 1
            self._corruption.setdefault(mode, []).append(float(accuracy))
        first = next(iter(accuracies.values()))
        if self.interactive:
            self._show(f"{corruption} s{severity}: {100 * first:.1f}%")
        elif last_of_corruption:
            values = self._corruption[next(iter(self._corruption))]
            self._show(f"{corruption}: {100 * np.mean(values):.1f}% over {len(values)} severities", line=True)
        if last_of_corruption:
            self._corruption = {}

    def _show(self, what, line=False):
        text = f"[{self.done}/{self.total} cells] {what}"
        if self.counts:
            text += f"; running {self._means()}"
        text += f" ({self._elapsed()})"
        if not self.interactive:
            if line:
                self._write(text)
            return
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._write("\r" + text + padding, end="\n" if self.done >= self.total else "")

    def finish(self):
        """The closing line (always a whole line): the mean over all cells and the time."""
        if self.interactive and self.done < self.total:
            self._write("")
        if self.counts:
            clean = ""
            if self.clean:
                clean = "; clean " + ", ".join(f"{m} {100 * a:.1f}%" for m, a in self.clean.items())
                if len(self.clean) == 1:
                    clean = f"; clean {100 * next(iter(self.clean.values())):.1f}%"
            count = next(iter(self.counts.values()))
            self._write(f"scored {count} cells: {self._means()}{clean} ({time.time() - self._start:.0f}s)")


def evaluate_robustness(
    model,
    source,
    clean=None,
    corruptions=cifar10c.ALL_CORRUPTIONS,
    severities=cifar10c.SEVERITIES,
    max_images=None,
    batch_size=500,
    seed=0,
    meta_validation=None,
    include_meta_images=False,
    data_config=None,
    tfds_data_dir=None,
    progress=True,
    adapt=None,
    adapt_settings=None,
):
    """Scores a classifier on CIFAR-10-C (real or generated), cell by cell.

    Args:
      model: a Keras model (images in [0, 1] -> logits), a callable of the same
        kind, or a predictor from `make_predictor`/`load_saved_model`
        (wrapped with `make_predictor` unless it has `is_predictor`).
      source: "tfds", "generate" or a directory of the official `.npy` files.
      clean: (images uint8 [N, 32, 32, 3], labels [N]) clean test set; needed
        for "generate"; for real CIFAR-10-C it gives the clean accuracy (None:
        no clean accuracy, no relative CE).
      corruptions, severities: the cells to score.
      max_images: score at most this many images per cell (None = all): an
        evenly spaced, deterministic subset (after the leak guard's exclusions).
      batch_size: forward-pass batch size.
      seed: seed of generated corruptions.
      meta_validation: the run's meta_validation.json dict (None = unknown).
      include_meta_images: score the meta-validation images too (refused when
        the record says the meta loss used them).
      data_config: the run's `config.data` (for the leak guard).
      tfds_data_dir: tfds data directory for source="tfds".
      progress: show the progress over the cells with the running mean
        accuracy (`CellProgress`).
      adapt: test-time adaptation modes to compare (`adaptation.MODES`, e.g.
        ("none", "bn", "tent")); None = the model as it is, and the results
        exactly as without adaptation. Needs a `RobustSSLModel` unless only
        "none".
      adapt_settings: `adaptation.Settings` of the modes.

    Returns:
      A results dict: "cells" (list of per-cell dicts: corruption, severity,
      accuracy, error, ece, nll, num_images), "clean" (same metrics or None),
      "summary" (see `summarize`) and "settings". With `adapt`, these are the
      first mode's, and "modes" maps every mode to its own "cells", "clean",
      "summary" and "seconds_per_image", and "adaptation" (see
      `adaptation_summary`) gives the gains over "none".

    Raises:
      UserError: missing data, an empty cell, or a leak the guard refuses.
    """
    kind = _source_kind(source)
    exclusion = leak_guard(meta_validation, source, include_meta_images, data_config)
    scorers = _scorers(model, batch_size, adapt, adapt_settings)
    check_inputs(model, kind, source, corruptions, clean)  # every file, before anything is scored
    if clean is not None:
        clean_images, clean_labels = (np.asarray(a) for a in clean)
        clean_images = clean_images[exclusion.clean_skip :]
        clean_labels = clean_labels[exclusion.clean_skip :]
        keep = _subset(len(clean_images), max_images)
        clean_images, clean_labels = clean_images[keep], clean_labels[keep]
        if len(clean_images) == 0:
            raise UserError("no clean test images left to score")
    elif kind == GENERATE:
        raise UserError("source 'generate' needs the clean test set (clean=(images, labels))")

    cells = [(c, s) for c in corruptions for s in severities]
    bar = CellProgress(len(cells) + (clean is not None)) if progress else None
    scored = {mode: {"cells": [], "clean": None, "seconds": 0.0, "images": 0} for mode in scorers}

    def score(images, labels):
        out = {}
        for mode, predict in scorers.items():
            start = time.perf_counter()
            probabilities = predict(images)
            scored[mode]["seconds"] += time.perf_counter() - start
            scored[mode]["images"] += len(images)
            out[mode] = cell_metrics(probabilities, labels)
        return out

    if clean is not None:
        for mode, metrics in score(clean_images, clean_labels).items():
            scored[mode]["clean"] = metrics
        if bar is not None:
            bar.add_clean({mode: out["clean"]["accuracy"] for mode, out in scored.items()})
    for index, (corruption, severity) in enumerate(cells):
        if kind == GENERATE:
            images, labels = _corrupt(clean_images, corruption, severity, seed), clean_labels
        else:
            images, labels = _load_real_block(kind, source, corruption, severity, tfds_data_dir)
            images, labels = cifar10c.split_block(images, labels, "test", exclusion.per_block)
            if not len(images):
                raise UserError(
                    f"no {corruption} severity {severity} images are left after leaving out the first "
                    f"{exclusion.per_block} of the block ({exclusion.note.strip('; ')}); "
                    f"pass --include_meta_images if the model's meta loss never saw them"
                )
            keep = _subset(len(images), max_images)
            images, labels = images[keep], labels[keep]
        for mode, metrics in score(images, labels).items():
            scored[mode]["cells"].append({"corruption": corruption, "severity": int(severity), **metrics})
        if bar is not None:
            last = index + 1 == len(cells) or cells[index + 1][0] != corruption
            accuracies = {mode: out["cells"][-1]["accuracy"] for mode, out in scored.items()}
            bar.add_cell(corruption, severity, accuracies, last)
    if bar is not None:
        bar.finish()
    first = next(iter(scored.values()))
    result = {
        "cells": first["cells"],
        "clean": first["clean"],
        "settings": {
            "source": source if kind != "npy" else os.path.abspath(source),
            "corruptions": list(corruptions),
            "severities": [int(s) for s in severities],
            "max_images": int(max_images) if max_images else None,
            "seed": int(seed),
            "excluded_per_block": exclusion.per_block,
            "excluded_clean": exclusion.clean_skip,
            "leak_guard": exclusion.note,
            "meta_validation": meta_validation,
        },
    }
    result["summary"] = summarize(result)
    if adapt is not None:
        result["modes"] = {}
        for mode, out in scored.items():
            entry = {"cells": out["cells"], "clean": out["clean"]}
            entry["summary"] = summarize(entry)
            entry["seconds_per_image"] = out["seconds"] / max(out["images"], 1)
            result["modes"][mode] = entry
        result["adaptation"] = adaptation_summary(result)
        from robust_ssl.robustness import adaptation

        result["settings"]["adaptation"] = dataclasses.asdict(adapt_settings or adaptation.Settings())
    return result


def _scorers(model, batch_size, adapt, adapt_settings):
    """{mode: images -> probabilities}; {"none": the model's predictor} without adaptation."""
    if adapt is None:
        predict = model if getattr(model, "is_predictor", False) else make_predictor(model, batch_size)
        return {"none": predict}
    from robust_ssl.model import RobustSSLModel
    from robust_ssl.robustness import adaptation

    modes = (
        adaptation.parse_modes(",".join(adapt))
        if not isinstance(adapt, str)
        else adaptation.parse_modes(adapt)
    )
    if not isinstance(model, RobustSSLModel) and set(modes) - {"none"}:
        raise UserError("test-time adaptation needs the run's Keras model (not a SavedModel or a predictor)")
    settings = adapt_settings or adaptation.Settings()
    scorers = {}
    for mode in modes:
        adapter = adaptation.Adapter(model, mode, settings)

        def predict(images, adapter=adapter):
            return _softmax(adaptation.predict_cell(adapter, images, settings.batch_size))

        scorers[mode] = predict
    return scorers


def adaptation_summary(result):
    """Per adaptation mode: clean, means over severities, severity means, gains over "none".

    Args:
      result: an `evaluate_robustness` result with "modes".

    Returns:
      {mode: {"clean_accuracy", "mean_accuracy_all", "mean_accuracy_benchmark",
      "severity_means" {severity: mean accuracy over the corruptions},
      "seconds_per_image", "gain" {same keys: mode − none, or None}}}.
    """
    out = {}
    for mode, entry in result["modes"].items():
        severities = sorted({c["severity"] for c in entry["cells"]})
        out[mode] = {
            "clean_accuracy": entry["summary"]["clean_accuracy"],
            "mean_accuracy_all": entry["summary"]["mean_accuracy_all"],
            "mean_accuracy_benchmark": entry["summary"]["mean_accuracy_benchmark"],
            "severity_means": {
                str(s): _mean(c["accuracy"] for c in entry["cells"] if c["severity"] == s) for s in severities
            },
            "seconds_per_image": entry["seconds_per_image"],
        }
    none = out.get("none")
    for values in out.values():
        if none is None:
            values["gain"] = None
            continue
        gain = {}
        for key in ("clean_accuracy", "mean_accuracy_all", "mean_accuracy_benchmark"):
            a, b = values[key], none[key]
            gain[key] = None if a is None or b is None else a - b
        gain["severity_means"] = {
            s: (None if v is None or none["severity_means"].get(s) is None else v - none["severity_means"][s])
            for s, v in values["severity_means"].items()
        }
        values["gain"] = gain
    return out


def _corrupt(images, corruption, severity, seed):
    from robust_ssl.data import corruptions as corruptions_lib

    if images.shape[1:] != corruptions_lib.IMAGE_SHAPE:
        raise UserError(
            f"--cifar10c=generate needs 32x32 RGB test images (the CIFAR-10-C parameters); got {images.shape[1:]}"
        )
    return corruptions_lib.corrupt(images, corruption, severity, seed)


# --------------------------------------------------------------------------- summaries
def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(result):
    """Aggregates the cells of a results dict.

    Returns:
      dict with clean_accuracy; mean_accuracy_benchmark (15 corruptions) and
      mean_accuracy_all (19, the paper's number) over the cells present;
      ce (corruption -> mean error over its severities, unnormalised); mce
      (mean CE over the benchmark corruptions present, unnormalised) and
      mce_all; mean_ece; benchmark_complete / all_complete (every severity of
      every corruption present).
    """
    cells = result["cells"]
    by_corruption = {}
    for cell in cells:
        by_corruption.setdefault(cell["corruption"], []).append(cell)
    ce = {name: _mean(c["error"] for c in group) for name, group in by_corruption.items()}
    bench = [c for c in cells if c["corruption"] in cifar10c.BENCHMARK_CORRUPTIONS]
    full = {(c["corruption"], c["severity"]) for c in cells}
    clean = result.get("clean")
    return {
        "clean_accuracy": clean["accuracy"] if clean else None,
        "clean_ece": clean["ece"] if clean else None,
        "mean_accuracy_benchmark": _mean(c["accuracy"] for c in bench),
        "mean_accuracy_all": _mean(c["accuracy"] for c in cells),
        "ce": ce,
        "mce": _mean(v for k, v in ce.items() if k in cifar10c.BENCHMARK_CORRUPTIONS),
        "mce_all": _mean(ce.values()),
        "mean_ece": _mean(c["ece"] for c in cells),
        "benchmark_complete": all(
            (c, s) in full for c in cifar10c.BENCHMARK_CORRUPTIONS for s in cifar10c.SEVERITIES
        ),
        "all_complete": all((c, s) in full for c in cifar10c.ALL_CORRUPTIONS for s in cifar10c.SEVERITIES),
    }


def compare(result, baseline):
    """Normalised and relative corruption errors against a baseline's results.

    Only cells present in both are used. For each corruption c (over common
    severities s): normalised CE_c = sum_s E_s,c / sum_s E^base_s,c, relative
    CE_c = sum_s (E_s,c - E_clean) / sum_s (E^base_s,c - E^base_clean); mCE and
    relative mCE average them over the benchmark corruptions (Hendrycks &
    Dietterich, 2019). A zero denominator gives None.

    Args:
      result, baseline: results dicts (`evaluate_robustness` / `load_results`).

    Returns:
      dict with normalised_ce, relative_ce (corruption -> value), mce,
      relative_mce, common_cells, and the baseline's mean accuracies.
    """
    ours = {(c["corruption"], c["severity"]): c["error"] for c in result["cells"]}
    theirs = {(c["corruption"], c["severity"]): c["error"] for c in baseline["cells"]}
    common = sorted(set(ours) & set(theirs), key=lambda k: (cifar10c.ALL_CORRUPTIONS.index(k[0]), k[1]))
    clean_ours = (result.get("clean") or {}).get("error")
    clean_theirs = (baseline.get("clean") or {}).get("error")
    normalised, relative = {}, {}
    for name in dict.fromkeys(k[0] for k in common):
        keys = [k for k in common if k[0] == name]
        num, den = sum(ours[k] for k in keys), sum(theirs[k] for k in keys)
        normalised[name] = num / den if den > 0 else None
        if clean_ours is not None and clean_theirs is not None:
            rnum = sum(ours[k] - clean_ours for k in keys)
            rden = sum(theirs[k] - clean_theirs for k in keys)
            relative[name] = rnum / rden if abs(rden) > 1e-12 else None
    bench = [c for c in normalised if c in cifar10c.BENCHMARK_CORRUPTIONS]
    base_summary = baseline.get("summary") or summarize(baseline)
    return {
        "normalised_ce": normalised,
        "relative_ce": relative,
        "mce": _mean(normalised[c] for c in bench),
        "relative_mce": _mean(relative.get(c) for c in bench) if relative else None,
        "common_cells": len(common),
        "baseline_clean_accuracy": base_summary.get("clean_accuracy"),
        "baseline_mean_accuracy_benchmark": base_summary.get("mean_accuracy_benchmark"),
        "baseline_mean_accuracy_all": base_summary.get("mean_accuracy_all"),
    }


# --------------------------------------------------------------------------- results files
def load_results(path):
    """Reads the results of another run, to compare against.

    Args:
      path: a robustness.json or robustness.csv (`reports.write_reports`), or
        a directory holding one (an evaluation output directory, or a run
        workdir with robustness/ inside).

    Returns:
      A results dict with "cells", "clean", "settings" (JSON only) and "summary".

    Raises:
      UserError: nothing readable there.
    """
    if os.path.isdir(path):
        found = rundir.robustness_results(path)
        if found is None:
            raise UserError(f"{path} holds no {rundir.ROBUSTNESS_JSON} or {rundir.ROBUSTNESS_CSV}")
        path = found
    elif not os.path.exists(path):
        raise UserError(f"baseline results {path} not found")
    result = reports.read_results(path)
    result["summary"] = summarize(result)
    return result


# --------------------------------------------------------------------------- a run, end to end
def _assumption(run_dir, source, include_meta_images, config):
    """One line on what is assumed when a model has no meta_validation.json beside it."""
    where = f"in {run_dir}" if run_dir else "beside the model"
    if include_meta_images:
        return f"no meta_validation.json {where}; every image is scored (--include_meta_images)"
    exclusion = leak_guard(None, source, False, config.data if config is not None else None)
    if not exclusion.per_block and not exclusion.clean_skip:
        return f"no meta_validation.json {where}; no image is left out"
    return (
        f"no meta_validation.json {where}: assumed the paper's meta-validation protocol and left out "
        f"the first {exclusion.per_block or exclusion.clean_skip} images of every CIFAR-10-C block"
        + (f" and the first {exclusion.clean_skip} clean test images" if exclusion.clean_skip else "")
        + "; pass --include_meta_images to score them (if the model's meta loss never saw CIFAR-10-C)"
    )


def check_replaced_report(output_dir, corruptions, severities, max_images=None):
    """Refuses to replace a report with one that would hold less, before anything is scored.

    A report in `output_dir` with (corruption, severity) cells this
    evaluation does not score, or with more images per cell than
    `max_images`, would be lost.

    Raises:
      UserError: one line saying what the report holds, and the two ways on
        (--output_dir elsewhere, or --overwrite).
    """
    path = os.path.join(output_dir, rundir.ROBUSTNESS_JSON)
    if not os.path.isfile(path):
        return
    try:
        old = reports.read_results(path)
    except UserError:
        return  # unreadable: nothing that could be kept
    wanted = {(c, int(s)) for c in corruptions for s in severities}
    had = {(c["corruption"], int(c["severity"])) for c in old["cells"]}
    counts = [c["num_images"] for c in old["cells"] if c.get("num_images")]
    lost = []
    if had - wanted:
        lost.append(f"{len(had - wanted)} of its {len(had)} cells would go")
    if max_images and counts and max_images < max(counts):
        lost.append(f"its cells have up to {max(counts)} images, --max_images={max_images} scores fewer")
    if lost:
        complete = "a complete report" if summarize(old)["all_complete"] else "a report"
        raise UserError(
            f"{output_dir} holds {complete} ({len(had)} cells); this evaluation scores {len(wanted)} cells "
            f"and would replace it ({'; '.join(lost)}): pass --output_dir=<another folder> to keep both, "
            f"or --overwrite to replace it"
        )


def _label(path):
    """A short name of a run for legends: its directory, not robustness/ or a file."""
    path = os.path.abspath(path)
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if os.path.basename(path) == rundir.ROBUSTNESS:
        path = os.path.dirname(path)
    return os.path.basename(path) or path


def _clean_test_set(config):
    """(images, labels) numpy arrays of the run's clean test set."""
    from robust_ssl.data import datasets

    data = datasets.load_data(config.data)
    images, labels = [], []
    for x, y in data.test.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.stack(images).astype(np.uint8), np.asarray(labels, np.int64)


def evaluate_run(
    cifar10c_source,
    workdir=None,
    checkpoint=None,
    saved_model=None,
    output_dir=None,
    baseline=None,
    corruptions=cifar10c.ALL_CORRUPTIONS,
    severities=cifar10c.SEVERITIES,
    max_images=None,
    batch_size=500,
    seed=0,
    include_meta_images=False,
    tfds_data_dir=None,
    progress=True,
    log=print,
    adapt=None,
    adapt_settings=None,
    overwrite=False,
):
    """What `robust-ssl evaluate` does: load a run's model, score it, write reports.

    Args:
      cifar10c_source: "tfds", "generate" or a directory of official .npy files.
      workdir: the run's workdir (model.keras or newest checkpoint; config.json
        and meta_validation.json).
      checkpoint: a .keras file instead of the workdir's model (its run
        directory is still read for config and meta-validation).
      saved_model: a SavedModel directory to score instead of a .keras model.
      output_dir: where reports go (default <run>/robustness).
      baseline: results file/directory of another run to compare with.
      corruptions, severities, max_images, batch_size, seed,
      include_meta_images, tfds_data_dir, progress, adapt, adapt_settings: see
        `evaluate_robustness`.
      log: function for one-line notes (warnings, outputs).
      overwrite: replace a report in `output_dir` that has cells (or images
        per cell) this evaluation would not score; without it such a report
        is refused before anything is scored (`check_replaced_report`).

    Returns:
      (results dict, dict of written paths).

    Raises:
      UserError: for any missing input or a refused leak.
    """
    if not (workdir or checkpoint or saved_model):
        raise UserError("give --workdir=<run>, --checkpoint=<file.keras> or --saved_model=<dir>")
    if workdir and not os.path.isdir(workdir):
        raise UserError(f"workdir {workdir} does not exist")
    kind = _source_kind(cifar10c_source)
    run_dir = rundir.run_dir_of(workdir, checkpoint)
    config = rundir.read_config(run_dir)
    record = rundir.read_meta_validation(run_dir)
    if record is None:
        log(f"note: {_assumption(run_dir, cifar10c_source, include_meta_images, config)}")
    # Refuse a leak before the (slow) model and data loading.
    leak_guard(record, cifar10c_source, include_meta_images, config.data if config is not None else None)
    baseline_result = load_results(baseline) if baseline else None  # fail early on a bad path
    if not output_dir:
        if not run_dir:
            raise UserError("pass --output_dir (no run directory to write into)")
        output_dir = os.path.join(run_dir, rundir.ROBUSTNESS)
    if not overwrite:
        check_replaced_report(output_dir, corruptions, severities, max_images)

    if saved_model:
        model = make_predictor(load_saved_model(saved_model), batch_size)
        model_name = saved_model
    else:
        model_name = rundir.model_path(checkpoint or workdir)
        model = rundir.load_model(model_name, robust_ssl_only=False)
    if adapt is not None:
        _scorers(model, batch_size, adapt, adapt_settings)  # refuse a mode the model cannot serve, early

    clean = None
    if config is not None:
        try:
            clean = _clean_test_set(config)
        except UserError as e:
            if kind == GENERATE:
                raise
            log(f"warning: no clean accuracy ({e})")
        if clean is not None and kind != GENERATE and not _is_cifar10_test(config.data):
            log(
                f"note: clean accuracy is on the run's own test set (data.source={config.data.source}); "
                f"CIFAR-10-C corrupts the CIFAR-10 test set"
            )
    elif kind == GENERATE:
        raise UserError(
            f"--cifar10c=generate corrupts the run's clean test set, but no config.json was found in "
            f"{run_dir or '(no run directory)'}; pass --workdir=<run>"
        )
    result = evaluate_robustness(
        model,
        cifar10c_source,
        clean=clean,
        corruptions=corruptions,
        severities=severities,
        max_images=max_images,
        batch_size=batch_size,
        seed=seed,
        meta_validation=record,
        include_meta_images=include_meta_images,
        data_config=config.data if config is not None else None,
        tfds_data_dir=tfds_data_dir,
        progress=progress,
        adapt=adapt,
        adapt_settings=adapt_settings,
    )
    result["settings"]["model"] = os.path.abspath(model_name)
    if baseline:
        result["settings"]["baseline"] = os.path.abspath(baseline)
    name = _label(run_dir or saved_model)
    base_name = _label(baseline) if baseline else "baseline"
    if base_name == name:
        base_name += " (baseline)"
    paths = reports.write_reports(
        result,
        output_dir,
        comparison=compare(result, baseline_result) if baseline_result else None,
        baseline=baseline_result,
        labels=(name, base_name),
        title=f"Robustness of {name}",
    )
    return result, paths
