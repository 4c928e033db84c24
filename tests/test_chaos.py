"""Commands killed with SIGKILL mid-way and run again: they end as if never interrupted.

A kill is either a test hook (`ROBUST_SSL_KILL_AT=<point>:<n>`, see
robust_ssl/killpoints.py: the process SIGKILLs itself the n-th time it
passes a named point, e.g. between writing a file's temporary copy and
renaming it), or the test's own SIGKILL when a file shows the moment it
waits for. Nothing runs after a SIGKILL: no handler, no `finally`.

- `robust-ssl train` (AutoML, a checkpoint every step): killed at moments
  drawn with a seed from the trace of its uninterrupted run (2 by default, 10
  in the slow variant) and restarted each time; the final weights and λ are
  bit-identical, lambdas.csv identical, metrics.csv has every epoch once,
  run_state.json one entry per session, and no temporary file is left.
- `robust-ssl train` on two workers (in tests/test_multiworker.py, slow):
  worker 1 killed mid-epoch after its step checkpoint, or after its λ row
  before that checkpoint (its folder a step behind the chief's), its peer
  stopping, both restarted; both end bit-identical to the uninterrupted
  two-worker run.
- `robust-ssl evaluate`: killed after some cells, inside the write of the
  partial results, and after the reports but before the partial results are
  removed; the final robustness.json and robustness.csv equal an
  uninterrupted evaluation's.
- `robust-ssl tune`: killed between keras-tuner's state files as a trial ends
  and as the next starts (and, slow, at each of the 16 moments of a 2-trial
  search); no finished trial runs again, and trials.csv and best_lambdas.json
  equal an uninterrupted search's.
- `robust-ssl study`: killed in a run's scoring and after its reports; then
  (slow) in a run's training, its scoring and between runs; nothing finished
  is trained or scored again, and study.json, each run's robustness.json (and
  the final weights) equal an uninterrupted study's.
"""

import csv
import json
import os
import signal

import pytest
from conftest import run_cli, temporaries, tiny_config, write_config_file

from robust_ssl import killpoints
from robust_ssl.errors import UserError
from robust_ssl.robustness import evaluation, partial

# ---------------------------------------------------------------- helpers


def killed_at(point, n):
    """The environment of a command that SIGKILLs itself the n-th time it passes `point`."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", killpoints.ENV: f"{point}:{n}"}


def quiet():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


# ---------------------------------------------------------------- robust-ssl evaluate
EVALUATE = [
    "--cifar10c=generate",
    "--corruptions=gaussian_noise,fog,saturate",
    "--severities=1,5",
    "--max_images=16",
    "--adapt=none,bn,tent",
    "--adapt_batch_size=8",
    "--noprogress",
]
CELLS = 3 * 2 * 3  # corruptions x severities x modes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run (WRN-10-1 with a rotation head, 1 epoch of 2 steps)."""
    from robust_ssl.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("run")
    train_and_evaluate(tiny_config("rotation", **{"train.epochs": 1}), str(workdir))
    return str(workdir)


def evaluate(run, output_dir, env):
    return run_cli("evaluate", f"--workdir={run}", f"--output_dir={output_dir}", *EVALUATE, env=env)


def without_timings(result):
    """A robustness.json's dict without the seconds per image (a measured time, never the same)."""
    result = json.loads(json.dumps(result))
    for entry in result.get("modes", {}).values():
        entry.pop("seconds_per_image")
    for entry in result.get("adaptation", {}).values():
        entry.pop("seconds_per_image")
    return result


def read_report(output_dir):
    with open(os.path.join(output_dir, "robustness.json")) as f:
        data = json.load(f)
    with open(os.path.join(output_dir, "robustness.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    return without_timings(data), rows


def stored_cells(output_dir):
    with open(os.path.join(output_dir, partial.PARTIAL)) as f:
        return json.load(f)["cells"]


def test_a_killed_evaluation_resumes_and_ends_with_the_uninterrupted_report(run, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    proc = evaluate(run, whole, quiet())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (whole / partial.PARTIAL).exists() and not temporaries(whole)
    assert "resuming" not in proc.stdout

    # 1. Killed after its 5th write: the 3 modes' clean sets, then the first
    # cell's "none" and "bn" (its "tent" not yet).
    proc = evaluate(run, resumed, killed_at("evaluate.cell", 5))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(stored_cells(resumed)) == 5 and not (resumed / "robustness.json").exists()

    # 2. Killed inside its 3rd write, between the temporary copy and the
    # rename: the file on disk is the previous version, whole.
    proc = evaluate(run, resumed, killed_at("evaluate.cell_write", 3))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "resuming an interrupted evaluation: 2 of 18 cells" in proc.stdout
    assert len(stored_cells(resumed)) == 5 + 2 and len(temporaries(resumed)) == 1

    # 3. Killed after the reports are written, before the partial results go.
    proc = evaluate(run, resumed, killed_at("evaluate.reports", 1))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "resuming an interrupted evaluation: 4 of 18 cells" in proc.stdout
    assert len(stored_cells(resumed)) == 3 + CELLS and not temporaries(resumed)

    # 4. Every cell is reused; the reports are written again and the partial results go.
    proc = evaluate(run, resumed, quiet())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming an interrupted evaluation: {CELLS} of {CELLS} cells" in proc.stdout
    assert "with the clean set; scoring the other 0" in proc.stdout
    assert not (resumed / partial.PARTIAL).exists() and not temporaries(resumed)
    assert read_report(resumed) == read_report(whole)
    assert sorted(os.listdir(resumed)) == sorted(os.listdir(whole))


def test_partial_results_of_other_settings_are_refused_in_one_line(run, tmp_path):
    out = tmp_path / "out"
    proc = evaluate(run, out, killed_at("evaluate.cell", 4))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    spec = dict(
        workdir=run,
        output_dir=str(out),
        corruptions=("gaussian_noise",),
        severities=(1,),
        max_images=8,
        progress=False,
        log=lambda _: None,
    )
    with pytest.raises(UserError) as refused:
        evaluation.evaluate_run("generate", **spec)
    message = str(refused.value)
    assert "\n" not in message and "holds 4 finished cells of an evaluation with other settings" in message
    assert "adaptation, max_images" in message and "--overwrite to start afresh" in message
    assert len(stored_cells(out)) == 4  # left as it was

    # The tool says the same in one line, exit status 2.
    proc = run_cli(
        "evaluate", f"--workdir={run}", f"--output_dir={out}", *EVALUATE, "--max_images=8", env=quiet()
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: ") and "other settings (max_images)" in proc.stderr

    notes = []
    result, _ = evaluation.evaluate_run("generate", **{**spec, "overwrite": True, "log": notes.append})
    assert any("starting afresh" in n for n in notes)
    assert len(result["cells"]) == 1 and not (out / partial.PARTIAL).exists()


def test_a_changed_model_is_other_settings(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"one")
    args = ("generate", 8, 0, 500, None, None, False, None)
    first = partial.identity(str(model), *args)
    store = partial.PartialResults(str(tmp_path / "out"), first)
    store.put("none", "fog", 1, {"accuracy": 0.5}, 0.1, 8)
    assert partial.PartialResults(str(tmp_path / "out"), first).get("none", "fog", 1)["metrics"] == {
        "accuracy": 0.5
    }
    model.write_bytes(b"two")
    with pytest.raises(UserError, match=r"other settings \(model\)"):
        partial.PartialResults(str(tmp_path / "out"), partial.identity(str(model), *args))
    # A SavedModel directory: every file's name and bytes.
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.data").write_bytes(b"weights")
    before = partial.model_digest(str(saved))
    (saved / "variables" / "variables.data").write_bytes(b"weight2")
    assert partial.model_digest(str(saved)) != before


# ---------------------------------------------------------------- robust-ssl tune
# A random search of 2 trials of 1 epoch of 2 steps (WRN-10-1, rotation and ir).
TUNE_VALIDATION = {
    "automl.validation.source": "corrupted_holdout",
    "automl.validation.corruptions": "gaussian_blur,saturate",
    "automl.validation.severities": "1,5",
}
TUNE = ["--tuner=random", "--max_trials=2", "--epochs=1", "--steps_per_epoch=2"]
# The moments of one trial, in the order keras-tuner passes them: a state file
# is written (to its temporary copy) before the point of its name, and renamed after.
TRIAL_MOMENTS = [
    "tune.trial.json",  # the trial starts: RUNNING
    "tune.oracle.json",  # the oracle records its start
    "tune.trial.json",  # its epoch's metrics
    "tune.trial.json",  # COMPLETED
    "tune.oracle.json",  # the oracle records its end
    "tune.oracle.json",  # the tuner saves the oracle
    "tune.tuner0.json",  # and itself
    "tune.trial_end",
]


@pytest.fixture(scope="module")
def tune_config(tmp_path_factory):
    return write_config_file(
        tmp_path_factory.mktemp("tune_config") / "tiny_tune.py", "rotation,ir", **TUNE_VALIDATION
    )


@pytest.fixture(scope="module")
def whole_search(tmp_path_factory, tune_config):
    """The uninterrupted search, with the moments it passed (ROBUST_SSL_KILL_TRACE)."""
    workdir = tmp_path_factory.mktemp("whole_search")
    trace = workdir.parent / "whole_search.trace"
    env = {**quiet(), killpoints.TRACE: str(trace)}
    proc = run_cli("tune", f"--config={tune_config}", f"--workdir={workdir}", *TUNE, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, [point for point in trace.read_text().split() if point.startswith("tune.")]


def tune(config, workdir, env):
    return run_cli("tune", f"--config={config}", f"--workdir={workdir}", *TUNE, env=env)


def search_outcome(workdir):
    """What a search found, without times: trials.csv rows and best_lambdas.json."""
    with open(workdir / "trials.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]
    best = json.loads((workdir / "best_lambdas.json").read_text())
    return rows, best


def test_the_search_passes_the_moments_the_chaos_tests_kill_at(whole_search):
    _, trace = whole_search
    assert trace == TRIAL_MOMENTS * 2


def test_a_search_killed_between_its_state_files_resumes_without_redoing_a_trial(
    tmp_path, tune_config, whole_search
):
    whole, _ = whole_search
    workdir = tmp_path / "search"
    # 1. Killed as trial 0 ends: its trial.json says COMPLETED, oracle.json
    # still has it running, and tuner0.json (keras-tuner reloads only with
    # it) was never written.
    proc = tune(tune_config, workdir, killed_at("tune.oracle.json", 2))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    trial_0 = (workdir / "keras_tuner" / "trial_0" / "trial.json").read_text()
    assert json.loads(trial_0)["status"] == "COMPLETED"
    assert not (workdir / "keras_tuner" / "tuner0.json").exists()
    assert len(temporaries(workdir)) == 1

    # 2. Resumed: trial 0 is not run again (the oracle records its end: the
    # first oracle.json). Killed as trial 1 starts: its trial.json exists,
    # the oracle never recorded its start (the second).
    proc = tune(tune_config, workdir, killed_at("tune.oracle.json", 2))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert json.loads((workdir / "keras_tuner" / "trial_1" / "trial.json").read_text())["status"] == "RUNNING"

    # 3. Resumed: trial 1 runs (with the values it was given), and the search
    # ends as the uninterrupted one.
    proc = tune(tune_config, workdir, quiet())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (workdir / "keras_tuner" / "trial_0" / "trial.json").read_text() == trial_0
    sessions = json.loads((workdir / "search.json").read_text())["sessions"]
    assert [s["trials_run"] for s in sessions] == [["0"], [], ["1"]]
    assert search_outcome(workdir) == search_outcome(whole)
    assert not temporaries(workdir)


# ---------------------------------------------------------------- robust-ssl study
STUDY_SETTINGS = [
    "--set=data.source=synthetic",
    "--set=data.num_train=64",
    "--set=data.num_test=24",
    "--set=model.depth=10",
    "--set=model.width=1",
    "--set=train.epochs=1",
    "--set=train.steps_per_epoch=2",
    "--set=train.batch_size=16",
    "--set=train.eval_batch_size=24",
    "--set=train.verbose=0",
    "--set=train.log_every_steps=1",
]


def study(workdir, env, *args):
    # Settings of `args` come after the common ones: the last --set of a key wins.
    return run_cli("study", f"--workdir={workdir}", *STUDY_SETTINGS, *args, env=env, timeout=900)


def study_outcome(workdir):
    """study.json without times and paths, and each run's robustness.json without its paths."""
    saved = json.loads((workdir / "study.json").read_text())
    for row in saved["table"]:
        row.pop("wall_time_s"), row.pop("wall_time_s_std")
    for row in saved["runs"]:
        row.pop("wall_time_s"), row.pop("run")
    scores = {}
    for path in sorted(workdir.glob("*/seed_*/robustness/robustness.json")):
        result = json.loads(path.read_text())
        result["settings"].pop("model"), result["settings"].pop("source")  # paths in the study's folder
        scores[str(path.relative_to(workdir))] = result
    return saved, scores


def test_a_study_killed_while_scoring_resumes_its_cells_and_ends_as_the_uninterrupted_one(tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    proc = study(whole, quiet(), "--configs=baseline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = resumed / "baseline" / "seed_0"

    # 1. Killed in the middle of the run's 95 cells (the clean set, then 39).
    proc = study(resumed, killed_at("evaluate.cell", 40), "--configs=baseline")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    trained = os.path.getmtime(run / "results.json")
    assert len(stored_cells(run / "robustness")) == 40
    assert not (run / "robustness" / "robustness.json").exists()

    # 2. Killed once the reports are written, before the partial results go:
    # robustness.json is there, but the scoring is not taken as finished.
    proc = study(resumed, killed_at("evaluate.reports", 1), "--configs=baseline")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert "[baseline] resuming an interrupted evaluation: 39 of 95 cells" in proc.stdout
    assert (run / "robustness" / "robustness.json").exists() and partial.unfinished(run / "robustness")

    # 3. Ends: nothing retrained, every cell reused, the table of the uninterrupted study.
    proc = study(resumed, quiet(), "--configs=baseline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[baseline] resuming an interrupted evaluation: 95 of 95 cells" in proc.stdout
    assert "training into" not in proc.stdout and os.path.getmtime(run / "results.json") == trained
    assert not partial.unfinished(run / "robustness") and not temporaries(resumed)
    assert study_outcome(resumed) == study_outcome(whole)


@pytest.mark.slow
def test_a_study_killed_in_training_scoring_and_between_runs_ends_as_the_uninterrupted_one(tmp_path):
    """Two recipes, 2 epochs of 2 steps with a checkpoint after every step; about 3 minutes on 2 cores."""
    import subprocess
    import sys
    import time

    import numpy as np

    from robust_ssl import rundir

    recipes = ["--configs=baseline", "--entry=rot=rotation:task_weights.rotation=1.0"]
    extra = ["--set=train.epochs=2", "--set=train.checkpoint_every_steps=1", "--set=train.keep_checkpoints=4"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    proc = study(whole, quiet(), *recipes, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # 1. Killed by the test in the second recipe's training, once its first
    # step checkpoint is there.
    args = [
        sys.executable,
        "-m",
        "robust_ssl.cli",
        "study",
        f"--workdir={resumed}",
        *recipes,
        *STUDY_SETTINGS,
    ]
    child = subprocess.Popen(
        [*args, *extra], env=quiet(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    step = resumed / "rot" / "seed_0" / "checkpoints" / "epoch_000_step_0000001.keras"
    deadline = time.time() + 600
    while not step.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL and step.exists()
    assert not (resumed / "rot" / "seed_0" / "results.json").exists()

    # 2. Resumed (baseline untouched), killed in rot's scoring; 3. killed
    # after rot, before the table; 4. ends.
    baseline_trained = os.path.getmtime(resumed / "baseline" / "seed_0" / "results.json")
    for env in (killed_at("evaluate.cell", 30), killed_at("study.run", 2), quiet()):
        proc = study(resumed, env, *recipes, *extra)
        assert proc.returncode == (0 if env == quiet() else -signal.SIGKILL), proc.stderr[-3000:]
        assert "[baseline] training into" not in proc.stdout and "[baseline] scoring" not in proc.stdout
    assert os.path.getmtime(resumed / "baseline" / "seed_0" / "results.json") == baseline_trained
    assert study_outcome(resumed) == study_outcome(whole)
    for label in ("baseline", "rot"):
        a = rundir.load_model(str(whole / label / "seed_0" / "model.keras"))
        b = rundir.load_model(str(resumed / label / "seed_0" / "model.keras"))
        for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
            np.testing.assert_array_equal(x, y)
    assert not temporaries(resumed)


def _moments(points):
    """(point, n): the n-th pass through each point, for every entry of `points`."""
    seen = {}
    out = []
    for point in points:
        seen[point] = seen.get(point, 0) + 1
        out.append((point, seen[point]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point, n", _moments(TRIAL_MOMENTS * 2), ids=lambda v: str(v))
def test_a_search_killed_at_any_moment_ends_as_the_uninterrupted_one(
    tmp_path, tune_config, whole_search, point, n
):
    """Every moment of the 2-trial search in turn (16; about 30 s each on 2 cores)."""
    whole, _ = whole_search
    workdir = tmp_path / "search"
    proc = tune(tune_config, workdir, killed_at(point, n))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    finished = {
        path: path.read_text()
        for path in (workdir / "keras_tuner").glob("trial_*/trial.json")
        if json.loads(path.read_text())["status"] == "COMPLETED"
    }
    proc = tune(tune_config, workdir, quiet())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {path: path.read_text() for path in finished} == finished  # not run again
    assert search_outcome(workdir) == search_outcome(whole)
    assert not temporaries(workdir)


# ---------------------------------------------------------------- robust-ssl train: a chaos run
STEPS_PER_EPOCH = 2  # tiny_settings' train.steps_per_epoch


def train_cli(config, workdir, env):
    return run_cli("train", f"--config={config}", f"--workdir={workdir}", env=env)


def resumed_from(workdir):
    """The global step of the newest checkpoint in a run's folder (0: none)."""
    from robust_ssl import checkpoints

    newest = checkpoints.latest_checkpoint(str(workdir / "checkpoints"))
    if newest is None:
        return 0
    step = checkpoints.checkpoint_step(newest)
    return step if step is not None else checkpoints.checkpoint_epoch(newest) * STEPS_PER_EPOCH


def kill_point(reference, position, start_step):
    """The (point, n) of a session resumed from `start_step` that is moment `position` of the reference.

    A session resumed from step r passes the moments of the uninterrupted run
    after its checkpoint of step r, after a start of its own that writes
    run_state.json once (config.json, meta_validation.json and the cut logs
    are not drawn after the first moments).

    Returns:
      (point, n), or None when the session never passes that moment (it lies
      before where the session starts).
    """
    start = 0
    if start_step:
        start = reference.index(f"train.checkpoint.step_{start_step}") + 1
    if position < start:
        return None
    point = reference[position]
    n = reference[start : position + 1].count(point)
    if start_step and point == "write.run_state.json":
        n += 1  # the session's own first record
    return point, n


def chaos_run(tmp_path, kills, seed, **settings):
    """An AutoML run killed at `kills` moments drawn with `seed` from its uninterrupted run, each time restarted.

    Returns:
      (reference workdir, chaos workdir, the (point, n, resumed step) of every kill, sessions recorded).
    """
    import random

    config = write_config_file(
        tmp_path / "chaos.py",
        "rotation",
        automl=True,
        **{"train.checkpoint_every_steps": 1, "train.keep_checkpoints": 2, "train.eval_every_epoch": False},
        **settings,
    )
    reference, chaos = tmp_path / "reference", tmp_path / "chaos"
    trace = tmp_path / "reference.trace"
    proc = train_cli(config, reference, {**quiet(), killpoints.TRACE: str(trace)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    moments = trace.read_text().split()
    drawn = sorted(random.Random(seed).sample(range(len(moments)), kills))
    killed, recorded = [], 0
    for position in drawn:
        start = resumed_from(chaos) if chaos.exists() else 0
        target = kill_point(moments, position, start)
        if target is None:
            continue  # before where this session starts: the next drawn moment
        session_trace = tmp_path / f"session_{len(killed)}.trace"
        env = {**killed_at(*target), killpoints.TRACE: str(session_trace)}
        proc = train_cli(config, chaos, env)
        assert proc.returncode == -signal.SIGKILL, (target, proc.stderr[-3000:])
        passed = session_trace.read_text().split()
        assert passed[-1] == target[0] and passed.count(target[0]) == target[1]
        # The session is in run_state.json once its first record is written whole.
        recorded += passed.count("write.run_state.json") - (target[0] == "write.run_state.json") > 0
        killed.append((*target, start))
    proc = train_cli(config, chaos, quiet())
    assert proc.returncode == 0, proc.stderr[-3000:]
    print("killed at (point, pass, resumed from step):", killed)  # shown with -s or on failure
    return reference, chaos, killed, recorded + 1


def assert_ends_as_the_uninterrupted_run(reference, chaos, recorded, steps):
    import numpy as np

    from robust_ssl import rundir

    a = rundir.load_model(str(reference / "model.keras"))
    b = rundir.load_model(str(chaos / "model.keras"))
    for x, y in zip(a.weights, b.weights, strict=True):  # λ and the trunk, bit for bit
        np.testing.assert_array_equal(np.asarray(x.numpy()), np.asarray(y.numpy()), err_msg=x.path)
    assert a.lambda_values() == b.lambda_values()
    # λ per step: every step once, with the uninterrupted run's values.
    assert (chaos / "lambdas.csv").read_text() == (reference / "lambdas.csv").read_text()
    with open(chaos / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, steps // STEPS_PER_EPOCH + 1))
    state = json.loads((chaos / "run_state.json").read_text())
    assert len(state["sessions"]) == recorded and state["sessions"][-1]["steps"] == steps
    assert json.loads((chaos / "results.json").read_text())["steps"] == steps
    assert not temporaries(chaos)


def test_a_run_killed_at_two_moments_ends_bit_identical_to_the_uninterrupted_one(tmp_path):
    """Seed 3 draws moments 7 and 18 of 24: after step 2's λ row (before its
    checkpoint), and inside the write of epoch_002.keras."""
    reference, chaos, killed, recorded = chaos_run(tmp_path, kills=2, seed=3)
    assert [point for point, _, _ in killed] == ["train.lambdas.step_2", "write.epoch_002.keras"]
    assert_ends_as_the_uninterrupted_run(reference, chaos, recorded, steps=4)


@pytest.mark.slow
def test_a_run_killed_at_ten_moments_ends_bit_identical_to_the_uninterrupted_one(tmp_path):
    """3 epochs of 2 steps, 10 moments drawn with seed 0 (about 3 minutes on 2 cores)."""
    reference, chaos, killed, recorded = chaos_run(tmp_path, kills=10, seed=0, **{"train.epochs": 3})
    assert len(killed) >= 8, killed
    assert_ends_as_the_uninterrupted_run(reference, chaos, recorded, steps=6)
