"""`python -m robust_ssl <command> …`: the same as the `robust-ssl` console script."""

import sys

from robust_ssl.cli import main

sys.exit(main())
