"""A light import: `import robust_ssl`, the usage text and every command's help load no TensorFlow.

Each check runs in a fresh interpreter (the test process has TensorFlow
loaded already) and reads `sys.modules` there after the work is done.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from robust_ssl.commands import COMMANDS

HEAVY = ("tensorflow", "keras")

# Runs `robust-ssl <args>` in this interpreter, then prints what it imported
# of HEAVY (a command exits through absl: SystemExit is its status).
RUN_CLI = f"""
import json, sys
from robust_ssl import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as e:
    status = 0 if e.code is None else e.code
print(json.dumps({{"status": status, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def run_python(code, *args, cwd=REPO):
    """Runs `python -c code args` with the environment of a user's shell; the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def cli_report(*args, cwd=REPO):
    """(exit status, the HEAVY modules imported, the process) of `robust-ssl <args>` run by RUN_CLI."""
    proc = run_python(RUN_CLI, *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return report["status"], report["heavy"], proc


def test_import_robust_ssl_loads_no_tensorflow_and_leaves_the_process_as_it_was():
    code = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "import robust_ssl\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        f"print(json.dumps([[m for m in {HEAVY!r} if m in sys.modules], changed]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    heavy, changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert changed == ["KERAS_BACKEND"]  # only the backend's default, for whatever imports Keras later
    assert proc.stderr == ""  # nothing written, file descriptor 2 untouched


@pytest.mark.parametrize("args", [["--help"], *([name, "--help"] for name in COMMANDS)], ids=" ".join)
def test_help_answers_without_tensorflow(args):
    status, heavy, proc = cli_report(*args)
    assert status == 0, proc.stderr[-3000:]
    assert heavy == []
    assert proc.stdout.startswith("usage: robust-ssl")
    assert "Traceback" not in proc.stderr


def test_a_command_that_reads_files_only_starts_no_tensorflow(tmp_path):
    (tmp_path / "lambdas.csv").write_text("step,rotation\n0,0.5\n10,0.6\n")
    status, heavy, proc = cli_report("plot-lambdas", "--csv=lambdas.csv", cwd=tmp_path)
    assert status == 0, proc.stderr[-3000:]
    assert heavy == []
    assert (tmp_path / "lambdas.png").stat().st_size > 1000
    # Several runs side by side, each run's method read from its results.json: no TensorFlow either.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "lambdas.csv").write_text("step,rotation\n0,0.5\n10,0.6\n")
        (tmp_path / name / "results.json").write_text('{"weighting": "gradnorm"}')
    status, heavy, proc = cli_report(
        "plot-lambdas", "--workdir=a", "--workdir=b", "--output=ab.png", cwd=tmp_path
    )
    assert status == 0, proc.stderr[-3000:]
    assert heavy == []
    assert (tmp_path / "ab.png").stat().st_size > 1000


def test_a_command_sets_tensorflow_log_level_before_importing_it(tmp_path):
    # show-config imports TensorFlow (the config's task registry): after the
    # level is set, and with TensorFlow's start-up lines hidden by default.
    status, heavy, proc = cli_report("show-config", "--config=smoke", cwd=tmp_path)
    assert status == 0, proc.stderr[-3000:]
    assert heavy == list(HEAVY)
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    assert "train.epochs=3" in proc.stdout
