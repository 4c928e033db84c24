"""Quiet start-up of the command-line tools: TensorFlow's C++ logs hidden by default.

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` once, when it is imported. `import
robust_ssl` imports no TensorFlow, so `robust_ssl.cli` sets the level from
`--log_level` (`start`) before anything imports TensorFlow; a program that
imports the package is left as it is.

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


def set_tf_cpp_level(level, explicit):
    """Sets TF_CPP_MIN_LOG_LEVEL for `level` (kept if set in the environment and not explicit)."""
    if explicit or "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3" if level == "warning" else "0"


def start_tensorflow(level):
    """Imports TensorFlow for a command: at the default level with its start-up lines hidden.

    TensorFlow 2.21 writes its start-up lines through absl's C++ logging before
    `TF_CPP_MIN_LOG_LEVEL` is consulted, so at the default level TensorFlow
    and Keras are imported here with file descriptor 2 silenced
    (`import_tensorflow_quietly`); at another level, or where the environment
    asks for TensorFlow's logs, they are left to the command's first import.
    Called by `robust_ssl.cli` after `set_tf_cpp_level`.

    Args:
      level: one of LEVELS.
    """
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
