"""Atomic writes: a file is replaced whole or not at all.

A file rewritten whole is written into a temporary file in the same
directory, flushed and synced, then renamed over the target and the
directory synced, so that neither a reader nor a crash (even a power cut)
ever sees half a file (`atomic_path`, `atomic_write` and the writers built on
them). A process killed inside a write leaves its hidden temporary file
beside the whole target; `remove_stale_temporaries` clears those.

A run's directory (`robust_ssl.rundir`) writes its files with these; the
names are importable from there too.
"""

import contextlib
import csv
import itertools
import json
import math
import os
import re

from robust_ssl import killpoints
from robust_ssl.checkpoints import KERAS_SUFFIX

_tmp_counter = itertools.count()


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside `path`; renames it onto `path` when the block succeeds.

    The temporary file is in the same directory (so the rename is atomic) and
    hidden (a leading dot). After the block it is synced to disk and renamed
    over `path`; if the block raises, it is removed and `path` is untouched.

    Args:
      path: the file to write.
      suffix: ending of the temporary name, for writers that insist on one
        (Keras on `.keras`, numpy on `.npy`).

    Yields:
      The temporary path to write.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_tmp_counter)}.tmp{suffix}")
    try:
        yield tmp
        if os.path.isfile(tmp):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        killpoints.reached(f"write.{name}")  # the tests' kill between the copy and the rename
        os.replace(tmp, path)
        _sync_directory(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def remove_stale_temporaries(directory, recursive=False):
    """Removes the temporary files of `atomic_path` that a killed process left in `directory`.

    A process killed inside a write (SIGKILL, a power cut) leaves its hidden
    temporary file (`.<name>.<pid>-<n>.tmp…`) beside the target, which is
    whole (the previous version). A temporary file of a process that still
    runs on this host is left alone.

    Args:
      directory: where to look (nothing happens when it does not exist).
      recursive: look in its subdirectories too.

    Returns:
      The paths removed.
    """
    removed = []
    for root, _, names in os.walk(directory):
        for name in names:
            match = _TEMPORARY.match(name)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))
                    removed.append(os.path.join(root, name))
        if not recursive:
            break
    return removed


_TEMPORARY = re.compile(r"^\..+\.(\d+)-\d+\.tmp")


def _process_alive(pid):
    """Whether a process of this host has the id `pid`."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _sync_directory(directory):
    """fsyncs a directory so that a rename in it survives a power cut (where the OS allows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows, where directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """`open(path, mode)` that replaces `path` only once the file is complete (see `atomic_path`).

    Args:
      path: the file to write.
      mode: `open`'s mode ("w", "wb", …).
      **open_kwargs: forwarded to `open` (encoding, newline, …).

    Yields:
      The open temporary file.
    """
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()


def write_text(path, text):
    """Writes `text` to `path` atomically.

    Args:
      path: the file to write.
      text: its whole content.

    Returns:
      The path.
    """
    with atomic_write(path, encoding="utf-8") as f:
        f.write(text)
    return path


def _finite(value):
    """`value` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path, data, sort_keys=False):
    """Writes `data` as indented JSON atomically (NaN and infinity as null).

    Args:
      path: the file to write.
      data: JSON-serialisable data.
      sort_keys: sort the keys of every object.

    Returns:
      The path.
    """
    with atomic_write(path) as f:
        json.dump(_finite(data), f, indent=2, sort_keys=sort_keys)
    return path


def write_csv(path, rows, fields):
    """Writes dict rows under the header `fields` atomically (other keys left out).

    Args:
      path: the file to write.
      rows: dicts, one per line.
      fields: the columns, in order.

    Returns:
      The path.
    """
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_model(model, path):
    """`model.save(path)` atomically: a crash never leaves a half-written `.keras` file.

    Args:
      model: a Keras model.
      path: the `.keras` file to write.

    Returns:
      The path.
    """
    with atomic_path(path, suffix=KERAS_SUFFIX) as tmp:
        model.save(tmp)
    return path
