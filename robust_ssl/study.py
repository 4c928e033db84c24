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
"""

import ast
import dataclasses
import os
import time

import numpy as np

from robust_ssl import config_utils, killpoints, rundir
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError

# Hendrycks & Dietterich's four families of the 15 benchmark corruptions, and
# the 4 extra ones.
FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": cifar10c.EXTRA_CORRUPTIONS,
}
CORRUPTED_DIR = "cifar10c"
TABLE_FILES = ("study.md", "study.csv", "study.json", "study.png")
# λ trajectories of the recipes with learned λ (written when there is one).
LAMBDA_FIGURE = "lambdas.png"
# The method of a recipe without learned λ (fixed λ, or no tasks).
NO_METHOD = "–"


@dataclasses.dataclass
class Entry:
    """One recipe of the study: a label, a config name or file, its own overrides."""

    label: str
    config: str
    overrides: dict


def parse_value(text):
    """A Python literal where the text is one (1, 0.5, True, (64, 64)), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items):
    """{"a.b": value} from "a.b=value" strings.

    Raises:
      UserError: an item without "=".
    """
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"an override must be key=value; got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_entry(text):
    """`Entry` from "label=config:key=value,key=value" (label and overrides optional).

    Raises:
      UserError: an empty config.
    """
    label, sep, rest = text.partition("=")
    if not sep or ":" in label or "/" in label:  # no label: the whole text is config[:overrides]
        label, rest = None, text
    config, _, overrides = rest.partition(":")
    if not config.strip():
        raise UserError(f"study entry {text!r} names no config")
    items = [item for item in overrides.split(",") if item.strip()] if overrides else []
    config = config.strip()
    return Entry(label or os.path.splitext(os.path.basename(config))[0], config, parse_overrides(items))


def apply_overrides(config, overrides):
    """Sets dotted keys of a ConfigDict, refusing unknown ones in one line."""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            if part not in node:
                raise UserError(f"unknown config key {key!r}")
            node = node[part]
        if leaf not in node:
            raise UserError(f"unknown config key {key!r}")
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        node[leaf] = value
    return config


def align_training_images(configs):
    """Makes every run of a study train on the same images (in place).

    Recipes that hold training images out for their meta loss (AutoML with a
    hold-out) train on the rest; every other recipe then leaves the same
    images out (`data.exclude_holdout`: the hold-out is a function of the
    seed and its size).

    Args:
      configs: the study's ConfigDicts.

    Raises:
      UserError: recipes hold out different numbers of images.
    """
    sizes = sorted({config_utils.training_holdout(c) for c in configs} - {0})
    if len(sizes) > 1:
        raise UserError(
            f"the study's recipes hold out different numbers of training images ({sizes}); "
            f"give them one automl.validation.holdout, or pass --nosame_train_images"
        )
    for config in configs:
        if sizes and not config_utils.training_holdout(config):
            config.data.exclude_holdout = sizes[0]


def point_meta_validation_at(configs, corrupted_dir):
    """Recipes whose meta loss reads CIFAR-10-C read the study's own set (in place).

    The study's set is written in a shuffled order, so "the first `per_block`
    images of every block" of another CIFAR-10-C copy (tfds, the official
    files) are other images than the first of this set's blocks; pointed at
    this set, the meta loss sees exactly the images the evaluation leaves out.
    """
    for config in configs:
        if config.automl.enabled and config.automl.validation.source == "cifar10c":
            config.automl.validation.cifar10c_source = "npy"
            config.automl.validation.cifar10c_dir = os.path.abspath(corrupted_dir)


def entry_config(entry, overrides, seed):
    """The ConfigDict of one run: the entry's config, the common overrides, its own, the seed."""
    from robust_ssl import configs

    config = configs.load(entry.config)
    apply_overrides(config, overrides)
    apply_overrides(config, entry.overrides)
    config.seed = int(seed)
    return config


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


def _pct(value, std=None):
    if value is None:
        return "–"
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def difference(row, reference, key="mean_accuracy_benchmark"):
    """(row − reference) of `key` and whether it is within the spread over seeds.

    Within the spread: |difference| ≤ std(row) + std(reference), the
    standard deviations over seeds (None with one seed: no spread known).

    Returns:
      (difference, within) with within True, False or None.
    """
    if row[key] is None or reference[key] is None:
        return None, None
    delta = row[key] - reference[key]
    stds = [row.get(f"{key}_std"), reference.get(f"{key}_std")]
    if any(v is None for v in stds):
        return delta, None
    return delta, abs(delta) <= sum(stds)


def _delta_text(delta, within):
    if delta is None:
        return "–"
    return f"{100 * delta:+.1f}" + (" (within spread)" if within else "")


def markdown(table, title="Robustness study"):
    """The study table in markdown."""
    families = list(FAMILIES)
    header = (
        [
            "recipe",
            "method",
            "seeds",
            "train images",
            "clean",
            "mean 15",
            "Δ mean 15",
            "mean 19",
            "mCE (rel.)",
        ]
        + families
        + ["λ at the end", "meta loss", "wall time"]
    )
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(table):
        lambdas = ", ".join(f"{k} {v:.3g}" for k, v in row["lambdas"].items()) or "–"
        meta = f"{row['meta_loss']:.3f}" if row["meta_loss"] is not None else "–"
        wall = f"{row['wall_time_s'] / 60:.1f} min" if row["wall_time_s"] else "–"
        counts = row.get("num_train") or []
        cells = [
            row["label"],
            row.get("method", NO_METHOD),
            str(len(row["seeds"])),
            " / ".join(f"{n:,}" for n in counts) or "–",
            _pct(row["clean_accuracy"], row["clean_accuracy_std"]),
            _pct(row["mean_accuracy_benchmark"], row["mean_accuracy_benchmark_std"]),
            _delta_text(*difference(row, table[0])) if i else "–",
            _pct(row["mean_accuracy_all"], row["mean_accuracy_all_std"]),
            _pct(row["mce_relative"], row["mce_relative_std"]),
            *(_pct(row["families"][f]) for f in families),
            lambdas,
            meta,
            wall,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "method: the weighting method that learned λ (`automl.method`), – where λ is fixed or there "
        "are no tasks; accuracies in %; train images: the training images each run saw; mean 15: over the 15 "
        "benchmark corruptions × 5 severities; Δ mean 15: minus the first recipe "
        f"({table[0]['label']}), in points, '(within spread)' where it is no larger than the sum of "
        "the two recipes' standard deviations over seeds; mean 19: with the 4 extra; mCE (rel.): "
        "summed error over the 15 benchmark corruptions relative to the first recipe; families: mean "
        "accuracy; ± : standard deviation over seeds.",
    ]
    return "\n".join(lines) + "\n"


def plot(table, path, title="Robustness study"):
    """Grouped bars: clean, mean over 15 and over 19 corruptions, per family, per recipe."""
    from robust_ssl import figures

    groups = [
        ("clean", "clean_accuracy"),
        ("mean 15", "mean_accuracy_benchmark"),
        ("mean 19", "mean_accuracy_all"),
        *((f, None) for f in FAMILIES),
    ]
    # Top: the accuracies. Bottom: each recipe minus the first, in points:
    # the differences between recipes are a few points on a 0-100 axis.
    fig = figures.new_figure((max(8, 1.4 * len(groups) + 0.3 * len(table) * len(groups) / 2), 7.5), dpi=120)
    ax, diff_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.8 / len(table)
    x = np.arange(len(groups))

    def value(row, name, key):
        v = row[key] if key else row["families"][name]
        return np.nan if v is None else 100 * v

    reference = [value(table[0], name, key) for name, key in groups]
    for i, row in enumerate(table):
        values = [value(row, name, key) for name, key in groups]
        errors = [100 * (row.get(f"{key}_std") or 0) if key else 0 for _, key in groups]
        offset = x + (i - (len(table) - 1) / 2) * width
        color = f"C{i % 10}"
        ax.bar(offset, values, width, yerr=errors, label=row["label"], capsize=2, color=color)
        if i:
            diff_ax.bar(offset, np.subtract(values, reference), width, color=color)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(table)), loc="lower right")
    diff_ax.axhline(0, color="black", linewidth=0.8)
    diff_ax.set_ylabel(f"points vs {table[0]['label']}")
    diff_ax.set_title(f"Difference from {table[0]['label']} (accuracy points)", fontsize=10)
    diff_ax.grid(axis="y", alpha=0.3)
    diff_ax.set_xticks(x, [name for name, _ in groups])
    fig.tight_layout()
    return figures.save_png(fig, path, dpi=120)


def lambda_runs(rows, log=print):
    """The runs of the recipes that learned λ, for `figures.plot_lambda_trajectories`.

    Args:
      rows: the study's rows, one per run (`run_one`), in table order.
      log: function for a line about each run left out (no lambdas.csv).

    Returns:
      {"<label> (<method>)": [run directories, one per seed]}, empty when no
      recipe learned λ.
    """
    runs = {}
    for row in rows:
        method = row.get("method", NO_METHOD)
        if method == NO_METHOD:
            continue
        if not os.path.isfile(os.path.join(row["run"], rundir.LAMBDAS)):
            log(f"[{row['label']}] {row['run']} holds no {rundir.LAMBDAS}: left out of {LAMBDA_FIGURE}")
            continue
        runs.setdefault(f"{row['label']} ({method})", []).append(row["run"])
    return runs


def plot_lambdas(rows, path, title="Robustness study", log=print):
    """λ trajectories of every recipe that learned λ, all seeds, one panel per recipe.

    The figure is an addition to the table: a λ file it cannot read is one
    logged line, not the study's failure.

    Args:
      rows: the study's rows, one per run (`run_one`), in table order.
      path: PNG file to write.
      title: the study's title (the figure's title names λ and it).
      log: function for progress lines.

    Returns:
      The path written, or None when no recipe learned λ (or the figure
      could not be drawn).
    """
    from robust_ssl import figures

    runs = lambda_runs(rows, log)
    if not runs:
        return None
    try:
        return figures.plot_lambda_trajectories(runs, path, title=f"λ of each task during training: {title}")
    except UserError as e:
        log(f"{LAMBDA_FIGURE} not written: {e}")
        return None


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
        align_training_images(configs)
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
    _write_csv(table, paths["study.csv"])
    plot(table, paths["study.png"], title)
    lambdas = plot_lambdas(rows, os.path.join(workdir, LAMBDA_FIGURE), title, log)
    if lambdas:
        paths[LAMBDA_FIGURE] = lambdas
    log(f"study of {len(rows)} run(s) done in {time.time() - start:.0f} s this session")
    return table, paths


def _write_csv(table, path):
    fields = ["label", "method", "config", "seeds", "num_train", "clean_accuracy", "mean_accuracy_benchmark"]
    fields += ["mean_accuracy_benchmark_std", "mean_accuracy_all"]
    fields += ["mce_relative", *(f"family_{f}" for f in FAMILIES), "lambdas", "meta_loss", "wall_time_s"]
    lines = [",".join(fields)]
    for row in table:
        values = [row["label"], row.get("method", NO_METHOD), row["config"], " ".join(map(str, row["seeds"]))]
        values += [" ".join(map(str, row.get("num_train") or []))]
        values += [
            row[k]
            for k in (
                "clean_accuracy",
                "mean_accuracy_benchmark",
                "mean_accuracy_benchmark_std",
                "mean_accuracy_all",
                "mce_relative",
            )
        ]
        values += [row["families"][f] for f in FAMILIES]
        values += [
            " ".join(f"{k}={v:.4g}" for k, v in row["lambdas"].items()),
            row["meta_loss"],
            row["wall_time_s"],
        ]
        lines.append(
            ",".join("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in values)
        )
    rundir.write_text(path, "\n".join(lines) + "\n")
