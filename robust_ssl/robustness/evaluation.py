"""`robust-ssl evaluate` end to end: a run's model loaded, scored on CIFAR-10-C, the reports written.

`evaluate(spec)` takes an `EvaluationSpec` (what to score, on which cells,
where the reports go) built once, by the command line from its flags or by a
caller: it finds the run's config and meta-validation record, applies the leak
guard before anything slow, refuses to replace a fuller report, loads the
model (a run, a checkpoint or a SavedModel) and the clean test set, scores
them (`robust_ssl.robustness.scoring`), compares with a baseline's results
and writes the reports (`robust_ssl.robustness.reports`). `evaluate_run` is
the same with the spec's fields as keywords.

The parts:

  loading.py      the model as a predictor, the CIFAR-10-C sources and blocks
  leak_guard.py   which test images the meta loss saw, and so are not scored
  metrics.py      per cell, over cells (CE/mCE), against a baseline
  progress.py     the progress over the cells
  scoring.py      the scoring loop (`evaluate_robustness`)
  partial.py      the finished cells, kept as they finish (a killed
                  evaluation, run again, scores only the others)

The names callers used from this module before it was cut (`leak_guard`,
`summarize`, `make_predictor`, `evaluate_robustness`, …) are importable from
here still.
"""

import dataclasses
import os

import numpy as np

from robust_ssl import rundir
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError
from robust_ssl.robustness import partial, reports
from robust_ssl.robustness.leak_guard import assumption, is_cifar10_test, leak_guard
from robust_ssl.robustness.loading import GENERATE, even_subset, load_saved_model, make_predictor, source_kind
from robust_ssl.robustness.metrics import adaptation_summary as adaptation_summary
from robust_ssl.robustness.metrics import cell_metrics as cell_metrics
from robust_ssl.robustness.metrics import compare, summarize
from robust_ssl.robustness.metrics import expected_calibration_error as expected_calibration_error
from robust_ssl.robustness.progress import CellProgress as CellProgress
from robust_ssl.robustness.scoring import evaluate_robustness, make_scorers

# The name of `loading.even_subset` before the module was cut.
_subset = even_subset


@dataclasses.dataclass(frozen=True)
class EvaluationSpec:
    """What `robust-ssl evaluate` scores, on which cells, and where the reports go.

    Attributes:
      source: "tfds", "generate" or a directory of official .npy files
        (--cifar10c).
      workdir: the run's workdir (model.keras or newest checkpoint; config.json
        and meta_validation.json).
      checkpoint: a .keras file instead of the workdir's model (its run
        directory is still read for config and meta-validation).
      saved_model: a SavedModel directory to score instead of a .keras model.
      output_dir: where reports go (default <run>/robustness).
      baseline: results file/directory of another run to compare with.
      corruptions, severities: the cells to score.
      max_images: images per cell (None = all).
      batch_size: forward-pass batch size.
      seed: seed of generated corruptions.
      include_meta_images: score the meta-validation images too (refused when
        the run's meta loss used them).
      tfds_data_dir: tfds data directory for source "tfds".
      progress: show the progress over the cells.
      adapt: test-time adaptation modes to compare, or None.
      adapt_settings: `adaptation.Settings` of those modes (None: defaults).
      overwrite: replace a report in `output_dir` that has cells (or images
        per cell) this evaluation would not score, or discard the finished
        cells of an interrupted evaluation with other settings; without it
        either is refused before anything is scored
        (`check_replaced_report`, `partial.PartialResults`).
    """

    source: str
    workdir: str | None = None
    checkpoint: str | None = None
    saved_model: str | None = None
    output_dir: str | None = None
    baseline: str | None = None
    corruptions: tuple = cifar10c.ALL_CORRUPTIONS
    severities: tuple = cifar10c.SEVERITIES
    max_images: int | None = None
    batch_size: int = 500
    seed: int = 0
    include_meta_images: bool = False
    tfds_data_dir: str | None = None
    progress: bool = True
    adapt: tuple | None = None
    adapt_settings: object = None
    overwrite: bool = False


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


def evaluate(spec, log=print):
    """What `robust-ssl evaluate` does: load a run's model, score it, write reports.

    Every finished cell is kept in <output_dir>/robustness_partial.json as it
    finishes (`partial.PartialResults`): run again after a kill, the same
    evaluation reuses those cells, scores the others and writes the reports
    an uninterrupted one writes; the file goes once the reports are written.

    Args:
      spec: an `EvaluationSpec`.
      log: function for one-line notes (warnings, outputs).

    Returns:
      (results dict, dict of written paths).

    Raises:
      UserError: for any missing input or a refused leak.
    """
    if not (spec.workdir or spec.checkpoint or spec.saved_model):
        raise UserError("give --workdir=<run>, --checkpoint=<file.keras> or --saved_model=<dir>")
    if spec.workdir and not os.path.isdir(spec.workdir):
        raise UserError(f"workdir {spec.workdir} does not exist")
    kind = source_kind(spec.source)
    run_dir = rundir.run_dir_of(spec.workdir, spec.checkpoint)
    config = rundir.read_config(run_dir)
    record = rundir.read_meta_validation(run_dir)
    if record is None:
        log(f"note: {assumption(run_dir, spec.source, spec.include_meta_images, config)}")
    # Refuse a leak before the (slow) model and data loading.
    leak_guard(record, spec.source, spec.include_meta_images, config.data if config is not None else None)
    baseline_result = load_results(spec.baseline) if spec.baseline else None  # fail early on a bad path
    output_dir = spec.output_dir
    if not output_dir:
        if not run_dir:
            raise UserError("pass --output_dir (no run directory to write into)")
        output_dir = os.path.join(run_dir, rundir.ROBUSTNESS)
    if not spec.overwrite:
        check_replaced_report(output_dir, spec.corruptions, spec.severities, spec.max_images)

    model_name = spec.saved_model or rundir.model_path(spec.checkpoint or spec.workdir)
    # Before the model loads: partial results of other settings are refused at once.
    cells = partial.PartialResults(
        output_dir, _cell_identity(spec, model_name, record, config), spec.overwrite, log
    )
    if spec.saved_model:
        model = make_predictor(load_saved_model(spec.saved_model), spec.batch_size)
    else:
        model = rundir.load_model(model_name, robust_ssl_only=False)
    if spec.adapt is not None:
        # Refuse a mode the model cannot serve, early.
        make_scorers(model, spec.batch_size, spec.adapt, spec.adapt_settings)

    clean = None
    if config is not None:
        try:
            clean = _clean_test_set(config)
        except UserError as e:
            if kind == GENERATE:
                raise
            log(f"warning: no clean accuracy ({e})")
        if clean is not None and kind != GENERATE and not is_cifar10_test(config.data):
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
        spec.source,
        clean=clean,
        corruptions=spec.corruptions,
        severities=spec.severities,
        max_images=spec.max_images,
        batch_size=spec.batch_size,
        seed=spec.seed,
        meta_validation=record,
        include_meta_images=spec.include_meta_images,
        data_config=config.data if config is not None else None,
        tfds_data_dir=spec.tfds_data_dir,
        progress=spec.progress,
        adapt=spec.adapt,
        adapt_settings=spec.adapt_settings,
        partial=cells,
        log=log,
    )
    result["settings"]["model"] = os.path.abspath(model_name)
    if spec.baseline:
        result["settings"]["baseline"] = os.path.abspath(spec.baseline)
    name = _label(run_dir or spec.saved_model)
    base_name = _label(spec.baseline) if spec.baseline else "baseline"
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
    cells.finish()
    return result, paths


def _cell_identity(spec, model_name, record, config):
    """`partial.identity` of this evaluation: the settings that define a cell's score."""
    adapt_settings = None
    if spec.adapt is not None:
        from robust_ssl.robustness import adaptation

        adapt_settings = dataclasses.asdict(spec.adapt_settings or adaptation.Settings())
    return partial.identity(
        model_name,
        spec.source,
        spec.max_images,
        spec.seed,
        spec.batch_size,
        adapt_settings,
        record,
        spec.include_meta_images,
        config.data.to_dict() if config is not None else None,
    )


def evaluate_run(cifar10c_source, log=print, **fields):
    """`evaluate` with the spec's fields as keywords.

    Args:
      cifar10c_source: the spec's `source`: "tfds", "generate" or a directory
        of official .npy files.
      log: function for one-line notes (warnings, outputs).
      **fields: the other fields of `EvaluationSpec` (workdir, checkpoint,
        corruptions, max_images, adapt, overwrite, …).

    Returns:
      (results dict, dict of written paths).

    Raises:
      UserError: for any missing input or a refused leak.
    """
    return evaluate(EvaluationSpec(cifar10c_source, **fields), log)
