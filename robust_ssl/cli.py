"""The `robust-ssl` console script, and behaviour shared by its commands.

  robust-ssl train --config=smoke --workdir=runs/smoke
  robust-ssl evaluate --workdir=runs/smoke --cifar10c=generate
  robust-ssl <command> --help

`main` dispatches on the first argument: it imports only that command's module
(`robust_ssl.commands.<command>`, whose absl flags are then the only ones
defined) and runs its `main` with absl. A command with a config flag (its
module's `CONFIG_FLAG` names it) accepts a config name or file: `main`
resolves the flag's value with `robust_ssl.configs.resolve_argv` before absl
parses the arguments (the default config where none is named). A command's
module imports no TensorFlow, so `--help` answers at once; before running a
command `main` sets TensorFlow's log level (`--log_level`) and imports it
with its start-up lines hidden, unless the module says `USES_TENSORFLOW =
False`. Paths on the command line are relative to the current directory.
Also runnable as `python -m robust_ssl` or `python -m robust_ssl.cli`.
"""

import contextlib
import importlib
import os
import sys

from robust_ssl.errors import UserError

PROG = "robust-ssl"
HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")


@contextlib.contextmanager
def user_errors():
    """Turns a UserError into `error: <message>` on stderr and exit status 2."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _files_under(directory):
    """The relative paths of every file and folder under `directory` (None if it does not exist)."""
    if not os.path.isdir(directory):
        return None
    found = set()
    for root, dirs, files in os.walk(directory):
        rel = os.path.relpath(root, directory)
        found.update(os.path.normpath(os.path.join(rel, name)) for name in dirs + files)
    return found


@contextlib.contextmanager
def workdir_kept_on_start_failure(workdir):
    """On a UserError before training has written a checkpoint, removes what the run added to `workdir`.

    Most mistakes are found before anything is written (`robust_ssl.preflight`);
    this undoes the rest (a data folder without images, a hold-out larger than
    the data, …), so that a failed start leaves the workdir as it was and the
    corrected command starts cleanly. Files that were there before are never
    touched; once a checkpoint exists, nothing is removed.

    Args:
      workdir: the run's directory.
    """
    import shutil

    from robust_ssl.errors import TrainingDivergedError
    from robust_ssl.rundir import CHECKPOINTS

    before = _files_under(workdir)
    try:
        yield
    except UserError as e:
        if not isinstance(e, TrainingDivergedError):
            after = _files_under(workdir) or set()
            added = after - (before or set())
            if not any(
                p.startswith(CHECKPOINTS + os.sep) or os.sep + CHECKPOINTS + os.sep in p for p in added
            ):
                if before is None:
                    shutil.rmtree(workdir, ignore_errors=True)
                else:
                    for rel in sorted(added, key=len, reverse=True):  # files and sub-folders first
                        path = os.path.join(workdir, rel)
                        if os.path.isdir(path) and not os.path.islink(path):
                            shutil.rmtree(path, ignore_errors=True)
                        elif os.path.lexists(path):
                            os.remove(path)
        raise


@contextlib.contextmanager
def lost_workers(config, workdir):
    """Turns a lost peer of a multi-worker run into a UserError: one line, naming it.

    Args:
      config: the run's ConfigDict (only `distribute=multi_worker` is affected).
      workdir: the run's directory (to name the checkpoint a restart resumes from).
    """
    try:
        yield
    except Exception as e:
        if config.get("distribute", "none") != "multi_worker":
            raise
        from robust_ssl import distribute, rundir

        if not distribute.is_lost_peer_error(e):
            raise
        path = rundir.latest_checkpoint(os.path.join(workdir, rundir.CHECKPOINTS))
        epoch = rundir.checkpoint_epoch(path) if path else None
        raise UserError(distribute.lost_worker_message(e, epoch)) from None


INTERRUPTED_STATUS = 130  # 128 + SIGINT, as shells report a Ctrl-C


def interrupted_message(workdir):
    """The one line `robust-ssl train` prints on Ctrl-C: what is saved, and how to resume.

    Args:
      workdir: the run's directory.

    Returns:
      `interrupted: kept <checkpoint> (…); run the same command to resume from it`,
      or, before the first checkpoint, that the same command starts afresh.
    """
    from robust_ssl import rundir

    path = rundir.latest_checkpoint(os.path.join(workdir, rundir.CHECKPOINTS)) if workdir else None
    if path is None:
        return (
            "interrupted before the first checkpoint: nothing to resume from; "
            "the same command starts the run afresh"
        )
    step = rundir.checkpoint_step(path)
    where = f"epoch {rundir.checkpoint_epoch(path)}" + ("" if step is None else f" and step {step}")
    done = " (training had finished)" if os.path.isfile(os.path.join(workdir, rundir.MODEL)) else ""
    return (
        f"interrupted: the run is saved up to {where} in {path}{done}; run the same command to resume from it"
    )


def summary(results, workdir):
    """A short human-readable end-of-run report."""
    lines = [f"clean test accuracy: {results['test_accuracy']:.4f}"]
    if results.get("lambdas"):
        lines.append("λ: " + ", ".join(f"{k}={v:.4f}" for k, v in results["lambdas"].items()))
    lines.append(f"wall time: {results['wall_time_s']:.0f} s")
    lines.append(f"outputs in {os.path.abspath(workdir)}:")
    for name in sorted(os.listdir(workdir)):
        lines.append(f"  {name}{'/' if os.path.isdir(os.path.join(workdir, name)) else ''}")
    return "\n".join(lines)


def no_arguments(argv):
    """Refuses positional arguments (argv[0] is the program): a UserError naming them."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")


def usage():
    """The short usage text of `robust-ssl`: every command with one line."""
    from robust_ssl.commands import COMMANDS

    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: {PROG} <command> [flags]",
        "",
        "Robust image classifiers trained with self-supervised auxiliary tasks and learned λ.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        f"`{PROG} <command> --help` lists a command's flags. Configs are given by name",
        f"(--config=smoke) or file (--config=path/to/config.py); `{PROG} train --help` names them,",
        f"`{PROG} show-config [--config=NAME]` lists every config key with its value and meaning.",
    ]
    return "\n".join(lines)


def command_help(name, module):
    """`robust-ssl <command> --help`: the module's description and its own flags."""
    from absl import flags

    own = flags.FLAGS.module_help(module.__name__).strip().splitlines()[1:]  # after "<module>:"
    lines = [f"usage: {PROG} {name} [flags]", "", (module.__doc__ or "").strip(), ""]
    lines += ["flags:", *own] if own else ["(no flags)"]
    lines += ["", "--helpfull also lists absl's own flags (logging, …)."]
    return "\n".join(lines)


def _with_default_config(args, flag):
    """`args` with `--<flag>=default` in front when they give no `--<flag>` (before any `--`).

    A command's config flag has no default file (ml_collections would load it
    when the flag is defined, and the packaged configs import TensorFlow, so
    `--help` would too): the default config is given here instead.

    Args:
      args: the command's arguments (without the program).
      flag: the name of the command's config flag.

    Returns:
      A new list; first, so that the overrides (`--config.<key>=…`) come after it
      as ml_collections requires.
    """
    from robust_ssl import configs

    for arg in args:
        if arg == "--":
            break
        if arg.partition("=")[0] in (f"--{flag}", f"-{flag}"):
            return list(args)
    return [f"--{flag}={configs.DEFAULT}", *args]


def _wants_help(args):
    for arg in args:
        if arg == "--":
            return False
        if arg in HELP_ARGS:
            return True
    return False


def main(argv=None):
    """Runs `robust-ssl <command> [flags]`.

    Args:
      argv: the arguments after the program name (default: sys.argv[1:]).

    Returns:
      The exit status (the command itself exits through absl).
    """
    from robust_ssl.commands import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    if name in HELP_ARGS or name == "help":
        print(usage())
        return 0
    if name == "--version":
        from robust_ssl import __version__

        print(f"{PROG} {__version__}")
        return 0
    if name not in COMMANDS:
        print(
            f"{PROG}: unknown command {name!r}; commands: {', '.join(COMMANDS)} ({PROG} --help)",
            file=sys.stderr,
        )
        return 2

    from absl import app, flags

    from robust_ssl import _quiet, configs

    rest, level = _pop_log_level(rest)
    explicit = level is not None
    level = _quiet.DEFAULT if level is None else level
    if level not in _quiet.LEVELS:
        print(f"error: --log_level must be one of {', '.join(_quiet.LEVELS)}; got {level!r}", file=sys.stderr)
        return 2
    wants_help = _wants_help(rest)
    # absl and ml_collections read sys.argv (the config flag finds its
    # overrides there), so it holds this command's arguments from here on.
    prog = f"{PROG} {name}"
    sys.argv = [prog, *rest]
    # Before anything imports TensorFlow: it reads its C++ log level once, at import.
    _quiet.set_tf_cpp_level(level, explicit)
    try:
        # A command's module imports no TensorFlow (tests/test_import.py): its
        # flags and help come at once; its main imports what it needs.
        module = importlib.import_module(f"robust_ssl.commands.{COMMANDS[name][0]}")
        config_flag = getattr(module, "CONFIG_FLAG", None)  # set by commands with a --config
        if config_flag:  # its default is given on the command line (`_with_default_config`): say which
            flags.FLAGS[config_flag].default_as_str = repr(configs.DEFAULT)
        if wants_help:
            print(command_help(name, module))
            return 0
        if getattr(module, "USES_TENSORFLOW", True):  # False: reads files only (compare, plot-lambdas)
            _quiet.start_tensorflow(level)
        if config_flag:
            with user_errors():
                try:  # a --config inside a --flagfile is resolved too
                    rest = flags.FLAGS.read_flags_from_files(rest, force_gnu=False)
                except (OSError, flags.Error) as e:
                    raise UserError(str(e)) from e
                rest = configs.resolve_argv(_with_default_config(rest, config_flag), config_flag)
            sys.argv = [prog, *rest]
        app.run(module.main, argv=sys.argv, flags_parser=_flags_parser(config_flag, level))
    except KeyboardInterrupt:  # commands that save work say what they kept (`interrupted_message`)
        print(f"interrupted: {prog} stopped", file=sys.stderr)
        return INTERRUPTED_STATUS
    return 0


def _pop_log_level(args):
    """(args without `--log_level[=| ]X`, X or None without one); stops at `--`."""
    from robust_ssl import _quiet

    out, level, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        if arg.startswith(_quiet.FLAG + "="):
            level = arg[len(_quiet.FLAG) + 1 :]
        elif arg == _quiet.FLAG and i + 1 < len(args):
            level = args[i + 1]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out, level


def _flags_parser(config_flag, level):
    """absl's flags_parser for a command: one `error:` line and status 2 for any flag mistake.

    Args:
      config_flag: the name of the command's config flag, or None.
      level: the `--log_level` (one of `robust_ssl._quiet.LEVELS`).

    Returns:
      A function(argv) -> the arguments left after the flags.
    """

    def parse(argv):
        from absl import flags

        from robust_ssl import _quiet

        try:
            args = flags.FLAGS(argv)
        except Exception as e:  # absl flag errors, ml_collections override and config-file errors
            message = _flag_error(e, argv, config_flag)
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)
        _quiet.apply_python_level(level)
        return args

    return parse


def _unquote(text):
    """A flag value without one pair of enclosing quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _config_value(argv, config_flag):
    """The value of the config flag in argv (argv[0] is the program), or the flag's default."""
    from absl import flags

    value = flags.FLAGS[config_flag].default_as_str or ""
    for i, arg in enumerate(argv[1:]):
        if arg == "--":
            break
        if arg.startswith((f"--{config_flag}=", f"-{config_flag}=")):
            value = arg.partition("=")[2]
        elif arg in (f"--{config_flag}", f"-{config_flag}") and i + 2 < len(argv):
            value = argv[i + 2]
    return _unquote(value)


def _first_line(error):
    """The first line of an exception's message ("" without one)."""
    if isinstance(error, KeyError) and error.args:  # str(KeyError) quotes its message
        text = str(error.args[0])
    else:
        text = str(getattr(error, "message", None) or error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _flag_error(error, argv, config_flag):
    """The one-line message of a failed flag parse.

    A config file that does not load is named, with its error; an unknown
    config key is named, with a hint.
    """
    from absl import flags

    from robust_ssl import config_utils, configs

    if config_flag:
        value = _config_value(argv, config_flag)
        try:
            config = configs.load(value)
        except UserError as e:
            return str(e)
        except Exception as e:  # the file's own error: not Python, get_config() failing, …
            first = _first_line(e)
            return (
                f"config file {value.partition(':')[0]} does not load ({type(e).__name__}"
                f"{': ' + first if first else ''}); a config file is Python whose get_config() "
                f"returns an ml_collections ConfigDict"
            )
        if config is not None:
            for key in config_utils.override_keys(argv[1:], config_flag):
                message = config_utils.unknown_key(config, key)
                if message:
                    return message
    first = _first_line(error) or type(error).__name__
    if not isinstance(error, flags.Error):
        first = f"{type(error).__name__}: {first}"
    return first


if __name__ == "__main__":
    sys.exit(main())
