"""Kept for old commands: the same as `robust-ssl make-cifar10c` (robust_ssl/commands/make_cifar10c.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["make-cifar10c", *sys.argv[1:]]))
