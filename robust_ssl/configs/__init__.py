"""Experiment configs, addressable by name or by file.

Each module of this package is one experiment whose `get_config()` returns an
ml_collections ConfigDict: `default` holds the paper's hyper-parameters and
every other config imports it (`from robust_ssl.configs import default`) and
changes little. `names()` lists them.

A `--config` value of the command-line tools is either

  - a name: `smoke`, `automl4`, … (a module of this package), or
  - a file: any value that contains a path separator or ends in `.py`,
    absolute or relative to the current directory,

optionally followed by `:argument`, which ml_collections passes to
`get_config` (`file.py:argument`). Overrides such as `--config.train.epochs=1`
work with both. For the repository layout of earlier versions, the relative
path `configs/<name>.py` of a packaged config, where no such file exists, is
read as that config, so old commands like `--config=configs/smoke.py` work.

How the flag accepts names: ml_collections' `config_flags.DEFINE_config_file`
loads its value as a file path, and its flag class is private (no public
hook for another lookup). So the commands keep that flag unchanged and
`resolve_argv` rewrites the `--config` argument into the absolute path of
the file before absl parses the command line. The flag then only ever sees a
path, and everything of ml_collections works as documented: the overrides,
`file.py:argument`, and `config_flags.get_config_filename`, which gives the
resolved path (the λ search records it, and `best_config.py` imports a
packaged config by its module name, see `name_of`). An unknown name fails
before any file is loaded, with one line naming the known configs.
"""

import importlib.machinery
import importlib.util
import os

from robust_ssl.errors import UserError

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
DEFAULT = "default"
FLAG = "config"


class UnknownConfigError(UserError):
    """A config name that is not packaged, or a config file that does not exist."""


def names():
    """The names of the packaged configs, sorted."""
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(DIRECTORY)
        if name.endswith(".py") and not name.startswith("_")
    )


def path(name):
    """The file of the packaged config `name`; UnknownConfigError if there is none."""
    if name not in names():
        raise UnknownConfigError(
            f"unknown config {name!r}; known configs: {', '.join(names())} (or the path of a .py file)"
        )
    return os.path.join(DIRECTORY, name + ".py")


def is_path(value):
    """Whether a `--config` value (without `:argument`) means a file rather than a name."""
    return value.endswith(".py") or os.sep in value or (os.altsep is not None and os.altsep in value)


def resolve(name_or_path):
    """The absolute path of a config given by name or by file, `:argument` kept.

    Args:
      name_or_path: `name`, `name:argument`, `path.py` or `path.py:argument`;
        a relative path is relative to the current directory.

    Returns:
      `/absolute/path.py` or `/absolute/path.py:argument`.

    Raises:
      UnknownConfigError: an unknown name or a file that does not exist.
    """
    value, colon, arg = name_or_path.partition(":")
    if not value:
        raise UnknownConfigError(f"empty config; known configs: {', '.join(names())}")
    if not is_path(value):
        return path(value) + colon + arg
    file = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(file):
        old_dir, old_file = os.path.split(os.path.normpath(value))
        old_name, ext = os.path.splitext(old_file)
        if old_dir == "configs" and ext == ".py" and old_name in names():
            file = path(old_name)  # the repository's old configs/<name>.py
        else:
            raise UnknownConfigError(f"config file {value} not found")
    return file + colon + arg


def name_of(file):
    """The name of a packaged config file (`path.py[:argument]` accepted), else None."""
    file = os.path.realpath(file.partition(":")[0])
    if os.path.dirname(file) != os.path.realpath(DIRECTORY):
        return None
    name = os.path.splitext(os.path.basename(file))[0]
    return name if name in names() else None


def load(name_or_path):
    """Calls `get_config()` of a config given by name or file, as the `--config` flag does.

    Returns:
      The ConfigDict (unlocked).
    """
    file, _, arg = resolve(name_or_path).partition(":")
    name = name_of(file)
    if name is not None:
        module = importlib.import_module(f"{__name__}.{name}")
    else:
        # Any file name, as ml_collections reads it (spec_from_file_location wants a .py).
        loader = importlib.machinery.SourceFileLoader(f"_robust_ssl_config_{abs(hash(file))}", file)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config file {file} defines no get_config()")
    return module.get_config(*([arg] if arg else []))


def help_text(what="Experiment config"):
    """Help of a `--config` flag: what it takes and the known names."""
    return (
        f"{what}: a name ({', '.join(names())}) or the path of a .py file, optionally "
        f"`:argument`; override any field with --{FLAG}.<key>=<value> (`robust-ssl show-config` lists them)."
    )


def resolve_argv(argv, flag=FLAG):
    """Command-line arguments with the value of `--<flag>` resolved to an absolute path.

    Accepts absl's four spellings (`--config=x`, `--config x`, `-config=x`,
    `-config x`) and stops at `--`. Overrides (`--config.train.epochs=1`) and
    every other argument are left as they are.

    Args:
      argv: the arguments, without the program name.
      flag: the name of the config flag.

    Returns:
      A new list.

    Raises:
      UnknownConfigError: an unknown name or a missing file.
    """
    out, i = [], 0
    spellings = (f"--{flag}", f"-{flag}")
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out += argv[i:]
            break
        if arg in spellings and i + 1 < len(argv):
            out += [arg, resolve(argv[i + 1])]
            i += 2
            continue
        key, eq, value = arg.partition("=")
        out.append(f"{key}={resolve(value)}" if eq and key in spellings else arg)
        i += 1
    return out
