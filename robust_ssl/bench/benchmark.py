"""Benchmarks of the training step and of the input pipeline (`robust-ssl benchmark`): the run.

`run` times each chosen mode (`robust_ssl.bench.modes`), each in a fresh
subprocess by default (`python -m robust_ssl.bench.benchmark job.json
result.json`) so that peak memory does not carry over, or all in one process,
one step of each in turn (`Settings.interleave`); with several precisions
(`Settings.precisions`), each mode's process times it in all of them, one
step of each in turn (`run_interleaved` of that mode). Then the input
pipeline alone and, on request, the pieces of some modes' steps, and on
request (`first_step`) the seconds from a command's start to its first step
(`robust_ssl.bench.first_step`). It adds to each mode
the ratio of its step time to the fixed-λ four-task step (`REFERENCE_MODE`)
and to each pipeline entry how many times faster it serves than each mode
consumes. The modules:

  modes.py       what to time: the modes, `Settings`, a mode's config and data
  runner.py      one mode's step timed (`ModeRunner`, `run_mode`,
                 `run_interleaved`): what each column means
  pipeline.py    the input pipeline alone and the task transforms' cost
  breakdown.py   the pieces of one step timed apart
  first_step.py  seconds from process start to the first step of train,
                 evaluate and export, and TensorFlow's import time
  measure.py     timing statistics, memory, cores, load, versions
  report.py      the markdown tables and the written JSON
  flops.py       the FLOP count of a traced graph

The names tests and callers used from this module before it was cut
(`Settings`, `MODES`, `parse_modes`, `summarize`, …) are importable from
here still.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from robust_ssl.bench.breakdown import run_breakdown
from robust_ssl.bench.measure import environment, load_average
from robust_ssl.bench.measure import summarize as summarize
from robust_ssl.bench.modes import MODES, REFERENCE_MODE, Settings, check_settings, precisions_of
from robust_ssl.bench.modes import parse_modes as parse_modes
from robust_ssl.bench.modes import quick_settings as quick_settings
from robust_ssl.bench.pipeline import run_pipeline
from robust_ssl.bench.runner import run_interleaved, run_mode, trunk_forward_flops


# ------------------------------------------------------------- subprocesses
def _package_root():
    import robust_ssl

    return os.path.dirname(os.path.dirname(os.path.abspath(robust_ssl.__file__)))


def _in_subprocess(job):
    """Runs `_child_main` on a job dict in a fresh Python; returns its result."""
    with tempfile.TemporaryDirectory(prefix="robust_ssl_bench_") as tmp:
        job_path, out_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        with open(job_path, "w") as f:
            json.dump(job, f)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("KERAS_BACKEND", "tensorflow")
        proc = subprocess.run(
            [sys.executable, "-m", "robust_ssl.bench.benchmark", job_path, out_path],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not os.path.exists(out_path):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            return {"error": f"subprocess exited with status {proc.returncode}:\n{tail}"}
        with open(out_path) as f:
            return json.load(f)


def _run_job(job):
    settings = Settings(**job["settings"])
    if job["kind"] == "mode":
        return run_mode(job["mode"], settings, job["config"])
    if job["kind"] == "pipeline":
        result = run_pipeline(settings, job["config"], [(tuple(t), bool(m)) for t, m in job["task_sets"]])
        result["trunk_forward_flops_per_image"] = trunk_forward_flops(settings)
        return result
    if job["kind"] == "breakdown":
        return run_breakdown(job["mode"], settings, job["config"])
    if job["kind"] == "interleaved":
        return run_interleaved(job["modes"], settings, job["config"])
    raise ValueError(f"unknown job kind {job['kind']!r}")


def _dispatch(job, isolate):
    if isolate:
        return _in_subprocess(job)
    try:
        return _run_job(job)
    except Exception as e:  # keep the other modes' results
        return {"error": f"{type(e).__name__}: {e}"}


def _child_main(argv):
    job_path, out_path = argv[1], argv[2]
    with open(job_path) as f:
        job = json.load(f)
    if job.get("config", {}).get("train", {}).get("deterministic"):
        # As `robust-ssl train` does, before TensorFlow's runtime starts: op
        # determinism and one-thread pools (`--config.train.deterministic=True`
        # times what same-seed-same-numbers costs).
        import ml_collections

        from robust_ssl.train import make_deterministic

        make_deterministic(ml_collections.ConfigDict(job["config"]))
    result = _run_job(job)
    with open(out_path, "w") as f:
        json.dump(result, f)


def _task_sets(mode_names):
    sets = []
    for name in mode_names:
        mode = MODES[name]
        key = (tuple(mode.tasks), mode.automl is not None)
        if key not in sets:
            sets.append(key)
    return sets


def run(settings, config_dict, mode_names, log=print, breakdown_modes=(), checkpoint=None, first_step=False):
    """Runs the benchmark of several modes (and the input pipeline).

    Args:
      settings: `Settings`.
      config_dict: the base experiment config as a plain dict.
      mode_names: keys of `MODES`.
      log: callable taking one progress line.
      breakdown_modes: modes whose step is also timed piece by piece
        (`run_breakdown`).
      checkpoint: optional callable(results) called after each part, e.g. to
        write the partial report.
      first_step: also time `train`, `evaluate` and `export` from their
        process's start to their first step, and TensorFlow's import
        (`robust_ssl.bench.first_step.run_first_step`; about a minute).

    Returns:
      The results dict (settings, environment, modes, pipeline, first_step)
      that `robust_ssl.bench.report.write_report` writes.
    """
    check_settings(settings)
    # "auto" resolved here, once: the processes that time the modes get the policies.
    settings = dataclasses.replace(settings, precisions=tuple(precisions_of(settings)), mixed_precision="")
    paired = len(settings.precisions) > 1
    results = {
        "settings": dataclasses.asdict(settings),
        "environment": environment(),
        "flop_count": (
            "TensorFlow per-op FLOP statistics (as tf.compat.v1.profiler float_operation) over the "
            "traced train_step graph, tf.cond branches included, ops whose results nothing uses left out"
        ),
        "reference_mode": REFERENCE_MODE,
        "deterministic": bool(config_dict.get("train", {}).get("deterministic", False)),
        "modes": {},
    }
    if results["deterministic"]:
        log("train.deterministic: op determinism and one-thread op pools in every mode's process")
    checkpoint = checkpoint or (lambda _: None)

    def job(kind, **fields):
        return {"kind": kind, **fields, "settings": dataclasses.asdict(settings), "config": config_dict}

    def report(name, result):
        if "error" in result:
            log(f"  {name} failed: {result['error']}")
            return
        for precision, r in (result.get("by_precision") or {result["mixed_precision"]: result}).items():
            ratio = (result.get("precision_ratio") or {}).get(precision)
            log(
                f"  {name}, {precision}: {r['ms_per_step']:.1f} ms/step (IQR {r['iqr_ms']:.1f}), "
                f"{r['base_images_per_s']:.1f} images/s, {r['gflops_per_s']:.1f} GFLOP/s"
                + (f", × {ratio:.2f} the first precision (paired rounds)" if ratio else "")
            )

    if settings.interleave:
        log(f"modes {', '.join(mode_names)}, interleaved (load {load_average()})")
        combined = _dispatch(job("interleaved", modes=mode_names), settings.isolate)
        for name in mode_names:
            results["modes"][name] = combined if "error" in combined else combined[name]
            report(name, results["modes"][name])
        checkpoint(results)
    else:
        for name in mode_names:
            log(f"mode {name}: {MODES[name].description} (load {load_average()})")
            if paired:  # every precision in one process, one step of each in turn
                result = _dispatch(job("interleaved", modes=[name]), settings.isolate)
                results["modes"][name] = result if "error" in result else result[name]
            else:
                results["modes"][name] = _dispatch(job("mode", mode=name), settings.isolate)
            report(name, results["modes"][name])
            checkpoint(results)
    _reference_ratios(results["modes"])
    if settings.pipeline:
        task_sets = _task_sets(mode_names)
        log(f"input pipeline: {len(task_sets)} task set(s) (load {load_average()})")
        results["pipeline"] = _dispatch(job("pipeline", task_sets=task_sets), settings.isolate)
        if "error" in results["pipeline"]:
            log(f"  failed: {results['pipeline']['error']}")
        else:
            _pipeline_ratios(results)
        checkpoint(results)
    for name in breakdown_modes:
        log(f"breakdown of {name} (load {load_average()})")
        results.setdefault("breakdown", {})[name] = _dispatch(job("breakdown", mode=name), settings.isolate)
        checkpoint(results)
    if first_step:
        from robust_ssl.bench.first_step import run_first_step

        log(f"time to the first step: train, evaluate, export (load {load_average()})")
        results["first_step"] = run_first_step(log=log)
        checkpoint(results)
    results["environment"]["load_average_end"] = load_average()
    return results


def _reference_ratios(modes):
    """Adds each mode's step time / the reference mode's (`ratio_to_reference`), per precision too."""
    reference = modes.get(REFERENCE_MODE, {})
    for result in modes.values():
        if "error" in result or "ms_per_step" not in reference:
            continue
        result["ratio_to_reference"] = result["ms_per_step"] / reference["ms_per_step"]
        for precision, r in (result.get("by_precision") or {}).items():
            ref = reference.get("by_precision", {}).get(precision)
            if ref:
                r["ratio_to_reference"] = r["ms_per_step"] / ref["ms_per_step"]


def _pipeline_ratios(results):
    """Adds, per pipeline entry, how many times faster it is than each mode consumes."""
    for entry in results["pipeline"]["pipeline"]:
        consumers = {}
        for name, result in results["modes"].items():
            if "error" in result:
                continue
            if list(result["tasks"]) == entry["tasks"] and (result["automl"] is not None) == entry["meta"]:
                consumers[name] = entry["images_per_s"] / result["base_images_per_s"]
        entry["headroom_vs_mode"] = consumers


if __name__ == "__main__":
    _child_main(sys.argv)
