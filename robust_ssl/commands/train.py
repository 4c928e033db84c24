r"""Trains a robust_ssl model; re-running the same command resumes it.

  robust-ssl train --config=smoke --workdir=runs/smoke
  robust-ssl train --config=rotation --workdir=runs/rot --config.train.epochs=1
  robust-ssl train --config=runs/tune/best_config.py --workdir=runs/tuned

--config takes a packaged config by name or a config file; --config.<key>=<value>
overrides any field.
"""

from absl import flags
from ml_collections import config_flags

from robust_ssl import cli, configs

# robust_ssl.cli resolves a config name given to this flag into its file.
CONFIG_FLAG = configs.FLAG
_CONFIG = config_flags.DEFINE_config_file(CONFIG_FLAG, configs.path(configs.DEFAULT), configs.help_text())
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    from robust_ssl.train import train_and_evaluate

    with cli.user_errors():
        cli.no_arguments(argv)
        results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(cli.summary(results, _WORKDIR.value))
