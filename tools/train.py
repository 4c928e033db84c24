r"""Trains a robust_ssl model.

  python tools/train.py --config=configs/smoke.py --workdir=runs/smoke
  python tools/train.py --config=configs/rotation.py --workdir=runs/rot \
      --config.train.epochs=1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from robust_ssl import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    from robust_ssl.train import train_and_evaluate

    with cli.user_errors():
        results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(cli.summary(results, _WORKDIR.value))


if __name__ == "__main__":
    app.run(main)
