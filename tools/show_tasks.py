"""Kept for old commands: the same as `robust-ssl show-tasks` (robust_ssl/commands/show_tasks.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["show-tasks", *sys.argv[1:]]))
