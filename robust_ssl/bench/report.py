"""The benchmark's report: the results as markdown tables, written with the JSON.

`markdown` lays out the per-mode table (step time, images/s, FLOPs, memory,
load), the input-pipeline table and the breakdowns; `write_report` writes
benchmark.json and benchmark.md.
"""

import os


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
    lines = [
        f"WRN-{s['depth']}-{s['width']}, batch {s['batch_size']}, meta batch {s['meta_batch_size']}, "
        f"{s['steps']} timed steps after {s['warmup_steps']} warm-up, "
        f"precision {s['mixed_precision'] or 'float32'}; TF {env['tensorflow']}, Keras {env['keras']}, "
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
            if s["mixed_precision"] == "fp16"
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
