"""Named points where a test can kill the process, to prove that a command resumes from anywhere.

The resumption tests (tests/test_chaos.py) start a command with

  ROBUST_SSL_KILL_AT=<point>:<n>

and the n-th time the process passes `reached(<point>)` it sends itself
SIGKILL: no handler, no `finally`, no flush, exactly what a power cut or the
kernel's out-of-memory killer leaves behind. Points sit where a kill is the
hardest to survive, e.g. after a file's temporary copy is written and before
it is renamed into place. With

  ROBUST_SSL_KILL_TRACE=<file>

every pass is appended to <file>, one point name a line, so that a test can
list the moments of an uninterrupted run and draw the ones to kill at. With

  ROBUST_SSL_TIME_MARKS=<file>

every pass, and every `mark(<point>)` (moments that are no kill points), is
appended to <file> as "<point><TAB><Unix time>": the benchmark's time to the
first step (`robust_ssl.bench.first_step`) reads when a command got there.
Unset (always, outside the tests and the benchmark), `reached` and `mark`
only read the environment.

Points:

  write.<file>               any file written with `rundir.atomic_path` (checkpoints,
                             run_state.json, results.json, the reports…): its
                             temporary copy is whole, not yet renamed
  train.lambdas.step_<s>     the λ row of global step s is appended to lambdas.csv
  train.metrics.epoch_<e>    the row of epoch e is appended to metrics.csv
  train.checkpoint.step_<s>  the checkpoint of global step s is saved, run_state.json updated
  evaluate.cell              a CIFAR-10-C cell's result (or a clean set's) is in the
                             partial results file
  evaluate.cell_write        the partial results file's new version is written, not yet renamed
  evaluate.reports           every report is written, the partial results file not yet removed
  tune.<file>                a keras-tuner state file (tune.oracle.json, tune.trial.json,
                             tune.tuner0.json) is written, not yet renamed
  tune.trial_end             a trial has ended and keras-tuner has recorded it
  study.run                  a run of the study is trained and scored

Marks (`mark`; timed, never killed at):

  train.first_step           the first training step of this process is done
  export.written             the SavedModel export is written (before its verification)
"""

import collections
import os
import signal
import time

ENV = "ROBUST_SSL_KILL_AT"
TRACE = "ROBUST_SSL_KILL_TRACE"
MARKS = "ROBUST_SSL_TIME_MARKS"

_passes = collections.Counter()


def reached(point):
    """Counts a pass through `point`; SIGKILLs this process on the pass ROBUST_SSL_KILL_AT names.

    Args:
      point: the point's name (see the module docstring).
    """
    mark(point)
    spec, trace = os.environ.get(ENV), os.environ.get(TRACE)
    if not spec and not trace:
        return
    _passes[point] += 1
    if trace:
        with open(trace, "a") as f:
            f.write(point + "\n")
    if not spec:
        return
    name, _, count = spec.rpartition(":")
    if name == point and count.isdigit() and _passes[point] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)


def mark(point):
    """Appends "<point><TAB><Unix time>" to the file ROBUST_SSL_TIME_MARKS names (if it names one).

    Args:
      point: the moment's name (see the module docstring).
    """
    path = os.environ.get(MARKS)
    if path:
        with open(path, "a") as f:
            f.write(f"{point}\t{time.time():.6f}\n")
