"""Kept for old commands: the same as `robust-ssl benchmark` (robust_ssl/commands/benchmark.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["benchmark", *sys.argv[1:]]))
