"""A robustness study: several recipes under one budget, scored on CIFAR-10-C.

`run_study(entries, workdir, overrides, seeds)` trains every entry (a packaged
config or a file, optionally with its own overrides) with the same overrides
for all — network, data, epochs, batch — and each seed, evaluates each run on
a CIFAR-10-C set generated once from the study's clean test images (the 19
corruptions × 5 severities), and writes one table (`study.md`, `study.csv`,
`study.json`) and two figures (`study.png`, the accuracies; `lambdas.png`, the
λ trajectories of every recipe that learned λ, all seeds):

the weighting method that learned λ (results.json's "weighting", – where λ
is fixed or there are no tasks); clean accuracy; mean accuracy over the 15
benchmark corruptions and over all 19; mCE (sum of errors over the 15
benchmark corruptions and 5 severities) relative to the first entry, as
Hendrycks & Dietterich normalise; mean accuracy per corruption family (noise, blur, weather, digital, and the 4
extra); λ at the end; the final meta loss of AutoML runs; wall time; and with
several seeds the spread (standard deviation) of each figure.

Resumable after a kill at any moment: a run with results.json is not
retrained, nor rescored once its robustness reports are whole (no
robustness_partial.json left); an interrupted run resumes from its
checkpoint, an interrupted scoring from its finished cells; the generated
CIFAR-10-C set is written once (each file atomically), and the table and
figures are written again from the runs' files.

An entry is `label=config:key=value,key=value` (label and overrides optional),
e.g. `fixed4=automl4:automl.enabled=False` or `automl4_lr=automl4:automl.alpha=lr`.

Here the runs are trained, scored and aggregated; the entries and their
configs are `robust_ssl.study_entries`', the table and figures
`robust_ssl.study_tables`' (their names are importable from here too).
"""

import os
import time

import numpy as np

from robust_ssl import config_utils, killpoints, rundir
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError
from robust_ssl.study_entries import Entry as Entry
from robust_ssl.study_entries import align_training_images as align_training_images
from robust_ssl.study_entries import apply_overrides as apply_overrides
from robust_ssl.study_entries import entry_config as entry_config
from robust_ssl.study_entries import parse_entry as parse_entry
from robust_ssl.study_entries import parse_overrides as parse_overrides
from robust_ssl.study_entries import parse_value as parse_value
from robust_ssl.study_entries import point_meta_validation_at as point_meta_validation_at
from robust_ssl.study_entries import recorded_holdouts as recorded_holdouts
from robust_ssl.study_tables import FAMILIES as FAMILIES
from robust_ssl.study_tables import LAMBDA_FIGURE as LAMBDA_FIGURE
from robust_ssl.study_tables import NO_METHOD as NO_METHOD
from robust_ssl.study_tables import difference as difference
from robust_ssl.study_tables import lambda_runs as lambda_runs
from robust_ssl.study_tables import markdown as markdown
from robust_ssl.study_tables import plot as plot
from robust_ssl.study_tables import plot_lambdas as plot_lambdas
from robust_ssl.study_tables import write_csv as write_csv

CORRUPTED_DIR = "cifar10c"
TABLE_FILES = ("study.md", "study.csv", "study.json", "study.png")


def _family_means(cells):
    means = {}
    for family, names in FAMILIES.items():
        values = [c["accuracy"] for c in cells if c["corruption"] in names]
        means[family] = float(np.mean(values)) if values else None
    return means


def _last_meta_loss(run):
    path = os.path.join(run, rundir.METRICS)
    if not os.path.exists(path):
        return None
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["meta_loss"]) for r in rows if r.get("meta_loss") not in (None, "", "0.0")]
    return values[-1] if values else None


def ensure_corrupted_set(workdir, config, seed=0, log=print):
    """Writes the study's CIFAR-10-C set from the clean test set of `config` (once).

    Returns:
      The directory of `<corruption>.npy` files and `labels.npy`.
    """
    from robust_ssl.data import corruptions, datasets, pipeline, splits

    directory = os.path.join(workdir, CORRUPTED_DIR)
    if os.path.exists(os.path.join(directory, "labels.npy")) and all(
        os.path.exists(os.path.join(directory, f"{c}.npy")) for c in cifar10c.ALL_CORRUPTIONS
    ):
        return directory
    data = datasets.load_data(config.data)
    images, labels = pipeline.to_arrays(data.test)
    if images.shape[1:3] != (32, 32):
        raise UserError("the study's CIFAR-10-C corruptions are defined for 32x32 images")
    order = splits.stratified_shuffle(labels, seed=seed)
    log(f"writing CIFAR-10-C of {len(images)} test images to {directory} (once)")
    corruptions.write_corrupted_set(
        images[order], labels[order], directory, cifar10c.ALL_CORRUPTIONS, seed=seed
    )
    return directory


def run_one(entry, config, run, corrupted, log=print):
    """Trains (or resumes) one run and scores it; returns its row of the table."""
    import keras

    from robust_ssl import train
    from robust_ssl.robustness import evaluation, partial

    results_path = os.path.join(run, rundir.RESULTS)
    robustness_dir = os.path.join(run, rundir.ROBUSTNESS)
    robustness_path = os.path.join(robustness_dir, rundir.ROBUSTNESS_JSON)
    if not os.path.exists(results_path):  # written last: a run without it trains (or resumes)
        log(f"[{entry.label}] training into {run}")
        train.train_and_evaluate(config, run)
        keras.backend.clear_session()
    results = rundir.read_json(results_path)
    if not os.path.exists(robustness_path) or partial.unfinished(robustness_dir):
        log(f"[{entry.label}] scoring on {corrupted}")

        def note(line):
            # The evaluation's notes repeat for every run; only how much of it was reused is news.
            if line.startswith("resuming"):
                log(f"[{entry.label}] {line}")

        evaluation.evaluate_run(corrupted, workdir=run, progress=False, log=note)
        keras.backend.clear_session()
    robustness = evaluation.load_results(robustness_path)
    summary = robustness["summary"]
    return {
        "label": entry.label,
        "method": rundir.weighting_method(run) or NO_METHOD,
        "config": entry.config,
        "seed": int(config.seed),
        "run": run,
        "clean_accuracy": summary["clean_accuracy"],
        "mean_accuracy_benchmark": summary["mean_accuracy_benchmark"],
        "mean_accuracy_all": summary["mean_accuracy_all"],
        "errors_benchmark": float(
            np.sum(
                [c["error"] for c in robustness["cells"] if c["corruption"] in cifar10c.BENCHMARK_CORRUPTIONS]
            )
        ),
        "families": _family_means(robustness["cells"]),
        "lambdas": results.get("lambdas", {}),
        "num_train": results.get("num_train"),
        "meta_loss": _last_meta_loss(run),
        "wall_time_s": results.get("wall_time_s"),
    }


def _aggregate(rows, reference_errors):
    """One table row per label: means over seeds, spread (std) where several."""

    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return float(np.mean(values)), (float(np.std(values)) if len(values) > 1 else None)

    table = []
    for label in dict.fromkeys(r["label"] for r in rows):
        group = [r for r in rows if r["label"] == label]
        out = {
            "label": label,
            # Every seed of a recipe learns λ the same way; shown all the same should one differ.
            "method": " / ".join(dict.fromkeys(r.get("method", NO_METHOD) for r in group)),
            "config": group[0]["config"],
            "seeds": [r["seed"] for r in group],
        }
        out["num_train"] = sorted({r.get("num_train") for r in group if r.get("num_train") is not None})
        for key in (
            "clean_accuracy",
            "mean_accuracy_benchmark",
            "mean_accuracy_all",
            "wall_time_s",
            "meta_loss",
        ):
            out[key], out[f"{key}_std"] = stat(r[key] for r in group)
        out["mce_relative"], out["mce_relative_std"] = stat(
            r["errors_benchmark"] / reference_errors for r in group
        )
        out["families"] = {f: stat(r["families"][f] for r in group)[0] for f in FAMILIES}
        names = list(group[0]["lambdas"])
        out["lambdas"] = {n: stat(r["lambdas"].get(n) for r in group)[0] for n in names}
        table.append(out)
    return table


def run_study(entries, workdir, overrides=None, seeds=(0,), title=None, log=print, same_train_images=True):
    """Trains, scores and tabulates every entry × seed (see the module docstring).

    Args:
      entries: `Entry` objects or their "label=config:k=v,…" strings.
      workdir: the study's directory (runs in <workdir>/<label>/seed_<s>).
      overrides: {"key": value} applied to every entry (the common budget).
      seeds: the seeds of every entry.
      title: the table's and figure's title.
      log: function for progress lines.
      same_train_images: every recipe trains on the images the recipes with
        an AutoML hold-out train on (`align_training_images`).

    Returns:
      (table rows, dict of written paths).

    Raises:
      UserError: a bad entry, override or config, before anything trains.
    """
    entries = [e if isinstance(e, Entry) else parse_entry(e) for e in entries]
    if not entries:
        raise UserError("a study needs at least one config")
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise UserError(f"study labels must differ; got {labels}")
    overrides = dict(overrides or {})
    planned = []
    for entry in entries:  # every config is built and checked before anything runs
        for seed in seeds:
            config = entry_config(entry, overrides, seed)
            planned.append((entry, config, os.path.join(workdir, entry.label, f"seed_{seed}")))
    configs = [config for _, config, _ in planned]
    if same_train_images:
        align_training_images(configs, recorded_holdouts(workdir, [run for _, _, run in planned]))
    point_meta_validation_at(configs, os.path.join(workdir, CORRUPTED_DIR))
    for config in configs:
        config_utils.validate(config)
    os.makedirs(workdir, exist_ok=True)
    # A study killed inside a write left a temporary copy beside a whole file.
    rundir.remove_stale_temporaries(workdir)
    rundir.remove_stale_temporaries(os.path.join(workdir, CORRUPTED_DIR))
    start = time.time()
    corrupted = ensure_corrupted_set(workdir, planned[0][1], log=log)
    rows = []
    for entry, config, run in planned:
        rows.append(run_one(entry, config, run, corrupted, log))
        killpoints.reached("study.run")
    reference = [r["errors_benchmark"] for r in rows if r["label"] == entries[0].label]
    table = _aggregate(rows, float(np.mean(reference)))
    title = title or "Robustness study"
    paths = {name: os.path.join(workdir, name) for name in TABLE_FILES}
    rundir.write_text(paths["study.md"], markdown(table, title))
    rundir.write_json(
        paths["study.json"], {"title": title, "overrides": overrides, "table": table, "runs": rows}
    )
    write_csv(table, paths["study.csv"])
    plot(table, paths["study.png"], title)
    lambdas = plot_lambdas(rows, os.path.join(workdir, LAMBDA_FIGURE), title, log)
    if lambdas:
        paths[LAMBDA_FIGURE] = lambdas
    log(f"study of {len(rows)} run(s) done in {time.time() - start:.0f} s this session")
    return table, paths
