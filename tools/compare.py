"""Kept for old commands: the same as `robust-ssl compare` (robust_ssl/commands/compare.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["compare", *sys.argv[1:]]))
