"""The lock of a workdir: one process trains in a folder at a time (`workdir_lock`).

<workdir>/.lock (LOCK) holds the pid, host and start of the process training
there. A second process finds it and is refused; a lock left by a process of
this host that no longer exists (killed, crashed) is taken over with one
warning line. The lock file is created whole (a hard link of a finished
temporary file), so no reader ever sees half of it.
"""

import contextlib
import datetime
import itertools
import json
import os
import socket

from robust_ssl.errors import UserError

LOCK = ".lock"
_tmp_counter = itertools.count()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_lock(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return {"pid": int(data["pid"]), "host": str(data["host"]), "started": str(data.get("started", "?"))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True
    return True


def _create_exclusive(tmp, path):
    """Creates `path` with the contents of `tmp`; FileExistsError if `path` exists."""
    try:
        os.link(tmp, path)  # atomic, and never a half-written lock
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f, open(tmp) as src:
            f.write(src.read())


@contextlib.contextmanager
def workdir_lock(workdir):
    """Holds <workdir>/.lock (pid, host, start time) while a run trains in `workdir`.

    A second process finds the lock and is refused; a lock left by a process
    of this host that no longer exists (killed, crashed) is taken over with
    one warning line. The lock is removed when the block ends, also on errors.

    Args:
      workdir: the run's folder (created if missing).

    Yields:
      The lock file's path.

    Raises:
      UserError: another live process (or one on another host, which cannot
        be checked) holds the lock, or the lock file is unreadable.
    """
    from absl import logging

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK)
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "started": _now()}
    tmp = os.path.join(workdir, f".lock.{os.getpid()}-{next(_tmp_counter)}.tmp")
    with open(tmp, "w") as f:
        json.dump(mine, f)
    try:
        for _ in range(3):
            try:
                _create_exclusive(tmp, path)
                break
            except FileExistsError:
                pass
            held = _read_lock(path)
            if held is None:
                raise UserError(
                    f"{workdir} has an unreadable lock file {path}; if no run is using that folder, remove it"
                )
            if held["host"] != host or _alive(held["pid"]):
                where = f"on {held['host']}" if held["host"] != host else "on this host"
                raise UserError(
                    f"{workdir} is in use by pid {held['pid']} {where} (since {held['started']}); "
                    f"wait for it to end or use another --workdir (lock file {path})"
                )
            logging.warning(
                "taking over the stale lock of pid %d on %s (since %s), which no longer runs: %s",
                held["pid"],
                held["host"],
                held["started"],
                path,
            )
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        else:
            raise UserError(f"cannot take the lock {path}; another process keeps taking it")
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    try:
        yield path
    finally:
        held = _read_lock(path)
        if held and held["pid"] == mine["pid"] and held["host"] == host:
            with contextlib.suppress(OSError):
                os.remove(path)
