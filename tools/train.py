"""Kept for old commands: the same as `robust-ssl train` (robust_ssl/commands/train.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["train", *sys.argv[1:]]))
