"""Quiet start-up of the command-line tools: TensorFlow's C++ logs hidden by default.

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` once, when it is imported, and
`import robust_ssl` imports it (through Keras). So the console script's level
is set here, from `--log_level` on the command line, before that import; and
only for the command-line tools (`robust-ssl`, `python -m robust_ssl…`,
`tools/*.py`), never for a program that imports the package.

Levels (`--log_level`, anywhere before `--`):
  warning  the default: TensorFlow's C++ start-up lines hidden (oneDNN, CUDA,
           cuInit, CPU features), Python warnings and errors shown;
  info     TensorFlow's C++ logs shown, and robust_ssl's progress notes;
  debug    as info, with absl's debug messages.
An explicit `TF_CPP_MIN_LOG_LEVEL` in the environment wins over the default
(not over an explicit --log_level).
"""

import os
import sys

LEVELS = ("warning", "info", "debug")
DEFAULT = "warning"
FLAG = "--log_level"


def requested_level(argv):
    """The `--log_level` value in argv (DEFAULT without one), unchecked; stops at `--`."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith(FLAG + "="):
            return arg[len(FLAG) + 1 :]
        if arg == FLAG and i + 1 < len(argv):
            return argv[i + 1]
    return None


def is_command_line(argv0):
    """Whether argv[0] is one of robust_ssl's command-line tools (when the package is imported).

    `python -m robust_ssl[.cli]` imports the package while argv[0] is still "-m".
    """
    name = os.path.basename(argv0 or "")
    if name in ("robust-ssl", "robust-ssl.exe") or argv0 == "-m":
        return True
    return os.path.basename(os.path.dirname(os.path.abspath(argv0 or "."))) == "tools" and name.endswith(
        ".py"
    )


def set_tf_cpp_level(level, explicit):
    """Sets TF_CPP_MIN_LOG_LEVEL for `level` (kept if set in the environment and not explicit)."""
    if explicit or "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3" if level == "warning" else "0"


def at_import():
    """Called by `robust_ssl/__init__` before TensorFlow is imported.

    For the command-line tools at the default level, TensorFlow and Keras are
    imported here with the process's stderr (file descriptor 2) sent to a
    temporary file: TensorFlow 2.21 writes its start-up lines through absl's
    C++ logging before `TF_CPP_MIN_LOG_LEVEL` is consulted. Should the import
    fail, what it wrote is replayed before the error.
    """
    if not is_command_line(sys.argv[0] if sys.argv else ""):
        return
    level = requested_level(sys.argv[1:])
    level = level if level in LEVELS else DEFAULT
    set_tf_cpp_level(level, explicit=requested_level(sys.argv[1:]) in LEVELS)
    if level == DEFAULT and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3" and "tensorflow" not in sys.modules:
        import_tensorflow_quietly()


def import_tensorflow_quietly():
    """Imports tensorflow and keras with file descriptor 2 silenced (replayed on failure)."""
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr: import as usual
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def apply_python_level(level):
    """Sets absl's and TensorFlow's Python log levels for `level` (one of LEVELS)."""
    from absl import logging

    logging.set_verbosity({"warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}[level])


def keras_verbose(verbose="auto", stream=None):
    """The Keras `verbose` for a config's `train.verbose`.

    Args:
      verbose: 0, 1, 2 or "auto".
      stream: the output checked for a terminal (default: sys.stdout).

    Returns:
      `verbose` itself, or for "auto": 1 (progress bar) when the output is a
      terminal, 2 (one line per epoch, no carriage returns) when it is a file or a pipe.
    """
    if verbose != "auto":
        return verbose
    stream = sys.stdout if stream is None else stream
    try:
        return 1 if stream.isatty() else 2
    except (AttributeError, ValueError):  # a closed or unusual stream
        return 2
