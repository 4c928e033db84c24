"""Seconds from a command's start to its first step, and TensorFlow's import time.

`run_first_step` starts the real commands, each in a fresh process
(`python -m robust_ssl.cli …`), with ROBUST_SSL_TIME_MARKS naming a file where
the process notes the Unix time of named moments (`robust_ssl.killpoints`):

- train (the `smoke` config, one step of one epoch): `train.first_step`, the
  first training step done (data loaded, model built, step traced and run);
- evaluate (`--cifar10c=generate`, one corruption at one severity, 100
  images): `evaluate.cell`, the first cell scored (the model loaded, the
  clean test set predicted);
- export (`--noverify`): `export.written`, the SavedModel written.

The time just before the process starts is the origin, so the seconds include
the interpreter's start and every import. `python -c "import tensorflow"`,
timed the same way, gives TensorFlow's share: "beyond TensorFlow's import" is
a command's seconds to its first step less the median seconds from a
process's start to TensorFlow imported. Each command runs once (evaluate and
export on the model train wrote), in a temporary folder.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from robust_ssl.bench.measure import load_average

# Imports TensorFlow, then Keras, and prints the Unix times around them.
IMPORT_TIMES = (
    "import json, time\n"
    "start = time.time()\n"
    "import tensorflow\n"
    "tf_done = time.time()\n"
    "import keras\n"
    "print(json.dumps([start, tf_done, time.time()]))\n"
)

# (command, its arguments after the run folder is known, the moment that ends its first step).
COMMANDS = (
    (
        "train",
        lambda run, tmp: [
            "--config=smoke",
            f"--workdir={run}",
            "--config.train.epochs=1",
            "--config.train.steps_per_epoch=1",
            "--config.train.verbose=0",
        ],
        "train.first_step",
    ),
    (
        "evaluate",
        lambda run, tmp: [
            f"--workdir={run}",
            "--cifar10c=generate",
            "--corruptions=gaussian_noise",
            "--severities=1",
            "--max_images=100",
            "--noprogress",
            f"--output_dir={os.path.join(tmp, 'robustness')}",
        ],
        "evaluate.cell",
    ),
    (
        "export",
        lambda run, tmp: [f"--workdir={run}", f"--export_dir={os.path.join(tmp, 'export')}", "--noverify"],
        "export.written",
    ),
)


def _environment():
    import robust_ssl

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(robust_ssl.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def read_marks(path):
    """The moments a process noted: {point: the Unix time of its first pass}.

    Args:
      path: the ROBUST_SSL_TIME_MARKS file (missing: none noted).

    Returns:
      A dict.
    """
    marks = {}
    if not os.path.exists(path):
        return marks
    with open(path) as f:
        for line in f:
            point, _, stamp = line.rstrip("\n").partition("\t")
            if stamp:
                marks.setdefault(point, float(stamp))
    return marks


def time_command(command, args, point, cwd, timeout=600):
    """Runs `robust-ssl <command> <args>` in a fresh process; the seconds from its start to `point`.

    Args:
      command: the command's name.
      args: its arguments.
      point: the moment (`robust_ssl.killpoints`) that ends its first step.
      cwd: the folder it runs in (its marks file goes there too).
      timeout: seconds before it is stopped.

    Returns:
      {"command", "point", "first_step_s", "total_s", "returncode"}, or with
      "error" (the last lines of its output) where it failed or never got
      to `point`.
    """
    marks_path = os.path.join(cwd, f"{command}.marks")
    env = {**_environment(), "ROBUST_SSL_TIME_MARKS": marks_path}
    start = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "robust_ssl.cli", command, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"command": command, "point": point, "error": f"not done after {timeout} s"}
    total = time.time() - start
    marks = read_marks(marks_path)
    result = {"command": command, "point": point, "total_s": total, "returncode": proc.returncode}
    if proc.returncode != 0 or point not in marks:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        result["error"] = (
            f"exit status {proc.returncode}, {point} {'noted' if point in marks else 'never reached'}:\n{tail}"
        )
        return result
    result["first_step_s"] = marks[point] - start
    return result


def import_times(repeats=3, cwd=None):
    """Seconds from a fresh Python's start to TensorFlow imported, and the imports alone.

    Args:
      repeats: processes started, one after the other.
      cwd: the folder they run in.

    Returns:
      {"python_start_s", "tensorflow_import_s", "keras_import_s",
      "tensorflow_ready_s" (start to TensorFlow imported): medians over the
      repeats, "runs": each repeat's [python start, TensorFlow import, Keras
      import]}.
    """
    env = _environment()
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runs = []
    for _ in range(repeats):
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", IMPORT_TIMES],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=600,
        )
        if proc.returncode != 0:
            return {"error": "\n".join(proc.stderr.strip().splitlines()[-10:])}
        begun, tf_done, keras_done = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append([begun - start, tf_done - begun, keras_done - tf_done])
    python, tf, keras = (statistics.median(r[i] for r in runs) for i in range(3))
    return {
        "python_start_s": python,
        "tensorflow_import_s": tf,
        "keras_import_s": keras,
        "tensorflow_ready_s": statistics.median(r[0] + r[1] for r in runs),
        "runs": runs,
    }


def run_first_step(log=print, import_repeats=3):
    """Times train, evaluate and export to their first step, and TensorFlow's import.

    Args:
      log: callable taking one progress line.
      import_repeats: processes that time TensorFlow's import.

    Returns:
      {"imports": `import_times`, "commands": {command: `time_command`'s
      result, with "beyond_tensorflow_s" (first_step_s less the import's
      tensorflow_ready_s)}, "load_start", "load_end"}.
    """
    out = {"load_start": load_average(), "commands": {}}
    with tempfile.TemporaryDirectory(prefix="robust_ssl_first_step_") as tmp:
        out["imports"] = imports = import_times(import_repeats, cwd=tmp)
        if "error" in imports:
            log(f"  importing TensorFlow failed: {imports['error']}")
        else:
            log(
                f"  import tensorflow: {imports['tensorflow_import_s']:.1f} s "
                f"({imports['tensorflow_ready_s']:.1f} s from the process's start)"
            )
        run = os.path.join(tmp, "run")
        for command, make_args, point in COMMANDS:
            result = time_command(command, make_args(run, tmp), point, tmp)
            if "first_step_s" in result and "tensorflow_ready_s" in imports:
                result["beyond_tensorflow_s"] = result["first_step_s"] - imports["tensorflow_ready_s"]
            out["commands"][command] = result
            if "error" in result:
                log(f"  {command} failed: {result['error']}")
                if command == "train":  # evaluate and export need its model
                    break
            else:
                log(
                    f"  {command}: first step after {result['first_step_s']:.1f} s (process {result['total_s']:.1f} s)"
                )
    out["load_end"] = load_average()
    return out
