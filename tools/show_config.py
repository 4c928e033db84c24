"""The same as `robust-ssl show-config` (robust_ssl/commands/show_config.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["show-config", *sys.argv[1:]]))
