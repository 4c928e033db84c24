"""The numbers of a robustness evaluation: per cell, over cells, against a baseline, per adaptation mode.

Per cell (`cell_metrics`): accuracy, error, expected calibration error (15
bins) and NLL. Over the cells (`summarize`): the clean accuracy; the mean
accuracy over the 15 benchmark corruptions and over all 19 (the paper's
number); the corruption error CE_c (mean error over severities) and its mean
mCE over the 15 benchmark corruptions. Against a baseline's results
(`compare`): the normalised CE/mCE (sum_s E_s,c / sum_s E^base_s,c) and the
relative CE/mCE (sum_s (E_s,c - E_clean) / sum_s (E^base_s,c - E^base_clean))
of Hendrycks & Dietterich (2019). Per test-time adaptation mode
(`adaptation_summary`): the means and the gains over "none".
"""

import numpy as np

from robust_ssl.data import cifar10c
from robust_ssl.errors import UserError

NUM_BINS = 15


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


def mean(values):
    """The mean of the values that are not None, or None when there are none."""
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
    ce = {name: mean(c["error"] for c in group) for name, group in by_corruption.items()}
    bench = [c for c in cells if c["corruption"] in cifar10c.BENCHMARK_CORRUPTIONS]
    full = {(c["corruption"], c["severity"]) for c in cells}
    clean = result.get("clean")
    return {
        "clean_accuracy": clean["accuracy"] if clean else None,
        "clean_ece": clean["ece"] if clean else None,
        "mean_accuracy_benchmark": mean(c["accuracy"] for c in bench),
        "mean_accuracy_all": mean(c["accuracy"] for c in cells),
        "ce": ce,
        "mce": mean(v for k, v in ce.items() if k in cifar10c.BENCHMARK_CORRUPTIONS),
        "mce_all": mean(ce.values()),
        "mean_ece": mean(c["ece"] for c in cells),
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
        "mce": mean(normalised[c] for c in bench),
        "relative_mce": mean(relative.get(c) for c in bench) if relative else None,
        "common_cells": len(common),
        "baseline_clean_accuracy": base_summary.get("clean_accuracy"),
        "baseline_mean_accuracy_benchmark": base_summary.get("mean_accuracy_benchmark"),
        "baseline_mean_accuracy_all": base_summary.get("mean_accuracy_all"),
    }


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
                str(s): mean(c["accuracy"] for c in entry["cells"] if c["severity"] == s) for s in severities
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
