"""Shared behaviour of the command-line tools."""

import contextlib
import os
import sys

from robust_ssl.errors import UserError


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
