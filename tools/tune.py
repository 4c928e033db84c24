"""Kept for old commands: the same as `robust-ssl tune` (robust_ssl/commands/tune.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["tune", *sys.argv[1:]]))
