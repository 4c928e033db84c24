"""The same as `robust-ssl predict` (robust_ssl/commands/predict.py)."""

import sys

from robust_ssl import cli

if __name__ == "__main__":
    sys.exit(cli.main(["predict", *sys.argv[1:]]))
