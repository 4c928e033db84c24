"""Kept for old commands: the same as `robust-ssl evaluate` (robust_ssl/commands/evaluate.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["evaluate", *sys.argv[1:]]))
