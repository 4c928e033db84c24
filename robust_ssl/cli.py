"""The `robust-ssl` console script, and behaviour shared by its commands.

  robust-ssl train --config=smoke --workdir=runs/smoke
  robust-ssl evaluate --workdir=runs/smoke --cifar10c=generate
  robust-ssl <command> --help

`main` dispatches on the first argument: it imports only that command's module
(`robust_ssl.commands.<command>`, whose absl flags are then the only ones
defined) and runs its `main` with absl. A command with a config flag (its
module's `CONFIG_FLAG` names it) accepts a config name or file: `main`
resolves the flag's value with `robust_ssl.configs.resolve_argv` before absl
parses the arguments. Paths on
the command line are relative to the current directory. Also runnable as
`python -m robust_ssl` or `python -m robust_ssl.cli`.
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
        f"(--config=smoke) or file (--config=path/to/config.py); `{PROG} train --help` names them.",
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

    from robust_ssl import configs

    # absl and ml_collections read sys.argv (the config flag finds its
    # overrides there), so it holds this command's arguments from here on.
    prog = f"{PROG} {name}"
    sys.argv = [prog, *rest]
    module = importlib.import_module(f"robust_ssl.commands.{COMMANDS[name][0]}")
    if _wants_help(rest):
        print(command_help(name, module))
        return 0
    config_flag = getattr(module, "CONFIG_FLAG", None)  # set by commands with a --config
    if config_flag:
        with user_errors():
            try:  # a --config inside a --flagfile is resolved too
                rest = flags.FLAGS.read_flags_from_files(rest, force_gnu=False)
            except (OSError, flags.Error) as e:
                raise UserError(str(e)) from e
            rest = configs.resolve_argv(rest, config_flag)
        sys.argv = [prog, *rest]
    app.run(module.main, argv=sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
