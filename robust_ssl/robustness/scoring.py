"""The scoring loop: a classifier scored on CIFAR-10-C (real or generated), cell by cell.

`evaluate_robustness(model, source, …)` scores a model on every chosen
(corruption, severity) cell of

- real CIFAR-10-C from tfds (`source="tfds"`) or the official `.npy`
  directory (`source=<directory>`), or
- corruptions generated on the fly from a clean test set
  (`source="generate"`, `robust_ssl.data.corruptions`), which works offline
  and for any 32x32 dataset;

with the leak guard's exclusions (`robust_ssl.robustness.leak_guard`), and
optionally with several test-time adaptation modes side by side
(`robust_ssl.robustness.adaptation`). The numbers are those of
`robust_ssl.robustness.metrics`.
"""

import dataclasses
import os
import time

import numpy as np

from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError
from robust_ssl.robustness.leak_guard import leak_guard
from robust_ssl.robustness.loading import (
    GENERATE,
    NPY,
    check_inputs,
    corrupt,
    even_subset,
    load_real_block,
    make_predictor,
    softmax,
    source_kind,
)
from robust_ssl.robustness.metrics import adaptation_summary, cell_metrics, summarize
from robust_ssl.robustness.partial import CLEAN
from robust_ssl.robustness.progress import CellProgress


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
    partial=None,
    log=print,
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
      partial: a `partial.PartialResults`: its stored cells (and clean
        sets) are reused instead of scored, and every cell scored is stored
        as it finishes, so that a killed evaluation resumes (None: neither).
      log: function for one-line notes (how many cells were reused).

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
    kind = source_kind(source)
    exclusion = leak_guard(meta_validation, source, include_meta_images, data_config)
    scorers = make_scorers(model, batch_size, adapt, adapt_settings)
    check_inputs(model, kind, source, corruptions, clean)  # every file, before anything is scored
    if clean is not None:
        clean_images, clean_labels = (np.asarray(a) for a in clean)
        clean_images = clean_images[exclusion.clean_skip :]
        clean_labels = clean_labels[exclusion.clean_skip :]
        keep = even_subset(len(clean_images), max_images)
        clean_images, clean_labels = clean_images[keep], clean_labels[keep]
        if len(clean_images) == 0:
            raise UserError("no clean test images left to score")
    elif kind == GENERATE:
        raise UserError("source 'generate' needs the clean test set (clean=(images, labels))")

    cells = [(c, s) for c in corruptions for s in severities]
    if partial is not None:
        _note_reused(partial, scorers, cells, clean is not None, log)
    bar = CellProgress(len(cells) + (clean is not None)) if progress else None
    scored = {mode: {"cells": [], "clean": None, "seconds": 0.0, "images": 0} for mode in scorers}

    def score(load, corruption, severity):
        """{mode: metrics} of one cell; `load()` gives its (images, labels), called only if needed."""
        out, loaded, reused = {}, None, True
        for mode, predict in scorers.items():
            stored = partial.get(mode, corruption, severity) if partial is not None else None
            if stored is None:
                reused = False
                if loaded is None:
                    loaded = load()
                images, labels = loaded
                start = time.perf_counter()
                probabilities = predict(images)
                stored = {
                    "metrics": cell_metrics(probabilities, labels),
                    "seconds": time.perf_counter() - start,
                    "images": len(images),
                }
                if partial is not None:
                    partial.put(mode, corruption, severity, **stored)
            scored[mode]["seconds"] += stored["seconds"]
            scored[mode]["images"] += stored["images"]
            out[mode] = stored["metrics"]
        return out, reused

    def corrupted(corruption, severity):
        if kind == GENERATE:
            return corrupt(clean_images, corruption, severity, seed), clean_labels
        images, labels = load_real_block(kind, source, corruption, severity, tfds_data_dir)
        images, labels = cifar10c.split_block(images, labels, "test", exclusion.per_block)
        if not len(images):
            raise UserError(
                f"no {corruption} severity {severity} images are left after leaving out the first "
                f"{exclusion.per_block} of the block ({exclusion.note.strip('; ')}); "
                f"pass --include_meta_images if the model's meta loss never saw them"
            )
        keep = even_subset(len(images), max_images)
        return images[keep], labels[keep]

    if clean is not None:
        out, reused = score(lambda: (clean_images, clean_labels), CLEAN, 0)
        for mode, metrics in out.items():
            scored[mode]["clean"] = metrics
        if bar is not None:
            bar.add_clean({mode: entry["clean"]["accuracy"] for mode, entry in scored.items()}, reused)
    for index, (corruption, severity) in enumerate(cells):
        out, reused = score(lambda c=corruption, s=severity: corrupted(c, s), corruption, severity)
        for mode, metrics in out.items():
            scored[mode]["cells"].append({"corruption": corruption, "severity": int(severity), **metrics})
        if bar is not None:
            last = index + 1 == len(cells) or cells[index + 1][0] != corruption
            accuracies = {mode: entry["cells"][-1]["accuracy"] for mode, entry in scored.items()}
            bar.add_cell(corruption, severity, accuracies, last, reused)
    if bar is not None:
        bar.finish()
    first = next(iter(scored.values()))
    result = {
        "cells": first["cells"],
        "clean": first["clean"],
        "settings": {
            "source": source if kind != NPY else os.path.abspath(source),
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


def _note_reused(partial, scorers, cells, with_clean, log):
    """One line saying how many cells an interrupted evaluation had scored already."""
    keys = [(mode, c, s) for c, s in cells for mode in scorers]
    found = partial.count(keys)
    clean = with_clean and partial.count([(mode, CLEAN, 0) for mode in scorers]) == len(scorers)
    if not found and not clean:
        return
    unit = "cells" if len(scorers) == 1 else f"cells (corruption x severity x {len(scorers)} modes)"
    log(
        f"resuming an interrupted evaluation: {found} of {len(keys)} {unit} reused from {partial.path}"
        f"{' with the clean set' if clean else ''}; scoring the other {len(keys) - found}"
    )


def make_scorers(model, batch_size, adapt, adapt_settings):
    """{mode: images -> probabilities}; {"none": the model's predictor} without adaptation.

    Args:
      model: as `evaluate_robustness` takes it.
      batch_size: forward-pass batch size of the predictor.
      adapt: None, or test-time adaptation modes (a list or a comma list).
      adapt_settings: `adaptation.Settings` or None (the defaults).

    Returns:
      dict mode -> predict(images uint8) -> probabilities.

    Raises:
      UserError: an unknown mode, or adaptation of a model that is not a
        `RobustSSLModel`.
    """
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
            return softmax(adaptation.predict_cell(adapter, images, settings.batch_size))

        scorers[mode] = predict
    return scorers
