"""search.json's account of a λ search: sessions, wall and CPU time, each trial's time.

The tuner (`robust_ssl.tuning.tuner`) reports trial starts and ends to a
`Recorder`, the hypermodel every epoch's end; each report rewrites search.json,
so a killed search loses at most one epoch of its account.
"""

import datetime
import os
import time

from robust_ssl import rundir


def device():
    """Which device the trials run on: model.fit without a strategy uses one.

    Returns:
      {"kind": "GPU" or "CPU", "count": 1}.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"kind": "GPU" if gpus else "CPU", "count": 1}


class Recorder:
    """Keeps <workdir>/search.json current: sessions, wall and CPU time, trial times.

    Time is accumulated over sessions (a resumed search adds to it) and written
    at every trial start, epoch end and trial end, so a killed search loses at
    most one epoch of its account.

    Args:
      path: the search.json file; an existing one (a resumed search) is extended.
      header: the search's settings, written over those in the file.
      wall0, cpu0: `time.time()` and `time.process_time()` when this session
        began (None: now).

    Attributes:
      state: the search.json dict.
      session: this session's entry of `state["sessions"]`.
    """

    def __init__(self, path, header, wall0=None, cpu0=None):
        self.path = path
        self.state = rundir.read_json(path) if os.path.exists(path) else {}
        self.state.update(header)
        self.state.setdefault("sessions", [])
        self.state.setdefault("trials", {})
        self._wall0 = time.time() if wall0 is None else wall0
        self._cpu0 = time.process_time() if cpu0 is None else cpu0
        self.session = {
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "wall_time_s": 0.0,
            "cpu_time_s": 0.0,
            "trials_run": [],
        }
        self.state["sessions"].append(self.session)
        self._trial = None
        self.save()

    def trial_begin(self, trial_id):
        """Notes that a trial starts (its clock starts) and saves.

        Args:
          trial_id: keras-tuner's id of the trial.
        """
        self._trial = (trial_id, time.time(), time.process_time())
        if trial_id not in self.session["trials_run"]:
            self.session["trials_run"].append(trial_id)
        self.save()

    def trial_end(self, trial_id):
        """Records a trial's wall and CPU time and saves.

        Args:
          trial_id: keras-tuner's id of the trial that `trial_begin` started.
        """
        if self._trial and self._trial[0] == trial_id:
            _, wall0, cpu0 = self._trial
            # A retried trial (interrupted earlier) keeps its latest, complete run's time.
            self.state["trials"][trial_id] = {
                "wall_time_s": round(time.time() - wall0, 2),
                "cpu_time_s": round(time.process_time() - cpu0, 2),
            }
        self._trial = None
        self.save()

    def save(self):
        """Brings the session's and the search's totals up to now and writes search.json."""
        self.session["wall_time_s"] = round(time.time() - self._wall0, 2)
        self.session["cpu_time_s"] = round(time.process_time() - self._cpu0, 2)
        wall = sum(s["wall_time_s"] for s in self.state["sessions"])
        cpu = sum(s["cpu_time_s"] for s in self.state["sessions"])
        devices = self.state.get("device", {}).get("count", 1)
        self.state.update(
            wall_time_s=round(wall, 2),
            cpu_hours=round(cpu / 3600, 6),
            device_hours=round(wall * devices / 3600, 6),
        )
        rundir.write_json(self.path, self.state)
