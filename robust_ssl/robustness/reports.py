"""The outputs of a robustness evaluation (`robust_ssl.robustness.evaluation`).

`write_reports(result, output_dir, comparison=…, baseline=…)` writes
  robustness.csv        one row per (corruption, severity) cell + a clean row
  robustness.json       cells, clean, summary, settings (and the comparison)
  robustness.md         accuracy and ECE tables (corruption x severity), summary
  heatmap.png           accuracy per corruption x severity
  comparison.png        mean accuracy per corruption: this run (vs the baseline)

Figures are drawn with matplotlib's object API on the Agg canvas, so nothing
touches pyplot's global state or needs a display.
"""

import csv
import json
import os

import numpy as np

from robust_ssl import figures, rundir
from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError

CLEAN = "clean"  # the corruption name of the clean row of robustness.csv
DPI = 110  # of the heat map and the bar chart


def _grid(result, key):
    """corruptions (rows, CIFAR-10-C order), severities (cols), values [rows, cols] (NaN = absent)."""
    cells = {(c["corruption"], c["severity"]): c.get(key) for c in result["cells"]}
    names = [n for n in cifar10c.ALL_CORRUPTIONS if any(k[0] == n for k in cells)]
    severities = sorted({k[1] for k in cells})
    values = np.full((len(names), len(severities)), np.nan)
    for i, name in enumerate(names):
        for j, s in enumerate(severities):
            v = cells.get((name, s))
            if v is not None:
                values[i, j] = v
    return names, severities, values


def image_counts(result):
    """How many images the cells and the clean set were scored on, in words.

    Returns:
      e.g. "400 images per cell, 2,000 clean" or "90–100 images per cell (each
      cell's count: num_images in robustness.csv), no clean set"; "" when the
      results do not say (a CSV of an earlier version).
    """
    counts = [int(c["num_images"]) for c in result["cells"] if c.get("num_images")]
    clean = (result.get("clean") or {}).get("num_images")
    if not counts and not clean:
        return ""
    if not counts:
        text = "? images per cell"
    elif min(counts) == max(counts):
        text = f"{counts[0]:,} image{'s' * (counts[0] != 1)} per cell"
    else:
        text = f"{min(counts):,}–{max(counts):,} images per cell (each cell's count: num_images in robustness.csv)"
    if clean:
        text += f", {int(clean):,} clean"
    elif result.get("clean") is None:
        text += ", no clean set"
    return text


def _pct(value):
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f}"


def markdown_table(result, comparison=None, title=None):
    """Markdown: summary lines, an accuracy table and an ECE table.

    Args:
      result: an `evaluate_robustness` results dict.
      comparison: optional `metrics.compare` dict (adds normalised and
        relative CE columns and mCE lines).
      title: optional heading.

    Returns:
      The markdown text (percentages with one decimal).
    """
    summary = result["summary"]
    names, severities, acc = _grid(result, "accuracy")
    _, _, ece = _grid(result, "ece")
    lines = [f"## {title}", ""] if title else []
    n_bench = sum(n in cifar10c.BENCHMARK_CORRUPTIONS for n in names)
    lines += [
        f"- clean accuracy: {_pct(summary['clean_accuracy'])}%",
        f"- mean accuracy, {n_bench} benchmark corruptions: {_pct(summary['mean_accuracy_benchmark'])}%"
        + ("" if summary["benchmark_complete"] else " (not all 15 × 5 cells)"),
        f"- mean accuracy, all {len(names)} corruptions: {_pct(summary['mean_accuracy_all'])}%"
        + ("" if summary["all_complete"] else " (not all 19 × 5 cells)"),
        f"- mCE (unnormalised mean error over the benchmark corruptions): {_pct(summary['mce'])}%",
        f"- mean ECE (15 bins): {_pct(summary['mean_ece'])}%",
    ]
    counts = image_counts(result)
    if counts:
        lines.append(f"- images scored: {counts}")
    if comparison:
        lines += [
            f"- mCE normalised by the baseline: {_pct(comparison['mce'])}%",
            f"- relative mCE vs the baseline: {_pct(comparison['relative_mce'])}%",
            f"- baseline: clean {_pct(comparison['baseline_clean_accuracy'])}%, mean accuracy (15) "
            f"{_pct(comparison['baseline_mean_accuracy_benchmark'])}%, (all) "
            f"{_pct(comparison['baseline_mean_accuracy_all'])}%",
        ]
    settings = result.get("settings") or {}
    if settings.get("leak_guard"):
        lines.append(f"- leak guard: {settings['leak_guard']}")
    lines.append("")
    header = ["corruption", *[f"s{s}" for s in severities], "mean", "CE"]
    if comparison:
        header += ["norm. CE", "rel. CE"]
    lines += ["Accuracy (%) per severity; CE = mean error (%) over severities.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, name in enumerate(names):
        row = [name, *[_pct(v) for v in acc[i]], _pct(np.nanmean(acc[i])), _pct(summary["ce"].get(name))]
        if comparison:
            row += [_pct(comparison["normalised_ce"].get(name)), _pct(comparison["relative_ce"].get(name))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Expected calibration error (%, 15 bins):", ""]
    header = ["corruption", *[f"s{s}" for s in severities], "mean"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, name in enumerate(names):
        lines.append("| " + " | ".join([name, *[_pct(v) for v in ece[i]], _pct(np.nanmean(ece[i]))]) + " |")
    return "\n".join(lines) + "\n"


MIN_COLOUR_SPAN = 10.0  # points of accuracy


def colour_limits(*results):
    """(vmin, vmax) in % of a heat map's colour scale: the range of the cells' accuracies.

    From the data, so that a weak model's cells (all under 20%, say) still span
    the colours; rounded outwards to whole points and widened to
    `MIN_COLOUR_SPAN` points at least (within 0–100), so that cells a point
    apart do not look far apart. Several results (the adaptation modes) share
    one scale.

    Args:
      *results: results dicts with "cells".

    Returns:
      (vmin, vmax), or (0, 100) when no cell has an accuracy.
    """
    values = [100 * c["accuracy"] for r in results for c in r["cells"] if c.get("accuracy") is not None]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return 0.0, 100.0
    low, high = float(np.floor(min(values))), float(np.ceil(max(values)))
    if high - low < MIN_COLOUR_SPAN:
        middle = (low + high) / 2
        low = float(np.clip(np.floor(middle - MIN_COLOUR_SPAN / 2), 0, 100 - MIN_COLOUR_SPAN))
        high = low + MIN_COLOUR_SPAN
    return low, high


def text_colour(rgba):
    """Black on a light background, white on a dark one (relative luminance, ITU-R BT.709)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


HEATMAP_MIN_INCHES = (5.0, 3.2)


def plot_heatmap(result, path, title="Accuracy (%) under corruption", limits=None):
    """Heat map of accuracy, corruptions (rows) x severities (columns), annotated.

    The colour scale spans the data (`colour_limits`) unless `limits` says
    otherwise; a line divides the 15 benchmark corruptions from the 4 extra
    ones; each cell's number is black or white by its background's luminance;
    an absent cell is grey and marked "n/a".

    Args:
      result: results dict with "cells" (and "summary" for the clean accuracy).
      path: PNG path.
      title: first part of the title (the clean accuracy is appended).
      limits: (vmin, vmax) of the colour scale in %, or None (from the data).

    Returns:
      The path written.
    """
    import matplotlib

    names, severities, acc = _grid(result, "accuracy")
    vmin, vmax = limits or colour_limits(result)
    width = max(HEATMAP_MIN_INCHES[0], 2.9 + 0.7 * len(severities))
    height = max(HEATMAP_MIN_INCHES[1], 1.3 + 0.3 * len(names))
    figure = figures.new_figure((width, height), DPI)
    axes = figure.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    image = axes.imshow(np.ma.masked_invalid(100 * acc), vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    axes.set_xticks(range(len(severities)), [str(s) for s in severities])
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("severity")
    axes.set_ylabel("corruption")
    summary = result.get("summary") or {}
    clean = summary.get("clean_accuracy")
    heading = title + (f"; clean {100 * clean:.1f}%" if clean is not None else "")
    counts = image_counts(result).split(" (")[0].split(", ")[0]  # "400 images per cell"
    heading += f"; {counts}" if counts else ""
    if len(heading) > 8 * width:  # about the characters the figure's width holds at this size
        heading = heading.replace(": ", ":\n", 1)
    axes.set_title(heading, fontsize=9)
    n_bench = sum(n in cifar10c.BENCHMARK_CORRUPTIONS for n in names)
    if 0 < n_bench < len(names):
        axes.axhline(n_bench - 0.5, color="white", linewidth=3)
        axes.axhline(n_bench - 0.5, color="black", linewidth=1, gid="benchmark-divider")
        for i in range(n_bench, len(names)):
            axes.get_yticklabels()[i].set_fontstyle("italic")
        extra = len(names) - n_bench
        axes.set_xlabel(
            f"severity\n(below the line, in italics: the {extra} extra corruption{'s' * (extra > 1)})"
        )
    norm = image.norm
    for i in range(len(names)):
        for j in range(len(severities)):
            if np.isnan(acc[i, j]):
                axes.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="black")
                continue
            v = 100 * acc[i, j]
            axes.text(
                j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color=text_colour(cmap(norm(v)))
            )
    bar = figure.colorbar(image, ax=axes, fraction=0.06, pad=0.03)
    bar.set_label("accuracy (%)")
    figure.tight_layout()
    return figures.save_png(figure, path, DPI)


def _bars_label(result):
    """The x label of the bar charts: what the groups are, and the images they were scored on."""
    label = "clean set, each corruption (mean over its severities), means"
    counts = image_counts(result).split(" (")[0]
    return label + (f"\n{counts}" if counts else "")


def plot_comparison(result, path, baseline=None, labels=("this run", "baseline"), title=None):
    """Bar chart: clean accuracy and mean accuracy per corruption, per run.

    Args:
      result: this run's results.
      path: PNG path.
      baseline: optional results dict of another run (same cells compared).
      labels: legend names of this run and the baseline.
      title: the chart's title (default: names the run, and the baseline).

    Returns:
      The path written.
    """
    if title is None:
        title = f"Accuracy under corruption: {labels[0]}" + (f" vs {labels[1]}" if baseline else "")
    runs = [(labels[0], result)] + ([(labels[1], baseline)] if baseline else [])
    return _accuracy_bars(runs, path, title, (0.36, 3.8), legend_columns=1)


def _accuracy_bars(runs, path, title, size, legend_columns):
    """Grouped bars of clean, per-corruption and mean accuracy, one series per run.

    Args:
      runs: [(label, results dict)]; the first one's corruptions are the groups.
      path: PNG path.
      title: the chart's title.
      size: (inches per group, height in inches).
      legend_columns: columns of the legend.

    Returns:
      The path written.
    """
    names, _, _ = _grid(runs[0][1], "accuracy")
    groups = ["clean", *names, "mean (15)", "mean (all)"]
    figure = figures.new_figure((max(6.0, size[0] * len(groups) + 1.5), size[1]), DPI)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(runs)
    for r, (label, run) in enumerate(runs):
        run_names, _, acc = _grid(run, "accuracy")
        per = dict(zip(run_names, np.nanmean(acc, axis=1))) if len(run_names) else {}
        summary = run["summary"]
        values = [summary.get("clean_accuracy"), *[per.get(n) for n in names]]
        values += [summary.get("mean_accuracy_benchmark"), summary.get("mean_accuracy_all")]
        heights = [100 * v if v is not None and not np.isnan(v) else 0.0 for v in values]
        axes.bar(np.arange(len(groups)) + (r - (len(runs) - 1) / 2) * width, heights, width, label=label)
    axes.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=8)
    axes.set_xlabel(_bars_label(runs[0][1]), fontsize=9)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8, ncol=legend_columns)
    figure.tight_layout()
    return figures.save_png(figure, path, DPI)


# --------------------------------------------------------------------------- results files
CSV_FIELDS = ("corruption", "severity", "accuracy", "error", "ece", "nll", "num_images")


def _rows(entry):
    clean = [{"corruption": CLEAN, "severity": 0, **entry["clean"]}] if entry.get("clean") else []
    return clean + list(entry["cells"])


def write_csv(result, path):
    """One row per cell plus a "clean" row (severity 0) when scored; with test-time
    adaptation, a first column "mode" and the rows of every mode."""
    if "modes" not in result:
        return rundir.write_csv(path, _rows(result), CSV_FIELDS)
    rows = [{"mode": mode, **row} for mode, entry in result["modes"].items() for row in _rows(entry)]
    return rundir.write_csv(path, rows, ("mode", *CSV_FIELDS))


def write_json(result, path):
    """The whole results dict (cells, clean, summary, settings, comparison)."""
    return rundir.write_json(path, result)


def read_results(path):
    """Reads a robustness.json or robustness.csv that `write_reports` wrote.

    Args:
      path: the file.

    Returns:
      dict with "cells", "clean" (None when not scored) and "settings" ({} from a CSV).

    Raises:
      UserError: no such file, or not one of these.
    """
    if not os.path.exists(path):
        raise UserError(f"results file {path} not found")
    try:
        if path.endswith(".json"):
            with open(path) as f:
                data = json.load(f)
            return {
                "cells": data["cells"],
                "clean": data.get("clean"),
                "settings": data.get("settings") or {},
            }
        cells, clean, first_mode = [], None, None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("mode"):  # adapted results: the first mode's rows
                    first_mode = first_mode or row["mode"]
                    if row["mode"] != first_mode:
                        continue
                cell = {
                    "corruption": cifar10c.parse_corruptions(row["corruption"])[0]
                    if row["corruption"] != CLEAN
                    else CLEAN,
                    "severity": int(row["severity"]),
                    "accuracy": float(row["accuracy"]),
                }
                cell["error"] = float(row["error"]) if row.get("error") else 1.0 - cell["accuracy"]
                for key in ("ece", "nll"):
                    cell[key] = float(row[key]) if row.get(key) else None
                if cell["corruption"] == CLEAN:
                    clean = cell
                else:
                    cells.append(cell)
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read results from {path}: {type(e).__name__}: {e}") from None
    return {"cells": cells, "clean": clean, "settings": {}}


def write_reports(
    result, output_dir, comparison=None, baseline=None, labels=("this run", "baseline"), title=None
):
    """Writes CSV, JSON, markdown, heat map and bar chart of an evaluation.

    Args:
      result: an `evaluate_robustness` results dict (with its "summary").
      output_dir: directory (created).
      comparison: optional `metrics.compare` dict against a baseline; it
        goes into the JSON (`result["comparison"]`) and the markdown.
      baseline: optional results dict of that baseline (drawn in the bar chart).
      labels: names of this run and the baseline in the figures.
      title: heading of the markdown file.

    Returns:
      dict kind -> path (csv, json, markdown, heatmap, comparison).
    """
    os.makedirs(output_dir, exist_ok=True)
    if comparison:
        result = {**result, "comparison": comparison}
    path = {kind: os.path.join(output_dir, name) for kind, name in rundir.ROBUSTNESS_FILES.items()}
    markdown = markdown_table(result, comparison, title)
    if "modes" in result:
        markdown = adaptation_table(result) + "\n" + markdown
    heat_title = f"Accuracy (%) under corruption: {labels[0]}"
    modes = list(result.get("modes") or {})
    # The modes' heat maps share one colour scale, so that colours compare across them.
    limits = colour_limits(*result["modes"].values()) if modes else None
    written = {
        "csv": write_csv(result, path["csv"]),
        "json": write_json(result, path["json"]),
        "markdown": rundir.write_text(path["markdown"], markdown),
        "heatmap": plot_heatmap(
            result, path["heatmap"], heat_title + (f", adaptation: {modes[0]}" if modes else ""), limits
        ),
    }
    if "modes" not in result:
        written["comparison"] = plot_comparison(result, path["comparison"], baseline, labels)
        return written
    runs = [(mode, entry) for mode, entry in result["modes"].items()]
    if baseline:
        runs.append((labels[1], baseline))
    written["comparison"] = plot_modes(runs, path["comparison"], title or "Test-time adaptation")
    stem, ext = os.path.splitext(path["heatmap"])
    for mode, entry in list(result["modes"].items())[1:]:
        written[f"heatmap_{mode}"] = plot_heatmap(
            entry, f"{stem}_{mode}{ext}", f"{heat_title}, adaptation: {mode}", limits
        )
    return written


def adaptation_table(result):
    """Markdown: per adaptation mode, clean and corruption accuracy, gains over "none", time.

    Args:
      result: an evaluation result with "modes" and "adaptation".

    Returns:
      The markdown text.
    """
    summary = result["adaptation"]
    severities = sorted({s for v in summary.values() for s in v["severity_means"]}, key=int)
    header = ["mode", "clean", "mean (15)", "mean (all)", *[f"s{s}" for s in severities], "ms / image"]
    lines = [
        "## Test-time adaptation",
        "",
        "Accuracy (%) per adaptation mode; s1…s5: mean over the corruptions at that severity; "
        "(±x): gain over `none` in points.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]

    def cell(value, gain):
        text = _pct(value)
        if gain is not None and value is not None:
            text += f" ({100 * gain:+.1f})"
        return text

    for mode, values in summary.items():
        gain = values.get("gain") or {}
        row = [
            mode,
            cell(values["clean_accuracy"], gain.get("clean_accuracy") if mode != "none" else None),
            cell(
                values["mean_accuracy_benchmark"],
                gain.get("mean_accuracy_benchmark") if mode != "none" else None,
            ),
            cell(values["mean_accuracy_all"], gain.get("mean_accuracy_all") if mode != "none" else None),
            *[
                cell(
                    values["severity_means"][s],
                    (gain.get("severity_means") or {}).get(s) if mode != "none" else None,
                )
                for s in severities
            ],
            f"{1000 * values['seconds_per_image']:.2f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_modes(runs, path, title):
    """Bar chart: clean, mean accuracy per corruption and overall, one series per run or mode.

    Args:
      runs: [(label, results dict with "cells", "clean", "summary")].
      path: PNG path.
      title: chart title.

    Returns:
      The path written.
    """
    return _accuracy_bars(runs, path, title, (0.42, 4.0), legend_columns=min(4, len(runs)))
