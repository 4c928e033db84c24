"""The benchmark's report: the results as markdown tables, written with the JSON.

`markdown` lays out the per-mode table (step time, images/s, FLOPs, memory,
load), the step times per precision, the input-pipeline table, the
breakdowns and the time to the first step; `write_report` writes
benchmark.json and benchmark.md.
"""

import os

from robust_ssl.bench.modes import MIXED_PRECISION
from robust_ssl.precision import SHORT_NAMES, canonical


def _precision_names(settings):
    """The short names of the precisions a run timed, in order (its settings as written)."""
    names = settings.get("precisions") or ["float32"]
    if settings.get("mixed_precision"):  # a run of the deprecated setting
        names = [MIXED_PRECISION[settings["mixed_precision"]]]
    return [SHORT_NAMES[canonical(n)] for n in names]


def _fmt(value, digits=1):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown(results):
    """The results as markdown tables.

    Args:
      results: the dict `robust_ssl.bench.benchmark.run` returns.

    Returns:
      A markdown string.
    """
    s, env = results["settings"], results["environment"]
    precisions = _precision_names(s)
    lines = [
        f"WRN-{s['depth']}-{s['width']}, batch {s['batch_size']}, meta batch {s['meta_batch_size']}, "
        f"{s['steps']} timed steps after {s['warmup_steps']} warm-up, "
        f"precision {precisions[0]}"
        + (
            f" (the table of step times per precision below: {', '.join(precisions)})"
            if len(precisions) > 1
            else ""
        )
        + (
            "; train.deterministic (op determinism, one-thread op pools)"
            if results.get("deterministic")
            else ""
        )
        + f"; TF {env['tensorflow']}, Keras {env['keras']}, "
        f"{env['cpu_cores']} CPU cores{', GPU ' + ', '.join(env['gpus']) if env['gpus'] else ''}, "
        f"oneDNN {env['TF_ENABLE_ONEDNN_OPTS']}; load average {env['load_average']} at the start, "
        f"{env.get('load_average_end')} at the end; {env['date']}."
        + (
            " Modes interleaved in one process (one step of each in turn); peak host memory is "
            "that process's, all modes together."
            if s.get("interleave")
            else (
                " Each mode in its own process."
                if s.get("isolate", True)
                else " All modes in this process: peak host memory is the process's peak so far."
            )
        )
        + (
            " fp16 is timed only: `RobustSSLModel.train_step` does no loss scaling, so the "
            "LossScaleOptimizer Keras wraps around the optimiser shrinks every update."
            if "float16" in precisions
            else ""
        ),
        "",
    ]
    gpu = any((r.get("device_memory") or {}).get("peak_mib") for r in results["modes"].values())
    paired = any("round_ratio_median" in r for r in results["modes"].values())
    header = [
        "mode",
        "XLA",
        "ms/step (median)",
        "IQR ms",
        "min–max ms",
        "base img/s",
        "trunk img/step",
        "trunk img/s",
        "GFLOP/step",
        "GFLOP/s",
        f"× {results['reference_mode']}",
    ]
    if paired:
        header.append(f"× {results['reference_mode']} (paired rounds)")
    header.append("peak host MiB")
    if gpu:
        header.append("peak device MiB")
    header += ["CPU share", "load (1 min) start→end"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in results["modes"].items():
        if "error" in r:
            first = r["error"].splitlines()[0]
            lines.append(f"| {name} | {first} |" + " |" * (len(header) - 2))
            continue
        label = name if not r.get("meta_every") or r["meta_every"] == 1 else f"{name} (k={r['meta_every']})"
        row = [
            label,
            "yes" if r["jit_compile"] else "no",
            _fmt(r["ms_per_step"], 0),
            _fmt(r["iqr_ms"], 0),
            f"{_fmt(r['min_ms'], 0)}–{_fmt(r['max_ms'], 0)}",
            _fmt(r["base_images_per_s"], 1),
            _fmt(r["trunk_images_per_step"], 0),
            _fmt(r["trunk_images_per_s"], 1),
            _fmt(r["flops_per_step"] / 1e9, 1),
            _fmt(r["gflops_per_s"], 1),
            _fmt(r.get("ratio_to_reference"), 2),
        ]
        if paired:
            row.append(_fmt(r.get("round_ratio_median"), 2))
        row.append(_fmt(r["peak_host_mib"], 0))
        if gpu:
            row.append(_fmt((r.get("device_memory") or {}).get("peak_mib"), 0))
        load = f"{(r['load_start'] or ['?'])[0]}→{(r['load_end'] or ['?'])[0]}"
        row += [f"{100 * r['cpu_share']:.0f}%" if r.get("cpu_share") is not None else "–", load]
        lines.append("| " + " | ".join(row) + " |")
    split = [
        (name, r) for name, r in results["modes"].items() if "median_meta_step_ms" in r and "error" not in r
    ]
    if split:
        lines.append("")
        for name, r in split:
            lines.append(
                f"{name}: meta steps {_fmt(r['median_meta_step_ms'], 0)} ms, plain steps "
                f"{_fmt(r['median_plain_step_ms'], 0)} ms (medians); ms/step above is amortised over "
                f"k = {r['meta_every']}."
            )
    lines += _precision_table(results, precisions)
    pipe = results.get("pipeline")
    if pipe:
        lines.append("")
        if "error" in pipe:
            lines.append(f"Input pipeline: failed: {pipe['error'].splitlines()[0]}")
        else:
            lines += [
                "Input pipeline alone (`training_dataset`: shuffle, augmentation, task transforms; "
                f"{pipe.get('data', 'generated images held in memory')}) and the task transforms' own cost "
                "(`make_task_batch` in a `tf.function`, one batch):",
                "",
                "| tasks | meta batch | images/s | batches/s | transforms ms/batch | × what the step consumes "
                "| load start→end |",
                "|---|---|---|---|---|---|---|",
            ]
            for e in pipe["pipeline"]:
                headroom = ", ".join(f"{k}: {v:.0f}×" for k, v in e["headroom_vs_mode"].items()) or "–"
                lines.append(
                    f"| {','.join(e['tasks']) or '(none)'} | {'yes' if e['meta'] else 'no'} | "
                    f"{_fmt(e['images_per_s'], 0)} | {_fmt(e['batches_per_s'], 1)} | "
                    f"{_fmt(e['transform_ms_per_batch'], 1)} | {headroom} | "
                    f"{(e['load_start'] or ['?'])[0]}→{(e['load_end'] or ['?'])[0]} |"
                )
            flops = pipe.get("trunk_forward_flops_per_image")
            if flops:
                lines += ["", f"Trunk forward (inference) per image: {flops / 1e9:.3f} GFLOP."]
    for name, b in results.get("breakdown", {}).items():
        lines.append("")
        if "error" in b:
            lines.append(f"Breakdown of {name}: failed: {b['error'].splitlines()[0]}")
            continue
        lines += [
            f"Pieces of the {name} step (each its own `tf.function`, no updates; "
            f"load {(b['load_start'] or ['?'])[0]}→{(b['load_end'] or ['?'])[0]}):",
            "",
            "| piece | ms (median) | min–max ms | GFLOP | GFLOP/s |",
            "|---|---|---|---|---|",
        ]
        for piece, p in b["pieces"].items():
            lines.append(
                f"| {piece}: {p['description']} | {_fmt(p['median_ms'], 0)} | "
                f"{_fmt(p['min_ms'], 0)}–{_fmt(p['max_ms'], 0)} | {_fmt(p['flops'] / 1e9, 1)} | "
                f"{_fmt(p['flops'] / p['median_ms'] / 1e6, 1)} |"
            )
    lines += _first_step_table(results.get("first_step"))
    lines += [
        "",
        "FLOPs: " + results["flop_count"] + ". Trunk images count each task's inputs once "
        "(n·B for n images per example, 0 for a task that reuses the clean forward), plus the meta "
        "batch on meta steps. "
        "CPU share: the process's CPU time over the timed steps / (their wall time × cores); well "
        "below 100% means other processes took cores and the times are inflated. Load: the 1-minute "
        "load average, this benchmark's own threads included.",
    ]
    return "\n".join(lines) + "\n"


def _precision_table(results, precisions):
    """Lines of the step time of each mode in each precision, and their paired ratios."""
    rows = [(n, r) for n, r in results["modes"].items() if "by_precision" in r and "error" not in r]
    if len(precisions) < 2 or not rows:
        return []
    first, others, ref = precisions[0], precisions[1:], results["reference_mode"]
    header = ["mode", *(f"{p} ms/step (median)" for p in precisions)]
    header += [f"{p} / {first} (paired rounds)" for p in others]
    with_reference = ref in results["modes"] and "by_precision" in results["modes"][ref]
    if with_reference:
        header += [f"× {ref} in {p}" for p in precisions]
    lines = [
        "",
        "Step times per precision (each mode's precisions in one process, one step of each in turn; "
        "the ratio is the median over rounds of the two steps' ratio"
        + (f"; × {ref}: the ratio of the medians):" if with_reference else "):"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, r in rows:
        by = r["by_precision"]
        row = [name, *(_fmt(by.get(p, {}).get("ms_per_step"), 0) for p in precisions)]
        row += [_fmt(r["precision_ratio"].get(p), 2) for p in others]
        if with_reference:
            row += [_fmt(by.get(p, {}).get("ratio_to_reference"), 2) for p in precisions]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _first_step_table(first):
    """Lines of the seconds from each command's start to its first step."""
    if not first:
        return []
    imports = first.get("imports", {})
    lines = ["", "Time to the first step (the real command in a fresh process, from its start):", ""]
    if "error" in imports:
        lines.append(f"Importing TensorFlow failed: {imports['error'].splitlines()[0]}")
    else:
        lines.append(
            f"`import tensorflow`: {_fmt(imports['tensorflow_import_s'], 1)} s; from a process's start to "
            f"TensorFlow imported {_fmt(imports['tensorflow_ready_s'], 1)} s (medians of "
            f"{len(imports['runs'])} processes)."
        )
    lines += [
        "",
        "| command | first step: the moment | s to the first step | of which beyond TensorFlow's import "
        "| s in all (process) |",
        "|---|---|---|---|---|",
    ]
    for name, r in first.get("commands", {}).items():
        if "error" in r:
            lines.append(f"| {name} | {r['point']} | failed: {r['error'].splitlines()[0]} | | |")
            continue
        lines.append(
            f"| {name} | {r['point']} | {_fmt(r['first_step_s'], 1)} | {_fmt(r.get('beyond_tensorflow_s'), 1)} "
            f"| {_fmt(r['total_s'], 1)} |"
        )
    load = f"{(first['load_start'] or ['?'])[0]}→{(first['load_end'] or ['?'])[0]}"
    lines += ["", f"Load (1 min) {load}."]
    return lines


def write_report(results, output_dir):
    """Writes benchmark.json and benchmark.md into `output_dir`.

    Args:
      results: the dict `robust_ssl.bench.benchmark.run` returns.
      output_dir: directory (created if needed).

    Returns:
      (json path, markdown path, the markdown text).
    """
    from robust_ssl import rundir

    os.makedirs(output_dir, exist_ok=True)
    text = markdown(results)
    json_path = rundir.write_json(os.path.join(output_dir, "benchmark.json"), results)
    md_path = rundir.write_text(os.path.join(output_dir, "benchmark.md"), text)
    return json_path, md_path, text
