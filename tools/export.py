"""Kept for old commands: the same as `robust-ssl export` (robust_ssl/commands/export.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["export", *sys.argv[1:]]))
