"""A study's table and figures: markdown, CSV, the accuracy bars and the λ trajectories.

Written by `robust_ssl.study.run_study` from the table rows it aggregates
(one per recipe, means and spreads over seeds) and the rows of its runs. The
names are importable from `robust_ssl.study` too.
"""

import os

import numpy as np

from robust_ssl import rundir
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
# λ trajectories of the recipes with learned λ (written when there is one).
LAMBDA_FIGURE = "lambdas.png"
# The method of a recipe without learned λ (fixed λ, or no tasks).
NO_METHOD = "–"


def _pct(value, std=None):
    if value is None:
        return "–"
    return f"{100 * value:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def difference(row, reference, key="mean_accuracy_benchmark"):
    """(row − reference) of `key` and whether it is within the spread over seeds.

    Within the spread: |difference| ≤ std(row) + std(reference), the
    standard deviations over seeds (None with one seed: no spread known).

    Args:
      row: a table row (`robust_ssl.study.run_study`'s aggregate).
      reference: the row it is compared with (the first recipe's).
      key: the figure compared; its spread is `<key>_std`.

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
    """The study table in markdown.

    Args:
      table: the table rows, one per recipe; the first is the reference of
        Δ mean 15 and mCE.
      title: the table's heading.

    Returns:
      The markdown text, with a legend of the columns.
    """
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
    """Grouped bars: clean, mean over 15 and over 19 corruptions, per family, per recipe.

    Below them, each recipe minus the first, in accuracy points.

    Args:
      table: the table rows, one per recipe.
      path: PNG file to write.
      title: the figure's title.

    Returns:
      The path written.
    """
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


def write_csv(table, path):
    """Writes the study table as CSV (study.csv): one line per recipe, atomically.

    Args:
      table: the table rows, one per recipe.
      path: the CSV file to write.

    Returns:
      The path written.
    """
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
    return rundir.write_text(path, "\n".join(lines) + "\n")
