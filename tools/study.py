"""Kept for old commands: the same as `robust-ssl study` (robust_ssl/commands/study.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["study", *sys.argv[1:]]))
