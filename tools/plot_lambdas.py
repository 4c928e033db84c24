"""Kept for old commands: the same as `robust-ssl plot-lambdas` (robust_ssl/commands/plot_lambdas.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["plot-lambdas", *sys.argv[1:]]))
