"""Surviving a kill: keras-tuner's state files written whole, a project mended before it is reloaded.

keras-tuner writes its state files (oracle.json, trial_<id>/trial.json,
tuner0.json) in place; here they are written to a temporary file and renamed
(`write_state`, installed by `atomic_trial_files` and `atomic_state_files`),
so that a kill never leaves half of one. A kill between two of its files
leaves a project keras-tuner would not reload, or would reload wrongly:
`reload_an_oracle_without_its_tuner_file` and `mend_after_kill` repair it
first. The tuner built on these: `robust_ssl.tuning.tuner`.
"""

import json
import os

from robust_ssl import killpoints, rundir

ORACLE_FILE = "oracle.json"  # keras-tuner's files in its project folder
TRIAL_FILE = "trial.json"
TUNER_FILE = "tuner0.json"  # the tuner's state (its id is "tuner0" outside parallel tuning)


def write_state(path, state):
    """Writes a keras-tuner state dict as JSON atomically; returns the text (as keras-tuner's writes do).

    keras-tuner opens its state files for writing in place: a kill inside a
    write would leave a truncated file, and the search would no longer load.
    Remote paths (gs://…) cannot be renamed into place and are written whole.

    Args:
      path: the file (local or remote).
      state: a JSON-serialisable dict (a trial's, the oracle's, the tuner's state).

    Returns:
      The JSON text written.
    """
    text = json.dumps(state)
    path = str(path)
    if "://" in path:
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return text
    with rundir.atomic_write(path) as f:
        f.write(text)
        f.flush()
        killpoints.reached(f"tune.{os.path.basename(path)}")
    return text


def atomic_trial_files():
    """Makes every trial.json write atomic (`write_state`), once per process.

    The oracle saves a trial with the public `Trial.save(fname)`, which is
    replaced by the same write through a temporary file. The oracle's and
    the tuner's own files are written by `atomic_state_files`.
    """
    from keras_tuner.engine.trial import Trial

    if getattr(Trial.save, "atomic", False):
        return

    def save(self, fname):
        return write_state(fname, self.get_state())

    save.atomic = True
    Trial.save = save


def atomic_state_files(tuner):
    """Makes the tuner write oracle.json atomically (its own file: `Recorded.save` in `tuning.tuner`).

    Args:
      tuner: a keras-tuner tuner whose project folder is set.
    """
    oracle = tuner.oracle
    path = os.path.join(tuner.project_dir, ORACLE_FILE)
    oracle.save = lambda: write_state(path, oracle.get_state())


def reload_an_oracle_without_its_tuner_file(project):
    """Lets keras-tuner reload a project whose tuner0.json the kill came before.

    keras-tuner reloads a project only when tuner0.json exists, and writes it
    after oracle.json at the end of a trial: killed between the two, the
    search would start afresh and run the finished trial again. tuner0.json
    holds a tuner's state, an empty dict for keras-tuner's tuners.

    Args:
      project: the keras-tuner project folder (<workdir>/keras_tuner).
    """
    if os.path.isfile(os.path.join(project, ORACLE_FILE)) and not os.path.exists(
        os.path.join(project, TUNER_FILE)
    ):
        rundir.write_json(os.path.join(project, TUNER_FILE), {})


def mend_after_kill(project):
    """Mends a project whose kill fell between a trial's file and oracle.json, before it is reloaded.

    keras-tuner saves a trial's trial.json, then oracle.json. Killed between them:

    - when a trial starts, the trial's file exists but the oracle never
      recorded its start: the file goes, and the oracle creates the trial
      again (same id, and with a random search the same values);
    - when a trial ends, its file says COMPLETED but the oracle still has it
      running and would run it again: oracle.json records its end as
      `Oracle.end_trial` does (no longer running, in the end order, one more
      run), and it is not run again.

    Args:
      project: the keras-tuner project folder (<workdir>/keras_tuner).

    Returns:
      The ids of the trials mended.
    """
    oracle_path = os.path.join(project, ORACLE_FILE)
    if not os.path.isfile(oracle_path):
        return []
    state = rundir.read_json(oracle_path)
    started = set(state.get("start_order", []))
    ongoing = state.get("ongoing_trials", {})
    mended = []
    for name in sorted(os.listdir(project)):
        path = os.path.join(project, name, TRIAL_FILE)
        if not (name.startswith("trial_") and os.path.isfile(path)):
            continue
        trial = rundir.read_json(path)
        trial_id = trial["trial_id"]
        if trial_id not in started:
            os.remove(path)
            mended.append(trial_id)
        elif trial["status"] == "COMPLETED" and trial_id in ongoing.values():
            state["ongoing_trials"] = {k: v for k, v in ongoing.items() if v != trial_id}
            if trial_id not in state["end_order"]:
                state["end_order"].append(trial_id)
            state["run_times"][trial_id] = state["run_times"].get(trial_id, 0) + 1
            ongoing = state["ongoing_trials"]
            mended.append(trial_id)
            write_state(oracle_path, state)
    return mended
