"""An evaluation's finished cells, kept as they finish so that a killed evaluation resumes.

`robust-ssl evaluate` scores up to 95 CIFAR-10-C cells (corruption ×
severity), each with every test-time adaptation mode: minutes to hours on a
CPU. `PartialResults` keeps each finished (mode, corruption, severity) cell,
and each mode's clean accuracy, in <output_dir>/robustness_partial.json,
rewritten atomically (`rundir.write_text`: a temporary file, synced, renamed)
after every cell, so that a kill at any moment leaves the previous version or
the new one, never half of one. The same command run again reuses those cells
and scores only the others; the file is removed once the reports are written.

Cells are reused only when the settings that define a cell's score are the
same (`identity`): the model's bytes (a hash of the .keras file or the
SavedModel directory), the CIFAR-10-C source, images per cell, the seed of
generated corruptions, the forward-pass batch size, the adaptation settings,
the leak guard's inputs (the meta-validation record, --include_meta_images)
and the run's data settings (its clean test set). Other settings are refused
in one line before anything is scored (`--overwrite` starts afresh).

Each cell is scored from its own images with the adaptation reset before it
(`adaptation.predict_cell`), so a reused cell is the number an uninterrupted
evaluation computes, and the report is the same.
"""

import contextlib
import hashlib
import json
import os

from robust_ssl import killpoints, rundir
from robust_ssl.errors import UserError

PARTIAL = "robustness_partial.json"
VERSION = 1
CLEAN = "clean"  # the corruption name of a mode's clean-set entry
_CHUNK = 1 << 20


def model_digest(path):
    """sha256 of a model file, or of a directory's files (names and contents, sorted).

    Args:
      path: a .keras file or a SavedModel directory.

    Returns:
      The hex digest.
    """
    digest = hashlib.sha256()
    if os.path.isdir(path):
        files = sorted(
            os.path.relpath(os.path.join(root, name), path)
            for root, _, names in os.walk(path)
            for name in names
        )
    else:
        files, path = [os.path.basename(path)], os.path.dirname(os.path.abspath(path))
    for name in files:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(path, name), "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def identity(
    model_path,
    source,
    max_images,
    seed,
    batch_size,
    adapt_settings,
    meta_validation,
    include_meta_images,
    data_config,
):
    """The settings that define a cell's score, as a JSON-ready dict.

    Args:
      model_path: the scored .keras file or SavedModel directory (hashed).
      source: the CIFAR-10-C source ("tfds", "generate" or a directory).
      max_images: images per cell (None = all).
      seed: seed of generated corruptions.
      batch_size: forward-pass batch size.
      adapt_settings: a dict of `adaptation.Settings` when adapting, else None.
      meta_validation: the run's meta_validation.json dict or None.
      include_meta_images: whether the meta-validation images are scored.
      data_config: the run's config.data as a dict, or None.

    Returns:
      A dict that `PartialResults` compares with the stored one.
    """
    if source not in ("tfds", "generate"):
        source = os.path.abspath(source)
    settings = {
        "model_sha256": model_digest(model_path),
        "source": source,
        "max_images": int(max_images) if max_images else None,
        "seed": int(seed),
        "batch_size": int(batch_size),
        "adaptation": adapt_settings,
        "meta_validation": meta_validation,
        "include_meta_images": bool(include_meta_images),
        "data": data_config,
    }
    # As it reads back from the file (tuples become lists), so that it compares.
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def unfinished(output_dir):
    """Whether `output_dir` holds the partial results of an evaluation that did not end."""
    return os.path.isfile(os.path.join(output_dir, PARTIAL))


def _differences(old, new):
    """Names of the settings that differ, the model's as "model"."""
    keys = sorted(set(old) | set(new))
    return [("model" if k == "model_sha256" else k) for k in keys if old.get(k) != new.get(k)]


class PartialResults:
    """The finished cells of one evaluation, in <output_dir>/robustness_partial.json.

    Args:
      output_dir: the evaluation's output directory (created when a cell is written).
      settings: `identity(...)` of this evaluation.
      overwrite: discard partial results of other settings (else refused).
      log: function for one-line notes.

    Raises:
      UserError: the directory holds partial results of other settings and
        `overwrite` is off.
    """

    def __init__(self, output_dir, settings, overwrite=False, log=print):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, PARTIAL)
        self.settings = settings
        self.entries = {}  # (mode, corruption, severity) -> {"metrics", "seconds", "images"}
        self.reused = 0
        # A kill inside a write leaves a temporary copy (the file itself is whole).
        rundir.remove_stale_temporaries(output_dir)
        if not os.path.isfile(self.path):
            return
        try:
            with open(self.path) as f:
                stored = json.load(f)
            old_settings, cells = stored["settings"], stored["cells"]
            if stored.get("version") != VERSION:
                raise ValueError(f"version {stored.get('version')}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            # Written atomically, so only a hand or a disk damages it: score again.
            log(f"note: {self.path} does not read ({type(e).__name__}: {e}); scoring every cell again")
            return
        changed = _differences(old_settings, settings)
        if changed:
            if overwrite:
                log(f"note: {self.path} holds {len(cells)} cells scored with other settings; starting afresh")
                return
            raise UserError(
                f"{output_dir} holds {len(cells)} finished cells of an evaluation with other settings "
                f"({', '.join(changed)}): run the same command to finish it, pass --output_dir=<another "
                f"folder>, or --overwrite to start afresh"
            )
        for cell in cells:
            key = (cell["mode"], cell["corruption"], int(cell["severity"]))
            self.entries[key] = {k: cell[k] for k in ("metrics", "seconds", "images")}

    def get(self, mode, corruption, severity=0):
        """The stored entry of a cell ({"metrics", "seconds", "images"}), or None.

        Args:
          mode: the adaptation mode ("none" without adaptation).
          corruption: the corruption's name, or `CLEAN` for the clean set.
          severity: its severity (0 for the clean set).
        """
        entry = self.entries.get((mode, corruption, int(severity)))
        if entry is not None:
            self.reused += corruption != CLEAN
        return entry

    def count(self, keys):
        """How many of the (mode, corruption, severity) `keys` are stored."""
        return sum((m, c, int(s)) in self.entries for m, c, s in keys)

    def put(self, mode, corruption, severity, metrics, seconds, images):
        """Stores a finished cell and rewrites the file atomically.

        Args:
          mode, corruption, severity: the cell (see `get`).
          metrics: its `metrics.cell_metrics` dict.
          seconds: time its scoring took.
          images: images scored.
        """
        self.entries[(mode, corruption, int(severity))] = {
            "metrics": metrics,
            "seconds": float(seconds),
            "images": int(images),
        }
        cells = [{"mode": m, "corruption": c, "severity": s, **e} for (m, c, s), e in self.entries.items()]
        # Plain json (NaN kept as NaN): a reused cell must read back exactly as it was scored.
        text = json.dumps({"version": VERSION, "settings": self.settings, "cells": cells}, indent=1)
        os.makedirs(self.output_dir, exist_ok=True)
        with rundir.atomic_write(self.path) as f:
            f.write(text)
            f.flush()
            killpoints.reached("evaluate.cell_write")
        killpoints.reached("evaluate.cell")

    def finish(self):
        """Removes the file: the reports hold every cell now."""
        killpoints.reached("evaluate.reports")
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
